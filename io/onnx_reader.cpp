#include "io/onnx_reader.h"

#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "engine/error.h"
#include "io/mapped_file.h"
#include "io/onnx_layout.h"
#include "io/onnx_wire.h"
#include "io/quant_record.h"
#include "io/scratch_pool.h"
#include "engine/transpose.h"

namespace wq {
namespace {

namespace fs = std::filesystem;
using onnxwire::Field;

// TensorProto field numbers (onnx.proto) of the payload, which the reader keeps out of
// the header it hands to protobuf.
constexpr uint32_t kFloatData = 4, kInt32Data = 5, kStringData = 6, kInt64Data = 7, kRawData = 9,
                   kDoubleData = 10, kUint64Data = 11;
constexpr uint32_t kModelGraph = 7, kGraphInitializer = 5;

struct ElemType {
  const char* name;
  size_t size;  // 0: not a fixed-size element (strings)
};

// The element types of onnx.proto's TensorProto.DataType that 1.12 knows.
bool elem_type(int t, ElemType* out) {
  switch (t) {
    case onnx::TensorProto::FLOAT: *out = {"F32", 4}; return true;
    case onnx::TensorProto::UINT8: *out = {"U8", 1}; return true;
    case onnx::TensorProto::INT8: *out = {"I8", 1}; return true;
    case onnx::TensorProto::UINT16: *out = {"U16", 2}; return true;
    case onnx::TensorProto::INT16: *out = {"I16", 2}; return true;
    case onnx::TensorProto::INT32: *out = {"I32", 4}; return true;
    case onnx::TensorProto::INT64: *out = {"I64", 8}; return true;
    case onnx::TensorProto::STRING: *out = {"STRING", 0}; return true;
    case onnx::TensorProto::BOOL: *out = {"BOOL", 1}; return true;
    case onnx::TensorProto::FLOAT16: *out = {"F16", 2}; return true;
    case onnx::TensorProto::DOUBLE: *out = {"F64", 8}; return true;
    case onnx::TensorProto::UINT32: *out = {"U32", 4}; return true;
    case onnx::TensorProto::UINT64: *out = {"U64", 8}; return true;
    case onnx::TensorProto::BFLOAT16: *out = {"BF16", 2}; return true;
    default: return false;
  }
}

// Where each initializer is consumed, to tell weights from other constants.
struct Uses {
  int weight = 0;      // as MatMul/Gemm B, Conv W, Gather data
  int transposed = 0;  // of which MatMul B or Gemm B without transB ([K, N] stored)
  int other = 0;       // anything else (another input slot, a graph output, a subgraph)
  int matmul = 0;      // of which MatMul B
  int gather = 0;      // of which Gather data
};

int64_t attr_int(const onnx::NodeProto& n, const char* name, int64_t dflt) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return dflt;
}

void count_subgraph_names(const onnx::GraphProto& g, std::map<std::string, Uses>& uses);

void count_uses(const onnx::GraphProto& g, std::map<std::string, Uses>& uses) {
  for (const onnx::NodeProto& n : g.node()) {
    const bool std_domain = n.domain().empty() || n.domain() == "ai.onnx";
    for (int k = 0; k < n.input_size(); ++k) {
      const auto it = uses.find(n.input(k));
      if (it == uses.end()) continue;
      const std::string& op = n.op_type();
      if (std_domain && k == 1 && op == "MatMul") {
        ++it->second.weight;
        ++it->second.transposed;
        ++it->second.matmul;
      } else if (std_domain && k == 1 && op == "Gemm") {
        ++it->second.weight;
        if (attr_int(n, "transB", 0) == 0) ++it->second.transposed;
      } else if (std_domain && k == 1 && op == "Conv") {
        ++it->second.weight;
      } else if (std_domain && k == 0 && op == "Gather" && attr_int(n, "axis", 0) == 0) {
        ++it->second.weight;
        ++it->second.gather;
      } else {
        ++it->second.other;
      }
    }
    for (const auto& a : n.attribute()) {
      if (a.has_g()) count_subgraph_names(a.g(), uses);
      for (const auto& sg : a.graphs()) count_subgraph_names(sg, uses);
    }
  }
  for (const auto& o : g.output()) {
    const auto it = uses.find(o.name());
    if (it != uses.end()) ++it->second.other;
  }
}

// A subgraph may read an outer initializer by name: any such read is an "other" use.
void count_subgraph_names(const onnx::GraphProto& g, std::map<std::string, Uses>& uses) {
  std::map<std::string, Uses> inner;
  for (const auto& [name, u] : uses) inner.emplace(name, Uses{});
  count_uses(g, inner);
  for (const auto& [name, u] : inner) uses[name].other += u.weight + u.other;
}

bool has_dotdot(const fs::path& p) {
  for (const auto& part : p)
    if (part == "..") return true;
  return false;
}

class OnnxReaderImpl final : public OnnxReader {
 public:
  explicit OnnxReaderImpl(const std::string& path) : path_(path), file_(path) {
    dir_ = fs::path(path).parent_path();
    if (dir_.empty()) dir_ = ".";
    std::error_code ec;
    dir_real_ = fs::weakly_canonical(dir_, ec);
    if (ec) throw Error(path_ + ": cannot resolve the model's folder: " + ec.message());
    parse();
  }

  const char* format() const override { return "onnx"; }
  const std::string& path() const override { return path_; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  std::map<std::string, std::string> string_metadata() const override {
    std::map<std::string, std::string> m;
    for (const auto& p : model_.metadata_props()) m[p.key()] = p.value();
    return m;
  }
  std::vector<std::string> data_files() const override {
    std::vector<std::string> v;
    for (const auto& [file, map] : externals_) v.push_back(file);
    return v;
  }
  const onnx::ModelProto& model() const override { return model_; }
  const std::vector<OnnxInitializer>& initializers() const override { return inits_; }
  size_t initializer_of(size_t i) const override { return entries_.at(i).init; }

  TensorView view(size_t i) override {
    const Entry& e = entries_.at(i);
    const TensorInfo& info = infos_[i];
    if (info.kind != StoredKind::Float) throw Error(path_ + ": " + info.name + ": is " + info.type_name + ", not a float tensor");
    const OnnxInitializer& in = inits_[e.init];
    TensorView v;
    v.name = info.name;
    v.shape = info.shape;
    v.dtype = info.dtype;
    v.nbytes = info.nbytes;
    v.data = in.data;
    const size_t es = dtype_size(info.dtype);
    if (in.transposed || reinterpret_cast<uintptr_t>(in.data) % es != 0) {
      // A transposed weight (MatMul's [K, N] listed as [N, K]) or a misaligned payload
      // (an embedded raw_data sits wherever protobuf put it): one copy, dropped on
      // release(), so no kernel reads through a misaligned pointer.
      // Filled outside the lock: other threads read and transpose their own tensors.
      ScratchBytes c = scratch_.take(in.nbytes);
      if (in.transposed) {
        // Stored [K, N], listed [N, K].
        transpose_from_file(in, size_t(info.shape[1]), size_t(info.shape[0]), es, c.data());
      } else {
        std::memcpy(c.data(), in.data, in.nbytes);
      }
      v.data = c.data();  // the buffer moves into the map; its heap block stays put
      std::lock_guard<std::mutex> lock(copies_mutex_);
      copies_[i] = std::move(c);
    } else {
      v.mapped = source_of(in);  // the quantizers pread its row tiles (engine/tensor.h says why)
    }
    return v;
  }

  bool stored_transposed(size_t i, TensorView* stored) override {
    const Entry& e = entries_.at(i);
    const TensorInfo& info = infos_[i];
    const OnnxInitializer& in = inits_[e.init];
    if (info.kind != StoredKind::Float || !in.transposed) return false;
    // The quantizer reads it as stored: RTN in bands of stored rows pread from the file
    // (engine/quantize_columns.h), other schemes tile by tile from the mapping
    // (engine/row_source.h). The whole transposed copy view() makes (bands pread and
    // transposed into place, transpose_from_file) cost the 1.1 B model's ONNX conversion a
    // write and a read of every weight through memory, and zeroed pages for the copies.
    stored->mapped = source_of(in);
    stored->name = info.name;
    stored->shape = info.shape;  // listed [N, K]
    stored->dtype = info.dtype;
    stored->data = in.data;      // stored [K, N]; read through unaligned loads only
    stored->nbytes = info.nbytes;
    return true;
  }

  const uint8_t* raw(size_t i, size_t* nbytes) override {
    const Entry& e = entries_.at(i);
    *nbytes = inits_[e.init].nbytes;
    return inits_[e.init].data;
  }

  MappedSource raw_mapping(size_t i) override { return source_of(inits_[entries_.at(i).init]); }

  void release(size_t i) override {
    {
      std::lock_guard<std::mutex> lock(copies_mutex_);
      auto it = copies_.find(i);
      if (it != copies_.end()) {
        scratch_.give(std::move(it->second));
        copies_.erase(it);
      }
    }
    // Drop the payload's pages too, so streaming a large model keeps the resident set
    // near the tensors in flight.
    const OnnxInitializer& in = inits_[entries_.at(i).init];
    if (const MappedFile* f = file_of(in)) f->release(uint64_t(in.data - f->data()), in.nbytes);
  }

  // The transpose of in's stored [rows, cols] into dst: bands of stored rows pread from
  // the file into a per-thread buffer the size of L2, each transposed into its place, in
  // parallel. Every destination line is written whole and the file is read in order
  // once, with no page of the mapping touched (engine/tensor.h says what that costs).
  // Where the file cannot be read so, the mapping is transposed as it is.
  void transpose_from_file(const OnnxInitializer& in, size_t rows, size_t cols, size_t es, uint8_t* dst) const {
    const MappedSource src = source_of(in);
    const size_t band = std::max<size_t>(16, std::min<size_t>(rows, (size_t(2) << 20) / std::max<size_t>(cols * es, 1)) / 16 * 16);
    std::atomic<bool> failed{false};
    if (src.fd >= 0) {
      tbb::parallel_for(tbb::blocked_range<size_t>(0, (rows + band - 1) / band, 1), [&](const tbb::blocked_range<size_t>& r) {
        thread_local std::vector<uint8_t> buf;
        for (size_t b = r.begin(); b != r.end() && !failed; ++b) {
          const size_t r0 = b * band, n = std::min(band, rows - r0);
          if (buf.size() < n * cols * es) buf.resize(n * cols * es);
          if (!src.read(in.data + r0 * cols * es, n * cols * es, buf.data())) {
            failed = true;
            return;
          }
          transpose_band(buf.data(), cols, n, cols, es, dst + r0 * es, rows);
        }
      });
      if (!failed) return;
    }
    transpose_2d(in.data, rows, cols, es, dst);
  }

  // The mapped file in's payload lies in (the model, or an external data file), or null.
  const MappedFile* file_of(const OnnxInitializer& in) const {
    uint64_t offset = 0;
    if (file_.source().offset_of(in.data, in.nbytes, &offset)) return &file_;
    for (const auto& [path, f] : externals_)
      if (f->source().offset_of(in.data, in.nbytes, &offset)) return f.get();
    return nullptr;
  }
  MappedSource source_of(const OnnxInitializer& in) const {
    const MappedFile* f = file_of(in);
    return f ? f->source() : MappedSource{};
  }

  QuantizedTensor load_quantized(size_t i) override {
    const Entry& e = entries_.at(i);
    if (infos_[i].kind != StoredKind::Quantized) return ModelReader::load_quantized(i);
    return load_onnx_quantized(path_, infos_[i].name, e.record, e.parts, inits_);
  }

 private:
  struct Entry {
    size_t init = 0;
    std::string record;        // Quantized: its record
    OnnxQuantParts parts;      // Quantized: its initializers
  };

  void parse() {
    const std::string what = path_;
    if (file_.size() == 0) throw Error(path_ + ": is empty");
    std::string model_rest;
    const Field* graph = nullptr;
    const std::vector<Field> top = onnxwire::fields(file_.data(), file_.size(), what);
    for (const Field& f : top) {
      if (f.number == kModelGraph && f.type == onnxwire::kLen) {
        if (graph) throw Error(path_ + ": two graphs in one model");
        graph = &f;
      } else {
        model_rest.append(reinterpret_cast<const char*>(f.whole), f.whole_len);
      }
    }
    if (!model_.ParseFromString(model_rest)) throw Error(path_ + ": is not an ONNX model (the ModelProto does not parse)");
    if (!graph) throw Error(path_ + ": the model has no graph");
    if (model_.ir_version() <= 0) throw Error(path_ + ": is not an ONNX model (no ir_version)");
    std::string graph_rest;
    std::vector<Field> init_fields;
    for (const Field& f : onnxwire::fields(graph->data, graph->len, path_ + ": graph")) {
      if (f.number == kGraphInitializer && f.type == onnxwire::kLen) init_fields.push_back(f);
      else graph_rest.append(reinterpret_cast<const char*>(f.whole), f.whole_len);
    }
    if (!model_.mutable_graph()->ParseFromString(graph_rest)) throw Error(path_ + ": the graph does not parse");
    std::set<std::string> names;
    for (const Field& f : init_fields) {
      inits_.push_back(parse_initializer(f));
      if (!names.insert(inits_.back().header.name()).second)
        throw Error(path_ + ": " + inits_.back().header.name() + ": two initializers have this name");
    }
    check_external_overlaps();
    embed_attribute_externals(model_.mutable_graph(), "", true);
    classify();
    list_tensors();
  }

  OnnxInitializer parse_initializer(const Field& f) {
    OnnxInitializer in;
    std::string header;
    std::vector<const Field*> payload;
    const std::vector<Field> tf = onnxwire::fields(f.data, f.len, path_ + ": initializer #" + std::to_string(inits_.size()));
    for (const Field& x : tf) {
      const bool is_payload = x.number == kFloatData || x.number == kInt32Data || x.number == kInt64Data ||
                              x.number == kRawData || x.number == kDoubleData || x.number == kUint64Data;
      if (is_payload) payload.push_back(&x);
      else header.append(reinterpret_cast<const char*>(x.whole), x.whole_len);
    }
    if (!in.header.ParseFromString(header)) throw Error(path_ + ": initializer #" + std::to_string(inits_.size()) + ": its TensorProto does not parse");
    const std::string at = path_ + ": " + in.header.name();
    if (in.header.name().empty()) throw Error(path_ + ": initializer #" + std::to_string(inits_.size()) + ": has no name");
    if (in.header.has_segment()) throw Error(at + ": segmented tensors are not supported");
    ElemType et{};
    if (!elem_type(in.header.data_type(), &et)) throw Error(at + ": data type " + std::to_string(in.header.data_type()) + " is not one wquant reads");
    std::vector<int64_t> shape(in.header.dims().begin(), in.header.dims().end());
    const size_t numel = checked_numel(at, shape);
    if (et.size == 0) {  // strings: kept verbatim, no payload to validate beyond protobuf's
      // ONNX keeps string tensors inline (the external data format has no encoding for
      // them), and a location copied verbatim would point the output at a file beside it
      // that was never written, or outside its folder.
      if (in.header.data_location() == onnx::TensorProto::EXTERNAL || in.header.external_data_size() > 0) {
        throw Error(at + ": a string tensor with external data (ONNX stores string tensors only inline)");
      }
      in.verbatim.assign(reinterpret_cast<const char*>(f.data), f.len);
      return in;
    }
    if (numel > UINT64_MAX / et.size) throw Error(at + ": shape overflows");
    const uint64_t expect = uint64_t(numel) * et.size;
    if (in.header.data_location() == onnx::TensorProto::EXTERNAL) {
      if (!payload.empty()) throw Error(at + ": external data and an embedded payload at once");
      map_external(in, expect);
      return in;
    }
    if (payload.empty()) {
      if (expect != 0) throw Error(at + ": no data for " + std::to_string(numel) + " elements");
      return in;
    }
    // A repeated payload field may come packed in one or several chunks, or unpacked, one
    // element a field (both legal protobuf): made one packed field here.
    Field joined;
    if (payload.size() > 1 || payload[0]->type != onnxwire::kLen) {
      const uint32_t number = payload[0]->number;
      if (number == kRawData) throw Error(at + ": more than one raw_data field");
      std::string packed;
      for (const Field* x : payload) {
        if (x->number != number) throw Error(at + ": payload fields " + std::to_string(number) + " and " + std::to_string(x->number) + " at once");
        if (x->type == onnxwire::kLen || x->type == onnxwire::kFixed32 || x->type == onnxwire::kFixed64) {
          packed.append(reinterpret_cast<const char*>(x->data), x->len);
        } else {
          onnxwire::put_varint(packed, x->value);
        }
      }
      std::vector<uint8_t>& owned = decoded_.emplace_back(packed.begin(), packed.end());
      joined.number = number;
      joined.type = onnxwire::kLen;
      joined.data = owned.data();
      joined.len = owned.size();
    }
    const Field& p = joined.number ? joined : *payload[0];
    const int t = in.header.data_type();
    auto count_mismatch = [&](uint64_t have) {
      return Error(at + ": holds " + std::to_string(have) + " elements, the shape says " + std::to_string(numel));
    };
    if (p.number == kRawData || (p.number == kFloatData && t == onnx::TensorProto::FLOAT) ||
        (p.number == kDoubleData && t == onnx::TensorProto::DOUBLE)) {
      // Packed floats and doubles are the little-endian elements themselves.
      if (p.len != expect) {
        if (p.number == kRawData) throw Error(at + ": raw_data has " + std::to_string(p.len) + " bytes, the shape and type need " + std::to_string(expect));
        throw count_mismatch(p.len / et.size);
      }
      in.data = p.data;
      in.nbytes = expect;
      return in;
    }
    const bool int32_field = p.number == kInt32Data &&
                             (t == onnx::TensorProto::INT32 || t == onnx::TensorProto::INT16 || t == onnx::TensorProto::INT8 ||
                              t == onnx::TensorProto::UINT16 || t == onnx::TensorProto::UINT8 || t == onnx::TensorProto::BOOL ||
                              t == onnx::TensorProto::FLOAT16 || t == onnx::TensorProto::BFLOAT16);
    const bool int64_field = p.number == kInt64Data && t == onnx::TensorProto::INT64;
    const bool uint64_field = p.number == kUint64Data && (t == onnx::TensorProto::UINT32 || t == onnx::TensorProto::UINT64);
    if (!int32_field && !int64_field && !uint64_field)
      throw Error(at + ": payload field " + std::to_string(p.number) + " does not hold " + et.name + " elements");
    const std::vector<uint64_t> v = onnxwire::packed_varints(p.data, p.len, at);
    if (v.size() != numel) throw count_mismatch(v.size());
    std::vector<uint8_t>& owned = decoded_.emplace_back(expect);
    for (size_t k = 0; k < numel; ++k) std::memcpy(&owned[k * et.size], &v[k], et.size);  // little-endian low bytes
    in.data = owned.data();
    in.nbytes = expect;
    return in;
  }

  void map_external(OnnxInitializer& in, uint64_t expect) {
    const std::string at = path_ + ": " + in.header.name();
    const External e = resolve_external(at, in.header, expect);
    in.data = e.file->span(e.offset, e.length, in.header.name());
    in.nbytes = e.length;
    ranges_.push_back({e.real, e.offset, e.length, in.header.name()});
  }

  // Where a TensorProto's external data lies: its location resolved inside the model's
  // folder (never outside it, by `..`, an absolute path or a symlink), its offset and
  // length checked against the file and against the `expect` bytes its shape and type
  // need. The file is mapped once, and counted among the model's data files.
  struct External {
    const MappedFile* file;
    uint64_t offset, length;
    std::string real;
  };
  External resolve_external(const std::string& at, const onnx::TensorProto& t, uint64_t expect) {
    std::string location;
    uint64_t offset = 0, length = UINT64_MAX;
    auto number = [&](const std::string& key, const std::string& s) {
      if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
        throw Error(at + ": external data " + key + " \"" + s + "\" is not a number");
      return uint64_t(std::stoull(s));
    };
    for (const auto& kv : t.external_data()) {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = number("offset", kv.value());
      else if (kv.key() == "length") length = number("length", kv.value());
    }
    if (location.empty()) throw Error(at + ": external data without a location");
    const fs::path loc(location);
    if (loc.is_absolute() || has_dotdot(loc) || location.find('\0') != std::string::npos)
      throw Error(at + ": external data location \"" + location + "\" is outside the model's folder");
    const fs::path full = dir_ / loc;
    std::error_code ec;
    const fs::path real = fs::canonical(full, ec);
    if (ec) throw Error(at + ": external data file " + full.string() + ": " + ec.message());
    const std::string rs = real.string(), ds = dir_real_.string();
    if (rs.compare(0, ds.size(), ds) != 0 || (rs.size() > ds.size() && rs[ds.size()] != '/' && ds != "/"))
      throw Error(at + ": external data location \"" + location + "\" resolves outside the model's folder");
    if (length == UINT64_MAX) length = expect;
    if (length != expect) throw Error(at + ": external data length " + std::to_string(length) + ", the shape and type need " + std::to_string(expect));
    auto it = externals_.find(rs);
    if (it == externals_.end()) {
      std::unique_ptr<MappedFile> mapped;
      try {
        mapped = std::make_unique<MappedFile>(rs);
      } catch (const Error& e) {
        throw Error(at + ": external data " + e.message(), e.kind());  // (names the model and tensor too)
      }
      it = externals_.emplace(rs, std::move(mapped)).first;
    }
    const MappedFile& m = *it->second;
    if (!m.contains(offset, length))
      throw Error(at + ": external data [" + std::to_string(offset) + ", +" + std::to_string(length) + ") is past the end of " + location + " (" + std::to_string(m.size()) + " bytes)");
    return External{&m, offset, length, rs};
  }

  // Tensors in node attributes (a Constant's value, the initializers and attributes of
  // If / Loop / Scan subgraphs) whose data is external are embedded in the graph the
  // writer carries over: the output never points at the input's data files (it would not
  // load from another folder), and those files count as inputs (never overwritten).
  void embed_attribute_externals(onnx::GraphProto* g, const std::string& where, bool top) {
    auto embed = [&](onnx::TensorProto* t, const std::string& what) {
      if (t->data_location() != onnx::TensorProto::EXTERNAL) return;
      const std::string at = path_ + ": " + what;
      ElemType et{};
      if (!elem_type(t->data_type(), &et) || et.size == 0)
        throw Error(at + ": data type " + std::to_string(t->data_type()) + " with external data is not one wquant reads");
      const std::vector<int64_t> shape(t->dims().begin(), t->dims().end());
      const size_t numel = checked_numel(at, shape);
      if (numel > UINT64_MAX / et.size) throw Error(at + ": shape overflows");
      const External e = resolve_external(at, *t, uint64_t(numel) * et.size);
      t->set_raw_data(std::string(reinterpret_cast<const char*>(e.file->span(e.offset, e.length, what)), e.length));
      t->clear_external_data();
      t->set_data_location(onnx::TensorProto::DEFAULT);
    };
    if (!top) {  // (the top graph's initializers are read as initializers)
      for (int i = 0; i < g->initializer_size(); ++i) {
        embed(g->mutable_initializer(i), where + "initializer " + g->initializer(i).name());
      }
    }
    for (int i = 0; i < g->sparse_initializer_size(); ++i) {
      onnx::SparseTensorProto* sp = g->mutable_sparse_initializer(i);
      embed(sp->mutable_values(), where + "sparse initializer " + sp->values().name());
      embed(sp->mutable_indices(), where + "sparse initializer " + sp->values().name() + " (indices)");
    }
    for (int n = 0; n < g->node_size(); ++n) {
      onnx::NodeProto* node = g->mutable_node(n);
      const std::string in_node = where + "node " + (node->name().empty() ? "#" + std::to_string(n) : node->name()) + ", attribute ";
      for (int a = 0; a < node->attribute_size(); ++a) {
        onnx::AttributeProto* attr = node->mutable_attribute(a);
        const std::string an = in_node + attr->name();
        if (attr->has_t()) embed(attr->mutable_t(), an);
        for (int k = 0; k < attr->tensors_size(); ++k) embed(attr->mutable_tensors(k), an);
        if (attr->has_sparse_tensor()) {
          embed(attr->mutable_sparse_tensor()->mutable_values(), an);
          embed(attr->mutable_sparse_tensor()->mutable_indices(), an + " (indices)");
        }
        if (attr->has_g()) embed_attribute_externals(attr->mutable_g(), an + ": ", false);
        for (int k = 0; k < attr->graphs_size(); ++k) embed_attribute_externals(attr->mutable_graphs(k), an + ": ", false);
      }
    }
  }

  void check_external_overlaps() {
    std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) {
      return a.file != b.file ? a.file < b.file : a.offset < b.offset;
    });
    for (size_t k = 1; k < ranges_.size(); ++k) {
      const Range& a = ranges_[k - 1];
      const Range& b = ranges_[k];
      if (a.file == b.file && a.len > 0 && b.len > 0 && b.offset < a.offset + a.len)
        throw Error(path_ + ": " + b.name + ": external data overlaps that of " + a.name);
    }
  }

  // The NAME.f16 + Cast pairs of a wquant output (see OnnxInitializer::graph_name): the
  // exact form onnx_graph.cpp writes, in a model that carries wquant's version key.
  void find_narrowed_weights() {
    if (!string_metadata().count(kOnnxVersionKey)) return;
    std::map<std::string, size_t> by_name;
    for (size_t j = 0; j < inits_.size(); ++j) by_name[inits_[j].header.name()] = j;
    const auto& nodes = model_.graph().node();
    for (int k = 0; k < nodes.size(); ++k) {
      const onnx::NodeProto& n = nodes[k];
      const bool std_domain = n.domain().empty() || n.domain() == "ai.onnx";
      if (!std_domain || n.op_type() != "Cast" || n.input_size() != 1 || n.output_size() != 1) continue;
      const std::string& name = n.output(0);
      const auto it = by_name.find(n.input(0));
      if (it == by_name.end() || by_name.count(name) || n.name() != name + "/cast") continue;
      OnnxInitializer& in = inits_[it->second];
      // Stored as one float dtype, cast to another, named NAME + "." + the stored dtype's
      // name: as kept_float (onnx_graph.cpp) writes it.
      const int to = int(attr_int(n, "to", 0));
      DType stored_t, to_t;
      if (!dtype_of_onnx(in.header.data_type(), &stored_t) || !dtype_of_onnx(to, &to_t) || stored_t == to_t) continue;
      if (n.input(0) != name + "." + dtype_name(stored_t) || !in.graph_name.empty()) continue;
      in.graph_name = name;
      in.cast_node = k;
      in.graph_type = to;
    }
  }

  void classify() {
    find_narrowed_weights();
    std::map<std::string, Uses> uses;
    for (const OnnxInitializer& in : inits_) uses.emplace(in.header.name(), Uses{});
    for (const OnnxInitializer& in : inits_) {
      if (!in.graph_name.empty()) uses.emplace(in.graph_name, Uses{});
    }
    count_uses(model_.graph(), uses);
    for (OnnxInitializer& in : inits_) {
      if (!in.graph_name.empty()) {
        // A pair only while the Cast is the stored tensor's one reader and NAME is a weight;
        // otherwise the initializer is what it is, and the Cast an ordinary node.
        const Uses& own = uses[in.header.name()];
        const Uses& read = uses[in.graph_name];
        if (own.other != 1 || own.weight != 0 || read.weight == 0 || read.other != 0 || in.header.dims_size() < 2) {
          in.graph_name.clear();
          in.cast_node = -1;
          in.graph_type = 0;
        }
      }
      const Uses& u = uses[in.read_as()];
      DType float_type;
      const bool is_float = dtype_of_onnx(in.header.data_type(), &float_type);
      in.weight = is_float && in.header.dims_size() >= 2 && u.weight > 0 && u.other == 0;
      in.transposed = in.weight && in.header.dims_size() == 2 && u.transposed == u.weight;
      in.matmul_only = in.transposed && u.matmul == u.weight;
      in.gather_only = in.weight && in.header.dims_size() == 2 && u.gather == u.weight;
    }
  }

  void list_tensors() {
    const auto meta = string_metadata();
    const bool ours = meta.count(kOnnxVersionKey) > 0;
    if (ours && meta.at(kOnnxVersionKey) != "1")
      throw Error(path_ + ": " + kOnnxVersionKey + " \"" + meta.at(kOnnxVersionKey) + "\" is not supported (this wquant reads 1)");
    std::map<std::string, size_t> by_name;
    for (size_t j = 0; j < inits_.size(); ++j) by_name[inits_[j].header.name()] = j;
    std::set<size_t> owned;  // initializers that belong to a quantized weight
    std::map<size_t, Entry> quantized_at;  // by the index of its codes
    std::map<size_t, TensorInfo> quantized_info;
    if (ours) {
      for (const auto& [key, value] : meta) {
        if (key.rfind(kOnnxRecordPrefix, 0) != 0) continue;
        const std::string name = key.substr(std::strlen(kOnnxRecordPrefix));
        const QuantizedTensor q = parse_quant_record(value, name, path_);
        Entry e;
        e.record = value;
        e.parts = find_quant_parts(path_, name, by_name, inits_);
        TensorInfo info;
        info.name = name;
        info.shape = q.shape;
        info.kind = StoredKind::Quantized;
        info.type_name = "wq" + std::to_string(q.spec.bits);
        {
          // (parse_quant_record checked the record; "transposed": the weight was MatMul's B)
          const nlohmann::json rec = nlohmann::json::parse(value, nullptr, false);
          const auto t = rec.is_object() ? rec.find("transposed") : rec.end();
          info.listed_transposed = rec.is_object() && t != rec.end() && t->is_boolean() && t->get<bool>() && q.shape.size() == 2;
        }
        for (size_t j : e.parts.all()) {
          owned.insert(j);
          info.nbytes += inits_[j].nbytes;
        }
        e.init = e.parts.codes;
        quantized_info[e.init] = info;
        quantized_at[e.init] = e;
      }
    }
    for (size_t j = 0; j < inits_.size(); ++j) {
      if (quantized_at.count(j)) {
        entries_.push_back(quantized_at[j]);
        infos_.push_back(quantized_info[j]);
        continue;
      }
      if (owned.count(j)) continue;
      const OnnxInitializer& in = inits_[j];
      TensorInfo info;
      info.name = in.read_as();
      info.shape.assign(in.header.dims().begin(), in.header.dims().end());
      if (in.transposed) std::swap(info.shape[0], info.shape[1]);
      info.listed_transposed = in.transposed;
      ElemType et{};
      elem_type(in.header.data_type(), &et);
      info.type_name = et.name;
      info.nbytes = in.nbytes;
      info.kind = StoredKind::Other;
      if (in.weight) {
        info.kind = StoredKind::Float;
        dtype_of_onnx(in.header.data_type(), &info.dtype);  // (a weight is float: classify)
      }
      Entry e;
      e.init = j;
      entries_.push_back(e);
      infos_.push_back(info);
    }
    // Every name once: a record's weight beside an initializer of its name (or two
    // initializers read under one name) would be two tensors a writer cannot tell apart.
    std::map<std::string, const TensorInfo*> listed;
    for (const TensorInfo& info : infos_) {
      const auto [it, fresh] = listed.emplace(info.name, &info);
      if (fresh) continue;
      const bool record = it->second->kind == StoredKind::Quantized || info.kind == StoredKind::Quantized;
      throw Error(path_ + ": " + info.name + ": " +
                  (record ? "both a wquant record (" + std::string(kOnnxRecordPrefix) + info.name + ") and an initializer of that name"
                          : "two initializers are read under this name"));
    }
  }

  struct Range {
    std::string file;
    uint64_t offset, len;
    std::string name;
  };

  std::string path_;
  MappedFile file_;
  fs::path dir_, dir_real_;
  onnx::ModelProto model_;
  std::vector<OnnxInitializer> inits_;
  std::vector<std::vector<uint8_t>> decoded_;  // typed payloads as little-endian elements
  std::map<std::string, std::unique_ptr<MappedFile>> externals_;
  std::vector<Range> ranges_;
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
  std::mutex copies_mutex_;
  std::map<size_t, ScratchBytes> copies_;
  // Released copies, reused by the next view() (reading a model whole: verify,
  // dequantize): the MLP weights of a 1.1 B model are 46 MiB each, so 192 MiB keeps a
  // few of them without zeroing new pages.
  ScratchPool scratch_{size_t(192) << 20};
};

}  // namespace

std::unique_ptr<OnnxReader> open_onnx(const std::string& path) { return std::make_unique<OnnxReaderImpl>(path); }

bool looks_like_onnx(const std::string& path, const uint8_t* head, size_t n) {
  const std::string ext = ".onnx";
  if (path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0) return true;
  // ModelProto starts with ir_version (field 1, varint): key 0x08, then a small version.
  return n >= 2 && head[0] == 0x08 && head[1] >= 1 && head[1] < 0x40;
}

bool dtype_of_onnx(int onnx_type, DType* t) {
  switch (onnx_type) {
    case onnx::TensorProto::FLOAT: *t = DType::F32; return true;
    case onnx::TensorProto::FLOAT16: *t = DType::F16; return true;
    case onnx::TensorProto::BFLOAT16: *t = DType::BF16; return true;
    default: return false;
  }
}

int onnx_type_of(DType t) {
  switch (t) {
    case DType::F32: return onnx::TensorProto::FLOAT;
    case DType::F16: return onnx::TensorProto::FLOAT16;
    case DType::BF16: return onnx::TensorProto::BFLOAT16;
  }
  return onnx::TensorProto::UNDEFINED;
}

}  // namespace wq
