// llama-quantize's type mixes (Q4_K_M and the rest): which ggml type each tensor of a
// model gets, tensor by tensor, as llama_tensor_get_type and llama_model_quantize_impl
// (llama.cpp src/llama-quant.cpp, commit c392e5094) choose it, in the order they visit
// the tensors. Names only: no data is read here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/ggml_type_id.h"
#include "engine/plan.h"

namespace wq {

// "Q4_K", "F16": the name llama.cpp prints (upper case, as GGUF readers show it).
const char* ggml_type_name(GgmlType t);
// Weights per block (1 for F32 / F16 / BF16).
int64_t ggml_type_block(GgmlType t);
// Whether t's rows (ne0) are no multiple of `type`'s block, and the words that say so:
// "<name>: rows of N are not a multiple of B, required by TYPE" (every such note and error).
bool rows_misfit(const TensorInfo& t, GgmlType type);
std::string rows_misfit_note(const TensorInfo& t, GgmlType type);

// By name, case-insensitive, as llama-quantize's --output-tensor-type reads it.
std::optional<GgmlType> ggml_type_named(std::string_view name);
// The float types are stored as they are, not in blocks.
inline bool ggml_type_is_float(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

// A llama-quantize file type ("mix").
struct GgufMix {
  const char* name;      // "Q4_K_M"
  uint32_t llama_ftype;  // general.file_type it writes (llama.h LLAMA_FTYPE_*); COPY: see gguf_copy_file_type
  GgmlType base;         // default_type in llama_model_quantize_impl
  // COPY (llama-quantize's only_copy): every tensor is copied as it is, whatever the
  // options ask, and general.file_type is the input's.
  bool only_copy = false;
};

// The mixes wquant writes, in llama-quantize's list order (F32 before COPY, whose file
// type number 0 is F32's).
const std::vector<GgufMix>& gguf_mixes();
// By name, case-insensitive, with llama-quantize's aliases (Q3_K = Q3_K_M, Q4_K = Q4_K_M,
// Q5_K = Q5_K_M) and its numeric form (the file type: "15" = Q4_K_M). nullopt otherwise.
std::optional<GgufMix> gguf_mix_named(std::string_view name);
// Those aliases, {alias, mix name}, in llama-quantize's QUANT_OPTIONS spelling.
struct GgufMixAlias {
  const char* alias;
  const char* mix;
};
const std::vector<GgufMixAlias>& gguf_mix_aliases();

// The hyper-parameters llama_tensor_get_type reads (llama_hparams, model.type, arch).
struct MixModel {
  std::string arch;          // general.architecture
  int n_layer = 0;           // {arch}.block_count
  uint32_t n_head = 0;       // {arch}.attention.head_count, layer 0
  uint32_t n_head_kv = 0;    // {arch}.attention.head_count_kv, layer 0 (= n_head when absent)
  int n_attn_layer = 0;      // layers whose head_count_kv is not 0
  uint32_t n_expert = 0;     // {arch}.expert_count (0 when absent)
  bool is_70b = false;       // llama.cpp's LLM_TYPE_70B (80 layers of llama with GQA, deci, qwen2, olmo)
  uint32_t n_gqa() const { return n_head_kv == 0 ? 0 : n_head / n_head_kv; }
};

struct MixOptions {
  GgufMix mix{};
  bool pure = false;                      // --pure: every tensor the base type
  bool leave_output = false;              // --leave-output-tensor
  std::optional<GgmlType> output_type;    // --output-tensor-type
  std::optional<GgmlType> token_embd_type;// --token-embedding-type
  bool has_imatrix = false;               // an importance matrix is given (its rules differ)
  // --tensor-type PATTERN=TYPE, in order (later llama.cpp): after the mix's choice, the
  // first pattern found anywhere in the name (ECMAScript regex search) whose type differs
  // from that choice replaces it. Not with --pure nor for the F16/BF16 mixes.
  std::vector<std::pair<std::string, GgmlType>> tensor_types;
};

// What llama-quantize does with one tensor.
struct MixChoice {
  bool quantize = false;  // false: the tensor is copied in its source type
  GgmlType type = GgmlType::F32;
  bool fallback = false;  // the row fits no block of the chosen type: llama's fallback type
  bool unsupported = false;  // llama-quantize aborts here ("Unsupported tensor size encountered")
  // --pure's base type, whose blocks do not fit the rows: llama-quantize fails on the
  // model, and the plan refuses it unless the user's rules choose otherwise for it.
  bool pure_misfit = false;
  std::string note;       // said once: the fallback or the abort
};

// The hyper-parameters as far as tensor names and shapes tell them, for a caller without
// the model's metadata: layers from "blk.N.", experts from ffn_gate_inp's rows, the
// attention layer count that makes the check pass; no head counts (n_gqa() is 0).
MixModel mix_model_from_names(const std::vector<TensorInfo>& tensors);

// llama-quantize's tensor order: llama_model_loader's weights_map, sorted by layer number
// ("blk.N.", -1 for the rest) then by name. Returns indices into `tensors`.
std::vector<size_t> llama_tensor_order(const std::vector<TensorInfo>& tensors);

// Whether llama-quantize quantizes this tensor at all (names ending "weight", 2 or more
// dimensions, not norms, gating inputs, position tables and the other exceptions).
bool llama_quantizes(const TensorInfo& t, bool leave_output);

// The choice for every tensor, `tensors` in the order llama-quantize visits them
// (llama_tensor_order; with --keep-split the files' order, io/gguf_reader.h
// gguf_file_order). Throws Error for a model whose attention tensors do not match its
// layer count (llama-quantize asserts), an MoE tensor name without a layer, or a
// --tensor-type pattern that is not a regex.
std::vector<MixChoice> choose_mix_types(const std::vector<TensorInfo>& tensors, const MixModel& model,
                                        const MixOptions& opts);

}  // namespace wq
