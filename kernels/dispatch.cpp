// Chooses the kernel table once per process: WQUANT_ISA (or select_isa, for --isa) if
// set, else the best the CPU runs.
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

#include "kernels/cpu_features.h"
#include "kernels/wq_built_isas.h"
#include "kernels/kernels.h"

// The tables this build contains: kernels/CMakeLists.txt writes WQ_BUILT_ISAS(X) as
// X(scalar) X(avx2) ... for the ISAs of kernels/isa_list.inc whose family it compiles.
#define WQ_DECLARE_TABLE(name) \
  namespace wq::isa_##name {   \
  const Kernels* kernel_table(); \
  }
WQ_BUILT_ISAS(WQ_DECLARE_TABLE)
#undef WQ_DECLARE_TABLE

namespace wq {

static constexpr IsaInfo kIsas[kIsaCount] = {
#define WQ_ISA(id, name, family, lanes, flags, features, xsimd_tags) {Isa::id, #name, #family, lanes, flags, features},
#include "kernels/isa_list.inc"
#undef WQ_ISA
};

const IsaInfo& isa_info(Isa isa) { return kIsas[int(isa)]; }
const char* isa_name(Isa isa) { return int(isa) < kIsaCount ? kIsas[int(isa)].name : "?"; }

std::string isa_names() {
  std::string s;
  for (const IsaInfo& i : kIsas) s += (s.empty() ? "" : ", ") + std::string(i.name);
  return s;
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
  for (const IsaInfo& i : kIsas) {
    if (s == i.name) {
      *out = i.isa;
      return true;
    }
  }
  return false;
}

static const Kernels* table_in_build(Isa isa) {
  const std::string_view name = isa_name(isa);
#define WQ_TABLE_OF(n) \
  if (name == #n) return isa_##n::kernel_table();
  WQ_BUILT_ISAS(WQ_TABLE_OF)
#undef WQ_TABLE_OF
  return nullptr;
}

// Whether this build holds the ISA's table, without calling into it: building a table
// runs code compiled for that ISA, which would fault (SIGILL) on a CPU without it.
static bool isa_in_build(Isa isa) {
  const std::string_view name = isa_name(isa);
#define WQ_IS_BUILT(n) \
  if (name == #n) return true;
  WQ_BUILT_ISAS(WQ_IS_BUILT)
#undef WQ_IS_BUILT
  return false;
}

// Every feature the ISA's compile flags enable is checked (tests/isa_list_test.cpp
// holds the list to that).
static bool cpu_runs(Isa isa) { return cpu_has_features(isa_info(isa).features); }

bool isa_available(Isa isa) { return isa_in_build(isa) && cpu_runs(isa); }

const Kernels* kernels_for(Isa isa) { return isa_available(isa) ? table_in_build(isa) : nullptr; }

Isa best_isa() {
  // The list runs from the plainest to the widest within a family: the last available wins.
  Isa best = Isa::Scalar;
  for (const IsaInfo& i : kIsas) {
    if (isa_available(i.isa)) best = i.isa;
  }
  return best;
}

static std::atomic<const Kernels*> g_selected{nullptr};
static std::mutex g_select_mutex;

static const Kernels* require(Isa isa, const char* why) {
  const Kernels* k = kernels_for(isa);
  if (!k) {
    throw std::runtime_error(std::string(why) + ": ISA '" + isa_name(isa) + "' is not available (" +
                             (isa_in_build(isa) ? "this CPU lacks it" : "this build lacks it") +
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
                                 "' is not one of " + isa_names());
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
