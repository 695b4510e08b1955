#include "io/gguf_split_reader.h"

#include <cstdio>
#include <cstring>
#include <set>

#include "engine/error.h"
#include "io/gguf_format.h"

namespace wq {
namespace {

// An integer split key (u16 as gguf-split writes it, any integer type accepted); -1 if absent.
int64_t split_key(const GgufReader& r, const char* key) {
  const GgufKV* kv = r.metadata().find(key);
  if (!kv) return -1;
  const size_t n = gguf_scalar_size(kv->type);
  if (n == 0 || n > 8 || kv->value.size() != n || kv->type == uint32_t(GgufValueType::F32) ||
      kv->type == uint32_t(GgufValueType::F64)) {
    throw Error(r.path() + ": " + key + ": not an integer");
  }
  uint64_t v = 0;
  std::memcpy(&v, kv->value.data(), n);  // little-endian; the counts are small and positive
  if (n < 8 && (v >> (n * 8 - 1)) && (kv->type == uint32_t(GgufValueType::I8) || kv->type == uint32_t(GgufValueType::I16) ||
                                      kv->type == uint32_t(GgufValueType::I32))) {
    throw Error(r.path() + ": " + key + ": negative");
  }
  return int64_t(v);
}

class SplitGgufReader final : public GgufReader {
 public:
  explicit SplitGgufReader(std::vector<std::unique_ptr<GgufReader>> parts) : parts_(std::move(parts)) {
    std::set<std::string> names;
    for (size_t s = 0; s < parts_.size(); ++s) {
      for (size_t i = 0; i < parts_[s]->tensors().size(); ++i) {
        const TensorInfo& t = parts_[s]->tensors()[i];
        if (!names.insert(t.name).second) throw Error(parts_[s]->path() + ": " + t.name + ": also in an earlier shard");
        infos_.push_back(t);
        where_.emplace_back(s, i);
      }
    }
  }
  const char* format() const override { return "gguf"; }
  const std::string& path() const override { return parts_[0]->path(); }
  std::string file_of(size_t i) const override { return parts_.at(where_.at(i).first)->path(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const GgufMetadata& metadata() const override { return parts_[0]->metadata(); }
  uint32_t ggml_type(size_t i) const override { return part(i).ggml_type(where_.at(i).second); }
  TensorView view(size_t i) override { return part(i).view(where_.at(i).second); }
  const uint8_t* raw(size_t i, size_t* nbytes) override { return part(i).raw(where_.at(i).second, nbytes); }
  void release(size_t i) override { part(i).release(where_.at(i).second); }
  MappedSource raw_mapping(size_t i) override { return part(i).raw_mapping(where_.at(i).second); }
  uint32_t shard(size_t i) const override { return uint32_t(where_.at(i).first); }
  uint64_t data_offset(size_t i) const override { return part(i).data_offset(where_.at(i).second); }
  uint32_t shard_count() const override { return uint32_t(parts_.size()); }
  const std::string& shard_path(uint32_t s) const override { return parts_.at(s)->path(); }

 private:
  GgufReader& part(size_t i) const { return *parts_[where_.at(i).first]; }
  std::vector<std::unique_ptr<GgufReader>> parts_;
  std::vector<TensorInfo> infos_;
  std::vector<std::pair<size_t, size_t>> where_;  // shard, index in it
};

}  // namespace

std::string gguf_split_path(const std::string& prefix, int no, int count) {
  char tail[32];
  std::snprintf(tail, sizeof tail, "-%05d-of-%05d.gguf", no + 1, count);
  return prefix + tail;
}

std::unique_ptr<GgufReader> join_gguf_splits(std::unique_ptr<GgufReader> first, const std::string& path) {
  const int64_t count = split_key(*first, "split.count");
  if (count <= 1) return first;
  if (count > 99999) throw Error(path + ": split.count " + std::to_string(count) + " is absurd");
  const int64_t no = split_key(*first, "split.no");
  if (no != 0) {
    throw Error(path + ": shard " + std::to_string(no + 1) + " of " + std::to_string(count) +
                ": give the first shard (as llama.cpp requires)");
  }
  // llama_split_prefix: the path must end with the first shard's own suffix.
  const std::string suffix = gguf_split_path("", 0, int(count));
  if (path.size() <= suffix.size() || path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0) {
    throw Error(path + ": a split model's first shard must be named PREFIX" + suffix + " (the other shards are found by it)");
  }
  const std::string prefix = path.substr(0, path.size() - suffix.size());
  const int64_t total = split_key(*first, "split.tensors.count");
  std::vector<std::unique_ptr<GgufReader>> parts;
  parts.push_back(std::move(first));
  for (int s = 1; s < int(count); ++s) {
    const std::string p = gguf_split_path(prefix, s, int(count));
    parts.push_back(open_gguf(p));
    if (split_key(*parts.back(), "split.no") != s || split_key(*parts.back(), "split.count") != count) {
      throw Error(p + ": split.no / split.count do not say shard " + std::to_string(s + 1) + " of " + std::to_string(count));
    }
  }
  auto joined = std::make_unique<SplitGgufReader>(std::move(parts));
  if (total >= 0 && size_t(total) != joined->tensors().size()) {
    throw Error(path + ": split.tensors.count says " + std::to_string(total) + " tensors, the shards hold " +
                std::to_string(joined->tensors().size()));
  }
  return joined;
}

}  // namespace wq
