#include "engine/quantize.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/error.h"
#include "engine/hqq.h"
#include "engine/scheduler.h"

namespace wq {

static const Kernels& table(const Kernels* k) { return k ? *k : kernels(); }

static void check_view(const TensorView& w) {
  const size_t n = w.numel();
  if (n * dtype_size(w.dtype) != w.nbytes) {
    throw Error(w.name + ": " + std::to_string(w.nbytes) + " bytes of data for " + std::to_string(n) + " " +
                dtype_name(w.dtype) + " elements");
  }
  if (n && !w.data) throw Error(w.name + ": no data");
}

static void check_finite_rows(const TensorView& w, size_t cols, size_t r0, size_t r1, const Kernels& k) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t es = dtype_size(w.dtype);
  const size_t n = (r1 - r0) * cols;
  const size_t i = k.find_nonfinite(base + r0 * cols * es, w.dtype, n);
  if (i == n) return;
  const size_t row = r0 + i / cols, col = i % cols;
  throw Error(w.name + ": non-finite weight (NaN or Inf) at row " + std::to_string(row) + ", column " +
              std::to_string(col) + "; wquant does not quantize tensors with NaN or Inf");
}

void check_finite(const TensorView& w, const Kernels* k) {
  check_view(w);
  check_finite_rows(w, w.cols(), 0, w.rows(), table(k));
}

// MNNConvert's AlignDenormalizedValue: every |w| < FLT_MIN becomes +0 (-0 included,
// since fabs(-0) < FLT_MIN) before quantizing. Returns the flushed tensor as f32 in *buf
// and a view of it, or w itself when nothing would change (the common case: one read-only
// pass, no copy). f16 and bf16 widen to f32 exactly, so quantizing the copy gives the
// bytes quantizing the original would, apart from the flushed values.
static TensorView flush_subnormals(const TensorView& w, std::vector<float>* buf, const Kernels& k) {
  const size_t n = w.numel();
  const size_t es = dtype_size(w.dtype);
  const auto* base = static_cast<const uint8_t*>(w.data);
  auto widen = [&](size_t i) -> float {
    if (w.dtype == DType::F32) {
      float f;
      std::memcpy(&f, base + i * 4, 4);
      return f;
    }
    uint16_t h;
    std::memcpy(&h, base + i * es, 2);
    if (w.dtype == DType::BF16) {
      const uint32_t u = uint32_t(h) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    float f;
    k.widen_f16(&h, &f, 1);
    return f;
  };
  // Zero exponent and not +0: a subnormal or -0. Every f16 subnormal is above FLT_MIN, so
  // only -0 flushes there. Branch-free scans, so the compiler vectorises them.
  auto flushes = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return (u & 0x7f800000u) == 0 && u != 0;
  };
  bool any = false;
  if (w.dtype == DType::F32) {
    for (size_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, base + i * 4, 4);
      any |= ((u & 0x7f800000u) == 0) & (u != 0);
    }
  } else {
    const uint16_t exp_mask = w.dtype == DType::BF16 ? 0x7f80u : 0xffffu;
    const uint16_t zero_exp = w.dtype == DType::BF16 ? 0u : 0x8000u;  // f16: only -0
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, base + i * 2, 2);
      any |= (uint16_t(h & exp_mask) == zero_exp) & (h != 0);
    }
  }
  if (!any) return w;
  buf->resize(n);
  for (size_t i = 0; i < n; ++i) {
    const float f = widen(i);
    (*buf)[i] = flushes(f) ? 0.0f : f;
  }
  TensorView v = w;
  v.dtype = DType::F32;
  v.data = buf->data();
  v.nbytes = n * 4;
  return v;
}

QuantizedTensor quantize_tensor(const TensorView& w_in, const QuantSpec& spec, size_t block, const Kernels* kp) {
  const Kernels& k = table(kp);
  validate_spec(spec, w_in.name);
  check_view(w_in);
  std::vector<float> flushed;
  const TensorView w = spec.mnn_flush ? flush_subnormals(w_in, &flushed, k) : w_in;
  QuantizedTensor q;
  q.name = w.name;
  q.shape = w.shape;
  q.spec = spec;
  q.scheme = spec.scheme();
  q.rows = w.rows();
  q.cols = w.cols();
  if (block == 0 || q.cols % block != 0) {
    throw Error(w.name + ": block " + std::to_string(block) + " does not divide the row length " +
                std::to_string(q.cols), ErrorKind::Usage);
  }
  q.block = block;
  q.packed_row_bytes = (q.cols * size_t(spec.bits) + 7) / 8;
  q.packed.resize(q.rows * q.packed_row_bytes);
  const size_t nblocks = q.rows * q.blocks_per_row();
  q.scales.resize(nblocks);
  if (q.scheme != Scheme::MnnSym) q.zeros.resize(nblocks);

  if (spec.hqq) {
    hqq_quantize(w, q, k);
  } else {
    RowQuantJob job{};
    job.src = w.data;
    job.src_dtype = w.dtype;
    job.src_row_stride = q.cols;
    job.cols = q.cols;
    job.block = block;
    job.scheme = q.scheme;
    job.bits = spec.bits;
    job.round_zero = false;
    job.packed = q.packed.data();
    job.packed_row_bytes = q.packed_row_bytes;
    job.scales = q.scales.data();
    job.zeros = q.zeros.empty() ? nullptr : q.zeros.data();
    const size_t tile = tile_rows_for(q.rows, q.cols * dtype_size(w.dtype));
    const size_t ntiles = (q.rows + tile - 1) / tile;
    // The first bad element of each tile; reported in tile order so the message does
    // not depend on which thread found it first.
    std::vector<std::string> bad(ntiles);
    parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) {
      try {
        check_finite_rows(w, q.cols, r0, r1, k);  // the tile is then warm in cache
      } catch (const Error& e) {
        bad[r0 / tile] = e.what();
        return;
      }
      k.quantize_rows(job, r0, r1);
    });
    for (const std::string& msg : bad) {
      if (!msg.empty()) throw Error(msg);
    }
  }
  if (spec.fp16 && spec.fp16_truncate) truncate_params_to_f16(q);
  else if (spec.fp16) round_params_to_f16(q, &k);
  return q;
}

// IEEE f32 -> f16 rounded toward zero (overflow to Inf, NaN kept NaN), widened back.
static float truncate_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int exp = int((u >> 23) & 0xff);
  const uint32_t mant = u & 0x7fffffu;
  uint16_t h;
  if (exp == 0xff) {
    h = uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0u));
  } else if (exp > 142) {  // >= 2^16: beyond f16's largest finite value
    h = uint16_t(sign | 0x7c00u);
  } else if (exp > 112) {  // f16 normal: drop the low 13 mantissa bits
    h = uint16_t(sign | uint32_t(exp - 112) << 10 | mant >> 13);
  } else if (exp > 101) {  // f16 subnormal: shift the implicit bit in, drop the rest
    h = uint16_t(sign | (mant | 0x800000u) >> (126 - exp));
  } else {
    h = uint16_t(sign);
  }
  // Widen exactly (f16 -> f32 is exact); done by hand so no kernel table is needed.
  const uint32_t hs = uint32_t(h & 0x8000u) << 16;
  const int he = (h >> 10) & 0x1f;
  uint32_t hm = h & 0x3ffu;
  uint32_t out;
  if (he == 0x1f) {
    out = hs | 0x7f800000u | hm << 13;
  } else if (he != 0) {
    out = hs | uint32_t(he + 112) << 23 | hm << 13;
  } else if (hm == 0) {
    out = hs;
  } else {
    int e = 113;
    while (!(hm & 0x400u)) {
      hm <<= 1;
      --e;
    }
    out = hs | uint32_t(e) << 23 | (hm & 0x3ffu) << 13;
  }
  float r;
  std::memcpy(&r, &out, 4);
  return r;
}

void truncate_params_to_f16(QuantizedTensor& q) {
  for (std::vector<float>* v : {&q.scales, &q.zeros}) {
    for (float& f : *v) f = truncate_to_f16(f);
  }
}

void round_params_to_f16(QuantizedTensor& q, const Kernels* kp) {
  const Kernels& k = table(kp);
  std::vector<uint16_t> h(std::max(q.scales.size(), q.zeros.size()));
  for (std::vector<float>* v : {&q.scales, &q.zeros}) {
    k.narrow_f16(v->data(), h.data(), v->size());
    k.widen_f16(h.data(), v->data(), v->size());
  }
}

void dequantize_rows(const QuantizedTensor& q, size_t row_begin, size_t row_end, float* out, const Kernels* kp) {
  const Kernels& k = table(kp);
  const size_t nb = q.blocks_per_row();
  std::vector<uint8_t> codes(q.cols);
  for (size_t r = row_begin; r < row_end; ++r) {
    k.unpack_codes(q.packed.data() + r * q.packed_row_bytes, q.cols, q.spec.bits, codes.data());
    float* dst = out + (r - row_begin) * q.cols;
    for (size_t b = 0; b < nb; ++b) {
      BlockCodec c{q.scheme, q.spec.bits, q.scales[r * nb + b], q.zeros.empty() ? 0.0f : q.zeros[r * nb + b],
                   0.0f};
      k.dequantize_codes(codes.data() + b * q.block, q.block, c, dst + b * q.block);
    }
  }
}

void dequantize_tensor(const QuantizedTensor& q, float* out, const Kernels* k) {
  const size_t tile = tile_rows_for(q.rows, q.cols * 4);
  parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) { dequantize_rows(q, r0, r1, out + r0 * q.cols, k); });
}

}  // namespace wq
