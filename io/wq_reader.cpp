#include "io/wq_reader.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <string>

#include "engine/error.h"
#include "engine/tensor.h"
#include "io/gguf_format.h"
#include "io/mapped_file.h"
#include "io/safetensors_types.h"
#include "io/wq_layout.h"
#include "wq_format_generated.h"

namespace wq {

bool is_wq_file(const uint8_t* first8) { return std::memcmp(first8, kWqMagic, 8) == 0; }

namespace {

struct Piece {
  uint64_t offset = 0, size = 0;  // absolute
};

struct Entry {
  TensorInfo info;
  const fb::Tensor* t = nullptr;
  Piece pieces[3];
};

class WqReader final : public ModelReader {
 public:
  explicit WqReader(const std::string& path) : file_(path) {
    const std::string& p = file_.path();
    WqPreamble pre;
    std::memcpy(&pre, file_.span(0, sizeof pre, "preamble"), sizeof pre);
    if (!is_wq_file(reinterpret_cast<const uint8_t*>(pre.magic))) throw Error(p + ": not a .wq file (bad magic)");
    if (pre.version != kWqVersion) throw Error(p + ": .wq version " + std::to_string(pre.version) + " is not supported (1 is)");
    const uint8_t* h = file_.span(pre.header_offset, pre.header_size, "header");
    if (pre.header_size > (1ull << 31)) throw Error(p + ": header size " + std::to_string(pre.header_size) + " is absurd");
    flatbuffers::Verifier v(h, size_t(pre.header_size));
    if (!fb::VerifyModelBuffer(v)) throw Error(p + ": the header is corrupt (flatbuffer verification failed)");
    model_ = fb::GetModel(h);
    if (model_->version() != kWqVersion) {
      throw Error(p + ": the header's version " + std::to_string(model_->version()) + " is not supported (1 is)");
    }
    if (pre.data_offset < pre.header_offset + pre.header_size || pre.data_offset > file_.size())
      throw Error(p + ": data offset " + std::to_string(pre.data_offset) + " is outside the file");
    if (!model_->tensors()) throw Error(p + ": the header lists no tensors");
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    std::set<std::string> names;
    for (const fb::Tensor* t : *model_->tensors()) {
      Entry e;
      e.t = t;
      if (!t->name() || !t->shape() || !t->dtype()) throw Error(p + ": a tensor lacks its name, shape or dtype");
      e.info.name = t->name()->str();
      const std::string at = p + ": " + e.info.name;
      if (e.info.name.empty()) throw Error(p + ": a tensor has an empty name");
      if (e.info.name.find('\0') != std::string::npos) throw Error(at + ": the name holds a NUL byte");
      if (!names.insert(e.info.name).second) throw Error(at + ": two tensors have this name");
      for (int64_t d : *t->shape()) e.info.shape.push_back(d);
      const size_t numel = checked_numel(at, e.info.shape);
      e.info.type_name = t->dtype()->str();
      const uint64_t offs[3] = {t->data_offset(), t->scales_offset(), t->zeros_offset()};
      const uint64_t szs[3] = {t->data_size(), t->scales_size(), t->zeros_size()};
      for (int k = 0; k < 3; ++k) {
        if (offs[k] > file_.size() || !file_.contains(pre.data_offset + offs[k], szs[k]) || pre.data_offset + offs[k] < pre.data_offset)
          throw Error(at + ": data runs past the end of the file (" + std::to_string(file_.size()) + " bytes): truncated or corrupt");
        if ((pre.data_offset + offs[k]) % kWqAlign)
          throw Error(at + ": data offset " + std::to_string(offs[k]) + " is not 64-byte aligned: corrupt");
        e.pieces[k] = {pre.data_offset + offs[k], szs[k]};
        if (szs[k]) ranges.push_back({e.pieces[k].offset, szs[k]});
        e.info.nbytes += szs[k];
      }
      switch (t->kind()) {
        case fb::TensorKind_Float: {
          e.info.kind = StoredKind::Float;
          if (e.info.type_name == "F32") e.info.dtype = DType::F32;
          else if (e.info.type_name == "F16") e.info.dtype = DType::F16;
          else if (e.info.type_name == "BF16") e.info.dtype = DType::BF16;
          else throw Error(at + ": unknown float dtype " + e.info.type_name);
          if (szs[0] != numel * dtype_size(e.info.dtype))
            throw Error(at + ": " + std::to_string(szs[0]) + " bytes of data for " + std::to_string(numel) + " " + e.info.type_name + " elements");
          break;
        }
        case fb::TensorKind_Quantized: e.info.kind = StoredKind::Quantized; check_quantized(e, numel); break;
        case fb::TensorKind_Raw: e.info.kind = raw_kind(e, numel, at); break;
        default: throw Error(at + ": unknown tensor kind " + std::to_string(int(t->kind())));
      }
      entries_.push_back(e);
      infos_.push_back(e.info);
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].first < ranges[i - 1].first + ranges[i - 1].second) throw Error(p + ": tensor data overlap");
    }
  }

  const char* format() const override { return "wq"; }
  const std::string& path() const override { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }

  TensorView view(size_t i) override {
    const Entry& e = at(i);
    if (e.info.kind != StoredKind::Float) throw Error(path() + ": " + e.info.name + ": is " + e.info.type_name + ", not a float tensor");
    TensorView v;
    v.name = e.info.name;
    v.shape = e.info.shape;
    v.dtype = e.info.dtype;
    v.nbytes = e.pieces[0].size;
    v.data = file_.span(e.pieces[0].offset, e.pieces[0].size, e.info.name);
    return v;
  }
  const uint8_t* raw(size_t i, size_t* nbytes) override {
    const Entry& e = at(i);
    *nbytes = e.pieces[0].size;
    return file_.span(e.pieces[0].offset, e.pieces[0].size, e.info.name);
  }
  void release(size_t i) override {
    for (const Piece& pc : at(i).pieces) file_.release(pc.offset, pc.size);
  }

  QuantizedTensor load_quantized(size_t i) override {
    const Entry& e = at(i);
    if (e.info.kind != StoredKind::Quantized) return ModelReader::load_quantized(i);
    const fb::Tensor& t = *e.t;
    QuantizedTensor q = geometry(e);
    const uint8_t* c = file_.span(e.pieces[0].offset, e.pieces[0].size, e.info.name);
    q.packed.assign(c, c + e.pieces[0].size);
    load_params(e.pieces[1], t.fp16(), q.scales, q.scales_f16);
    if (q.scheme != Scheme::MnnSym) load_params(e.pieces[2], t.fp16(), q.zeros, q.zeros_f16);
    return q;
  }

 private:
  const Entry& at(size_t i) const {
    if (i >= entries_.size()) throw Error(path() + ": no tensor #" + std::to_string(i), ErrorKind::Internal);
    return entries_[i];
  }

  // A tensor copied as it was (kind Raw): its size must be what its dtype and shape need,
  // as every reader checks its copies, or a writer would pass the mismatch on (a
  // safetensors output its own reader refuses). llama.cpp's block types (a GGUF input's
  // quantized tensors) are blocks that dequantize and verify read, as from the GGUF;
  // ONNX string tensors have no fixed size.
  static StoredKind raw_kind(const Entry& e, size_t numel, const std::string& at) {
    const std::string& dt = e.info.type_name;
    if (e.pieces[1].size || e.pieces[2].size) throw Error(at + ": a " + dt + " tensor copied as it was has scales or zeros");
    if (dt == "STRING") return StoredKind::Other;
    uint64_t need = 0;
    StoredKind kind = StoredKind::Other;
    if (const SafetensorsDType* st = find_safetensors_dtype(dt)) {
      need = uint64_t(numel) * st->size;
    } else if (const auto g = gguf_tensor_type_named(dt)) {
      const int64_t row = e.info.shape.empty() ? 1 : e.info.shape.back();
      if (row % int64_t(g->block_weights) != 0)
        throw Error(at + ": rows of " + std::to_string(row) + " are not whole " + dt + " blocks");
      need = uint64_t(numel / g->block_weights) * g->block_bytes;
      if (g->block_weights > 1) kind = StoredKind::Ggml;
    } else {
      throw Error(at + ": unknown dtype " + dt + " for a tensor copied as it was");
    }
    if (e.pieces[0].size != need)
      throw Error(at + ": " + std::to_string(e.pieces[0].size) + " bytes of data for shape of " + std::to_string(numel) + " " +
                  dt + " elements (" + std::to_string(need) + " bytes)");
    return kind;
  }

  QuantizedTensor geometry(const Entry& e) const {
    const fb::Tensor& t = *e.t;
    QuantizedTensor q;
    q.name = e.info.name;
    q.shape = e.info.shape;
    q.spec.bits = t.bits();
    q.spec.fp16 = t.fp16();
    q.spec.hqq = t.hqq();
    q.spec.hqq_opts.max_steps = t.hqq_steps();
    q.spec.hqq_opts.p = t.hqq_p();
    q.spec.hqq_opts.beta = t.hqq_beta();
    q.spec.hqq_opts.kappa = t.hqq_kappa();
    q.spec.hqq_opts.round_zero = t.hqq_round_zero();
    q.scheme = Scheme(int(t.scheme()));
    q.spec.asym = q.scheme != Scheme::MnnSym;
    checked_numel(q.name, q.shape);
    q.rows = matrix_dims(q.shape).rows;
    q.cols = matrix_dims(q.shape).cols;
    q.block = size_t(t.block());
    q.spec.block = q.block == q.cols ? 0 : int64_t(q.block);
    q.packed_row_bytes = size_t(t.packed_row_bytes());
    return q;
  }

  void check_quantized(const Entry& e, size_t numel) const {
    const std::string at = path() + ": " + e.info.name;
    const fb::Tensor& t = *e.t;
    if (t.bits() < 2 || t.bits() > 8) throw Error(at + ": bits " + std::to_string(t.bits()) + " outside 2..8");
    if (int(t.scheme()) < 0 || int(t.scheme()) > 2) throw Error(at + ": unknown scheme " + std::to_string(int(t.scheme())));
    // The dtype names what the codes are ("wq4"); another one means another layout.
    if (e.info.type_name != "wq" + std::to_string(t.bits()))
      throw Error(at + ": dtype " + e.info.type_name + " does not match a quantized tensor of " + std::to_string(t.bits()) + " bits (wq" + std::to_string(t.bits()) + ")");
    const QuantizedTensor q = geometry(e);
    if (q.block == 0 || q.cols % q.block) throw Error(at + ": block " + std::to_string(q.block) + " does not divide rows of " + std::to_string(q.cols));
    if (q.packed_row_bytes != (q.cols * size_t(q.spec.bits) + 7) / 8 || e.pieces[0].size != q.rows * q.packed_row_bytes)
      throw Error(at + ": " + std::to_string(e.pieces[0].size) + " bytes of codes do not hold " + std::to_string(numel) + " codes of " + std::to_string(q.spec.bits) + " bits");
    const uint64_t nb = q.rows * q.blocks_per_row() * (q.spec.fp16 ? 2 : 4);
    if (e.pieces[1].size != nb || (q.scheme != Scheme::MnnSym && e.pieces[2].size != nb))
      throw Error(at + ": the scales or zeros do not hold one value per block");
  }

  // The stored values: f32 into out, or f16 halves into half (widen_f16_params, engine).
  void load_params(const Piece& pc, bool fp16, OutputVector<float>& out, std::vector<uint16_t>& half) {
    const uint8_t* d = file_.span(pc.offset, pc.size, "block parameters");
    if (fp16) {
      half.resize(pc.size / 2);
      std::memcpy(half.data(), d, half.size() * 2);
    } else {
      out.resize(pc.size / 4);
      std::memcpy(out.data(), d, out.size() * 4);
    }
  }

  MappedFile file_;
  const fb::Model* model_ = nullptr;
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
};

}  // namespace

std::unique_ptr<ModelReader> open_wq(const std::string& path) { return std::make_unique<WqReader>(path); }

}  // namespace wq
