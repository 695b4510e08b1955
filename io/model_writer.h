// Model writers: given the whole plan up front (so every offset is known before any
// data), they write a header, then each tensor's payload in plan order as the pipeline
// delivers it, to a temporary file beside the output. commit() flushes, fsyncs and
// renames it to the final name; destroying an uncommitted writer removes the temporary
// file, so a failure or Ctrl-C never leaves a partial file under the final name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/pipeline.h"
#include "engine/plan.h"
#include "io/gguf_writer_keys.h"
#include "io/model_reader.h"

namespace wq {

class ModelWriter : public TensorSink {
 public:
  ~ModelWriter() override = default;
  virtual void commit() = 0;
  // Bytes written so far (header included).
  virtual uint64_t bytes_written() const = 0;
  // The temporary path being written (for cleanup on a signal).
  virtual const std::string& temp_path() const = 0;
  // Files beside OUT that commit() puts in place too (ONNX: OUT.data, when the layout
  // has external data): outputs to check before the run and to report after it.
  virtual std::vector<std::string> companion_files() const { return {}; }
};

// Choices a format may offer beyond the plan.
struct WriterOptions {
  bool external_data = false;  // ONNX: payloads in OUT.onnx.data (always past 2 GB)
  // OUT, for planned_output_bytes: ONNX headers name the data file, so their size
  // depends on it (make_writer has the path already).
  std::string output_path;
  GgufOutputKeys gguf_keys;  // GGUF: llama-quantize's keys on top of the source's
};

// Output format from the extension: .wq, .safetensors, .gguf, .onnx. Throws Error otherwise.
OutputFormat format_from_path(const std::string& path);

// Exact output size of a plan in the given format (for --dry-run and disk checks).
uint64_t planned_output_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                              OutputFormat format, const ModelReader& source, const WriterOptions& opts = {});

// Creates the writer. GGUF output copies every metadata key of a GGUF source (and
// sets llama-quantize's keys, opts.gguf_keys); it needs a GGUF source. ONNX output needs an ONNX source
// (the graph it rewrites) and a program with ONNX support (io/onnx_hooks.h).
std::unique_ptr<ModelWriter> make_writer(const std::string& path, OutputFormat format,
                                         const std::vector<TensorPlan>& plan, const ModelReader& source,
                                         const WriterOptions& opts = {});

}  // namespace wq
