// The kernel table: every hot loop of wquant behind one struct of function pointers,
// filled once per ISA. The scalar table (kernels/scalar_*.cpp) is the reference: every
// other table must produce the same bytes for every input, tails, NaN, Inf and
// denormals included (tests/kernels_test.cpp checks this for each registered kernel).
//
// What a caller must guarantee, for every kernel unless it says otherwise:
//   - pointers are valid for the stated number of elements; no alignment is required;
//   - input and output ranges do not overlap;
//   - n may be 0 (the kernel then writes nothing).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace wq {

enum class Isa : uint8_t { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };
inline constexpr int kIsaCount = 4;
const char* isa_name(Isa isa);
// Accepts "scalar", "avx2", "avx512", "neon" (case-insensitive). False if unknown.
bool parse_isa(std::string_view text, Isa* out);

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2 };
inline constexpr size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
const char* dtype_name(DType t);

// How a block's scale and zero are computed; DESIGN.md "Quantization math" is the spec.
//   MnnSym : s = absmax / (2^(b-1)-1); code = clamp(roundf(w / s)) + 2^(b-1);
//            s <= 1e-6 gives code 2^(b-1). Stored: scale.      w_hat = (code - 2^(b-1)) * s
//   MnnAsym: s = (max-min) / (2^b-1); code = clamp(roundf((w-min)/s) - 2^(b-1)) + 2^(b-1);
//            s <= 1e-6 gives code 0. Stored: scale, zero=min. w_hat = code * s + min
//   Affine : HQQ's start (and plain RTN): inv = fl(fl(1/d)*qmax) (1 if d <= 1e-4, then
//            min(inv, 2e4)), z = fl(-min*inv), code = clip(rint(fl(w*inv) + z), 0, qmax).
//            Stored: scale = fl(1/inv), zero = z.             w_hat = (code - z) * s
enum class Scheme : uint8_t { MnnSym = 0, MnnAsym = 1, Affine = 2 };

// The parameters of one block, as the quantize/dequantize kernels consume them.
struct BlockCodec {
  Scheme scheme;
  int bits;         // 2..8
  float scale;      // s
  float zero;       // MnnAsym: min; Affine: z; MnnSym: unused (0)
  float inv_scale;  // Affine only: the multiplier used to quantize (HQQ's inv_scale)
};

// One tile of rows of an [rows, cols] weight, quantized block-wise with a fixed scheme.
// Codes are stored per row as a little-endian bitstream: code j of a row occupies bits
// [j*bits, (j+1)*bits) counted from bit 0 of the row's first byte; each row starts on a
// byte boundary (packed_row_bytes = ceil(cols * bits / 8)).
struct RowQuantJob {
  const void* src;       // row r starts at src + r * src_row_stride elements
  DType src_dtype;
  size_t src_row_stride; // in elements
  size_t cols;
  size_t block;          // divides cols; == cols for channel-wise
  Scheme scheme;
  int bits;
  bool round_zero;       // Affine only: zero = rint(zero) (HQQ's round_zero option)
  uint8_t* packed;       // row r at packed + r * packed_row_bytes
  size_t packed_row_bytes;
  float* scales;         // [rows][cols / block]
  float* zeros;          // [rows][cols / block]; may be null for MnnSym
};

// HQQ's half-quadratic solver settings for one call (engine/quant_spec.h HqqOptions).
struct HqqParams {
  int bits;       // 2..8
  int max_steps;  // 0: the affine start as it is
  float p;        // lp-norm of the shrinkage, in (0, 1)
  float beta;     // initial penalty
  float kappa;    // penalty growth per step
};

// llama.cpp block types wquant writes (numbering is ours; GGUF ids live in io/).
enum class GgmlBlock : uint8_t { Q8_0 = 0, Q4_0 = 1, Q4_1 = 2, Q5_0 = 3, Q5_1 = 4 };
inline constexpr int kGgmlBlockCount = 5;

struct Kernels {
  Isa isa;

  // --- conversions -------------------------------------------------------------
  // Exact widening (f16 denormals kept; NaN keeps sign and payload, quiet bit set).
  void (*widen_f16)(const uint16_t* src, float* dst, size_t n);
  void (*widen_bf16)(const uint16_t* src, float* dst, size_t n);
  // Round to nearest even; overflow to Inf; NaN -> sign | 0x7E00 (canonical quiet NaN).
  void (*narrow_f16)(const float* src, uint16_t* dst, size_t n);

  // --- block statistics ----------------------------------------------------------
  // NaN elements are ignored. n == 0 gives mn = +Inf, mx = -Inf. A zero minimum or
  // maximum is always returned as +0.0 so the result does not depend on element order.
  void (*minmax)(const float* x, size_t n, float* mn, float* mx);
  // max |x|, NaN ignored; 0 for n == 0.
  float (*absmax)(const float* x, size_t n);

  // Index of the first NaN or +-Inf among n elements of src (read as dtype, from the
  // raw bits), or n if all are finite.
  size_t (*find_nonfinite)(const void* src, DType dtype, size_t n);

  // --- codes -----------------------------------------------------------------------
  // codes[i] in [0, 2^bits - 1] for each scheme (see Scheme). NaN inputs give the
  // lowest code of the clamp range (code 0 for MnnAsym/Affine, 0 for MnnSym as well).
  void (*quantize_codes)(const float* x, size_t n, const BlockCodec& c, uint8_t* codes);
  void (*dequantize_codes)(const uint8_t* codes, size_t n, const BlockCodec& c, float* out);
  // Bitstream layout as RowQuantJob; writes ceil(n*bits/8) bytes, unused high bits of
  // the last byte zero. Codes must be < 2^bits.
  void (*pack_codes)(const uint8_t* codes, size_t n, int bits, uint8_t* out);
  void (*unpack_codes)(const uint8_t* in, size_t n, int bits, uint8_t* codes);

  // sum (a-b)^2 and sum a^2 over n elements, in float with 16 lane-wise partial sums
  // (element i goes to partial i % 16) reduced in a fixed tree order, then widened;
  // a NaN sum is returned as the canonical quiet NaN (ref::sum_result).
  void (*sq_err)(const float* a, const float* b, size_t n, double* err2, double* ref2);

  // --- fused tile kernels --------------------------------------------------------------
  // Quantizes rows [row_begin, row_end) of job: widen, block stats, params, codes, pack.
  void (*quantize_rows)(const RowQuantJob& job, size_t row_begin, size_t row_end);

  // --- HQQ (kernels/hqq_reference.h is the spec) ----------------------------------------
  // Solves nblocks consecutive blocks of `block` weights each, every block on its own:
  // each step quantizes with the current zero, measures err = mean |w - w_r|, stops when
  // err no longer falls, else updates the zero from the lp-shrunk residual; the zero of
  // the lowest err is kept. zero[b] holds the start on entry, the kept zero on return;
  // codes (nblocks*block) are quantized with it; steps[b] counts the steps that improved.
  void (*hqq_solve_blocks)(const float* w, size_t nblocks, size_t block, const HqqParams& hp,
                           const float* inv_scale, float* zero, uint8_t* codes, int* steps);
  // One step of the reference's lockstep rule for nblocks blocks: err_sum[b] = sum over
  // the block of |w - w_r| (16 partial sums, fixed order) measured with zero_in[b], and
  // zero_out[b] the updated zero. `beta` is this step's penalty.
  void (*hqq_step_blocks)(const float* w, size_t nblocks, size_t block, const HqqParams& hp, float beta,
                          const float* inv_scale, const float* zero_in, float* zero_out, float* err_sum);

  // --- llama.cpp blocks (quantize_row_*_ref semantics, byte for byte) ------------------
  // n is a multiple of 32; y receives n/32 blocks.
  void (*quantize_ggml[kGgmlBlockCount])(const float* x, void* y, size_t n);
  void (*dequantize_ggml[kGgmlBlockCount])(const void* y, float* x, size_t n);
};

// The table the process uses: chosen once, on first call, from the CPU features
// (kernels/cpu_features.cpp) or from WQUANT_ISA when set. Throws std::runtime_error
// naming the problem if WQUANT_ISA is unknown or names an ISA this build or CPU lacks.
const Kernels& kernels();
// Forces the process-wide choice (the --isa flag). Throws if unavailable.
void select_isa(Isa isa);
// The table for one ISA, or nullptr when the build lacks it or the CPU cannot run it.
const Kernels* kernels_for(Isa isa);
// True when this CPU can run isa and this binary contains it.
bool isa_available(Isa isa);
// The best ISA this CPU and build support.
Isa best_isa();

}  // namespace wq
