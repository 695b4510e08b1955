// CPUID and XGETBV read directly: every feature a compile flag of kernels/isa_list.inc
// enables is checked on its own (Highway 1.0.3 reports whole targets, and its AVX2 target
// does not promise POPCNT or LZCNT, nor its AVX3 target AVX512CD), and XGETBV confirms
// the OS saves the YMM / ZMM and mask registers before any AVX code may run.
#include "kernels/cpu_features.h"

#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace wq {
namespace {

struct Features {
  bool avx = false, avx2 = false, fma = false, f16c = false, bmi1 = false, bmi2 = false, lzcnt = false,
       popcnt = false, avx512f = false, avx512cd = false, avx512dq = false, avx512bw = false, avx512vl = false,
       neon = false;
};

#if defined(__x86_64__) || defined(__i386__)
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
#endif

Features read_features() {
  Features f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  f.popcnt = c & (1u << 23);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_state = (xcr0 & 0x6) == 0x6;     // SSE and AVX state
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;   // plus opmask, ZMM_Hi256, Hi16_ZMM
  f.avx = ymm_state && (c & (1u << 28));
  f.fma = f.avx && (c & (1u << 12));
  f.f16c = f.avx && (c & (1u << 29));
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.bmi1 = b & (1u << 3);
    f.avx2 = f.avx && (b & (1u << 5));
    f.bmi2 = b & (1u << 8);
    f.avx512f = zmm_state && (b & (1u << 16));
    f.avx512dq = f.avx512f && (b & (1u << 17));
    f.avx512cd = f.avx512f && (b & (1u << 28));
    f.avx512bw = f.avx512f && (b & (1u << 30));
    f.avx512vl = f.avx512f && (b & (1u << 31));
  }
  if (__get_cpuid(0x80000001u, &a, &b, &c, &d)) f.lzcnt = c & (1u << 5);  // ABM
#elif defined(__aarch64__)
  f.neon = true;  // Advanced SIMD is mandatory on AArch64
#endif
  return f;
}

const Features& features() {
  static const Features f = read_features();
  return f;
}

}  // namespace

bool cpu_has_feature(std::string_view name) {
  const Features& f = features();
  struct Named { std::string_view name; bool value; };
  const Named all[] = {{"avx", f.avx},         {"avx2", f.avx2},         {"fma", f.fma},
                       {"f16c", f.f16c},       {"bmi1", f.bmi1},         {"bmi2", f.bmi2},
                       {"lzcnt", f.lzcnt},     {"popcnt", f.popcnt},     {"avx512f", f.avx512f},
                       {"avx512cd", f.avx512cd}, {"avx512dq", f.avx512dq}, {"avx512bw", f.avx512bw},
                       {"avx512vl", f.avx512vl}, {"neon", f.neon}};
  for (const Named& n : all) {
    if (n.name == name) return n.value;
  }
  return false;
}

bool cpu_has_features(std::string_view features) {
  size_t i = 0;
  while (i < features.size()) {
    while (i < features.size() && features[i] == ' ') ++i;
    size_t j = i;
    while (j < features.size() && features[j] != ' ') ++j;
    if (j > i && !cpu_has_feature(features.substr(i, j - i))) return false;
    i = j;
  }
  return true;
}

}  // namespace wq
