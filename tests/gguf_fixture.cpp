#include "tests/gguf_fixture.h"

#include <cmath>
#include <cstring>

#include "engine/pipeline.h"
#include "io/gguf_format.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"

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

void write_gguf_fixture(const std::string& stories_gguf, const std::string& out_path) {
  auto src = open_gguf(stories_gguf);
  GgufMetadata meta = src->metadata();
  for (GgufKV& kv : meta.kvs) {
    if (kv.key == "llama.feed_forward_length") kv = gguf_kv_u32(kv.key, 192);
    if (kv.key == "general.name") kv = gguf_kv_string(kv.key, "wquant-fixture-192");
  }
  std::vector<TensorInfo> infos = src->tensors();
  std::vector<TensorPlan> plan;
  std::vector<uint32_t> types;
  for (size_t i = 0; i < infos.size(); ++i) {
    for (int64_t& d : infos[i].shape) {
      if (d == 172) d = 192;
    }
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

}  // namespace wq::test
