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
#include "engine/error.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"

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
                  packed.data(), row_bytes, scales.data(), nullptr};
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

std::string rate(double weights_per_s) {
  if (weights_per_s >= 1e9) return format_fixed(weights_per_s / 1e9, 2) + " G";
  return format_fixed(weights_per_s / 1e6, 1) + " M";
}

}  // namespace

int run_bench(const BenchArgs& a, Console& con) {
  std::vector<Isa> isas;
  if (a.run.isa) {
    choose_isa(a.run);  // refuses an ISA this CPU or build lacks
    isas.push_back(*a.run.isa);
  } else {
    for (int i = 0; i < kIsaCount; ++i) {
      if (isa_available(Isa(i))) isas.push_back(Isa(i));
    }
  }
  Scheduler sched(a.run.threads);
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
