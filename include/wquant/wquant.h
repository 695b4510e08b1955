// wquant's public C++ API: choose the ISA, quantize one tensor, open a model and read its
// tensors, run a whole conversion. Link wquant::wquant (find_package(wquant) or
// add_subdirectory) or use pkg-config's `wquant`. Every function throws wquant::Error
// (a std::runtime_error whose what() is the one-line message the wquant program prints)
// on bad input (std::bad_alloc, where memory runs out, passes as it is); nothing here
// prints. Calls from several threads at once are safe and do not limit each other's
// threads (use_isa switches the table for every call that starts after it).
//
// The bytes produced never depend on the ISA or the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace wquant {

// The library's version, "MAJOR.MINOR.PATCH".
const char* version();

class Error : public std::runtime_error {
 public:
  enum class Kind { Usage = 2, Input = 3, Output = 4, Internal = 1 };
  Error(const std::string& what, Kind kind) : std::runtime_error(what), kind_(kind) {}
  // The wquant program's exit code for this error (README "Exit codes").
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// ---- instruction set ---------------------------------------------------------------
// Names of the kernel tables this build has and this CPU runs, plainest first
// ("scalar", "avx2", "avx512" / "neon").
std::vector<std::string> available_isas();
// Forces the process-wide table (as --isa / WQUANT_ISA do). Throws Error (Usage) for an
// unknown or unavailable name.
void use_isa(const std::string& name);
// The table in use (chosen on first use: WQUANT_ISA, else the best available).
std::string active_isa();

// ---- one tensor --------------------------------------------------------------------
struct QuantOptions {
  int bits = 4;          // 2..8
  int64_t block = 0;     // weights per block along a row; 0 = channel-wise
  bool asym = false;     // MNN asymmetric (min + scale); default MNN symmetric
  bool hqq = false;      // HQQ (implies asymmetric, affine zero points)
  bool fp16 = false;     // scales and zeros rounded to f16 as stored
  int hqq_steps = 20;    // HQQ solver steps at most
  int threads = 0;       // 0: every CPU this process may run on; more are capped at those
};

struct QuantizedTensor {
  size_t rows = 0, cols = 0;
  int bits = 0;
  size_t block = 0;                // effective weights per block (cols when channel-wise)
  std::string scheme;              // "mnn_sym", "mnn_asym" or "affine" (README "Output layouts")
  size_t packed_row_bytes = 0;     // ceil(cols * bits / 8)
  std::vector<uint8_t> packed;     // rows * packed_row_bytes, little-endian bitstream per row
  std::vector<float> scales;       // rows * (cols / block)
  std::vector<float> zeros;        // same; empty for mnn_sym
};

// Quantizes a row-major [rows, cols] f32 matrix (0 rows: an empty result). Throws Error
// naming "tensor": (Usage) for a bad option, cols 0, or a block that does not divide cols;
// (Input) for a NaN/Inf weight.
QuantizedTensor quantize(const float* weights, size_t rows, size_t cols, const QuantOptions& opts);
// rows * cols floats, exactly what a loader reconstructs from the stored values.
std::vector<float> dequantize(const QuantizedTensor& q);

// ---- models ------------------------------------------------------------------------
struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // outermost first
  std::string type;            // as the file names it: "F32", "BF16", "Q4_0", "wq4", ...
};

class Model {
 public:
  // Opens safetensors (file or sharded index .json), GGUF or .wq, by content (ONNX only in
  // a program that links wquant's ONNX support, as the wquant program does).
  static Model open(const std::string& path);
  ~Model();
  Model(Model&&) noexcept;  // (a moved-from Model may only be assigned to or destroyed)
  Model& operator=(Model&&) noexcept;

  const char* format() const;  // "safetensors", "gguf", "wq"
  const std::vector<TensorInfo>& tensors() const;
  // Any tensor as f32 (floats widened, quantized tensors dequantized as a loader would).
  std::vector<float> read_f32(const std::string& name);

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- a whole conversion ------------------------------------------------------------
struct ConvertOptions {
  QuantOptions quant;       // the scheme for every tensor wquant quantizes by default
  std::string format;       // "wq", "safetensors", "gguf"; "" = from OUT's extension
  // GGUF output (needs a GGUF input, whose keys and vocabulary are copied): what
  // `wquant quantize --type` takes, llama-quantize's file types by its names,
  // case-insensitive: the mixes Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M,
  // Q5_K_S, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16, F32,
  // COPY (every tensor copied as it is), its aliases Q3_K, Q4_K, Q5_K (the _M mixes) and
  // its numbers ("15" = Q4_K_M, "0" = F32). Each tensor
  // gets the type llama-quantize gives it in that mix (output and token embedding,
  // attn_v / ffn_down by layer, GQA and MoE rules, fallbacks where a row fits no block),
  // so the file equals llama-quantize's (and `wquant quantize`'s) for the same input and
  // options. "" = a legacy type from quant.bits: 4 -> Q4_0, 5 -> Q5_0, 8 -> Q8_0, with
  // quant.asym or quant.hqq Q4_1 / Q5_1. quant.bits and quant.block are not read when
  // gguf_type is set; quant.asym / quant.hqq are checked as --asym / --hqq are with
  // --type: refused with a mix of several types (Q4_K_M, F16, ...) and with a block type
  // that stores no minimum (Q4_0, Q8_0, ...).
  std::string gguf_type;
  bool overwrite = false;   // replace an existing OUT (never a file the input is read from)
  // GGUF output, llama-quantize's options (each refused for other outputs):
  std::string imatrix;                       // --imatrix: llama-imatrix's .dat or GGUF imatrix file
  std::vector<std::string> include_weights;  // --include-weights: only imatrix entries whose name contains one
  std::vector<std::string> exclude_weights;  // --exclude-weights: imatrix entries dropped (not with include)
  bool pure = false;                         // --pure: every quantized tensor the mix's base type
  bool leave_output = false;                 // --leave-output-tensor: output.weight kept as it is
  std::string output_tensor_type;            // --output-tensor-type: "Q8_0", "F16", ...; "" = the mix's
  std::string token_embedding_type;          // --token-embedding-type; "" = the mix's
  bool allow_requantize = false;             // --allow-requantize: blocks dequantized and quantized again
  // --tensor-type, in order: "PATTERN=TYPE" (e.g. "attn_v=q8_0"; PATTERN a regular
  // expression searched for in the lower-cased tensor name): the first rule whose pattern
  // is found sets that tensor's type, as later llama-quantize releases do.
  std::vector<std::string> tensor_types;
};

struct ConvertResult {
  size_t tensors = 0, quantized = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
  double seconds = 0;
};

// Streams IN to OUT (temporary file, renamed when complete), as `wquant quantize` does
// with the same settings: the same bytes. Throws Error (Usage) for an unknown gguf_type or
// type name, a GGUF option with another output, include and exclude together, a filter
// without an imatrix, Q2_K_S without an importance matrix; (Input) for a bad imatrix file
// or one whose entry does not fit its tensor, naming the file or tensor; (Output) for an
// OUT that exists without overwrite, is a directory or another file than a regular one, is
// in a missing or read-only directory, or is a file the input is read from (IN, a shard
// of a sharded or split model, ONNX external data), by any path, whatever overwrite says.
ConvertResult convert(const std::string& in, const std::string& out, const ConvertOptions& opts);

}  // namespace wquant
