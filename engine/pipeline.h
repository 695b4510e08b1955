// The streaming conversion: a oneTBB parallel_pipeline of a serial in-order reader, a
// parallel quantize stage (row-tile parallel_for inside each tensor) and a serial
// in-order writer. Tokens bound the tensors in flight, and each tensor's input pages are
// dropped (TensorSource::release) as soon as it no longer needs them, so peak memory
// depends on the largest tensors, not on the model's size:
//   peak RSS <= base + tokens x max over tensors of (input bytes + output bytes)
// (base: the program, the readers' headers, the writer's 4 MiB buffers; a GGUF writer
// also keeps the last payload it wrote without a copy until its write is done). With the
// default tokens = threads + 1, that is 3 tensors in flight on 2 threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/metrics.h"
#include "engine/output_bytes.h"
#include "engine/plan.h"
#include "engine/read_ahead.h"
#include "engine/tensor.h"

namespace wq {

// Where tensors come from: io readers implement it. Calls for one index come from one
// thread at a time; different indices may be in flight concurrently.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  // Float tensor i as a validated view into the file (kind == Float only).
  virtual TensorView view(size_t source_index) = 0;
  // The stored bytes of tensor i, validated against the file's size.
  virtual const uint8_t* raw(size_t source_index, size_t* nbytes) = 0;
  // The pipeline is done with tensor i: the reader may drop its pages from memory.
  virtual void release(size_t source_index) = 0;
  // The file mapping raw(i)'s bytes lie in (engine/tensor.h), or none (then the pipeline
  // writes a tensor copied as it is from where raw() points).
  virtual MappedSource raw_mapping(size_t /*source_index*/) { return {}; }
  // A float tensor the reader lists transposed (ONNX MatMul's B [K, N], listed [N, K]):
  // true, and *stored = its view with the listed shape and data pointing at the stored
  // [K, N] matrix, so a quantizer can transpose it tile by tile (engine/row_source.h)
  // instead of asking view() for a whole transposed copy. False for every other tensor.
  virtual bool stored_transposed(size_t /*source_index*/, TensorView* /*stored*/) { return false; }
  // The stored record of a wquant-quantized tensor (kind == Quantized): codes, and
  // scales/zeros as stored (f16 halves when spec.fp16; engine widens them). Throws Error
  // for any other tensor.
  virtual QuantizedTensor load_quantized(size_t source_index);
};

// What the writer receives for one plan entry, in plan order.
struct TensorResult {
  const TensorPlan* plan = nullptr;
  QuantizedTensor quantized;     // action Quantize
  OutputBytes bytes;             // action Ggml (blocks), or KeepFloat converted to out_dtype
  const uint8_t* raw = nullptr;  // CopyRaw, or KeepFloat in its source dtype: source bytes
  size_t raw_bytes = 0;
  size_t lead = 0;               // Ggml: the payload starts this many bytes into `bytes`
  bool has_error = false;        // error figures computed (quantized tensors, when asked)
  ErrorMetrics error;
  // A large Ggml tensor reaches a sink that takes row pieces (TensorSink::takes_row_pieces)
  // as runs of whole rows, in order: bytes holds those rows' blocks (a Quantize tensor's,
  // takes_quantized_row_pieces: quantized holds those rows), and error is set on the last
  // piece only (for the whole tensor). Otherwise both are true.
  bool first_piece = true, last_piece = true;

  // The bytes of the payload for Ggml / KeepFloat / CopyRaw, wherever they live.
  const uint8_t* data() const { return raw ? raw : bytes.data() + lead; }
  size_t size() const { return raw ? raw_bytes : bytes.size() - lead; }
};

// Where results go: io writers implement it. write() is called in plan order, from one
// thread at a time. It may move r.bytes and r.quantized out (a writer whose background
// write reads the payload after write() returns keeps the buffers alive itself); the
// pipeline reuses whatever buffers r still holds once write() returns.
class TensorSink {
 public:
  virtual ~TensorSink() = default;
  virtual void write(TensorResult& r) = 0;
  // Whether write() accepts a tensor in row pieces (TensorResult::first_piece/last_piece).
  // The pipeline then quantizes a large Ggml tensor as several items of at most
  // PipelineOptions::row_piece_bytes, so its output buffers are as small as any other's.
  virtual bool takes_row_pieces() const { return false; }
  // Whether write() accepts a large Quantize tensor in row pieces too: r.quantized is then
  // a run of whole rows (its rows, shape, codes, scales and zeros are those rows' own; the
  // same bytes as the whole tensor's rows), first_piece/last_piece say where it lies, and
  // the figures come with the last. Only tensors whose rows are quantized each on their
  // own are cut (not MNN's flush, not HQQ's tensor-wide stop, not a source stored
  // transposed, which is read in bands of its own).
  virtual bool takes_quantized_row_pieces() const { return false; }
  // Writing without a copy (io/output_file.h write_held): where a Ggml payload of plan
  // entry `plan_index`, from byte `at` of the tensor, will land within its file's direct
  // block; the pipeline then places the payload that many bytes past an aligned address
  // (TensorResult::lead). 0 where the sink has no preference.
  virtual size_t payload_phase(size_t /*plan_index*/, uint64_t /*at*/) const { return 0; }
  // Buffers write() took from an earlier result (moved out of r.bytes or r.quantized
  // while a background write still read them) and no longer reads, for the pipeline to
  // use again: one result's at a time into *r, false when there are none now. (A sink
  // that never takes any, or a wrapper that does not pass this on, costs only fresh
  // buffers: what a sink took is its own until it frees it.)
  virtual bool take_released(TensorResult* /*r*/) { return false; }
};

struct Progress {
  size_t tensors_done = 0, tensors_total = 0;
  uint64_t bytes_in_done = 0, bytes_in_total = 0;  // source bytes of finished tensors
  uint64_t bytes_out = 0;
  double seconds = 0;
};

constexpr size_t kRowPieceBytes = size_t(32) << 20;
// The same for wquant's own schemes to .wq (the sink that takes them): half the GGUF size. The bf16 1.1 B
// model to .wq 4-bit block 64 asymmetric (its embedding and output matrix, 131 MB each, are
// the tensors cut), bench/ab_bench.sh A B B A against 32 MiB, 2026-12-05: wall 0.905 and
// 0.884, CPU 0.968 and 0.983 (6 and 8 pairs), peak RSS 100 -> 84 MiB; with --hqq wall 0.940,
// CPU 1.008. The GGUF jobs did not gain from 16 MiB pieces (f32 -> Q4_0: wall 1.043 and 1.000,
// CPU 1.017 and 1.025; Q4_K_M: wall 1.091, CPU 1.050 in 3 pairs), where their f32 MLP
// matrices (46 MB) would be cut too; 8 MiB cost the .wq job 10% more CPU (README).
constexpr size_t kQuantizedRowPieceBytes = size_t(16) << 20;

struct PipelineOptions {
  size_t max_tensors_in_flight = 0;         // 0: threads of the current arena + 1
  bool compute_error = true;                // ErrorMetrics per quantized tensor
  // How the reader stage brings each admitted tensor's bytes in (engine/read_ahead.h).
  ReadAhead read_ahead = ReadAhead::Pread;
  // A Ggml tensor whose input or output is over twice this many bytes goes to a sink that
  // takes row pieces in pieces of about this many (0: never). Measured on the 1.1 B
  // model's Q4_0 conversion (README, Benchmarks): its 262 MB embedding and output matrix
  // whole needed 91 MB of fresh output buffers, which the kernel faults in and zeroes.
  size_t row_piece_bytes = kRowPieceBytes;
  // A Quantize tensor whose rows are quantized independently, to a sink that takes
  // quantized row pieces: the same, with this many (0: never).
  size_t quantized_piece_bytes = kQuantizedRowPieceBytes;
  // Tensors written as they are (kept float, copied blocks) must hold no NaN or Inf: a
  // GGUF sink asks for it (llama.cpp's loader refuses such a file, and llama-quantize
  // refuses to write one); the other formats copy them as they are.
  bool refuse_nonfinite_copies = false;
  std::function<void(const Progress&)> on_progress;  // called from the writer stage
};

struct TensorReport {
  std::string name;
  TensorAction action;
  std::string what;  // e.g. "4-bit asym block 64", "Q4_0", "f16"
  uint64_t bytes_in = 0, bytes_out = 0;
  bool has_error = false;
  ErrorMetrics error;
  int solver_steps = 0;
};

struct PipelineStats {
  std::vector<TensorReport> tensors;  // plan order
  uint64_t bytes_in = 0, bytes_out = 0;
  double seconds = 0;
};

// Runs the plan on the current task arena (call it inside Scheduler::run). Throws the
// first Error any stage raised (naming the tensor); the sink is then left unfinished,
// and the writer must not commit it.
PipelineStats run_pipeline(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                           TensorSource& source, TensorSink& sink, const PipelineOptions& opts);

}  // namespace wq
