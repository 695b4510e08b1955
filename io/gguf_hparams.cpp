#include "io/gguf_hparams.h"

#include <cstring>
#include <vector>

#include "engine/error.h"
#include "io/gguf_format.h"

namespace wq {
namespace {

// An integer of any GGUF integer type at p.
bool read_int(uint32_t type, const uint8_t* p, size_t n, int64_t* out) {
  const size_t size = gguf_scalar_size(type);
  if (size == 0 || size > n || type == uint32_t(GgufValueType::F32) || type == uint32_t(GgufValueType::F64) ||
      type == uint32_t(GgufValueType::Bool))
    return false;
  switch (GgufValueType(type)) {
    case GgufValueType::U8: *out = p[0]; return true;
    case GgufValueType::I8: *out = int8_t(p[0]); return true;
    case GgufValueType::U16: { uint16_t v; std::memcpy(&v, p, 2); *out = v; return true; }
    case GgufValueType::I16: { int16_t v; std::memcpy(&v, p, 2); *out = v; return true; }
    case GgufValueType::U32: { uint32_t v; std::memcpy(&v, p, 4); *out = v; return true; }
    case GgufValueType::I32: { int32_t v; std::memcpy(&v, p, 4); *out = v; return true; }
    case GgufValueType::U64: { uint64_t v; std::memcpy(&v, p, 8); *out = int64_t(v); return true; }
    case GgufValueType::I64: { int64_t v; std::memcpy(&v, p, 8); *out = v; return true; }
    default: return false;
  }
}

// A key llama.cpp's loader reads as a uint32 (llama_model_loader::get_key: the GGUF type
// must be U32 exactly; "has wrong type ... but expected type u32" otherwise), or with
// `per_layer` also as an INT32 array of per-layer values (get_key_or_arr; arrays of other
// types are "not a float32, int32 array"): every value. Empty when the key is absent.
// Another type is refused as llama-quantize refuses it: llama.cpp would not load the input,
// nor an output that copies its keys.
std::vector<int64_t> ints(const GgufMetadata& meta, const std::string& key, const std::string& path, bool per_layer = false) {
  const GgufKV* kv = meta.find(key);
  if (!kv) return {};
  auto bad = [&](const std::string& what) {
    return Error(path + ": metadata " + key + ": " + what + " (llama.cpp's loader refuses it: llama-quantize refuses such a file, and " +
                 "llama.cpp would not load its output)");
  };
  int64_t v;
  if (kv->type != uint32_t(GgufValueType::Array)) {
    if (kv->type != uint32_t(GgufValueType::U32) || !read_int(kv->type, kv->value.data(), kv->value.size(), &v)) {
      throw bad("not a u32");
    }
    return {v};
  }
  if (!per_layer) throw bad("an array where one u32 is read");
  if (kv->value.size() < 12) throw bad("a truncated array");
  uint32_t et;
  uint64_t n;
  std::memcpy(&et, kv->value.data(), 4);
  std::memcpy(&n, kv->value.data() + 4, 8);
  if (et != uint32_t(GgufValueType::I32)) throw bad("an array of other values than int32");
  const size_t es = gguf_scalar_size(et);
  if (n > (kv->value.size() - 12) / es) throw bad("a truncated array");
  std::vector<int64_t> out;
  for (uint64_t i = 0; i < n; ++i) {
    if (!read_int(et, kv->value.data() + 12 + i * es, es, &v)) throw bad("a truncated array");
    out.push_back(v);
  }
  return out;
}

std::string string_value(const GgufMetadata& meta, const std::string& key, const std::string& path) {
  const GgufKV* kv = meta.find(key);
  if (!kv) throw Error(path + ": metadata " + key + " is missing (llama-quantize needs it)");
  uint64_t n;
  if (kv->type != uint32_t(GgufValueType::String) || kv->value.size() < 8 ||
      (std::memcpy(&n, kv->value.data(), 8), n != kv->value.size() - 8)) {
    throw Error(path + ": metadata " + key + ": not a string");
  }
  return std::string(reinterpret_cast<const char*>(kv->value.data()) + 8, n);
}

// Keys llama.cpp's loader requires of every model it loads (llama_model::load_hparams,
// c392e5094): llama-quantize refuses a file without them ("key not found in model"), and
// a file written without them would not load. Not every architecture's own required keys
// are checked, only those of all architectures and of llama's.
void require_loader_keys(const GgufMetadata& meta, const std::string& arch, const std::string& path) {
  auto missing = [&](const std::string& key, const char* what) {
    return Error(path + ": metadata " + key + ": " + what + " (llama.cpp requires it: llama-quantize refuses such a file, " +
                 "and llama.cpp would not load its output)");
  };
  for (const char* k : {"context_length", "embedding_length"}) {
    const std::string key = arch + "." + k;
    if (!meta.find(key)) throw missing(key, "missing");
    ints(meta, key, path);  // (one u32: checked there)
  }
  if (arch == "llama") {
    const std::string key = "llama.attention.layer_norm_rms_epsilon";
    const GgufKV* kv = meta.find(key);
    if (!kv) throw missing(key, "missing");
    if (kv->type != uint32_t(GgufValueType::F32)) throw missing(key, "not an f32");
  }
}

}  // namespace

MixModel gguf_mix_model(const GgufMetadata& meta, const std::string& path) {
  MixModel m;
  m.arch = string_value(meta, "general.architecture", path);
  require_loader_keys(meta, m.arch, path);
  const std::string a = m.arch + ".";
  const std::vector<int64_t> layers = ints(meta, a + "block_count", path);
  if (layers.size() != 1 || layers[0] < 0 || layers[0] > 100000) {
    throw Error(path + ": metadata " + a + "block_count: missing or not one layer count (llama-quantize needs it)");
  }
  m.n_layer = int(layers[0]);
  // Per-layer arrays fill every layer; a single number applies to all (llama_model_loader::get_key_or_arr).
  auto per_layer = [&](const std::vector<int64_t>& v, int64_t fallback) {
    std::vector<int64_t> out(size_t(m.n_layer), fallback);
    if (v.size() == 1) std::fill(out.begin(), out.end(), v[0]);
    else if (!v.empty()) {
      if (v.size() != size_t(m.n_layer)) return std::vector<int64_t>();
      out = v;
    }
    return out;
  };
  const std::vector<int64_t> heads = per_layer(ints(meta, a + "attention.head_count", path, true), 0);
  const std::vector<int64_t> raw_kv = ints(meta, a + "attention.head_count_kv", path, true);
  if (heads.size() != size_t(m.n_layer)) throw Error(path + ": metadata " + a + "attention.head_count: one value per layer expected");
  const std::vector<int64_t> kv = raw_kv.empty() ? heads : per_layer(raw_kv, 0);
  if (kv.size() != size_t(m.n_layer)) throw Error(path + ": metadata " + a + "attention.head_count_kv: one value per layer expected");
  if (m.n_layer > 0) {
    m.n_head = uint32_t(heads[0]);
    m.n_head_kv = uint32_t(kv[0]);
  }
  m.n_attn_layer = 0;
  for (int64_t h : kv) m.n_attn_layer += h != 0;
  const std::vector<int64_t> experts = ints(meta, a + "expert_count", path);
  m.n_expert = experts.empty() ? 0 : uint32_t(experts[0]);
  // llama.cpp's LLM_TYPE_70B (llama-model.cpp load_hparams): the mixes give its attn_v more bits.
  if (m.n_layer == 80) {
    m.is_70b = (m.arch == "llama" && m.n_head != m.n_head_kv) || m.arch == "deci" || m.arch == "qwen2" || m.arch == "olmo";
  }
  return m;
}

}  // namespace wq
