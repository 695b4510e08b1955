#include "kernels/ggml_types.h"
#include "cli/run_support.h"

#include "engine/stored_tensor.h"
#include "io/model_reader.h"

#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <stdexcept>

#include "engine/error.h"
#include "engine/tensor.h"
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

void on_interrupt(int) {
  // Only async-signal-safe calls: unlink the temporary outputs, then _exit (no atexit
  // handlers, no stdio flush from a state the signal may have interrupted).
  wq::remove_temp_outputs_from_signal();
  _exit(130);
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
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

}  // namespace wq::cli
