#include "io/gguf_reader.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <string>

#include "engine/error.h"
#include "io/gguf_format.h"
#include "io/mapped_file.h"
#include "kernels/ggml_types.h"

namespace wq {

const GgufKV* GgufMetadata::find(const std::string& key) const {
  for (const GgufKV& kv : kvs) {
    if (kv.key == key) return &kv;
  }
  return nullptr;
}

namespace {

// Counts beyond these are not a model: they would only make us loop or allocate.
constexpr uint64_t kMaxTensors = 1ull << 24;
constexpr uint64_t kMaxKVs = 1ull << 24;
constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;

// A bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(const MappedFile& f) : f_(f) {}
  uint64_t pos() const { return pos_; }
  const uint8_t* take(uint64_t n, const std::string& what) {
    const uint8_t* p = f_.span(pos_, n, what);
    pos_ += n;
    return p;
  }
  template <class T>
  T get(const std::string& what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }
  std::string str(const std::string& what) {
    const uint64_t n = get<uint64_t>(what + " (string length)");
    if (n > f_.size()) {
      throw Error(f_.path() + ": " + what + ": string length " + std::to_string(n) + " is past the end of the file");
    }
    const uint8_t* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  // Skips one value of `type`, checking every length against the file.
  void skip_value(uint32_t type, const std::string& what, int depth = 0) {
    if (type == uint32_t(GgufValueType::String)) {
      str(what);
      return;
    }
    if (type == uint32_t(GgufValueType::Array)) {
      if (depth >= kMaxArrayDepth) throw Error(f_.path() + ": " + what + ": arrays nested too deeply");
      const uint32_t et = get<uint32_t>(what + " (array type)");
      const uint64_t n = get<uint64_t>(what + " (array length)");
      const size_t es = gguf_scalar_size(et);
      if (es) {
        if (n > f_.size() / es) throw Error(f_.path() + ": " + what + ": array of " + std::to_string(n) + " elements is past the end of the file");
        take(n * es, what);
        return;
      }
      if (et != uint32_t(GgufValueType::String) && et != uint32_t(GgufValueType::Array))
        throw Error(f_.path() + ": " + what + ": unknown array element type " + std::to_string(et));
      if (n > f_.size() / 8) throw Error(f_.path() + ": " + what + ": array of " + std::to_string(n) + " elements is past the end of the file");
      for (uint64_t i = 0; i < n; ++i) skip_value(et, what, depth + 1);
      return;
    }
    const size_t s = gguf_scalar_size(type);
    if (!s) throw Error(f_.path() + ": " + what + ": unknown value type " + std::to_string(type));
    take(s, what);
  }

 private:
  const MappedFile& f_;
  uint64_t pos_ = 0;
};

struct Entry {
  TensorInfo info;
  uint32_t type = 0;
  uint64_t offset = 0;  // absolute
};

class GgufReaderImpl final : public GgufReader {
 public:
  explicit GgufReaderImpl(const std::string& path) : file_(path) {
    Cursor c(file_);
    const std::string& p = file_.path();
    if (c.get<uint32_t>("magic") != kGgufMagic) throw Error(p + ": not a GGUF file (bad magic)");
    meta_.version = c.get<uint32_t>("version");
    if (meta_.version != 2 && meta_.version != 3)
      throw Error(p + ": GGUF version " + std::to_string(meta_.version) + " is not supported (2 and 3 are)");
    const uint64_t n_tensors = c.get<uint64_t>("tensor count");
    const uint64_t n_kv = c.get<uint64_t>("metadata count");
    if (n_tensors > kMaxTensors) throw Error(p + ": tensor count " + std::to_string(n_tensors) + " is absurd");
    if (n_kv > kMaxKVs) throw Error(p + ": metadata count " + std::to_string(n_kv) + " is absurd");
    std::set<std::string> keys;
    for (uint64_t i = 0; i < n_kv; ++i) {
      GgufKV kv;
      kv.key = c.str("metadata key #" + std::to_string(i));
      // (llama.cpp's reader asserts on it: neither the input nor a copy of its keys loads.)
      if (kv.key.empty()) throw Error(p + ": metadata key #" + std::to_string(i) + " has an empty name");
      // A reader keeps the first or the last of two equal keys: either way one is lost.
      if (!keys.insert(kv.key).second) throw Error(p + ": metadata key " + kv.key + " appears twice");
      kv.type = c.get<uint32_t>(kv.key + " (type)");
      const uint64_t begin = c.pos();
      c.skip_value(kv.type, kv.key);
      kv.value.assign(file_.data() + begin, file_.data() + c.pos());
      if (kv.key == "general.alignment") {
        if (kv.type != uint32_t(GgufValueType::U32)) throw Error(p + ": general.alignment is not a uint32");
        std::memcpy(&meta_.alignment, kv.value.data(), 4);
        if (meta_.alignment == 0 || (meta_.alignment & (meta_.alignment - 1)))
          throw Error(p + ": general.alignment " + std::to_string(meta_.alignment) + " is not a power of two");
      }
      meta_.kvs.push_back(std::move(kv));
    }
    std::set<std::string> names;
    for (uint64_t i = 0; i < n_tensors; ++i) {
      entries_.push_back(read_info(c, i));
      const std::string& n = entries_.back().info.name;
      if (n.empty()) throw Error(p + ": tensor #" + std::to_string(i) + " has an empty name");
      // ggml and llama.cpp read names as C strings: "a\0x" would be "a".
      if (n.find('\0') != std::string::npos) throw Error(p + ": " + n + ": the tensor name holds a NUL byte");
      // ggml's GGML_MAX_NAME: llama.cpp's reader refuses longer names (and so would refuse
      // an output that copied this one).
      if (n.size() >= 64) {
        throw Error(p + ": " + n + ": a GGUF tensor name has at most 63 bytes (llama.cpp's GGML_MAX_NAME is 64); this one has " +
                    std::to_string(n.size()));
      }
      if (!names.insert(n).second) throw Error(p + ": " + n + ": two tensors have this name");
    }
    const uint64_t a = meta_.alignment;
    const uint64_t data_start = (c.pos() + a - 1) / a * a;
    for (Entry& e : entries_) {
      if (e.offset % a) throw Error(p + ": " + e.info.name + ": data offset " + std::to_string(e.offset) + " is not aligned to " + std::to_string(a));
      if (e.offset > file_.size() || data_start > file_.size() - e.offset || !file_.contains(data_start + e.offset, e.info.nbytes))
        throw Error(p + ": " + e.info.name + ": data runs past the end of the file (" + std::to_string(file_.size()) + " bytes): truncated");
      e.offset += data_start;
    }
    std::vector<const Entry*> by_offset;
    for (const Entry& e : entries_) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(), [](const Entry* x, const Entry* y) { return x->offset < y->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->info.nbytes)
        throw Error(p + ": tensors " + by_offset[i - 1]->info.name + " and " + by_offset[i]->info.name + " overlap");
    }
    for (const Entry& e : entries_) infos_.push_back(e.info);
  }

  const char* format() const override { return "gguf"; }
  const std::string& path() const override { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const GgufMetadata& metadata() const override { return meta_; }
  uint32_t ggml_type(size_t i) const override { return at(i).type; }

  TensorView view(size_t i) override {
    const Entry& e = at(i);
    if (e.info.kind != StoredKind::Float)
      throw Error(path() + ": " + e.info.name + ": is " + e.info.type_name + ", not a float tensor");
    TensorView v;
    v.name = e.info.name;
    v.shape = e.info.shape;
    v.dtype = e.info.dtype;
    v.nbytes = e.info.nbytes;
    v.data = file_.span(e.offset, e.info.nbytes, e.info.name);
    v.mapped = file_.source();
    return v;
  }
  const uint8_t* raw(size_t i, size_t* nbytes) override {
    const Entry& e = at(i);
    *nbytes = e.info.nbytes;
    return file_.span(e.offset, e.info.nbytes, e.info.name);
  }
  void release(size_t i) override { file_.release(at(i).offset, at(i).info.nbytes); }
  MappedSource raw_mapping(size_t i) override {
    at(i);  // (throws for an index past the file's tensors, as raw() does)
    return file_.source();
  }
  uint64_t data_offset(size_t i) const override { return at(i).offset; }

 private:
  const Entry& at(size_t i) const {
    if (i >= entries_.size()) throw Error(path() + ": no tensor #" + std::to_string(i), ErrorKind::Internal);
    return entries_[i];
  }

  Entry read_info(Cursor& c, uint64_t i) {
    const std::string& p = file_.path();
    Entry e;
    e.info.name = c.str("tensor #" + std::to_string(i) + " name");
    const std::string& n = e.info.name;
    const uint32_t nd = c.get<uint32_t>(n + " (n_dims)");
    if (nd == 0 || nd > kMaxDims) throw Error(p + ": " + n + ": " + std::to_string(nd) + " dimensions (GGUF allows 1 to 4)");
    std::vector<int64_t> ne(nd);
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t v = c.get<uint64_t>(n + " (ne)");
      if (v > uint64_t(INT64_MAX)) throw Error(p + ": " + n + ": dimension " + std::to_string(v) + " is absurd");
      ne[d] = int64_t(v);
    }
    e.info.shape.assign(ne.rbegin(), ne.rend());  // ggml's ne[0] is the innermost
    e.type = c.get<uint32_t>(n + " (type)");
    e.offset = c.get<uint64_t>(n + " (offset)");
    const auto traits = gguf_tensor_type(e.type);
    if (!traits) throw Error(p + ": " + n + ": unknown ggml type " + std::to_string(e.type));
    e.info.type_name = traits->name;
    const size_t numel = checked_numel(p + ": " + n, e.info.shape);
    if (ne[0] % traits->block_weights)
      throw Error(p + ": " + n + ": row of " + std::to_string(ne[0]) + " is not a whole number of " + traits->name + " blocks");
    const uint64_t blocks = numel / traits->block_weights;
    if (blocks > UINT64_MAX / traits->block_bytes) throw Error(p + ": " + n + ": size overflows");
    e.info.nbytes = blocks * traits->block_bytes;
    switch (e.type) {
      case kGgmlF32: e.info.kind = StoredKind::Float; e.info.dtype = DType::F32; break;
      case kGgmlF16: e.info.kind = StoredKind::Float; e.info.dtype = DType::F16; break;
      case kGgmlBF16: e.info.kind = StoredKind::Float; e.info.dtype = DType::BF16; break;
      // Blocks of weights are llama.cpp quantizations, whether or not wquant has their
      // kernels: not requantized without --allow-requantize, as llama-quantize refuses.
      default: e.info.kind = traits->block_weights > 1 ? StoredKind::Ggml : StoredKind::Other;
    }
    return e;
  }

  MappedFile file_;
  GgufMetadata meta_;
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
};

}  // namespace

std::unique_ptr<GgufReader> open_gguf(const std::string& path) { return std::make_unique<GgufReaderImpl>(path); }

std::vector<size_t> gguf_file_order(const GgufReader& r) {
  std::vector<size_t> order(r.tensors().size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  // Stable: tensors of no bytes may share an offset; they keep the header's order.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const uint32_t sa = r.shard(a), sb = r.shard(b);
    return sa != sb ? sa < sb : r.data_offset(a) < r.data_offset(b);
  });
  return order;
}

}  // namespace wq
