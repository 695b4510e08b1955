// wquant's public C++ API: choose the ISA, quantize one tensor, open a model and read its
// tensors, run a whole conversion. Link wquant::wquant (find_package(wquant) or
// add_subdirectory) or use pkg-config's `wquant`. Every function throws wquant::Error
// (a std::runtime_error whose what() is the one-line message the wquant program prints)
// on bad input; nothing here prints.
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
  int threads = 0;       // 0: every core
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

// Quantizes a row-major [rows, cols] f32 matrix. Throws Error naming "tensor" for a bad
// option, a NaN/Inf weight, or a block that does not divide cols.
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
  // Opens safetensors (file or sharded index .json), GGUF or .wq, by content.
  static Model open(const std::string& path);
  ~Model();
  Model(Model&&) noexcept;
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
  std::string gguf_type;    // GGUF output: "Q4_0", ...; "" = from bits (as the program)
  bool overwrite = false;   // replace an existing OUT (never an input)
};

struct ConvertResult {
  size_t tensors = 0, quantized = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
  double seconds = 0;
};

// Streams IN to OUT (temporary file, renamed when complete), as `wquant quantize` does
// with the same settings.
ConvertResult convert(const std::string& in, const std::string& out, const ConvertOptions& opts);

}  // namespace wquant
