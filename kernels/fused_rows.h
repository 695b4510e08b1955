// The fused row-tile quantizer, one body for every ISA. P supplies the ISA's primitives
// as static functions (widen_f16, widen_bf16, minmax, quantize_codes, pack_codes); the
// per-block parameters come from ref::block_codec on every ISA, so they are the same bits
// by construction. A row is widened once into a buffer that stays in L1/L2, then each
// block is reduced, quantized and the whole row packed: every input byte is read from
// memory once and every output byte written once.
#pragma once

#include "kernels/isa_namespace.h"


#include <cstring>

#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/scratch_buffer.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE

// RowQuantJob::errors[r] by its definition: row r (as widened) against its codes (one per
// byte) dequantized with the parameters stored in job, through sq_err. w_hat: cols floats
// of scratch. The scalar table measures every row this way; the SIMD tables those whose
// blocks are not whole vectors.
// n codes (one per byte) dequantized block by block through P::dequantize_codes: block b
// with scales[b] and zeros[b] (zeros nullptr: 0) under `scheme`.
template <class P>
void dequantize_code_blocks(const uint8_t* codes, size_t n, size_t block, Scheme scheme, int bits, const float* scales,
                            const float* zeros, float* w_hat) {
  for (size_t b = 0; block && b < n / block; ++b) {
    const BlockCodec c{scheme, bits, scales[b], zeros ? zeros[b] : 0.0f, 0.0f};
    P::dequantize_codes(codes + b * block, block, c, w_hat + b * block);
  }
}

// codes_error_partials by its definition (kernels/kernel_slots.inc): the codes dequantized,
// then sq_err_partials. The scalar table measures this way; the SIMD tables blocks that
// are not whole vectors.
template <class P>
void codes_error_partials_by_definition(const float* x, const uint8_t* codes, size_t n, size_t block, Scheme scheme,
                                        int bits, const float* scales, const float* zeros, float* partials) {
  ScratchBuffer<float> w_hat(n);
  dequantize_code_blocks<P>(codes, n, block, scheme, bits, scales, zeros, w_hat.data());
  P::sq_err_partials(x, w_hat.data(), n, partials);
}

template <class P>
void measure_row(const RowQuantJob& job, size_t r, const float* row, const uint8_t* codes, float* w_hat) {
  const size_t nblocks = job.cols / job.block;
  dequantize_code_blocks<P>(codes, job.cols, job.block, job.scheme, job.bits, job.scales + r * nblocks,
                            job.zeros ? job.zeros + r * nblocks : nullptr, w_hat);
  RowError& e = job.errors[r];
  P::sq_err(row, w_hat, job.cols, &e.err2, &e.ref2, &e.max_abs);
}

// quantize_ggml_measured by its definition (kernels/kernel_slots.inc): K's quantize_ggml,
// dequantize_ggml and sq_err in turn. The scalar table measures every type this way; the
// SIMD tables all but the legacy types' own quantizers, which measure as they code.
template <class K, GgmlBlock T>
void quantize_ggml_then_measure(const float* x, void* y, size_t n, const float* imatrix, RowError* err) {
  K::template quantize_ggml<T>(x, y, n, imatrix);
  ScratchBuffer<float> w_hat(n);
  K::template dequantize_ggml<T>(y, w_hat.data(), n);
  K::sq_err(x, w_hat.data(), n, &err->err2, &err->ref2, &err->max_abs);
}

template <class P>
void quantize_rows_body(const RowQuantJob& job, size_t row_begin, size_t row_end) {
  const size_t cols = job.cols;
  const size_t nblocks = cols / job.block;
  ScratchBuffer<float> wide(job.src_dtype == DType::F32 ? 0 : cols);
  ScratchBuffer<uint8_t> codes(cols);
  ScratchBuffer<float> w_hat(job.errors ? cols : 0);
  for (size_t r = row_begin; r < row_end; ++r) {
    const float* row;
    const size_t offset = r * job.src_row_stride;
    switch (job.src_dtype) {
      case DType::F32:
        row = static_cast<const float*>(job.src) + offset;
        break;
      case DType::F16:
        P::widen_f16(static_cast<const uint16_t*>(job.src) + offset, wide.data(), cols);
        row = wide.data();
        break;
      default:
        P::widen_bf16(static_cast<const uint16_t*>(job.src) + offset, wide.data(), cols);
        row = wide.data();
        break;
    }
    for (size_t b = 0; b < nblocks; ++b) {
      const float* x = row + b * job.block;
      float mn, mx;
      P::minmax(x, job.block, &mn, &mx);
      const BlockCodec c = ref::block_codec(job.scheme, job.bits, mn, mx, job.round_zero);
      P::quantize_codes(x, job.block, c, codes.data() + b * job.block);
      job.scales[r * nblocks + b] = c.scale;
      if (job.zeros) job.zeros[r * nblocks + b] = c.zero;
    }
    P::pack_codes(codes.data(), cols, job.bits, job.packed + r * job.packed_row_bytes);
    if (job.errors) measure_row<P>(job, r, row, codes.data(), w_hat.data());
  }
}

// ColumnQuantJob by its definition: each stored column gathered (widened) into a row,
// its blocks quantized as quantize_rows_body quantizes a row's, the codes packed, and with
// job.partials the row's w - w_hat added to the running partial sums element by element,
// as sq_err adds them. The scalar table's quantize_columns.
template <class P>
void quantize_columns_body(const ColumnQuantJob& job) {
  const size_t rows = job.rows, nblocks = rows / job.block;
  ScratchBuffer<float> x(rows), w_hat(job.partials ? rows : 0);
  ScratchBuffer<uint8_t> codes(rows);
  const auto* src = static_cast<const uint8_t*>(job.src);
  const size_t es = dtype_size(job.src_dtype);
  for (size_t c = 0; c < job.cols; ++c) {
    for (size_t k = 0; k < rows; ++k) {
      const uint8_t* e = src + (k * job.src_row_stride + c) * es;
      if (job.src_dtype == DType::F32) {
        std::memcpy(&x.data()[k], e, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, e, 2);
        if (job.src_dtype == DType::F16) P::widen_f16(&h, &x.data()[k], 1);
        else P::widen_bf16(&h, &x.data()[k], 1);
      }
    }
    for (size_t b = 0; b < nblocks; ++b) {
      const float* xb = x.data() + b * job.block;
      float mn, mx;
      P::minmax(xb, job.block, &mn, &mx);
      const BlockCodec cc = ref::block_codec(job.scheme, job.bits, mn, mx, job.round_zero);
      P::quantize_codes(xb, job.block, cc, codes.data() + b * job.block);
      job.scales[c * job.params_stride + b] = cc.scale;
      if (job.zeros) job.zeros[c * job.params_stride + b] = cc.zero;
      if (job.partials) P::dequantize_codes(codes.data() + b * job.block, job.block, cc, w_hat.data() + b * job.block);
    }
    P::pack_codes(codes.data(), rows, job.bits, job.packed + c * job.packed_row_bytes);
    if (!job.partials) continue;
    float* pp = job.partials;
    for (size_t k = 0; k < rows; ++k) {
      const float d = x.data()[k] - w_hat.data()[k];
      pp[column_partial(c, k % 16)] += d * d;
      pp[column_partial(c, 16 + k % 16)] += x.data()[k] * x.data()[k];
      float& m = pp[column_partial(c, 32)];
      const float ad = ref::abs_f(d);
      m = ad > m ? ad : m;  // a NaN difference is skipped
    }
  }
}

WQ_END_ISA_NAMESPACE
}  // namespace wq
