#include "tests/gguf_fixture.h"

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "engine/pipeline.h"
#include "io/gguf_format.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "tests/test_support.h"

namespace wq::test {
namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Sum of four uniforms, centred: close enough to normal for weights, and exactly
// reproducible (no libm in the generator).
float normalish(uint64_t& s) {
  float acc = 0.0f;
  for (int i = 0; i < 4; ++i) acc += float(splitmix64(s) >> 40) * (1.0f / 16777216.0f);
  return (acc - 2.0f) * 1.7320508f;
}

std::vector<float> fixture_values(size_t rows, size_t cols, uint64_t seed) {
  std::vector<float> v(rows * cols);
  uint64_t s = seed;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      float x = 0.02f * normalish(s);
      if (c % 17 == 3) x *= 25.0f;                // outlier input channels
      if (r % 11 == 5) x = 0.0f;                  // an all-zero row
      if (r % 13 == 7) x = 0.0125f;               // a constant row
      if (r % 19 == 2 && c % 32 == 0) x = -0.5f;  // a block whose max magnitude is negative
      if (r % 23 == 4) x = float(int(c % 16) - 8) * 0.01f;  // values on the grid: rounding ties
      v[r * cols + c] = x;
    }
  }
  return v;
}

}  // namespace

uint64_t fnv1a64(const uint8_t* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

void write_gguf_fixture(const std::string& stories_gguf, const std::string& out_path, uint32_t alignment) {
  auto src = open_gguf(stories_gguf);
  GgufMetadata meta = src->metadata();
  bool aligned = false;
  for (GgufKV& kv : meta.kvs) {
    if (kv.key == "llama.feed_forward_length") kv = gguf_kv_u32(kv.key, 192);
    if (kv.key == "general.name") kv = gguf_kv_string(kv.key, "wquant-fixture-192");
    if (alignment && kv.key == "general.alignment") {
      kv = gguf_kv_u32(kv.key, alignment);
      aligned = true;
    }
  }
  if (alignment) {
    if (!aligned) meta.kvs.push_back(gguf_kv_u32("general.alignment", alignment));
    meta.alignment = alignment;
  }
  std::vector<TensorInfo> infos = src->tensors();
  std::vector<TensorPlan> plan;
  std::vector<uint32_t> types;
  for (size_t i = 0; i < infos.size(); ++i) {
    for (int64_t& d : infos[i].shape) {
      if (d == 172) d = 192;
    }
    infos[i].nbytes = checked_numel(infos[i].name, infos[i].shape) * 4;
    TensorPlan p = keep_float_entry(i, infos[i]);
    p.out_dtype = DType::F32;
    plan.push_back(p);
    types.push_back(kGgmlF32);
  }
  auto w = make_gguf_writer(out_path, plan, infos, meta, types);
  for (size_t i = 0; i < plan.size(); ++i) {
    const size_t rows = infos[i].shape.size() <= 1 ? 1 : size_t(infos[i].shape[0]);
    const size_t cols = checked_numel(infos[i].name, infos[i].shape) / rows;
    std::vector<float> v = fixture_values(rows, cols, 1000 + i);
    if (infos[i].shape.size() == 1) {
      for (float& x : v) x = 1.0f + 0.1f * x;  // norm scales near 1
    }
    TensorResult r;
    r.plan = &plan[i];
    r.bytes.resize(v.size() * 4);
    std::memcpy(r.bytes.data(), v.data(), r.bytes.size());
    w->write(r);
  }
  w->commit();
}

namespace {

struct FixtureTensor {
  std::string name;
  std::vector<int64_t> shape;  // outermost first
};

// A llama model's tensors in the order llama.cpp's converter writes them.
std::vector<FixtureTensor> llama_tensors(const WideFixture& f) {
  const int64_t head_dim = f.n_embd / f.n_head, kv = head_dim * f.n_head_kv;
  std::vector<FixtureTensor> t;
  t.push_back({"token_embd.weight", {f.n_vocab, f.n_embd}});
  for (int i = 0; i < f.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    t.push_back({b + "attn_norm.weight", {f.n_embd}});
    t.push_back({b + "attn_q.weight", {f.n_embd, f.n_embd}});
    t.push_back({b + "attn_k.weight", {kv, f.n_embd}});
    t.push_back({b + "attn_v.weight", {kv, f.n_embd}});
    t.push_back({b + "attn_output.weight", {f.n_embd, f.n_embd}});
    t.push_back({b + "ffn_norm.weight", {f.n_embd}});
    if (f.n_expert > 0) {
      t.push_back({b + "ffn_gate_inp.weight", {f.n_expert, f.n_embd}});
      t.push_back({b + "ffn_gate_exps.weight", {f.n_expert, f.n_ff, f.n_embd}});
      t.push_back({b + "ffn_down_exps.weight", {f.n_expert, f.n_embd, f.n_ff}});
      t.push_back({b + "ffn_up_exps.weight", {f.n_expert, f.n_ff, f.n_embd}});
    } else {
      t.push_back({b + "ffn_gate.weight", {f.n_ff, f.n_embd}});
      t.push_back({b + "ffn_down.weight", {f.n_embd, f.n_ff}});
      t.push_back({b + "ffn_up.weight", {f.n_ff, f.n_embd}});
    }
  }
  t.push_back({"output_norm.weight", {f.n_embd}});
  if (f.untied_output) t.push_back({"output.weight", {f.n_vocab, f.n_embd}});
  return t;
}

}  // namespace

void write_gguf_wide_fixture(const std::string& stories_gguf, const std::string& out_path, const WideFixture& f) {
  auto src = open_gguf(stories_gguf);
  GgufMetadata meta = src->metadata();
  auto set_u32 = [&](const std::string& key, uint32_t v) {
    for (GgufKV& kv : meta.kvs) {
      if (kv.key == key) {
        kv = gguf_kv_u32(key, v);
        return;
      }
    }
    meta.kvs.push_back(gguf_kv_u32(key, v));
  };
  for (GgufKV& kv : meta.kvs) {
    if (kv.key == "general.name") kv = gguf_kv_string(kv.key, f.name);
  }
  set_u32("llama.embedding_length", uint32_t(f.n_embd));
  set_u32("llama.feed_forward_length", uint32_t(f.n_ff));
  set_u32("llama.block_count", uint32_t(f.n_layer));
  set_u32("llama.attention.head_count", uint32_t(f.n_head));
  set_u32("llama.attention.head_count_kv", uint32_t(f.n_head_kv));
  set_u32("llama.rope.dimension_count", uint32_t(f.n_embd / f.n_head));
  if (f.n_expert > 0) {
    set_u32("llama.expert_count", uint32_t(f.n_expert));
    set_u32("llama.expert_used_count", 2);
  }
  const std::vector<FixtureTensor> ts = llama_tensors(f);
  std::vector<TensorInfo> infos;
  std::vector<TensorPlan> plan;
  std::vector<uint32_t> types;
  for (size_t i = 0; i < ts.size(); ++i) {
    TensorInfo info;
    info.name = ts[i].name;
    info.shape = ts[i].shape;
    info.nbytes = checked_numel(info.name, info.shape) * 4;
    infos.push_back(info);
    TensorPlan p = keep_float_entry(i, info);
    p.out_dtype = DType::F32;
    plan.push_back(p);
    types.push_back(kGgmlF32);
  }
  auto w = make_gguf_writer(out_path, plan, infos, meta, types);
  for (size_t i = 0; i < plan.size(); ++i) {
    const size_t cols = size_t(ts[i].shape.back());
    const size_t rows = checked_numel(ts[i].name, ts[i].shape) / cols;
    std::vector<float> v = fixture_values(rows, cols, 5000 + i);
    if (ts[i].shape.size() == 1) {
      for (float& x : v) x = 1.0f + 0.1f * x;
    }
    TensorResult r;
    r.plan = &plan[i];
    r.bytes.resize(v.size() * 4);
    std::memcpy(r.bytes.data(), v.data(), r.bytes.size());
    w->write(r);
  }
  w->commit();
}

void write_gguf_fixture_split(const std::string& stories_gguf, const std::string& prefix, int per_shard, int empty_shard) {
  // The 192 fixture first, then its tensors dealt out in file order, gguf-split's way:
  // the first shard keeps every key, the others only the split keys.
  const std::string whole = prefix + ".whole.gguf";
  write_gguf_fixture(stories_gguf, whole);
  auto src = open_gguf(whole);
  const std::vector<TensorInfo>& infos = src->tensors();
  const int total = int(infos.size()), extra = empty_shard >= 0 ? 1 : 0,
            count = extra + (total + per_shard - 1) / per_shard;
  for (int s = 0; s < count; ++s) {
    GgufMetadata meta;
    if (s == 0) meta = src->metadata();
    meta.kvs.push_back(gguf_kv_u16("split.no", uint16_t(s)));
    meta.kvs.push_back(gguf_kv_u16("split.count", uint16_t(count)));
    meta.kvs.push_back(gguf_kv_i32("split.tensors.count", total));
    std::vector<TensorInfo> part;
    std::vector<TensorPlan> plan;
    const int begin = (s - (extra && s > empty_shard ? 1 : 0)) * per_shard;
    for (int i = begin; s != empty_shard && i < std::min(total, begin + per_shard); ++i) {
      plan.push_back(keep_float_entry(part.size(), infos[size_t(i)]));
      part.push_back(infos[size_t(i)]);
    }
    char tail[32];
    std::snprintf(tail, sizeof tail, "-%05d-of-%05d.gguf", s + 1, count);
    auto w = make_gguf_writer(prefix + tail, plan, part, meta, std::vector<uint32_t>(part.size(), kGgmlF32));
    for (size_t k = 0; k < plan.size(); ++k) {
      size_t n;
      const uint8_t* d = src->raw(size_t(begin) + k, &n);
      TensorResult r;
      r.plan = &plan[k];
      r.bytes.assign(d, d + n);
      w->write(r);
    }
    w->commit();
  }
  src.reset();
  std::remove(whole.c_str());
}

}  // namespace wq::test
