// The kernel table: every hot loop of wquant behind one struct of function pointers,
// filled once per ISA. The scalar table (kernels/*_scalar.cpp) is the reference: every
// other table must produce the same bytes for every input, tails, NaN, Inf and
// denormals included (tests/kernels_test.cpp checks this for each registered kernel).
// The slots and what a caller must guarantee: kernels/kernel_slots.inc.
//
// This header holds types and declarations only (no code), so it is shared by every
// ISA's files outside their per-ISA namespaces (kernels/isa_namespace.h).
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace wq {

// The instruction sets of kernels/isa_list.inc, in its order (scalar first).
enum class Isa : uint8_t {
#define WQ_ISA(id, ...) id,
#include "kernels/isa_list.inc"
#undef WQ_ISA
};
inline constexpr int kIsaCount = 0
#define WQ_ISA(...) +1
#include "kernels/isa_list.inc"
#undef WQ_ISA
    ;
// One ISA's facts from kernels/isa_list.inc.
struct IsaInfo {
  Isa isa;
  const char* name;      // "avx2": --isa, WQUANT_ISA, test and benchmark names
  const char* family;    // "any", "x86" or "arm": which builds contain it
  size_t lanes;          // float lanes of its vectors (tests size their tails by it)
  const char* flags;     // compile flags of its files
  const char* features;  // CPU features it needs at run time, space-separated
};
const IsaInfo& isa_info(Isa isa);
const char* isa_name(Isa isa);
// Accepts an ISA name of kernels/isa_list.inc (case-insensitive). False if unknown.
bool parse_isa(std::string_view text, Isa* out);
// "scalar, avx2, avx512, neon": for messages and --help.
std::string isa_names();

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2 };
// In the per-ISA namespace, as every function with a body here (kernels/isa_namespace.h).
WQ_BEGIN_ISA_NAMESPACE
inline constexpr size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
WQ_END_ISA_NAMESPACE
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

// sq_err's three results for one row (RowQuantJob::errors).
struct RowError {
  double err2, ref2;
  float max_abs;
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
  // Optional (null: not measured): errors[r] receives what sq_err gives for row r (as
  // widened) against its codes dequantized with the parameters just stored, measured
  // while the row is in registers or L1 instead of in a second pass over the tensor.
  RowError* errors;
};

// A band of a matrix stored transposed (ONNX MatMul's B [K, N], quantized as [N, K] with
// blocks along K): stored rows [0, rows) of stored columns [0, cols). Each stored column
// c is a quantized row, and the band is `rows` consecutive weights of it, cut into blocks
// of `block` stored rows, quantized as RowQuantJob quantizes a row's blocks (same
// parameters, codes and packing). The band is read row by row, as a file stores it, so no
// transposed copy of the matrix is needed.
struct ColumnQuantJob {
  const void* src;        // stored row k, column c at src + k * src_row_stride + c elements
  DType src_dtype;
  size_t src_row_stride;  // in elements
  size_t rows;            // a multiple of block
  size_t cols;
  size_t block;           // a multiple of 16
  Scheme scheme;
  int bits;
  bool round_zero;        // Affine only, as RowQuantJob
  uint8_t* packed;        // column c's rows*bits bits at packed + c * packed_row_bytes
  size_t packed_row_bytes;
  float* scales;          // column c's block b at scales[c * params_stride + b]
  float* zeros;           // the same layout; may be null for MnnSym
  size_t params_stride;
  // Optional (null: not measured): the running sums of sq_err for every column, kept
  // between bands, in groups of 16 columns: column c's err partial p at
  // partials[column_partial(c, p)], its ref partial p at column_partial(c, 16 + p), its
  // max |w - w_hat| at column_partial(c, 32); column_partials(cols) floats, started at +0.
  // Band element k is added to partial k % 16 as sq_err adds a row's element k: a column's
  // bands given in order leave sq_err's partial sums of the whole row, which
  // ref::column_error reduces to sq_err's results. (A group's 33 planes are contiguous, so
  // a band reads and writes them as one run of memory.) A partial that is NaN holds some
  // NaN, its payload unspecified (the order of a NaN sum's operands is the compiler's);
  // column_error returns sq_err's canonical NaN for it.
  float* partials;
};
inline constexpr size_t kColumnPartialPlanes = 33;
// static: internal linkage, so an ISA's object that calls it out of line (-O0, -Os) has its
// own copy instead of a weak one another ISA's code could share (kernels/isa_namespace.h).
static constexpr size_t column_partial(size_t c, size_t plane) {
  return c / 16 * (16 * kColumnPartialPlanes) + plane * 16 + c % 16;
}
static constexpr size_t column_partials(size_t cols) { return (cols + 15) / 16 * 16 * kColumnPartialPlanes; }

// HQQ's half-quadratic solver settings for one call (engine/quant_spec.h HqqOptions).
struct HqqParams {
  int bits;       // 2..8
  int max_steps;  // 0: the affine start as it is
  float p;        // lp-norm of the shrinkage, in (0, 1)
  float beta;     // initial penalty
  float kappa;    // penalty growth per step
};

// llama.cpp block types wquant writes, in kernels/ggml_types.inc's order (numbering is
// ours; GGUF ids and every other fact per type: wq::ggml_traits, kernels/ggml_types.h).
enum class GgmlBlock : uint8_t {
#define WQ_GGML_TYPE(id, ...) id,
#include "kernels/ggml_types.inc"
#undef WQ_GGML_TYPE
};
inline constexpr int kGgmlBlockCount = 0
#define WQ_GGML_TYPE(...) +1
#include "kernels/ggml_types.inc"
#undef WQ_GGML_TYPE
    ;

// One function pointer per slot of kernels/kernel_slots.inc (the registry that also
// generates every ISA's table, the tests and the benchmarks; it documents each kernel).
struct Kernels {
  Isa isa;
#define WQ_KERNEL(name, ret, params) ret(*name) params;
#define WQ_GGML_KERNEL(name, ret, params) ret(*name[kGgmlBlockCount]) params;
#include "kernels/kernel_slots.inc"
#undef WQ_KERNEL
#undef WQ_GGML_KERNEL
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
