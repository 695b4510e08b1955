// wquant quantize IN OUT: settings (flags, params file) -> plan -> pipeline -> summary.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/output_path.h"
#include "cli/params_file.h"
#include "cli/params_for_output.h"
#include "cli/run_support.h"
#include "engine/error.h"
#include "engine/pipeline.h"
#include "engine/quantize_columns.h"
#include "engine/scheduler.h"
#include "engine/tensor.h"
#include "engine/gguf_mix.h"
#include "io/gguf_output.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "io/gguf_writer_keys.h"
#include "io/model_reader.h"
#include "io/model_writer.h"
#include "io/output_file.h"
#include "io/sha256.h"
#include "kernels/ggml_types.h"

namespace wq::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

WriterOptions writer_options(const QuantizeArgs& a, const GgufOutputKeys& gguf_keys) {
  WriterOptions o;
  o.external_data = a.external_data;
  o.output_path = a.output;
  o.gguf_keys = gguf_keys;
  return o;
}

OutputFormat output_format(const QuantizeArgs& a) {
  if (a.format) return *a.format;
  if (a.gguf.keep_split) return OutputFormat::Gguf;  // OUT is a shard prefix, perhaps without .gguf
  // llama-quantize's form writes GGUF whatever OUT is called (out-F16, model.bin);
  // a name of another format's (.wq, .onnx) still says which.
  if (a.llama_form) {
    try {
      return format_from_path(a.output);
    } catch (const Error&) {
      return OutputFormat::Gguf;
    }
  }
  return format_from_path(a.output);  // (its error says how to name OUT, or to pass --format)
}

// Everything the run decided before reading any tensor data.
struct Setup {
  OutputFormat format = OutputFormat::Wq;
  EffectiveSpec eff;
  GgmlBlock ggml = GgmlBlock::Q4_0;
  ParamsFile params;
  std::string params_to_write;  // --params FILE that does not exist yet
  std::unique_ptr<ModelReader> reader;
  std::vector<std::string> inputs;  // files the model is read from
  std::vector<std::string> read_files;  // inputs, the importance matrix, a params file read: never replaced
  // GGUF output: the importance matrix (the command line's, else the params file's) and
  // its filters; its digest where a params file is written or names one.
  ParamsImatrix imatrix;
  std::vector<TensorPlan> plan;
  uint64_t planned_bytes = 0;
  // GGUF output: llama-quantize's mix and options, the model's hyper-parameters, the
  // importance matrix (after --include-weights / --exclude-weights), the keys.
  GgufOutput gguf;
  // The files written: OUT, or with --keep-split the shards PREFIX-0000K-of-0000N.gguf.
  std::vector<std::string> outputs;
  std::string split_prefix;       // --keep-split: PREFIX
  std::vector<size_t> gguf_order;  // --keep-split: the input files' tensor order
};

// The mix of a GGUF run: --type / TYPE when it names a mix of K types or floats (its
// types are llama-quantize's, so --bits, --block and --asym have nothing to set; --hqq refines
// the minima of its Q2_K / Q4_K / Q5_K tensors), else the legacy type from --type or --bits
// (resolve_ggml_type). The rest, as the public API's convert() does it: io/gguf_output.h.
// `where`: "quantize", or the params file with the command line when its defaults count.
void choose_mix(const QuantizeArgs& a, const SpecSettings& merged, const std::string& where, Setup& s) {
  GgmlBlock legacy;
  const bool is_legacy = !merged.mix || parse_ggml_type(*merged.mix, &legacy);
  GgufOutputRequest r;
  if (is_legacy) {
    s.ggml = resolve_ggml_type(s.eff, merged, where);
    r.mix = *gguf_mix_named(ggml_block_name(s.ggml));
  } else {
    r.mix = *gguf_mix_named(*merged.mix);
    // --hqq stays: it refines the minima of the tensors the mix gives Q2_K, Q4_K or Q5_K.
    // (Each setting named as the user gave it: a flag, or the params file's defaults.)
    auto named = [&](const auto& flag, const char* option, const char* key) {
      return flag ? std::string(option) : a.params_file + " (defaults): \"" + key + "\"";
    };
    const char* said = merged.bits ? "bits" : merged.block ? "block" : merged.asym ? "asym" : nullptr;
    if (said) {
      const std::string setting = merged.bits ? named(a.said.bits, "--bits", "bits")
                                  : merged.block ? named(a.said.block, "--block", "block")
                                                 : named(a.said.asym, "--asym", "asym");
      throw Error(named(a.said.mix, "--type ", "type") + (a.said.mix ? "" : " ") + r.mix.name +
                      " sets every tensor's type as llama-quantize does; " + setting + " has nothing to set there",
                  ErrorKind::Usage);
    }
  }
  r.imatrix = s.imatrix.path;
  r.include_weights = s.imatrix.include;
  r.exclude_weights = s.imatrix.exclude;
  r.pure = a.gguf.pure;
  r.leave_output = a.gguf.leave_output;
  r.output_type = a.gguf.output_type;
  r.token_embd_type = a.gguf.token_embd_type;
  r.tensor_types = a.gguf.tensor_types;
  s.gguf = prepare_gguf_output(*s.reader, a.input, a.output, r);
}

void check_params_path(const QuantizeArgs& a, const Setup& s) {
  if (same_path(a.params_file, a.output)) {
    throw Error(a.params_file + ": the params file and OUT are the same file", ErrorKind::Usage);
  }
  // ONNX output may put its data beside OUT, as OUT.data.
  if (s.format == OutputFormat::Onnx && same_path(a.params_file, a.output + ".data")) {
    throw Error(a.params_file + ": the params file is " + a.output + ".data, where OUT's external data goes", ErrorKind::Usage);
  }
  for (const std::string& in : s.inputs) {
    if (same_path(a.params_file, in)) {
      throw Error(a.params_file + ": the params file is the input model " + in, ErrorKind::Usage);
    }
  }
}

// The importance matrix of the run, field by field the command line's, else the params
// file's (which it read from its "defaults" with the digest of the file the run that wrote
// it used: a file that has changed since is refused, as it would give other bytes).
ParamsImatrix choose_imatrix(const QuantizeArgs& a, const Setup& s, Console& con) {
  const ParamsImatrix& saved = s.params.imatrix;
  ParamsImatrix m;
  m.path = a.gguf.imatrix.empty() ? saved.path : a.gguf.imatrix;
  m.include = a.gguf.include_weights.empty() ? saved.include : a.gguf.include_weights;
  m.exclude = a.gguf.exclude_weights.empty() ? saved.exclude : a.gguf.exclude_weights;
  if (saved.path.empty()) return m;
  if (s.format != OutputFormat::Gguf) {
    throw Error(a.params_file + ": defaults.imatrix: an importance matrix applies to GGUF output only; this OUT is " +
                    output_format_name(s.format),
                ErrorKind::Usage);
  }
  if (!a.gguf.imatrix.empty()) {
    if (a.gguf.imatrix != saved.path) con.note("--imatrix " + a.gguf.imatrix + " replaces " + a.params_file + "'s " + saved.path);
    return m;
  }
  if (!saved.sha256.empty()) {
    m.sha256 = sha256_file(m.path);
    if (m.sha256.empty()) {
      throw Error(a.params_file + ": defaults.imatrix: cannot read " + m.path +
                      (fs::path(m.path).is_relative() ? " (a relative path is read from the current directory, as the run that wrote it read it)" : "") +
                      "; give --imatrix FILE",
                  ErrorKind::Input);
    }
    if (m.sha256 != saved.sha256) {
      throw Error(a.params_file + ": defaults.imatrix: " + m.path + " has changed since this file was written (sha256 " +
                      m.sha256 + ", recorded " + saved.sha256 + "): it would give other bytes; give --imatrix FILE to use it",
                  ErrorKind::Input);
    }
  }
  return m;
}

// --keep-split (llama-quantize's): the shards to write, one an input shard, checked as OUT
// is; the tensors in the input files' order, which llama-quantize then visits them in.
void keep_split(const QuantizeArgs& a, const GgufReader& g, Setup& s, Console& con) {
  s.split_prefix = keep_split_prefix(a.output);
  s.outputs = gguf_split_outputs(s.split_prefix, g);
  if (g.shard_count() == 1) {
    con.note(a.input + " is not split: --keep-split writes it as one shard, " + s.outputs[0] +
             ", with its tensors in file order (as llama-quantize does)");
  }
  for (const std::string& out : s.outputs) {
    check_output_path(out, s.read_files, a.force);
    if (!a.params_file.empty() && same_path(a.params_file, out)) {
      throw Error(a.params_file + ": the params file and the output shard " + out + " are the same file", ErrorKind::Usage);
    }
  }
  s.gguf_order = gguf_file_order(g);
}

// OUT as the messages name it: OUT, or the first and last shard.
std::string output_label(const Setup& s) {
  return s.outputs.size() == 1 ? s.outputs[0] : s.outputs.front() + " ... " + s.outputs.back();
}

Setup prepare(const QuantizeArgs& a, Console& con) {
  Setup s;
  s.format = output_format(a);
  s.inputs = input_files(a.input);
  bool have_params = false;
  if (!a.params_file.empty()) {
    check_params_path(a, s);
    // (A path that cannot even be looked at, a symbolic-link loop or a name too long, is
    // neither a file to read nor one that can be written.)
    std::error_code ec;
    const fs::file_status st = fs::status(a.params_file, ec);
    if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory) {
      throw Error(a.params_file + ": cannot be read or written as the params file: " + ec.message(), ErrorKind::Output);
    }
    if (fs::exists(st)) {
      s.params = read_params_file(a.params_file);
      have_params = true;
    } else {
      s.params_to_write = a.params_file;
    }
  }
  const SpecSettings merged = a.said.or_else(s.params.defaults);
  if (have_params) refuse_gguf_types_elsewhere(s.params, s.format);
  s.eff = resolve_settings(merged, have_params ? a.params_file + " (defaults) with the command line" : "quantize");
  // GGUF output: the block type (Q4_1 / Q5_1) says asymmetric already; nothing implied.
  if (s.eff.asym_implied && s.format != OutputFormat::Gguf) {
    con.note("--hqq implies asymmetric quantization (HQQ fits a zero point per block)");
  }

  s.reader = open_model(a.input);
  const std::vector<TensorInfo>& infos = s.reader->tensors();
  for (const TensorInfo& t : infos) {
    // Codes of an earlier run are not weights: quantizing them again would only copy
    // bytes the writers cannot lay out. Say what to do instead.
    if (t.kind == StoredKind::Quantized) {
      throw Error(s.reader->path() + ": " + t.name + ": is already quantized by wquant (" + t.type_name +
                  "); re-quantizing is not supported: run 'wquant dequantize " + a.input +
                  " float.safetensors' first and quantize that");
    }
  }
  // Files the reader found it reads (ONNX external data) are inputs too, and so are the
  // importance matrix and a params file read: --force never replaces any of them.
  s.inputs = model_files(a.input, *s.reader);
  s.read_files = s.inputs;
  s.imatrix = choose_imatrix(a, s, con);
  if (!s.imatrix.path.empty()) s.read_files.push_back(s.imatrix.path);
  if (!a.params_file.empty() && s.params_to_write.empty()) s.read_files.push_back(a.params_file);
  if (!a.gguf.keep_split) check_output_path(a.output, s.read_files, a.force);
  s.outputs = {a.output};
  // OUT.data may be written (the writer decides, below) and its killed runs' temporaries
  // are removed either way: no input may be it or named as one of those.
  if (s.format == OutputFormat::Onnx) check_not_an_input(a.output + ".data", s.read_files);
  // The params file to write must be writable too, before any work: it is written before
  // OUT is committed, so a run never ends with OUT in place but its parameters lost. (A
  // dry run writes neither, and says no where the run would.)
  if (!s.params_to_write.empty()) {
    check_output_path(s.params_to_write, s.read_files, false, "name another params file: --force never replaces one");
  }

  if (s.format == OutputFormat::Gguf) {
    // llama-quantize applies --tensor-type to the mix's choices, which --pure turns off:
    // both then give every tensor the base type. Said, not silently done.
    if (a.gguf.pure && !a.gguf.tensor_types.empty()) {
      con.warn("--tensor-type has no effect with --pure (every quantized tensor gets the base type, as in "
               "llama-quantize); drop --pure to apply it");
    }
    choose_mix(a, merged, have_params ? a.params_file + " (defaults) with the command line" : "quantize", s);
    if (a.gguf.keep_split) keep_split(a, dynamic_cast<const GgufReader&>(*s.reader), s, con);
  } else if (a.said.mix || a.gguf.any_option()) {
    std::vector<std::string> given = a.gguf.given();
    if (a.said.mix) given.insert(given.begin(), "--type");
    std::string names;
    for (size_t i = 0; i < given.size(); ++i) names += (i == 0 ? "" : i + 1 == given.size() ? " and " : ", ") + given[i];
    throw Error(a.output + ": " + names + (given.size() == 1 ? " applies" : " apply") +
                    " to GGUF output only (llama-quantize's options); this OUT is " + output_format_name(s.format),
                ErrorKind::Usage);
  }

  PlanOptions po;
  po.defaults = s.eff.spec;
  po.keep_f16 = s.eff.kept_f16;
  po.format = s.format;
  po.ggml = s.ggml;
  if (s.format == OutputFormat::Gguf) {
    s.gguf.apply(po);
    po.allow_requantize = a.gguf.allow_requantize;
    if (a.gguf.keep_split) po.gguf_order = &s.gguf_order;
  }
  if (s.eff.keep_float) {
    TensorRule all;
    all.pattern = "*";
    all.skip = true;
    po.rules.push_back(all);
  }
  po.rules.insert(po.rules.end(), s.params.rules.begin(), s.params.rules.end());
  if (have_params) {
    std::vector<std::string> names;
    for (const TensorInfo& t : infos) names.push_back(t.name);
    for (const std::string& e : unmatched_entries(s.params, names)) {
      con.warn(a.params_file + ": " + e + " matches no tensor of " + a.input);
    }
  }
  s.plan = naming_file(a.input, s.inputs, [&] { return make_plan(infos, po); });
  size_t requantized = 0, refined = 0;
  for (const TensorPlan& p : s.plan) {
    if (!p.note.empty()) con.note(p.note);
    requantized += p.requantize;
    refined += p.spec.hqq && (p.action == TensorAction::Ggml || p.action == TensorAction::Quantize);
  }
  // --hqq that changes nothing (a K mix whose every tensor fell back to a type it does not
  // refine, stories260K's 64-wide rows): said, not a silent no-op.
  if (po.defaults.hqq && refined == 0 && s.format == OutputFormat::Gguf) {
    con.warn("--hqq refines no tensor here: no tensor the mix quantizes has a type HQQ refines (Q4_1, Q5_1, Q2_K, "
             "Q4_K, Q5_K; a K mix's fallback types keep llama-quantize's bytes), so the file is the one without it");
  }
  if (requantized) {
    con.warn("--allow-requantize: " + std::to_string(requantized) + " tensors already in llama.cpp blocks are "
             "dequantized and quantized again, which loses more than quantizing the float model");
  }
  std::vector<std::string> known = s.outputs;
  known.insert(known.end(), s.inputs.begin(), s.inputs.end());
  s.planned_bytes = naming_file(a.output, known, [&] {
    return a.gguf.keep_split ? gguf_split_planned_bytes(s.split_prefix, s.plan, *s.reader, s.gguf.keys)
                             : planned_output_bytes(s.plan, infos, s.format, *s.reader, writer_options(a, s.gguf.keys));
  });
  return s;
}

json plan_json(const Setup& s) {
  const std::vector<TensorInfo>& infos = s.reader->tensors();
  json tensors = json::array();
  for (const TensorPlan& p : s.plan) {
    const TensorInfo& info = infos[p.source_index];
    tensors.push_back({{"name", p.name},
                       {"shape", p.shape},
                       {"source_type", info.type_name},
                       {"action", action_name(p.action)},
                       {"what", describe_plan_entry_with_notes(p, info)},
                       {"bytes_in", info.nbytes}});
  }
  return tensors;
}

void print_plan(const Setup& s) {
  const std::vector<TensorInfo>& infos = s.reader->tensors();
  size_t w = 6;
  for (const TensorPlan& p : s.plan) w = std::max(w, printable(p.name).size());
  std::printf("%-*s  %-12s  %-6s  %10s  %s\n", int(w), "tensor", "shape", "from", "bytes in", "becomes");
  for (const TensorPlan& p : s.plan) {
    const TensorInfo& info = infos[p.source_index];
    std::printf("%-*s  %-12s  %-6s  %10s  %s\n", int(w), printable(p.name).c_str(), format_shape(p.shape).c_str(),
                info.type_name.c_str(), format_bytes(info.nbytes).c_str(), describe_plan_entry_with_notes(p, info).c_str());
  }
}

int dry_run(const QuantizeArgs& a, const Setup& s, Console& con) {
  const uint64_t in_bytes = total_file_bytes(s.inputs);
  if (!s.params_to_write.empty()) {
    con.note("dry run: " + s.params_to_write + " does not exist and is not written (a real run writes the parameters "
             "it used there)");
  }
  if (con.verbosity().json) {
    json doc = {{"command", "quantize"},
                {"dry_run", true},
                {"input", a.input},
                {"output", a.output},
                {"outputs", s.outputs},
                {"format", output_format_name(s.format)},
                {"input_bytes", in_bytes},
                {"planned_output_bytes", s.planned_bytes},
                {"compression_ratio", s.planned_bytes ? double(in_bytes) / double(s.planned_bytes) : 0.0},
                {"tensors", plan_json(s)},
                {"notes", con.said()}};
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else if (con.human()) {
    print_plan(s);
    std::printf("dry run: %s (%s) -> %s (%s): exactly %s (%llu bytes), ratio %sx; nothing written\n", a.input.c_str(),
                format_bytes(in_bytes).c_str(), output_label(s).c_str(), output_format_name(s.format),
                format_bytes(s.planned_bytes).c_str(), static_cast<unsigned long long>(s.planned_bytes),
                format_fixed(s.planned_bytes ? double(in_bytes) / double(s.planned_bytes) : 0.0, 2).c_str());
  }
  return 0;
}

struct RunResult {
  PipelineStats stats;
  uint64_t output_bytes = 0;
  uint64_t weights = 0;  // weights quantized (Quantize and Ggml entries)
  int threads = 0;
};

std::vector<const TensorReport*> worst_tensors(const PipelineStats& st, size_t n) {
  std::vector<const TensorReport*> r;
  for (const TensorReport& t : st.tensors) {
    if (t.has_error) r.push_back(&t);
  }
  std::stable_sort(r.begin(), r.end(), [](const TensorReport* a, const TensorReport* b) {
    return a->error.rel_rmse > b->error.rel_rmse;
  });
  if (r.size() > n) r.resize(n);
  return r;
}

void print_summary(const QuantizeArgs& a, const Setup& s, const RunResult& r, Isa isa, Console& con) {
  const uint64_t in_bytes = total_file_bytes(s.inputs);
  const PipelineStats& st = r.stats;
  size_t quantized = 0, kept = 0;
  for (const TensorReport& t : st.tensors) {
    (t.action == TensorAction::Quantize || t.action == TensorAction::Ggml) ? ++quantized : ++kept;
  }
  const double secs = std::max(st.seconds, 1e-9);
  const std::vector<const TensorReport*> worst = worst_tensors(st, 5);
  if (con.verbosity().json) {
    json tensors = json::array();
    for (const TensorReport& t : st.tensors) {
      json j = {{"name", t.name}, {"action", action_name(t.action)}, {"what", t.what},
                {"bytes_in", t.bytes_in}, {"bytes_out", t.bytes_out}};
      if (t.has_error) j["error"] = error_json(t.error);
      if (t.solver_steps) j["solver_steps"] = t.solver_steps;
      tensors.push_back(std::move(j));
    }
    json worst_json = json::array();
    for (const TensorReport* t : worst) worst_json.push_back({{"name", t->name}, {"what", t->what}, {"error", error_json(t->error)}});
    json doc = {{"command", "quantize"},
                {"input", a.input},
                {"output", a.output},
                {"outputs", s.outputs},
                {"input_format", s.reader->format()},
                {"format", output_format_name(s.format)},
                {"input_bytes", in_bytes},
                {"output_bytes", r.output_bytes},
                {"planned_output_bytes", s.planned_bytes},
                {"compression_ratio", r.output_bytes ? double(in_bytes) / double(r.output_bytes) : 0.0},
                {"seconds", st.seconds},
                {"bytes_per_second", double(st.bytes_in) / secs},
                {"weights_per_second", double(r.weights) / secs},
                {"tensors_total", st.tensors.size()},
                {"tensors_quantized", quantized},
                {"tensors_kept", kept},
                {"isa", isa_name(isa)},
                {"threads", r.threads},
                {"metrics_measured", !a.no_metrics},
                {"worst", worst_json},
                {"tensors", tensors},
                {"params_written", s.params_to_write.empty() ? json(nullptr) : json(s.params_to_write)},
                {"notes", con.said()}};
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  if (!con.human()) return;
  if (con.verbose()) {
    size_t w = 6;
    for (const TensorReport& t : st.tensors) w = std::max(w, printable(t.name).size());
    std::printf("%-*s  %-28s  %10s  %10s  %9s  %7s\n", int(w), "tensor", "stored as", "bytes in", "bytes out", "rel RMSE",
                "SNR dB");
    for (const TensorReport& t : st.tensors) {
      std::printf("%-*s  %-28s  %10s  %10s  %9s  %7s\n", int(w), printable(t.name).c_str(), t.what.c_str(),
                  format_bytes(t.bytes_in).c_str(), format_bytes(t.bytes_out).c_str(),
                  t.has_error ? format_fixed(t.error.rel_rmse, 5).c_str() : "-",
                  t.has_error ? format_fixed(t.error.snr_db, 1).c_str() : "-");
    }
  }
  std::printf("quantized %s -> %s: %zu tensors (%zu quantized, %zu kept)\n", a.input.c_str(), output_label(s).c_str(),
              st.tensors.size(), quantized, kept);
  std::printf("  size        %s -> %s (%s), ratio %sx\n", format_bytes(in_bytes).c_str(),
              format_bytes(r.output_bytes).c_str(), output_format_name(s.format),
              format_fixed(r.output_bytes ? double(in_bytes) / double(r.output_bytes) : 0.0, 2).c_str());
  std::printf("  time        %s, %s/s, %s M weights/s\n", format_seconds(st.seconds).c_str(),
              format_bytes(uint64_t(double(st.bytes_in) / secs)).c_str(), format_fixed(double(r.weights) / secs / 1e6, 2).c_str());
  std::printf("  ran on      isa %s, %d threads\n", isa_name(isa), r.threads);
  if (a.no_metrics) std::printf("  error       not measured (--no-metrics)\n");
  if (!worst.empty()) {
    std::printf("  worst tensors by relative RMSE:\n");
    std::printf("    %9s  %7s  %10s  %s\n", "rel RMSE", "SNR dB", "max abs", "tensor");
    for (const TensorReport* t : worst) {
      std::printf("    %9s  %7s  %10s  %s (%s)\n", format_fixed(t->error.rel_rmse, 5).c_str(),
                  format_fixed(t->error.snr_db, 1).c_str(), format_fixed(t->error.max_abs, 6).c_str(), printable(t->name).c_str(),
                  t->what.c_str());
    }
  }
}

uint64_t quantized_weights(const std::vector<TensorPlan>& plan) {
  uint64_t n = 0;
  for (const TensorPlan& p : plan) {
    if (p.action != TensorAction::Quantize && p.action != TensorAction::Ggml) continue;
    n += checked_numel(p.name, p.shape);
  }
  return n;
}

}  // namespace

int run_quantize(const QuantizeArgs& a, Console& con) {
  const Isa isa = choose_isa(a.run);
  set_signal_input(a.input);
  Setup s = prepare(a, con);
  if (a.dry_run) return dry_run(a, s, con);
  check_free_space(s.outputs.front(), s.planned_bytes);

  Scheduler sched(worker_threads(a.run, con));
  con.detail(std::string("isa ") + isa_name(isa) + ", " + std::to_string(sched.threads()) + " threads");
  std::unique_ptr<ModelWriter> writer =
      a.gguf.keep_split ? make_gguf_split_writer(s.split_prefix, s.plan, *s.reader, s.gguf.keys)
                        : make_writer(a.output, s.format, s.plan, *s.reader, writer_options(a, s.gguf.keys));
  // Files the writer puts beside OUT (ONNX's OUT.data, only when it has external data):
  // checked like OUT before any work, and reported as outputs.
  for (const std::string& f : writer->companion_files()) {
    check_output_path(f, s.read_files, a.force);
    s.outputs.push_back(f);
  }
  RunResult r;
  r.threads = sched.threads();
  {
    ProgressLine progress(con);
    PipelineOptions opts;
    opts.on_progress = [&progress](const Progress& p) { progress.update(p); };
    opts.compute_error = !a.no_metrics;
    opts.refuse_nonfinite_copies = s.format == OutputFormat::Gguf;
    opts.read_ahead = read_ahead_from_env();
    // A measuring knob: one size for both kinds of pieces where it is set (0: unset;
    // bytes_from_env refuses a 0 given).
    if (const size_t piece = bytes_from_env("WQUANT_ROW_PIECE_BYTES", 0)) opts.row_piece_bytes = opts.quantized_piece_bytes = piece;
    column_band_bytes_from_env();  // a bad value is a usage error now, not in a worker
    std::vector<std::string> files = s.inputs;
    files.insert(files.end(), s.outputs.begin(), s.outputs.end());
    naming_tensor_file(a.input, *s.reader, files, [&] {
      sched.run([&] { r.stats = run_pipeline(s.plan, s.reader->tensors(), *s.reader, *writer, opts); });
    });
    // The params file is written before OUT is committed (a failed write of it must not
    // leave OUT) and removed if the commit fails, or a signal comes before it is done: it
    // describes OUT, and the next run would read it as its input.
    std::unique_ptr<OutputFile> params;
    if (!s.params_to_write.empty()) {
      params = std::make_unique<OutputFile>(s.params_to_write);
      if (!s.imatrix.path.empty() && s.imatrix.sha256.empty()) {
        s.imatrix.sha256 = sha256_file(s.imatrix.path);
        if (s.imatrix.sha256.empty()) throw Error(s.imatrix.path + ": cannot be read again for its digest", ErrorKind::Input);
      }
      write_json_file(*params, params_used(s.eff, s.format, s.gguf.mix.mix.name ? s.gguf.mix.mix.name : "", s.imatrix,
                                           s.plan, s.reader->tensors()));
    }
    try {
      writer->commit();
    } catch (const NotDurable&) {
      if (params) params->keep();  // OUT is in place (unsynced, said): so is what describes it
      throw;
    } catch (...) {
      if (params) std::remove(s.params_to_write.c_str());  // OUT failed: no half result
      throw;
    }
    if (params) params->keep();
  }
  r.output_bytes = total_file_bytes(s.outputs);
  r.weights = quantized_weights(s.plan);
  if (!s.params_to_write.empty()) {
    con.note("wrote the parameters used to " + s.params_to_write + ": edit them and rerun with --params " +
             s.params_to_write);
  }
  print_summary(a, s, r, isa, con);
  return 0;
}

}  // namespace wq::cli
