// wquant bench: how fast this machine quantizes, per ISA, next to how fast it can merely
// read the input. Simple timing loops (best of a few repetitions) over one f32 buffer;
// the google-benchmark suite in bench/ is the detailed instrument, this is the quick look.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/run_support.h"
#include "cli/scheme_sweep.h"
#include "engine/error.h"
#include "engine/plan.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"
#include "io/model_reader.h"

namespace wq::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kBits = 4;
constexpr size_t kBlock = 64;

// Best time of `f` over at least `min_reps` runs, repeating while the total stays under
// `budget` seconds (and at most 20 runs).
template <typename F>
double best_seconds(F&& f, int min_reps, double budget) {
  double best = 1e300, total = 0;
  for (int rep = 0; rep < 20 && (rep < min_reps || total < budget); ++rep) {
    const auto t0 = Clock::now();
    f();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::min(best, s);
    total += s;
  }
  return best;
}

struct Buffer {
  size_t rows, cols;
  std::vector<float> w;
};

Buffer make_buffer(uint64_t size) {
  Buffer b;
  b.cols = size >= 4096 ? 4096 : std::max<size_t>(kBlock, size / kBlock * kBlock);
  b.rows = std::max<size_t>(1, size / b.cols);
  b.w.resize(b.rows * b.cols);
  std::mt19937 g(42);
  std::normal_distribution<float> d(0.0f, 0.02f);
  for (float& x : b.w) x = d(g);
  return b;
}

// Reads every float once, in parallel row tiles; the sums, published through an atomic
// other threads could read, keep the compiler from dropping the loads.
double read_seconds(const Buffer& b) {
  std::atomic<double> sink{0};
  const size_t tile = tile_rows_for(b.rows, b.cols * 4);
  const double s = best_seconds(
      [&] {
        parallel_row_tiles(b.rows, tile, [&](size_t r0, size_t r1) {
          float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          const float* p = b.w.data() + r0 * b.cols;
          const size_t n = (r1 - r0) * b.cols;
          for (size_t i = 0; i + 8 <= n; i += 8) {
            for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
          }
          double t = 0;
          for (float x : acc) t += x;
          sink.fetch_add(t, std::memory_order_relaxed);
        });
      },
      5, 0.5);
  return s;
}

double rtn_seconds(const Buffer& b, const Kernels& k) {
  const size_t row_bytes = (b.cols * kBits + 7) / 8;
  std::vector<uint8_t> packed(b.rows * row_bytes);
  std::vector<float> scales(b.rows * (b.cols / kBlock));
  RowQuantJob job{b.w.data(), DType::F32, b.cols, b.cols, kBlock, Scheme::MnnSym, kBits, false,
                  packed.data(), row_bytes, scales.data(), nullptr, nullptr};
  const size_t tile = tile_rows_for(b.rows, b.cols * 4);
  return best_seconds(
      [&] { parallel_row_tiles(b.rows, tile, [&](size_t r0, size_t r1) { k.quantize_rows(job, r0, r1); }); }, 3, 0.5);
}

double hqq_seconds(const Buffer& b, const Kernels& k) {
  TensorView v;
  v.name = "bench";
  v.shape = {int64_t(b.rows), int64_t(b.cols)};
  v.dtype = DType::F32;
  v.data = b.w.data();
  v.nbytes = b.w.size() * 4;
  QuantSpec spec;
  spec.bits = kBits;
  spec.block = int64_t(kBlock);
  spec.asym = true;
  spec.hqq = true;
  return best_seconds([&] { (void)quantize_tensor(v, spec, kBlock, &k); }, 1, 1.0);
}

// A CSV field (RFC 4180): quoted, quotes doubled, where it holds a comma, a quote or a line
// break (tensor names come from input files and may hold anything).
std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string q = "\"";
  for (char c : v) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
// A Markdown table cell: printable, its pipes escaped.
std::string md_cell(const std::string& v) {
  std::string r;
  for (char c : printable(v)) r += c == '|' ? std::string("\\|") : std::string(1, c);
  return r;
}

std::string rate(double weights_per_s) {
  if (weights_per_s >= 1e9) return format_fixed(weights_per_s / 1e9, 2) + " G";
  return format_fixed(weights_per_s / 1e6, 1) + " M";
}

// wquant bench --model: the scheme sweep (cli/scheme_sweep.h) as a table, JSON or CSV.
int run_bench_model(const BenchArgs& a, Console& con) {
  const Isa isa = choose_isa(a.run);
  set_signal_input(a.model);
  std::unique_ptr<ModelReader> reader = open_model(a.model);
  std::vector<TensorView> views;
  uint64_t weights = 0;
  for (size_t i = 0; i < reader->tensors().size(); ++i) {
    const TensorInfo& t = reader->tensors()[i];
    if (!is_quantizable_weight(t)) continue;
    views.push_back(reader->view(i));
    weights += views.back().numel();
  }
  if (views.empty()) {
    for (const TensorInfo& t : reader->tensors()) {
      if (t.kind == StoredKind::Quantized || t.kind == StoredKind::Ggml) {
        throw Error(a.model + ": " + t.name + ": is already quantized (" + t.type_name +
                    "); bench sweeps the schemes over a float model's weights");
      }
    }
    throw Error(a.model + ": no weight matrix to quantize (every tensor is 1-D or not float)");
  }
  // (Errors name the model: checked here, one clear error rather than one per scheme.)
  naming_file(a.model, {a.model}, [&] {
    for (const TensorView& v : views) check_finite(v);
  });
  Scheduler sched(worker_threads(a.run, con));
  const std::vector<SweepScheme> schemes = sweep_schemes();
  if (con.human() && !a.csv) {
    std::fprintf(stderr, "wquant: bench: %zu schemes over %zu tensors (%s M weights) of %s, isa %s, %d threads ...\n",
                 schemes.size(), views.size(), format_fixed(double(weights) / 1e6, 2).c_str(), a.model.c_str(),
                 isa_name(isa), sched.threads());
  }
  std::vector<SchemeResult> results;
  naming_file(a.model, {a.model}, [&] {
    sched.run([&] {
      for (const SweepScheme& s : schemes) results.push_back(run_scheme(s, views, kernels()));
    });
  });
  mark_pareto(results);
  auto num = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  if (con.verbosity().json) {
    json rows = json::array();
    for (const SchemeResult& r : results) {
      const SweepScheme& s = r.scheme;
      rows.push_back({{"scheme", s.name},
                      {"family", s.family},
                      {"bits", s.spec.bits},
                      {"block", s.ggml ? json(ggml_traits(s.type).weights) : json(s.spec.block)},
                      {"gguf_type", s.ggml ? json(ggml_block_name(s.type)) : json(nullptr)},
                      {"bits_per_weight", num(r.bits_per_weight)},
                      {"rel_rmse", num(r.error.rel_rmse)},
                      {"snr_db", num(r.error.snr_db)},
                      {"max_abs", num(r.error.max_abs)},
                      {"worst_tensor", r.worst_tensor},
                      {"worst_rel_rmse", num(r.worst_rel_rmse)},
                      {"tensors", r.tensors},
                      {"tensors_kept_float", r.kept_float},
                      {"seconds", r.seconds},
                      {"pareto", r.pareto},
                      {"unavailable", r.unavailable.empty() ? json(nullptr) : json(r.unavailable)}});
    }
    const json doc = {{"command", "bench"}, {"model", a.model},     {"isa", isa_name(isa)},
                      {"threads", sched.threads()}, {"tensors", views.size()}, {"weights", weights},
                      {"schemes", rows}};
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  if (a.csv) {
    std::printf("scheme,family,bits,block,bits_per_weight,rel_rmse,snr_db,max_abs,worst_tensor,worst_rel_rmse,"
                "tensors_kept_float,seconds,pareto,unavailable\n");
    for (const SchemeResult& r : results) {
      const SweepScheme& s = r.scheme;
      std::printf("%s,%s,%d,%lld,%.6f,%.9g,%.6g,%.9g,%s,%.9g,%zu,%.6f,%d,%s\n", csv_field(s.name).c_str(), csv_field(s.family).c_str(), s.spec.bits,
                  s.ggml ? (long long)ggml_traits(s.type).weights : (long long)s.spec.block, r.bits_per_weight,
                  r.error.rel_rmse, r.error.snr_db, r.error.max_abs, csv_field(r.worst_tensor).c_str(), r.worst_rel_rmse, r.kept_float,
                  r.seconds, r.pareto ? 1 : 0, csv_field(r.unavailable).c_str());
    }
    return 0;
  }
  if (!con.human()) return 0;
  std::printf("%s: %zu weight tensors, %s M weights; isa %s, %d threads; * = Pareto front\n\n", a.model.c_str(),
              views.size(), format_fixed(double(weights) / 1e6, 2).c_str(), isa_name(isa), sched.threads());
  std::printf("|   | scheme | bits/weight | rel RMSE | SNR dB | worst tensor (rel RMSE) | kept float | time |\n");
  std::printf("| - | --- | ---: | ---: | ---: | --- | ---: | ---: |\n");
  for (const SchemeResult& r : results) {
    if (!r.unavailable.empty()) {
      std::printf("|   | %s | - | - | - | unavailable: %s | - | %s |\n", r.scheme.name.c_str(), md_cell(r.unavailable).c_str(),
                  format_seconds(r.seconds).c_str());
      continue;
    }
    if (r.kept_float == r.tensors) {
      std::printf("|   | %s | %s | - | - | none held: every tensor kept float | %zu | %s |\n", r.scheme.name.c_str(),
                  format_fixed(r.bits_per_weight, 3).c_str(), r.kept_float, format_seconds(r.seconds).c_str());
      continue;
    }
    std::printf("| %s | %s | %s | %s | %s | %s (%s) | %zu | %s |\n", r.pareto ? "*" : " ", r.scheme.name.c_str(),
                format_fixed(r.bits_per_weight, 3).c_str(), format_fixed(r.error.rel_rmse, 5).c_str(),
                format_fixed(r.error.snr_db, 1).c_str(), md_cell(r.worst_tensor).c_str(), format_fixed(r.worst_rel_rmse, 5).c_str(),
                r.kept_float, format_seconds(r.seconds).c_str());
  }
  return 0;
}

}  // namespace

int run_bench(const BenchArgs& a, Console& con) {
  if (!a.model.empty()) return run_bench_model(a, con);
  std::vector<Isa> isas;
  if (a.run.isa) {
    choose_isa(a.run);  // refuses an ISA this CPU or build lacks
    isas.push_back(*a.run.isa);
  } else {
    for (int i = 0; i < kIsaCount; ++i) {
      if (isa_available(Isa(i))) isas.push_back(Isa(i));
    }
  }
  Scheduler sched(worker_threads(a.run, con));
  const Buffer b = make_buffer(a.size);
  const double n = double(b.w.size());
  if (con.human()) {
    std::fprintf(stderr, "wquant: bench: %zu x %zu f32 weights (%s), %d threads ...\n", b.rows, b.cols,
                 format_bytes(b.w.size() * 4).c_str(), sched.threads());
  }
  double read_s = 0;
  struct Row {
    Isa isa;
    double rtn_s, hqq_s;
  };
  std::vector<Row> rows;
  sched.run([&] {
    read_s = read_seconds(b);
    for (Isa isa : isas) rows.push_back({isa, rtn_seconds(b, *kernels_for(isa)), hqq_seconds(b, *kernels_for(isa))});
  });
  const double read_wps = n / read_s;  // weights/s the machine can read (4 bytes each)

  if (con.verbosity().json) {
    json table = json::array();
    for (const Row& r : rows) {
      table.push_back({{"isa", isa_name(r.isa)},
                       {"rtn_weights_per_second", n / r.rtn_s},
                       {"rtn_fraction_of_read", read_s / r.rtn_s},
                       {"hqq_weights_per_second", n / r.hqq_s},
                       {"hqq_fraction_of_read", read_s / r.hqq_s}});
    }
    const json doc = {{"command", "bench"},
                      {"weights", b.w.size()},
                      {"rows", b.rows},
                      {"cols", b.cols},
                      {"threads", sched.threads()},
                      {"bits", kBits},
                      {"block", kBlock},
                      {"read_bytes_per_second", read_wps * 4},
                      {"read_weights_per_second", read_wps},
                      {"isas", table}};
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  if (!con.human()) return 0;
  std::printf("streaming read: %s/s (%s weights/s f32), %d threads, %zu x %zu weights\n\n",
              format_bytes(uint64_t(read_wps * 4)).c_str(), rate(read_wps).c_str(), sched.threads(), b.rows, b.cols);
  std::printf("| ISA | RTN 4-bit block 64, weights/s | of read bandwidth | HQQ 4-bit block 64, weights/s | of read bandwidth |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: |\n");
  for (const Row& r : rows) {
    std::printf("| %s | %s | %s%% | %s | %s%% |\n", isa_name(r.isa), rate(n / r.rtn_s).c_str(),
                format_fixed(100.0 * read_s / r.rtn_s, 1).c_str(), rate(n / r.hqq_s).c_str(),
                format_fixed(100.0 * read_s / r.hqq_s, 1).c_str());
  }
  return 0;
}

}  // namespace wq::cli
