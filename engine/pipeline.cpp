#include "engine/pipeline.h"

#include <tbb/parallel_pipeline.h>
#include <tbb/task_arena.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

#include "engine/error.h"
#include "engine/ggml_quantize.h"
#include "engine/quantize.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_types.h"
#include "kernels/reference.h"

namespace wq {
namespace {

struct Item {
  const TensorPlan* plan = nullptr;
  const TensorInfo* info = nullptr;
  TensorResult result;
  bool release_after_write = false;  // the payload points into the source mapping
  int solver_steps = 0;
};

// Output buffers handed from the writer stage back to the reader stage: a tensor's
// blocks or codes are written into memory an earlier tensor's output used, already
// mapped. The large ones are mappings of their own with 2 MiB pages
// (engine/output_bytes.h), which a new mapping per tensor would have the kernel fault in
// and zero again. Every buffer belongs to a tensor in flight or waits here, so there are
// at most `tokens` of each kind and the bound on peak memory is unchanged.
class BufferPool {
 public:
  OutputBytes take_bytes() { return take(bytes_); }
  // A quantized tensor's codes, scales and zeros buffers (quantize_tensor's storage).
  QuantizedTensor take_quantized() {
    QuantizedTensor q;
    q.packed = take(packed_);
    q.scales = take(scales_);
    q.zeros = take(zeros_);
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
  template <class V>
  V take(std::vector<V>& list) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (list.empty()) return V();
    V v = std::move(list.back());
    list.pop_back();
    v.clear();  // keeps the capacity
    WQ_MARK_UNDEFINED(v.data(), v.capacity() * sizeof(typename V::value_type));
    return v;
  }
  std::mutex mutex_;
  std::vector<OutputBytes> bytes_, packed_;
  std::vector<OutputVector<float>> scales_, zeros_;
};

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
  const auto* h = reinterpret_cast<const uint16_t*>(out.data());
  for (size_t i = k.find_nonfinite(h, DType::F16, n); i < n; i = i + 1 + k.find_nonfinite(h + i + 1, DType::F16, n - i - 1)) {
    const float x = v.dtype == DType::F32 ? static_cast<const float*>(v.data)[i]
                                          : ref::bf16_to_f32(static_cast<const uint16_t*>(v.data)[i]);
    if (!std::isfinite(x)) continue;
    const size_t cols = v.cols();
    char what[64];
    std::snprintf(what, sizeof what, "%.6g", double(x));
    throw Error(v.name + ": row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols) + ": the weight " +
                what + " does not fit in f16 (largest 65504), the type --fp16 keeps float tensors in; quantize "
                "without --fp16");
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

// The parallel stage for one tensor. Runs isolated: while this thread waits for the
// tensor's own row tiles it must not pick up another tensor of the pipeline.
void process(Item& it, TensorSource& source, const PipelineOptions& opts, BufferPool& pool) {
  const TensorPlan& p = *it.plan;
  TensorResult& r = it.result;
  const Kernels& k = kernels();
  switch (p.action) {
    case TensorAction::Quantize: {
      std::vector<ErrorSums> sums;  // per row, filled while each tile is in cache
      TensorView stored;
      const RowSource src = source.stored_transposed(p.source_index, &stored) ? RowSource::transposed_of(stored)
                                                                              : RowSource::rows_of(quantizer_view(source, p.source_index, opts));
      QuantizedTensor storage = pool.take_quantized();
      r.quantized = quantize_tensor(src, p.spec, p.block, &k, opts.compute_error ? &sums : nullptr, &storage);
      if (opts.compute_error) {
        r.error = combine_error_sums(sums);
        r.has_error = true;
      }
      it.solver_steps = r.quantized.solver_steps;
      source.release(p.source_index);
      break;
    }
    case TensorAction::Ggml: {
      std::vector<float> deq;
      std::vector<ErrorSums> sums;
      const TensorView v = p.requantize ? dequantized_view(source, p, *it.info, deq, k) : quantizer_view(source, p.source_index, opts);
      if (p.imatrix && v.shape.size() == 3) {
        // Experts: each matrix with its own importance values, as llama-quantize does.
        const size_t ne0 = size_t(v.shape[2]), matrix = size_t(v.shape[1]) * ne0, es = dtype_size(v.dtype);
        std::vector<uint8_t> part;
        std::vector<ErrorSums> part_sums;
        r.bytes.clear();
        for (int64_t e = 0; e < v.shape[0]; ++e) {
          TensorView m = v;
          m.shape = {v.shape[1], v.shape[2]};
          m.data = static_cast<const uint8_t*>(v.data) + size_t(e) * matrix * es;
          m.nbytes = matrix * es;
          quantize_ggml_tensor(m, p.ggml, p.spec, part, &k, p.imatrix->data() + size_t(e) * ne0,
                               opts.compute_error ? &part_sums : nullptr);
          sums.insert(sums.end(), part_sums.begin(), part_sums.end());
          r.bytes.insert(r.bytes.end(), part.begin(), part.end());
        }
      } else {
        quantize_ggml_tensor(v, p.ggml, p.spec, r.bytes, &k, p.imatrix ? p.imatrix->data() : nullptr,
                             opts.compute_error ? &sums : nullptr);
      }
      if (opts.compute_error) {
        r.error = combine_error_sums(sums);
        r.has_error = true;
      }
      source.release(p.source_index);
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
        r.raw = source.raw(p.source_index, &r.raw_bytes);
        it.release_after_write = true;
      } else {
        convert_float(source.view(p.source_index), p.out_dtype, r.bytes, k);
        source.release(p.source_index);
      }
      break;
    }
    case TensorAction::CopyRaw:
      r.raw = source.raw(p.source_index, &r.raw_bytes);
      it.release_after_write = true;
      break;
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
  // Items live here, not only in the pipeline's hands: if a stage throws, tbb drops the
  // items in flight and this vector still frees them.
  std::vector<std::unique_ptr<Item>> slots(plan.size());
  BufferPool pool;
  size_t next = 0;
  tbb::parallel_pipeline(
      tokens,
      tbb::make_filter<void, Item*>(tbb::filter_mode::serial_in_order,
                                    [&](tbb::flow_control& fc) -> Item* {
                                      if (next == plan.size()) {
                                        fc.stop();
                                        return nullptr;
                                      }
                                      slots[next] = std::make_unique<Item>();
                                      Item* it = slots[next].get();
                                      it->plan = &plan[next];
                                      it->info = &infos[plan[next].source_index];
                                      it->result.plan = it->plan;
                                      it->result.bytes = pool.take_bytes();
                                      ++next;
                                      // At most `tokens` tensors are admitted ahead of the
                                      // writer: the read-ahead stays within that budget.
                                      if (opts.read_ahead != ReadAhead::Off) {
                                        size_t n = 0;
                                        const uint8_t* bytes = source.raw(it->plan->source_index, &n);
                                        read_ahead(bytes, n, opts.read_ahead);
                                      }
                                      return it;
                                    }) &
          tbb::make_filter<Item*, Item*>(tbb::filter_mode::parallel,
                                         [&](Item* it) -> Item* {
                                           tbb::this_task_arena::isolate([&] { process(*it, source, opts, pool); });
                                           return it;
                                         }) &
          tbb::make_filter<Item*, void>(tbb::filter_mode::serial_in_order, [&](Item* it) {
            const TensorPlan& p = *it->plan;
            sink.write(it->result);
            if (it->release_after_write) source.release(p.source_index);
            pool.give(it->result);
            TensorReport rep;
            rep.name = p.name;
            rep.action = p.action;
            rep.what = describe_plan_entry(p, *it->info);
            rep.bytes_in = it->info->nbytes;
            rep.bytes_out = p.action == TensorAction::Quantize ? it->result.quantized.storage_bytes() : it->result.size();
            rep.has_error = it->result.has_error;
            rep.error = it->result.error;
            rep.solver_steps = it->solver_steps;
            stats.bytes_in += rep.bytes_in;
            stats.bytes_out += rep.bytes_out;
            stats.tensors.push_back(std::move(rep));
            progress.tensors_done++;
            progress.bytes_in_done += it->info->nbytes;
            progress.bytes_out = stats.bytes_out;
            progress.seconds = std::chrono::duration<double>(clock::now() - t0).count();
            if (opts.on_progress) opts.on_progress(progress);
            slots[size_t(it->plan - plan.data())].reset();
          }));
  stats.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return stats;
}

QuantizedTensor TensorSource::load_quantized(size_t source_index) {
  throw Error("tensor " + std::to_string(source_index) + " is not a wquant-quantized tensor");
}

}  // namespace wq
