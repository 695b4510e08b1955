// SHA-256 (FIPS 180-4) of a file, hex: a params file records its importance matrix's
// (cli/params_file.h), and the tests compare whole output files with the sha256sum of
// llama-quantize's (tests/data/llama_quantize_mix_digests.json).
#pragma once

#include <string>

namespace wq {

// Lower-case hex digest of the file's bytes, read 1 MiB at a time; "" if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace wq
