#include "io/onnx_writer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "engine/error.h"
#include "engine/quantize.h"
#include "io/held_payloads.h"
#include "io/onnx_graph.h"
#include "io/onnx_wire.h"
#include "io/onnx_zero_points.h"
#include "io/output_file.h"
#include "engine/transpose.h"

namespace wq {
namespace {

constexpr uint64_t kExternalMin = 1024;  // smaller payloads stay in the model file
constexpr uint64_t kAlign = 64;
// Payloads that OutputFile::write_held may write without a copy start on a page of the
// data file, so the quantizer's page-aligned codes buffer (engine/output_bytes.h) goes to
// O_DIRECT as it is; the copy of every code into the write buffer was 6% of the 1.1 B
// model's ONNX RTN conversion's CPU (perf, 2026-12-06). The padding costs under 4 KiB a
// large payload.
uint64_t data_align(uint64_t nbytes) { return OutputFile::held_alignment(nbytes, kAlign); }
// protobuf refuses messages of 2 GiB and more; keep a margin for the graph itself.
constexpr uint64_t kEmbeddedMax = (uint64_t(2) << 30) - (uint64_t(64) << 20);
constexpr uint32_t kModelGraph = 7, kGraphInitializer = 5, kTensorRawData = 9;

// Every byte of the output but the payloads: model and graph framing, and each
// initializer's serialized header, with the external offsets filled in.
struct Layout {
  OnnxOutPlan plan;
  bool external = false;
  std::string head;                     // ModelProto fields, graph key and length, graph fields
  std::vector<std::string> init_heads;  // per init: field key + length + TensorProto header (+ raw_data key)
  std::vector<bool> in_data;            // per init: payload in the data file
  std::vector<uint64_t> data_offset;
  uint64_t model_bytes = 0, data_bytes = 0;
};

Layout make_layout(const std::string& path, const std::vector<TensorPlan>& plan, const OnnxReader& src,
                   const WriterOptions& opts) {
  Layout l;
  l.plan = plan_onnx_output(path, plan, src);
  uint64_t payload = 0;
  for (const OnnxOutInit& o : l.plan.inits) payload += o.nbytes;
  l.external = opts.external_data || payload > kEmbeddedMax;
  const std::string data_name = std::filesystem::path(path).filename().string() + ".data";
  uint64_t graph_len = 0;
  for (OnnxOutInit& o : l.plan.inits) {
    std::string head;
    bool in_data = false;
    uint64_t offset = 0;
    if (o.piece == OnnxPiece::Verbatim) {
      // The source's TensorProto as it was: framing here, its bytes streamed by put().
      onnxwire::put_len_header(head, kGraphInitializer, o.nbytes);
      graph_len += head.size() + o.nbytes;
    } else {
      in_data = l.external && o.nbytes >= kExternalMin;
      onnx::TensorProto h = o.header;
      if (in_data) {
        const uint64_t align = data_align(o.nbytes);
        offset = l.data_bytes = (l.data_bytes + align - 1) / align * align;
        h.set_data_location(onnx::TensorProto::EXTERNAL);
        for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
                 {"location", data_name}, {"offset", std::to_string(offset)}, {"length", std::to_string(o.nbytes)}}) {
          auto* e = h.add_external_data();
          e->set_key(k);
          e->set_value(v);
        }
        l.data_bytes += o.nbytes;
      }
      std::string tp;
      if (!h.SerializeToString(&tp)) throw Error(path + ": " + o.header.name() + ": header does not serialize", ErrorKind::Internal);
      const uint64_t raw = in_data ? 0 : onnxwire::len_header_size(kTensorRawData, o.nbytes) + o.nbytes;
      onnxwire::put_len_header(head, kGraphInitializer, tp.size() + raw);
      head += tp;
      if (!in_data) onnxwire::put_len_header(head, kTensorRawData, o.nbytes);
      graph_len += head.size() + (in_data ? 0 : o.nbytes);
    }
    l.init_heads.push_back(std::move(head));
    l.in_data.push_back(in_data);
    l.data_offset.push_back(offset);
  }
  // Every payload under kExternalMin (--external-data on a small model): no data file,
  // rather than an empty one that nothing names.
  if (l.data_bytes == 0) l.external = false;
  onnx::ModelProto rest = l.plan.model;
  rest.clear_graph();
  std::string graph;
  if (!rest.SerializeToString(&l.head) || !l.plan.model.graph().SerializeToString(&graph))
    throw Error(path + ": the graph does not serialize", ErrorKind::Internal);
  graph_len += graph.size();
  if (!l.external && graph_len > kEmbeddedMax) throw Error(path + ": the graph alone passes 2 GB", ErrorKind::Internal);
  onnxwire::put_len_header(l.head, kModelGraph, graph_len);
  l.head += graph;
  l.model_bytes = l.head.size() + graph_len - graph.size();
  return l;
}

class OnnxWriter final : public ModelWriter {
 public:
  OnnxWriter(const std::string& path, const std::vector<TensorPlan>& plan, const OnnxReader& src, const WriterOptions& opts)
      : l_(make_layout(path, plan, src, opts)), out_(path), plan_(plan), source_path_(src.path()) {
    if (l_.external) data_ = std::make_unique<OutputFile>(path + ".data");
    else remove_dead_temporaries(path + ".data");  // an earlier --external-data run's, killed
    out_.write(l_.head.data(), l_.head.size());
  }

  std::vector<std::string> companion_files() const override {
    if (!data_) return {};
    return {data_->path()};
  }

  void write(TensorResult& r) override {
    // Results arrive in plan order (engine/pipeline.h), a tensor in row pieces as a run of
    // results for one plan entry.
    const size_t pi = next_plan_;
    if (!r.plan || pi >= plan_.size() || r.plan->name != plan_[pi].name)
      throw Error(out_.path() + ": " + (r.plan ? r.plan->name : std::string("?")) + ": out of plan order", ErrorKind::Internal);
    prepared_ = false;
    if (r.plan->action == TensorAction::Quantize && !(r.first_piece && r.last_piece)) {
      write_piece(pi, r);
      if (r.last_piece) ++next_plan_;
      return;
    }
    if (piece_init_ != kNoPiece) throw Error(out_.path() + ": a tensor's last row piece never came", ErrorKind::Internal);
    ++next_plan_;
    uint64_t ticket = 0;  // the last write still reading r's codes, if any
    while (next_init_ < l_.plan.inits.size() && l_.plan.inits[next_init_].plan_index == pi) {
      ticket = std::max(ticket, put(next_init_, r));
      ++next_init_;
    }
    held_.hold(r, ticket);  // (after every payload of r is written: it takes r's buffers)
  }
  bool takes_quantized_row_pieces() const override { return true; }
  bool take_released(TensorResult* r) override { return data_ && held_.take_released(*data_, r); }

  void commit() override {
    if (piece_init_ != kNoPiece) throw Error(out_.path() + ": a tensor's last row piece never came", ErrorKind::Internal);
    if (next_init_ != l_.plan.inits.size() || next_plan_ != plan_.size())
      throw Error(out_.path() + ": not every tensor was written", ErrorKind::Internal);
    if (!data_) return out_.commit();
    // The data file goes into place first (the graph names it), all or none
    // (commit_together): OUT is the whole result, or what it was before the run.
    commit_together({data_.get(), &out_});
  }
  uint64_t bytes_written() const override { return out_.offset() + (data_ ? data_->offset() : 0); }
  const std::string& temp_path() const override { return out_.temp_path(); }

 private:
  // Writes init k's header and payload; returns the ticket of a write that still reads
  // r's quantized buffers (OutputFile::write_held), 0 if none does.
  uint64_t put(size_t k, TensorResult& r) {
    const OnnxOutInit& o = l_.plan.inits[k];
    if (o.piece == OnnxPiece::Verbatim) {
      const std::string& h = l_.init_heads[k];
      out_.write(h.data(), h.size());
      out_.write(o.constant.data(), o.constant.size());
      return 0;
    }
    OutputFile* f = begin_init(k);
    auto check_size = [&](size_t n) { check_planned(o, n); };
    if (o.piece == OnnxPiece::Codes && !packed_codes(o)) {
      check_size(r.quantized.rows * r.quantized.cols);
      write_unpacked(*f, r.quantized);
      return 0;
    }
    const Bytes bytes = payload(o, r);
    check_size(bytes.size());
    // Packed codes are written from r's own buffer, which write() then holds until the
    // write has read it. Every other payload is copied (it may be built here, or be the
    // source's own bytes): held writes go one at a time, so holding the parameters too
    // (3 such writes a tensor) had the writer wait for the disk more (bench/ab_bench.sh,
    // ONNX RTN: wall 1.04x).
    if (o.piece == OnnxPiece::Codes) return write_codes(*f, bytes.data(), bytes.size());
    f->write(bytes.data(), bytes.size());
    return 0;
  }

  // Packed codes: held (written from the caller's buffer, which write() then holds until
  // the returned ticket has finished) in the data file, copied in the model file (ticket 0).
  uint64_t write_codes(OutputFile& f, const void* p, size_t n) {
    if (&f == data_.get()) return f.write_held(p, n);
    f.write(p, n);
    return 0;
  }

  // Writes init k's header, and where its payload goes to the data file, pads that to the
  // payload's planned offset; returns the file the payload goes to.
  OutputFile* begin_init(size_t k) {
    const std::string& h = l_.init_heads[k];
    out_.write(h.data(), h.size());
    if (!l_.in_data[k]) return &out_;
    OutputFile* f = data_.get();
    f->pad_to(data_align(l_.plan.inits[k].nbytes));
    if (f->offset() != l_.data_offset[k]) throw Error(f->path() + ": offset drift", ErrorKind::Internal);
    return f;
  }

  void check_planned(const OnnxOutInit& o, uint64_t n) const {
    if (n != o.nbytes)
      throw Error(out_.path() + ": " + o.header.name() + ": " + std::to_string(n) + " bytes, planned " + std::to_string(o.nbytes), ErrorKind::Internal);
  }

  // One row piece of a quantized tensor (TensorSink::takes_quantized_row_pieces). Every
  // form stores the codes first, row by row, then the scales and zero points, row by row,
  // each the rows' own bytes whatever the form (MatMulNBits' z = -min / s and packed
  // zero points are made per block, and packed per row): so each piece's codes go to the
  // file as they come, and its parameters, made as the whole tensor's would be, are kept
  // until the last piece, after whose codes they are written, with the constants that
  // follow them. Without pieces the pipeline held the largest tensors' codes whole (32 MiB
  // for the 1.1 B model's [32000, 2048] embedding at 4 bits), in memory the kernel faults
  // in and zeroes at 1.25 ms a MiB on these VMs (their host backs it afresh), and the
  // ONNX RTN job peaked at 157 MiB where the safetensors one peaked at 35.
  void write_piece(size_t pi, TensorResult& r) {
    const std::vector<OnnxOutInit>& inits = l_.plan.inits;
    if (r.first_piece) {
      if (piece_init_ != kNoPiece || next_init_ >= inits.size() || inits[next_init_].plan_index != pi ||
          inits[next_init_].piece != OnnxPiece::Codes)
        throw Error(out_.path() + ": " + r.plan->name + ": row pieces where the plan has no codes first", ErrorKind::Internal);
      piece_init_ = next_init_++;
      piece_file_ = begin_init(piece_init_);
      piece_codes_ = piece_rows_ = 0;
      // Its parameters: the inits that follow the codes and are made from them, each
      // reserved whole at once in a buffer kept from tensor to tensor (grown piece by
      // piece, or made per tensor, they would be mapped afresh: engine/output_bytes.h).
      size_t n = 0;
      while (next_init_ + n < inits.size() && inits[next_init_ + n].plan_index == pi &&
             (inits[next_init_ + n].piece == OnnxPiece::Scales || inits[next_init_ + n].piece == OnnxPiece::Zeros))
        ++n;
      if (piece_params_.size() < n) piece_params_.resize(n);
      piece_param_count_ = n;
      for (size_t j = 0; j < n; ++j) {
        piece_params_[j].clear();
        piece_params_[j].reserve(inits[next_init_ + j].nbytes);
      }
    } else if (piece_init_ == kNoPiece) {
      throw Error(out_.path() + ": " + r.plan->name + ": a row piece without the first", ErrorKind::Internal);
    }
    const OnnxOutInit& codes = inits[piece_init_];
    QuantizedTensor& q = r.quantized;
    uint64_t ticket = 0;
    if (packed_codes(codes)) {
      if (piece_codes_ + q.packed.size() > codes.nbytes) check_planned(codes, piece_codes_ + q.packed.size());
      piece_codes_ += q.packed.size();
      ticket = write_codes(*piece_file_, q.packed.data(), q.packed.size());
    } else {
      if (piece_codes_ + q.rows * q.cols > codes.nbytes) check_planned(codes, piece_codes_ + q.rows * q.cols);
      piece_codes_ += q.rows * q.cols;
      write_unpacked(*piece_file_, q);
    }
    for (size_t j = 0; j < piece_param_count_; ++j) {
      const OnnxOutInit& o = inits[piece_init_ + 1 + j];
      const Bytes b = payload(o, r, piece_rows_);
      OutputBytes& acc = piece_params_[j];
      if (acc.size() + b.size() > o.nbytes) check_planned(o, acc.size() + b.size());
      const size_t at = acc.size();
      acc.resize(at + b.size());  // (uninitialised: within the reserved capacity)
      if (b.size()) std::memcpy(acc.data() + at, b.data(), b.size());
    }
    piece_rows_ += q.rows;
    if (r.last_piece) {
      check_planned(codes, piece_codes_);
      for (size_t j = 0; j < piece_param_count_; ++j) {
        const size_t k = next_init_++;
        check_planned(inits[k], piece_params_[j].size());
        begin_init(k)->write(piece_params_[j].data(), piece_params_[j].size());
      }
      while (next_init_ < inits.size() && inits[next_init_].plan_index == pi) {
        ticket = std::max(ticket, put(next_init_, r));
        ++next_init_;
      }
      piece_init_ = kNoPiece;
    }
    held_.hold(r, ticket);  // (after every payload of r is written: it takes r's buffers)
  }

  bool packed_codes(const OnnxOutInit& o) const {
    const OnnxWeightForm form = l_.plan.form[o.plan_index];
    return form == OnnxWeightForm::MatMulNBits || form == OnnxWeightForm::Gather;
  }

  // Codes one per byte (the standard-op forms), unpacked by rows into a buffer kept from
  // tensor to tensor and written as they are made: a large tensor's codes (the 1.1 B
  // model's tied output matrix, 65 MB) never sit whole in fresh memory, whose first touch
  // cost 7% of that ONNX conversion's CPU (perf, 2026-12-03).
  void write_unpacked(OutputFile& f, const QuantizedTensor& q) {
    constexpr size_t kChunk = size_t(1) << 20;
    const size_t chunk_rows = std::max<size_t>(1, kChunk / std::max<size_t>(q.cols, 1));
    unpacked_.resize(std::min(q.rows, chunk_rows) * q.cols);
    const Kernels& k = kernels();
    for (size_t r0 = 0; r0 < q.rows; r0 += chunk_rows) {
      const size_t r1 = std::min(q.rows, r0 + chunk_rows);
      for (size_t row = r0; row < r1; ++row)
        k.unpack_codes(&q.packed[row * q.packed_row_bytes], q.cols, q.spec.bits, &unpacked_[(row - r0) * q.cols]);
      f.write(unpacked_.data(), (r1 - r0) * q.cols);
    }
  }

  // A payload: bytes owned elsewhere (the pipeline's result, the layout), or built here.
  // Most payloads are written straight from where they already are: a copy of every
  // code would cost a pass over the output for nothing.
  struct Bytes {
    const char* ptr = nullptr;
    size_t len = 0;
    OutputBytes owned;  // filled whole, so never zeroed first (engine/output_bytes.h)
    const char* data() const { return ptr; }
    size_t size() const { return len; }
  };
  static Bytes view(const void* p, size_t n) { return Bytes{static_cast<const char*>(p), n, {}}; }
  static Bytes own(OutputBytes s) {
    Bytes b;
    b.owned = std::move(s);
    b.ptr = reinterpret_cast<const char*>(b.owned.data());
    b.len = b.owned.size();
    return b;
  }
  static Bytes own(const std::string& s) { return own(OutputBytes(s.begin(), s.end())); }
  template <typename T, typename A>
  static Bytes view(const std::vector<T, A>& v) { return view(v.data(), v.size() * sizeof(T)); }

  // The payload of one output initializer, from the pipeline's result.
  // (first_row: the row of the tensor r's first row is, for a row piece's messages.)
  Bytes payload(const OnnxOutInit& o, TensorResult& r, size_t first_row = 0) {
    const TensorPlan& p = *r.plan;
    const OnnxWeightForm form = l_.plan.form[o.plan_index];
    switch (o.piece) {
      case OnnxPiece::Constant: return view(o.constant.data(), o.constant.size());
      case OnnxPiece::Raw: return view(r.data(), r.size());
      case OnnxPiece::Float: {
        // The source's own bytes (kept in their dtype: r.raw) are as stored, already the
        // graph's [K, N]. A converted copy was made from the listed view, [N, K]: it is
        // transposed back.
        if (!l_.plan.transposed[o.plan_index] || r.raw) return view(r.data(), r.size());
        OutputBytes t(r.size());
        transpose_2d(r.data(), size_t(p.shape[0]), size_t(p.shape[1]), dtype_size(p.out_dtype), t.data());
        return own(std::move(t));
      }
      case OnnxPiece::Codes:  // one per byte: put() streams them (write_unpacked)
        if (!packed_codes(o)) throw Error(out_.path() + ": " + p.name + ": unpacked codes as one payload", ErrorKind::Internal);
        return view(r.quantized.packed);
      case OnnxPiece::Scales:
      case OnnxPiece::Zeros: {
        QuantizedTensor& q = r.quantized;
        const bool scales = o.piece == OnnxPiece::Scales;
        if (!scales && o.header.data_type() == onnx::TensorProto::UINT8)
          return own(integer_zero_points(q, form == OnnxWeightForm::MatMulNBits ? q.spec.bits : 8, p.name, first_row));
        if (form == OnnxWeightForm::Dequant) {
          if (q.spec.fp16) return view(scales ? q.scales_f16 : q.zeros_f16);
          return view(scales ? q.scales : q.zeros);
        }
        prepare_nbits(q);
        if (!q.spec.fp16) return view(scales ? q.scales : q.zeros);  // made in place
        return view(scales ? nb_scales_ : nb_zeros_);
      }
      case OnnxPiece::Verbatim: return view(o.constant.data(), o.constant.size());
    }
    return {};
  }

  // Integer zero points, `width` bits each: 2^(b-1) for symmetric codes, else HQQ's
  // rounded zeros, each checked to fit.
  std::string integer_zero_points(QuantizedTensor& q, int width, const std::string& name, size_t first_row) {
    const size_t nb = q.rows * q.blocks_per_row();
    if (q.scheme == Scheme::MnnSym) {
      const std::vector<float> half(nb, float(1 << (q.spec.bits - 1)));
      return pack_zero_points(half.data(), q.rows, q.blocks_per_row(), width, source_path_ + ": " + name, first_row);
    }
    prepare_nbits(q);
    const OutputVector<float>& zeros = q.spec.fp16 ? nb_zeros_ : q.zeros;
    if (zeros.size() != nb) throw Error(out_.path() + ": " + name + ": no zero points", ErrorKind::Internal);
    return pack_zero_points(zeros.data(), q.rows, q.blocks_per_row(), width, source_path_ + ": " + name, first_row);
  }

  // MatMulNBits' (and GatherBlockQuantized's) f32 scales and zero points of q, once per
  // tensor: min + q s (MNN asymmetric) as (q - z) s with z = -min / s, and a block whose
  // scale MNN treats as zero (every code 0, weight = min) as s' = min, z = -1. Made in q's
  // own scales and zeros where those are f32, not in copies (the copies were 1-2% of the
  // 1.1 B model's ONNX RTN job's CPU, its parameters 20% of its output): q is the
  // writer's until write() returns, and nothing reads MNN's form after (the Dequant form,
  // which writes that form, never comes here). f16 ones are widened into nb_scales_ and
  // nb_zeros_ first.
  void prepare_nbits(QuantizedTensor& q) {
    if (prepared_) return;
    prepared_ = true;
    OutputVector<float>* scales = &q.scales;
    OutputVector<float>* zeros = &q.zeros;
    if (q.spec.fp16) {
      QuantizedTensor w;
      w.spec = q.spec;
      w.scheme = q.scheme;
      w.scales_f16 = q.scales_f16;
      w.zeros_f16 = q.zeros_f16;
      widen_f16_params(w);
      nb_scales_ = w.scales;
      nb_zeros_ = w.zeros;
      scales = &nb_scales_;
      zeros = &nb_zeros_;
    }
    if (q.scheme == Scheme::MnnAsym) {
      if (zeros->size() != scales->size())
        throw Error(out_.path() + ": " + std::to_string(zeros->size()) + " minima for " + std::to_string(scales->size()) + " scales", ErrorKind::Internal);
      for (size_t b = 0; b < scales->size(); ++b) {
        const float s = (*scales)[b], mn = (*zeros)[b];
        if (double(s) <= 1e-6) {
          (*scales)[b] = mn;
          (*zeros)[b] = -1.0f;
        } else {
          (*zeros)[b] = -mn / s;
        }
      }
    }
  }

  Layout l_;
  HeldPayloads held_;  // before the files: destroyed after them, which wait for the writes reading it
  OutputFile out_;
  std::unique_ptr<OutputFile> data_;
  std::vector<TensorPlan> plan_;
  std::string source_path_;  // (a zero point the input's weights make impossible names it)
  size_t next_plan_ = 0, next_init_ = 0;
  bool prepared_ = false;  // this plan entry's parameters are in MatMulNBits' form
  OutputVector<float> nb_scales_, nb_zeros_;
  OutputBytes unpacked_;  // write_unpacked's rows
  // The tensor coming in row pieces, if any (write_piece).
  static constexpr size_t kNoPiece = SIZE_MAX;
  size_t piece_init_ = kNoPiece;            // its codes' init
  OutputFile* piece_file_ = nullptr;        // where its codes go
  uint64_t piece_codes_ = 0, piece_rows_ = 0;  // codes bytes and rows written so far
  std::vector<OutputBytes> piece_params_;   // its parameter inits' bytes so far, as stored
  size_t piece_param_count_ = 0;            // how many of piece_params_ it has
};

}  // namespace

uint64_t onnx_planned_bytes(const std::vector<TensorPlan>& plan, const OnnxReader& src, const WriterOptions& opts) {
  const Layout l = make_layout(opts.output_path.empty() ? "model.onnx" : opts.output_path, plan, src, opts);
  return l.model_bytes + l.data_bytes;
}

std::unique_ptr<ModelWriter> make_onnx_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                              const OnnxReader& src, const WriterOptions& opts) {
  return std::make_unique<OnnxWriter>(path, plan, src, opts);
}

}  // namespace wq
