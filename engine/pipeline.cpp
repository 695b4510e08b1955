#include "engine/pipeline.h"

#include <tbb/parallel_pipeline.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <numeric>

#include "engine/error.h"
#include "engine/ggml_quantize.h"
#include "engine/huge_pages.h"
#include "engine/quantize.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_types.h"
#include "kernels/reference.h"

namespace wq {
namespace {

// One item of the pipeline: a plan entry, or a run of rows of one (a row piece).
struct Span {
  size_t plan = 0;
  size_t row0 = 0, row1 = 0;  // a row piece: rows [row0, row1) of the tensor; else 0, 0
  bool first = true, last = true;
  bool piece() const { return row1 != 0; }
};

// A Ggml tensor's rows as llama.cpp sees them: ggml rows of its last dimension. A 3-D
// (expert) tensor [e, r, c] is e * r rows of c; its blocks never cross a row.
MatrixDims ggml_rows(const std::vector<int64_t>& shape) {
  if (shape.size() != 3) return matrix_dims(shape);
  return {size_t(shape[0]) * size_t(shape[1]), size_t(shape[2])};
}

constexpr size_t kPageBytes = 4096;

// The rows of one expert of a 3-D Ggml tensor quantized with importance values (each
// expert has its own, so its rows are quantized apart from the others'); 0 otherwise.
size_t expert_rows_with_values(const TensorPlan& p) { return p.shape.size() == 3 && p.imatrix ? size_t(p.shape[1]) : 0; }

// Whether a Quantize tensor may be cut into row pieces: a float matrix whose rows are
// each quantized on their own, by the same code whole or cut. Not MNN's subnormal flush
// nor HQQ's tensor-wide stop (both look at the whole tensor), nor a source stored
// transposed (ONNX MatMul weights, read in bands of stored rows instead:
// engine/quantize_columns.h).
bool quantized_rows_independent(const TensorPlan& p, const TensorInfo& info, TensorSource& source) {
  if (p.action != TensorAction::Quantize || !p.block || p.requantize || p.shape.size() != 2 ||
      info.kind != StoredKind::Float || p.spec.mnn_flush || (p.spec.hqq && p.spec.hqq_opts.stop == HqqStop::Tensor)) {
    return false;
  }
  TensorView stored;
  return !source.stored_transposed(p.source_index, &stored);
}

// The plan's entries as pipeline items. A Ggml tensor of plain float rows (2-D, or 3-D
// experts) whose input or output is over twice `piece_bytes` becomes runs of whole rows
// of about `piece_bytes` where the sink takes them (`ggml_pieces`; piece_bytes 0: none
// does; an expert's rows stay in its own pieces where each expert has its own importance
// values): its rows are quantized independently of each other, so the bytes are the
// same, and the pieces' buffers are as small as the layers' and are reused like them.
// So does a Quantize matrix whose rows are independent
// (quantized_rows_independent), with `quantized_piece_bytes` for `piece_bytes`, where
// the sink takes such pieces (`quantized_pieces`), so
// that no tensor's output sets the bound on memory: whole, a 70 B model's 2 GB embedding
// would need 0.5 GB of codes at once at 4 bits (the 1.1 B model's .wq job: peak RSS 84
// against 88 MiB, HQQ 86 against 118; its CPU the same, README).
std::vector<Span> spans_of(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos, size_t piece_bytes,
                           size_t quantized_piece_bytes, bool ggml_pieces, bool quantized_pieces, TensorSource& source) {
  std::vector<Span> spans;
  spans.reserve(plan.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    const TensorPlan& p = plan[i];
    const TensorInfo& info = infos[p.source_index];
    size_t rows = 0, per = 0, group = 0;  // group: rows a piece must not cross (an expert's)
    if (piece_bytes && ggml_pieces && p.action == TensorAction::Ggml && !p.requantize && !p.spec.hqq &&
        (p.shape.size() == 2 || p.shape.size() == 3) && info.kind == StoredKind::Float) {
      checked_numel(p.name, p.shape);
      const MatrixDims d = ggml_rows(p.shape);
      rows = d.rows;
      group = expert_rows_with_values(p) ? expert_rows_with_values(p) : rows;
      if (d.cols && d.cols % ggml_traits(p.ggml).weights == 0) {
        const size_t row_cost = std::max(d.cols * dtype_size(info.dtype), ggml_row_bytes(p.ggml, d.cols));
        if (rows > 1 && rows * row_cost / 2 > piece_bytes) per = std::max<size_t>(1, piece_bytes / row_cost);
      }
    } else if (quantized_piece_bytes && quantized_pieces && quantized_rows_independent(p, info, source)) {
      checked_numel(p.name, p.shape);
      const MatrixDims d = matrix_dims(p.shape);
      rows = group = d.rows;
      const size_t code_bytes = (d.cols * size_t(p.spec.bits) + 7) / 8;
      const size_t row_cost = std::max(d.cols * dtype_size(info.dtype), code_bytes);
      if (d.cols && d.cols % p.block == 0 && rows > 1 && rows * row_cost / 2 > quantized_piece_bytes) {
        per = std::max<size_t>(1, quantized_piece_bytes / row_cost);
        // Each piece's codes a whole number of 4 KiB pages where the piece allows, so
        // every piece starts page-aligned in a file that aligns the first (a writer can
        // then write it without a copy: io/output_file.h write_held).
        const size_t whole_pages = kPageBytes / std::gcd(kPageBytes, code_bytes);
        if (per >= whole_pages) per = per / whole_pages * whole_pages;
      }
    }
    if (per == 0 || group == 0) {
      spans.push_back(Span{i});
      continue;
    }
    for (size_t g = 0; g < rows; g += group) {
      const size_t end = std::min(rows, g + group);
      for (size_t r = g; r < end; r += per) {
        const size_t r1 = std::min(end, r + per);
        spans.push_back(Span{i, r, r1, r == 0, r1 == rows});
      }
    }
  }
  return spans;
}

// Rows [r0, r1) of a view, its ggml rows (ggml_rows), still pointing where the view
// points (so a piece of a mapped tensor is pread like the whole).
TensorView rows_of_view(const TensorView& v, size_t r0, size_t r1) {
  const size_t cols = ggml_rows(v.shape).cols, row = cols * dtype_size(v.dtype);
  TensorView s = v;
  s.shape = {int64_t(r1 - r0), int64_t(cols)};
  s.data = static_cast<const uint8_t*>(v.data) + r0 * row;
  s.nbytes = (r1 - r0) * row;
  s.first_row = v.first_row + r0;
  return s;
}

// What an item's output takes; see BufferPool and needs_of below.
struct OutputNeeds {
  size_t bytes = 0;   // Ggml blocks / converted floats (TensorResult::bytes)
  size_t packed = 0;  // Quantize: codes, bytes
  size_t scales = 0;  // Quantize: scales, floats
  size_t zeros = 0;   // Quantize: zeros, floats (asymmetric schemes)
};

struct Item {
  const TensorPlan* plan = nullptr;
  const TensorInfo* info = nullptr;
  size_t index = 0;  // in the item list
  Span span;
  TensorView piece;  // a row piece: its rows of the tensor's view (taken by the reader stage)
  OutputNeeds needs;
  size_t lead = 0;  // Ggml: where the payload starts in result.bytes (TensorSink::payload_phase)
  TensorResult result;
  std::vector<ErrorSums> sums;  // Ggml: per row of the item, combined by the writer stage
  bool release_after_write = false;  // the payload points into the source mapping
  int solver_steps = 0;
  // What the parallel stage threw for this item, rethrown by the writer stage when it
  // reaches the item: the error reported is the first in plan order (for a tensor in
  // pieces, its first bad row), whichever thread found it first.
  std::exception_ptr failed;
};

// Output buffers handed from the writer stage back to the reader stage: a tensor's
// blocks or codes are written into memory an earlier tensor's output used, already
// mapped. The large ones are mappings of their own with 2 MiB pages
// (engine/output_bytes.h), which a new mapping per tensor would have the kernel fault in
// and zero again. Every buffer belongs to a tensor in flight or waits here, so there are
// at most `tokens` of each kind and the bound on peak memory is unchanged.
//
// Each buffer taken is the smallest waiting one that holds the item's output (the plan
// says how large that is): taking the last one given back, whatever its size, had a
// 6.5 MiB MLP output grow a 0.3 MiB buffer (a fresh mapping, faulted in and zeroed by the
// kernel) while a larger one waited here, layer after layer. (Giving every new buffer the
// plan's largest output's capacity at once was tried: the bf16 -> .wq job gained 4% of
// CPU, the ONNX one lost 9% and grew by 32 MiB, small parameter arrays each faulting in
// whole 2 MiB pages of a large mapping.)
class BufferPool {
 public:
  OutputBytes take_bytes(size_t need) { return take(bytes_, need); }
  // A quantized tensor's codes, scales and zeros buffers (quantize_tensor's storage).
  QuantizedTensor take_quantized(const OutputNeeds& need) {
    QuantizedTensor q;
    q.packed = take(packed_, need.packed);
    q.scales = take(scales_, need.scales);
    q.zeros = take(zeros_, need.zeros);
    return q;
  }
  void give(TensorResult& r) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (r.bytes.capacity()) bytes_.push_back(std::move(r.bytes));
    if (r.quantized.packed.capacity()) packed_.push_back(std::move(r.quantized.packed));
    if (r.quantized.scales.capacity()) scales_.push_back(std::move(r.quantized.scales));
    if (r.quantized.zeros.capacity()) zeros_.push_back(std::move(r.quantized.zeros));
  }

 private:
  // The smallest waiting buffer of at least `need` elements, else the largest, grown.
  template <class V>
  V take(std::vector<V>& list, size_t need) {
    std::lock_guard<std::mutex> lock(mutex_);
    V v;
    if (!list.empty()) {
      size_t pick = 0;
      for (size_t i = 1; i < list.size(); ++i) {
        const size_t c = list[i].capacity(), best = list[pick].capacity();
        if (c >= need ? best < need || c < best : best < need && c > best) pick = i;
      }
      v = std::move(list[pick]);
      list.erase(list.begin() + std::ptrdiff_t(pick));
      v.clear();  // keeps the capacity
    }
    if (need && v.capacity() < need) {
      v = V();  // unmapped before the larger one is mapped
      v.reserve(need);
    }
    WQ_MARK_UNDEFINED(v.data(), v.capacity() * sizeof(typename V::value_type));
    return v;
  }
  std::mutex mutex_;
  std::vector<OutputBytes> bytes_, packed_;
  std::vector<OutputVector<float>> scales_, zeros_;
};

// What an item's output takes (OutputNeeds): a Ggml or converting KeepFloat item's
// bytes, a Quantize item's codes and parameters; nothing for the others, which write
// from the source.
OutputNeeds needs_of(const TensorPlan& p, const TensorInfo& info, const Span& span) {
  OutputNeeds n;
  if (p.action == TensorAction::Ggml) {
    checked_numel(p.name, p.shape);
    const MatrixDims d = ggml_rows(p.shape);
    n.bytes = ggml_row_bytes(p.ggml, d.cols) * (span.piece() ? span.row1 - span.row0 : d.rows);
  } else if (p.action == TensorAction::KeepFloat && (p.requantize || info.dtype != p.out_dtype)) {
    n.bytes = checked_numel(p.name, p.shape) * dtype_size(p.out_dtype);
  } else if (p.action == TensorAction::Quantize && p.block) {
    checked_numel(p.name, p.shape);
    const MatrixDims d = matrix_dims(p.shape);
    if (d.cols % p.block == 0) {  // (else quantize_tensor refuses it)
      const size_t rows = span.piece() ? span.row1 - span.row0 : d.rows;
      n.packed = rows * ((d.cols * size_t(p.spec.bits) + 7) / 8);
      n.scales = rows * (d.cols / p.block);
      n.zeros = p.spec.scheme() == Scheme::MnnSym ? 0 : n.scales;
    }
  }
  return n;
}

// Whether storing `from` values as `to` can change them.
bool narrows(DType from, DType to) {
  if (from == to || to == DType::F32) return false;
  return true;  // f32 -> f16 / bf16, f16 <-> bf16 (neither holds the other's values)
}

// w (a float view) against `out`, its values stored as `to` (f16 or bf16), read back:
// the error figures of the conversion, a bounded chunk at a time.
ErrorMetrics conversion_error(const TensorView& w, DType to, const uint8_t* out, const Kernels& k) {
  // Row by row, as verify measures: whole rows a chunk.
  const size_t n = w.numel(), cols = error_row_length(w.shape, n);
  const size_t chunk = std::max<size_t>(1, (size_t(1) << 16) / cols) * cols;
  std::vector<float> ref(std::min(n, chunk)), back(std::min(n, chunk));
  std::vector<ErrorSums> parts;
  for (size_t i = 0; i < n; i += chunk) {
    const size_t m = std::min(chunk, n - i);
    const float* a = nullptr;
    if (w.dtype == DType::F32) {
      a = static_cast<const float*>(w.data) + i;
    } else {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + i;
      if (w.dtype == DType::F16) k.widen_f16(src, ref.data(), m);
      else k.widen_bf16(src, ref.data(), m);
      a = ref.data();
    }
    const uint16_t* o = reinterpret_cast<const uint16_t*>(out) + i;
    if (to == DType::F16) k.widen_f16(o, back.data(), m);
    else k.widen_bf16(o, back.data(), m);
    parts.push_back(error_sums_by_row(a, back.data(), m / cols, cols, k));
  }
  return combine_error_sums(parts);
}

// Converts a float view to another float dtype (the plan only asks for widening, or
// f32 -> f16 narrowing).
void convert_float(const TensorView& v, DType to, OutputBytes& out, const Kernels& k) {
  const size_t n = v.numel();
  out.resize(n * dtype_size(to));
  if (v.dtype == DType::F32 && to == DType::F16) {
    k.narrow_f16(static_cast<const float*>(v.data), reinterpret_cast<uint16_t*>(out.data()), n);
  } else if (v.dtype == DType::F16 && to == DType::F32) {
    k.widen_f16(static_cast<const uint16_t*>(v.data), reinterpret_cast<float*>(out.data()), n);
  } else if (v.dtype == DType::BF16 && to == DType::F32) {
    k.widen_bf16(static_cast<const uint16_t*>(v.data), reinterpret_cast<float*>(out.data()), n);
  } else if (v.dtype == DType::BF16 && to == DType::F16) {
    std::vector<float> tmp(n);
    k.widen_bf16(static_cast<const uint16_t*>(v.data), tmp.data(), n);
    k.narrow_f16(tmp.data(), reinterpret_cast<uint16_t*>(out.data()), n);
  } else if (to == DType::BF16 && (v.dtype == DType::F32 || v.dtype == DType::F16)) {
    // llama-quantize's BF16 (ggml_fp32_to_bf16_row_ref): round to nearest even, a NaN
    // kept quiet; an f16 source is widened first, as llama-quantize dequantizes it.
    std::vector<float> tmp;
    const float* src = static_cast<const float*>(v.data);
    if (v.dtype == DType::F16) {
      tmp.resize(n);
      k.widen_f16(static_cast<const uint16_t*>(v.data), tmp.data(), n);
      src = tmp.data();
    }
    auto* dst = reinterpret_cast<uint16_t*>(out.data());
    for (size_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, &src[i], 4);
      dst[i] = (u & 0x7fffffffu) > 0x7f800000u ? uint16_t((u >> 16) | 64) : uint16_t((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
    }
  } else {
    throw Error(v.name + ": cannot convert " + dtype_name(v.dtype) + " to " + dtype_name(to), ErrorKind::Internal);
  }
  if (to != DType::F16) return;
  // A finite weight beyond f16's 65504 became Inf: refused, as a quantized tensor's
  // parameters are (a NaN or Inf already in the source is copied as it is).
  auto source = [&](size_t i) {
    return v.dtype == DType::F32 ? static_cast<const float*>(v.data)[i]
                                 : ref::bf16_to_f32(static_cast<const uint16_t*>(v.data)[i]);
  };
  if (const size_t i = first_narrowing_overflow(out.data(), DType::F16, n, source, k); i != n) {
    const size_t cols = v.cols();
    char what[64];
    std::snprintf(what, sizeof what, "%.6g", double(source(i)));
    throw Error(v.name + ": row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols) + ": the weight " +
                what + " does not fit in f16 (largest 65504), the type it was to be kept in (--fp16, or a GGUF F16 "
                "type); keep it in f32 or bf16 (without --fp16, or another type for it)");
  }
}

// A tensor stored in llama.cpp blocks, dequantized to f32 into `buf` (--allow-requantize).
TensorView dequantized_view(TensorSource& source, const TensorPlan& p, const TensorInfo& info, std::vector<float>& buf,
                            const Kernels& k) {
  const auto block = ggml_block_named(info.type_name);
  if (!block) throw Error(p.name + ": cannot dequantize type " + info.type_name, ErrorKind::Internal);
  const size_t numel = checked_numel(p.name, p.shape);
  size_t n = 0;
  const uint8_t* raw = source.raw(p.source_index, &n);
  if (numel % ggml_traits(*block).weights != 0 || n != ggml_row_bytes(*block, numel)) {
    throw Error(p.name + ": " + std::to_string(n) + " bytes do not hold " + std::to_string(numel) + " " +
                info.type_name + " weights");
  }
  buf.resize(numel);
  k.dequantize_ggml[int(*block)](raw, buf.data(), numel);
  TensorView v;
  v.name = p.name;
  v.shape = p.shape;
  v.dtype = DType::F32;
  v.data = buf.data();
  v.nbytes = numel * 4;
  return v;
}

// A float tensor's view for the quantizers: with ReadAhead::Pread its row tiles are pread
// from the file (RowSource::tile); with the other modes they are read through the
// mapping, which the reader stage has prepared as that mode says.
TensorView quantizer_view(TensorSource& source, size_t i, const PipelineOptions& opts) {
  TensorView v = source.view(i);
  if (opts.read_ahead != ReadAhead::Pread) v.mapped = {};
  return v;
}

// A tensor written as it is stored. One under kPreadCopyBelow is pread into the result's
// buffer where the source is a file (read_ahead pread, as the quantizers' tiles are), so
// that the input's pages stay out of the process's resident set: written from the
// mapping, each 4 KiB norm vector of a bf16 -> .wq conversion faulted in the page cache's
// folio around it, up to 2 MiB, and the input's mappings held 40-80 MiB of the 136 MiB
// peak (/proc/PID/smaps, 2026-12-06). A larger one is written from the mapping (the
// writer reads it once either way, and a copy would cost a buffer of its size), as is the
// stored [K, N] of an ONNX MatMul weight kept in float, whose writer tells it from a
// converted [N, K] by r.raw.
constexpr size_t kPreadCopyBelow = size_t(2) << 20;

void take_source_bytes(Item& it, TensorSource& source, const PipelineOptions& opts) {
  TensorResult& r = it.result;
  const size_t i = it.plan->source_index;
  r.raw = source.raw(i, &r.raw_bytes);
  TensorView stored;
  if (opts.read_ahead == ReadAhead::Pread && r.raw_bytes > 0 && r.raw_bytes < kPreadCopyBelow &&
      !source.stored_transposed(i, &stored)) {
    r.bytes.resize(r.raw_bytes);
    if (source.raw_mapping(i).read(r.raw, r.raw_bytes, r.bytes.data())) {
      r.raw = nullptr;
      r.raw_bytes = 0;
      source.release(i);
      return;
    }
    r.bytes.clear();
  }
  it.release_after_write = true;
}

// PipelineOptions::refuse_nonfinite_copies: the bytes of a tensor written as it is, as
// floats or (blocks of a type wquant has kernels for) dequantized, hold no NaN or Inf.
// The IQ1/IQ2/IQ3 and TQ types, which it has no kernels for, are not checked.
void check_copied_values(const TensorPlan& p, const TensorInfo& info, const TensorResult& r, const Kernels& k) {
  const auto* data = static_cast<const uint8_t*>(r.data());
  const size_t n_bytes = r.size();
  const size_t cols = p.shape.empty() ? 1 : std::max<size_t>(1, size_t(p.shape.back()));
  auto refuse = [&](size_t i) {
    throw Error(p.name + ": row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols) +
                ": NaN or Inf in a tensor the GGUF output holds as it is; llama.cpp refuses to load such a file "
                "(llama-quantize refuses it too)");
  };
  if (p.action == TensorAction::KeepFloat) {
    const size_t n = n_bytes / dtype_size(p.out_dtype), i = k.find_nonfinite(data, p.out_dtype, n);
    if (i == n) return;
    if (p.out_dtype != info.dtype && info.kind == StoredKind::Float) {
      // Converted to a narrower float: a finite weight past its range rounds to Inf too.
      const bool f16 = p.out_dtype == DType::F16;
      const std::string type = f16 ? "F16" : "BF16";  // (GGUF's names)
      throw Error(p.name + ": row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols) + ": NaN or Inf once " +
                  "stored as " + type + " (a NaN or Inf weight, or one past " + (f16 ? "65504" : "3.38953e+38") +
                  ", the largest " + type + "); llama.cpp refuses to load such a file (llama-quantize refuses it too)");
    }
    refuse(i);
  }
  if (info.kind != StoredKind::Ggml) return;
  const std::optional<GgmlBlock> b = ggml_block_named(info.type_name);
  if (!b) return;
  const GgmlTypeTraits& t = ggml_traits(*b);
  constexpr size_t kChunkBlocks = 1024;
  std::vector<float> w(kChunkBlocks * t.weights);
  const size_t blocks = n_bytes / t.bytes;
  for (size_t b0 = 0; b0 < blocks; b0 += kChunkBlocks) {
    const size_t nb = std::min(kChunkBlocks, blocks - b0), n = nb * t.weights;
    k.dequantize_ggml[int(*b)](data + b0 * t.bytes, w.data(), n);
    const size_t i = k.find_nonfinite(w.data(), DType::F32, n);
    if (i != n) refuse(b0 * t.weights + i);
  }
}

// The parallel stage for one tensor. Runs isolated: while this thread waits for the
// tensor's own row tiles it must not pick up another tensor of the pipeline.
void process(Item& it, TensorSource& source, const PipelineOptions& opts, BufferPool& pool) {
  const TensorPlan& p = *it.plan;
  TensorResult& r = it.result;
  const Kernels& k = kernels();
  switch (p.action) {
    case TensorAction::Quantize: {
      // Per row, filled while each tile is in cache; a piece's are combined with the other
      // pieces' by the writer stage, in row order, as a whole tensor's are here.
      std::vector<ErrorSums>& sums = it.sums;
      TensorView stored;
      const RowSource src = it.span.piece() ? RowSource::rows_of(it.piece)
                            : source.stored_transposed(p.source_index, &stored)
                                ? RowSource::transposed_of(stored)
                                : RowSource::rows_of(quantizer_view(source, p.source_index, opts));
      QuantizedTensor storage = pool.take_quantized(it.needs);
      r.quantized = quantize_tensor(src, p.spec, p.block, &k, opts.compute_error ? &sums : nullptr, &storage);
      if (opts.compute_error && !it.span.piece()) {
        r.error = combine_error_sums(sums);
        r.has_error = true;
      }
      it.solver_steps = r.quantized.solver_steps;
      if (!it.span.piece()) source.release(p.source_index);  // a piece's: after the last (writer stage)
      break;
    }
    case TensorAction::Ggml: {
      std::vector<float> deq;
      std::vector<ErrorSums>& sums = it.sums;
      TensorView v = it.span.piece() ? it.piece
                     : p.requantize  ? dequantized_view(source, p, *it.info, deq, k)
                                     : quantizer_view(source, p.source_index, opts);
      // Experts [e, r, c] as e * r ggml rows of c, whole or in pieces (rows measured the
      // same way either way, messages naming rows of the whole).
      if (v.shape.size() == 3) v = rows_of_view(v, 0, ggml_rows(v.shape).rows);
      const size_t cols = v.cols(), first = it.span.row0, per_expert = expert_rows_with_values(p);
      if (!per_expert || first / per_expert == (first + v.rows() - 1) / per_expert) {
        // One expert's rows at most (a piece never crosses one): its importance values.
        const float* imatrix = p.imatrix ? p.imatrix->data() + (per_expert ? first / per_expert * cols : 0) : nullptr;
        quantize_ggml_tensor(v, p.ggml, p.spec, r.bytes, &k, imatrix, opts.compute_error ? &sums : nullptr, it.lead);
        r.lead = it.lead;
      } else {
        // A whole expert tensor: each expert with its own values, as llama-quantize does.
        std::vector<uint8_t> part;
        std::vector<ErrorSums> part_sums;
        r.bytes.clear();
        for (size_t g = 0; g < v.rows(); g += per_expert) {
          quantize_ggml_tensor(rows_of_view(v, g, g + per_expert), p.ggml, p.spec, part, &k,
                               p.imatrix->data() + g / per_expert * cols, opts.compute_error ? &part_sums : nullptr);
          sums.insert(sums.end(), part_sums.begin(), part_sums.end());
          r.bytes.insert(r.bytes.end(), part.begin(), part.end());
        }
      }
      if (!it.span.piece()) source.release(p.source_index);  // a piece's: after the last (writer stage)
      break;
    }
    case TensorAction::KeepFloat: {
      if (p.requantize) {
        std::vector<float> deq;
        const TensorView v = dequantized_view(source, p, *it.info, deq, k);
        if (p.out_dtype == DType::F32) {
          r.bytes.resize(v.nbytes);
          std::memcpy(r.bytes.data(), v.data, v.nbytes);
        } else {
          convert_float(v, p.out_dtype, r.bytes, k);
        }
        source.release(p.source_index);
      } else if (it.info->dtype == p.out_dtype) {
        take_source_bytes(it, source, opts);
      } else {
        const TensorView v = source.view(p.source_index);
        convert_float(v, p.out_dtype, r.bytes, k);
        // Narrowing loses precision (f32 to f16 / bf16, a mix's F16 fallbacks, --fp16): its
        // error is measured as a quantized tensor's is, so the summary's worst tensors and
        // the JSON report it (widening is exact: nothing to measure).
        if (opts.compute_error && narrows(v.dtype, p.out_dtype)) {
          r.error = conversion_error(v, p.out_dtype, r.bytes.data(), k);
          r.has_error = true;
        }
        source.release(p.source_index);
      }
      break;
    }
    case TensorAction::CopyRaw:
      take_source_bytes(it, source, opts);
      break;
  }
  if (opts.refuse_nonfinite_copies && (p.action == TensorAction::KeepFloat || p.action == TensorAction::CopyRaw)) {
    check_copied_values(p, *it.info, r, k);
  }
}

}  // namespace

PipelineStats run_pipeline(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                           TensorSource& source, TensorSink& sink, const PipelineOptions& opts) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  PipelineStats stats;
  Progress progress;
  progress.tensors_total = plan.size();
  for (const TensorPlan& p : plan) {
    if (p.source_index >= infos.size()) throw Error(p.name + ": plan names a tensor the source lacks", ErrorKind::Internal);
    progress.bytes_in_total += infos[p.source_index].nbytes;
  }
  const size_t tokens = opts.max_tensors_in_flight ? opts.max_tensors_in_flight
                                                    : size_t(tbb::this_task_arena::max_concurrency()) + 1;
  const std::vector<Span> spans =
      spans_of(plan, infos, opts.row_piece_bytes, opts.quantized_piece_bytes, sink.takes_row_pieces(),
               sink.takes_quantized_row_pieces(), source);
  // A large buffer freed during the run leaves its pages for the next one
  // (engine/huge_pages.h); when the run ends or throws, they go back to the system, after
  // the items' and the pool's buffers (destroyed before this) gave theirs.
  huge_pages::KeepFreedPages keep_freed_pages;
  // Items live here, not only in the pipeline's hands: if a stage throws, tbb drops the
  // items in flight and this vector still frees them.
  std::vector<std::unique_ptr<Item>> slots(spans.size());
  BufferPool pool;
  size_t next = 0;
  TensorView whole;  // the reader stage's view of the tensor whose pieces it is admitting
  std::exception_ptr whole_failed;  // what taking `whole` threw, if it did
  // The writer stage's totals of the tensor whose pieces it is writing.
  std::vector<ErrorSums> piece_sums;
  uint64_t piece_bytes_out = 0;
  int piece_steps = 0;  // HQQ's most solver steps in any piece so far
  tbb::parallel_pipeline(
      tokens,
      tbb::make_filter<void, Item*>(tbb::filter_mode::serial_in_order,
                                    [&](tbb::flow_control& fc) -> Item* {
                                      if (next == spans.size()) {
                                        fc.stop();
                                        return nullptr;
                                      }
                                      const Span& s = spans[next];
                                      slots[next] = std::make_unique<Item>();
                                      Item* it = slots[next].get();
                                      it->index = next;
                                      it->span = s;
                                      it->plan = &plan[s.plan];
                                      it->info = &infos[it->plan->source_index];
                                      it->result.plan = it->plan;
                                      it->result.first_piece = s.first;
                                      it->result.last_piece = s.last;
                                      it->needs = needs_of(*it->plan, *it->info, s);
                                      if (it->plan->action == TensorAction::Ggml) {
                                        it->lead = sink.payload_phase(s.plan, s.piece() ? s.row0 * it->needs.bytes / (s.row1 - s.row0) : 0);
                                      }
                                      it->result.bytes = pool.take_bytes(it->lead + it->needs.bytes);
                                      ++next;
                                      // A tensor's view is taken once, here, for all its
                                      // pieces: calls for one index come from one thread.
                                      if (s.piece()) {
                                        try {
                                          if (s.first) {
                                            whole_failed = nullptr;
                                            whole = quantizer_view(source, it->plan->source_index, opts);
                                          }
                                        } catch (...) {
                                          whole_failed = std::current_exception();  // in plan order, as below
                                        }
                                        // (Every piece of a tensor whose view failed fails with it:
                                        // `whole` is then another tensor's.)
                                        if (whole_failed) {
                                          it->failed = whole_failed;
                                          return it;
                                        }
                                        it->piece = rows_of_view(whole, s.row0, s.row1);
                                      }
                                      // At most `tokens` items are admitted ahead of the
                                      // writer: the read-ahead stays within that budget.
                                      if (opts.read_ahead != ReadAhead::Off) {
                                        size_t n = 0;
                                        const uint8_t* bytes = source.raw(it->plan->source_index, &n);
                                        if (s.piece()) {
                                          const size_t row = n / ggml_rows(it->plan->shape).rows;
                                          bytes += s.row0 * row;
                                          n = (s.row1 - s.row0) * row;
                                        }
                                        read_ahead(bytes, n, opts.read_ahead);
                                      }
                                      return it;
                                    }) &
          tbb::make_filter<Item*, Item*>(tbb::filter_mode::parallel,
                                         [&](Item* it) -> Item* {
                                           if (it->failed) return it;
                                           try {
                                             tbb::this_task_arena::isolate([&] { process(*it, source, opts, pool); });
                                           } catch (...) {
                                             it->failed = std::current_exception();
                                           }
                                           return it;
                                         }) &
          tbb::make_filter<Item*, void>(tbb::filter_mode::serial_in_order, [&](Item* it) {
            if (it->failed) std::rethrow_exception(it->failed);
            const TensorPlan& p = *it->plan;
            TensorResult& r = it->result;
            if ((p.action == TensorAction::Ggml || it->span.piece()) && opts.compute_error) {
              if (!it->span.piece()) {
                r.error = combine_error_sums(it->sums);
              } else {
                piece_sums.insert(piece_sums.end(), it->sums.begin(), it->sums.end());
                if (it->span.last) r.error = combine_error_sums(piece_sums);
              }
              r.has_error = it->span.last;
            }
            // (Counted before write(), which may take the payload's buffer.)
            piece_bytes_out += p.action == TensorAction::Quantize ? r.quantized.storage_bytes() : r.size();
            sink.write(r);
            if (it->release_after_write || (it->span.piece() && it->span.last)) source.release(p.source_index);
            pool.give(r);  // (what write() left in r)
            for (TensorResult done; sink.take_released(&done); done = TensorResult()) pool.give(done);
            if (it->span.last) {
              TensorReport rep;
              rep.name = p.name;
              rep.action = p.action;
              rep.what = describe_plan_entry(p, *it->info);
              rep.bytes_in = it->info->nbytes;
              rep.bytes_out = piece_bytes_out;
              rep.has_error = r.has_error;
              rep.error = r.error;
              rep.solver_steps = std::max(piece_steps, it->solver_steps);
              stats.bytes_in += rep.bytes_in;
              stats.bytes_out += rep.bytes_out;
              stats.tensors.push_back(std::move(rep));
              progress.tensors_done++;
              progress.bytes_in_done += it->info->nbytes;
              progress.bytes_out = stats.bytes_out;
              progress.seconds = std::chrono::duration<double>(clock::now() - t0).count();
              if (opts.on_progress) opts.on_progress(progress);
              piece_sums.clear();
              piece_bytes_out = 0;
              piece_steps = 0;
            } else {
              piece_steps = std::max(piece_steps, it->solver_steps);
            }
            slots[it->index].reset();
          }));
  stats.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return stats;
}

QuantizedTensor TensorSource::load_quantized(size_t source_index) {
  throw Error("tensor " + std::to_string(source_index) + " is not a wquant-quantized tensor");
}

}  // namespace wq
