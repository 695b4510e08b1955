// The fused row-tile quantizer, one body for every ISA. P supplies the ISA's primitives
// as static functions (widen_f16, widen_bf16, minmax, quantize_codes, pack_codes); the
// per-block parameters come from ref::block_codec on every ISA, so they are the same bits
// by construction. A row is widened once into a buffer that stays in L1/L2, then each
// block is reduced, quantized and the whole row packed: every input byte is read from
// memory once and every output byte written once.
#pragma once

#include "kernels/isa_namespace.h"


#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/scratch_buffer.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE

// RowQuantJob::errors[r] by its definition: row r (as widened) against its codes (one per
// byte) dequantized with the parameters stored in job, through sq_err. w_hat: cols floats
// of scratch. The scalar table measures every row this way; the SIMD tables those whose
// blocks are not whole vectors.
template <class P>
void measure_row(const RowQuantJob& job, size_t r, const float* row, const uint8_t* codes, float* w_hat) {
  const size_t nblocks = job.cols / job.block;
  for (size_t b = 0; b < nblocks; ++b) {
    const BlockCodec c{job.scheme, job.bits, job.scales[r * nblocks + b], job.zeros ? job.zeros[r * nblocks + b] : 0.0f,
                       0.0f};
    P::dequantize_codes(codes + b * job.block, job.block, c, w_hat + b * job.block);
  }
  RowError& e = job.errors[r];
  P::sq_err(row, w_hat, job.cols, &e.err2, &e.ref2, &e.max_abs);
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

WQ_END_ISA_NAMESPACE
}  // namespace wq
