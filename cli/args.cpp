#include "cli/args.h"

#include "io/gguf_output.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "cli/help_text.h"
#include "cli/mnn_compat.h"
#include "engine/error.h"
#include "engine/gguf_mix.h"

#ifndef WQUANT_VERSION
#error "WQUANT_VERSION must be defined by the build"
#endif

namespace wq::cli {

namespace {

Error usage(const std::string& msg) { return Error(msg, ErrorKind::Usage); }

// Whole-text integer checks before CLI11 converts: its conversion accepts '' (as 0) and
// clamps a value out of range (2^64 became INT64_MAX). The message names the value.
CLI::Validator integer_in(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        int64_t v = 0;
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, v);
        if (text.empty() || ec == std::errc::invalid_argument || ptr != end) return "expected an integer, got '" + text + "'";
        if (ec == std::errc::result_out_of_range || v < lo || v > hi) {
          return "'" + text + "' is out of range (" + std::to_string(lo) + " to " + std::to_string(hi) + ")";
        }
        return "";
      },
      "");
}

CLI::Validator finite_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size()) return "expected a number, got '" + text + "'";
        if (errno == ERANGE || !std::isfinite(v) || !std::isfinite(float(v))) return "'" + text + "' is out of range";
        return "";
      },
      "");
}

// More threads than this is a typo, not a machine: refused instead of starting them.
constexpr int64_t kMaxThreads = 1024;

// Values the CLI11 options write into; copied into the CommandLine after parsing, when
// an option's count() tells whether the user gave it.
struct Bound {
  int bits = 0;
  int64_t block = 0, mnn_block = 0;
  int scale_bits = 0;
  bool hqq = false, fp16 = false, bf16 = false, asym_for_help = false;  // asym: see mnn_compat.h
  int hqq_steps = 0;
  float hqq_p = 0, hqq_beta = 0, hqq_kappa = 0;
  bool hqq_round_zero = false;
  std::string format, type, isa, size, params, framework, biz_code, hqq_stop;
  std::string model_file, mnn_model;
  std::string pos[4];  // the positional arguments of the command, in order
  std::string output_tensor_type, token_embedding_type, imatrix;
  std::vector<std::string> include_weights, exclude_weights, tensor_types;
  bool pure = false, leave_output = false, allow_requantize = false, keep_split = false;
  int threads = 0;
  bool quiet = false, verbose = false, json = false;
  bool dry_run = false, force = false, external_data = false;
  bool no_metrics = false;
  std::string bench_model;
  bool csv = false;
  size_t top = 0;
};

struct Options {
  CLI::App app{"", "wquant"};
  CLI::App* quantize = nullptr;
  CLI::App* inspect = nullptr;
  CLI::App* verify = nullptr;
  CLI::App* dequantize = nullptr;
  CLI::App* bench = nullptr;
  // quantize options whose presence matters
  CLI::Option *bits, *block, *mnn_block, *scale_bits, *hqq, *fp16, *format, *type, *params, *framework, *biz_code;
  CLI::Option *hqq_steps, *hqq_p, *hqq_beta, *hqq_kappa, *hqq_round_zero, *hqq_stop;
  CLI::Option *model_file, *mnn_model;
  CLI::Option *output_tensor_type, *token_embedding_type, *pure, *leave_output, *imatrix, *include_weights,
      *exclude_weights;
};

void add_verbosity(CLI::App* sub, Bound& b) {
  auto* q = sub->add_flag("-q,--quiet", b.quiet, "Print errors only (no progress, notes or summary)");
  auto* v = sub->add_flag("-v,--verbose", b.verbose, "Also print the plan, per-tensor lines and informative notes");
  q->excludes(v);
  sub->add_flag("--json", b.json, "Print the result as one JSON document on stdout (progress and notes stay on stderr)");
}

void add_run(CLI::App* sub, Bound& b, const char* isa_help) {
  sub->add_option("--isa", b.isa, isa_help)->type_name(isa_choices());
  sub->add_option("--threads", b.threads, "Worker threads (default: every CPU this process may run on; more are capped at them)")
      ->type_name("N")
      ->check(integer_in(INT32_MIN, INT32_MAX));
}

void build(Options& o, Bound& b) {
  CLI::App& app = o.app;
  app.description(std::string("wquant ") + WQUANT_VERSION + ": quantize the float weights of a model to 2-8 bits");
  app.footer(top_level_footer());
  app.get_formatter()->column_width(40);

  CLI::App* q = o.quantize = app.add_subcommand("quantize", "Quantize a model: IN (safetensors, GGUF, ONNX) to OUT (.wq, .safetensors, .gguf, .onnx)");
  q->add_option("IN", b.pos[0], "Input model (safetensors file or sharded index .json, GGUF, ONNX); or --modelFile")->type_name("");
  q->add_option("OUT", b.pos[1], "Output model: .wq, .safetensors, .gguf or .onnx; or --MNNModel (a GGUF type here: "
                                 "llama-quantize's IN TYPE form, OUT ggml-model-TYPE.gguf)")->type_name("");
  q->add_option("TYPE", b.pos[2], "llama-quantize's form: the GGUF type or mix, as --type")->type_name("");
  q->add_option("THREADS", b.pos[3], "llama-quantize's form: worker threads, as --threads")->type_name("");
  o.model_file = q->add_option("--modelFile", b.model_file, "MNNConvert spelling of IN")->type_name("IN");
  o.mnn_model = q->add_option("--MNNModel", b.mnn_model, "MNNConvert spelling of OUT")->type_name("OUT");
  o.bits = q->add_option("--bits,--weightQuantBits", b.bits, "Bits per weight, 2..8; 0 keeps every tensor float (default 4)")
               ->type_name("N")
               ->check(integer_in(INT32_MIN, INT32_MAX));
  o.block = q->add_option("--block", b.block,
                          "Weights per block along a row; -1 = channel-wise (default). A block that does not divide "
                          "a row falls back to channel-wise for that tensor, saying so")
                ->type_name("N")
                ->check(integer_in(INT64_MIN, INT64_MAX));
  o.mnn_block = q->add_option("--weightQuantBlock", b.mnn_block,
                              "MNNConvert's block: N input channels, spanning a conv's whole kernel (N*kh*kw "
                              "weights); only N >= 16 and a multiple of 16 that divides the input channels, else "
                              "channel-wise, as MNNConvert does; -1 = channel-wise")
                    ->type_name("N")
                    ->check(integer_in(INT64_MIN, INT64_MAX));
  o.scale_bits = q->add_option("--weightQuantScaleBit", b.scale_bits,
                               "MNNConvert's scale storage: 32 = f32 (default), 16 = f16 scales and zeros, "
                               "rounded toward zero as MNNConvert stores them (kept float tensors stay f32)")
                     ->type_name("32|16")
                     ->check(integer_in(INT32_MIN, INT32_MAX));
  q->add_flag("--asym,--weightQuantAsymmetric", b.asym_for_help,
              "Asymmetric (min + scale per block). Takes an optional 1/0/true/false: a bare flag, =1, ' 1' "
              "and ' true' all mean on (default: symmetric)");
  o.hqq = q->add_flag("--hqq", b.hqq, "HQQ: affine start refined by the half-quadratic solver (implies --asym)");
  o.hqq_steps = q->add_option("--hqq-steps", b.hqq_steps, "HQQ: most solver steps (default 20)")
                    ->type_name("N")
                    ->check(integer_in(INT32_MIN, INT32_MAX));
  o.hqq_p = q->add_option("--hqq-p", b.hqq_p, "HQQ: lp-norm of the shrinkage, in (0, 1) (default 0.7)")
                ->type_name("X")
                ->check(finite_number());
  o.hqq_beta = q->add_option("--hqq-beta", b.hqq_beta, "HQQ: initial penalty (default 10)")->type_name("X")->check(finite_number());
  o.hqq_kappa = q->add_option("--hqq-kappa", b.hqq_kappa, "HQQ: penalty growth per step, >= 1 (default 1.01)")
                    ->type_name("X")
                    ->check(finite_number());
  o.hqq_round_zero = q->add_flag("--hqq-round-zero", b.hqq_round_zero, "HQQ: round zero points to integers");
  o.hqq_stop = q->add_option("--hqq-stop", b.hqq_stop,
                             "HQQ: when the solver stops. block (default): each block on its own over the whole "
                             "step budget (early only where its zero provably stays put), keeping its best zero; "
                             "tensor: the reference's rule, all blocks together when the tensor's mean error "
                             "stops falling")
                   ->type_name("block|tensor");
  o.fp16 = q->add_flag("--fp16", b.fp16, "Store scales, zeros and kept-float tensors as f16");
  o.format = q->add_option("--format", b.format, "Output format (default: from OUT's extension)")
                 ->type_name("wq|safetensors|gguf|onnx");
  o.type = q->add_option("--type", b.type,
                          "GGUF type or llama-quantize mix: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q2_K_S, Q3_K_S, "
                          "Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, F16, BF16, F32, COPY (default: "
                          "from --bits and --asym/--hqq); per tensor the type llama-quantize picks")
               ->type_name("TYPE");
  o.output_tensor_type = q->add_option("--output-tensor-type", b.output_tensor_type,
                                       "GGUF: this ggml type for output.weight (llama-quantize's option)")
                             ->type_name("TYPE");
  o.token_embedding_type = q->add_option("--token-embedding-type", b.token_embedding_type,
                                         "GGUF: this ggml type for token_embd.weight (llama-quantize's option)")
                               ->type_name("TYPE");
  o.pure = q->add_flag("--pure", b.pure, "GGUF: every quantized tensor the mix's base type, no per-tensor choices");
  o.leave_output = q->add_flag("--leave-output-tensor", b.leave_output, "GGUF: output.weight stays as it is");
  q->add_option("--tensor-type", b.tensor_types,
                "GGUF: PATTERN=TYPE, repeatable: tensors whose name contains a match of the regex PATTERN (lower "
                "case) get TYPE instead of the mix's choice, the first such pattern winning (later llama-quantize's "
                "option)")
      ->type_name("PATTERN=TYPE")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  q->add_flag("--allow-requantize", b.allow_requantize,
              "GGUF: tensors already in llama.cpp blocks are dequantized and quantized again where the type "
              "changes (refused otherwise, as llama-quantize refuses it); loses more than quantizing the float model");
  q->add_flag("--keep-split", b.keep_split,
              "GGUF: a split IN (PREFIX-00001-of-0000N.gguf) gives N files OUT-0000K-of-0000N.gguf (OUT without "
              ".gguf), shard K holding IN's shard K's tensors, with llama.cpp's split.* keys: llama-quantize's option");
  o.imatrix = q->add_option("--imatrix", b.imatrix,
                            "GGUF: importance matrix of llama-imatrix (legacy .dat or GGUF), used as llama-quantize uses it")
                  ->type_name("FILE");
  o.include_weights = q->add_option("--include-weights", b.include_weights,
                                    "GGUF: use the imatrix only for tensors whose name contains this (repeatable)")
                          ->type_name("NAME")
                          ->allow_extra_args(false)  // one NAME an occurrence: IN OUT TYPE may follow
                          ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  o.exclude_weights = q->add_option("--exclude-weights", b.exclude_weights,
                                    "GGUF: do not use the imatrix for tensors whose name contains this (repeatable)")
                          ->type_name("NAME")
                          ->allow_extra_args(false)  // one NAME an occurrence: IN OUT TYPE may follow
                          ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  o.params = q->add_option("--params,--compressionParamsFile", b.params,
                           "Per-tensor rules (JSON, wquant's or MNN's form). If FILE does not exist, the "
                           "parameters used are written to it at the end of the run, before OUT")
                 ->type_name("FILE");
  o.framework = q->add_option("-f,--framework", b.framework, "MNNConvert's source framework (TF, CAFFE, ONNX, TFLITE, MNN, "
                                                        "TORCH, JSON): checked, then ignored; the format is read from the file")
                    ->type_name("FW");
  o.biz_code = q->add_option("--bizCode", b.biz_code, "MNNConvert's model flag: accepted and ignored")->type_name("CODE");
  add_run(q, b, "Force the kernels' ISA (default: the best this CPU runs, or WQUANT_ISA)");
  q->add_flag("--dry-run", b.dry_run, "Print the plan and the exact output size; write nothing");
  q->add_flag("--external-data", b.external_data,
              "ONNX output: tensor data in OUT.data beside OUT (always when the model passes 2 GB)");
  q->add_flag("--force", b.force, "Replace OUT if it exists (never the input itself)");
  q->add_flag("--no-metrics", b.no_metrics, "Do not measure each tensor's error (rel RMSE, SNR, max); output unchanged. "
              "--quiet without --json implies it (nothing would show the figures)");
  add_verbosity(q, b);
  q->footer(quantize_footer());

  CLI::App* i = o.inspect = app.add_subcommand("inspect", "List a model's tensors: types, shapes, quantization records, sizes");
  i->add_option("FILE", b.pos[0], "Model file (.wq, .safetensors, .gguf, or a sharded index .json)")->type_name("");
  add_verbosity(i, b);

  CLI::App* v = o.verify = app.add_subcommand("verify", "Error of a quantized model against its float original, per tensor, worst first");
  v->add_option("FLOAT", b.pos[0], "The float model")->type_name("");
  v->add_option("QUANT", b.pos[1], "The quantized model")->type_name("");
  v->add_option("--top", b.top, "Show only the N worst tensors (default: all)")
      ->type_name("N")
      ->check(integer_in(0, INT64_MAX));
  add_run(v, b, "Force the kernels' ISA used to dequantize");
  add_verbosity(v, b);
  v->footer(verify_footer());

  CLI::App* d = o.dequantize = app.add_subcommand("dequantize", "Write a quantized model's weights back as float safetensors");
  d->add_option("QUANT", b.pos[0], "The quantized model")->type_name("");
  d->add_option("OUT", b.pos[1], "The float model to write (.safetensors)")->type_name("");
  auto* f16 = d->add_flag("--fp16", b.fp16, "Write f16 (default f32)");
  auto* bf16 = d->add_flag("--bf16", b.bf16, "Write bf16 (default f32)");
  f16->excludes(bf16);
  d->add_flag("--force", b.force, "Replace OUT if it exists (never the input itself)");
  add_run(d, b, "Force the kernels' ISA used to dequantize");
  add_verbosity(d, b);

  CLI::App* be = o.bench = app.add_subcommand("bench", "Quantize and read throughput per ISA on this machine, as a table");
  be->add_option("--size", b.size, "Weights per measurement, with K/M/G suffixes (default 16M)")->type_name("N");
  add_run(be, b, "Measure this ISA only (default: every ISA this CPU runs)");
  be->add_option("--model", b.bench_model, "Sweep every scheme (bits 2-8 x blocks x sym/asym/HQQ, GGUF types) over "
                                            "this model's weights: bits per weight, error, time, Pareto front")
      ->type_name("FILE");
  be->add_flag("--csv", b.csv, "With --model: the table as CSV on stdout");
  add_verbosity(be, b);
  be->footer(bench_footer());
}

std::optional<Isa> parse_isa_flag(const CLI::App* sub, const std::string& text) {
  if (sub->count("--isa") == 0) return std::nullopt;
  Isa isa;
  if (!parse_isa(text, &isa)) throw usage("--isa: expected one of " + isa_names() + ", got '" + text + "'");
  return isa;
}

RunSettings run_settings(const CLI::App* sub, const Bound& b) {
  RunSettings r;
  r.isa = parse_isa_flag(sub, b.isa);
  if (b.threads < 0) throw usage("--threads: expected a number of threads >= 1 (0: every core), got " + std::to_string(b.threads));
  if (b.threads > kMaxThreads) {
    throw usage("--threads: " + std::to_string(b.threads) + " is more than wquant runs (at most " +
                std::to_string(kMaxThreads) + "; 0: every core)");
  }
  r.threads = b.threads;
  return r;
}

uint64_t parse_size(const std::string& text) {
  size_t pos = 0;
  unsigned long long n = 0;
  try {
    n = std::stoull(text, &pos);
  } catch (const std::exception&) {
    throw usage("--size: expected a number of weights such as 4M, got '" + text + "'");
  }
  uint64_t mult = 1;
  const std::string suffix = text.substr(pos);
  if (suffix == "K" || suffix == "k") mult = 1ull << 10;
  else if (suffix == "M" || suffix == "m") mult = 1ull << 20;
  else if (suffix == "G" || suffix == "g") mult = 1ull << 30;
  else if (!suffix.empty()) throw usage("--size: unknown suffix '" + suffix + "' (K, M or G)");
  if (n == 0 || n > (uint64_t(1) << 34) / mult) {
    throw usage("--size: expected between 1 and 16G weights, got '" + text + "'");
  }
  return n * mult;
}

OutputFormat parse_format(const std::string& text) {
  std::string s;
  for (char c : text) s += char(std::tolower(static_cast<unsigned char>(c)));
  if (!s.empty() && s[0] == '.') s.erase(0, 1);
  if (s == "wq") return OutputFormat::Wq;
  if (s == "safetensors") return OutputFormat::Safetensors;
  if (s == "gguf") return OutputFormat::Gguf;
  if (s == "onnx") return OutputFormat::Onnx;
  throw usage("--format: expected wq, safetensors, gguf or onnx, got '" + text + "'");
}

// The positional arguments given (CLI11 fills them in order).
std::vector<std::string> positionals(const CLI::App* sub, const Bound& b) {
  std::vector<std::string> v;
  for (const CLI::Option* o : sub->get_options([](const CLI::Option* o) { return o->get_positional(); })) {
    if (o->count()) v.push_back(b.pos[v.size()]);
  }
  return v;
}

void two_paths(const CLI::App* sub, const Bound& b, const char* what, std::string* a, std::string* c) {
  const std::vector<std::string> v = positionals(sub, b);
  if (v.size() != 2) {
    throw usage(sub->get_name() + ": expected " + what + " (see 'wquant help " + sub->get_name() + "')");
  }
  *a = v[0];
  *c = v[1];
}

// --type / TYPE: a legacy block type sets the block (checked against --bits and --asym as
// before); any name is also the llama-quantize mix the GGUF plan follows.
void set_type(const std::string& text, const char* flag, QuantizeArgs& a) {
  const auto mix = gguf_mix_named(text);
  if (!mix) {
    std::string names;
    for (const GgufMix& m : gguf_mixes()) names += std::string(names.empty() ? "" : ", ") + m.name;
    throw usage(std::string(flag) + ": expected one of " + names + ", got '" + text + "'");
  }
  a.said.mix = mix->name;
  GgmlBlock t;
  if (parse_ggml_type(mix->name, &t)) a.said.ggml = t;
}

// THREADS in llama-quantize's form: as --threads takes it, and a negative number, which
// llama-quantize takes for every core (its nthread <= 0), as 0. (It reads the number with
// std::stoi, so "4abc" is 4 there; here text after the number is refused.)
int parse_threads_positional(const std::string& text) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || ptr != end || v > kMaxThreads) {
    throw usage("quantize: THREADS: expected a number of threads from 0 (every core; or negative, as llama-quantize takes it) to " +
                std::to_string(kMaxThreads) + ", got '" + text + "'");
  }
  return int(std::max<int64_t>(v, 0));
}

// The type's name as llama-quantize spells it in the OUT it makes up (its QUANT_OPTIONS
// entry: an alias where given, or the first entry of a numeric ftype, Q4_K for 15).
std::string llama_quantize_type_name(const std::string& text, const GgufMix& mix) {
  const bool numeric = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  std::string upper = text;
  for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
  for (const auto& [alias, target] : gguf_mix_aliases()) {
    if (numeric ? std::string(mix.name) == target : upper == alias) return alias;
  }
  return mix.name;
}

void fill_quantize(const Options& o, const Bound& b, const MnnNormalised& norm, CommandLine& cl) {
  QuantizeArgs& a = cl.quantize;
  // IN and OUT: positionals or the MNN flags, not both.
  std::vector<std::string> pos = positionals(o.quantize, b);
  // llama-quantize's form without OUT, IN TYPE [THREADS] (TYPE is tried first, as there):
  // OUT is [IN's folder]/ggml-model-TYPE.gguf, as llama-quantize names it.
  if ((pos.size() == 2 || pos.size() == 3) && !o.model_file->count() && !o.mnn_model->count()) {
    if (const auto mix = gguf_mix_named(pos[1])) {
      const size_t slash = pos[0].find_last_of('/');
      const std::string folder = slash == std::string::npos ? "" : pos[0].substr(0, slash + 1);
      pos.insert(pos.begin() + 1, folder + "ggml-model-" + llama_quantize_type_name(pos[1], *mix) + ".gguf");
    }
  }
  // llama-quantize's form: IN OUT TYPE [THREADS].
  if (pos.size() >= 3) {
    if (o.model_file->count() || o.mnn_model->count()) throw usage("quantize: TYPE after IN OUT is llama-quantize's form; it does not mix with --modelFile / --MNNModel");
    if (o.type->count()) throw usage("quantize: the type is given twice (TYPE after IN OUT and --type)");
    set_type(pos[2], "TYPE", a);
    a.llama_form = true;
    if (pos.size() == 4) {
      if (o.quantize->count("--threads")) throw usage("quantize: the threads are given twice (THREADS after TYPE and --threads)");
      a.positional_threads = parse_threads_positional(pos[3]);
    }
    pos.resize(2);
  }
  if (o.model_file->count()) {
    if (pos.size() >= 2 || (pos.size() == 1 && o.mnn_model->count())) {
      throw usage("quantize: IN is given twice (as an argument and as --modelFile)");
    }
    pos.insert(pos.begin(), b.model_file);
  }
  if (o.mnn_model->count()) {
    if (pos.size() >= 2) throw usage("quantize: OUT is given twice (as an argument and as --MNNModel)");
    pos.push_back(b.mnn_model);
  }
  if (pos.size() != 2) {
    throw usage("quantize: expected IN and OUT (or --modelFile IN --MNNModel OUT); see 'wquant help quantize'");
  }
  a.input = pos[0];
  a.output = pos[1];
  if (a.input.empty() || a.output.empty()) throw usage("quantize: IN and OUT must not be empty");

  SpecSettings& s = a.said;
  if (o.bits->count()) s.bits = b.bits;
  if (o.block->count() && o.mnn_block->count()) {
    throw usage("quantize: the block is given twice (--block and --weightQuantBlock); they count differently, "
                "so use one");
  }
  if (o.block->count()) s.block = b.block;
  if (o.mnn_block->count()) {
    s.block = b.mnn_block;
    s.mnn_block = true;
  }
  if (o.scale_bits->count()) s.scale_bits = b.scale_bits;
  s.mnn_form = norm.mnn_form;
  s.asym = norm.asym;
  if (o.hqq->count()) s.hqq = b.hqq;
  if (o.fp16->count()) s.fp16 = b.fp16;
  if (o.hqq_steps->count()) s.hqq_steps = b.hqq_steps;
  if (o.hqq_p->count()) s.hqq_p = b.hqq_p;
  if (o.hqq_beta->count()) s.hqq_beta = b.hqq_beta;
  if (o.hqq_kappa->count()) s.hqq_kappa = b.hqq_kappa;
  if (o.hqq_round_zero->count()) s.hqq_round_zero = b.hqq_round_zero;
  if (o.hqq_stop->count()) {
    HqqStop stop;
    if (!parse_hqq_stop(b.hqq_stop, &stop)) throw usage("--hqq-stop: expected block or tensor, got '" + b.hqq_stop + "'");
    s.hqq_stop = stop;
  }
  // Range checks here, so a bad value is reported as the flag the user typed. HQQ options
  // without --hqq may still meet "hqq": true in a params file: that combination is
  // checked once merged (cmd_quantize.cpp), so probe as if HQQ were on.
  SpecSettings probe = s;
  const bool hqq_opts = s.hqq_steps || s.hqq_p || s.hqq_beta || s.hqq_kappa || s.hqq_round_zero || s.hqq_stop;
  if (hqq_opts && !probe.hqq && !(probe.asym && !*probe.asym)) probe.hqq = true;
  resolve_settings(probe, "quantize");

  if (o.format->count()) a.format = parse_format(b.format);
  if (o.type->count()) set_type(b.type, "--type", a);
  if (o.output_tensor_type->count()) a.gguf.output_type = ggml_type_argument(b.output_tensor_type, "--output-tensor-type");
  if (o.token_embedding_type->count()) a.gguf.token_embd_type = ggml_type_argument(b.token_embedding_type, "--token-embedding-type");
  if (o.imatrix->count()) {
    a.gguf.imatrix = b.imatrix;
    if (a.gguf.imatrix.empty()) throw usage("--imatrix: expected a file name");
  }
  a.gguf.include_weights = b.include_weights;
  a.gguf.exclude_weights = b.exclude_weights;
  if (!a.gguf.include_weights.empty() && !a.gguf.exclude_weights.empty()) {
    throw usage("--include-weights and --exclude-weights cannot be used together (as in llama-quantize)");
  }
  if ((!a.gguf.include_weights.empty() || !a.gguf.exclude_weights.empty()) && a.gguf.imatrix.empty()) {
    throw usage(std::string(a.gguf.include_weights.empty() ? "--exclude-weights" : "--include-weights") +
                " selects imatrix entries: it needs --imatrix FILE");
  }
  a.gguf.pure = b.pure;
  a.gguf.allow_requantize = b.allow_requantize;
  for (const std::string& text : b.tensor_types) a.gguf.tensor_types.push_back(tensor_type_rule(text, "--tensor-type"));
  a.gguf.leave_output = b.leave_output;
  a.gguf.keep_split = b.keep_split;
  if (o.params->count()) {
    a.params_file = b.params;
    if (a.params_file.empty()) throw usage("--params: expected a file name");
  }
  if (o.framework->count()) {
    const std::string& text = b.framework;
    a.framework = canonical_framework(text);
    if (a.framework.empty()) {
      throw usage("-f: expected one of TF, CAFFE, ONNX, TFLITE, MNN, TORCH, JSON (MNNConvert's frameworks), got '" +
                  text + "'");
    }
    cl.notes.push_back("-f " + a.framework + " is informative only: wquant reads the input's format from its content");
  }
  if (o.biz_code->count()) {
    a.biz_code = b.biz_code;
    cl.notes.push_back("--bizCode is MNNConvert's model flag; wquant's outputs have no such field, so it is ignored");
  }
  if (norm.implied_quantize) cl.notes.push_back("no command given: running 'quantize' (MNNConvert form)");
  a.run = run_settings(o.quantize, b);
  if (a.positional_threads) a.run.threads = *a.positional_threads;
  a.dry_run = b.dry_run;
  a.external_data = b.external_data;
  a.force = b.force;
  // The error figures are only ever shown, in the summary or the JSON document: --quiet
  // without --json shows neither, so they are not measured (on an RTN conversion the
  // measurement is about a third of the quantize kernel's time).
  a.no_metrics = b.no_metrics || (b.quiet && !b.json);
}

}  // namespace

std::string version_text() {
  std::string s = std::string("wquant ") + WQUANT_VERSION + " (kernels:";
  for (int i = 0; i < kIsaCount; ++i) {
    if (isa_available(Isa(i))) s += std::string(" ") + isa_name(Isa(i));
  }
  return s + "; best " + isa_name(best_isa()) + ")";
}

std::string help_text(const std::string& command) {
  Options o;
  Bound b;
  build(o, b);
  if (command.empty()) return o.app.help();
  for (CLI::App* sub : {o.quantize, o.inspect, o.verify, o.dequantize, o.bench}) {
    if (sub->get_name() == command) return sub->help("wquant");
  }
  return "";
}

CommandLine parse_command_line(const std::vector<std::string>& raw) {
  CommandLine cl;
  if (raw.empty()) throw usage("no command given (quantize, inspect, verify, dequantize, bench); see 'wquant help'");
  if (raw[0] == "--version") {
    if (raw.size() > 1) throw usage("--version takes no arguments");
    cl.kind = CommandKind::Version;
    return cl;
  }
  if (raw[0] == "help") {
    if (raw.size() > 2) throw usage("help: expected at most one command name");
    cl.help_text = help_text(raw.size() == 2 ? raw[1] : "");
    if (cl.help_text.empty()) throw usage("help: unknown command '" + raw[1] + "'");
    return cl;
  }

  const MnnNormalised norm = normalise_mnn_args(raw);
  static const char* const kCommands[] = {"quantize", "inspect", "verify", "dequantize", "bench", "-h", "--help"};
  if (std::find(std::begin(kCommands), std::end(kCommands), norm.args[0]) == std::end(kCommands)) {
    throw usage("unknown command '" + norm.args[0] + "' (quantize, inspect, verify, dequantize, bench); see 'wquant help'");
  }
  Options o;
  Bound b;
  build(o, b);
  std::vector<std::string> reversed(norm.args.rbegin(), norm.args.rend());  // CLI11 parses a reversed vector
  try {
    o.app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    for (CLI::App* sub : {o.quantize, o.inspect, o.verify, o.dequantize, o.bench}) {
      if (o.app.got_subcommand(sub)) {
        cl.help_text = sub->help("wquant");
        return cl;
      }
    }
    cl.help_text = o.app.help();
    return cl;
  } catch (const CLI::ParseError& e) {
    std::string where;
    for (CLI::App* sub : {o.quantize, o.inspect, o.verify, o.dequantize, o.bench}) {
      if (o.app.got_subcommand(sub)) where = sub->get_name();
    }
    throw usage((where.empty() ? std::string() : where + ": ") + e.what() + " (see 'wquant help" +
                (where.empty() ? std::string() : " " + where) + "')");
  }

  if (o.app.got_subcommand(o.quantize)) cl.kind = CommandKind::Quantize;
  else if (o.app.got_subcommand(o.inspect)) cl.kind = CommandKind::Inspect;
  else if (o.app.got_subcommand(o.verify)) cl.kind = CommandKind::Verify;
  else if (o.app.got_subcommand(o.dequantize)) cl.kind = CommandKind::Dequantize;
  else if (o.app.got_subcommand(o.bench)) cl.kind = CommandKind::Bench;
  else throw usage("unknown command '" + raw[0] + "' (quantize, inspect, verify, dequantize, bench); see 'wquant help'");

  cl.verbosity = Verbosity{b.quiet, b.verbose, b.json};
  switch (cl.kind) {
    case CommandKind::Quantize:
      fill_quantize(o, b, norm, cl);
      break;
    case CommandKind::Inspect:
      if (positionals(o.inspect, b).size() != 1) throw usage("inspect: expected FILE (see 'wquant help inspect')");
      cl.inspect.file = b.pos[0];
      break;
    case CommandKind::Verify:
      two_paths(o.verify, b, "FLOAT QUANT", &cl.verify.float_file, &cl.verify.quant_file);
      cl.verify.top = b.top;
      cl.verify.run = run_settings(o.verify, b);
      break;
    case CommandKind::Dequantize:
      two_paths(o.dequantize, b, "QUANT OUT.safetensors", &cl.dequantize.input, &cl.dequantize.output);
      cl.dequantize.dtype = b.fp16 ? DType::F16 : b.bf16 ? DType::BF16 : DType::F32;
      cl.dequantize.force = b.force;
      cl.dequantize.run = run_settings(o.dequantize, b);
      break;
    case CommandKind::Bench:
      if (o.bench->count("--size")) cl.bench.size = parse_size(b.size);
      cl.bench.run = run_settings(o.bench, b);
      cl.bench.model = b.bench_model;
      cl.bench.csv = b.csv;
      if (cl.bench.csv && cl.bench.model.empty()) throw usage("--csv: only with --model FILE");
      if (cl.bench.csv && cl.verbosity.json) throw usage("--csv and --json: choose one");
      break;
    default:
      break;
  }
  return cl;
}

}  // namespace wq::cli
