// wquant inspect FILE: every tensor with its type, shape, size and quantization record.
#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/output_path.h"
#include "cli/run_support.h"
#include "engine/tensor.h"
#include "kernels/ggml_types.h"
#include "io/gguf_format.h"
#include "io/model_reader.h"

namespace wq::cli {

namespace {

using nlohmann::json;

const char* kind_name(StoredKind k) {
  switch (k) {
    case StoredKind::Float: return "float";
    case StoredKind::Quantized: return "quantized";
    case StoredKind::Ggml: return "ggml";
    case StoredKind::Other: return "other";
  }
  return "?";
}

const char* scheme_name(Scheme s) {
  switch (s) {
    case Scheme::MnnSym: return "mnn-sym";
    case Scheme::MnnAsym: return "mnn-asym";
    case Scheme::Affine: return "affine";
  }
  return "?";
}

struct Row {
  const TensorInfo* info;
  json record;        // quantization record of a wquant-quantized tensor, else null
  std::string quant;  // the same, in words
};

Row describe(ModelReader& r, size_t i) {
  const TensorInfo& t = r.tensors()[i];
  Row row{&t, nullptr, ""};
  if (t.kind == StoredKind::Quantized) {
    const QuantizedTensor q = r.load_quantized(i);
    r.release(i);
    const bool channel = q.block == q.cols;
    row.record = {{"bits", q.spec.bits},
                  {"block", channel ? json(-1) : json(q.block)},
                  {"channel_wise", channel},
                  {"scheme", scheme_name(q.scheme)},
                  {"asym", q.spec.asym || q.spec.hqq},
                  {"hqq", q.spec.hqq},
                  {"fp16", q.spec.fp16},
                  {"rows", q.rows},
                  {"cols", q.cols}};
    row.quant = q.spec.describe_with_block(q.block, q.cols);
  } else if (t.kind == StoredKind::Ggml) {
    const auto g = gguf_tensor_type_named(t.type_name);
    row.quant = t.type_name + " (llama.cpp blocks of " + (g ? std::to_string(g->block_weights) : std::string("?")) + ")";
  }
  return row;
}

uint64_t numel(const TensorInfo& t) { return checked_numel(t.name, t.shape); }

// The shape as the file stores it: an ONNX MatMul B is listed transposed (TensorInfo).
std::vector<int64_t> stored_shape(const TensorInfo& t) {
  std::vector<int64_t> s = t.shape;
  if (t.listed_transposed && s.size() == 2) std::swap(s[0], s[1]);
  return s;
}

}  // namespace

int run_inspect(const InspectArgs& a, Console& con) {
  std::unique_ptr<ModelReader> r = open_model(a.file);
  const std::vector<TensorInfo>& infos = r->tensors();
  std::vector<Row> rows;
  rows.reserve(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) rows.push_back(describe(*r, i));

  uint64_t bytes[4] = {0, 0, 0, 0}, count[4] = {0, 0, 0, 0}, params = 0;
  for (const TensorInfo& t : infos) {
    bytes[int(t.kind)] += t.nbytes;
    count[int(t.kind)] += 1;
    params += numel(t);
  }
  const uint64_t file_bytes = total_file_bytes(model_files(a.file, *r));

  if (con.verbosity().json) {
    json tensors = json::array();
    for (const Row& row : rows) {
      const TensorInfo& t = *row.info;
      json j = {{"name", t.name}, {"kind", kind_name(t.kind)}, {"type", t.type_name},
                {"shape", t.shape}, {"elements", numel(t)}, {"bytes", t.nbytes}};
      // An ONNX MatMul B: listed (as verify compares and dequantize writes it) [N, K], the
      // transpose of what the file stores.
      if (t.listed_transposed) j["stored_shape"] = stored_shape(t);
      if (t.kind == StoredKind::Float) j["dtype"] = dtype_name(t.dtype);
      if (!row.record.is_null()) j["quantization"] = row.record;
      tensors.push_back(std::move(j));
    }
    json totals = {{"tensors", infos.size()}, {"elements", params}, {"tensor_bytes", r->data_bytes()},
                   {"file_bytes", file_bytes}};
    for (int k = 0; k < 4; ++k) {
      totals[kind_name(StoredKind(k))] = {{"tensors", count[k]}, {"bytes", bytes[k]}};
    }
    const json doc = {{"command", "inspect"}, {"file", a.file}, {"format", r->format()}, {"tensors", tensors},
                      {"totals", totals}};
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  if (!con.human()) return 0;
  size_t w = 6, tw = 4;
  for (const TensorInfo& t : infos) {
    w = std::max(w, printable(t.name).size());
    tw = std::max(tw, t.type_name.size());
  }
  std::printf("%s: %s, %zu tensors, %s of tensor data, %s on disk\n", a.file.c_str(), r->format(), infos.size(),
              format_bytes(r->data_bytes()).c_str(), format_bytes(file_bytes).c_str());
  std::printf("%-*s  %-*s  %-14s  %10s  %s\n", int(w), "tensor", int(tw), "type", "shape", "bytes", "quantization");
  for (const Row& row : rows) {
    const TensorInfo& t = *row.info;
    std::string quant = row.quant;
    if (t.listed_transposed) {
      quant += std::string(quant.empty() ? "" : "; ") + "listed transposed: stored " + format_shape(stored_shape(t)) + " (MatMul B)";
    }
    std::printf("%-*s  %-*s  %-14s  %10s  %s\n", int(w), printable(t.name).c_str(), int(tw), t.type_name.c_str(),
                format_shape(t.shape).c_str(), format_bytes(t.nbytes).c_str(), quant.c_str());
  }
  std::printf("totals: %zu tensors, %llu elements, %s;", infos.size(), static_cast<unsigned long long>(params),
              format_bytes(r->data_bytes()).c_str());
  for (int k = 0; k < 4; ++k) {
    if (count[k]) {
      std::printf(" %s %llu (%s)", kind_name(StoredKind(k)), static_cast<unsigned long long>(count[k]),
                  format_bytes(bytes[k]).c_str());
    }
  }
  std::printf("\n");
  return 0;
}

}  // namespace wq::cli
