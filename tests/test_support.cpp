#include "tests/test_support.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "engine/stored_tensor.h"

namespace wq::test {

ScratchDir::ScratchDir(const std::string& prefix) {
  std::string tmpl = ::testing::TempDir() + prefix + "-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("cannot make a scratch directory from " + tmpl);
  path_ = tmpl;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TensorPlan keep_float_entry(size_t source_index, const TensorInfo& info) {
  TensorPlan p;
  p.source_index = source_index;
  p.name = info.name;
  p.shape = info.shape;
  p.action = TensorAction::KeepFloat;
  return p;
}

// The ISAs of kernels/isa_list.inc this build's architecture has kernels for; those the
// CPU lacks are skipped (WQ_REQUIRE_ISA), so they show as skipped, not passed.
std::vector<Isa> all_isas() {
#if defined(__x86_64__) || defined(__i386__)
  const std::string family = "x86";
#elif defined(__aarch64__)
  const std::string family = "arm";
#else
  const std::string family = "none";
#endif
  std::vector<Isa> v;
  for (int i = 0; i < kIsaCount; ++i) {
    const IsaInfo& info = isa_info(Isa(i));
    if (info.family == std::string("any") || info.family == family) v.push_back(Isa(i));
  }
  return v;
}

std::vector<float> read_f32(TensorSource& r, const std::vector<TensorInfo>& infos, size_t i) {
  return tensor_as_f32(r, infos.at(i), i, "test model");
}

std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) { return isa_name(info.param); }

std::string shared_dir() {
  std::error_code ec;
  return std::filesystem::is_directory(WQUANT_SHARED_DIR, ec) ? std::string(WQUANT_SHARED_DIR) : std::string();
}

std::string shared_file(const std::string& rel) {
  const std::string dir = shared_dir();
  if (dir.empty()) return "";
  const std::string p = dir + "/" + rel;
  std::error_code ec;
  return std::filesystem::exists(p, ec) ? p : std::string();
}

std::string test_data_dir() { return WQUANT_TEST_DATA_DIR; }

bool accepts_direct(const std::string& dir) {
  const std::string p = dir + "/.wq-direct-probe";
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
  if (fd >= 0) ::close(fd);
  ::unlink(p.c_str());
  return fd >= 0;
}

}  // namespace wq::test
