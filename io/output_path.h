// Checks on an output path, made before any work so that a run that cannot finish fails
// in its first millisecond, and so that no run can ever replace its own input: the
// program's commands and the library's convert() (include/wquant/wquant.h) make the same.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace wq {

// The files a model is read from: IN itself and, for a sharded checkpoint's index .json,
// the shard files its "weight_map" names (beside the index). Unreadable or odd index
// files give just IN: the reader reports those problems in its own words.
std::vector<std::string> input_files(const std::string& in);
class ModelReader;
// Every file the model opened from `in` is read from: input_files(in) and the files the
// reader found it reads (an ONNX model's external data). What every command and the
// library's convert() protect from OUT, with any other file they read (an imatrix).
std::vector<std::string> model_files(const std::string& in, const ModelReader& reader);

// Throws Error (ErrorKind::Output) naming OUT when
//   - OUT is one of `inputs` by any path (same device and inode: symlinks and hard links
//     count), even with `force`;
//   - OUT exists and `force` is false, or OUT is a directory;
//   - OUT's directory does not exist, is not a directory, or cannot be written.
// force_hint: how the caller's user asks for a replacement, for the message.
void check_output_path(const std::string& out, const std::vector<std::string>& inputs, bool force,
                       const char* force_hint = "pass --force to replace it");
// The part of check_output_path about inputs: `out` is none of them, and none is named as
// a temporary file of `out`. Throws Error (ErrorKind::Output) naming both.
void check_not_an_input(const std::string& out, const std::vector<std::string>& inputs);

// The directory `path` is in ("." for a bare file name).
std::string parent_dir(const std::string& path);
// True when a and b name the same file (device and inode); false if either is missing.
bool same_file(const std::string& a, const std::string& b);
// Whether `euid` may replace (rename over) a file owned by file_owner in a directory of
// this mode and owner: in a sticky one (S_ISVTX), only root and the owners of either.
bool sticky_replace_allowed(mode_t dir_mode, uid_t dir_owner, uid_t file_owner, uid_t euid);
// True when a and b are one file, or would be once created: the same file, or the same
// absolute path once symbolic links and "." / ".." are resolved (./o.wq and o.wq).
bool same_path(const std::string& a, const std::string& b);

}  // namespace wq
