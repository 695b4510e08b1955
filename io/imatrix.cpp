#include "io/imatrix.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "engine/error.h"
#include "io/gguf_format.h"
#include "io/gguf_writer.h"

namespace wq {
namespace {

// The legacy .dat: int32 n_entries, then per entry int32 name length, the name, int32
// ncall, int32 nval, nval f32; then (newer files) int32 last call and the dataset name.
class DatCursor {
 public:
  DatCursor(const std::string& path, std::vector<uint8_t> bytes) : path_(path), b_(std::move(bytes)) {}
  bool at_end() const { return pos_ == b_.size(); }
  int32_t i32(const std::string& what) {
    int32_t v;
    take(&v, 4, what);
    return v;
  }
  std::string str(size_t n, const std::string& what) {
    need(n, what);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  void floats(float* out, size_t n, const std::string& what) { take(out, n * 4, what); }
  size_t left() const { return b_.size() - pos_; }
  [[noreturn]] void fail(const std::string& msg) const { throw Error(path_ + ": " + msg); }

 private:
  void need(size_t n, const std::string& what) const {
    if (n > b_.size() - pos_) fail(what + ": the file ends early (truncated imatrix)");
  }
  void take(void* out, size_t n, const std::string& what) {
    need(n, what);
    std::memcpy(out, b_.data() + pos_, n);
    pos_ += n;
  }
  std::string path_;
  std::vector<uint8_t> b_;
  size_t pos_ = 0;
};

void check_finite(const std::string& path, const std::string& name, const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      throw Error(path + ": entry " + name + ": value " + std::to_string(i) + " is not finite (llama-quantize refuses "
                  "such an imatrix too)");
    }
  }
}

Imatrix read_dat(const std::string& path, std::vector<uint8_t> bytes) {
  DatCursor c(path, std::move(bytes));
  Imatrix m;
  const int32_t n = c.i32("the entry count");
  if (n < 1) c.fail("no entries (entry count " + std::to_string(n) + ")");
  for (int32_t i = 0; i < n; ++i) {
    const std::string which = "entry " + std::to_string(i + 1) + " of " + std::to_string(n);
    const int32_t len = c.i32(which + ": name length");
    if (len < 1 || size_t(len) > c.left()) c.fail(which + ": name length " + std::to_string(len) + " is out of range");
    std::string name = c.str(size_t(len), which + ": name");
    // llama-quantize reads the name as a C string: it ends at a NUL.
    name = name.substr(0, std::strlen(name.c_str()));
    if (name.empty()) c.fail(which + ": the name is empty (its first byte is a NUL)");
    const std::string entry = "entry " + name;
    const int32_t ncall = c.i32(entry + ": call count");
    const int32_t nval = c.i32(entry + ": value count");
    if (nval < 1 || size_t(nval) > c.left() / 4) c.fail(entry + ": value count " + std::to_string(nval) + " is out of range");
    std::vector<float> v(static_cast<size_t>(nval));
    c.floats(v.data(), v.size(), entry + ": values");
    if (ncall > 0) {
      for (float& x : v) x /= float(ncall);
    }
    if (!m.entries.emplace(name, std::move(v)).second) c.fail(entry + ": appears twice");
  }
  if (!c.at_end()) {
    m.chunks = c.i32("the chunk count after the entries");
    const int32_t len = c.i32("the dataset name length");
    if (len < 0 || size_t(len) > c.left()) c.fail("dataset name length " + std::to_string(len) + " is out of range");
    m.datasets.push_back(c.str(size_t(len), "the dataset name"));
    if (!c.at_end()) c.fail(std::to_string(c.left()) + " bytes after the dataset name: not an imatrix file");
  }
  return m;
}

uint32_t kv_u32(const GgufMetadata& meta, const std::string& path, const char* key) {
  const GgufKV* kv = meta.find(key);
  if (!kv) throw Error(path + ": imatrix metadata " + key + " is missing");
  if (kv->type != uint32_t(GgufValueType::U32) || kv->value.size() != 4) throw Error(path + ": " + key + ": not a u32");
  uint32_t v;
  std::memcpy(&v, kv->value.data(), 4);
  return v;
}

std::vector<std::string> kv_strings(const GgufMetadata& meta, const std::string& path, const char* key) {
  const GgufKV* kv = meta.find(key);
  if (!kv) throw Error(path + ": imatrix metadata " + key + " is missing");
  const std::vector<uint8_t>& b = kv->value;
  auto bad = [&] { return Error(path + ": " + key + ": not an array of strings"); };
  if (kv->type != uint32_t(GgufValueType::Array) || b.size() < 12) throw bad();
  uint32_t et;
  uint64_t n;
  std::memcpy(&et, b.data(), 4);
  std::memcpy(&n, b.data() + 4, 8);
  if (et != uint32_t(GgufValueType::String)) throw bad();
  std::vector<std::string> out;
  size_t pos = 12;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t len;
    if (b.size() - pos < 8) throw bad();
    std::memcpy(&len, b.data() + pos, 8);
    pos += 8;
    if (len > b.size() - pos) throw bad();
    out.emplace_back(reinterpret_cast<const char*>(b.data() + pos), size_t(len));
    pos += size_t(len);
  }
  return out;
}

bool remove_suffix(std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  if (s.size() < n || s.compare(s.size() - n, n, suffix) != 0) return false;
  s.resize(s.size() - n);
  return true;
}

Imatrix read_gguf_imatrix(const std::string& path) {
  auto r = open_gguf(path);
  const GgufMetadata& meta = r->metadata();
  if (r->tensors().empty()) throw Error(path + ": no entries (an imatrix GGUF without tensors)");
  Imatrix m;
  m.datasets = kv_strings(meta, path, "imatrix.datasets");
  m.chunks = int(kv_u32(meta, path, "imatrix.chunk_count"));
  kv_u32(meta, path, "imatrix.chunk_size");  // required, as llama-quantize requires it
  std::map<std::string, std::pair<int, int>> pairs;  // name -> (sums, counts) tensor index
  for (size_t i = 0; i < r->tensors().size(); ++i) {
    std::string name = r->tensors()[i].name;
    if (remove_suffix(name, ".in_sum2")) pairs.try_emplace(name, -1, -1).first->second.first = int(i);
    else if (remove_suffix(name, ".counts")) pairs.try_emplace(name, -1, -1).first->second.second = int(i);
  }
  for (const auto& [name, ix] : pairs) {
    if (name.empty()) throw Error(path + ": a tensor named .in_sum2 or .counts: the entry has no name");
    if (ix.first < 0 || ix.second < 0) {
      throw Error(path + ": entry " + name + ": " + (ix.first < 0 ? "counts without in_sum2" : "in_sum2 without counts"));
    }
    const TensorInfo& s = r->tensors()[size_t(ix.first)];
    const TensorInfo& c = r->tensors()[size_t(ix.second)];
    if (s.type_name != "F32" || c.type_name != "F32") throw Error(path + ": entry " + name + ": in_sum2 and counts must be F32");
    // ggml's ne0 (values per matrix) and ne1 (matrices: experts).
    const size_t ne0 = s.shape.empty() ? 1 : size_t(s.shape.back());
    const size_t numel = checked_numel(s.name, s.shape);
    const size_t ne1 = ne0 == 0 ? 0 : numel / ne0;
    if (numel == 0 || checked_numel(c.name, c.shape) != ne1) {
      throw Error(path + ": entry " + name + ": " + std::to_string(checked_numel(c.name, c.shape)) + " counts for " +
                  std::to_string(ne1) + " rows of in_sum2");
    }
    size_t n;
    const auto* sums = reinterpret_cast<const uint8_t*>(r->raw(size_t(ix.first), &n));
    const auto* counts = reinterpret_cast<const uint8_t*>(r->raw(size_t(ix.second), &n));
    std::vector<float> v(numel);
    for (size_t j = 0; j < ne1; ++j) {
      float count;
      std::memcpy(&count, counts + j * 4, 4);
      if (!std::isfinite(count)) throw Error(path + ": entry " + name + ": count " + std::to_string(j) + " is not finite");
      for (size_t i = 0; i < ne0; ++i) {
        float x;
        std::memcpy(&x, sums + (j * ne0 + i) * 4, 4);
        // A matrix that never got input during calibration weighs every column alike.
        v[j * ne0 + i] = count > 0.0f ? x / count : 1.0f;
      }
    }
    m.entries.emplace(name, std::move(v));
  }
  if (m.entries.empty()) throw Error(path + ": no entries (no <name>.in_sum2 / <name>.counts tensors)");
  return m;
}

// (Non-finite values are checked by the callers, after the filter: llama-quantize
// accepts them in entries --include-weights / --exclude-weights drop.)
Imatrix read_any(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open the imatrix file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw Error(path + ": cannot read the imatrix file");
  uint32_t magic = 0;
  if (bytes.size() >= 4) std::memcpy(&magic, bytes.data(), 4);
  if (magic == kGgufMagic) return read_gguf_imatrix(path);
  return read_dat(path, std::move(bytes));
}


void check_all_finite(const std::string& path, const Imatrix& m) {
  for (const auto& [name, v] : m.entries) check_finite(path, name, v);
}

}  // namespace

Imatrix read_imatrix(const std::string& path) {
  Imatrix m = read_any(path);
  check_all_finite(path, m);
  return m;
}

Imatrix read_imatrix(const std::string& path, const std::vector<std::string>& include, const std::vector<std::string>& exclude) {
  Imatrix m = read_any(path);
  filter_imatrix(m, include, exclude);
  check_all_finite(path, m);
  return m;
}

void filter_imatrix(Imatrix& m, const std::vector<std::string>& include, const std::vector<std::string>& exclude) {
  for (const std::string& x : exclude) {
    std::erase_if(m.entries, [&](const auto& e) { return e.first.find(x) != std::string::npos; });
  }
  if (include.empty()) return;
  std::erase_if(m.entries, [&](const auto& e) {
    for (const std::string& x : include) {
      if (e.first.find(x) != std::string::npos) return false;
    }
    return true;
  });
}

std::vector<GgufKV> imatrix_keys(const Imatrix& m, const std::string& path_as_given) {
  std::vector<GgufKV> kvs;
  if (m.entries.empty()) return kvs;
  // llama-quantize copies both strings into 128-byte override values.
  kvs.push_back(gguf_kv_string("quantize.imatrix.file", path_as_given.substr(0, 127)));
  if (!m.datasets.empty() && !m.datasets[0].empty()) {
    kvs.push_back(gguf_kv_string("quantize.imatrix.dataset", m.datasets[0].substr(0, 127)));
  }
  kvs.push_back(gguf_kv_i32("quantize.imatrix.entries_count", int32_t(m.entries.size())));
  if (m.chunks > 0) kvs.push_back(gguf_kv_i32("quantize.imatrix.chunks_count", int32_t(m.chunks)));
  return kvs;
}

}  // namespace wq
