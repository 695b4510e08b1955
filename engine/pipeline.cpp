#include "engine/pipeline.h"

#include <tbb/parallel_pipeline.h>
#include <tbb/task_arena.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

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

// Converts a float view to another float dtype (the plan only asks for widening, or
// f32 -> f16 narrowing).
void convert_float(const TensorView& v, DType to, std::vector<uint8_t>& out, const Kernels& k) {
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

// The parallel stage for one tensor. Runs isolated: while this thread waits for the
// tensor's own row tiles it must not pick up another tensor of the pipeline.
void process(Item& it, TensorSource& source, const PipelineOptions& opts) {
  const TensorPlan& p = *it.plan;
  TensorResult& r = it.result;
  const Kernels& k = kernels();
  switch (p.action) {
    case TensorAction::Quantize: {
      const TensorView v = source.view(p.source_index);
      std::vector<ErrorSums> sums;  // per row, filled while each tile is in cache
      r.quantized = quantize_tensor(v, p.spec, p.block, &k, opts.compute_error ? &sums : nullptr);
      if (opts.compute_error) {
        r.error = combine_error_sums(sums);
        r.has_error = true;
      }
      it.solver_steps = r.quantized.solver_steps;
      source.release(p.source_index);
      break;
    }
    case TensorAction::Ggml: {
      const TensorView v = source.view(p.source_index);
      std::vector<ErrorSums> sums;
      quantize_ggml_tensor(v, p.ggml, p.spec, r.bytes, &k, opts.compute_error ? &sums : nullptr);
      if (opts.compute_error) {
        r.error = combine_error_sums(sums);
        r.has_error = true;
      }
      source.release(p.source_index);
      break;
    }
    case TensorAction::KeepFloat: {
      if (it.info->dtype == p.out_dtype) {
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
                                           tbb::this_task_arena::isolate([&] { process(*it, source, opts); });
                                           return it;
                                         }) &
          tbb::make_filter<Item*, void>(tbb::filter_mode::serial_in_order, [&](Item* it) {
            const TensorPlan& p = *it->plan;
            sink.write(it->result);
            if (it->release_after_write) source.release(p.source_index);
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
