#include "io/output_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "io/gguf_split_reader.h"
#include "io/model_reader.h"
#include "io/output_file.h"

namespace wq {

namespace fs = std::filesystem;

namespace {

Error output_error(const std::string& path, const std::string& problem) {
  return Error(path + ": " + problem, ErrorKind::Output);
}

}  // namespace

std::string parent_dir(const std::string& path) {
  const fs::path p = fs::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool same_path(const std::string& a, const std::string& b) {
  if (same_file(a, b)) return true;
  // (Absolute first: weakly_canonical leaves a relative path that does not exist relative,
  // and "./o.wq" absolute, so the two spellings of one new file would differ.)
  std::error_code ea, eb;
  const fs::path pa = fs::weakly_canonical(fs::absolute(a, ea), ea), pb = fs::weakly_canonical(fs::absolute(b, eb), eb);
  return !ea && !eb && pa == pb;
}

std::vector<std::string> input_files(const std::string& in) {
  std::vector<std::string> files{in};
  std::error_code ec;
  if (fs::is_directory(in, ec)) {
    // A checkpoint directory is read through its index or its single file (as
    // open_model resolves it): those, and the index's shards, are the input too.
    for (const char* name : {"model.safetensors.index.json", "model.safetensors"}) {
      const std::string c = (fs::path(in) / name).string();
      if (fs::exists(c, ec)) {
        std::vector<std::string> inner = input_files(c);
        files.insert(files.end(), inner.begin(), inner.end());
        break;
      }
    }
    return files;
  }
  // A split GGUF's first shard (PREFIX-00001-of-0000N.gguf): the other shards, named as
  // llama.cpp names them, are the input too.
  const std::string name = fs::path(in).filename().string();
  int count = 0;
  const size_t tail = std::strlen("-00001-of-00000.gguf");
  if (name.size() > tail && std::sscanf(name.c_str() + name.size() - tail, "-00001-of-%5d.gguf", &count) == 1 &&
      count > 1 && count <= 99999 && gguf_split_path(in.substr(0, in.size() - tail), 0, count) == in) {
    for (int s = 1; s < count; ++s) files.push_back(gguf_split_path(in.substr(0, in.size() - tail), s, count));
    return files;
  }
  if (fs::path(in).extension() != ".json") return files;
  std::ifstream f(in, std::ios::binary);
  if (!f) return files;
  const nlohmann::json doc = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("weight_map") || !doc["weight_map"].is_object()) return files;
  std::set<std::string> shards;
  for (const auto& v : doc["weight_map"]) {
    if (v.is_string()) shards.insert((fs::path(parent_dir(in)) / v.get<std::string>()).string());
  }
  files.insert(files.end(), shards.begin(), shards.end());
  return files;
}

std::vector<std::string> model_files(const std::string& in, const ModelReader& reader) {
  std::vector<std::string> files = input_files(in);
  for (const std::string& f : reader.data_files()) files.push_back(f);
  return files;
}

void check_not_an_input(const std::string& out, const std::vector<std::string>& inputs) {
  for (const std::string& in : inputs) {
    if (same_file(out, in)) {
      throw output_error(out, "is the input file " + in + "; wquant never overwrites its input (choose another OUT)");
    }
    if (is_temp_name_of(in, out)) {
      throw output_error(out, "the input " + in + " is named as a temporary file of OUT, which wquant removes when "
                              "a killed run left it; rename the input");
    }
  }
}

void check_output_path(const std::string& out, const std::vector<std::string>& inputs, bool force, const char* force_hint) {
  check_not_an_input(out, inputs);
  // The final rename needs a legal name (a temporary's is cut to fit; OUT's cannot be).
  const std::string name = std::filesystem::path(out).filename().string();
  if (name.size() > NAME_MAX) {
    throw output_error(out, "the file name is " + std::to_string(name.size()) + " bytes long, more than this system's " +
                                std::to_string(NAME_MAX));
  }
  struct stat st, link_st;
  const bool exists = ::lstat(out.c_str(), &link_st) == 0;
  if (::stat(out.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw output_error(out, "is a directory; OUT must be a file name");
    // A device, FIFO or socket would be replaced by a regular file by the final rename.
    if (!S_ISREG(st.st_mode)) throw output_error(out, "is not a regular file (a device, FIFO or socket); OUT must be a file name");
    if (!force) throw output_error(out, "already exists (" + std::string(force_hint) + ")");
  } else if (::lstat(out.c_str(), &st) == 0 && !force) {
    // A dangling symbolic link: stat finds nothing, but the final rename replaces the link.
    throw output_error(out, "already exists as a symbolic link to a missing file (remove the link, or " + std::string(force_hint) + ")");
  }
  const std::string dir = parent_dir(out);
  if (::stat(dir.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOTDIR) throw output_error(out, "a part of the directory " + dir + " is a file, not a directory");
    throw output_error(out, "the directory " + dir + " does not exist (" + std::strerror(err) + ")");
  }
  if (!S_ISDIR(st.st_mode)) throw output_error(out, dir + " is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw output_error(out, "the directory " + dir + " is not writable (" + std::strerror(errno) + ")");
  }
  // The final rename replaces OUT; in a sticky directory (/tmp, shared folders) only its
  // owner may: said before any work, not after it.
  if (exists && !sticky_replace_allowed(st.st_mode, st.st_uid, link_st.st_uid, ::geteuid())) {
    throw output_error(out, "belongs to another user in the sticky directory " + dir + ", so it cannot be replaced");
  }
}

bool sticky_replace_allowed(mode_t dir_mode, uid_t dir_owner, uid_t file_owner, uid_t euid) {
  return !(dir_mode & S_ISVTX) || euid == 0 || euid == dir_owner || euid == file_owner;
}

}  // namespace wq
