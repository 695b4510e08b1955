// WQUANT_ISA forces the kernel table the process runs. ctest runs this binary once per
// value of WQUANT_ISA (tests/CMakeLists.txt): for an ISA this CPU and build run, the
// table kernels() returns must be that ISA's and must compute; for one they lack, or an
// unknown name, the first call must throw a message naming the problem.
#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

namespace wq {
namespace {

std::string message_of_first_use() {
  try {
    kernels();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(IsaSelect, ForcedIsaIsTheOneThatRuns) {
  const char* env = std::getenv("WQUANT_ISA");
  if (!env || !*env) GTEST_SKIP() << "WQUANT_ISA is not set (ctest sets it, one entry per ISA)";
  Isa isa;
  if (!parse_isa(env, &isa)) {
    const std::string msg = message_of_first_use();
    EXPECT_TRUE(contains(msg, env)) << "unknown WQUANT_ISA must be named in the error: '" << msg << "'";
    EXPECT_TRUE(contains(msg, "scalar, avx2, avx512, neon")) << msg;
    return;
  }
  if (!isa_available(isa)) {
    const std::string msg = message_of_first_use();
    EXPECT_TRUE(contains(msg, "WQUANT_ISA")) << msg;
    EXPECT_TRUE(contains(msg, std::string("'") + isa_name(isa) + "' is not available")) << msg;
    EXPECT_TRUE(contains(msg, "lacks it")) << msg;
    return;
  }
  const Kernels& k = kernels();
  EXPECT_EQ(k.isa, isa) << "WQUANT_ISA=" << env << " but the process runs " << isa_name(k.isa);
  EXPECT_EQ(&k, kernels_for(isa));
  EXPECT_EQ(&kernels(), &k) << "the choice is made once";
  const float x[5] = {1.0f, -7.5f, 2.0f, 0.0f, 3.0f};
  EXPECT_EQ(k.absmax(x, 5), 7.5f) << "the forced table computes";
}

}  // namespace
}  // namespace wq
