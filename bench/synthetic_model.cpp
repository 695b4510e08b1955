#include "bench/synthetic_model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/scheduler.h"
#include "engine/tensor.h"
#include "io/gguf_format.h"
#include "io/gguf_writer.h"
#include "io/model_writer.h"
#include "io/output_file.h"
#include "io/safetensors_writer.h"

namespace wq {
namespace {

struct Shape {
  std::string gguf, hf;
  std::vector<int64_t> dims;
  bool norm;
};

std::vector<Shape> llama_shapes(const SyntheticConfig& c) {
  const int64_t dim = c.dim, ffn = c.ffn, kv = c.dim / c.heads * c.kv_heads, vocab = c.vocab;
  std::vector<Shape> t{{"token_embd.weight", "model.embed_tokens.weight", {vocab, dim}, false}};
  for (int l = 0; l < c.layers; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".", h = "model.layers." + std::to_string(l) + ".";
    t.push_back({g + "attn_norm.weight", h + "input_layernorm.weight", {dim}, true});
    t.push_back({g + "attn_q.weight", h + "self_attn.q_proj.weight", {dim, dim}, false});
    t.push_back({g + "attn_k.weight", h + "self_attn.k_proj.weight", {kv, dim}, false});
    t.push_back({g + "attn_v.weight", h + "self_attn.v_proj.weight", {kv, dim}, false});
    t.push_back({g + "attn_output.weight", h + "self_attn.o_proj.weight", {dim, dim}, false});
    t.push_back({g + "ffn_norm.weight", h + "post_attention_layernorm.weight", {dim}, true});
    t.push_back({g + "ffn_gate.weight", h + "mlp.gate_proj.weight", {ffn, dim}, false});
    t.push_back({g + "ffn_up.weight", h + "mlp.up_proj.weight", {ffn, dim}, false});
    t.push_back({g + "ffn_down.weight", h + "mlp.down_proj.weight", {dim, ffn}, false});
  }
  t.push_back({"output_norm.weight", "model.norm.weight", {dim}, true});
  t.push_back({"output.weight", "lm_head.weight", {vocab, dim}, false});
  return t;
}

uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Element (r, c) of tensor t: a sum of four 16-bit uniforms (near normal), scaled.
float value(uint64_t seed, size_t t, size_t r, size_t c, size_t cols, bool norm) {
  const uint64_t h = mix(seed ^ (uint64_t(t) << 48) ^ (uint64_t(r) * cols + c) * 0x9e3779b97f4a7c15ull);
  const float u = float((h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48)) * (1.0f / 65536.0f);
  const float n = (u - 2.0f) * 1.7320508f;  // unit variance
  if (norm) return 1.0f + 0.02f * n;
  const uint64_t ch = mix(seed ^ (uint64_t(t) << 40) ^ c);
  const float outlier = (ch % 97 == 0) ? 10.0f + float(ch % 41) : 1.0f;  // ~1% of input channels
  return 0.02f * n * outlier;
}

void fill(OutputBytes& out, DType dt, uint64_t seed, size_t t, const Shape& s) {
  const size_t rows = s.dims.size() == 1 ? 1 : size_t(s.dims[0]);
  const size_t cols = s.dims.size() == 1 ? size_t(s.dims[0]) : size_t(s.dims[1]);
  out.resize(rows * cols * dtype_size(dt));
  parallel_row_tiles(rows, 64, [&](size_t r0, size_t r1) {
    std::vector<float> row(cols);
    for (size_t r = r0; r < r1; ++r) {
      for (size_t c = 0; c < cols; ++c) row[c] = value(seed, t, r, c, cols, s.norm);
      uint8_t* dst = out.data() + r * cols * dtype_size(dt);
      if (dt == DType::F32) {
        std::memcpy(dst, row.data(), cols * 4);
      } else if (dt == DType::F16) {
        kernels().narrow_f16(row.data(), reinterpret_cast<uint16_t*>(dst), cols);
      } else {
        for (size_t c = 0; c < cols; ++c) {  // bf16: round to nearest even
          uint32_t u;
          std::memcpy(&u, &row[c], 4);
          const uint16_t b = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
          std::memcpy(dst + 2 * c, &b, 2);
        }
      }
    }
  });
}

// Normal pieces: "▁" alone, then every character of a small alphabet with and without a
// leading "▁", then two- and three-letter lowercase strings the same way; distinct by
// construction, as many as `n`.
std::vector<std::string> normal_pieces(size_t n) {
  const std::string space = "\xe2\x96\x81";  // U+2581, SentencePiece's space
  std::vector<std::string> v{space};
  auto add = [&](const std::string& s) {
    if (v.size() < n) v.push_back(space + s);
    if (v.size() < n) v.push_back(s);
  };
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()";
  for (char a : alphabet) add(std::string(1, a));
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b) add(std::string{a, b});
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b)
      for (char d = 'a'; d <= 'z'; ++d) add(std::string{a, b, d});
  v.resize(std::min(v.size(), n));
  return v;
}

// Tensors [first[s], first[s + 1]) go to shard s.
std::vector<size_t> shard_starts(const std::vector<TensorInfo>& infos, uint64_t shard_bytes) {
  std::vector<size_t> first{0};
  uint64_t in_shard = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (in_shard > 0 && in_shard + infos[i].nbytes > shard_bytes) {
      first.push_back(i);
      in_shard = 0;
    }
    in_shard += infos[i].nbytes;
  }
  first.push_back(infos.size());
  return first;
}

std::string shard_name(size_t k, size_t total) {
  char b[64];
  std::snprintf(b, sizeof b, "model-%05zu-of-%05zu.safetensors", k, total);
  return b;
}

uint64_t write_shards(const std::string& index, const SyntheticConfig& c, const std::vector<Shape>& shapes,
                      const std::vector<TensorInfo>& infos, const std::vector<TensorPlan>& plan,
                      const std::vector<DType>& dtypes) {
  const std::filesystem::path dir = std::filesystem::path(index).parent_path();
  const std::vector<size_t> first = shard_starts(infos, c.shard_bytes ? c.shard_bytes : UINT64_MAX);
  const size_t total = first.size() - 1;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t params = 0, bytes = 0;
  Scheduler sched(0);
  for (size_t s = 0; s < total; ++s) {
    const std::string name = shard_name(s + 1, total);
    std::vector<TensorInfo> sub_infos(infos.begin() + long(first[s]), infos.begin() + long(first[s + 1]));
    std::vector<TensorPlan> sub_plan;
    for (size_t i = first[s]; i < first[s + 1]; ++i) {
      sub_plan.push_back(plan[i]);
      sub_plan.back().source_index = i - first[s];
    }
    std::unique_ptr<ModelWriter> w = make_safetensors_writer((dir / name).string(), sub_plan, sub_infos);
    TensorResult r;
    for (size_t j = 0; j < sub_plan.size(); ++j) {
      const size_t i = first[s] + j;
      r.plan = &sub_plan[j];
      sched.run([&] { fill(r.bytes, dtypes[i], c.seed, i, shapes[i]); });
      w->write(r);
      weight_map[infos[i].name] = name;
      params += checked_numel(infos[i].name, infos[i].shape);
      bytes += infos[i].nbytes;
    }
    w->commit();
  }
  const nlohmann::ordered_json doc = {{"metadata", {{"total_size", bytes}}}, {"weight_map", weight_map}};
  const std::string text = doc.dump(2) + "\n";
  OutputFile f(index);
  f.write(text.data(), text.size());
  f.commit();
  return params;
}

}  // namespace

GgufMetadata synthetic_llama_metadata(const SyntheticConfig& c) {
  const size_t vocab = size_t(c.vocab), specials = 3 + 256;
  if (c.vocab <= int64_t(specials)) {
    throw Error("vocab " + std::to_string(c.vocab) + " cannot hold <unk>, <s>, </s>, 256 byte tokens and a piece",
                ErrorKind::Usage);
  }
  const DType dt = c.dtype;
  GgufMetadata m;
  m.kvs.push_back(gguf_kv_string("general.architecture", "llama"));
  m.kvs.push_back(gguf_kv_string("general.name", "wquant-synthetic-tinyllama"));
  m.kvs.push_back(gguf_kv_u32("general.file_type", dt == DType::F32 ? 0 : (dt == DType::F16 ? 1 : 32)));
  m.kvs.push_back(gguf_kv_u32("llama.context_length", uint32_t(c.context)));
  m.kvs.push_back(gguf_kv_u32("llama.embedding_length", uint32_t(c.dim)));
  m.kvs.push_back(gguf_kv_u32("llama.block_count", uint32_t(c.layers)));
  m.kvs.push_back(gguf_kv_u32("llama.feed_forward_length", uint32_t(c.ffn)));
  m.kvs.push_back(gguf_kv_u32("llama.rope.dimension_count", uint32_t(c.dim / c.heads)));
  m.kvs.push_back(gguf_kv_u32("llama.attention.head_count", uint32_t(c.heads)));
  m.kvs.push_back(gguf_kv_u32("llama.attention.head_count_kv", uint32_t(c.kv_heads)));
  m.kvs.push_back(gguf_kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f));
  m.kvs.push_back(gguf_kv_f32("llama.rope.freq_base", 10000.0f));
  m.kvs.push_back(gguf_kv_string("tokenizer.ggml.model", "llama"));
  std::vector<std::string> tokens{"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types{2, 3, 3};  // llama.cpp's LLAMA_TOKEN_TYPE_UNKNOWN, CONTROL
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    tokens.push_back(hex);
    types.push_back(6);  // BYTE
  }
  std::vector<float> scores(specials, 0.0f);
  for (const std::string& p : normal_pieces(vocab - specials)) {
    scores.push_back(-float(tokens.size() - specials));
    tokens.push_back(p);
    types.push_back(1);  // NORMAL
  }
  m.kvs.push_back(gguf_kv_string_array("tokenizer.ggml.tokens", tokens));
  m.kvs.push_back(gguf_kv_f32_array("tokenizer.ggml.scores", scores));
  m.kvs.push_back(gguf_kv_i32_array("tokenizer.ggml.token_type", types));
  m.kvs.push_back(gguf_kv_u32("tokenizer.ggml.bos_token_id", 1));
  m.kvs.push_back(gguf_kv_u32("tokenizer.ggml.eos_token_id", 2));
  m.kvs.push_back(gguf_kv_u32("tokenizer.ggml.unknown_token_id", 0));
  return m;
}

uint64_t write_synthetic_model(const std::string& out, OutputFormat fmt, const SyntheticConfig& c) {
  if (c.layers < 1 || c.dim < 1 || c.ffn < 1 || c.heads < 1 || c.kv_heads < 1 || c.dim % c.heads != 0 ||
      c.heads % c.kv_heads != 0) {
    throw Error("bad model shape", ErrorKind::Usage);
  }
  const std::vector<Shape> shapes = llama_shapes(c);
  std::vector<TensorInfo> infos;
  std::vector<TensorPlan> plan;
  std::vector<DType> dtypes;
  for (size_t i = 0; i < shapes.size(); ++i) {
    // GGUF: 1-D norms in f32 (llama.cpp's CPU backend needs them so).
    const DType dt = (fmt == OutputFormat::Gguf && shapes[i].norm) ? DType::F32 : c.dtype;
    TensorInfo t;
    t.name = fmt == OutputFormat::Gguf ? shapes[i].gguf : shapes[i].hf;
    t.shape = shapes[i].dims;
    t.kind = StoredKind::Float;
    t.dtype = dt;
    t.type_name = dtype_name(dt);
    t.nbytes = checked_numel(t.name, t.shape) * dtype_size(dt);
    TensorPlan p;
    p.source_index = i;
    p.name = t.name;
    p.shape = t.shape;
    p.action = TensorAction::KeepFloat;
    p.out_dtype = dt;
    infos.push_back(t);
    plan.push_back(p);
    dtypes.push_back(dt);
  }
  const bool sharded = fmt == OutputFormat::Safetensors && out.size() > 11 &&
                       out.compare(out.size() - 11, 11, ".index.json") == 0;
  if (sharded) return write_shards(out, c, shapes, infos, plan, dtypes);
  std::unique_ptr<ModelWriter> w;
  if (fmt == OutputFormat::Gguf) {
    w = make_gguf_writer(out, plan, infos, synthetic_llama_metadata(c), std::vector<uint32_t>(plan.size(), kGgmlF32));
  } else if (fmt == OutputFormat::Safetensors) {
    w = make_safetensors_writer(out, plan, infos);
  } else {
    throw Error(out + ": the generator writes .gguf or .safetensors", ErrorKind::Usage);
  }
  Scheduler sched(0);
  TensorResult r;
  uint64_t params = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    r.plan = &plan[i];
    sched.run([&] { fill(r.bytes, dtypes[i], c.seed, i, shapes[i]); });
    w->write(r);
    params += checked_numel(plan[i].name, plan[i].shape);
  }
  w->commit();
  return params;
}

}  // namespace wq
