#include "engine/ggml_quantize.h"

#include <cstring>

#include "engine/error.h"
#include "engine/quantize.h"
#include "engine/rows.h"
#include "engine/scheduler.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_types.h"
#include "kernels/reference.h"

namespace wq {


namespace {

// HQQ-solved 32-weight blocks as Q4_1 / Q5_1: w_hat = q * d + m with d = s, m = -z * s.
void hqq_to_ggml(const QuantizedTensor& q, GgmlBlock t, uint8_t* out, const Kernels& k) {
  std::vector<uint8_t> codes(q.cols);
  const size_t nb = q.blocks_per_row();
  const size_t bb = ggml_traits(t).bytes;
  for (size_t r = 0; r < q.rows; ++r) {
    k.unpack_codes(q.packed.data() + r * q.packed_row_bytes, q.cols, q.spec.bits, codes.data());
    for (size_t b = 0; b < nb; ++b) {
      const float s = q.scales[r * nb + b], z = q.zeros[r * nb + b];
      const uint16_t d = ref::f32_to_f16(s), m = ref::f32_to_f16(-z * s);
      const uint8_t* c = codes.data() + b * 32;
      uint8_t* dst = out + (r * nb + b) * bb;
      if (t == GgmlBlock::Q4_1) {
        BlockQ4_1 y{};
        y.d = d;
        y.m = m;
        for (int j = 0; j < 16; ++j) y.qs[j] = uint8_t(c[j] | (c[j + 16] << 4));
        std::memcpy(dst, &y, sizeof y);
      } else {
        BlockQ5_1 y{};
        y.d = d;
        y.m = m;
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
          y.qs[j] = uint8_t((c[j] & 0x0f) | ((c[j + 16] & 0x0f) << 4));
          qh |= uint32_t(c[j] >> 4) << j;
          qh |= uint32_t(c[j + 16] >> 4) << (j + 16);
        }
        std::memcpy(y.qh, &qh, 4);
        std::memcpy(dst, &y, sizeof y);
      }
    }
  }
}

}  // namespace

void quantize_ggml_tensor(const TensorView& w, GgmlBlock t, const QuantSpec& spec, std::vector<uint8_t>& out,
                          const Kernels* kp) {
  const Kernels& k = kp ? *kp : kernels();
  const size_t rows = w.rows(), cols = w.cols();
  if (cols % ggml_traits(t).weights) {
    throw Error(w.name + ": rows of " + std::to_string(cols) + " are not a multiple of " + std::to_string(ggml_traits(t).weights) + ", required by " +
                ggml_block_name(t));
  }
  const size_t row_bytes = ggml_row_bytes(t, cols);
  out.resize(rows * row_bytes);
  if (spec.hqq) {
    if (!ggml_traits(t).has_min || ggml_traits(t).weights != 32) {
      throw Error(w.name + ": HQQ needs a block type with a zero point (Q4_1 or Q5_1), not " +
                  std::string(ggml_block_name(t)), ErrorKind::Usage);
    }
    QuantSpec s = spec;
    s.bits = ggml_traits(t).bits;
    s.block = ggml_traits(t).weights;
    s.asym = true;
    s.fp16 = false;
    const QuantizedTensor q = quantize_tensor(w, s, ggml_traits(t).weights, &k);
    hqq_to_ggml(q, t, out.data(), k);
    return;
  }
  check_finite(w, &k);
  const size_t tile = tile_rows_for(rows, cols * dtype_size(w.dtype));
  parallel_row_tiles(rows, tile, [&](size_t r0, size_t r1) {
    std::vector<float> buf;
    for (size_t r = r0; r < r1; ++r) {
      k.quantize_ggml[int(t)](row_as_f32(w, r, cols, buf, k), out.data() + r * row_bytes, cols);
    }
  });
}

ErrorMetrics ggml_tensor_error(const TensorView& w, GgmlBlock t, const uint8_t* blocks, const Kernels* kp) {
  const Kernels& k = kp ? *kp : kernels();
  const size_t rows = w.rows(), cols = w.cols();
  const size_t row_bytes = ggml_row_bytes(t, cols);
  std::vector<ErrorSums> sums(rows);
  parallel_row_tiles(rows, tile_rows_for(rows, cols * 8), [&](size_t r0, size_t r1) {
    std::vector<float> buf, wh(cols);
    for (size_t r = r0; r < r1; ++r) {
      k.dequantize_ggml[int(t)](blocks + r * row_bytes, wh.data(), cols);
      sums[r] = error_sums(row_as_f32(w, r, cols, buf, k), wh.data(), cols, k);
    }
  });
  return combine_error_sums(sums);
}

}  // namespace wq
