// What the commands that run kernels share: choosing the ISA, Ctrl-C handling, and the
// words for a plan entry.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/console.h"
#include "engine/error.h"
#include "engine/metrics.h"
#include "engine/plan.h"
#include "io/model_reader.h"
#include "kernels/kernels.h"

namespace wq {
class ModelReader;
}

namespace wq::cli {

// Applies --isa, or checks WQUANT_ISA, and returns the ISA the kernels will run. Throws
// Error (Usage) when the ISA is unknown or this CPU or build lacks it.
Isa choose_isa(const RunSettings& run);

// The worker threads a command runs: --threads as given (0: every usable CPU), except
// that more than the CPUs this process may run on (engine/scheduler.h usable_cpus) are
// capped at them, with a note. Threads beyond the cores only share them: on a 2-core VM,
// Q4_0 with --threads 8 took 1.08x the wall time and 1.17x the CPU of the capped run
// (bench/ab_bench.sh, 2026-12-05; more tensors in flight, each with fresh buffers, and
// tiles read by threads waiting for a core).
int worker_threads(const RunSettings& run, Console& con);

// SIGINT and SIGTERM: remove every temporary output file still registered with
// io/output_file.h, then exit 130. SIGBUS (a mapped input shrank while it was read):
// remove them, print one error line naming the input (set_signal_input), exit 3. Every
// other catchable signal that would end the process (SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1,
// SIGSEGV, ...): remove them, then die of that signal. Nothing else runs in the handlers
// (they must be async-signal-safe); the final output name is only ever created by
// rename, so it is either complete or absent; a signal that comes once the result is in
// place is too late to undo it and ends the run there, exit 0, the result complete (and a
// params file written for it kept). SIGKILL cannot be caught: its temporary
// file is removed by the next run writing the same OUT (io/output_file.h).
void install_interrupt_handlers();
// The input named by the SIGBUS error line.
void set_signal_input(const std::string& path);

// Runs f(). An Error from it whose message starts with none of `known` (the files of the
// run) is rethrown with `file` in front, so every error line names a file: the engine
// and the plan know tensors, not files.
// (naming_file with the file chosen by file_of(message).)
template <class FileOf, class F>
auto naming_file_of(const FileOf& file_of, const std::vector<std::string>& known, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    for (const std::string& k : known) {
      if (!k.empty() && e.message().compare(0, k.size() + 1, k + ":") == 0) throw;
    }
    throw Error(file_of(e.message()) + ": " + e.message(), e.kind());
  }
}
template <class F>
auto naming_file(const std::string& file, const std::vector<std::string>& known, F&& f) -> decltype(f()) {
  return naming_file_of([&](const std::string&) { return file; }, known, std::forward<F>(f));
}

// naming_file for a run over a model's tensors: an error that starts with a tensor's name
// is put under the file holding that tensor (reader.file_of: a shard of a split model),
// any other under `file`.
template <class F>
auto naming_tensor_file(const std::string& file, const ModelReader& reader, const std::vector<std::string>& known,
                        F&& f) -> decltype(f()) {
  auto file_of = [&](const std::string& message) {
    std::string at = file;
    size_t longest = 0;
    const std::vector<TensorInfo>& ts = reader.tensors();
    for (size_t i = 0; i < ts.size(); ++i) {
      const std::string& n = ts[i].name;
      if (n.size() >= longest && !n.empty() && message.compare(0, n.size() + 1, n + ":") == 0) {
        longest = n.size();
        at = reader.file_of(i);
      }
    }
    return at;
  };
  return naming_file_of(file_of, known, std::forward<F>(f));
}

// "quantize", "ggml", "float", "copy".
const char* action_name(TensorAction a);
// A quantized tensor in words, with its effective block: "4-bit hqq block 32",
// "4-bit sym channel-wise fp16" (the wording of the pipeline's reports).

// Tensor i of a model as f32 (engine's tensor_as_f32 on the reader's bytes).
std::vector<float> read_f32(ModelReader& r, size_t i);

// engine's describe_plan_entry plus the CLI's notes: "4-bit sym channel-wise (block 32
// does not divide 172)".
std::string describe_plan_entry_with_notes(const TensorPlan& p, const TensorInfo& info);

// {"rel_rmse", "snr_db", "max_abs"} (non-finite figures as null).
nlohmann::json error_json(const ErrorMetrics& m);

}  // namespace wq::cli
