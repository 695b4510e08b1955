// Kernel benchmarks: every kernel of every ISA table this CPU runs, on an in-cache tile
// (16 KiB of f32 input) and on a 64 MiB tensor, plus the streaming read bandwidth and
// memcpy measured the same way, so each figure can be stated as a fraction of them.
//
// Names: <kernel>[/<variant>]/<isa>/<size>, e.g. quantize_rows/mnn_asym/b4/g64/f32/avx512/64MiB.
// Counters: bytes_per_second = input bytes read per second (for pack/unpack: input bytes
// too), weights_per_s = weights (elements, codes) processed per second.
// The figure the lead quotes:
//   --benchmark_filter='quantize_rows/mnn_asym/b4/g64/f32/.*/64MiB|baseline/read'
// Run on an idle machine; the 2-thread rows (engine/quantize_tensor/...) use real time.
#include <benchmark/benchmark.h>

#if defined(__x86_64__)
// GCC 12.2 warns on AVX-512 reductions it inlines (GCC bug 105593): silenced for the
// header's own lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "kernels/ggml_types.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"
#include "kernels/ggml_blocks.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"

namespace wq {
namespace {

// ---- data -----------------------------------------------------------------------------

constexpr size_t kTileWeights = 4096;              // 16 KiB of f32
constexpr size_t kTensorWeights = size_t(16) << 20; // 64 MiB of f32
constexpr size_t kCols = 4096;                     // row length of the 2-D cases
constexpr size_t kBlock = 64;

struct Size {
  const char* name;
  size_t weights;
};
const Size kSizes[] = {{"16KiB", kTileWeights}, {"64MiB", kTensorWeights}};

// Page-aligned storage, as an mmapped tensor is: a 16-byte-aligned malloc block would
// make every 64-byte load straddle two cache lines and understate wide loads.
template <class T>
struct PageAligned {
  using value_type = T;
  PageAligned() = default;
  template <class U>
  PageAligned(const PageAligned<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(4096, (n * sizeof(T) + 4095) / 4096 * 4096);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  bool operator==(const PageAligned<U>&) const { return true; }
};
template <class T>
using Buffer = std::vector<T, PageAligned<T>>;

// Buffers shared by all benchmarks, made on first use (a filtered run allocates only
// what it needs) and touched once, so no benchmark pays for page faults.
struct Data {
  Buffer<float> f32;       // normal(0, 0.02)
  Buffer<uint16_t> f16;    // the same, narrowed
  Buffer<uint16_t> bf16;
  Buffer<float> f32_out;
  Buffer<uint8_t> codes;   // 4-bit codes
  Buffer<uint8_t> bytes;   // packed output / random packed input
  Buffer<uint8_t> ggml;    // room for the largest block type
  Buffer<float> imatrix;   // importance weights, uniform in [0.5, 1.5)
};

const Data& data() {
  static const Data d = [] {
    Data x;
    std::mt19937 g(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    x.f32.resize(kTensorWeights);
    for (float& v : x.f32) v = normal(g);
    x.f16.resize(kTensorWeights);
    x.bf16.resize(kTensorWeights);
    for (size_t i = 0; i < kTensorWeights; ++i) {
      x.f16[i] = ref::f32_to_f16(x.f32[i]);
      x.bf16[i] = uint16_t(ref::f32_bits(x.f32[i]) >> 16);
    }
    x.f32_out.assign(kTensorWeights, 0.0f);
    x.codes.resize(kTensorWeights);
    for (uint8_t& c : x.codes) c = uint8_t(g() & 15u);
    x.bytes.resize(kTensorWeights);
    for (uint8_t& b : x.bytes) b = uint8_t(g());
    size_t ggml_bytes = 0;  // the largest of any block type
    for (const GgmlTypeTraits& t : kGgmlTraits) ggml_bytes = std::max(ggml_bytes, ggml_row_bytes(t.type, kTensorWeights));
    x.ggml.assign(ggml_bytes, 0);
    std::uniform_real_distribution<float> importance(0.5f, 1.5f);
    x.imatrix.resize(kTensorWeights);
    for (float& v : x.imatrix) v = importance(g);
    return x;
  }();
  return d;
}
// Output buffers are written by the kernels; the shared Data is otherwise read-only.
template <class T>
T* out(const Buffer<T>& v) {
  return const_cast<T*>(v.data());
}

// Records what one iteration processed: bytes read and weights (elements) handled.
void set_rates(benchmark::State& s, size_t in_bytes, size_t weights) {
  s.SetBytesProcessed(int64_t(s.iterations()) * int64_t(in_bytes));
  s.counters["weights_per_s"] = benchmark::Counter(double(s.iterations()) * double(weights),
                                                   benchmark::Counter::kIsRate);
}

const char* scheme_name(Scheme s) {
  return s == Scheme::MnnSym ? "mnn_sym" : (s == Scheme::MnnAsym ? "mnn_asym" : "affine");
}
const char* ggml_name(int t) { return ggml_traits(GgmlBlock(t)).name; }

// ---- baselines: what one core can stream ---------------------------------------------

// XOR of every 64-bit word: the cheapest full read, so the loop is bound by memory.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) uint64_t read_avx512(const void* p, size_t bytes) {
  const auto* v = static_cast<const __m512i*>(p);
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 4 <= bytes / 64; i += 4) {
    a0 = _mm512_xor_si512(a0, _mm512_loadu_si512(v + i));
    a1 = _mm512_xor_si512(a1, _mm512_loadu_si512(v + i + 1));
    a2 = _mm512_xor_si512(a2, _mm512_loadu_si512(v + i + 2));
    a3 = _mm512_xor_si512(a3, _mm512_loadu_si512(v + i + 3));
  }
  a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  return uint64_t(_mm512_reduce_or_epi64(a0));
}
__attribute__((target("avx2"))) uint64_t read_avx2(const void* p, size_t bytes) {
  const auto* v = static_cast<const __m256i*>(p);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 4 <= bytes / 32; i += 4) {
    a0 = _mm256_xor_si256(a0, _mm256_loadu_si256(v + i));
    a1 = _mm256_xor_si256(a1, _mm256_loadu_si256(v + i + 1));
    a2 = _mm256_xor_si256(a2, _mm256_loadu_si256(v + i + 2));
    a3 = _mm256_xor_si256(a3, _mm256_loadu_si256(v + i + 3));
  }
  a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  return uint64_t(_mm256_extract_epi64(a0, 0) ^ _mm256_extract_epi64(a0, 1) ^ _mm256_extract_epi64(a0, 2) ^
                  _mm256_extract_epi64(a0, 3));
}
#endif
uint64_t read_plain(const void* p, size_t bytes) {
  const auto* v = static_cast<const uint64_t*>(p);
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i + 4 <= bytes / 8; i += 4) {
    a0 ^= v[i];
    a1 ^= v[i + 1];
    a2 ^= v[i + 2];
    a3 ^= v[i + 3];
  }
  return a0 ^ a1 ^ a2 ^ a3;
}

void register_baselines() {
  struct Reader {
    const char* name;
    Isa isa;
    uint64_t (*fn)(const void*, size_t);
  };
  std::vector<Reader> readers = {{"scalar", Isa::Scalar, read_plain}};
#if defined(__x86_64__)
  readers.push_back({"avx2", Isa::Avx2, read_avx2});
  readers.push_back({"avx512", Isa::Avx512, read_avx512});
#endif
  for (const Reader& r : readers) {
    if (!isa_available(r.isa) && r.isa != Isa::Scalar) continue;
    for (const Size& sz : kSizes) {
      const size_t bytes = sz.weights * 4;
      benchmark::RegisterBenchmark(
          (std::string("baseline/read/") + r.name + "/" + sz.name).c_str(), [r, bytes, sz](benchmark::State& s) {
            const float* p = data().f32.data();
            for (auto _ : s) benchmark::DoNotOptimize(r.fn(p, bytes));
            set_rates(s, bytes, sz.weights);
          });
    }
  }
  for (const Size& sz : kSizes) {
    const size_t bytes = sz.weights * 4;
    benchmark::RegisterBenchmark((std::string("baseline/memcpy/") + sz.name).c_str(), [bytes, sz](benchmark::State& s) {
      const float* src = data().f32.data();
      float* dst = out(data().f32_out);
      for (auto _ : s) {
        std::memcpy(dst, src, bytes);
        benchmark::ClobberMemory();
      }
      set_rates(s, bytes, sz.weights);
    });
  }
}

// ---- the kernel registry --------------------------------------------------------------
// One entry per entry of struct Kernels (or array of them); `slots` lets main() warn when
// the table has kernels no benchmark covers. Each entry registers its benchmarks for one
// ISA table and one size.

using Bench = std::function<void(benchmark::State&)>;
struct KernelBench {
  const char* name;
  size_t slots;
  // Adds (name suffix, benchmark) pairs for table k and `weights` weights.
  void (*add)(const Kernels& k, size_t weights, std::vector<std::pair<std::string, Bench>>& out);
};

#define WQ_KERNEL_CASES_BENCHES
#include "tests/kernel_cases.inc"
#undef WQ_KERNEL_CASES_BENCHES

// One entry per slot of kernels/kernel_slots.inc: a slot without its bench_<name> does
// not compile.
const KernelBench kBenches[] = {
#define WQ_KERNEL(name, ...) {#name, 1, bench_##name},
#define WQ_GGML_KERNEL(name, ...) {#name, size_t(kGgmlBlockCount), bench_##name},
#include "kernels/kernel_slots.inc"
#undef WQ_KERNEL
#undef WQ_GGML_KERNEL
};

// The engine path (check_finite + quantize_rows per 256 KiB tile, in a TBB arena) on
// the 64 MiB tensor with 1 and 2 threads: the scaling figure. Output allocation is part
// of quantize_tensor and so of the time.
void register_engine(Isa isa, const Kernels& k) {
  for (int threads : {1, 2}) {
    const std::string name = std::string("engine/quantize_tensor/mnn_asym/b4/g64/f32/") + isa_name(isa) + "/64MiB/threads:" +
                             std::to_string(threads);
    benchmark::RegisterBenchmark(name.c_str(), [&k, threads](benchmark::State& s) {
      TensorView w;
      w.name = "bench.weight";
      w.shape = {int64_t(kTensorWeights / kCols), int64_t(kCols)};
      w.dtype = DType::F32;
      w.data = data().f32.data();
      w.nbytes = kTensorWeights * 4;
      QuantSpec spec;
      spec.bits = 4;
      spec.block = int64_t(kBlock);
      spec.asym = true;
      Scheduler sched(threads);
      for (auto _ : s) {
        sched.run([&] { benchmark::DoNotOptimize(quantize_tensor(w, spec, kBlock, &k)); });
      }
      set_rates(s, kTensorWeights * 4, kTensorWeights);
    })->UseRealTime();
  }
}

void register_kernels() {
  for (int i = 0; i < kIsaCount; ++i) {
    const Isa isa = Isa(i);
    const Kernels* k = kernels_for(isa);
    if (!k) continue;
    for (const KernelBench& b : kBenches) {
      for (const Size& sz : kSizes) {
        std::vector<std::pair<std::string, Bench>> list;
        b.add(*k, sz.weights, list);
        for (auto& [name, fn] : list) {
          benchmark::RegisterBenchmark((name + "/" + isa_name(isa) + "/" + sz.name).c_str(), fn);
        }
      }
    }
    register_engine(isa, *k);
  }
}

}  // namespace
}  // namespace wq

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  wq::register_baselines();
  wq::register_kernels();
  // The shared inputs are made here, not inside the first benchmark's timed loop (which
  // then reported its first iteration as 0.8 s).
  (void)wq::data();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
