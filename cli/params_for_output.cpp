#include "cli/params_for_output.h"

#include "engine/error.h"
#include "engine/gguf_mix.h"
#include "kernels/ggml_types.h"

namespace wq::cli {
namespace {

// "bits 8, asym" as the rule says them.
std::string said_fields(const TensorRule& r) {
  std::string s;
  auto add = [&](const std::string& f) { s += (s.empty() ? "" : ", ") + f; };
  if (r.bits) add("\"bits\": " + std::to_string(*r.bits));
  if (r.block) add("\"block\": " + std::to_string(*r.block));
  if (r.asym) add(std::string("\"asym\": ") + (*r.asym ? "true" : "false"));
  return s;
}

// The rule's type checked against its own bits, block and asym.
void check_agrees(const TensorRule& r, GgmlType t, const std::string& where) {
  const std::string name = ggml_type_name(t);
  auto refuse = [&](const std::string& why) {
    throw Error(where + ": \"type\" " + name + " and " + said_fields(r) + " disagree: " + why, ErrorKind::Usage);
  };
  if (ggml_type_is_float(t)) refuse(name + " keeps the tensor float; drop " + said_fields(r));
  const auto b = ggml_block_of_gguf(uint32_t(t));
  if (!b) return;  // (make_gguf_plan says this build cannot write it)
  const GgmlTypeTraits& tr = ggml_traits(*b);
  if (r.bits && *r.bits != tr.bits) refuse(name + " stores " + std::to_string(tr.bits) + "-bit codes");
  if (r.block && *r.block != int64_t(tr.weights)) refuse(name + " has blocks of " + std::to_string(tr.weights) + " weights");
  if (r.asym && *r.asym && !tr.has_min) refuse(name + " is symmetric");
}

}  // namespace

void fit_params_to_output(ParamsFile& p, OutputFormat format, const SpecSettings& run) {
  auto rule_where = [&](size_t i) { return p.path + ": " + p.entries[p.rule_entry[i]]; };
  if (format != OutputFormat::Gguf) {
    if (p.defaults.mix) {
      throw Error(p.path + ": defaults: \"type\" " + *p.defaults.mix + " applies to GGUF output only (as --type does); this OUT is " +
                      output_format_name(format) + ": use \"bits\", \"block\" and \"asym\"",
                  ErrorKind::Usage);
    }
    for (size_t i = 0; i < p.rules.size(); ++i) {
      if (!p.rules[i].gguf_type) continue;
      throw Error(rule_where(i) + ": \"type\" " + ggml_type_name(*p.rules[i].gguf_type) +
                      " applies to GGUF output only; this OUT is " + output_format_name(format) +
                      ": use \"bits\", \"block\" and \"asym\" (or \"skip\": true to keep it float)",
                  ErrorKind::Usage);
    }
    return;
  }
  for (size_t i = 0; i < p.rules.size(); ++i) {
    TensorRule& r = p.rules[i];
    if (!r.bits && !r.block && !r.asym) continue;
    if (r.gguf_type) {
      check_agrees(r, *r.gguf_type, rule_where(i));
      continue;
    }
    // The type --bits / --block / --asym would give, the rule's fields over the run's
    // bits and asym (never the run's type or mix: the rule asks for another; HQQ, where
    // set, is checked against the type by the plan, as for a rule's "type").
    SpecSettings said;
    said.bits = r.bits;
    said.block = r.block;
    said.asym = r.asym;
    said.mnn_block = r.mnn_block;
    SpecSettings base;
    base.bits = run.bits;
    base.asym = run.asym;
    const SpecSettings merged = said.or_else(base);
    const std::string where = rule_where(i) + " (" + said_fields(r) + " on GGUF output)";
    const GgmlBlock b = resolve_ggml_type(resolve_settings(merged, where), said, where);
    r.ggml = b;
    r.gguf_type = ggml_type_named(ggml_block_name(b));
  }
}

}  // namespace wq::cli
