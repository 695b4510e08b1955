#include "engine/plan.h"

#include "engine/error.h"
#include "engine/gguf_mix.h"
#include "engine/tensor.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_types.h"

namespace wq {

void note_rule_asking_to_quantize(const TensorRule& r, const std::string& name, std::string& asked_by) {
  const bool quantizing_type = r.gguf_type && !ggml_type_is_float(*r.gguf_type);
  if (r.pattern == name && (r.skip ? !*r.skip : bool(r.bits || r.block || r.asym || r.hqq || quantizing_type))) {
    asked_by = r.origin.empty() ? "a rule" : r.origin;
  } else if (r.skip) {
    asked_by.clear();
  }
}

const char* output_format_name(OutputFormat f) {
  switch (f) {
    case OutputFormat::Wq: return "wq";
    case OutputFormat::Safetensors: return "safetensors";
    case OutputFormat::Gguf: return "gguf";
    case OutputFormat::Onnx: return "onnx";
  }
  return "?";
}

bool glob_match(const std::string& pattern, const std::string& name) {
  // A rule's "match" is a tensor name or a glob: a name matches itself, also when it holds
  // glob characters (ONNX names such as "/layers.0/mlp/W[0]" do).
  if (pattern == name) return true;
  // Iterative matcher with single-star backtracking: linear in practice, no recursion.
  size_t p = 0, n = 0, star = std::string::npos, mark = 0;
  auto class_match = [&](size_t& pi, char c) -> bool {
    // pattern[pi] == '['; on return pi is past the closing ']'.
    size_t i = pi + 1;
    bool negate = false, hit = false;
    if (i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^')) {
      negate = true;
      ++i;
    }
    const size_t first = i;
    while (i < pattern.size() && (pattern[i] != ']' || i == first)) {
      if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
        if (c >= pattern[i] && c <= pattern[i + 2]) hit = true;
        i += 3;
      } else {
        if (c == pattern[i]) hit = true;
        ++i;
      }
    }
    if (i >= pattern.size()) return false;  // unterminated class: no match
    pi = i + 1;
    return hit != negate;
  };
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
      continue;
    }
    if (p < pattern.size()) {
      if (pattern[p] == '?') {
        ++p;
        ++n;
        continue;
      }
      if (pattern[p] == '[') {
        size_t pi = p;
        if (class_match(pi, name[n])) {
          p = pi;
          ++n;
          continue;
        }
      } else if (pattern[p] == name[n]) {
        ++p;
        ++n;
        continue;
      }
    }
    if (star == std::string::npos) return false;
    p = star + 1;
    n = ++mark;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

static bool ends_with(const std::string& s, const char* suffix) {
  const std::string x(suffix);
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

static bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

static size_t rows_of(const TensorInfo& t) { return matrix_dims(t.shape).rows; }
static size_t cols_of(const TensorInfo& t) { return matrix_dims(t.shape).cols; }

bool is_quantizable_weight(const TensorInfo& t) {
  if (t.kind != StoredKind::Float || t.shape.size() < 2) return false;
  if (rows_of(t) < 2 || cols_of(t) < 2) return false;
  // Norm scales, biases, position tables: small and precision-critical, kept float as
  // MNN and llama-quantize keep them.
  if (contains(t.name, "norm") || ends_with(t.name, "bias") || contains(t.name, "position_embd") ||
      contains(t.name, "token_types") || contains(t.name, "ffn_gate_inp"))
    return false;
  return true;
}


std::vector<TensorPlan> make_plan(const std::vector<TensorInfo>& tensors, const PlanOptions& opts) {
  validate_spec(opts.defaults, "defaults");
  for (const TensorRule& r : opts.rules) {
    QuantSpec s = opts.defaults;
    if (r.bits) s.bits = *r.bits;
    if (r.block) s.block = *r.block < 0 ? 0 : *r.block;
    validate_spec(s, "rule '" + r.pattern + "'");
  }
  if (opts.format == OutputFormat::Gguf) return make_gguf_plan(tensors, opts);

  std::vector<TensorPlan> plan;
  plan.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    TensorPlan p;
    p.source_index = i;
    p.name = t.name;
    p.shape = t.shape;
    p.spec = opts.defaults;
    p.ggml = opts.ggml;
    bool quantize = is_quantizable_weight(t);
    std::string asym_off_by, asked_by;  // the rule that turned asymmetric off / asked to quantize it
    for (const TensorRule& r : opts.rules) {
      if (!glob_match(r.pattern, t.name)) continue;
      if (r.bits) p.spec.bits = *r.bits;
      if (r.block) {
        p.spec.block = *r.block < 0 ? 0 : *r.block;
        p.spec.mnn_blocks = r.mnn_block;
      }
      if (r.asym) {
        p.spec.asym = *r.asym;
        asym_off_by = *r.asym ? "" : r.origin.empty() ? "a rule" : r.origin;
      }
      if (r.hqq) p.spec.hqq = *r.hqq;
      if (r.skip) quantize = !*r.skip && t.kind == StoredKind::Float && t.shape.size() >= 1;
      else if (r.bits || r.block || r.asym || r.hqq || r.gguf_type) quantize |= t.kind == StoredKind::Float && t.shape.size() >= 2;
      note_rule_asking_to_quantize(r, t.name, asked_by);
    }
    if (!asked_by.empty() && !quantize) {
      // (Such a rule matches, so it is not one that "matches no tensor": said here instead.)
      p.note = t.name + ": " + asked_by + " asks to quantize it, but it is " +
               (t.kind != StoredKind::Float ? "copied as it is (" + t.type_name + ": not a weight wquant quantizes here)"
                                            : std::string("kept float (a tensor of one dimension is quantized only with "
                                                          "\"skip\": false)"));
    }
    if (p.spec.hqq && !asym_off_by.empty() && quantize) {
      // (HQQ fits a zero point: never symmetric. A rule is above the command line, so its
      // "asym": false is not overruled by --hqq without a word.)
      throw Error(t.name + ": \"asym\": false (" + asym_off_by + ") with HQQ, which is always asymmetric: set \"hqq\": false "
                  "beside it, or drop the \"asym\": false",
                  ErrorKind::Usage);
    }
    if (p.spec.hqq) p.spec.asym = true;

    if (t.kind != StoredKind::Float) {
      p.action = TensorAction::CopyRaw;
    } else if (!quantize) {
      p.action = TensorAction::KeepFloat;
      // --fp16 stores kept f32 tensors as f16, as MNNConvert --fp16 does; f16/bf16 stay.
      p.out_dtype = (opts.keep_f16.value_or(opts.defaults.fp16) && t.dtype == DType::F32)
                        ? DType::F16
                        : t.dtype;
    } else {
      p.action = TensorAction::Quantize;
      p.block = p.spec.mnn_blocks ? resolve_mnn_block(p.spec, t.shape, t.name, &p.note)
                                  : resolve_block(p.spec, cols_of(t), t.name, BlockFallback::ChannelWise, &p.note);
    }
    plan.push_back(std::move(p));
  }
  return plan;
}

std::string describe_plan_entry(const TensorPlan& p, const TensorInfo& info) {
  switch (p.action) {
    case TensorAction::Quantize: return p.spec.describe_with_block(p.block, matrix_dims(p.shape).cols);
    case TensorAction::Ggml: return std::string(ggml_block_name(p.ggml)) + (p.spec.hqq ? " (hqq)" : "");
    case TensorAction::KeepFloat: return dtype_name(p.out_dtype);
    case TensorAction::CopyRaw: return info.type_name + " (copied)";
  }
  return "?";
}

}  // namespace wq
