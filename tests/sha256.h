// SHA-256 (FIPS 180-4) of a file, hex: compares whole output files with the sha256sum
// of llama-quantize's (tests/data/llama_quantize_mix_digests.json).
#pragma once

#include <string>

namespace wq::test {

// Lower-case hex digest of the file's bytes; "" if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace wq::test
