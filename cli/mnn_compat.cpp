#include "cli/mnn_compat.h"

#include <array>
#include <cctype>

#include "engine/error.h"

namespace wq::cli {

namespace {

std::string upper(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = char(std::toupper(static_cast<unsigned char>(c)));
  return r;
}

bool is_asym_flag(std::string_view a) { return a == "--asym" || a == "--weightQuantAsymmetric"; }

bool is_mnn_spelling(std::string_view a) {
  static constexpr std::array<std::string_view, 7> kNames = {
      "--modelFile", "--MNNModel", "--weightQuantBits", "--weightQuantBlock", "--weightQuantAsymmetric",
      "--weightQuantScaleBit", "--compressionParamsFile"};
  const std::string_view name = a.substr(0, a.find('='));
  for (std::string_view n : kNames) {
    if (name == n) return true;
  }
  return false;
}

}  // namespace

std::optional<bool> parse_bool_literal(std::string_view text) {
  const std::string u = upper(text);
  if (u == "1" || u == "TRUE" || u == "YES" || u == "ON") return true;
  if (u == "0" || u == "FALSE" || u == "NO" || u == "OFF") return false;
  return std::nullopt;
}

std::string canonical_framework(std::string_view text) {
  static constexpr std::array<const char*, 7> kNames = {"TF", "CAFFE", "ONNX", "TFLITE", "MNN", "TORCH", "JSON"};
  const std::string u = upper(text);
  for (const char* n : kNames) {
    if (u == n) return n;
  }
  return "";
}

MnnNormalised normalise_mnn_args(std::vector<std::string> args) {
  MnnNormalised r;
  if (!args.empty() && args[0].size() > 1 && args[0][0] == '-' && args[0] != "-h" && args[0] != "--help" &&
      args[0] != "--version") {
    args.insert(args.begin(), "quantize");
    r.implied_quantize = true;
  }
  if (args.empty() || args[0] != "quantize") {
    r.args = std::move(args);
    return r;
  }
  r.args.push_back(args[0]);
  bool after_dashdash = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (after_dashdash) {
      r.args.push_back(a);
      continue;
    }
    if (a == "--") {
      after_dashdash = true;
      r.args.push_back(a);
      continue;
    }
    r.mnn_form = r.mnn_form || is_mnn_spelling(a);
    const size_t eq = a.find('=');
    if (eq != std::string::npos && is_asym_flag(std::string_view(a).substr(0, eq))) {
      const std::string value = a.substr(eq + 1);
      const std::optional<bool> b = parse_bool_literal(value);
      if (!b) {
        throw Error(a.substr(0, eq) + ": expected 1, 0, true or false, got '" + value + "'", ErrorKind::Usage);
      }
      r.asym = b;
      continue;
    }
    if (is_asym_flag(a)) {
      // A following bool literal is this flag's value; anything else (a path, another
      // flag, nothing) leaves it a bare flag, which means on.
      std::optional<bool> b;
      if (i + 1 < args.size()) b = parse_bool_literal(args[i + 1]);
      if (b) ++i;
      r.asym = b.value_or(true);
      continue;
    }
    r.args.push_back(a);
  }
  return r;
}

}  // namespace wq::cli
