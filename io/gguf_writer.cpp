#include "io/gguf_writer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "engine/error.h"
#include "io/gguf_format.h"
#include "io/gguf_split_reader.h"
#include "io/held_payloads.h"
#include "io/output_file.h"
#include "kernels/ggml_types.h"

namespace wq {
namespace {

// resize + memcpy rather than insert: GCC 12 sees insert's copy into a freshly grown
// empty vector as a write past a zero-sized region (-Wstringop-overflow, a false alarm).
void put(std::vector<uint8_t>& b, const void* p, size_t n) {
  if (n == 0) return;
  const size_t at = b.size();
  b.resize(at + n);
  std::memcpy(b.data() + at, p, n);
}
template <class T>
void put(std::vector<uint8_t>& b, T v) {
  put(b, &v, sizeof v);
}
void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  put(b, s.data(), s.size());
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// A string as llama-quantize writes it: up to its first NUL (gguf copies keys and string
// values through C strings), so a value holding one gives llama-quantize's bytes.
std::string c_string(const std::string& s) { return s.substr(0, s.find('\0')); }

// A value's bytes with each string (a string, or an array of strings) cut at its first NUL;
// other values as they are.
std::vector<uint8_t> c_string_value(uint32_t type, const std::vector<uint8_t>& v) {
  const uint32_t kString = uint32_t(GgufValueType::String), kArray = uint32_t(GgufValueType::Array);
  auto read_u64 = [&](size_t at) {
    uint64_t x = 0;
    if (at + 8 <= v.size()) std::memcpy(&x, v.data() + at, 8);
    return x;
  };
  auto has_nul = [](const uint8_t* p, uint64_t n) { return std::memchr(p, 0, n) != nullptr; };
  if (type == kString && v.size() >= 8) {
    const uint64_t n = read_u64(0);
    if (n > v.size() - 8 || !has_nul(v.data() + 8, n)) return v;
    std::vector<uint8_t> out;
    put_str(out, c_string(std::string(reinterpret_cast<const char*>(v.data() + 8), n)));
    return out;
  }
  if (type != kArray || v.size() < 12) return v;
  uint32_t et = 0;
  std::memcpy(&et, v.data(), 4);
  if (et != kString) return v;
  const uint64_t count = read_u64(4);
  std::vector<uint8_t> out(v.begin(), v.begin() + 12);
  size_t at = 12;
  bool changed = false;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t n = read_u64(at);
    if (at + 8 > v.size() || n > v.size() - at - 8) return v;  // (the reader validated it)
    const std::string str(reinterpret_cast<const char*>(v.data() + at + 8), n);
    changed = changed || str.find('\0') != std::string::npos;
    put_str(out, c_string(str));
    at += 8 + n;
  }
  return changed ? out : v;
}

struct OutTensor {
  std::string name;
  std::vector<int64_t> shape;
  uint32_t type = 0;
  uint64_t nbytes = 0;
  uint64_t offset = 0;  // in the data section
};

// The type and size each plan entry has in the output.
std::vector<OutTensor> layout(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                              const std::vector<uint32_t>& source_types, uint32_t alignment) {
  std::vector<OutTensor> out;
  uint64_t off = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const TensorPlan& p = plan[i];
    const TensorInfo& info = infos.at(p.source_index);
    OutTensor t;
    t.name = p.name;
    t.shape = p.shape;
    const size_t numel = checked_numel(p.name, p.shape);
    switch (p.action) {
      case TensorAction::Ggml:
        t.type = ggml_traits(p.ggml).gguf_type;
        t.nbytes = ggml_row_bytes(p.ggml, numel);
        break;
      case TensorAction::KeepFloat:
        t.type = p.out_dtype == DType::F32 ? kGgmlF32 : (p.out_dtype == DType::F16 ? kGgmlF16 : kGgmlBF16);
        t.nbytes = numel * dtype_size(p.out_dtype);
        break;
      case TensorAction::CopyRaw:
        t.type = source_types.at(p.source_index);
        t.nbytes = info.nbytes;
        break;
      case TensorAction::Quantize:
        throw Error(p.name + ": GGUF holds llama.cpp block types (--type Q4_0 etc.), not wquant codes",
                    ErrorKind::Usage);
    }
    if (t.shape.empty() || t.shape.size() > 4) {
      throw Error(p.name + ": GGUF tensors have 1 to 4 dimensions, this one has " + std::to_string(t.shape.size()),
                  ErrorKind::Usage);
    }
    t.offset = off;
    off = align_up(off + t.nbytes, alignment);
    out.push_back(std::move(t));
  }
  return out;
}

// The metadata as llama-quantize writes it (GgufOutputKeys).
std::vector<GgufKV> output_kvs(const GgufMetadata& meta, const std::vector<TensorPlan>& plan, const GgufOutputKeys& keys) {
  std::vector<GgufKV> kvs;
  for (const GgufKV& kv : meta.kvs) {
    if (kv.key == "general.quantization_version" || kv.key == "general.file_type" || kv.key == "split.no" ||
        kv.key == "split.count" || kv.key == "split.tensors.count")
      continue;
    kvs.push_back(kv);
  }
  uint32_t file_type = 0;
  if (keys.file_type) {
    file_type = *keys.file_type;
  } else {
    size_t best = 0;
    size_t counts[kGgmlBlockCount] = {};
    for (const TensorPlan& p : plan) {
      if (p.action != TensorAction::Ggml) continue;
      if (++counts[int(p.ggml)] > best) {
        best = counts[int(p.ggml)];
        file_type = ggml_traits(p.ggml).llama_ftype;
      }
    }
  }
  kvs.push_back(gguf_kv_u32("general.quantization_version", 2));
  kvs.push_back(gguf_kv_u32("general.file_type", file_type));
  for (const GgufKV& kv : keys.extra) {
    std::erase_if(kvs, [&](const GgufKV& k) { return k.key == kv.key; });
    kvs.push_back(kv);
  }
  return kvs;
}

class GgufWriter final : public ModelWriter {
 public:
  GgufWriter(const std::string& path, const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
             const std::vector<GgufKV>& kvs, uint32_t alignment, const std::vector<uint32_t>& source_types)
      : out_(path), alignment_(alignment), tensors_(layout(plan, infos, source_types, alignment)) {
    std::vector<uint8_t> h = header(kvs);
    out_.write(h.data(), h.size());
    out_.pad_to(alignment_);
    data_start_ = out_.offset();
  }

  // A tensor's data arrives whole or in row pieces (in order; the bytes of its rows are
  // contiguous in the file): it is padded and done at its last piece.
  bool takes_row_pieces() const override { return true; }
  void write(TensorResult& r) override {
    if (next_ >= tensors_.size()) throw Error(out_.path() + ": more tensors than planned", ErrorKind::Internal);
    const OutTensor& t = tensors_[next_];
    if (r.plan && r.plan->name != t.name)
      throw Error(out_.path() + ": " + r.plan->name + ": out of plan order", ErrorKind::Internal);
    if (r.first_piece) written_ = 0;
    written_ += r.size();
    if (written_ > t.nbytes || (r.last_piece && written_ != t.nbytes)) {
      throw Error(out_.path() + ": " + t.name + ": " + std::to_string(written_) + " bytes of data, planned " +
                      std::to_string(t.nbytes),
                  ErrorKind::Internal);
    }
    // Blocks the pipeline placed for it are written without a copy where the output allows
    // (source bytes are not: the reader may drop their pages once this returns), and their
    // buffer is then kept here until the background write has read it.
    if (r.raw) out_.write(r.data(), r.size());
    else held_.hold(r, out_.write_held(r.data(), r.size()));
    if (!r.last_piece) return;
    out_.pad_to(alignment_);
    ++next_;
  }
  size_t payload_phase(size_t plan_index, uint64_t at) const override {
    return plan_index < tensors_.size() ? out_.direct_phase(data_start_ + tensors_[plan_index].offset + at) : 0;
  }
  bool take_released(TensorResult* r) override { return held_.take_released(out_, r); }

  void commit() override {
    finish();
    out_.commit();
  }
  // The file, for the shards of a split model, which are committed together.
  OutputFile& file() { return out_; }
  // Complete but not yet under its final name (OutputFile::finish).
  void finish() {
    if (next_ != tensors_.size())
      throw Error(out_.path() + ": " + std::to_string(tensors_.size() - next_) + " tensors were not written", ErrorKind::Internal);
    out_.finish();
  }
  bool full() const { return next_ == tensors_.size(); }
  uint64_t bytes_written() const override { return out_.offset(); }
  const std::string& temp_path() const override { return out_.temp_path(); }

  static uint64_t planned_size(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                               const std::vector<GgufKV>& kvs, uint32_t alignment, const std::vector<uint32_t>& types) {
    const std::vector<OutTensor> ts = layout(plan, infos, types, alignment);
    uint64_t size = align_up(header_bytes(kvs, ts).size(), alignment);
    for (const OutTensor& t : ts) size += align_up(t.nbytes, alignment);
    return size;
  }

 private:
  std::vector<uint8_t> header(const std::vector<GgufKV>& kvs) const { return header_bytes(kvs, tensors_); }

  static std::vector<uint8_t> header_bytes(const std::vector<GgufKV>& kvs, const std::vector<OutTensor>& ts) {
    std::vector<uint8_t> h;
    put<uint32_t>(h, kGgufMagic);
    put<uint32_t>(h, 3);
    put<uint64_t>(h, ts.size());
    put<uint64_t>(h, kvs.size());
    for (const GgufKV& kv : kvs) {
      put_str(h, c_string(kv.key));
      put<uint32_t>(h, kv.type);
      const std::vector<uint8_t> value = c_string_value(kv.type, kv.value);
      put(h, value.data(), value.size());
    }
    for (const OutTensor& t : ts) {
      put_str(h, t.name);
      // ggml_n_dims: outer dimensions of size 1 are not written, as gguf_write_to_buf does.
      size_t lead = 0;
      while (lead + 1 < t.shape.size() && t.shape[lead] == 1) ++lead;
      put<uint32_t>(h, uint32_t(t.shape.size() - lead));
      for (size_t d = t.shape.size(); d-- > lead;) put<uint64_t>(h, uint64_t(t.shape[d]));
      put<uint32_t>(h, t.type);
      put<uint64_t>(h, t.offset);
    }
    return h;
  }

  HeldPayloads held_;  // before out_: destroyed after it, which waits for the writes reading them
  OutputFile out_;
  uint32_t alignment_;
  std::vector<OutTensor> tensors_;
  uint64_t data_start_ = 0;
  size_t next_ = 0;
  uint64_t written_ = 0;  // bytes of tensors_[next_] written so far (row pieces)
};

const GgufReader& as_gguf(const ModelReader& source) {
  const auto* g = dynamic_cast<const GgufReader*>(&source);
  if (!g) {
    throw Error(source.path() + ": GGUF output needs a GGUF input (its metadata: architecture, tokenizer, "
                                "hyper-parameters, is copied); convert this " +
                    std::string(source.format()) + " model to .wq or .safetensors instead",
                ErrorKind::Usage);
  }
  return *g;
}

std::vector<uint32_t> source_types(const GgufReader& g) {
  std::vector<uint32_t> t(g.tensors().size());
  for (size_t i = 0; i < t.size(); ++i) t[i] = g.ggml_type(i);
  return t;
}

GgufKV make_kv(const std::string& key, GgufValueType type, std::vector<uint8_t> value) {
  GgufKV kv;
  kv.key = key;
  kv.type = uint32_t(type);
  kv.value = std::move(value);
  return kv;
}

template <class T>
GgufKV scalar_array(const std::string& key, GgufValueType et, const std::vector<T>& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(et));
  put<uint64_t>(b, v.size());
  for (const T& x : v) put<T>(b, x);
  return make_kv(key, GgufValueType::Array, std::move(b));
}

// llama-quantize --keep-split (llama_model_quantize_impl): output shard k holds the plan
// entries of the tensors that source shard k holds. The first shard has the metadata of a
// single-file output, the others none (a fresh gguf_context: alignment 32, whatever
// general.alignment says); each then gets split.no (u16), split.count (u16) and
// split.tensors.count (i32, all shards' tensors) appended, unless there is one shard.
constexpr uint32_t kGgufDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT

struct Shard {
  std::string path;
  std::vector<TensorPlan> plan;
  std::vector<GgufKV> kvs;
  uint32_t alignment = kGgufDefaultAlignment;
};

std::vector<Shard> split_shards(const std::string& prefix, const std::vector<TensorPlan>& plan, const GgufReader& g,
                                const GgufOutputKeys& keys) {
  const uint32_t n = g.shard_count();
  if (n > 65535) throw Error(g.path() + ": " + std::to_string(n) + " shards; GGUF's split.count holds at most 65535", ErrorKind::Usage);
  // Every shard stays a file a signal must remove until the last is in place (a few
  // slots are left for the run's other outputs, a params file).
  if (n > kMaxGuardedOutputs - 8) {
    throw Error(g.path() + ": " + std::to_string(n) + " shards; --keep-split writes at most " +
                    std::to_string(kMaxGuardedOutputs - 8) + " (join the shards, or drop --keep-split)",
                ErrorKind::Usage);
  }
  std::vector<Shard> shards(n);
  uint32_t last = 0;
  for (const TensorPlan& p : plan) {
    const uint32_t s = g.shard(p.source_index);
    if (s < last) throw Error(p.name + ": planned after a tensor of a later shard", ErrorKind::Internal);
    last = s;
    shards[s].plan.push_back(p);
  }
  // llama-quantize counts the shards from the last that holds a tensor and has no output
  // for a shard without one (it crashes on one in the middle); the first may be empty
  // (gguf-split --no-tensor-first-split): its output then holds the metadata alone.
  for (uint32_t s = 1; s < n; ++s) {
    if (shards[s].plan.empty()) {
      throw Error(g.shard_path(s) + ": this shard holds no tensors; --keep-split writes one output a shard and "
                                    "llama-quantize cannot write this one either (join the shards, or drop --keep-split)",
                  ErrorKind::Usage);
    }
  }
  for (uint32_t s = 0; s < n; ++s) {
    Shard& sh = shards[s];
    sh.path = gguf_split_path(prefix, int(s), int(n));
    if (s == 0) {
      sh.kvs = output_kvs(g.metadata(), plan, keys);
      sh.alignment = g.metadata().alignment;  // as the single-file writer
    } else {
      sh.alignment = kGgufDefaultAlignment;
    }
    if (n > 1) {
      sh.kvs.push_back(gguf_kv_u16("split.no", uint16_t(s)));
      sh.kvs.push_back(gguf_kv_u16("split.count", uint16_t(n)));
      sh.kvs.push_back(gguf_kv_i32("split.tensors.count", int32_t(g.tensors().size())));
    }
  }
  return shards;
}

// Writes the shards one after another, each into its temporary file; only when the last
// is complete are they all renamed into place. One shard is open at a time (one write
// buffer); the finished ones hold only their temporary names.
class GgufSplitWriter final : public ModelWriter {
 public:
  GgufSplitWriter(std::vector<Shard> shards, const GgufReader& g) : shards_(std::move(shards)), types_(source_types(g)), infos_(g.tensors()) {
    // Which final names may be replaced is decided now, for every shard, as OutputFile
    // decides it for one file: a shard opened later must not replace a file that
    // appeared in the meantime.
    for (const Shard& s : shards_) {
      struct stat st;
      existed_.push_back(::lstat(s.path.c_str(), &st) == 0);
    }
    open_next();
  }

  bool takes_row_pieces() const override { return true; }
  void write(TensorResult& r) override {
    while (writers_.back()->full()) {  // (a shard is full only after a tensor's last piece)
      if (writers_.size() == shards_.size()) throw Error(shards_.back().path + ": more tensors than planned", ErrorKind::Internal);
      open_next();
    }
    writers_.back()->write(r);
  }
  bool take_released(TensorResult* r) override {
    for (const auto& w : writers_) {
      if (w->take_released(r)) return true;
    }
    return false;
  }

  void commit() override {
    while (writers_.size() < shards_.size()) open_next();
    std::vector<OutputFile*> files;
    for (const auto& w : writers_) {
      w->finish();  // (checks that every tensor of the shard was written)
      files.push_back(&w->file());
    }
    // No part of a split model under the final names without the rest: all or none,
    // the user's earlier shards put back if a rename fails (commit_together).
    commit_together(files);
  }
  uint64_t bytes_written() const override { return finished_bytes_ + writers_.back()->bytes_written(); }
  const std::string& temp_path() const override { return writers_.back()->temp_path(); }

  static uint64_t planned_size(const std::vector<Shard>& shards, const std::vector<TensorInfo>& infos,
                               const std::vector<uint32_t>& types) {
    uint64_t size = 0;
    for (const Shard& s : shards) size += GgufWriter::planned_size(s.plan, infos, s.kvs, s.alignment, types);
    return size;
  }

 private:
  void open_next() {
    if (!writers_.empty()) {
      writers_.back()->finish();
      finished_bytes_ += writers_.back()->bytes_written();
    }
    const Shard& s = shards_[writers_.size()];
    struct stat st;
    if (!existed_[writers_.size()] && ::lstat(s.path.c_str(), &st) == 0) {
      throw Error(s.path + ": appeared while wquant was writing the shards before it (another run?); it was not "
                           "replaced (pass --force to replace it)",
                  ErrorKind::Output);
    }
    writers_.push_back(std::make_unique<GgufWriter>(s.path, s.plan, infos_, s.kvs, s.alignment, types_));
  }

  std::vector<Shard> shards_;
  std::vector<uint32_t> types_;
  const std::vector<TensorInfo>& infos_;
  std::vector<std::unique_ptr<GgufWriter>> writers_;
  std::vector<bool> existed_;  // the shard's final name was taken when the writer was made
  uint64_t finished_bytes_ = 0;
};

}  // namespace

GgufKV gguf_kv_u32(const std::string& key, uint32_t v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, v);
  return make_kv(key, GgufValueType::U32, std::move(b));
}
GgufKV gguf_kv_u16(const std::string& key, uint16_t v) {
  std::vector<uint8_t> b;
  put<uint16_t>(b, v);
  return make_kv(key, GgufValueType::U16, std::move(b));
}
GgufKV gguf_kv_i32(const std::string& key, int32_t v) {
  std::vector<uint8_t> b;
  put<int32_t>(b, v);
  return make_kv(key, GgufValueType::I32, std::move(b));
}
GgufKV gguf_kv_f32(const std::string& key, float v) {
  std::vector<uint8_t> b;
  put<float>(b, v);
  return make_kv(key, GgufValueType::F32, std::move(b));
}
GgufKV gguf_kv_string(const std::string& key, const std::string& v) {
  std::vector<uint8_t> b;
  put_str(b, v);
  return make_kv(key, GgufValueType::String, std::move(b));
}
GgufKV gguf_kv_string_array(const std::string& key, const std::vector<std::string>& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufValueType::String));
  put<uint64_t>(b, v.size());
  for (const std::string& s : v) put_str(b, s);
  return make_kv(key, GgufValueType::Array, std::move(b));
}
GgufKV gguf_kv_f32_array(const std::string& key, const std::vector<float>& v) {
  return scalar_array(key, GgufValueType::F32, v);
}
GgufKV gguf_kv_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  return scalar_array(key, GgufValueType::I32, v);
}

uint64_t gguf_planned_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                            const ModelReader& source, const GgufOutputKeys& keys) {
  const GgufReader& g = as_gguf(source);
  return GgufWriter::planned_size(plan, infos, output_kvs(g.metadata(), plan, keys), g.metadata().alignment,
                                  source_types(g));
}

std::unique_ptr<ModelWriter> make_gguf_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                              const ModelReader& source, const GgufOutputKeys& keys) {
  const GgufReader& g = as_gguf(source);
  return std::make_unique<GgufWriter>(path, plan, g.tensors(), output_kvs(g.metadata(), plan, keys),
                                      g.metadata().alignment, source_types(g));
}

std::unique_ptr<ModelWriter> make_gguf_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                              const std::vector<TensorInfo>& infos, const GgufMetadata& metadata,
                                              const std::vector<uint32_t>& ggml_types) {
  return std::make_unique<GgufWriter>(path, plan, infos, metadata.kvs, metadata.alignment, ggml_types);
}

std::vector<std::string> gguf_split_outputs(const std::string& prefix, const ModelReader& source) {
  const GgufReader& g = as_gguf(source);
  std::vector<std::string> paths;
  for (uint32_t s = 0; s < g.shard_count(); ++s) paths.push_back(gguf_split_path(prefix, int(s), int(g.shard_count())));
  return paths;
}

uint64_t gguf_split_planned_bytes(const std::string& prefix, const std::vector<TensorPlan>& plan, const ModelReader& source,
                                  const GgufOutputKeys& keys) {
  const GgufReader& g = as_gguf(source);
  return GgufSplitWriter::planned_size(split_shards(prefix, plan, g, keys), g.tensors(), source_types(g));
}

std::unique_ptr<ModelWriter> make_gguf_split_writer(const std::string& prefix, const std::vector<TensorPlan>& plan,
                                                    const ModelReader& source, const GgufOutputKeys& keys) {
  const GgufReader& g = as_gguf(source);
  return std::make_unique<GgufSplitWriter>(split_shards(prefix, plan, g, keys), g);
}

}  // namespace wq
