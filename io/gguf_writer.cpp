#include "io/gguf_writer.h"

#include <cstring>

#include "engine/error.h"
#include "io/gguf_format.h"
#include "io/output_file.h"
#include "kernels/ggml_types.h"

namespace wq {
namespace {

void put(std::vector<uint8_t>& b, const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
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

  void write(const TensorResult& r) override {
    if (next_ >= tensors_.size()) throw Error(out_.path() + ": more tensors than planned", ErrorKind::Internal);
    const OutTensor& t = tensors_[next_++];
    if (r.plan && r.plan->name != t.name)
      throw Error(out_.path() + ": " + r.plan->name + ": out of plan order", ErrorKind::Internal);
    if (r.size() != t.nbytes) {
      throw Error(out_.path() + ": " + t.name + ": " + std::to_string(r.size()) + " bytes of data, planned " +
                      std::to_string(t.nbytes),
                  ErrorKind::Internal);
    }
    out_.write(r.data(), r.size());
    out_.pad_to(alignment_);
  }

  void commit() override {
    if (next_ != tensors_.size())
      throw Error(out_.path() + ": " + std::to_string(tensors_.size() - next_) + " tensors were not written", ErrorKind::Internal);
    out_.commit();
  }
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
      put_str(h, kv.key);
      put<uint32_t>(h, kv.type);
      put(h, kv.value.data(), kv.value.size());
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

  OutputFile out_;
  uint32_t alignment_;
  std::vector<OutTensor> tensors_;
  uint64_t data_start_ = 0;
  size_t next_ = 0;
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

}  // namespace wq
