// A GGUF model split into shards as llama.cpp's gguf-split writes them
// (PREFIX-00001-of-0000N.gguf ..., split.no / split.count / split.tensors.count keys),
// read as one model: the first shard's metadata, every shard's tensors in shard order.
#pragma once

#include <memory>
#include <string>

#include "io/gguf_reader.h"

namespace wq {

// `first` is the shard at `path`. Returns it as it is when it is not split (no
// split.count, or 1). Otherwise `path` must be the first shard (split.no 0) named as
// llama.cpp names shards; the others are opened beside it. Throws Error naming the
// shard for a missing shard, a split key that disagrees, or a tensor count that differs
// from split.tensors.count.
std::unique_ptr<GgufReader> join_gguf_splits(std::unique_ptr<GgufReader> first, const std::string& path);

// llama_split_path: PREFIX-%05d-of-%05d.gguf for shard `no` (0-based) of `count`.
std::string gguf_split_path(const std::string& prefix, int no, int count);

}  // namespace wq
