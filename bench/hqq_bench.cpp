// HQQ throughput, the figure of the HQQ issue: 4-bit, block 64, a 4096x4096 f32 tensor
// of normal(0, 0.02) weights, through the engine (quantize_tensor: affine start, solver,
// packing), per ISA, 1 and 2 threads, both stopping rules. Also the affine RTN start
// alone (max_steps 0) for the share of the solver.
//   hqq_bench --benchmark_filter='hqq/' --benchmark_min_time=2
// Counters: weights_per_s (rate), steps (solver steps, most over blocks).
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "engine/quantize.h"
#include "engine/scheduler.h"
#include "kernels/kernels.h"

namespace wq {
namespace {

constexpr size_t kRows = 4096, kCols = 4096, kBlock = 64;

const std::vector<float>& weights() {
  static const std::vector<float> w = [] {
    std::vector<float> v(kRows * kCols);
    std::mt19937 g(42);
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (float& x : v) x = d(g);
    return v;
  }();
  return w;
}

void run(benchmark::State& s, const Kernels* k, int threads, HqqStop stop, int steps) {
  const std::vector<float>& v = weights();
  const TensorView w{"bench", {int64_t(kRows), int64_t(kCols)}, DType::F32, v.data(), v.size() * 4};
  QuantSpec spec;
  spec.bits = 4;
  spec.block = kBlock;
  spec.hqq = true;
  spec.asym = true;
  spec.hqq_opts.stop = stop;
  spec.hqq_opts.max_steps = steps;
  Scheduler sched(threads);
  int solver_steps = 0;
  for (auto _ : s) {
    sched.run([&] {
      QuantizedTensor q = quantize_tensor(w, spec, kBlock, k);
      solver_steps = q.solver_steps;
      benchmark::DoNotOptimize(q.packed.data());
    });
  }
  s.counters["weights_per_s"] = benchmark::Counter(double(kRows * kCols), benchmark::Counter::kIsIterationInvariantRate);
  s.counters["steps"] = solver_steps;
}

void register_all() {
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
    const Kernels* k = kernels_for(isa);
    if (!k) continue;
    for (int threads : {1, 2}) {
      const std::string t = "/" + std::string(isa_name(isa)) + "/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(("hqq/block_stop" + t).c_str(), [=](benchmark::State& s) { run(s, k, threads, HqqStop::Block, 20); })
          ->Unit(benchmark::kMillisecond)->UseRealTime();
      benchmark::RegisterBenchmark(("hqq/tensor_stop" + t).c_str(), [=](benchmark::State& s) { run(s, k, threads, HqqStop::Tensor, 20); })
          ->Unit(benchmark::kMillisecond)->UseRealTime();
      benchmark::RegisterBenchmark(("affine_rtn_start" + t).c_str(), [=](benchmark::State& s) { run(s, k, threads, HqqStop::Block, 0); })
          ->Unit(benchmark::kMillisecond)->UseRealTime();
    }
  }
}

}  // namespace
}  // namespace wq

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  wq::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
