#include "io/safetensors_writer.h"

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "io/output_file.h"
#include "io/planned_tensor.h"
#include "io/quant_record.h"

namespace wq {
namespace {

// The header, data offsets contiguous in plan order (the safetensors library rejects
// gaps), padded with spaces so that the data starts 8-byte aligned.
std::string header_for(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                       std::vector<std::vector<PlannedPiece>>* pieces_out) {
  nlohmann::ordered_json h;
  nlohmann::ordered_json meta;
  meta["wquant.format_version"] = "1";
  uint64_t off = 0;
  for (const TensorPlan& p : plan) {
    std::vector<PlannedPiece> pieces = planned_pieces(p, infos.at(p.source_index));
    for (const PlannedPiece& piece : pieces) {
      h[p.name + piece.suffix] = {{"dtype", piece.dtype}, {"shape", piece.shape}, {"data_offsets", {off, off + piece.nbytes}}};
      off += piece.nbytes;
    }
    if (p.action == TensorAction::Quantize) {
      // The record's data-independent fields (the header is written before any tensor
      // is quantized): HQQ records carry the step budget, not the steps used.
      QuantizedTensor q;
      q.shape = p.shape;
      q.spec = p.spec;
      q.scheme = p.spec.scheme();
      q.block = p.block;
      q.packed_row_bytes = size_t(pieces[0].shape[1]);
      meta["wquant." + p.name] = quant_record_json(q);
    }
    if (pieces_out) pieces_out->push_back(std::move(pieces));
  }
  nlohmann::ordered_json all;
  all["__metadata__"] = meta;
  for (auto it = h.begin(); it != h.end(); ++it) all[it.key()] = it.value();
  std::string s = all.dump();
  while ((8 + s.size()) % 8) s += ' ';
  return s;
}

class SafetensorsWriter final : public ModelWriter {
 public:
  SafetensorsWriter(const std::string& path, const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos)
      : out_(path) {
    const std::string h = header_for(plan, infos, &pieces_);
    const uint64_t n = h.size();
    out_.write(&n, 8);
    out_.write(h.data(), h.size());
  }

  void write(const TensorResult& r) override {
    if (next_ >= pieces_.size()) throw Error(out_.path() + ": more tensors than planned", ErrorKind::Internal);
    const std::vector<PlannedPiece>& pieces = pieces_[next_++];
    const std::string& name = r.plan ? r.plan->name : std::string("?");
    auto put = [&](const void* data, uint64_t n, const PlannedPiece& piece) {
      if (n != piece.nbytes) {
        throw Error(out_.path() + ": " + name + piece.suffix + ": " + std::to_string(n) + " bytes, planned " +
                        std::to_string(piece.nbytes),
                    ErrorKind::Internal);
      }
      out_.write(data, n);
    };
    if (r.plan && r.plan->action == TensorAction::Quantize) {
      const QuantizedTensor& q = r.quantized;
      put(q.packed.data(), q.packed.size(), pieces[0]);
      write_params(q.scales, q.spec.fp16, pieces[1], put);
      if (pieces.size() > 2) write_params(q.zeros, q.spec.fp16, pieces[2], put);
    } else {
      put(r.data(), r.size(), pieces[0]);
    }
  }

  void commit() override {
    if (next_ != pieces_.size()) throw Error(out_.path() + ": not every tensor was written", ErrorKind::Internal);
    out_.commit();
  }
  uint64_t bytes_written() const override { return out_.offset(); }
  const std::string& temp_path() const override { return out_.temp_path(); }

 private:
  template <class Put>
  void write_params(const std::vector<float>& v, bool fp16, const PlannedPiece& piece, Put& put) {
    if (!fp16) {
      put(v.data(), v.size() * 4, piece);
      return;
    }
    // The engine already rounded these to f16 (round_params_to_f16): narrowing is exact.
    half_.resize(v.size());
    kernels().narrow_f16(v.data(), half_.data(), v.size());
    put(half_.data(), half_.size() * 2, piece);
  }

  OutputFile out_;
  std::vector<std::vector<PlannedPiece>> pieces_;
  std::vector<uint16_t> half_;
  size_t next_ = 0;
};

}  // namespace

uint64_t safetensors_planned_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos) {
  std::vector<std::vector<PlannedPiece>> pieces;
  const std::string h = header_for(plan, infos, &pieces);
  uint64_t n = 8 + h.size();
  for (const auto& ps : pieces) {
    for (const PlannedPiece& p : ps) n += p.nbytes;
  }
  return n;
}

std::unique_ptr<ModelWriter> make_safetensors_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                                     const std::vector<TensorInfo>& infos) {
  return std::make_unique<SafetensorsWriter>(path, plan, infos);
}

}  // namespace wq
