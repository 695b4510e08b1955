// A trained llama GGUF (stories260K) zero-padded to widths every K-quant fits, computing
// the same function: the one real model at hand whose rows (64 and 172 wide) are not
// multiples of 256, so llama-quantize's K mixes fall back to legacy types on it. Padded,
// its Q2_K / Q4_K / Q5_K tensors are quantized as such, and llama.cpp's KL divergence of a
// quantized file against the float one says what a trained model's logits lose
// (bench/kquant_hqq_kl.sh).
//
//   wq_pad_model IN.gguf OUT.gguf
//
// n_embd E -> 256, n_ff F -> 768 (the next multiples of 256), head size kept, so heads
// and KV heads grow in proportion (GQA ratio kept; the added heads read zero queries and
// keys, attend uniformly over zero values and add nothing). Every matrix keeps its values
// in its first rows and columns, zeros elsewhere; the residual stream's added dimensions
// stay zero. RMSNorm then averages over 256 instead of E dimensions, so its gains are
// scaled by sqrt(E / 256) and its epsilon by E / 256: x / sqrt(mean_256(x^2) + eps E/256)
// * g sqrt(E/256) = x / sqrt(mean_E(x^2) + eps) * g. RoPE is unchanged (same head size).
// The float logits agree with the input's up to rounding (llama-perplexity prints both).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/plan.h"
#include "io/gguf_format.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "io/model_writer.h"

namespace wq {
namespace {

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// A 4-byte scalar key (GGUF type 4, u32, or 6, f32) as the file stores it.
template <class T>
T scalar_of(const GgufKV& kv, uint32_t type) {
  if (kv.type != type || kv.value.size() != 4) throw Error(kv.key + ": expected a 4-byte scalar of GGUF type " + std::to_string(type));
  T v;
  std::memcpy(&v, kv.value.data(), 4);
  return v;
}

uint32_t u32_of(const GgufMetadata& m, const std::string& key) {
  const GgufKV* kv = m.find(key);
  if (!kv) throw Error("the input has no " + key);
  return scalar_of<uint32_t>(*kv, 4);
}

int run(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: wq_pad_model IN.gguf OUT.gguf\n");
    return 2;
  }
  const std::string in = argv[1], out = argv[2];
  auto src = open_gguf(in);
  GgufMetadata meta = src->metadata();
  const int64_t e = u32_of(meta, "llama.embedding_length"), f = u32_of(meta, "llama.feed_forward_length");
  const int64_t heads = u32_of(meta, "llama.attention.head_count"), kv_heads = u32_of(meta, "llama.attention.head_count_kv");
  const int64_t hd = e / heads, e2 = round_up(e, 256), f2 = round_up(f, 256);
  if (e2 % hd != 0) throw Error(in + ": head size " + std::to_string(hd) + " does not divide " + std::to_string(e2));
  const int64_t heads2 = e2 / hd;
  if (heads2 % (heads / kv_heads) != 0) throw Error(in + ": the GQA ratio does not divide the padded head count");
  const int64_t kv_heads2 = heads2 / (heads / kv_heads);
  const float gain = std::sqrt(float(e) / float(e2));
  for (GgufKV& kv : meta.kvs) {
    if (kv.key == "llama.embedding_length") kv = gguf_kv_u32(kv.key, uint32_t(e2));
    if (kv.key == "llama.feed_forward_length") kv = gguf_kv_u32(kv.key, uint32_t(f2));
    if (kv.key == "llama.attention.head_count") kv = gguf_kv_u32(kv.key, uint32_t(heads2));
    if (kv.key == "llama.attention.head_count_kv") kv = gguf_kv_u32(kv.key, uint32_t(kv_heads2));
    if (kv.key == "llama.attention.layer_norm_rms_epsilon") {
      kv = gguf_kv_f32(kv.key, scalar_of<float>(kv, 6) * float(e) / float(e2));
    }
    if (kv.key == "general.name") kv = gguf_kv_string(kv.key, "stories260K zero-padded to " + std::to_string(e2));
  }
  // A dimension's padded size: E -> E2, F -> F2, E's KV width -> KV width at E2, the vocabulary kept.
  auto pad = [&](int64_t d) { return d == e ? e2 : d == f ? f2 : d == kv_heads * hd ? kv_heads2 * hd : d; };
  std::vector<TensorInfo> infos = src->tensors();
  std::vector<TensorPlan> plan;
  std::vector<uint32_t> types;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].dtype != DType::F32) throw Error(in + ": " + infos[i].name + " is not F32");
    for (int64_t& d : infos[i].shape) d = pad(d);
    infos[i].nbytes = checked_numel(infos[i].name, infos[i].shape) * 4;
    TensorPlan p;
    p.source_index = i;
    p.name = infos[i].name;
    p.shape = infos[i].shape;
    p.action = TensorAction::KeepFloat;
    p.out_dtype = DType::F32;
    plan.push_back(p);
    types.push_back(kGgmlF32);
  }
  auto w = make_gguf_writer(out, plan, infos, meta, types);
  for (size_t i = 0; i < plan.size(); ++i) {
    const TensorView v = src->view(i);
    const std::vector<int64_t>& old_shape = src->tensors()[i].shape;
    const int64_t cols = old_shape.back(), rows = old_shape.size() == 1 ? 1 : old_shape[0];
    const int64_t cols2 = infos[i].shape.back();
    std::vector<float> x(size_t(checked_numel(infos[i].name, infos[i].shape)), 0.0f);
    const float* s = static_cast<const float*>(v.data);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) x[size_t(r * cols2 + c)] = s[r * cols + c];
    }
    if (old_shape.size() == 1) {  // RMSNorm gains (the model's only vectors)
      for (float& g : x) g *= gain;
    }
    TensorResult res;
    res.plan = &plan[i];
    res.bytes.resize(x.size() * 4);
    std::memcpy(res.bytes.data(), x.data(), res.bytes.size());
    w->write(res);
  }
  w->commit();
  std::printf("%s: n_embd %lld -> %lld, n_ff %lld -> %lld, heads %lld/%lld -> %lld/%lld\n", out.c_str(), (long long)e,
              (long long)e2, (long long)f, (long long)f2, (long long)heads, (long long)kv_heads, (long long)heads2,
              (long long)kv_heads2);
  return 0;
}

}  // namespace
}  // namespace wq

int main(int argc, char** argv) {
  try {
    return wq::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wq_pad_model: %s\n", e.what());
    return 1;
  }
}
