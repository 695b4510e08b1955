// Writes a synthetic TinyLlama-shaped model (22 layers, dim 2048, FFN 5632, 32 heads,
// 4 KV heads, vocab 32000: about 1.1 B parameters) for benchmarks and scale tests, as
// GGUF (llama.cpp names, llama.* metadata and a placeholder 32000-token vocabulary, so
// llama-quantize accepts it) or safetensors (Hugging Face names), in f32, f16 or bf16.
// Weights are normal(0, 0.02) with a few input channels 10-50x larger (the outliers real
// LLMs have); norm scales are near 1. Values come from a counter-based generator, so the
// file is the same for any thread count, and tensors are generated and written one at a
// time through the io writers: memory stays at one tensor.
//
//   wq_gen_model [--layers N] [--dtype f32|f16|bf16] [--seed S] OUT.gguf|OUT.safetensors
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/scheduler.h"
#include "io/gguf_format.h"
#include "io/gguf_writer.h"
#include "io/model_writer.h"
#include "io/safetensors_writer.h"
#include "kernels/kernels.h"

namespace wq {
namespace {

struct Shape {
  std::string gguf, hf;
  std::vector<int64_t> dims;
  bool norm;
};

std::vector<Shape> tinyllama(int layers) {
  const int64_t dim = 2048, ffn = 5632, kv = 256, vocab = 32000;
  std::vector<Shape> t{{"token_embd.weight", "model.embed_tokens.weight", {vocab, dim}, false}};
  for (int l = 0; l < layers; ++l) {
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

void fill(std::vector<uint8_t>& out, DType dt, uint64_t seed, size_t t, const Shape& s) {
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

GgufMetadata llama_metadata(int layers, DType dt) {
  GgufMetadata m;
  m.kvs.push_back(gguf_kv_string("general.architecture", "llama"));
  m.kvs.push_back(gguf_kv_string("general.name", "wquant-synthetic-tinyllama"));
  m.kvs.push_back(gguf_kv_u32("general.file_type", dt == DType::F32 ? 0 : (dt == DType::F16 ? 1 : 32)));
  m.kvs.push_back(gguf_kv_u32("llama.context_length", 2048));
  m.kvs.push_back(gguf_kv_u32("llama.embedding_length", 2048));
  m.kvs.push_back(gguf_kv_u32("llama.block_count", uint32_t(layers)));
  m.kvs.push_back(gguf_kv_u32("llama.feed_forward_length", 5632));
  m.kvs.push_back(gguf_kv_u32("llama.rope.dimension_count", 64));
  m.kvs.push_back(gguf_kv_u32("llama.attention.head_count", 32));
  m.kvs.push_back(gguf_kv_u32("llama.attention.head_count_kv", 4));
  m.kvs.push_back(gguf_kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f));
  m.kvs.push_back(gguf_kv_f32("llama.rope.freq_base", 10000.0f));
  m.kvs.push_back(gguf_kv_string("tokenizer.ggml.model", "llama"));
  std::vector<std::string> tokens(32000);
  std::vector<float> scores(32000);
  std::vector<int32_t> types(32000, 1);
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = "<t" + std::to_string(i) + ">";
    scores[i] = -float(i);
  }
  m.kvs.push_back(gguf_kv_string_array("tokenizer.ggml.tokens", tokens));
  m.kvs.push_back(gguf_kv_f32_array("tokenizer.ggml.scores", scores));
  m.kvs.push_back(gguf_kv_i32_array("tokenizer.ggml.token_type", types));
  m.kvs.push_back(gguf_kv_u32("tokenizer.ggml.bos_token_id", 1));
  m.kvs.push_back(gguf_kv_u32("tokenizer.ggml.eos_token_id", 2));
  return m;
}

int run(int argc, char** argv) {
  int layers = 22;
  DType dt = DType::F32;
  uint64_t seed = 1;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value", ErrorKind::Usage);
      return argv[++i];
    };
    if (a == "--layers") layers = std::stoi(next());
    else if (a == "--seed") seed = std::stoull(next());
    else if (a == "--dtype") {
      const std::string d = next();
      if (d == "f32") dt = DType::F32;
      else if (d == "f16") dt = DType::F16;
      else if (d == "bf16") dt = DType::BF16;
      else throw Error("--dtype must be f32, f16 or bf16, not " + d, ErrorKind::Usage);
    } else if (!a.empty() && a[0] == '-') {
      throw Error("unknown flag " + a, ErrorKind::Usage);
    } else {
      out = a;
    }
  }
  if (out.empty() || layers < 1 || layers > 1000) {
    std::fprintf(stderr, "usage: wq_gen_model [--layers 1..1000] [--dtype f32|f16|bf16] [--seed S] OUT.gguf|OUT.safetensors\n");
    return 2;
  }
  const OutputFormat fmt = format_from_path(out);
  const std::vector<Shape> shapes = tinyllama(layers);
  std::vector<TensorInfo> infos;
  std::vector<TensorPlan> plan;
  for (size_t i = 0; i < shapes.size(); ++i) {
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
  }
  std::unique_ptr<ModelWriter> w;
  if (fmt == OutputFormat::Gguf) {
    w = make_gguf_writer(out, plan, infos, llama_metadata(layers, dt), std::vector<uint32_t>(plan.size(), kGgmlF32));
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
    sched.run([&] { fill(r.bytes, dt, seed, i, shapes[i]); });
    w->write(r);
    params += checked_numel(plan[i].name, plan[i].shape);
  }
  w->commit();
  std::printf("%s: %zu tensors, %llu parameters, %s\n", out.c_str(), plan.size(), (unsigned long long)params, dtype_name(dt));
  return 0;
}

}  // namespace
}  // namespace wq

int main(int argc, char** argv) {
  try {
    return wq::run(argc, argv);
  } catch (const wq::Error& e) {
    std::fprintf(stderr, "wq_gen_model: %s\n", e.what());
    return int(e.kind());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wq_gen_model: %s\n", e.what());
    return 1;
  }
}
