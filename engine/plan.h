// The plan: which tensor of a model gets which treatment. Built from the source's
// tensor list, the default spec and the user's rules (--params), before any data is
// read, so every writer knows every output size up front and can stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/ggml_type_id.h"
#include "engine/quant_spec.h"
#include "kernels/kernels.h"

namespace wq {

// How a tensor is stored in its source file, as far as planning needs to know.
enum class StoredKind : uint8_t {
  Float,      // f32 / f16 / bf16: a candidate for quantization
  Quantized,  // wquant codes + scales (+ zeros): .wq or wquant safetensors output
  Ggml,       // llama.cpp blocks (Q4_0, ...)
  Other,      // integers, f64, anything else: copied as it is
};

// One tensor of a source model, without its data.
struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // outermost first (GGUF readers reverse ggml's ne[])
  StoredKind kind = StoredKind::Float;
  DType dtype = DType::F32;    // valid when kind == Float
  std::string type_name;       // as the file names it: "F32", "BF16", "Q4_0", "I64", "wq4"...
  uint64_t nbytes = 0;         // bytes of data in the file
  // ONNX MatMul B (and Gemm B without transB): the file stores [K, N]; listed here (shape)
  // as its transpose [N, K], so that rows are output channels and blocks run along K, as
  // MatMulNBits stores them; inspect says so, and dequantize writes them so (and says so).
  bool listed_transposed = false;
};

enum class TensorAction : uint8_t {
  Quantize,   // wquant codes + scales (+ zeros), spec and block below
  Ggml,       // llama.cpp blocks of type ggml (Q4_1/Q5_1 with spec.hqq: HQQ zero points)
  KeepFloat,  // stored as float, in out_dtype
  CopyRaw,    // bytes copied unchanged (non-float, or already quantized)
};

struct TensorPlan {
  size_t source_index = 0;  // index in the reader's tensor list
  std::string name;
  std::vector<int64_t> shape;
  TensorAction action = TensorAction::KeepFloat;
  QuantSpec spec;                    // Quantize, Ggml (bits/hqq)
  size_t block = 0;                  // Quantize: effective block (== cols when channel-wise)
  GgmlBlock ggml = GgmlBlock::Q4_0;  // Ggml
  DType out_dtype = DType::F32;      // KeepFloat
  std::string note;                  // a fallback or a kept-float reason, said once
  // Ggml: the importance matrix llama-quantize would use here (ggml's ne0 values per
  // matrix, one matrix per expert of a 3-D tensor); null without one.
  std::shared_ptr<const std::vector<float>> imatrix;
  // Ggml / KeepFloat: the source holds llama.cpp blocks (the type in TensorInfo::type_name),
  // dequantized to f32 first (--allow-requantize).
  bool requantize = false;
};

// A user rule: tensors whose name matches `pattern` (an exact name or a glob with * ?
// and [...]) get the fields that are set. Later rules override earlier ones.
struct TensorRule {
  std::string pattern;
  std::optional<int> bits;
  std::optional<int64_t> block;  // 0 or -1: channel-wise
  std::optional<bool> asym;
  std::optional<bool> hqq;
  std::optional<bool> skip;      // keep the tensor as float
  std::optional<GgmlBlock> ggml; // a legacy block type the rule names (checked against bits, HQQ)
  bool mnn_block = false;        // `block` follows MNNConvert's rule (an MNN-form params file)
  std::optional<GgmlType> gguf_type = std::nullopt;  // GGUF output: this tensor's type, any the output can hold
  std::string origin = {};  // where the rule was written, for messages ("p.json: rules[2] \"blk.*\""); "" for flags
};

enum class OutputFormat : uint8_t { Wq, Safetensors, Gguf, Onnx };  // Onnx: io/onnx_hooks.h
// "wq", "safetensors", "gguf", "onnx": as --format takes them and messages say them.
const char* output_format_name(OutputFormat f);

struct MixOptions;  // engine/gguf_mix.h
struct MixModel;

struct PlanOptions {
  QuantSpec defaults;
  std::vector<TensorRule> rules;
  OutputFormat format = OutputFormat::Wq;
  GgmlBlock ggml = GgmlBlock::Q4_0;  // GGUF output default type
  // Kept float tensors stored as f16 (f32 ones only); unset: as defaults.fp16 says (--fp16).
  // Set apart when scales are f16 for another reason (MNN's --weightQuantScaleBit 16).
  std::optional<bool> keep_f16;
  // GGUF output: llama-quantize's mix and options (engine/gguf_mix.h) and the model's
  // hyper-parameters (io/gguf_hparams.h). Unset: the mix named like `ggml` (Q4_0, ...)
  // and hyper-parameters inferred from the tensor names and shapes.
  const MixOptions* gguf_mix = nullptr;
  const MixModel* gguf_model = nullptr;
  // GGUF output: llama-quantize's importance matrix by tensor name (io/imatrix.h), after
  // --include-weights / --exclude-weights; null or empty without one.
  const std::map<std::string, std::vector<float>>* imatrix = nullptr;
  // GGUF output: tensors already in llama.cpp blocks that the mix gives another type are
  // dequantized and quantized again (llama-quantize's --allow-requantize); else refused.
  bool allow_requantize = false;
  // GGUF output: the order llama-quantize visits the tensors in (indices into `tensors`,
  // each once), which is also the plan's order and, through the position counters of the
  // mixes (the i-th attn_v / ffn_down), decides types. Unset: llama_tensor_order (by layer,
  // then name); --keep-split sets the files' order (io/gguf_reader.h gguf_file_order).
  const std::vector<size_t>* gguf_order = nullptr;
};

// Glob match: * any run, ? one char, [abc] / [a-z] / [!a] a class. Whole-name match; a
// pattern equal to the name matches too, whatever glob characters it holds.
bool glob_match(const std::string& pattern, const std::string& name);

// Whether rule r names the tensor `name` itself (no glob over many) and asks to quantize
// it ("skip": false, or a field set; a float "type" keeps it float): a plan that cannot
// says so in a note, naming r.origin. Updates `asked_by` (the origin, "" after a skip).
void note_rule_asking_to_quantize(const TensorRule& r, const std::string& name, std::string& asked_by);

// The default choice of what to quantize: float tensors of 2 or more dimensions (linear,
// embedding and conv weights). Kept: 1-D tensors, norms, biases, and tensors with fewer
// than 2 rows or columns.
bool is_quantizable_weight(const TensorInfo& t);

// Builds the plan. Every tensor of `tensors` appears once, in file order (GGUF output: in
// llama-quantize's order, engine/gguf_mix.h llama_tensor_order, or opts.gguf_order). Throws Error
// for a bad spec in the defaults or a rule (naming the rule's pattern). Notes (fallbacks
// such as a block that does not divide a row, or a GGUF tensor kept in a wider type)
// are in each entry's `note`.
std::vector<TensorPlan> make_plan(const std::vector<TensorInfo>& tensors, const PlanOptions& opts);

// make_plan for GGUF output (engine/plan_gguf.cpp): per tensor the type llama-quantize's
// mix chooses, then the user's rules. Throws Error for a type this build cannot write
// and for an already-quantized tensor the mix would quantize again (llama-quantize
// refuses it without --allow-requantize).
std::vector<TensorPlan> make_gguf_plan(const std::vector<TensorInfo>& tensors, const PlanOptions& opts);

// What a plan entry does, in a few words: "4-bit asym block 64 hqq", "4-bit sym
// channel-wise", "Q4_0", "Q4_1 (hqq)", "f16", "I64 (copied)". Every report (the
// pipeline's, the CLI's plan table) uses this one text; callers add their own notes.
std::string describe_plan_entry(const TensorPlan& p, const TensorInfo& info);

}  // namespace wq
