// GGUF v3 out: the source's metadata pairs in order with llama-quantize's own keys last
// (GgufOutputKeys), tensor infos in plan order, data aligned to general.alignment and
// streamed in plan order: for the same plan, llama-quantize's file byte for byte.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/plan.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer_keys.h"
#include "io/model_writer.h"

namespace wq {

// Exact file size for the plan.
uint64_t gguf_planned_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                            const ModelReader& source, const GgufOutputKeys& keys = {});

// The source must be a GGUF reader (its metadata is copied). Throws Error otherwise.
std::unique_ptr<ModelWriter> make_gguf_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                              const ModelReader& source, const GgufOutputKeys& keys = {});

// llama-quantize --keep-split: one file a shard of the source (io/gguf_split_reader.h),
// PREFIX-0000K-of-0000N.gguf, shard K holding the plan entries of source shard K's tensors
// (the plan must list them shard by shard: make_plan with PlanOptions::gguf_order =
// gguf_file_order), with llama.cpp's split.no / split.count / split.tensors.count keys when
// N > 1. An unsplit source gives PREFIX-00001-of-00001.gguf, as llama-quantize does. All
// shards are temporary files until commit() renames them together; a failure there
// removes those already renamed. Throws Error (Usage) naming the source shard when one
// but the first holds no tensors.
std::vector<std::string> gguf_split_outputs(const std::string& prefix, const ModelReader& source);
uint64_t gguf_split_planned_bytes(const std::string& prefix, const std::vector<TensorPlan>& plan,
                                  const ModelReader& source, const GgufOutputKeys& keys = {});
std::unique_ptr<ModelWriter> make_gguf_split_writer(const std::string& prefix, const std::vector<TensorPlan>& plan,
                                                    const ModelReader& source, const GgufOutputKeys& keys = {});

// For a source without GGUF metadata (the synthetic model generator): `metadata` is
// written as given, and `ggml_types[i]` gives the
// type of plan entry i for CopyRaw entries.
std::unique_ptr<ModelWriter> make_gguf_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                              const std::vector<TensorInfo>& infos, const GgufMetadata& metadata,
                                              const std::vector<uint32_t>& ggml_types);

// Encoders for building metadata by hand.
GgufKV gguf_kv_u32(const std::string& key, uint32_t v);
GgufKV gguf_kv_i32(const std::string& key, int32_t v);
GgufKV gguf_kv_u16(const std::string& key, uint16_t v);
GgufKV gguf_kv_f32(const std::string& key, float v);
GgufKV gguf_kv_string(const std::string& key, const std::string& v);
GgufKV gguf_kv_string_array(const std::string& key, const std::vector<std::string>& v);
GgufKV gguf_kv_f32_array(const std::string& key, const std::vector<float>& v);
GgufKV gguf_kv_i32_array(const std::string& key, const std::vector<int32_t>& v);

}  // namespace wq
