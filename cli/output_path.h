// The program's own checks and names of outputs: --keep-split's shard prefix, the disk
// space a run needs, and (io/output_path.h, which the library's convert() uses too) the
// checks that no run replaces its input.
#pragma once

#include <cstdint>

#include <string>
#include <vector>

#include "io/output_path.h"

namespace wq::cli {

// The shard prefix llama-quantize --keep-split makes of OUT: OUT without a final ".gguf"
// (the shards are PREFIX-0000K-of-0000N.gguf). llama-quantize cuts OUT's last five
// characters whenever ".gguf" appears anywhere in it; a name with ".gguf" elsewhere than at
// its end, and one that leaves no file name, throw Error (Usage) naming OUT instead.
std::string keep_split_prefix(const std::string& out);

// Throws Error (Output) when the file system of OUT's directory has fewer than `bytes`
// bytes available (the temporary file needs all of them before the rename).
void check_free_space(const std::string& out, uint64_t bytes);

// Sum of the sizes of `files` (0 for any that cannot be stat'ed).
uint64_t total_file_bytes(const std::vector<std::string>& files);

}  // namespace wq::cli
