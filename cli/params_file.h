// Per-tensor parameters: --params FILE / --compressionParamsFile FILE.
//
// Two JSON forms are read (which one is told by the keys: "algo" is MNN's):
//
// wquant's form
//   {"defaults": {"bits": 4, "block": 32, "asym": false, "hqq": false, "fp16": false, "scale_bits": 32,
//                 "type": "Q4_0", "hqq_steps": 20, "hqq_p": 0.7, "hqq_beta": 10,
//                 "hqq_kappa": 1.01, "hqq_round_zero": false, "hqq_stop": "block"},
//    "rules": [{"match": "blk.*.ffn_*", "bits": 8, "block": 32, "asym": false,
//               "hqq": false, "skip": false, "type": "Q8_0"}]}
//   ("type" is GGUF output's, bits / block / asym the others' and GGUF's through the type
//   they choose: cli/params_for_output.h.)
//   Every key is optional except a rule's "match" (an exact name or a glob, see
//   engine/plan.h glob_match). "bits": 0 means skip (keep float); a rule that sets any
//   field quantizes the 2-D float tensors it matches (make_plan), even ones an earlier
//   rule skipped; 1-D tensors only with "skip": false. "block" -1 or 0 is channel-wise. "comment" keys are allowed anywhere; any other unknown key is an error,
//   so a typo cannot silently do nothing.
//
// MNN's form: protobuf JSON of MNNConvert's compression pipeline (MNN_compression.proto)
//   {"algo": [{"type": "QUANTIZE", "quantParams": {"layer": [
//       {"opName": "x", "weight": [{"bits": 4, "asymmetric": true, "blockSize": 32}]}]}}]}
//   Field names in lowerCamelCase or the proto's snake_case. Only weight[0] of a layer is
//   read (as MNNConvert does); fields it leaves out keep the command line's values.
//   "bits": 0 keeps the layer float; "blockSize" <= 0 is channel-wise. A layer applies to
//   the tensor named opName, or opName + ".weight" (MNN names ops, checkpoints name
//   their weight tensors "<op>.weight"). Unknown fields are ignored, as MNNConvert does.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/spec_settings.h"
#include "engine/plan.h"

namespace wq {
class OutputFile;
}

namespace wq::cli {

// The importance matrix of a GGUF run, as a params file records it (its "defaults"):
// "imatrix", the path as the run was given it (llama-quantize's quantize.imatrix.file key
// holds that text, so a rerun reads the same path, from the current directory where it
// is relative); "imatrix_sha256", the file's digest, so a rerun refuses a file that has
// changed since; "include_weights" / "exclude_weights", the filters the run applied.
struct ParamsImatrix {
  std::string path;  // "" when the file names none
  std::string sha256;
  std::vector<std::string> include, exclude;
};

struct ParamsFile {
  enum class Form { Wquant, Mnn };
  std::string path;
  Form form = Form::Wquant;
  SpecSettings defaults;          // wquant's form only
  ParamsImatrix imatrix;          // wquant's form only
  std::vector<TensorRule> rules;  // in file order
  // rules[i] came from entries[rule_entry[i]] (an MNN layer gives two rules); entries
  // are labels such as `rules[2] "layers.0.*"` for messages about rules that match nothing.
  std::vector<size_t> rule_entry;
  std::vector<std::string> entries;
};

// Reads FILE. Throws Error naming the file and the entry: ErrorKind::Input when it
// cannot be read, ErrorKind::Usage when it is not valid JSON of either form or a value
// is out of range.
ParamsFile read_params_file(const std::string& path);
ParamsFile parse_params_json(const nlohmann::json& doc, const std::string& path);

// Labels of the entries whose rules match none of `names`.
std::vector<std::string> unmatched_entries(const ParamsFile& p, const std::vector<std::string>& names);

// A glob pattern that matches exactly `name` (glob characters put in classes).
std::string escape_glob(const std::string& name);

struct EffectiveSpec;

// wquant's form for the parameters a run used: the run's defaults, then one rule per
// tensor the run quantized (its bits, block, asym, hqq, or GGUF type) and one "skip"
// rule per tensor it kept float although the default choice would have quantized it.
// A GGUF run's importance matrix, if any, goes into the defaults (ParamsImatrix).
// Rerunning with this file (with or without the original flags; --allow-requantize,
// --keep-split and --external-data are not recorded) gives the same bytes.
nlohmann::json params_used(const EffectiveSpec& e, OutputFormat format, const std::string& gguf_mix,
                           const ParamsImatrix& imatrix, const std::vector<TensorPlan>& plan,
                           const std::vector<TensorInfo>& infos);

// Writes `doc` into `out` and renames it into place with commit_removable(): a signal
// removes it until the caller keep()s it, once the output it describes is in place too.
// Throws Error (Output).
void write_json_file(OutputFile& out, const nlohmann::json& doc);

}  // namespace wq::cli
