#include "engine/plan.h"

#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_types.h"

namespace wq {

bool glob_match(const std::string& pattern, const std::string& name) {
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

namespace {

// The block types llama-quantize's rules end up choosing for the legacy types, with the
// one departure wquant has to make: it has no K-quants, so where llama-quantize picks
// Q6_K for the output matrix, wquant picks Q8_0 (see gguf_type_for).
bool is_output_matrix(const TensorInfo& t, bool has_output) {
  return t.name == "output.weight" || (!has_output && t.name == "token_embd.weight");
}

}  // namespace

std::vector<TensorPlan> make_plan(const std::vector<TensorInfo>& tensors, const PlanOptions& opts) {
  validate_spec(opts.defaults, "defaults");
  for (const TensorRule& r : opts.rules) {
    QuantSpec s = opts.defaults;
    if (r.bits) s.bits = *r.bits;
    if (r.block) s.block = *r.block < 0 ? 0 : *r.block;
    validate_spec(s, "rule '" + r.pattern + "'");
  }
  bool has_output = false;
  for (const TensorInfo& t : tensors) has_output |= t.name == "output.weight";

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
    bool ruled_type = false;
    for (const TensorRule& r : opts.rules) {
      if (!glob_match(r.pattern, t.name)) continue;
      if (r.bits) p.spec.bits = *r.bits;
      if (r.block) {
        p.spec.block = *r.block < 0 ? 0 : *r.block;
        p.spec.mnn_blocks = r.mnn_block;
      }
      if (r.asym) p.spec.asym = *r.asym;
      if (r.hqq) p.spec.hqq = *r.hqq;
      if (r.ggml) {
        p.ggml = *r.ggml;
        ruled_type = true;
      }
      if (r.skip) quantize = !*r.skip && t.kind == StoredKind::Float && t.shape.size() >= 1;
      else if (r.bits || r.block || r.asym || r.hqq || r.ggml) quantize |= t.kind == StoredKind::Float && t.shape.size() >= 2;
    }
    if (p.spec.hqq) p.spec.asym = true;

    if (t.kind != StoredKind::Float) {
      p.action = TensorAction::CopyRaw;
    } else if (!quantize) {
      p.action = TensorAction::KeepFloat;
      // --fp16 stores kept f32 tensors as f16, as MNNConvert --fp16 does; f16/bf16 stay.
      // Not 1-D tensors in GGUF: llama.cpp's CPU backend needs its norm weights in f32.
      const bool gguf_vector = opts.format == OutputFormat::Gguf && t.shape.size() < 2;
      p.out_dtype = (opts.keep_f16.value_or(opts.defaults.fp16) && t.dtype == DType::F32 && !gguf_vector)
                        ? DType::F16
                        : t.dtype;
    } else if (opts.format == OutputFormat::Gguf) {
      if (!ruled_type && is_output_matrix(t, has_output) && p.ggml != GgmlBlock::Q8_0) {
        p.note = t.name + ": quantized to Q8_0, not " + ggml_block_name(p.ggml) +
                 " (llama-quantize uses Q6_K here when the row is a multiple of 256, Q8_0 otherwise; wquant has "
                 "no K-quants)";
        p.ggml = GgmlBlock::Q8_0;
      }
      if (p.spec.hqq && !ggml_traits(p.ggml).has_min) {
        if (is_output_matrix(t, has_output) && !ruled_type) {
          p.spec.hqq = false;  // the output matrix is Q8_0, which has no zero point to refine
        } else {
          throw Error(t.name + ": --hqq with GGUF needs a type with a zero point (Q4_1 or Q5_1), not " +
                          std::string(ggml_block_name(p.ggml)),
                      ErrorKind::Usage);
        }
      }
      if (cols_of(t) % ggml_traits(p.ggml).weights != 0) {
        p.action = TensorAction::KeepFloat;
        // The source's float type (f16 only with --fp16): stored as F16, stories260K's
        // 172-wide FFN tensors made llama.cpp's output degenerate (<unk> tokens; it
        // multiplies an F16 weight with activations converted to f16).
        p.out_dtype = (opts.keep_f16.value_or(opts.defaults.fp16) && t.dtype == DType::F32) ? DType::F16 : t.dtype;
        p.note = t.name + ": rows of " + std::to_string(cols_of(t)) + " are not a multiple of " +
                 std::to_string(ggml_traits(p.ggml).weights) + ", so no " +
                 ggml_block_name(p.ggml) + " block fits; kept as " + dtype_name(p.out_dtype) +
                 " (llama-quantize aborts the whole model here)";
      } else {
        p.action = TensorAction::Ggml;
      }
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
