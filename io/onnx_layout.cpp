#include "io/onnx_layout.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "io/onnx_reader.h"
#include "io/onnx_zero_points.h"
#include "io/quant_record.h"

namespace wq {
namespace {

// Integer zero points, `width` bits each (io/onnx_zero_points.h), into q.zeros; symmetric
// codes must have 2^(b-1) in every block, which q, having no zeros, implies.
void load_integer_zero_points(const std::string& at, QuantizedTensor& q, const OnnxQuantParts& parts,
                              const std::vector<OnnxInitializer>& inits, int width) {
  if (parts.zeros == OnnxQuantParts::kNone) throw Error(at + ": no .zeros initializer");
  const OnnxInitializer& z = inits[parts.zeros];
  const size_t bpr = q.blocks_per_row(), want = q.rows * zero_point_row_bytes(bpr, width);
  if (z.header.data_type() != onnx::TensorProto::UINT8 || z.nbytes != want)
    throw Error(at + ".zeros: " + std::to_string(z.nbytes) + " bytes of type " + std::to_string(z.header.data_type()) +
                ", " + std::to_string(want) + " uint8 zero points expected");
  OutputVector<float> v(q.rows * bpr);
  unpack_zero_points(z.data, q.rows, bpr, width, v.data());
  if (q.scheme == Scheme::MnnSym) {
    const float half = float(1 << (q.spec.bits - 1));
    for (size_t i = 0; i < v.size(); ++i)
      if (v[i] != half)
        throw Error(at + ".zeros: block " + std::to_string(i) + " has zero point " + std::to_string(int(v[i])) +
                    ", symmetric codes have " + std::to_string(int(half)));
    return;
  }
  if (q.scheme != Scheme::Affine) throw Error(at + ": integer zero points with a scheme that has a minimum");
  q.zeros = std::move(v);
}

}  // namespace

std::vector<size_t> OnnxQuantParts::all() const {
  std::vector<size_t> v;
  for (size_t j : {codes, scales, zeros, shape, offset, gather_zeros})
    if (j != kNone) v.push_back(j);
  return v;
}

OnnxQuantParts find_quant_parts(const std::string& file, const std::string& name,
                                const std::map<std::string, size_t>& by_name, const std::vector<OnnxInitializer>&) {
  OnnxQuantParts p;
  auto find = [&](const char* suffix) {
    const auto it = by_name.find(name + suffix);
    return it == by_name.end() ? OnnxQuantParts::kNone : it->second;
  };
  p.codes = find(".qweight");
  p.scales = find(".scales");
  p.zeros = find(".zeros");
  p.shape = find(".dq_shape");
  p.offset = find(".dq_offset");
  p.gather_zeros = find(".gather_zeros");
  if (p.codes == OnnxQuantParts::kNone) throw Error(file + ": " + name + ": the record has no " + name + ".qweight initializer");
  if (p.scales == OnnxQuantParts::kNone) throw Error(file + ": " + name + ": the record has no " + name + ".scales initializer");
  return p;
}

QuantizedTensor load_onnx_quantized(const std::string& file, const std::string& name, const std::string& record,
                                    const OnnxQuantParts& parts, const std::vector<OnnxInitializer>& inits) {
  QuantizedTensor q = parse_quant_record(record, name, file);
  std::string form;
  try {
    form = nlohmann::json::parse(record).at("onnx_form").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(file + ": " + name + ": quantization record: " + e.what());
  }
  const size_t nb = q.rows * q.blocks_per_row();
  const OnnxInitializer& codes = inits[parts.codes];
  const std::string at = file + ": " + name;
  if (codes.header.data_type() != onnx::TensorProto::UINT8) throw Error(at + ".qweight: is not uint8");
  if (form == kFormMatMulNBits || form == kFormGather) {
    if (codes.nbytes != q.rows * q.packed_row_bytes)
      throw Error(at + ".qweight: " + std::to_string(codes.nbytes) + " bytes, the record says " + std::to_string(q.rows * q.packed_row_bytes));
    q.packed.assign(codes.data, codes.data + codes.nbytes);
  } else if (form == kFormDequant || form == kFormDequantizeLinear) {
    if (codes.nbytes != q.rows * q.cols)
      throw Error(at + ".qweight: " + std::to_string(codes.nbytes) + " codes, the record says " + std::to_string(q.rows * q.cols));
    const unsigned qmax = (1u << q.spec.bits) - 1;
    q.packed.assign(q.rows * q.packed_row_bytes, 0);
    for (size_t r = 0; r < q.rows; ++r) {
      uint8_t* out = &q.packed[r * q.packed_row_bytes];
      for (size_t c = 0; c < q.cols; ++c) {
        const uint8_t v = codes.data[r * q.cols + c];
        if (v > qmax) throw Error(at + ".qweight: code " + std::to_string(v) + " at row " + std::to_string(r) + " does not fit " + std::to_string(q.spec.bits) + " bits");
        const size_t bit = c * size_t(q.spec.bits);
        const uint32_t s = uint32_t(v) << (bit & 7);
        out[bit >> 3] |= uint8_t(s);
        if ((bit & 7) + size_t(q.spec.bits) > 8) out[(bit >> 3) + 1] |= uint8_t(s >> 8);
      }
    }
  } else {
    throw Error(at + ": quantization record: unknown onnx_form \"" + form + "\"");
  }
  // Scales and zeros: f32, or f16 halves when the record says fp16 (engine widens them).
  auto params = [&](size_t j, const char* suffix, OutputVector<float>& out, std::vector<uint16_t>& half) {
    const OnnxInitializer& in = inits[j];
    const int want = q.spec.fp16 ? onnx::TensorProto::FLOAT16 : onnx::TensorProto::FLOAT;
    if (in.header.data_type() != want || in.nbytes != nb * (q.spec.fp16 ? 2 : 4))
      throw Error(at + suffix + ": " + std::to_string(in.nbytes) + " bytes of type " + std::to_string(in.header.data_type()) + " do not hold " + std::to_string(nb) + " block parameters");
    if (q.spec.fp16) {
      half.resize(nb);
      std::memcpy(half.data(), in.data, nb * 2);
    } else {
      out.resize(nb);
      std::memcpy(out.data(), in.data, nb * 4);
    }
  };
  params(parts.scales, ".scales", q.scales, q.scales_f16);
  if (form == kFormDequantizeLinear) {
    load_integer_zero_points(at, q, parts, inits, 8);
  } else if (q.scheme != Scheme::MnnSym) {
    if (parts.zeros == OnnxQuantParts::kNone) throw Error(at + ": no .zeros for an asymmetric tensor");
    const OnnxInitializer& z = inits[parts.zeros];
    if (form == kFormMatMulNBits && z.header.data_type() == onnx::TensorProto::UINT8) {
      load_integer_zero_points(at, q, parts, inits, q.spec.bits);
    } else {
      params(parts.zeros, ".zeros", q.zeros, q.zeros_f16);
    }
  }
  return q;
}

}  // namespace wq
