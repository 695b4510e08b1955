// Shared helpers for the googletest suite: which ISAs to run, where shared data lives.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/pipeline.h"
#include "engine/plan.h"
#include "kernels/kernels.h"

namespace wq::test {

// Every ISA this build contains (available or not); tests instantiate one case per ISA
// and skip, through WQ_REQUIRE_ISA, the ones this CPU cannot run.
std::vector<Isa> all_isas();
std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info);

// Tensor i of a model as f32 (engine's tensor_as_f32 on the reader's bytes).
std::vector<float> read_f32(TensorSource& r, const std::vector<TensorInfo>& infos, size_t i);
template <class Reader>
std::vector<float> read_f32(Reader& r, size_t i) {
  return read_f32(r, r.tensors(), i);
}

// A fresh directory under googletest's TempDir(), removed with its contents when the
// object goes. Throws std::runtime_error if it cannot be made.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A plan entry that keeps source tensor `source_index` (described by `info`) as it is:
// what test writers of fixture models use.
TensorPlan keep_float_entry(size_t source_index, const TensorInfo& info);

// ../shared beside the checkout (WQUANT_SHARED_DIR); "" if absent.
std::string shared_dir();
// Path of a file under shared/, or "" when it is absent.
std::string shared_file(const std::string& rel);
// Whether files in `dir` can be opened O_DIRECT (some file systems, tmpfs among them, refuse).
bool accepts_direct(const std::string& dir);
// tests/data in the source tree.
std::string test_data_dir();

}  // namespace wq::test

// Skips (never fails) a test for an ISA this CPU or build lacks.
#define WQ_REQUIRE_ISA(isa)                                                                  \
  do {                                                                                       \
    if (!::wq::isa_available(isa)) GTEST_SKIP() << "ISA " << ::wq::isa_name(isa)             \
                                                << " is not available on this CPU/build";   \
  } while (0)

// Skips a test whose shared file is absent, saying which and why.
#define WQ_REQUIRE_SHARED(var, rel)                                                          \
  const std::string var = ::wq::test::shared_file(rel);                                      \
  if (var.empty()) GTEST_SKIP() << "shared file " << (rel) << " is absent (../shared is "   \
                                << "not beside this checkout)"
