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

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstring>
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

// ---- checks ---------------------------------------------------------------------------

struct CheckEnv {
  const Kernels& simd;
  const Kernels& ref;
  size_t lanes;
  Report& report;
};

void check_widen(CheckEnv& e, bool bf16) {
  const char* name = bf16 ? "widen_bf16" : "widen_f16";
  auto run = [&](const std::vector<uint16_t>& src, size_t off, size_t n, const std::string& kind) {
    Out<float> a(n), b(n);
    (bf16 ? e.simd.widen_bf16 : e.simd.widen_f16)(src.data() + off, a.data(), n);
    (bf16 ? e.ref.widen_bf16 : e.ref.widen_f16)(src.data() + off, b.data(), n);
    same_out(e.report, a, b, ctx_of(name, kind, n));
  };
  std::vector<uint16_t> every(65536);
  for (size_t i = 0; i < every.size(); ++i) every[i] = uint16_t(i);
  run(every, 0, every.size(), "every 16-bit pattern");
  std::mt19937 g(11);
  std::vector<uint16_t> rnd(kLargeSize + 1);
  for (uint16_t& h : rnd) h = uint16_t(g());
  for (size_t n : float_sizes(e.lanes)) run(rnd, 1, n, "random bits, unaligned");
  run(rnd, 0, kLargeSize, "random bits");
}

void check_widen_f16(CheckEnv& e) { check_widen(e, false); }
void check_widen_bf16(CheckEnv& e) { check_widen(e, true); }

void check_narrow_f16(CheckEnv& e) {
  auto run = [&](const std::vector<float>& src, size_t n, const std::string& kind) {
    Out<uint16_t> a(n), b(n);
    e.simd.narrow_f16(src.data(), a.data(), n);
    e.ref.narrow_f16(src.data(), b.data(), n);
    same_out(e.report, a, b, ctx_of("narrow_f16", kind, n));
  };
  // Every rounding boundary of f16: each half value, the exact midpoint to the next one
  // (a tie) and the floats either side of that midpoint, both signs.
  std::vector<float> edges;
  for (uint32_t h = 0; h < 0x7c00u; ++h) {
    const float v = ref::f16_to_f32(uint16_t(h));
    const float next = ref::f16_to_f32(uint16_t(h + 1));  // 0x7c00 is +Inf
    const float mid = std::isinf(next) ? 65520.0f : (v + next) / 2.0f;
    for (float x : {v, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      edges.push_back(x);
      edges.push_back(-x);
    }
  }
  run(edges, edges.size(), "every f16 rounding boundary");
  for (const std::string& kind : all_kinds()) {
    const std::vector<float> x = make_floats(kind, 4099, 21);
    for (size_t n : float_sizes(e.lanes)) run(x, std::min(n, x.size()), kind);
  }
  run(make_floats("bits", kLargeSize, 22), kLargeSize, "bits");
}

void check_minmax(CheckEnv& e) {
  for (const std::string& kind : all_kinds()) {
    const std::vector<float> x = make_floats(kind, kLargeSize, 31);
    std::vector<size_t> sizes = float_sizes(e.lanes);
    sizes.push_back(kLargeSize - 1);
    for (size_t n : sizes) {
      for (size_t off : {size_t(0), size_t(1)}) {
        float mn[2], mx[2];
        e.simd.minmax(x.data() + off, n, &mn[0], &mx[0]);
        e.ref.minmax(x.data() + off, n, &mn[1], &mx[1]);
        e.report.same(&mn[0], &mn[1], 4, ctx_of("minmax min", kind, n));
        e.report.same(&mx[0], &mx[1], 4, ctx_of("minmax max", kind, n));
      }
    }
  }
}

void check_absmax(CheckEnv& e) {
  for (const std::string& kind : all_kinds()) {
    const std::vector<float> x = make_floats(kind, kLargeSize, 41);
    std::vector<size_t> sizes = float_sizes(e.lanes);
    sizes.push_back(kLargeSize - 1);
    for (size_t n : sizes) {
      for (size_t off : {size_t(0), size_t(1)}) {
        const float a = e.simd.absmax(x.data() + off, n), b = e.ref.absmax(x.data() + off, n);
        e.report.same(&a, &b, 4, ctx_of("absmax", kind, n));
      }
    }
  }
}

void check_find_nonfinite(CheckEnv& e) {
  std::mt19937 g(51);
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    const size_t es = dtype_size(t);
    std::vector<size_t> sizes = float_sizes(e.lanes);
    sizes.push_back(kLargeSize);
    for (size_t n : sizes) {
      // Finite values; then none, one or two bad elements at interesting places.
      std::vector<uint8_t> base(n * es + 1);
      for (size_t i = 0; i < n; ++i) {
        const float f = float(int(g() % 2001) - 1000) * 0.37f;
        if (t == DType::F32) {
          std::memcpy(&base[1 + 4 * i], &f, 4);
        } else {
          const uint16_t h = t == DType::F16 ? ref::f32_to_f16(f) : uint16_t(ref::f32_bits(f) >> 16);
          std::memcpy(&base[1 + 2 * i], &h, 2);
        }
      }
      std::vector<std::vector<size_t>> placements = {{}};
      for (size_t p : {size_t(0), size_t(1), e.lanes - 1, e.lanes, 2 * e.lanes + 1, 4 * e.lanes, n / 2, n - 1}) {
        if (p < n) placements.push_back({p});
      }
      if (n > 3) placements.push_back({n - 1, 2});
      for (const std::vector<size_t>& where : placements) {
        for (int kind = 0; kind < 3; ++kind) {  // +Inf, -Inf, NaN
          std::vector<uint8_t> buf = base;
          for (size_t p : where) {
            if (t == DType::F32) {
              const uint32_t u = kind == 0 ? 0x7f800000u : (kind == 1 ? 0xff800000u : 0x7fc01234u);
              std::memcpy(&buf[1 + 4 * p], &u, 4);
            } else {
              const uint16_t inf = t == DType::F16 ? 0x7c00 : 0x7f80;
              const uint16_t h = kind == 0 ? inf : (kind == 1 ? uint16_t(inf | 0x8000) : uint16_t(inf | 1));
              std::memcpy(&buf[1 + 2 * p], &h, 2);
            }
          }
          const size_t a = e.simd.find_nonfinite(buf.data() + 1, t, n);
          const size_t b = e.ref.find_nonfinite(buf.data() + 1, t, n);
          if (a != b) {
            e.report.fail(ctx_of(std::string("find_nonfinite ") + dtype_name(t), "placement", n) + ": simd " +
                          std::to_string(a) + ", scalar " + std::to_string(b));
          }
        }
      }
    }
  }
}

// Codecs to test a scheme with: those block_codec derives from the data's statistics,
// and hand-made ones (scale 1 for ties, scales at and around MNN's 1e-6 threshold, huge).
std::vector<BlockCodec> codecs_for(const Kernels& ref, Scheme scheme, int bits, const std::vector<float>& x) {
  std::vector<BlockCodec> c;
  float mn, mx;
  ref.minmax(x.data(), x.size(), &mn, &mx);
  c.push_back(ref::block_codec(scheme, bits, mn, mx, false));
  if (scheme == Scheme::Affine) c.push_back(ref::block_codec(scheme, bits, mn, mx, true));
  const float qmax = float(ref::qmax_of(bits));
  for (float s : {1.0f, 0.5f, 3.0f, 1e-6f, 1.0000001e-6f, 1e-7f, 0.0f, 3e38f}) {
    for (float z : {0.0f, -3.0f, 0.5f}) {
      BlockCodec k{scheme, bits, s, scheme == Scheme::MnnSym ? 0.0f : z, 0.0f};
      if (scheme == Scheme::Affine) {
        k.inv_scale = s == 0.0f ? 1.0f : std::min(1.0f / s, 2e4f);
        k.zero = z * qmax / 4.0f;
      }
      c.push_back(k);
    }
  }
  // NaN parameters with different signs and payloads (a corrupt file's scales): which
  // NaN survives must not depend on the ISA or on operand order.
  c.push_back(BlockCodec{scheme, bits, from_bits(0x7fc01234u), from_bits(0xffc00001u), from_bits(0xff800001u)});
  c.push_back(BlockCodec{scheme, bits, from_bits(0xffc00005u), from_bits(0x7f800003u), from_bits(0x7fc00007u)});
  return c;
}

const char* scheme_name(Scheme s) {
  return s == Scheme::MnnSym ? "mnn_sym" : (s == Scheme::MnnAsym ? "mnn_asym" : "affine");
}

void check_quantize_codes(CheckEnv& e) {
  for (Scheme scheme : {Scheme::MnnSym, Scheme::MnnAsym, Scheme::Affine}) {
    for (int bits = 2; bits <= 8; ++bits) {
      for (const std::string& kind : all_kinds()) {
        const std::vector<float> x = make_floats(kind, 4099, 61 + uint32_t(bits));
        const std::string name = std::string("quantize_codes ") + scheme_name(scheme) + " b" + std::to_string(bits);
        for (const BlockCodec& c : codecs_for(e.ref, scheme, bits, x)) {
          for (size_t n : float_sizes(e.lanes)) {
            Out<uint8_t> a(n), b(n);
            e.simd.quantize_codes(x.data(), n, c, a.data());
            e.ref.quantize_codes(x.data(), n, c, b.data());
            std::ostringstream cs;
            cs << " s=" << c.scale << " z=" << c.zero << " inv=" << c.inv_scale;
            same_out(e.report, a, b, ctx_of(name + cs.str(), kind, n));
          }
        }
      }
      const std::vector<float> big = make_floats("special", kLargeSize, 62);
      for (const BlockCodec& c : codecs_for(e.ref, scheme, bits, big)) {
        Out<uint8_t> a(kLargeSize), b(kLargeSize);
        e.simd.quantize_codes(big.data(), kLargeSize, c, a.data());
        e.ref.quantize_codes(big.data(), kLargeSize, c, b.data());
        same_out(e.report, a, b, ctx_of(std::string("quantize_codes ") + scheme_name(scheme), "special", kLargeSize));
      }
    }
  }
}

std::vector<uint8_t> random_codes(size_t n, int bits, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<uint8_t> c(n);
  for (uint8_t& v : c) v = uint8_t(g() & ((1u << bits) - 1u));
  return c;
}

void check_dequantize_codes(CheckEnv& e) {
  for (Scheme scheme : {Scheme::MnnSym, Scheme::MnnAsym, Scheme::Affine}) {
    for (int bits = 2; bits <= 8; ++bits) {
      const std::vector<uint8_t> codes = random_codes(kLargeSize, bits, 71 + uint32_t(bits));
      for (const BlockCodec& c : codecs_for(e.ref, scheme, bits, make_floats("normal", 256, 72))) {
        std::vector<size_t> sizes = float_sizes(e.lanes);
        sizes.push_back(kLargeSize);
        for (size_t n : sizes) {
          Out<float> a(n), b(n);
          e.simd.dequantize_codes(codes.data(), n, c, a.data());
          e.ref.dequantize_codes(codes.data(), n, c, b.data());
          same_out(e.report, a, b,
                   ctx_of(std::string("dequantize_codes ") + scheme_name(scheme) + " b" + std::to_string(bits),
                          "random codes", n));
        }
      }
    }
  }
}

// Every count up to a few vectors of every width, plus large ones.
std::vector<size_t> code_counts() {
  std::vector<size_t> v;
  for (size_t n = 0; n <= 600; ++n) v.push_back(n);
  for (size_t n : {size_t(1021), size_t(1024), size_t(4099), kLargeSize}) v.push_back(n);
  return v;
}

void check_pack_codes(CheckEnv& e) {
  for (int bits = 2; bits <= 8; ++bits) {
    const std::vector<uint8_t> codes = random_codes(kLargeSize, bits, 81 + uint32_t(bits));
    for (size_t n : code_counts()) {
      const size_t nbytes = (n * size_t(bits) + 7) / 8;
      Out<uint8_t> a(nbytes), b(nbytes);
      e.simd.pack_codes(codes.data(), n, bits, a.data());
      e.ref.pack_codes(codes.data(), n, bits, b.data());
      same_out(e.report, a, b, ctx_of("pack_codes b" + std::to_string(bits), "random codes", n));
    }
  }
}

void check_unpack_codes(CheckEnv& e) {
  std::mt19937 g(91);
  std::vector<uint8_t> stream(kLargeSize + 8);
  for (uint8_t& v : stream) v = uint8_t(g());
  for (int bits = 2; bits <= 8; ++bits) {
    for (size_t n : code_counts()) {
      // The exact byte count, so reading past it would leave the vector (ASan sees it).
      const size_t nbytes = (n * size_t(bits) + 7) / 8;
      const std::vector<uint8_t> in(stream.begin(), stream.begin() + std::ptrdiff_t(nbytes));
      Out<uint8_t> a(n), b(n);
      e.simd.unpack_codes(in.data(), n, bits, a.data());
      e.ref.unpack_codes(in.data(), n, bits, b.data());
      same_out(e.report, a, b, ctx_of("unpack_codes b" + std::to_string(bits), "random bytes", n));
    }
  }
}

void check_sq_err(CheckEnv& e) {
  for (const std::string& kind : all_kinds()) {
    const std::vector<float> a = make_floats(kind, kLargeSize, 101);
    std::vector<float> b = make_floats("normal", kLargeSize, 102);
    for (size_t i = 0; i < b.size(); ++i) b[i] = a[i] + b[i] * 0.01f;
    std::vector<size_t> sizes = float_sizes(e.lanes);
    sizes.push_back(kLargeSize);
    for (size_t n : sizes) {
      double r[4];
      e.simd.sq_err(a.data(), b.data(), n, &r[0], &r[1]);
      e.ref.sq_err(a.data(), b.data(), n, &r[2], &r[3]);
      e.report.same(&r[0], &r[2], 8, ctx_of("sq_err err2", kind, n));
      e.report.same(&r[1], &r[3], 8, ctx_of("sq_err ref2", kind, n));
    }
  }
}

// Source rows in each dtype: f32 data, or its f16/bf16 narrowing, or raw 16-bit patterns.
struct RowsSource {
  DType dtype;
  std::vector<uint8_t> bytes;
};
RowsSource rows_source(DType t, const std::vector<float>& x, bool raw_bits, uint32_t seed) {
  RowsSource s{t, std::vector<uint8_t>(x.size() * dtype_size(t))};
  std::mt19937 g(seed);
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&s.bytes[4 * i], &x[i], 4);
    } else {
      uint16_t h = raw_bits ? uint16_t(g())
                            : (t == DType::F16 ? ref::f32_to_f16(x[i]) : uint16_t(ref::f32_bits(x[i]) >> 16));
      std::memcpy(&s.bytes[2 * i], &h, 2);
    }
  }
  return s;
}

void check_quantize_rows(CheckEnv& e) {
  struct Shape {
    size_t rows, cols, block, stride_pad;
  };
  const size_t l = e.lanes;
  // Few blocks per row (one by one), and many: groups of 16 (the widest ISA's lanes) and
  // of `lanes` blocks, with counts that leave a remainder, for every block size the SIMD
  // tables specialise (32, 64, 128, 256) and others.
  const std::vector<Shape> shapes = {{1, 1, 1, 0},          {3, l + 1, l + 1, 0},  {4, 64, 32, 0},
                                     {3, 64, 64, 5},        {2, 172, 172, 0},      {2, 96, 32, 3},
                                     {2, 2 * l + 3, 2 * l + 3, 1}, {3, 128, 64, 0}, {1, 4099, 4099, 0},
                                     {2, 4 * l + 4, 4 * l + 4, 0}, {2, 8 * l, l, 0},
                                     {3, 35 * 32, 32, 0},   {2, 37 * 64, 64, 7},   {2, 16 * 128, 128, 0},
                                     {2, 33 * 256, 256, 0}, {2, (2 * l + 3) * l, l, 0},
                                     {2, (l + 5) * 4 * l, 4 * l, 0}, {2, 19 * 48, 48, 0}};
  const std::vector<std::string> kinds = {"normal", "special", "constant", "signed_zeros", "ties", "huge"};
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    for (Scheme scheme : {Scheme::MnnSym, Scheme::MnnAsym, Scheme::Affine}) {
      for (int bits = 2; bits <= 8; ++bits) {
        for (const Shape& sh : shapes) {
          for (size_t ki = 0; ki < kinds.size() + (t == DType::F32 ? 0 : 1); ++ki) {
            const bool raw = ki == kinds.size();  // 16-bit dtypes: random bit patterns too
            const std::string kind = raw ? "raw 16-bit patterns" : kinds[ki];
            const size_t stride = sh.cols + sh.stride_pad;
            const std::vector<float> x = make_floats(raw ? "normal" : kind, sh.rows * stride, 111 + uint32_t(bits));
            const RowsSource src = rows_source(t, x, raw, 112);
            for (bool round_zero : {false, true}) {
              if (round_zero && scheme != Scheme::Affine) continue;
              const size_t nb = sh.cols / sh.block;
              const size_t prb = (sh.cols * size_t(bits) + 7) / 8;
              Out<uint8_t> pa(sh.rows * prb), pb(sh.rows * prb);
              Out<float> sa(sh.rows * nb), sb(sh.rows * nb), za(sh.rows * nb), zb(sh.rows * nb);
              RowQuantJob job{};
              job.src = src.bytes.data();
              job.src_dtype = t;
              job.src_row_stride = stride;
              job.cols = sh.cols;
              job.block = sh.block;
              job.scheme = scheme;
              job.bits = bits;
              job.round_zero = round_zero;
              job.packed_row_bytes = prb;
              // Rows [1, rows) when there are several: a tile that does not start at 0.
              const size_t r0 = sh.rows > 1 ? 1 : 0;
              RowQuantJob ja = job, jb = job;
              ja.packed = pa.data();
              ja.scales = sa.data();
              ja.zeros = scheme == Scheme::MnnSym ? nullptr : za.data();
              jb.packed = pb.data();
              jb.scales = sb.data();
              jb.zeros = scheme == Scheme::MnnSym ? nullptr : zb.data();
              e.simd.quantize_rows(ja, r0, sh.rows);
              e.ref.quantize_rows(jb, r0, sh.rows);
              std::ostringstream name;
              name << "quantize_rows " << dtype_name(t) << " " << scheme_name(scheme) << " b" << bits << " "
                   << sh.rows << "x" << sh.cols << "/" << sh.block << (round_zero ? " round_zero" : "");
              same_out(e.report, pa, pb, ctx_of(name.str() + " packed", kind, sh.cols));
              same_out(e.report, sa, sb, ctx_of(name.str() + " scales", kind, sh.cols));
              same_out(e.report, za, zb, ctx_of(name.str() + " zeros", kind, sh.cols));
            }
          }
        }
      }
    }
  }
}

// 32-weight blocks that probe ggml's order-dependent choices and its ties.
std::vector<float> ggml_probe_blocks() {
  std::vector<float> v;
  auto block = [&](std::vector<float> b) {
    b.resize(32, b.empty() ? 0.0f : b.back());
    v.insert(v.end(), b.begin(), b.end());
  };
  auto ramp = [](float start, float step) {
    std::vector<float> b(32);
    for (int j = 0; j < 32; ++j) b[size_t(j)] = start + step * float(j);
    return b;
  };
  const float nan = from_bits(0x7fc00000u);
  block(std::vector<float>(32, 0.0f));
  block(std::vector<float>(32, -0.0f));
  for (int first_neg = 0; first_neg < 2; ++first_neg) {
    for (float sign : {1.0f, -1.0f}) {  // zero is the min (others > 0) or the max (others < 0)
      std::vector<float> b = ramp(sign, sign);
      b[3] = first_neg ? -0.0f : 0.0f;
      b[20] = first_neg ? 0.0f : -0.0f;
      block(b);
      b[3] = nan;  // the first zero after a NaN
      block(b);
    }
  }
  for (int swap = 0; swap < 2; ++swap) {  // equal magnitudes: the first one decides the sign
    std::vector<float> b = ramp(0.1f, 0.05f);
    b[5] = swap ? -3.0f : 3.0f;
    b[9] = swap ? 3.0f : -3.0f;
    block(b);
    b[5] = swap ? -INFINITY : INFINITY;
    b[9] = swap ? INFINITY : -INFINITY;
    block(b);
  }
  block(std::vector<float>(32, nan));
  {
    std::vector<float> b(32, nan);
    b[17] = -0.0f;
    block(b);
  }
  block(std::vector<float>(32, 1.5f));
  block(std::vector<float>(32, from_bits(0x00000003u)));
  block({FLT_MAX, -FLT_MAX, 1.0f, -1.0f});
  block({INFINITY, 1.0f, 2.0f});
  block({-INFINITY, 1.0f, 2.0f});
  // Ties: max magnitude 8 / 16 with negative sign, or min 0 max 15 / 31, gives d = 1
  // and x + k.5 lands exactly on integers; 127 gives Q8_0 d = 1.
  for (float top : {-8.0f, -16.0f, 127.0f, -127.0f}) {
    std::vector<float> b = {top};
    for (int j = 1; j < 32; ++j) b.push_back(float(j % 15) - 7.5f);
    block(b);
  }
  for (float top : {15.0f, 31.0f}) {
    std::vector<float> b = {0.0f, top};
    for (int j = 2; j < 32; ++j) b.push_back(float(j % 15) + 0.5f);
    block(b);
  }
  return v;
}

const char* ggml_name(GgmlBlock t) {
  static const char* names[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"};
  return names[int(t)];
}

void check_quantize_ggml(CheckEnv& e) {
  std::vector<std::pair<std::string, std::vector<float>>> inputs;
  inputs.emplace_back("probe blocks", ggml_probe_blocks());
  for (const std::string& kind : all_kinds()) inputs.emplace_back(kind, make_floats(kind, 32 * 4099, 121));
  const std::vector<size_t> counts = {0, 32, 64, 96, 32 * e.lanes, 32 * (e.lanes + 1), 32 * 129, 32 * 4099};
  for (int ti = 0; ti < kGgmlBlockCount; ++ti) {
    const GgmlBlock t = GgmlBlock(ti);
    for (const auto& [kind, x] : inputs) {
      std::vector<size_t> ns = counts;
      ns.push_back(x.size());
      for (size_t n : ns) {
        if (n > x.size()) continue;
        const size_t nbytes = ggml_row_bytes(t, n);
        Out<uint8_t> a(nbytes), b(nbytes);
        e.simd.quantize_ggml[ti](x.data(), a.data(), n);
        e.ref.quantize_ggml[ti](x.data(), b.data(), n);
        same_out(e.report, a, b, ctx_of(std::string("quantize_ggml ") + ggml_name(t), kind, n));
      }
    }
  }
}

void check_dequantize_ggml(CheckEnv& e) {
  for (int ti = 0; ti < kGgmlBlockCount; ++ti) {
    const GgmlBlock t = GgmlBlock(ti);
    const size_t bb = ggml_traits(t).bytes;
    // Random bytes (every d, m, code and qh pattern, NaN and Inf scales included) and
    // blocks the reference quantized.
    std::mt19937 g(131);
    std::vector<uint8_t> rnd(4099 * bb);
    for (uint8_t& v : rnd) v = uint8_t(g());
    const std::vector<float> x = make_floats("normal", 32 * 4099, 132);
    std::vector<uint8_t> quant(4099 * bb);
    e.ref.quantize_ggml[ti](x.data(), quant.data(), x.size());
    const std::vector<std::pair<std::string, const std::vector<uint8_t>*>> inputs = {{"random bytes", &rnd},
                                                                                    {"quantized", &quant}};
    for (const auto& [kind, blocks] : inputs) {
      for (size_t nblk : {size_t(0), size_t(1), size_t(2), size_t(3), e.lanes, e.lanes + 1, size_t(129), size_t(4099)}) {
        const size_t n = nblk * 32;
        Out<float> a(n), b(n);
        e.simd.dequantize_ggml[ti](blocks->data(), a.data(), n);
        e.ref.dequantize_ggml[ti](blocks->data(), b.data(), n);
        same_out(e.report, a, b, ctx_of(std::string("dequantize_ggml ") + ggml_name(t), kind, n));
      }
    }
  }
}

// ---- the registry -------------------------------------------------------------------------

struct KernelCheck {
  const char* name;  // the entry (or array of entries) of struct Kernels it covers
  size_t slots;      // how many function pointers of struct Kernels that is
  void (*run)(CheckEnv&);
};

// HQQ: finite weights only (the engine rejects the rest before the solver). Blocks of
// LLM scale (shrinkage provably zero, skipped) and of unit scale (shrinkage computed),
// every bits, block sizes around the lane count, several penalties.
std::vector<float> hqq_input(const std::string& kind, size_t n, uint32_t seed) {
  std::vector<float> x = make_floats(kind, n, seed);
  for (float& v : x) {
    if (!std::isfinite(v)) v = 0.25f;
    if (std::fabs(v) > 1e6f) v = std::copysign(1e6f, v);
  }
  return x;
}

struct HqqCase {
  std::vector<float> w;
  std::vector<float> inv, zero;
  size_t block, nblocks;
  HqqParams hp;
};

// A block on a plateau (tests/hqq_test.cpp, outlier columns): with the shrinkage
// active its zero stands still at step 1 and moves again from step 2 as beta grows;
// the solver must not stop there.
const float kPlateau[128] = {
  0x1.f1902p-9f, 0x1.7690b8p-5f, -0x1.fc3df8p-6f, 0x1.498edep-6f, -0x1.50913cp-8f, 0x1.9d83a4p-6f,
  -0x1.473108p-7f, 0x1.1f0c3ep-8f, 0x1.4b854ep-8f, 0x1.7e9042p-6f, 0x1.0d7622p-8f, 0x1.2954bp-7f,
  -0x1.52235ap-6f, 0x1.00b10ep-1f, 0x1.e5da56p-12f, -0x1.2dc7fp-7f, -0x1.ca0cb8p-9f, -0x1.62b7a8p-5f,
  -0x1.53fcc4p-8f, 0x1.99daa6p-6f, 0x1.210a1ep-9f, 0x1.1e3fcep-8f, -0x1.76f4a6p-6f, 0x1.6030b8p-6f,
  -0x1.62a93p-6f, 0x1.5e9a9cp-5f, -0x1.c79bcp-7f, -0x1.3c5352p-7f, 0x1.560464p-7f, -0x1.721244p-7f,
  -0x1.0748cep-6f, 0x1.a28e2ap-6f, -0x1.896c9ap-6f, -0x1.00aa4p-5f, -0x1.3030eep-6f, -0x1.a1ff52p-6f,
  0x1.37bdbap-6f, -0x1.da9296p-8f, -0x1.391384p-5f, -0x1.662db2p-7f, 0x1.336f7ap-5f, -0x1.18c972p-6f,
  -0x1.ea624p-10f, -0x1.95136ep-8f, 0x1.6d3388p-8f, -0x1.894be6p-6f, -0x1.265d94p-6f, -0x1.b50684p-8f,
  -0x1.b09264p-8f, -0x1.9b08f8p-9f, -0x1.693f2ap-6f, 0x1.161d7p-11f, 0x1.6140ep-8f, 0x1.cfc20ap-7f,
  0x1.eef0dcp-6f, 0x1.9ecf04p-9f, 0x1.b7c7bcp-10f, -0x1.2a0644p-8f, -0x1.91b344p-5f, -0x1.e1f48p-7f,
  0x1.7e3644p-5f, 0x1.d6f498p-7f, -0x1.a29d18p-8f, -0x1.2d9ddcp-4f, -0x1.0213a4p-1f, 0x1.8257fap-8f,
  -0x1.857f68p-11f, 0x1.5c15aep-7f, 0x1.a2bc5cp-7f, 0x1.7b0d54p-6f, 0x1.60c0bap-6f, -0x1.b0331cp-6f,
  0x1.34d236p-6f, -0x1.1c5f6p-6f, 0x1.124d96p-5f, 0x1.19f6d6p-14f, -0x1.82074ap-6f, -0x1.91927ap-7f,
  -0x1.5dcacap-5f, 0x1.94d466p-6f, -0x1.8f2228p-6f, -0x1.02e84cp-7f, 0x1.8a2f02p-6f, -0x1.68027cp-7f,
  -0x1.942af8p-7f, 0x1.fe680cp-7f, 0x1.601382p-5f, -0x1.083108p-6f, 0x1.fec24cp-7f, -0x1.0753bcp-5f,
  -0x1.5b2232p-8f, -0x1.9befd6p-6f, -0x1.6a86f2p-6f, 0x1.a20ccap-9f, -0x1.299a0cp-6f, -0x1.b8ab82p-8f,
  0x1.41a55p-6f, 0x1.71308ap-9f, -0x1.7006ccp-8f, 0x1.561eccp-7f, 0x1.a16db2p-8f, 0x1.90e426p-7f,
  0x1.a9d392p-9f, -0x1.ad4596p-6f, 0x1.de9d8cp-9f, -0x1.939894p-5f, 0x1.f68c92p-6f, 0x1.39d172p-7f,
  0x1.d268a6p-10f, -0x1.8faa66p-7f, 0x1.2de25p-7f, -0x1.3dd2a4p-7f, -0x1.4794acp-8f, 0x1.67706ep-7f,
  0x1.d9e07ap-8f, 0x1.22fa6ep-5f, 0x1.b6e9d4p-6f, 0x1.db6ef2p-9f, 0x1.0d500cp-8f, 0x1.c66276p-6f,
  -0x1.8aa6bcp-6f, -0x1.7234b2p-10f, -0x1.8531a4p-10f, -0x1.e365eep-7f, 0x1.398f8p-11f, -0x1.7008ep-7f,
  -0x1.815e92p-7f, 0x1.e925ap-9f};

std::vector<HqqCase> hqq_cases(size_t lanes) {
  std::vector<HqqCase> cases;
  const std::vector<size_t> blocks = {1, lanes - 1, lanes, lanes + 1, 32, 64, 172, 256};
  uint32_t seed = 300;
  for (const char* kind : {"normal", "wide", "zeros", "signed_zeros", "constant", "ties", "huge"}) {
    for (float scale : {0.02f, 1.0f}) {
      for (int bits = 2; bits <= 8; ++bits) {
        for (size_t block : blocks) {
          if (block == 0) continue;
          HqqCase c;
          c.block = block;
          c.nblocks = 3;
          c.w = hqq_input(kind, block * c.nblocks, seed++);
          for (float& v : c.w) v *= scale;
          c.hp = HqqParams{bits, 20, 0.7f, bits % 2 ? 10.0f : 1.0f, bits == 4 ? 1.0f : 1.01f};
          for (size_t b = 0; b < c.nblocks; ++b) {
            float mn, mx;
            kernels_for(Isa::Scalar)->minmax(c.w.data() + b * block, block, &mn, &mx);
            const BlockCodec cc = ref::block_codec(Scheme::Affine, bits, mn, mx, false);
            c.inv.push_back(cc.inv_scale);
            c.zero.push_back(cc.zero);
          }
          cases.push_back(std::move(c));
        }
      }
    }
  }
  for (size_t copies : {1, 3}) {  // three copies: other offsets in the buffer too
    HqqCase c;
    c.block = 128;
    c.nblocks = copies;
    for (size_t b = 0; b < copies; ++b) c.w.insert(c.w.end(), kPlateau, kPlateau + 128);
    c.hp = HqqParams{2, 20, 0.7f, 10.0f, 1.01f};
    for (size_t b = 0; b < c.nblocks; ++b) {
      float mn, mx;
      kernels_for(Isa::Scalar)->minmax(c.w.data() + b * c.block, c.block, &mn, &mx);
      const BlockCodec cc = ref::block_codec(Scheme::Affine, 2, mn, mx, false);
      c.inv.push_back(cc.inv_scale);
      c.zero.push_back(cc.zero);
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

void check_hqq_solve_blocks(CheckEnv& e) {
  for (const HqqCase& c : hqq_cases(e.lanes)) {
    const std::string ctx = "hqq_solve_blocks [bits " + std::to_string(c.hp.bits) + ", block " + std::to_string(c.block) + "]";
    Out<float> za(c.nblocks), zb(c.nblocks);
    Out<uint8_t> ca(c.w.size()), cb(c.w.size());
    Out<int> sa(c.nblocks), sb(c.nblocks);
    std::memcpy(za.data(), c.zero.data(), c.nblocks * 4);
    std::memcpy(zb.data(), c.zero.data(), c.nblocks * 4);
    e.simd.hqq_solve_blocks(c.w.data(), c.nblocks, c.block, c.hp, c.inv.data(), za.data(), ca.data(), sa.data());
    e.ref.hqq_solve_blocks(c.w.data(), c.nblocks, c.block, c.hp, c.inv.data(), zb.data(), cb.data(), sb.data());
    same_out(e.report, za, zb, ctx + " zero");
    same_out(e.report, ca, cb, ctx + " codes");
    same_out(e.report, sa, sb, ctx + " steps");
  }
}

void check_hqq_step_blocks(CheckEnv& e) {
  for (const HqqCase& c : hqq_cases(e.lanes)) {
    const std::string ctx = "hqq_step_blocks [bits " + std::to_string(c.hp.bits) + ", block " + std::to_string(c.block) + "]";
    for (float beta : {c.hp.beta, 1e4f}) {
      Out<float> za(c.nblocks), zb(c.nblocks), ea(c.nblocks), eb(c.nblocks);
      e.simd.hqq_step_blocks(c.w.data(), c.nblocks, c.block, c.hp, beta, c.inv.data(), c.zero.data(), za.data(), ea.data());
      e.ref.hqq_step_blocks(c.w.data(), c.nblocks, c.block, c.hp, beta, c.inv.data(), c.zero.data(), zb.data(), eb.data());
      same_out(e.report, za, zb, ctx + " zero");
      same_out(e.report, ea, eb, ctx + " err");
    }
  }
}

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
