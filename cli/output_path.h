// Checks on an output path, made before any work so that a run that cannot finish fails
// in its first millisecond, and so that no run can ever replace its own input.
#pragma once

#include <cstdint>
#include <sys/types.h>

#include <string>
#include <vector>

namespace wq::cli {

// The files a model is read from: IN itself and, for a sharded checkpoint's index .json,
// the shard files its "weight_map" names (beside the index). Unreadable or odd index
// files give just IN: the reader reports those problems in its own words.
std::vector<std::string> input_files(const std::string& in);

// Throws Error (ErrorKind::Output) naming OUT when
//   - OUT is one of `inputs` by any path (same device and inode: symlinks and hard links
//     count), even with `force`;
//   - OUT exists and `force` is false, or OUT is a directory;
//   - OUT's directory does not exist, is not a directory, or cannot be written.
void check_output_path(const std::string& out, const std::vector<std::string>& inputs, bool force);
// The part of check_output_path about inputs: `out` is none of them, and none is named as
// a temporary file of `out`. Throws Error (ErrorKind::Output) naming both.
void check_not_an_input(const std::string& out, const std::vector<std::string>& inputs);

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

// True when a and b name the same file (device and inode); false if either is missing.
bool same_file(const std::string& a, const std::string& b);
// Whether `euid` may replace (rename over) a file owned by file_owner in a directory of
// this mode and owner: in a sticky one (S_ISVTX), only root and the owners of either.
bool sticky_replace_allowed(mode_t dir_mode, uid_t dir_owner, uid_t file_owner, uid_t euid);
// True when a and b are one file, or would be once created: the same file, or the same
// absolute path once symbolic links and "." / ".." are resolved (./o.wq and o.wq).
bool same_path(const std::string& a, const std::string& b);

}  // namespace wq::cli
