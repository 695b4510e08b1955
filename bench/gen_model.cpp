// Writes a synthetic TinyLlama-shaped model (22 layers, dim 2048, FFN 5632, 32 heads,
// 4 KV heads, vocab 32000: about 1.1 B parameters) for benchmarks and scale tests, as
// GGUF (llama.cpp names, llama.* metadata and a llama-style SentencePiece vocabulary, so
// llama-quantize accepts it and llama.cpp runs it) or safetensors (Hugging Face names), in
// f32, f16 or bf16 (GGUF norms stay f32). See bench/synthetic_model.h. OUT ending in
// .index.json writes a sharded Hugging Face checkpoint beside it (model-0000N-of-0000M
// .safetensors, at most --shard-size bytes of tensors each, default 1G).
//
//   wq_gen_model [--layers N] [--dtype f32|f16|bf16] [--format gguf|safetensors] [--seed S]
//                [--shard-size BYTES[K|M|G]] OUT.gguf|OUT.safetensors|OUT.index.json
#include <cstdio>
#include <exception>
#include <optional>
#include <string>

#include "bench/synthetic_model.h"
#include "engine/error.h"
#include "io/model_writer.h"

namespace wq {
namespace {

uint64_t parse_size(const std::string& flag, const std::string& v) {
  size_t used = 0;
  unsigned long long n = 0;
  try {
    n = std::stoull(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = v.substr(used);
  const uint64_t mul = unit.empty() ? 1 : unit == "K" ? 1ull << 10 : unit == "M" ? 1ull << 20 : unit == "G" ? 1ull << 30 : 0;
  if (used == 0 || mul == 0 || n == 0) throw Error(flag + ": expected a size like 512M or 2G, got '" + v + "'", ErrorKind::Usage);
  return uint64_t(n) * mul;
}

int run(int argc, char** argv) {
  SyntheticConfig c;
  std::optional<OutputFormat> format;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value", ErrorKind::Usage);
      return argv[++i];
    };
    if (a == "--layers") c.layers = std::stoi(next());
    else if (a == "--shard-size") c.shard_bytes = parse_size(a, next());
    else if (a == "--seed") c.seed = std::stoull(next());
    else if (a == "--dtype") {
      const std::string d = next();
      if (d == "f32") c.dtype = DType::F32;
      else if (d == "f16") c.dtype = DType::F16;
      else if (d == "bf16") c.dtype = DType::BF16;
      else throw Error("--dtype must be f32, f16 or bf16, not " + d, ErrorKind::Usage);
    } else if (a == "--format") {
      const std::string f = next();
      if (f == "gguf") format = OutputFormat::Gguf;
      else if (f == "safetensors") format = OutputFormat::Safetensors;
      else throw Error("--format must be gguf or safetensors, not " + f, ErrorKind::Usage);
    } else if (!a.empty() && a[0] == '-') {
      throw Error("unknown flag " + a, ErrorKind::Usage);
    } else {
      out = a;
    }
  }
  if (out.empty() || c.layers < 1 || c.layers > 1000) {
    std::fprintf(stderr, "usage: wq_gen_model [--layers 1..1000] [--dtype f32|f16|bf16] [--format gguf|safetensors] "
                         "[--seed S] [--shard-size BYTES[K|M|G]] OUT.gguf|OUT.safetensors|OUT.index.json\n");
    return 2;
  }
  const bool index = out.size() > 11 && out.compare(out.size() - 11, 11, ".index.json") == 0;
  const OutputFormat fmt = format ? *format : index ? OutputFormat::Safetensors : format_from_path(out);
  const uint64_t params = write_synthetic_model(out, fmt, c);
  std::printf("%s: %llu parameters, %s\n", out.c_str(), (unsigned long long)params, dtype_name(c.dtype));
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
