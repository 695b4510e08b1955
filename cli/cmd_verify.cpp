// wquant verify FLOAT QUANT: per-tensor error of QUANT against FLOAT, worst first. Both
// sides are dequantized one tensor at a time, so memory holds two tensors, not two models.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <unordered_map>

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

struct Pooled {
  double err2 = 0, ref2 = 0, max_abs = 0;
  size_t count = 0;
  ErrorMetrics metrics() const {
    ErrorMetrics m;
    m.count = count;
    m.max_abs = max_abs;
    m.rmse = count ? std::sqrt(err2 / double(count)) : 0.0;
    m.rel_rmse = ref2 > 0 ? std::sqrt(err2 / ref2) : (err2 > 0 ? INFINITY : 0.0);
    m.snr_db = err2 > 0 ? 10.0 * std::log10(ref2 / err2) : INFINITY;
    return m;
  }
};

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

  std::vector<Compared> rows;
  std::vector<std::string> only_in_float, only_in_quant, skipped;
  std::vector<bool> quant_matched(quant->tensors().size(), false);
  Pooled pool;
  // Names of QUANT looked up once (ModelReader::find is a linear scan: quadratic here).
  std::unordered_map<std::string, size_t> quant_index;
  for (size_t j = 0; j < quant->tensors().size(); ++j) quant_index.emplace(quant->tensors()[j].name, j);
  Scheduler sched(a.run.threads);
  sched.run([&] {
    const std::vector<TensorInfo>& ti = ref->tensors();
    for (size_t i = 0; i < ti.size(); ++i) {
      const auto found = quant_index.find(ti[i].name);
      const long j = found == quant_index.end() ? -1 : long(found->second);
      if (j < 0) {
        only_in_float.push_back(ti[i].name);
        continue;
      }
      quant_matched[size_t(j)] = true;
      const TensorInfo& tq = quant->tensors()[size_t(j)];
      if (ti[i].kind == StoredKind::Other || tq.kind == StoredKind::Other) {
        skipped.push_back(ti[i].name + " (" + ti[i].type_name + " / " + tq.type_name + ": not float data)");
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
      Compared c{ti[i].name, tq.type_name, array_error(w.data(), w_hat.data(), w.size(), &k)};
      double err2 = 0, ref2 = 0;
      k.sq_err(w.data(), w_hat.data(), w.size(), &err2, &ref2);
      pool.err2 += err2;
      pool.ref2 += ref2;
      pool.count += w.size();
      pool.max_abs = std::max(pool.max_abs, c.m.max_abs);
      rows.push_back(std::move(c));
    }
  });
  for (size_t j = 0; j < quant_matched.size(); ++j) {
    if (!quant_matched[j]) only_in_quant.push_back(quant->tensors()[j].name);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Compared& x, const Compared& y) {
    return x.m.rel_rmse > y.m.rel_rmse;
  });
  if (!only_in_float.empty()) {
    con.warn(std::to_string(only_in_float.size()) + " tensors of " + a.float_file + " are not in " + a.quant_file +
             ": " + join(only_in_float));
  }
  if (!only_in_quant.empty()) {
    con.warn(std::to_string(only_in_quant.size()) + " tensors of " + a.quant_file + " are not in " + a.float_file +
             ": " + join(only_in_quant));
  }
  for (const std::string& s : skipped) con.note("not compared: " + s);
  if (rows.empty()) {
    throw Error(a.quant_file + ": no tensor name in common with " + a.float_file +
                    " (tensors are matched by name: compare a GGUF model with a GGUF model, a safetensors model "
                    "with a safetensors or .wq model)",
                ErrorKind::Input);
  }
  const ErrorMetrics total = pool.metrics();
  const size_t shown = a.top ? std::min(a.top, rows.size()) : rows.size();
  size_t exact = 0;
  for (const Compared& c : rows) exact += c.m.rel_rmse == 0.0;

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
    return 0;
  }
  if (!con.human()) return 0;
  size_t w = 6;
  for (const Compared& c : rows) w = std::max(w, c.name.size());
  std::printf("%-*s  %-8s  %10s  %8s  %12s\n", int(w), "tensor", "type", "rel RMSE", "SNR dB", "max abs");
  for (size_t i = 0; i < shown; ++i) {
    const Compared& c = rows[i];
    std::printf("%-*s  %-8s  %10s  %8s  %12s\n", int(w), c.name.c_str(), c.quant_type.c_str(),
                format_fixed(c.m.rel_rmse, 6).c_str(),
                std::isfinite(c.m.snr_db) ? format_fixed(c.m.snr_db, 2).c_str() : "exact",
                format_fixed(c.m.max_abs, 6).c_str());
  }
  if (shown < rows.size()) std::printf("(%zu more; --top 0 shows all)\n", rows.size() - shown);
  std::printf("summary: %zu tensors compared (%zu exact), %llu weights; pooled rel RMSE %s, SNR %s dB, max abs error "
              "%s; worst %s (rel RMSE %s)\n",
              rows.size(), exact, static_cast<unsigned long long>(total.count), format_fixed(total.rel_rmse, 6).c_str(),
              std::isfinite(total.snr_db) ? format_fixed(total.snr_db, 2).c_str() : "inf",
              format_fixed(total.max_abs, 6).c_str(), rows.front().name.c_str(),
              format_fixed(rows.front().m.rel_rmse, 6).c_str());
  return 0;
}

}  // namespace wq::cli
