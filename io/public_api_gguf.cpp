// io/public_api_gguf.h: ConvertOptions' GGUF fields as a GgufOutputRequest.
#include "io/public_api_gguf.h"

#include "engine/error.h"
#include "engine/gguf_mix.h"

namespace wquant {
namespace {

wq::Error usage(const std::string& what) { return wq::Error(what, wq::ErrorKind::Usage); }

// As the program chooses from --bits: 4 -> Q4_0 / Q4_1, 5 -> Q5_0 / Q5_1, 8 -> Q8_0.
wq::GgmlBlock block_from_bits(const QuantOptions& q) {
  const bool with_min = q.asym || q.hqq;
  for (const wq::GgmlTypeTraits& t : wq::kGgmlTraits) {
    if (t.bits == q.bits && t.has_min == with_min && t.weights == 32 && t.type != wq::GgmlBlock::IQ4_NL) return t.type;
  }
  throw usage("no GGUF block type for " + std::to_string(q.bits) + "-bit" + (with_min ? " asymmetric" : "") +
              " weights; set gguf_type");
}

// "" = unset; else a ggml type by name, as --output-tensor-type reads it.
std::optional<wq::GgmlType> type_option(const std::string& text, const char* option) {
  if (text.empty()) return std::nullopt;
  return wq::ggml_type_argument(text, option);
}

}  // namespace

bool has_gguf_options(const ConvertOptions& o) {
  return !o.gguf_type.empty() || !o.imatrix.empty() || !o.include_weights.empty() || !o.exclude_weights.empty() ||
         o.pure || o.leave_output || !o.output_tensor_type.empty() || !o.token_embedding_type.empty() ||
         o.allow_requantize || !o.tensor_types.empty();
}

wq::GgufOutputRequest gguf_request(const ConvertOptions& o, wq::GgmlBlock* block) {
  wq::GgufOutputRequest r;
  const bool with_min = o.quant.asym || o.quant.hqq;
  if (o.gguf_type.empty()) {
    *block = block_from_bits(o.quant);
    r.mix = *wq::gguf_mix_named(wq::ggml_block_name(*block));
  } else {
    const auto mix = wq::gguf_mix_named(o.gguf_type);
    if (!mix) {
      std::string names;
      for (const wq::GgufMix& m : wq::gguf_mixes()) names += std::string(names.empty() ? "" : ", ") + m.name;
      throw usage("gguf_type: expected one of " + names + ", got '" + o.gguf_type + "'");
    }
    r.mix = *mix;
    const auto b = wq::ggml_block_named(mix->name);
    // hqq stays with a mix: it refines the minima of the mix's Q2_K / Q4_K / Q5_K tensors
    // (the plan refuses a mix whose own type has none), as the program's --hqq does.
    if (!b && o.quant.asym) {
      throw usage(std::string("gguf_type ") + mix->name + " sets every tensor's type as llama-quantize does; asym has "
                  "nothing to set there");
    }
    if (b && with_min && !wq::ggml_traits(*b).has_min) {
      throw usage(std::string("gguf_type ") + mix->name + " is symmetric; " + (o.quant.hqq ? "hqq" : "asym") +
                  " needs a type with a minimum (Q4_1, Q5_1, Q2_K, Q4_K or Q5_K)");
    }
    *block = b ? *b : wq::GgmlBlock::Q4_0;  // a mix of several types: the plan reads the mix, not this
  }
  if (!o.include_weights.empty() && !o.exclude_weights.empty()) {
    throw usage("include_weights and exclude_weights cannot be used together (as in llama-quantize)");
  }
  if ((!o.include_weights.empty() || !o.exclude_weights.empty()) && o.imatrix.empty()) {
    throw usage(std::string(o.include_weights.empty() ? "exclude_weights" : "include_weights") +
                " selects imatrix entries: it needs imatrix");
  }
  r.imatrix = o.imatrix;
  r.include_weights = o.include_weights;
  r.exclude_weights = o.exclude_weights;
  r.pure = o.pure;
  r.leave_output = o.leave_output;
  r.output_type = type_option(o.output_tensor_type, "output_tensor_type");
  r.token_embd_type = type_option(o.token_embedding_type, "token_embedding_type");
  for (const std::string& rule : o.tensor_types) r.tensor_types.push_back(wq::tensor_type_rule(rule, "tensor_types"));
  return r;
}

}  // namespace wquant
