// The command line of wquant, parsed into one struct per command. Parsing does no I/O:
// files are opened by the commands, so every usage mistake is found before any work.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli/spec_settings.h"
#include "engine/gguf_mix.h"
#include "engine/plan.h"
#include "kernels/kernels.h"

namespace wq::cli {

enum class CommandKind { Help, Version, Quantize, Inspect, Verify, Dequantize, Bench };

// How much a command says, and in which form.
struct Verbosity {
  bool quiet = false;    // errors only
  bool verbose = false;  // also the plan, per-tensor lines and informative notes
  bool json = false;     // the result as one JSON document on stdout
};

// Execution settings shared by the commands that run kernels.
struct RunSettings {
  std::optional<Isa> isa;  // --isa; WQUANT_ISA applies when unset
  int threads = 0;         // 0: every core
};

// llama-quantize's options for GGUF output.
struct GgufArgs {
  bool pure = false;                        // --pure
  bool leave_output = false;                // --leave-output-tensor
  std::optional<GgmlType> output_type;      // --output-tensor-type
  std::optional<GgmlType> token_embd_type;  // --token-embedding-type
  std::string imatrix;                      // --imatrix FILE (legacy .dat or GGUF)
  std::vector<std::string> include_weights; // --include-weights: imatrix entries whose name contains one
  std::vector<std::string> exclude_weights; // --exclude-weights: imatrix entries dropped
  bool allow_requantize = false;            // --allow-requantize
  std::vector<std::pair<std::string, GgmlType>> tensor_types;  // --tensor-type PATTERN=TYPE, in order
  bool keep_split = false;                  // --keep-split: one output file a shard of IN
  // The options given, by their spellings, in this order (for a message naming them).
  std::vector<std::string> given() const {
    std::vector<std::string> g;
    const std::pair<bool, const char*> all[] = {
        {pure, "--pure"},
        {leave_output, "--leave-output-tensor"},
        {output_type.has_value(), "--output-tensor-type"},
        {token_embd_type.has_value(), "--token-embedding-type"},
        {!imatrix.empty(), "--imatrix"},
        {!include_weights.empty(), "--include-weights"},
        {!exclude_weights.empty(), "--exclude-weights"},
        {allow_requantize, "--allow-requantize"},
        {!tensor_types.empty(), "--tensor-type"},
        {keep_split, "--keep-split"},
    };
    for (const auto& [set, name] : all) {
      if (set) g.push_back(name);
    }
    return g;
  }
  bool any_option() const { return !given().empty(); }
};

struct QuantizeArgs {
  std::string input, output;
  SpecSettings said;                   // what the command line set
  std::optional<OutputFormat> format;  // --format; else from OUT's extension
  std::string params_file;             // --params / --compressionParamsFile
  std::string framework;               // -f, validated, informative only
  std::string biz_code;                // --bizCode, accepted and ignored
  RunSettings run;
  std::optional<int> positional_threads;  // THREADS in llama-quantize's form
  bool llama_form = false;  // IN OUT TYPE [THREADS]: OUT without a known extension is GGUF
  GgufArgs gguf;
  bool dry_run = false;
  bool force = false;
  bool external_data = false;          // --external-data (ONNX output)
  bool no_metrics = false;  // --no-metrics: skip the per-tensor error (output bytes unchanged)
};

struct InspectArgs {
  std::string file;
};

struct VerifyArgs {
  std::string float_file, quant_file;
  size_t top = 0;  // rows of the per-tensor table; 0: all
  RunSettings run;
};

struct DequantizeArgs {
  std::string input, output;
  DType dtype = DType::F32;
  bool force = false;
  RunSettings run;
};

struct BenchArgs {
  uint64_t size = 16ull << 20;  // weights per measurement (f32: 64 MiB)
  RunSettings run;              // --isa limits the table to one ISA
  std::string model;            // --model FILE: sweep the schemes over this model instead
  bool csv = false;             // --csv: the --model table as CSV
};

struct CommandLine {
  CommandKind kind = CommandKind::Help;
  Verbosity verbosity;
  std::string help_text;           // Help: the text to print (stdout, exit 0)
  std::vector<std::string> notes;  // informative lines, shown with --verbose
  QuantizeArgs quantize;
  InspectArgs inspect;
  VerifyArgs verify;
  DequantizeArgs dequantize;
  BenchArgs bench;
};

// Parses the arguments after argv[0]. Throws Error (ErrorKind::Usage) naming the flag and
// the problem for an unknown flag, a missing or extra argument, or a bad value.
CommandLine parse_command_line(const std::vector<std::string>& args);

// The text of `wquant help` / `wquant help COMMAND`; "" for an unknown command.
std::string help_text(const std::string& command);

// "wquant 0.1.0 (...)": the version line.
std::string version_text();

}  // namespace wq::cli
