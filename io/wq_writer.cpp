#include "io/wq_writer.h"

#include <cstring>
#include <filesystem>

#include "engine/error.h"
#include "engine/tensor.h"
#include "io/held_payloads.h"
#include "io/output_file.h"
#include "io/piece_params.h"
#include "io/planned_tensor.h"
#include "io/utf8.h"
#include "io/wq_layout.h"
#include "wq_format_generated.h"

namespace wq {
namespace {

uint64_t align_up(uint64_t x, uint64_t a = kWqAlign) { return (x + a - 1) / a * a; }

// Beyond the 64 bytes a reader requires, the data section starts on a 4 KiB boundary of
// the file, and so does every piece (codes, scales, zeros, float data) large enough for
// OutputFile::write_held to write it without a copy: the writer hands such a piece to
// O_DIRECT straight from the quantizer's buffer where that buffer is page-aligned (the
// pool's of 1 MiB and more: engine/output_bytes.h), and a loader can map each large
// piece page-aligned. The padding costs under 4 KiB a large piece (about 2 KiB in all for
// the 1.1 B model at 4 bits).
constexpr uint64_t kPageAlign = 4096;
uint64_t piece_align(uint64_t bytes) { return OutputFile::held_alignment(bytes, kWqAlign); }

struct Layout {
  std::vector<std::vector<uint64_t>> piece_sizes;  // per plan entry
  std::vector<uint8_t> header;                     // the finished flatbuffer
  uint64_t data_offset = 0;
  uint64_t total = 0;
};

Layout plan_layout(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos, const ModelReader& source) {
  Layout l;
  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
  uint64_t off = 0;
  for (const TensorPlan& p : plan) {
    const TensorInfo& info = infos.at(p.source_index);
    std::vector<uint64_t> sizes;
    fb::TensorKind kind = fb::TensorKind_Raw;
    std::string dtype = info.type_name;
    if (p.action == TensorAction::CopyRaw) {
      sizes = {info.nbytes};
    } else {
      for (const PlannedPiece& piece : planned_pieces(p, info)) sizes.push_back(piece.nbytes);
      kind = p.action == TensorAction::Quantize ? fb::TensorKind_Quantized : fb::TensorKind_Float;
      dtype = p.action == TensorAction::Quantize ? "wq" + std::to_string(p.spec.bits) : dtype_name(p.out_dtype);
      if (kind == fb::TensorKind_Float) {
        for (char& c : dtype) c = char(std::toupper(static_cast<unsigned char>(c)));
      }
    }
    uint64_t offs[3] = {0, 0, 0}, szs[3] = {0, 0, 0};
    for (size_t k = 0; k < sizes.size(); ++k) {
      offs[k] = align_up(off, piece_align(sizes[k]));
      szs[k] = sizes[k];
      off = align_up(offs[k] + sizes[k]);
    }
    const bool q = p.action == TensorAction::Quantize;
    // (Flatbuffers strings are UTF-8, and the name goes in as a C string.)
    if (!is_valid_utf8(p.name) || p.name.find('\0') != std::string::npos) {
      throw Error(p.name + ": the name is not valid UTF-8 or holds a NUL byte, which a .wq file's names cannot hold "
                           "(GGUF output can)",
                  ErrorKind::Usage);
    }
    checked_numel(p.name, p.shape);
    const size_t cols = matrix_dims(p.shape).cols;
    tensors.push_back(fb::CreateTensorDirect(
        fbb, p.name.c_str(), &p.shape, kind, dtype.c_str(), q ? p.spec.bits : 0, q ? p.block : 0,
        fb::QuantScheme(q ? int(p.spec.scheme()) : 0), q && p.spec.fp16, q && p.spec.hqq,
        p.spec.hqq_opts.max_steps, p.spec.hqq_opts.p, p.spec.hqq_opts.beta, p.spec.hqq_opts.kappa,
        p.spec.hqq_opts.round_zero, q ? (cols * size_t(p.spec.bits) + 7) / 8 : 0, offs[0], szs[0], offs[1], szs[1],
        offs[2], szs[2]));
    l.piece_sizes.push_back(std::move(sizes));
  }
  // The input's base name only: the same input named by two paths gives the same bytes.
  // (Made valid UTF-8, as every string of the header must be: U+FFFD for a byte that is not.)
  const std::string source_name = valid_utf8(std::filesystem::path(source.path()).filename().string());
  std::vector<flatbuffers::Offset<fb::KeyValue>> meta{
      fb::CreateKeyValueDirect(fbb, "wquant.source", source_name.c_str())};
  fbb.Finish(fb::CreateModelDirect(fbb, kWqVersion, source.format(), &meta, &tensors), fb::ModelIdentifier());
  l.header.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  l.data_offset = align_up(sizeof(WqPreamble) + l.header.size(), kPageAlign);
  l.total = l.data_offset + off;
  return l;
}

class WqWriter final : public ModelWriter {
 public:
  WqWriter(const std::string& path, const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
           const ModelReader& source)
      : out_(path), layout_(plan_layout(plan, infos, source)) {
    WqPreamble pre{};
    std::memcpy(pre.magic, kWqMagic, 8);
    pre.version = kWqVersion;
    pre.header_offset = sizeof(WqPreamble);
    pre.header_size = layout_.header.size();
    pre.data_offset = layout_.data_offset;
    out_.write(&pre, sizeof pre);
    out_.write(layout_.header.data(), layout_.header.size());
    out_.pad_to(kPageAlign);
  }

  void write(TensorResult& r) override {
    if (next_ >= layout_.piece_sizes.size()) throw Error(out_.path() + ": more tensors than planned", ErrorKind::Internal);
    const std::vector<uint64_t>& sizes = layout_.piece_sizes[next_++];
    const std::string name = r.plan ? r.plan->name : "?";
    // The pieces of the pipeline's buffers are written without a copy where the output
    // allows (piece_align above); the result's buffers are then kept (held_) until the
    // last write reading them has finished. Source bytes (r.raw) are copied: the reader
    // may drop their pages once this returns.
    uint64_t ticket = 0;
    auto put = [&](const void* data, uint64_t n, size_t k, bool may_hold) {
      if (const uint64_t t = put_piece(data, n, sizes, k, name, may_hold)) ticket = t;
    };
    if (r.plan && r.plan->action == TensorAction::Quantize && !(r.first_piece && r.last_piece)) {
      write_piece(r, sizes, name);
      if (!r.last_piece) --next_;  // the same plan entry's next piece follows
    } else if (r.plan && r.plan->action == TensorAction::Quantize) {
      const QuantizedTensor& q = r.quantized;
      put(q.packed.data(), q.packed.size(), 0, true);
      // With fp16 the engine's halves are the stored values (round_params_to_f16).
      if (q.spec.fp16) put(q.scales_f16.data(), q.scales_f16.size() * 2, 1, true);
      else put(q.scales.data(), q.scales.size() * 4, 1, true);
      if (sizes.size() > 2) {
        if (q.spec.fp16) put(q.zeros_f16.data(), q.zeros_f16.size() * 2, 2, true);
        else put(q.zeros.data(), q.zeros.size() * 4, 2, true);
      }
    } else {
      put(r.data(), r.size(), 0, !r.raw);
    }
    held_.hold(r, ticket);  // (the last write's ticket covers the ones before it)
  }
  bool takes_quantized_row_pieces() const override { return true; }
  bool take_released(TensorResult* r) override { return held_.take_released(out_, r); }

  void commit() override {
    if (piece_codes_) throw Error(out_.path() + ": a tensor's last row piece never came", ErrorKind::Internal);
    if (next_ != layout_.piece_sizes.size()) throw Error(out_.path() + ": not every tensor was written", ErrorKind::Internal);
    if (out_.offset() != layout_.total) throw Error(out_.path() + ": size differs from the plan", ErrorKind::Internal);
    out_.commit();
  }
  uint64_t bytes_written() const override { return out_.offset(); }
  const std::string& temp_path() const override { return out_.temp_path(); }

 private:
  // Piece k of a tensor's record (codes, scales, zeros; or its one payload) of n bytes, as
  // planned, at its alignment, written from `data` (held where may_hold and the output
  // allows: the ticket, else 0).
  uint64_t put_piece(const void* data, uint64_t n, const std::vector<uint64_t>& sizes, size_t k, const std::string& name,
                     bool may_hold) {
    check_planned(n, sizes, k, name);
    out_.pad_to(piece_align(n));
    uint64_t ticket = 0;
    if (!may_hold) out_.write(data, n);
    else ticket = out_.write_held(data, n);
    out_.pad_to(kWqAlign);
    return ticket;
  }
  void check_planned(uint64_t n, const std::vector<uint64_t>& sizes, size_t k, const std::string& name) const {
    if (k >= sizes.size() || n != sizes[k])
      throw Error(out_.path() + ": " + name + ": piece " + std::to_string(k) + " has " + std::to_string(n) + " bytes, not as planned", ErrorKind::Internal);
  }

  // One row piece of a quantized tensor (TensorSink::takes_quantized_row_pieces): its codes
  // go to the file now, in the place the whole tensor's would (codes come first in a
  // tensor's record), and its scales and zeros are kept until the last piece, after whose
  // codes they are written as the whole tensor's would be.
  void write_piece(TensorResult& r, const std::vector<uint64_t>& sizes, const std::string& name) {
    const QuantizedTensor& q = r.quantized;
    if (r.first_piece) {
      piece_codes_ = 0;
      piece_params_.start(sizes.size() > 1 ? sizes[1] : 0, sizes.size() > 2 ? sizes[2] : 0);
      out_.pad_to(piece_align(sizes.at(0)));
    }
    if (piece_codes_ + q.packed.size() > sizes.at(0)) check_planned(piece_codes_ + q.packed.size(), sizes, 0, name);
    piece_codes_ += q.packed.size();
    piece_params_.add(q);
    held_.hold(r, out_.write_held(q.packed.data(), q.packed.size()));  // (takes r's buffers if held)
    if (!r.last_piece) return;
    check_planned(piece_codes_, sizes, 0, name);
    piece_codes_ = 0;
    out_.pad_to(kWqAlign);
    put_piece(piece_params_.scales().data(), piece_params_.scales().size(), sizes, 1, name, false);
    // (Zeros the plan has no place for are refused by the check there.)
    if (sizes.size() > 2 || !piece_params_.zeros().empty()) {
      put_piece(piece_params_.zeros().data(), piece_params_.zeros().size(), sizes, 2, name, false);
    }
  }

  HeldPayloads held_;  // before out_: destroyed after it, which waits for the writes reading them
  OutputFile out_;
  Layout layout_;
  size_t next_ = 0;
  uint64_t piece_codes_ = 0;                       // codes written of the tensor in pieces
  PieceParams piece_params_;                       // its parameters so far, as stored
};

}  // namespace

uint64_t wq_planned_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                          const ModelReader& source) {
  return plan_layout(plan, infos, source).total;
}

std::unique_ptr<ModelWriter> make_wq_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                            const std::vector<TensorInfo>& infos, const ModelReader& source) {
  return std::make_unique<WqWriter>(path, plan, infos, source);
}

}  // namespace wq
