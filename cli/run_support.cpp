#include "cli/run_support.h"

#include "engine/stored_tensor.h"
#include "io/model_reader.h"
#include "kernels/ggml_types.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "engine/error.h"
#include "engine/scheduler.h"
#include "engine/tensor.h"
#include "io/mapped_file.h"
#include "io/output_file.h"
#include "kernels/ggml_blocks.h"

namespace wq::cli {

Isa choose_isa(const RunSettings& run) {
  try {
    if (run.isa) select_isa(*run.isa);
    return kernels().isa;  // reads WQUANT_ISA when --isa is absent, and checks it
  } catch (const Error&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw Error(e.what(), ErrorKind::Usage);
  }
}

namespace {

// The input named by the SIGBUS message: fixed storage, written before any input is
// mapped, read only by the handler.
char g_input[4096] = "the input";

void write_all(const char* s, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= size_t(w);
  }
}

void on_interrupt(int sig) {
  // During the renames of the result, the signal waits for them (it is raised again if
  // they are undone, and comes back here); once the result is in place, it ends the run
  // with it (exit 0).
  switch (wq::signal_in_commit(sig)) {
    case wq::SignalInCommit::Wait: return;
    case wq::SignalInCommit::ResultInPlace: wq::interrupted_with_result_in_place();
    case wq::SignalInCommit::Act: break;
  }
  // Only async-signal-safe calls: unlink the temporary outputs, then _exit (no atexit
  // handlers, no stdio flush from a state the signal may have interrupted).
  wq::remove_temp_outputs_from_signal();
  _exit(130);
}

// SIGBUS: a page of a mapped input is no longer backed by the file, i.e. the file was
// truncated (or replaced in place) while wquant read it. Input error, not a crash. The
// file named is the one mapped at the faulting address (an ONNX model's external data, a
// shard), else the input the command was given.
void on_bus(int, siginfo_t* info, void*) {
  wq::remove_temp_outputs_from_signal();
  static const char head[] = "wquant: error: ";
  static const char tail[] = ": input changed while reading (truncated or rewritten by another process)\n";
  const char* file = info ? wq::mapped_path_at(info->si_addr) : nullptr;
  write_all(head, sizeof head - 1);
  if (!file) file = g_input;
  write_all(file, ::strlen(file));
  write_all(tail, sizeof tail - 1);
  _exit(3);
}

// Every other signal whose default ends the process: remove the temporary outputs, then
// die of the same signal (SA_RESETHAND restored the default), so the parent sees it.
void on_fatal(int sig);

void arm_fatal(int sig) {
  struct sigaction fatal {};
  fatal.sa_handler = on_fatal;
  fatal.sa_flags = SA_RESETHAND | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&fatal.sa_mask);
  sigaction(sig, &fatal, nullptr);
}

void on_fatal(int sig) {
  // A signal sent (not a fault of this process) during the renames of a result of several
  // files waits for them, as in on_interrupt; raised again after, it finds the default
  // action (SA_RESETHAND), with every file of the result in place or none.
  const bool fault = sig == SIGSEGV || sig == SIGILL || sig == SIGFPE || sig == SIGABRT || sig == SIGTRAP || sig == SIGSYS;
  const wq::SignalInCommit in_commit = fault ? wq::SignalInCommit::Act : wq::signal_in_commit(sig);
  if (in_commit == wq::SignalInCommit::ResultInPlace) wq::interrupted_with_result_in_place();
  if (in_commit == wq::SignalInCommit::Wait) {
    // SA_RESETHAND put the default action back: armed again (sigaction is
    // async-signal-safe), so that the raise after the renames, or the same signal sent
    // again meanwhile, comes back here instead of ending the process mid-rename.
    arm_fatal(sig);
    return;
  }
  wq::remove_temp_outputs_from_signal();
  ::raise(sig);
}

}  // namespace

void set_signal_input(const std::string& path) {
  const size_t n = std::min(path.size(), sizeof g_input - 1);
  std::memcpy(g_input, path.data(), n);
  g_input[n] = '\0';
}

void install_interrupt_handlers() {
  // Crash handlers run on their own stack, so a stack overflow is cleaned up too.
  static std::vector<char> alt(size_t(std::max<long>(SIGSTKSZ, 64 * 1024)));
  stack_t ss{};
  ss.ss_sp = alt.data();
  ss.ss_size = alt.size();
  sigaltstack(&ss, nullptr);

  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  struct sigaction bus {};
  bus.sa_sigaction = on_bus;
  bus.sa_flags = SA_ONSTACK | SA_SIGINFO;
  sigfillset(&bus.sa_mask);
  sigaction(SIGBUS, &bus, nullptr);

  std::vector<int> fatal_signals = {SIGHUP,  SIGQUIT, SIGPIPE,   SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM,
                                    SIGPROF, SIGXCPU, SIGXFSZ,   SIGSYS,  SIGTRAP, SIGIO,   SIGSTKFLT,
                                    SIGPWR,  SIGSEGV, SIGILL,    SIGFPE,  SIGABRT};
  for (int sig = SIGRTMIN; sig <= SIGRTMAX; ++sig) fatal_signals.push_back(sig);  // default: terminate
  for (int sig : fatal_signals) {
    struct sigaction old {};
    // A signal the parent set to be ignored (nohup's SIGHUP) stays ignored.
    if (sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    arm_fatal(sig);
  }
}

const char* action_name(TensorAction a) {
  switch (a) {
    case TensorAction::Quantize: return "quantize";
    case TensorAction::Ggml: return "ggml";
    case TensorAction::KeepFloat: return "float";
    case TensorAction::CopyRaw: return "copy";
  }
  return "?";
}

std::vector<float> read_f32(ModelReader& r, size_t i) { return tensor_as_f32(r, r.tensors().at(i), i, r.path()); }

std::string describe_plan_entry_with_notes(const TensorPlan& p, const TensorInfo& info) {
  std::string d = describe_plan_entry(p, info);
  const size_t cols = matrix_dims(p.shape).cols;
  if (p.action == TensorAction::Quantize && p.spec.block > 0 && size_t(p.spec.block) != p.block) {
    d += " (block " + std::to_string(p.spec.block) + " does not divide " + std::to_string(cols) + ")";
  }
  return d;
}

nlohmann::json error_json(const ErrorMetrics& m) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"rel_rmse", num(m.rel_rmse)}, {"snr_db", num(m.snr_db)}, {"max_abs", num(m.max_abs)}, {"rmse", num(m.rmse)}};
}

int worker_threads(const RunSettings& run, Console& con) {
  const int cpus = usable_cpus();
  if (run.threads <= cpus) return run.threads;
  con.note("--threads " + std::to_string(run.threads) + ": this process may run on " + std::to_string(cpus) +
           (cpus == 1 ? " CPU; running 1 thread" : " CPUs; running " + std::to_string(cpus) + " threads") +
           " (more would only share those cores, and ran slower)");
  return cpus;
}

}  // namespace wq::cli
