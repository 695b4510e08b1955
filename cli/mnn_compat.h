// MNNConvert's spellings, made to mean what an MNN user means by them.
//
// MNNConvert reads its bool flags with cxxopts, which takes `--weightQuantAsymmetric=1`
// but parses `--weightQuantAsymmetric 1` and `--weightQuantAsymmetric true` as false (the
// value becomes a stray argument), and then also turns --hqq off because HQQ needs
// asymmetric. wquant reads a bare flag, `=V` and ` V` alike, V one of 1/0/true/false
// (also yes/no/on/off), before the general parser sees the arguments.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wq::cli {

struct MnnNormalised {
  std::vector<std::string> args;  // what the general parser gets
  std::optional<bool> asym;       // the last --asym / --weightQuantAsymmetric, if any
  bool implied_quantize = false;  // no command given: `quantize` was put first
  // A quantize command line that uses one of MNNConvert's own spellings (--modelFile,
  // --MNNModel, --weightQuantBits, --weightQuantBlock, --weightQuantAsymmetric,
  // --weightQuantScaleBit, --compressionParamsFile): the run then follows MNNConvert's
  // rules where they differ from wquant's (see QuantSpec::mnn_*).
  bool mnn_form = false;
};

// Puts "quantize" first when the arguments begin with a flag other than help/version
// (the MNNConvert form `wquant --modelFile a --MNNModel b ...`), and takes the asymmetric
// flags out of a quantize command line. Throws Error (Usage) for `--asym=V` with V not a
// bool literal.
MnnNormalised normalise_mnn_args(std::vector<std::string> args);

// 1/true/yes/on and 0/false/no/off, case-insensitive.
std::optional<bool> parse_bool_literal(std::string_view text);

// MNNConvert's -f values (TF, CAFFE, ONNX, TFLITE, MNN, TORCH, JSON), case-insensitive;
// returns the canonical spelling, or "" if unknown.
std::string canonical_framework(std::string_view text);

}  // namespace wq::cli
