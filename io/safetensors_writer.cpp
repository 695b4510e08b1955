#include "io/safetensors_writer.h"

#include <nlohmann/json.hpp>

#include <unordered_set>

#include "engine/error.h"
#include "io/output_file.h"
#include "io/piece_params.h"
#include "io/planned_tensor.h"
#include "io/quant_record.h"

namespace wq {
namespace {

// A JSON string for a header key; a name that is not UTF-8 cannot be one.
std::string json_key(const std::string& name, const std::string& tensor) {
  try {
    return nlohmann::json(name).dump();
  } catch (const nlohmann::json::exception&) {
    throw Error(tensor + ": the name is not valid UTF-8, which a safetensors header (JSON) cannot hold", ErrorKind::Usage);
  }
}

// The header, data offsets contiguous in plan order (the safetensors library rejects
// gaps), padded with spaces so that the data starts 8-byte aligned. Written as text in
// one pass: an ordered_json object finds each new key by a linear search, which made
// the header quadratic in the tensor count (200k tensors took minutes).
std::string header_for(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                       std::vector<std::vector<PlannedPiece>>* pieces_out) {
  std::string h, meta = "{\"wquant.format_version\":\"1\"";
  std::unordered_set<std::string> keys;
  uint64_t off = 0;
  for (const TensorPlan& p : plan) {
    std::vector<PlannedPiece> pieces = planned_pieces(p, infos.at(p.source_index));
    for (const PlannedPiece& piece : pieces) {
      const std::string key = p.name + piece.suffix;
      // NAME.qweight of a quantized NAME may also be the name of another tensor.
      if (!keys.insert(key).second) {
        throw Error(key + ": two tensors would have this name in the safetensors output", ErrorKind::Usage);
      }
      const nlohmann::ordered_json v = {{"dtype", piece.dtype}, {"shape", piece.shape}, {"data_offsets", {off, off + piece.nbytes}}};
      h += "," + json_key(key, p.name) + ":" + v.dump();
      off += piece.nbytes;
    }
    if (p.action == TensorAction::Quantize) {
      if (p.name == "format_version") {  // its record's key would be the layout's version key
        throw Error("format_version: a quantized tensor of this name cannot be written in wquant's safetensors layout "
                    "(its record would be the metadata key wquant.format_version, the layout's version); write .wq, "
                    "or keep the tensor in float with a params file rule",
                    ErrorKind::Usage);
      }
      // The record's data-independent fields (the header is written before any tensor
      // is quantized): HQQ records carry the step budget, not the steps used.
      QuantizedTensor q;
      q.shape = p.shape;
      q.spec = p.spec;
      q.scheme = p.spec.scheme();
      q.block = p.block;
      q.packed_row_bytes = size_t(pieces[0].shape[1]);
      meta += "," + json_key("wquant." + p.name, p.name) + ":" + nlohmann::ordered_json(quant_record_json(q)).dump();
    }
    if (pieces_out) pieces_out->push_back(std::move(pieces));
  }
  if (keys.count("__metadata__")) throw Error("__metadata__: a tensor cannot have this name in safetensors", ErrorKind::Usage);
  std::string s = "{\"__metadata__\":" + meta + "}" + h + "}";
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

  void write(TensorResult& r) override {
    if (next_ >= pieces_.size()) throw Error(out_.path() + ": more tensors than planned", ErrorKind::Internal);
    const std::vector<PlannedPiece>& pieces = pieces_[next_++];
    const std::string& name = r.plan ? r.plan->name : std::string("?");
    auto put = [&](const void* data, uint64_t n, const PlannedPiece& piece) {
      check_planned(n, piece, name);
      out_.write(data, n);
    };
    if (r.plan && r.plan->action == TensorAction::Quantize && !(r.first_piece && r.last_piece)) {
      write_piece(r, pieces, name);
      if (!r.last_piece) --next_;  // the same plan entry's next piece follows
    } else if (r.plan && r.plan->action == TensorAction::Quantize) {
      const QuantizedTensor& q = r.quantized;
      put(q.packed.data(), q.packed.size(), pieces[0]);
      // With fp16 the engine's halves are the stored values (round_params_to_f16).
      if (q.spec.fp16) put(q.scales_f16.data(), q.scales_f16.size() * 2, pieces[1]);
      else put(q.scales.data(), q.scales.size() * 4, pieces[1]);
      if (pieces.size() > 2) {
        if (q.spec.fp16) put(q.zeros_f16.data(), q.zeros_f16.size() * 2, pieces[2]);
        else put(q.zeros.data(), q.zeros.size() * 4, pieces[2]);
      }
    } else {
      put(r.data(), r.size(), pieces[0]);
    }
  }

  bool takes_quantized_row_pieces() const override { return true; }

  void commit() override {
    if (piece_codes_) throw Error(out_.path() + ": a tensor's last row piece never came", ErrorKind::Internal);
    if (next_ != pieces_.size()) throw Error(out_.path() + ": not every tensor was written", ErrorKind::Internal);
    out_.commit();
  }
  uint64_t bytes_written() const override { return out_.offset(); }
  const std::string& temp_path() const override { return out_.temp_path(); }

 private:
  void check_planned(uint64_t n, const PlannedPiece& piece, const std::string& name) const {
    if (n != piece.nbytes) {
      throw Error(out_.path() + ": " + name + piece.suffix + ": " + std::to_string(n) + " bytes, planned " +
                      std::to_string(piece.nbytes),
                  ErrorKind::Internal);
    }
  }

  // One row piece of a quantized tensor (TensorSink::takes_quantized_row_pieces), as the
  // .wq writer takes them: NAME.qweight comes first in the data, so each piece's codes go
  // to the file as they come, and its scales and zeros are kept until the last piece,
  // after whose codes they are written as the whole tensor's would be. Without pieces the
  // pipeline held the largest tensors' codes whole (32 MiB for a [32000, 2048] embedding
  // at 4 bits), each in fresh memory the kernel faulted in and zeroed. bench/ab_bench.sh,
  // 6 pairs, the f32 1.1 B model 4-bit block 64 asym, no fsync: peak RSS 108 -> 35 MiB,
  // wall 0.930, CPU 1.021 (2026-12-07).
  void write_piece(TensorResult& r, const std::vector<PlannedPiece>& pieces, const std::string& name) {
    const QuantizedTensor& q = r.quantized;
    if (r.first_piece) {
      piece_codes_ = 0;
      piece_params_.start(pieces.size() > 1 ? pieces[1].nbytes : 0, pieces.size() > 2 ? pieces[2].nbytes : 0);
    }
    if (piece_codes_ + q.packed.size() > pieces.at(0).nbytes) check_planned(piece_codes_ + q.packed.size(), pieces[0], name);
    piece_codes_ += q.packed.size();
    piece_params_.add(q);
    out_.write(q.packed.data(), q.packed.size());
    if (!r.last_piece) return;
    check_planned(piece_codes_, pieces[0], name);
    piece_codes_ = 0;
    const OutputBytes &scales = piece_params_.scales(), &zeros = piece_params_.zeros();
    check_planned(scales.size(), pieces.at(1), name);
    out_.write(scales.data(), scales.size());
    if (pieces.size() > 2 || !zeros.empty()) {  // (zeros the plan has no place for: refused)
      if (pieces.size() < 3) throw Error(out_.path() + ": " + name + ": zeros the plan has no place for", ErrorKind::Internal);
      check_planned(zeros.size(), pieces[2], name);
      out_.write(zeros.data(), zeros.size());
    }
  }

  OutputFile out_;
  std::vector<std::vector<PlannedPiece>> pieces_;
  size_t next_ = 0;
  uint64_t piece_codes_ = 0;                 // codes written of the tensor in pieces
  PieceParams piece_params_;                // its parameters so far, as stored
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
