// Every kernel of every ISA table against the scalar table (the oracle), byte for byte.
//
// One registry (kChecks) lists a check per entry of struct Kernels; the suite runs each
// check under each ISA this build contains (skipping ISAs this CPU lacks), and a separate
// test fails if struct Kernels has an entry no check covers. A check feeds both tables
// the same inputs (sizes 0, 1, lanes-1, lanes, lanes+1, ..., 4099 and a large one; NaN,
// +-Inf, denormals, -0.0, ties at .5, huge values, constant blocks) and compares the
// outputs with memcmp, floats as bits, including a guard zone after each output that
// neither table may write.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/ggml_types.h"
#include "kernels/ggml_blocks.h"
#include "kernels/kernels.h"
#include "kernels/hqq_reference.h"
#include "kernels/reference.h"
#include "tests/test_support.h"

namespace wq {
namespace {

// ---- inputs ---------------------------------------------------------------------------

// Float lanes of the ISA's vectors; sizes around them exercise every tail path.
size_t lanes_of(Isa isa) { return isa_info(isa).lanes; }

std::vector<size_t> float_sizes(size_t lanes) {
  std::set<size_t> s = {0, 1, 2, 3, 5, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 129, 4099};
  const size_t l = lanes;
  for (size_t v : {l - 1, l, l + 1, 2 * l - 1, 2 * l, 2 * l + 1, 2 * l + 3, 3 * l + 1, 4 * l - 1, 4 * l, 4 * l + 1,
                   5 * l + 3, 8 * l + 5, 16 * l - 1, 16 * l + 7}) {
    s.insert(v);
  }
  return {s.begin(), s.end()};
}
constexpr size_t kLargeSize = (size_t(1) << 17) + 3;

float from_bits(uint32_t u) { return ref::bits_f32(u); }

// A pool of values every float kernel must get right.
std::vector<float> special_values() {
  std::vector<float> v = {
      0.0f, -0.0f, INFINITY, -INFINITY,
      from_bits(0x7fc00000u), from_bits(0xffc00000u),            // quiet NaN, both signs
      from_bits(0x7f800001u), from_bits(0xff812345u),            // signalling NaN with payloads
      from_bits(0x7fc12345u),                                    // quiet NaN with payload
      from_bits(0x00000001u), from_bits(0x80000001u),            // smallest denormals
      from_bits(0x007fffffu), from_bits(0x807fffffu),            // largest denormals
      FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX, 3e38f, -3e38f,
      0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 0.49999997f, -0.49999997f, 0.50000006f,
      65504.0f, 65519.996f, 65520.0f, 65536.0f, -65520.0f, 6.1035156e-05f, 5.9604645e-08f,
      2.9802322e-08f, 8388608.5f, 16777216.0f, 1e-7f, 1e-6f, -1e-6f, 1.0f, -1.0f, 127.5f, -128.5f};
  return v;
}

// kind: normal | wide | special | bits | zeros | signed_zeros | constant | ties | huge
std::vector<float> make_floats(const std::string& kind, size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<float> v(n);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  if (kind == "normal") {
    for (float& x : v) x = normal(g);
  } else if (kind == "wide") {
    std::uniform_real_distribution<float> e(-40.0f, 40.0f);
    for (float& x : v) x = ((g() & 1) ? 1.0f : -1.0f) * std::exp2(e(g));
  } else if (kind == "special") {
    const std::vector<float> pool = special_values();
    for (float& x : v) x = (g() % 3 == 0) ? pool[g() % pool.size()] : normal(g);
  } else if (kind == "bits") {
    for (float& x : v) x = from_bits(uint32_t(g()));
  } else if (kind == "zeros") {
    for (float& x : v) x = 0.0f;
  } else if (kind == "signed_zeros") {
    for (float& x : v) x = (g() & 1) ? -0.0f : 0.0f;
  } else if (kind == "constant") {
    for (float& x : v) x = 3.25f;
  } else if (kind == "ties") {  // k + 0.5 and neighbours: rounding ties under scale 1
    for (float& x : v) {
      const float k = float(int(g() % 40) - 20) + 0.5f;
      const int pick = int(g() % 4);
      x = pick == 0 ? std::nextafter(k, 0.0f) : (pick == 1 ? std::nextafter(k, 100.0f) : k);
    }
  } else if (kind == "huge") {
    std::uniform_real_distribution<float> u(-3.4e38f, 3.4e38f);
    for (float& x : v) x = (g() % 4 == 0) ? ((g() & 1) ? FLT_MAX : -FLT_MAX) : u(g);
  } else {
    ADD_FAILURE() << "unknown data kind " << kind;
  }
  return v;
}
const std::vector<std::string>& all_kinds() {
  static const std::vector<std::string> k = {"normal", "wide",     "special", "bits", "zeros",
                                             "signed_zeros", "constant", "ties", "huge"};
  return k;
}

// ---- comparison -----------------------------------------------------------------------

constexpr size_t kGuard = 64;       // bytes after each output that no kernel may write
constexpr uint8_t kSentinel = 0xA5;
constexpr int kMaxReported = 12;

// Collects mismatches; a check stops reporting (not checking) after kMaxReported.
struct Report {
  int failures = 0;
  std::ostringstream text;
  void fail(const std::string& what) {
    if (failures++ < kMaxReported) text << "  " << what << "\n";
  }
  // Compares n bytes; on mismatch names the context and the first differing byte.
  void same(const void* simd, const void* ref, size_t n, const std::string& ctx) {
    if (n == 0 || std::memcmp(simd, ref, n) == 0) return;
    const auto* a = static_cast<const uint8_t*>(simd);
    const auto* b = static_cast<const uint8_t*>(ref);
    size_t i = 0;
    while (a[i] == b[i]) ++i;
    std::ostringstream m;
    m << ctx << ": byte " << i << " of " << n << " differs (simd 0x" << std::hex << int(a[i]) << ", scalar 0x"
      << int(b[i]) << ")";
    fail(m.str());
  }
};

// An output buffer of n elements followed by kGuard sentinel bytes.
template <class T>
struct Out {
  std::vector<uint8_t> bytes;
  explicit Out(size_t n) : bytes(n * sizeof(T) + kGuard, kSentinel) {}
  T* data() { return reinterpret_cast<T*>(bytes.data()); }
  size_t size_bytes() const { return bytes.size(); }
};
template <class T>
void same_out(Report& r, Out<T>& simd, Out<T>& ref, const std::string& ctx) {
  r.same(simd.bytes.data(), ref.bytes.data(), simd.size_bytes(), ctx);
}

std::string ctx_of(const std::string& kernel, const std::string& kind, size_t n) {
  return kernel + " [" + kind + ", n=" + std::to_string(n) + "]";
}

// ---- one check per kernel slot ---------------------------------------------------------
#define WQ_KERNEL_CASES_CHECKS
#include "tests/kernel_cases.inc"
#undef WQ_KERNEL_CASES_CHECKS

// ---- the registry -------------------------------------------------------------------------

struct KernelCheck {
  const char* name;  // the entry (or array of entries) of struct Kernels it covers
  size_t slots;      // how many function pointers of struct Kernels that is
  void (*run)(CheckEnv&);
};

// One check per slot of kernels/kernel_slots.inc: a slot without its check_<name> does
// not compile.
const KernelCheck kChecks[] = {
#define WQ_KERNEL(name, ...) {#name, 1, check_##name},
#define WQ_GGML_KERNEL(name, ...) {#name, size_t(kGgmlBlockCount), check_##name},
#include "kernels/kernel_slots.inc"
#undef WQ_KERNEL
#undef WQ_GGML_KERNEL
};
constexpr size_t kCheckCount = sizeof(kChecks) / sizeof(kChecks[0]);

// Every member of Kernels after `isa` is a function pointer (or an array of them).
constexpr size_t kTableSlots = (sizeof(Kernels) - offsetof(Kernels, widen_f16)) / sizeof(void (*)());

// The per-block solver keeps the best zero of the whole step budget: on the plateau
// block, every ISA ends at or below the least error of the reference's 20-step
// trajectory (and far below the start, which a stop at the first still step keeps).
TEST(HqqSolver, LeavesAPlateau) {
  const HqqParams hp{2, 20, 0.7f, 10.0f, 1.01f};
  float mn, mx;
  kernels_for(Isa::Scalar)->minmax(kPlateau, 128, &mn, &mx);
  const BlockCodec cc = ref::block_codec(Scheme::Affine, 2, mn, mx, false);
  float z = cc.zero, beta = hp.beta, best = INFINITY;
  for (int i = 0; i <= hp.max_steps; ++i) {
    float z_new, sq, emax;
    ref::hqq_block_step(kPlateau, 128, cc.inv_scale, z, 3.0f, hp.p - 1.0f, beta, ref::hqq_skip_threshold(hp.p, beta),
                        &z_new, &sq, &emax);
    best = std::min(best, sq);
    z = z_new;
    beta = beta * hp.kappa;
  }
  const float start = ref::hqq_block_sq(kPlateau, 128, cc.inv_scale, cc.zero, 3.0f);
  ASSERT_LT(best * 20, start);
  for (Isa isa : test::all_isas()) {
    if (!isa_available(isa)) continue;
    float zero = cc.zero;
    int steps = 0;
    std::vector<uint8_t> codes(128);
    kernels_for(isa)->hqq_solve_blocks(kPlateau, 1, 128, hp, &cc.inv_scale, &zero, codes.data(), &steps);
    EXPECT_LE(ref::hqq_block_sq(kPlateau, 128, cc.inv_scale, zero, 3.0f), best) << isa_name(isa);
    EXPECT_GT(steps, 1) << isa_name(isa);
  }
}

TEST(KernelRegistry, CoversEveryEntryOfTheTable) {
  size_t covered = 0;
  for (const KernelCheck& c : kChecks) covered += c.slots;
  EXPECT_EQ(covered, kTableSlots) << "struct Kernels has " << kTableSlots << " kernel slots but tests/kernels_test.cpp "
                                  << "checks " << covered << ": register a check for every new kernel";
}

TEST(KernelRegistry, EveryAvailableTableIsCompleteAndNamesItsIsa) {
  for (Isa isa : test::all_isas()) {
    const Kernels* k = kernels_for(isa);
    if (!k) continue;
    EXPECT_EQ(k->isa, isa) << isa_name(isa);
    const auto* slots = reinterpret_cast<const unsigned char*>(k) + offsetof(Kernels, widen_f16);
    for (size_t i = 0; i < kTableSlots; ++i) {
      void (*f)() = nullptr;
      std::memcpy(&f, slots + i * sizeof(f), sizeof(f));
      EXPECT_NE(f, nullptr) << isa_name(isa) << " table slot " << i << " is empty";
    }
  }
}

// ---- llama.cpp's own bytes ------------------------------------------------------------
// tests/data/ggml_quants_digests.json holds digests of what llama.cpp c392e5094 itself
// wrote (ggml_quantize_chunk, then its to_float) for kq_input: a program outside this
// repository, linked against that commit's libggml-base, generated the same input with the
// same code and printed them. Every ISA's table must write those bytes, with and without
// the importance matrix, and read them back to those floats.
constexpr size_t kKqRows = 6, kKqCols = 768;

uint32_t kq_next(uint32_t* s) {
  *s = *s * 1664525u + 1013904223u;
  return *s;
}
// 24 random bits as a float in [-1, 1), exactly.
float kq_unit(uint32_t* s) { return float(int32_t(kq_next(s) >> 8) - 8388608) * (1.0f / 8388608.0f); }

// Six rows of 768 weights: plain; 16-weight groups scaled by 2^-4..2^4; outliers, a zero
// group, a constant group and an all-negative group; magnitudes near 2^-100 with denormal
// groups; magnitudes near 30000; small integers and half-integers (rounding ties). And one
// importance weight per column: random in [0, 4), every 13th zero, columns 256-511 all 1.
void kq_input(std::vector<float>& x, std::vector<float>& imatrix) {
  x.assign(kKqRows * kKqCols, 0.0f);
  uint32_t s = 12345u;
  for (size_t r = 0; r < kKqRows; ++r) {
    for (size_t c = 0; c < kKqCols; ++c) {
      const float v = kq_unit(&s);
      const size_t g = c / 16;
      float w;
      switch (r) {
        case 0: w = v; break;
        case 1: w = v * (float(1 << (g % 9)) / 16.0f); break;
        case 2: w = g == 5 ? 0.0f : g == 9 ? 0.25f : g == 12 ? -(v < 0 ? -v : v) : (c % 37 == 0 ? v * 8.0f : v); break;
        case 3: w = g % 4 == 1 ? v * 0x1p-140f : v * 0x1p-100f; break;
        case 4: w = v * 30000.0f; break;
        default: w = float(int32_t(kq_next(&s) >> 28) - 8) + ((g % 2) ? 0.5f : 0.0f); break;
      }
      x[r * kKqCols + c] = w;
    }
  }
  imatrix.assign(kKqCols, 0.0f);
  uint32_t t = 777u;
  for (size_t c = 0; c < kKqCols; ++c) {
    float w = float(kq_next(&t) >> 8) * 0x1p-22f;
    if (c % 13 == 5) w = 0.0f;
    if (c >= 256 && c < 512) w = 1.0f;
    imatrix[c] = w;
  }
}

// 64-bit FNV-1a of n bytes, as hex (the oracle program's digest).
std::string fnv1a64_hex(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

TEST(GgmlBlocks, EveryIsaWritesLlamaCppsBytes) {
  std::ifstream f(test::test_data_dir() + "/ggml_quants_digests.json");
  ASSERT_TRUE(f.good()) << "tests/data/ggml_quants_digests.json is missing";
  const nlohmann::json want = nlohmann::json::parse(f);
  std::vector<float> x, imatrix;
  kq_input(x, imatrix);
  for (const GgmlTypeTraits& tt : kGgmlTraits) {
    ASSERT_TRUE(want.contains(tt.name)) << tt.name << " has no llama.cpp digest";
    const nlohmann::json& d = want[tt.name];
    for (Isa isa : test::all_isas()) {
      if (!isa_available(isa)) continue;
      const Kernels& k = *kernels_for(isa);
      for (const bool with : {false, true}) {
        const std::string kind = with ? "imatrix" : "plain";
        const size_t row_bytes = ggml_row_bytes(tt.type, kKqCols);
        std::vector<uint8_t> q(kKqRows * row_bytes, 0xAB);
        for (size_t r = 0; r < kKqRows; ++r) {
          k.quantize_ggml[int(tt.type)](x.data() + r * kKqCols, q.data() + r * row_bytes, kKqCols,
                                        with ? imatrix.data() : nullptr);
        }
        EXPECT_EQ(fnv1a64_hex(q.data(), q.size()), d[kind].get<std::string>())
            << tt.name << " " << kind << " on " << isa_name(isa);
        std::vector<float> back(x.size());
        k.dequantize_ggml[int(tt.type)](q.data(), back.data(), back.size());
        EXPECT_EQ(fnv1a64_hex(back.data(), back.size() * sizeof(float)),
                  d[kind + "_dequantized"].get<std::string>())
            << tt.name << " " << kind << " dequantized on " << isa_name(isa);
      }
    }
  }
}

// Dequantizing what a type wrote gives back the weights within its resolution: the
// largest error of a block is a fraction of that block's magnitude.
TEST(GgmlBlocks, RoundTripStaysWithinTheTypesResolution) {
  std::vector<float> x, imatrix;
  kq_input(x, imatrix);
  x.resize(kKqCols);  // the plain row: uniform in [-1, 1)
  for (const GgmlTypeTraits& tt : kGgmlTraits) {
    for (Isa isa : test::all_isas()) {
      if (!isa_available(isa)) continue;
      const Kernels& k = *kernels_for(isa);
      for (const bool with : {false, true}) {
        std::vector<uint8_t> q(ggml_row_bytes(tt.type, kKqCols));
        std::vector<float> back(kKqCols);
        k.quantize_ggml[int(tt.type)](x.data(), q.data(), kKqCols, with ? imatrix.data() : nullptr);
        k.dequantize_ggml[int(tt.type)](q.data(), back.data(), kKqCols);
        double worst = 0;
        for (size_t i = 0; i < kKqCols; ++i) worst = std::max(worst, double(std::fabs(back[i] - x[i])));
        // One step of a b-bit grid over [-1, 1) is 2 / 2^b; a search may trade up to a
        // step for a lower weighted error, and 2-bit codes have 4 levels for a range of 2.
        const double step = 2.0 / double(1 << tt.bits);
        EXPECT_LT(worst, 1.5 * step) << tt.name << (with ? " imatrix" : "") << " on " << isa_name(isa);
      }
    }
  }
}

using Param = std::tuple<Isa, size_t>;

class KernelsMatchScalar : public ::testing::TestWithParam<Param> {};

TEST_P(KernelsMatchScalar, ByteForByte) {
  const auto [isa, index] = GetParam();
  WQ_REQUIRE_ISA(isa);
  const Kernels* simd = kernels_for(isa);
  const Kernels* ref = kernels_for(Isa::Scalar);
  ASSERT_NE(simd, nullptr);
  ASSERT_NE(ref, nullptr);
  Report report;
  CheckEnv env{*simd, *ref, lanes_of(isa), report};
  kChecks[index].run(env);
  EXPECT_EQ(report.failures, 0) << isa_name(isa) << " " << kChecks[index].name << ": " << report.failures
                                << " mismatches against the scalar table, the first ones:\n"
                                << report.text.str();
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return std::string(isa_name(std::get<0>(info.param))) + "_" + kChecks[std::get<1>(info.param)].name;
}

INSTANTIATE_TEST_SUITE_P(AllIsas, KernelsMatchScalar,
                         ::testing::Combine(::testing::ValuesIn(test::all_isas()),
                                            ::testing::Range(size_t(0), kCheckCount)),
                         param_name);

// ---- round trip -------------------------------------------------------------------------

class PackRoundTrip : public ::testing::TestWithParam<Isa> {};

TEST_P(PackRoundTrip, UnpackGivesTheCodesBack) {
  const Isa isa = GetParam();
  WQ_REQUIRE_ISA(isa);
  const Kernels& k = *kernels_for(isa);
  for (int bits = 2; bits <= 8; ++bits) {
    const std::vector<uint8_t> codes = random_codes(kLargeSize, bits, 141 + uint32_t(bits));
    for (size_t n : code_counts()) {
      std::vector<uint8_t> packed((n * size_t(bits) + 7) / 8), back(n);
      k.pack_codes(codes.data(), n, bits, packed.data());
      k.unpack_codes(packed.data(), n, bits, back.data());
      ASSERT_EQ(0, n ? std::memcmp(back.data(), codes.data(), n) : 0) << isa_name(isa) << " bits " << bits << " n " << n;
      if (n * size_t(bits) % 8) {  // unused high bits of the last byte are zero
        ASSERT_EQ(packed.back() >> (n * size_t(bits) % 8), 0) << isa_name(isa) << " bits " << bits << " n " << n;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, PackRoundTrip, ::testing::ValuesIn(test::all_isas()), test::isa_param_name);

}  // namespace
}  // namespace wq

namespace wq {
namespace {

// ---- the ISA list ----------------------------------------------------------------------

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Every feature a compile flag of kernels/isa_list.inc enables is in the ISA's runtime
// feature list, which dispatch checks before the table is used.
TEST(IsaList, EveryFlagsFeatureIsCheckedAtRunTime) {
  for (int i = 0; i < kIsaCount; ++i) {
    const IsaInfo& info = isa_info(Isa(i));
    const std::vector<std::string> features = words(info.features);
    for (const std::string& flag : words(info.flags)) {
      ASSERT_EQ(flag.rfind("-m", 0), 0u) << info.name << ": flag " << flag << " is not a -m feature flag";
      std::string feature = flag.substr(2);
      if (feature == "bmi") feature = "bmi1";  // GCC's -mbmi is CPUID's BMI1
      EXPECT_NE(std::find(features.begin(), features.end(), feature), features.end())
          << info.name << ": " << flag << " enables " << feature << ", which is not checked at run time";
    }
    // -mavx2 implies AVX; an ISA built with any AVX flag must check the OS's AVX state.
    if (info.flags[0] != '\0' && std::string(info.family) == "x86") {
      EXPECT_NE(std::find(features.begin(), features.end(), "avx"), features.end()) << info.name;
    }
  }
}

TEST(IsaList, NamesParseBackAndTheBestIsAvailable) {
  for (int i = 0; i < kIsaCount; ++i) {
    Isa back;
    ASSERT_TRUE(parse_isa(isa_name(Isa(i)), &back));
    EXPECT_EQ(back, Isa(i));
    EXPECT_GE(isa_info(Isa(i)).lanes, 4u);
  }
  EXPECT_TRUE(isa_available(Isa::Scalar));
  EXPECT_TRUE(isa_available(best_isa()));
  Isa bogus;
  EXPECT_FALSE(parse_isa("sse9", &bogus));
}

}  // namespace
}  // namespace wq
