// make_plan for GGUF output: llama-quantize's per-tensor types (engine/gguf_mix.h) in
// llama-quantize's tensor order, then the user's rules on top.
#include "engine/error.h"
#include "engine/gguf_mix.h"
#include "engine/plan.h"
#include "engine/tensor.h"
#include "kernels/ggml_types.h"

namespace wq {
namespace {

// The legacy mix of the same name as a block type (Q4_0 -> the Q4_0 mix).
GgufMix mix_of_block(GgmlBlock b) {
  const auto m = gguf_mix_named(ggml_block_name(b));
  if (!m) throw Error(std::string("no llama-quantize mix is named ") + ggml_block_name(b), ErrorKind::Internal);
  return *m;
}

// llama-quantize's use of the importance matrix for a tensor it converts: the entry of the
// same name when it holds ne0 values per matrix (ne0 * ne2), none when absent; a size
// that does not match is an error, but for token_embd.weight, where llama-quantize
// ignores it (its entry is commonly of another size).
std::shared_ptr<const std::vector<float>> imatrix_for(const TensorInfo& t, const PlanOptions& opts) {
  if (!opts.imatrix) return nullptr;
  const auto it = opts.imatrix->find(t.name);
  if (it == opts.imatrix->end()) return nullptr;
  const int64_t ne0 = t.shape.empty() ? 1 : t.shape.back();
  const int64_t ne2 = t.shape.size() >= 3 ? t.shape[t.shape.size() - 3] : 1;
  if (it->second.size() == size_t(ne0 * ne2)) {
    if (t.shape.size() > 3) {
      throw Error(t.name + ": an importance matrix for a tensor of " + std::to_string(t.shape.size()) +
                  " dimensions (llama-quantize applies it to 2-D and 3-D tensors only)");
    }
    return std::make_shared<const std::vector<float>>(it->second);
  }
  if (t.name == "token_embd.weight") return nullptr;
  throw Error(t.name + ": the imatrix has " + std::to_string(it->second.size()) + " values for it, the tensor needs " +
              std::to_string(ne0 * ne2) + " (llama-quantize refuses this too: \"imatrix size is different from tensor size\")");
}

// A rule's bits / block / asym for one tensor, field by field over the rules that match it
// (`by`: where the last of them was written).
struct RuleFields {
  std::optional<int> bits;
  std::optional<int64_t> block;
  std::optional<bool> asym;
  std::string by;
  explicit operator bool() const { return bits || block || asym; }
  std::string said() const {
    std::string s;
    auto add = [&](const std::string& f) { s += (s.empty() ? "" : ", ") + f; };
    if (bits) add("bits " + std::to_string(*bits));
    if (block) add(*block > 0 ? "block " + std::to_string(*block) : std::string("channel-wise"));
    if (asym) add(*asym ? "asym" : "symmetric");
    return s;
  }
};

// The type a tensor gets on GGUF output where rules set bits / block / asym: its type `t`
// (the mix's, or a rule's `type`, `type_said`) where the fields agree with it; else, unless
// a rule named the type, the type --bits / --block / --asym give (4 -> Q4_0, with a minimum
// Q4_1; 5 -> Q5_0 / Q5_1; 8 -> Q8_0; blocks of 32), what the fields leave out taken from
// `t` (a float `t`: 4 bits, a minimum where HQQ is on).
GgmlType type_of_fields(const TensorInfo& tensor, GgmlType t, bool type_said, const RuleFields& f, bool hqq) {
  const std::string where = tensor.name + ": " + f.said() + (f.by.empty() ? "" : " (" + f.by + ")");
  const auto b = ggml_type_is_float(t) ? std::nullopt : ggml_block_of_gguf(uint32_t(t));
  if (b) {
    const GgmlTypeTraits& tr = ggml_traits(*b);
    if ((!f.bits || *f.bits == tr.bits) && (!f.asym || *f.asym == tr.has_min) && (!f.block || *f.block == int64_t(tr.weights))) {
      return t;
    }
  }
  if (type_said) {
    throw Error(where + ": disagrees with the type " + ggml_type_name(t) + " a rule names for it" +
                    (ggml_type_is_float(t) ? " (a float type: kept float)" : ""),
                ErrorKind::Usage);
  }
  const int bits = f.bits.value_or(b ? ggml_traits(*b).bits : 4);
  const bool with_min = f.asym.value_or(b ? ggml_traits(*b).has_min : hqq);
  if (f.block && *f.block != 32) {
    throw Error(where + ": GGUF's types for it have blocks of 32 weights (use .wq or .safetensors output for other blocks)",
                ErrorKind::Usage);
  }
  const std::optional<GgmlBlock> legacy = legacy_block_for_bits(bits, with_min);
  if (!legacy && bits == 8) {
    throw Error(where + ": GGUF has no asymmetric 8-bit type that wquant writes; Q8_0 is symmetric", ErrorKind::Usage);
  }
  if (!legacy) {
    throw Error(where + ": GGUF output stores 4, 5 or 8 bits (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) where a rule sets bits; " +
                    std::to_string(bits) + "-bit weights need .wq or .safetensors output, or a rule's \"type\" (Q3_K, Q6_K ...)",
                ErrorKind::Usage);
  }
  return *ggml_type_named(ggml_block_name(*legacy));
}

// A float type as the dtype a kept tensor is stored in.
DType float_dtype(GgmlType t) { return t == GgmlType::F16 ? DType::F16 : t == GgmlType::BF16 ? DType::BF16 : DType::F32; }

}  // namespace

std::vector<TensorPlan> make_gguf_plan(const std::vector<TensorInfo>& tensors, const PlanOptions& opts) {
  MixOptions mix;
  if (opts.gguf_mix) {
    mix = *opts.gguf_mix;
  } else {
    mix.mix = mix_of_block(opts.ggml);
  }
  mix.has_imatrix = opts.imatrix && !opts.imatrix->empty();  // llama-quantize: entries left after the filters
  // --hqq refines a type's minimum: a mix whose own type has none (Q3_K_*, Q6_K, IQ4_*,
  // Q4_0 ...) is refused whatever its tensors fall back to.
  if (opts.defaults.hqq && !ggml_type_is_float(mix.mix.base)) {
    const auto base = ggml_block_of_gguf(uint32_t(mix.mix.base));
    if (base && !ggml_traits(*base).has_min) {
      throw Error(std::string("--hqq with GGUF needs a mix whose type has a minimum (Q4_1, Q5_1, Q2_K*, Q4_K*, "
                              "Q5_K*), not ") + mix.mix.name + " (" + ggml_block_name(*base) + ")",
                  ErrorKind::Usage);
    }
  }
  const MixModel model = opts.gguf_model ? *opts.gguf_model : mix_model_from_names(tensors);
  const std::vector<size_t> order = opts.gguf_order ? *opts.gguf_order : llama_tensor_order(tensors);
  if (order.size() != tensors.size()) {
    throw Error("GGUF tensor order of " + std::to_string(order.size()) + " entries for " +
                    std::to_string(tensors.size()) + " tensors",
                ErrorKind::Internal);
  }
  std::vector<TensorInfo> sorted;
  sorted.reserve(order.size());
  for (size_t i : order) sorted.push_back(tensors.at(i));
  const std::vector<MixChoice> choices = choose_mix_types(sorted, model, mix);

  std::vector<TensorPlan> plan;
  plan.reserve(tensors.size());
  for (size_t k = 0; k < order.size(); ++k) {
    const TensorInfo& t = sorted[k];
    MixChoice c = choices[k];
    TensorPlan p;
    p.source_index = order[k];
    p.name = t.name;
    p.shape = t.shape;
    p.spec = opts.defaults;
    p.note = c.note;
    bool ruled_type = false, ruled_hqq = false, skip = false;
    RuleFields fields;
    std::string asked_by;
    for (const TensorRule& r : opts.rules) {
      if (!glob_match(r.pattern, t.name)) continue;
      if (r.hqq) {
        p.spec.hqq = *r.hqq;
        ruled_hqq = true;
      }
      if (r.bits) fields.bits = r.bits;
      if (r.block) fields.block = *r.block <= 0 ? -1 : *r.block;
      if (r.asym) fields.asym = r.asym;
      if (r.bits || r.block || r.asym) fields.by = r.origin;
      note_rule_asking_to_quantize(r, t.name, asked_by);
      if (r.gguf_type) {
        c.type = *r.gguf_type;
        c.unsupported = rows_misfit(t, c.type);
        c.note = c.unsupported ? rows_misfit_note(t, c.type) : "";
        ruled_type = true;
      }
      if (r.skip) {
        skip = *r.skip;
        c.quantize = !skip;
      } else if (r.bits || r.block || r.asym || r.hqq || r.gguf_type) {
        c.quantize |= t.kind == StoredKind::Float && t.shape.size() >= 2;
      }
      p.note = c.note;
    }
    if (fields && c.quantize && t.kind == StoredKind::Float) {
      // (Where the rules keep it float, or it is not a float tensor, they set nothing.)
      const GgmlType ft = type_of_fields(t, c.type, ruled_type, fields, p.spec.hqq);
      if (ft != c.type) {
        c.type = ft;
        c.unsupported = rows_misfit(t, c.type);
        c.note = c.unsupported ? rows_misfit_note(t, c.type) : "";
        p.note = c.note;
      }
      ruled_type = true;
    }
    if (c.pure_misfit && c.quantize && !ruled_type) {
      // (Refused here, in the plan: before anything is written, --dry-run included.)
      throw Error(rows_misfit_note(t, c.type) +
                  " (--pure asks for it in every tensor; llama-quantize fails on it too): without --pure it gets " +
                  (ggml_type_block(c.type) == 256 ? "llama.cpp's fallback type" : "kept float"));
    }
    if (c.quantize && t.type_name == ggml_type_name(c.type)) c.quantize = false;
    if (p.spec.hqq) p.spec.asym = true;
    if (c.quantize && t.kind == StoredKind::Ggml && opts.allow_requantize) {
      if (!ggml_block_named(t.type_name)) {
        throw Error(t.name + ": --allow-requantize: wquant cannot dequantize type " + t.type_name +
                    " (it has kernels for F32, F16, BF16, Q4_0 ... Q8_0, the K-quants, IQ4_NL and IQ4_XS); quantize the "
                    "float model instead");
      }
      p.requantize = true;
    }

    if (!c.quantize || t.kind == StoredKind::Other) {
      p.note.clear();
      // (Such a rule matches, so it is not one that "matches no tensor": said here instead.)
      if (!asked_by.empty()) {
        p.note = t.name + ": " + asked_by + " asks to quantize it, but it keeps its type " + t.type_name +
                 (t.kind == StoredKind::Float ? " (llama-quantize's for it; a rule's \"type\" sets another)" : "");
      }
      if (t.kind == StoredKind::Float) {
        p.action = TensorAction::KeepFloat;
        // --fp16 stores kept f32 matrices as f16; never 1-D tensors, which llama.cpp's
        // CPU backend needs in f32 (norms).
        const bool vector = t.shape.size() < 2;
        p.out_dtype = (opts.keep_f16.value_or(opts.defaults.fp16) && t.dtype == DType::F32 && !vector) ? DType::F16 : t.dtype;
      } else {
        p.action = TensorAction::CopyRaw;
      }
    } else if (t.kind != StoredKind::Float && !(t.kind == StoredKind::Ggml && opts.allow_requantize)) {
      throw Error(t.name + ": requantizing from type " + t.type_name + " to " + ggml_type_name(c.type) +
                  " is disabled, as in llama-quantize: quantize the float model, or pass --allow-requantize to "
                  "dequantize it and quantize it again (which loses more)");
    } else if (c.unsupported) {
      // llama-quantize aborts the whole model; wquant keeps this tensor in the source's
      // float type (F16 made llama.cpp's output degenerate for stories260K's 172-wide FFN).
      p.action = TensorAction::KeepFloat;
      p.out_dtype = (opts.keep_f16.value_or(opts.defaults.fp16) && t.dtype == DType::F32) ? DType::F16 : t.dtype;
      p.note += "; kept as " + std::string(dtype_name(p.out_dtype));
    } else if (ggml_type_is_float(c.type)) {
      imatrix_for(t, opts);  // checked as llama-quantize checks it; a float type does not use it
      p.action = TensorAction::KeepFloat;
      p.out_dtype = float_dtype(c.type);
    } else {
      p.imatrix = imatrix_for(t, opts);
      // llama-quantize: Q2_K_S without importance data for a tensor "will be garbage".
      if (!p.imatrix && c.type == GgmlType::Q2_K && mix.mix.llama_ftype == 21 && t.name != "token_embd.weight") {
        throw Error(t.name + ": missing importance matrix for this tensor in a very low-bit quantization (Q2_K_S); "
                    "llama-quantize refuses it too");
      }
      const auto block = ggml_block_of_gguf(uint32_t(c.type));
      if (!block) {
        throw Error(t.name + ": type " + ggml_type_name(c.type) + " needs the K-quant kernels, which this build lacks",
                    ErrorKind::Usage);
      }
      p.action = TensorAction::Ggml;
      p.ggml = *block;
      // A K mix's --hqq refines its K-quant tensors; the legacy type llama.cpp falls back
      // to where a row is not a multiple of 256 (Q5_1 for Q5_K) keeps llama-quantize's
      // bytes, as the mix's other tensors do (a rule naming the type or HQQ decides itself).
      if (p.spec.hqq && !ruled_type && !ruled_hqq && c.fallback && ggml_traits(p.ggml).has_min) {
        p.spec.hqq = false;
        p.note += (p.note.empty() ? t.name + ": " : std::string("; ")) + "no --hqq for " + ggml_type_name(c.type) +
                  " (it refines the mix's K-quant tensors; the others keep llama-quantize's bytes)";
      }
      if (p.spec.hqq && !ggml_traits(p.ggml).has_min) {
        if (ruled_type || c.type == mix.mix.base) {
          throw Error(t.name + ": --hqq with GGUF needs a type with a minimum (Q4_1, Q5_1, Q2_K, Q4_K or Q5_K), not " +
                          std::string(ggml_block_name(p.ggml)),
                      ErrorKind::Usage);
        }
        p.spec.hqq = false;  // the mix chose another type here (the output matrix's Q8_0), with no zero point
      }
    }
    plan.push_back(std::move(p));
  }
  return plan;
}

}  // namespace wq
