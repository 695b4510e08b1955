#include "engine/quant_spec.h"

#include <cmath>

#include "engine/error.h"

namespace wq {

std::string QuantSpec::describe_with_block(size_t eff_block, size_t cols) const {
  QuantSpec s = *this;
  s.block = eff_block == cols ? 0 : int64_t(eff_block);  // describe() says "channel-wise" for 0
  return s.describe();
}

std::string QuantSpec::describe() const {
  std::string s = std::to_string(bits) + "-bit ";
  s += hqq ? "hqq" : (asym ? "asym" : "sym");
  s += block > 0 ? " block " + std::to_string(block) : std::string(" channel-wise");
  if (fp16) s += " fp16";
  return s;
}

void validate_spec(const QuantSpec& spec, const std::string& where) {
  const std::string at = where.empty() ? std::string() : where + ": ";
  if (spec.bits < 2 || spec.bits > 8) {
    throw Error(at + "bits must be between 2 and 8, got " + std::to_string(spec.bits), ErrorKind::Usage);
  }
  if (spec.block < 0) {
    throw Error(at + "block must be positive (or 0/-1 for channel-wise), got " + std::to_string(spec.block),
                ErrorKind::Usage);
  }
  if (spec.hqq) {
    const HqqOptions& h = spec.hqq_opts;
    if (h.max_steps < 0 || h.max_steps > 10000)
      throw Error(at + "HQQ steps must be between 0 and 10000, got " + std::to_string(h.max_steps), ErrorKind::Usage);
    if (!(h.p > 0.0f && h.p < 1.0f))
      throw Error(at + "HQQ p must be in (0, 1), got " + std::to_string(h.p), ErrorKind::Usage);
    if (!(h.beta > 0.0f) || !std::isfinite(h.beta))
      throw Error(at + "HQQ beta must be positive, got " + std::to_string(h.beta), ErrorKind::Usage);
    if (!(h.kappa >= 1.0f) || !std::isfinite(h.kappa))
      throw Error(at + "HQQ kappa must be >= 1, got " + std::to_string(h.kappa), ErrorKind::Usage);
  }
}

size_t resolve_block(const QuantSpec& spec, size_t cols, const std::string& tensor,
                     BlockFallback fallback, std::string* note) {
  if (cols == 0) throw Error(tensor + ": cannot quantize a tensor with 0 columns");
  if (spec.block <= 0) return cols;
  const size_t b = size_t(spec.block);
  if (cols % b == 0) return b;
  const std::string msg = tensor + ": block " + std::to_string(b) + " does not divide the row length " +
                          std::to_string(cols);
  if (fallback == BlockFallback::Error) throw Error(msg, ErrorKind::Usage);
  if (note) *note = msg + "; quantized channel-wise instead";
  return cols;
}

size_t resolve_mnn_block(const QuantSpec& spec, const std::vector<int64_t>& shape, const std::string& tensor,
                         std::string* note) {
  size_t cols = 1, kernel = 1;
  for (size_t i = shape.size() <= 1 ? 0 : 1; i < shape.size(); ++i) cols *= size_t(shape[i]);
  for (size_t i = 2; i < shape.size(); ++i) kernel *= size_t(shape[i]);
  if (cols == 0) throw Error(tensor + ": cannot quantize a tensor with 0 columns");
  if (spec.block <= 0) return cols;
  const size_t b = size_t(spec.block);
  const size_t ic = cols / kernel;
  if (b >= 16 && b % 16 == 0 && ic % b == 0) return b * kernel;
  if (note) {
    if (b < 16 || b % 16 != 0) {
      *note = tensor + ": block " + std::to_string(b) + " is not a multiple of 16 (MNNConvert blocks only by 16, 32, "
              "48, ... input channels)";
    } else if (kernel > 1) {
      *note = tensor + ": block " + std::to_string(b) + " does not divide the " + std::to_string(ic) +
              " input channels";
    } else {
      *note = tensor + ": block " + std::to_string(b) + " does not divide the row length " + std::to_string(cols);
    }
    *note += "; quantized channel-wise instead, as MNNConvert does";
  }
  return cols;
}

}  // namespace wq
