// Quantization settings as the user states them, field by field, before defaults are
// filled in. The command line and a params file's "defaults" each give one; a field the
// command line sets wins over the file's, which wins over the built-in default. Keeping
// "not said" apart from "said the default value" is what makes that order possible.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "engine/quant_spec.h"
#include "kernels/kernels.h"

namespace wq::cli {

struct SpecSettings {
  std::optional<int> bits;        // 0 keeps every tensor float (MNNConvert's --weightQuantBits 0)
  std::optional<int64_t> block;   // -1 (or 0 from MNN files): channel-wise
  std::optional<bool> asym;
  std::optional<bool> hqq;
  std::optional<bool> fp16;
  std::optional<GgmlBlock> ggml;  // GGUF output type, when a legacy block type is named
  std::optional<std::string> mix; // GGUF output: the llama-quantize mix named ("Q4_K_M", "Q4_0")
  std::optional<int> hqq_steps;
  std::optional<float> hqq_p, hqq_beta, hqq_kappa;
  std::optional<bool> hqq_round_zero;
  std::optional<HqqStop> hqq_stop;
  bool mnn_block = false;         // `block` follows MNNConvert's rule (--weightQuantBlock)
  std::optional<int> scale_bits;  // MNNConvert's --weightQuantScaleBit: 32 (f32) or 16 (f16, truncated)
  bool mnn_form = false;          // MNNConvert's spellings were used: flush |w| < FLT_MIN to 0

  // Fields set here win; unset ones come from `fallback`.
  SpecSettings or_else(const SpecSettings& fallback) const;
};

// The settings a run uses, every field decided.
struct EffectiveSpec {
  QuantSpec spec;          // valid for validate_spec (bits stays 2..8 even when keep_float)
  bool keep_float = false; // bits 0: no tensor is quantized
  bool asym_implied = false;  // hqq turned asym on without the user asking: say so once
  std::optional<GgmlBlock> ggml;  // as set; GGUF output picks a default from bits when unset
  bool kept_f16 = false;     // float tensors kept as f16 (--fp16; not --weightQuantScaleBit 16)
};

// Fills unset fields with the built-in defaults (4 bits, channel-wise, symmetric, no HQQ,
// f32 storage, the reference's HQQ options) and checks the combination. Throws Error
// (Usage) naming `where` for bits outside {0, 2..8}, a block of 0 or below -1, HQQ with
// asymmetric explicitly off, HQQ options out of range, or a scale bit width other than
// 32 or 16.
EffectiveSpec resolve_settings(const SpecSettings& s, const std::string& where);

// The GGUF block type of a run: the one set, else the one that stores `bits` (4 -> Q4_0,
// 5 -> Q5_0, 8 -> Q8_0; with asym or HQQ Q4_1 / Q5_1). Throws Error (Usage) when bits
// have no GGUF type, or the type contradicts bits, block or HQQ that were set explicitly.
GgmlBlock resolve_ggml_type(const EffectiveSpec& e, const SpecSettings& said, const std::string& where);

// "block" / "tensor" (engine/quant_spec.h HqqStop). Returns false for anything else.
bool parse_hqq_stop(std::string_view text, HqqStop* out);
const char* hqq_stop_name(HqqStop s);

// "Q4_0", "q4_0", ... Returns false for anything else.
bool parse_ggml_type(std::string_view text, GgmlBlock* out);
// Bits of a GGUF block type's codes (4, 5 or 8) and whether it stores a minimum.
int ggml_type_bits(GgmlBlock t);
bool ggml_type_has_min(GgmlBlock t);

}  // namespace wq::cli
