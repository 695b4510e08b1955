// Chooses the kernel table once per process: WQUANT_ISA (or select_isa, for --isa) if
// set, else the best the CPU runs.
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

#include "kernels/cpu_features.h"
#include "kernels/kernel_tables.h"
#include "kernels/kernels.h"

namespace wq {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Neon: return "neon";
  }
  return "?";
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
  }
  return "?";
}

bool parse_isa(std::string_view text, Isa* out) {
  std::string s;
  for (char ch : text) s += char(std::tolower(static_cast<unsigned char>(ch)));
  for (int i = 0; i < kIsaCount; ++i) {
    if (s == isa_name(Isa(i))) {
      *out = Isa(i);
      return true;
    }
  }
  return false;
}

static const Kernels* table_in_build(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return scalar_kernels();
#if defined(WQUANT_HAVE_AVX2)
    case Isa::Avx2: return avx2_kernels();
#endif
#if defined(WQUANT_HAVE_AVX512)
    case Isa::Avx512: return avx512_kernels();
#endif
#if defined(WQUANT_HAVE_NEON)
    case Isa::Neon: return neon_kernels();
#endif
    default: return nullptr;
  }
}

static bool cpu_runs(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return f.avx2;
    case Isa::Avx512: return f.avx512;
    case Isa::Neon: return f.neon;
  }
  return false;
}

bool isa_available(Isa isa) { return cpu_runs(isa) && table_in_build(isa) != nullptr; }

const Kernels* kernels_for(Isa isa) { return isa_available(isa) ? table_in_build(isa) : nullptr; }

Isa best_isa() {
  for (Isa isa : {Isa::Avx512, Isa::Avx2, Isa::Neon}) {
    if (isa_available(isa)) return isa;
  }
  return Isa::Scalar;
}

static std::atomic<const Kernels*> g_selected{nullptr};
static std::mutex g_select_mutex;

static const Kernels* require(Isa isa, const char* why) {
  const Kernels* k = kernels_for(isa);
  if (!k) {
    throw std::runtime_error(std::string(why) + ": ISA '" + isa_name(isa) + "' is not available (" +
                             (table_in_build(isa) ? "this CPU lacks it" : "this build lacks it") +
                             "); best available is '" + isa_name(best_isa()) + "'");
  }
  return k;
}

void select_isa(Isa isa) {
  std::lock_guard<std::mutex> lock(g_select_mutex);
  g_selected.store(require(isa, "--isa"));
}

const Kernels& kernels() {
  const Kernels* k = g_selected.load(std::memory_order_acquire);
  if (k) return *k;
  std::lock_guard<std::mutex> lock(g_select_mutex);
  k = g_selected.load();
  if (!k) {
    const char* env = std::getenv("WQUANT_ISA");
    if (env && *env) {
      Isa isa;
      if (!parse_isa(env, &isa)) {
        throw std::runtime_error(std::string("WQUANT_ISA='") + env +
                                 "' is not one of scalar, avx2, avx512, neon");
      }
      k = require(isa, "WQUANT_ISA");
    } else {
      k = table_in_build(best_isa());
    }
    g_selected.store(k, std::memory_order_release);
  }
  return *k;
}

}  // namespace wq
