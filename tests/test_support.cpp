#include "tests/test_support.h"

#include <filesystem>

namespace wq::test {

std::vector<Isa> all_isas() {
  std::vector<Isa> v{Isa::Scalar};
#if defined(WQUANT_HAVE_AVX2)
  v.push_back(Isa::Avx2);
#endif
#if defined(WQUANT_HAVE_AVX512)
  v.push_back(Isa::Avx512);
#endif
#if defined(WQUANT_HAVE_NEON)
  v.push_back(Isa::Neon);
#endif
  return v;
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

}  // namespace wq::test
