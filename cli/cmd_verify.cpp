// wquant verify FLOAT QUANT: per-tensor error of QUANT against FLOAT, worst first. Both
// sides are dequantized one tensor at a time, so memory holds two tensors, not two models.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/run_support.h"
#include "engine/error.h"
#include "engine/metrics.h"
#include "engine/scheduler.h"
#include "io/model_reader.h"

namespace wq::cli {

namespace {

using nlohmann::json;

struct Compared {
  std::string name;
  std::string quant_type;  // the QUANT side's type name
  ErrorMetrics m;
};

// "exact" only when every difference is 0; a NaN or Inf figure is printed as such.
bool is_exact(const ErrorMetrics& m) { return m.rel_rmse == 0.0 && m.max_abs == 0.0; }
std::string snr_text(const ErrorMetrics& m) {
  if (is_exact(m)) return "exact";
  if (std::isnan(m.snr_db)) return "nan";
  if (std::isinf(m.snr_db)) return m.snr_db > 0 ? "inf" : "-inf";
  return format_fixed(m.snr_db, 2);
}
// Worst first: NaN counts as worse than any number.
double badness(double rel_rmse) { return std::isnan(rel_rmse) ? INFINITY : rel_rmse; }

// The first element of w_hat that is NaN or Inf where w is finite, or n.
size_t first_broken(const std::vector<float>& w, const std::vector<float>& w_hat, const Kernels& k) {
  const size_t n = w_hat.size();
  size_t i = k.find_nonfinite(w_hat.data(), DType::F32, n);
  while (i < n && !std::isfinite(w[i])) i = i + 1 + k.find_nonfinite(w_hat.data() + i + 1, DType::F32, n - i - 1);
  return i;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

int run_verify(const VerifyArgs& a, Console& con) {
  const Isa isa = choose_isa(a.run);
  set_signal_input(a.float_file + " or " + a.quant_file);
  const Kernels& k = *kernels_for(isa);
  std::unique_ptr<ModelReader> ref = open_model(a.float_file);
  std::unique_ptr<ModelReader> quant = open_model(a.quant_file);
  // The figures are relative to FLOAT's weights: a quantized FLOAT (the arguments swapped,
  // or two quantized models) is allowed, but said.
  auto quantized_count = [](const ModelReader& r) {
    size_t n = 0;
    for (const TensorInfo& t : r.tensors()) n += t.kind == StoredKind::Quantized || t.kind == StoredKind::Ggml;
    return n;
  };
  if (const size_t n = quantized_count(*ref)) {
    con.warn(a.float_file + " (FLOAT, the reference) holds " + std::to_string(n) + " quantized tensors: the errors are "
             "relative to those" + (quantized_count(*quant) == 0 ? "; the arguments are FLOAT QUANT (swapped?)" : ""));
  }

  std::vector<Compared> rows;
  std::vector<std::string> only_in_float, only_in_quant, skipped;
  std::vector<bool> quant_matched(quant->tensors().size(), false);
  std::vector<ErrorSums> pool;  // tensor order
  std::string broken;           // the first tensor that dequantizes to NaN/Inf from finite weights
  size_t n_broken = 0;
  Scheduler sched(worker_threads(a.run, con));
  sched.run([&] {
    const std::vector<TensorInfo>& ti = ref->tensors();
    for (size_t i = 0; i < ti.size(); ++i) {
      const long j = quant->find(ti[i].name);  // indexed: linear in the tensor count
      if (j < 0) {
        only_in_float.push_back(ti[i].name);
        continue;
      }
      quant_matched[size_t(j)] = true;
      const TensorInfo& tq = quant->tensors()[size_t(j)];
      if (ti[i].kind == StoredKind::Other || tq.kind == StoredKind::Other) {
        // (Kind Other: integer or boolean data, or an ONNX float constant that feeds no
        // weight input, which wquant copies as it is.)
        skipped.push_back(ti[i].name + " (" + ti[i].type_name + " / " + tq.type_name + ": not a weight wquant reads as float)");
        continue;
      }
      if (ti[i].shape != tq.shape) {
        throw Error(a.quant_file + ": " + ti[i].name + ": shape " + format_shape(tq.shape) + ", but " + a.float_file +
                        " has " + format_shape(ti[i].shape),
                    ErrorKind::Input);
      }
      const std::vector<float> w = read_f32(*ref, i);
      const std::vector<float> w_hat = read_f32(*quant, size_t(j));
      ref->release(i);
      quant->release(size_t(j));
      // Row by row, added in double: the figures quantize printed for the same rows.
      const size_t cols = error_row_length(ti[i].shape, w.size());
      const ErrorSums sums = error_sums_by_row(w.data(), w_hat.data(), w.size() / cols, cols, k);
      Compared c{ti[i].name, tq.type_name, combine_error_sums({sums})};
      pool.push_back(sums);
      if (const size_t bad = first_broken(w, w_hat, k); bad < w.size()) {
        if (!n_broken++) {
          const size_t cols = ti[i].shape.size() <= 1 ? w.size() : w.size() / size_t(ti[i].shape[0]);
          char what[160];
          std::snprintf(what, sizeof what, "%s at row %zu, column %zu, where the float weight is %.6g",
                        std::isnan(w_hat[bad]) ? "NaN" : "Inf", bad / cols, bad % cols, double(w[bad]));
          broken = a.quant_file + ": " + ti[i].name + ": dequantizes to " + what;
        }
      }
      rows.push_back(std::move(c));
    }
  });
  for (size_t j = 0; j < quant_matched.size(); ++j) {
    if (!quant_matched[j]) only_in_quant.push_back(quant->tensors()[j].name);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Compared& x, const Compared& y) {
    return badness(x.m.rel_rmse) > badness(y.m.rel_rmse);
  });
  if (!only_in_float.empty()) {
    con.warn(std::to_string(only_in_float.size()) + " tensors of " + a.float_file + " are not in " + a.quant_file +
             ": " + join(only_in_float));
  }
  if (!only_in_quant.empty()) {
    con.warn(std::to_string(only_in_quant.size()) + " tensors of " + a.quant_file + " are not in " + a.float_file +
             ": " + join(only_in_quant));
  }
  if (rows.empty() && !skipped.empty()) {
    // Names in common, none of them comparable: that is the reason, not the names.
    throw Error(a.quant_file + ": no tensor in common with " + a.float_file + " can be compared: " + join(skipped),
                ErrorKind::Input);
  }
  for (const std::string& s : skipped) con.note("not compared: " + s);
  if (rows.empty()) {
    throw Error(a.quant_file + ": no tensor name in common with " + a.float_file +
                    " (tensors are matched by name: compare a GGUF model with a GGUF model, a safetensors model "
                    "with a safetensors or .wq model)",
                ErrorKind::Input);
  }
  const ErrorMetrics total = combine_error_sums(pool);
  const size_t shown = a.top ? std::min(a.top, rows.size()) : rows.size();
  size_t exact = 0;
  for (const Compared& c : rows) exact += is_exact(c.m);
  // After the report: the tensors that dequantize to NaN/Inf make verify fail.
  const auto fail_if_broken = [&] {
    if (n_broken) {
      throw Error(broken + (n_broken > 1 ? " (and " + std::to_string(n_broken - 1) + " more tensors)" : ""),
                  ErrorKind::Input);
    }
  };

  if (con.verbosity().json) {
    json tensors = json::array();
    for (size_t i = 0; i < shown; ++i) {
      json j = error_json(rows[i].m);
      j["name"] = rows[i].name;
      j["quant_type"] = rows[i].quant_type;
      j["elements"] = rows[i].m.count;
      tensors.push_back(std::move(j));
    }
    json summary = error_json(total);
    summary["tensors_compared"] = rows.size();
    summary["tensors_exact"] = exact;
    summary["elements"] = total.count;
    summary["worst"] = rows.front().name;
    const json doc = {{"command", "verify"},       {"float", a.float_file},
                      {"quant", a.quant_file},     {"isa", isa_name(isa)},
                      {"tensors", tensors},        {"summary", summary},
                      {"only_in_float", only_in_float}, {"only_in_quant", only_in_quant},
                      {"not_compared", skipped}};
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    fail_if_broken();
    return 0;
  }
  if (!con.human()) {
    fail_if_broken();
    return 0;
  }
  size_t w = 6;
  for (const Compared& c : rows) w = std::max(w, printable(c.name).size());
  std::printf("%-*s  %-8s  %10s  %8s  %12s\n", int(w), "tensor", "type", "rel RMSE", "SNR dB", "max abs");
  for (size_t i = 0; i < shown; ++i) {
    const Compared& c = rows[i];
    std::printf("%-*s  %-8s  %10s  %8s  %12s\n", int(w), printable(c.name).c_str(), c.quant_type.c_str(),
                format_fixed(c.m.rel_rmse, 6).c_str(),
                snr_text(c.m).c_str(),
                format_fixed(c.m.max_abs, 6).c_str());
  }
  if (shown < rows.size()) std::printf("(%zu more; --top 0 shows all)\n", rows.size() - shown);
  std::printf("summary: %zu tensors compared (%zu exact), %llu weights; pooled rel RMSE %s, SNR %s dB, max abs error "
              "%s; worst %s (rel RMSE %s)\n",
              rows.size(), exact, static_cast<unsigned long long>(total.count), format_fixed(total.rel_rmse, 6).c_str(),
              is_exact(total) ? "inf" : snr_text(total).c_str(),
              format_fixed(total.max_abs, 6).c_str(), printable(rows.front().name).c_str(),
              format_fixed(rows.front().m.rel_rmse, 6).c_str());
  fail_if_broken();
  return 0;
}

}  // namespace wq::cli
