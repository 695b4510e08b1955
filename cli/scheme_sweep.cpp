#include "cli/scheme_sweep.h"

#include <tbb/parallel_for.h>

#include <chrono>
#include <cmath>

#include "engine/error.h"
#include "engine/ggml_quantize.h"
#include "engine/quantize.h"
#include "engine/rows.h"

namespace wq::cli {

std::vector<SweepScheme> sweep_schemes() {
  std::vector<SweepScheme> v;
  for (const char* family : {"sym", "asym", "hqq"}) {
    for (int bits = 2; bits <= 8; ++bits) {
      for (int64_t block : {32, 64, 128, 0}) {
        SweepScheme s;
        s.family = family;
        s.spec.bits = bits;
        s.spec.block = block;
        s.spec.asym = s.family != "sym";
        s.spec.hqq = s.family == "hqq";
        s.name = s.spec.describe();
        v.push_back(s);
      }
    }
  }
  for (const GgmlTypeTraits& t : kGgmlTraits) {
    for (bool hqq : {false, true}) {
      if (hqq && !t.has_min) continue;  // HQQ needs a zero point (Q4_1, Q5_1) or a minimum (Q2_K, Q4_K, Q5_K)
      SweepScheme s;
      s.family = hqq ? "gguf-hqq" : "gguf";
      s.ggml = true;
      s.type = t.type;
      s.spec.bits = t.bits;
      s.spec.hqq = s.spec.asym = hqq;
      s.name = std::string(t.name) + (hqq ? " hqq" : "");
      v.push_back(s);
    }
  }
  return v;
}

namespace {

struct TensorOutcome {
  std::vector<ErrorSums> rows;
  double bits = 0;  // stored bits of the tensor
  bool kept_float = false;
  std::string refused;  // why the scheme cannot hold it (an Error of the quantizer)
};

// A tensor kept as it is: its exact bits and a zero error (every row against itself).
void keep_float(const TensorView& w, TensorOutcome& o, const Kernels& k) {
  o.kept_float = true;
  o.bits = double(w.nbytes) * 8.0;
  o.rows.resize(w.rows());
  std::vector<float> buf;
  for (size_t r = 0; r < w.rows(); ++r) {
    const float* row = row_as_f32(w, r, w.cols(), buf, k);
    o.rows[r] = error_sums(row, row, w.cols(), k);
  }
}

}  // namespace

SchemeResult run_scheme(const SweepScheme& s, const std::vector<TensorView>& tensors, const Kernels& k) {
  std::vector<TensorOutcome> out(tensors.size());
  const auto t0 = std::chrono::steady_clock::now();
  tbb::parallel_for(size_t(0), tensors.size(), [&](size_t i) {
    const TensorView& w = tensors[i];
    TensorOutcome& o = out[i];
    try {
      if (s.ggml) {
        if (w.cols() % ggml_traits(s.type).weights != 0) return keep_float(w, o, k);
        std::vector<uint8_t> blocks;
        quantize_ggml_tensor(w, s.type, s.spec, blocks, &k, nullptr, &o.rows);
        o.bits = double(blocks.size()) * 8.0;
        return;
      }
      std::string note;
      const size_t block = resolve_block(s.spec, w.cols(), w.name, BlockFallback::ChannelWise, &note);
      const QuantizedTensor q = quantize_tensor(w, s.spec, block, &k, &o.rows);
      o.bits = double(q.storage_bytes()) * 8.0;
    } catch (const Error& e) {
      // (Non-finite weights were refused before any scheme ran: what is left is this
      // scheme's limit, e.g. a parameter past f16's range.)
      if (e.kind() == ErrorKind::Internal) throw;
      o.refused = e.what();
    }
  });
  SchemeResult r;
  r.scheme = s;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<ErrorSums> all;
  double bits = 0, weights = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {  // tensor order: independent of threads
    const ErrorMetrics m = combine_error_sums(out[i].rows);
    if (r.worst_tensor.empty() || m.rel_rmse > r.worst_rel_rmse || m.rel_rmse != m.rel_rmse) {
      r.worst_tensor = tensors[i].name;
      r.worst_rel_rmse = m.rel_rmse;
    }
    all.insert(all.end(), out[i].rows.begin(), out[i].rows.end());
    bits += out[i].bits;
    weights += double(tensors[i].numel());
    r.kept_float += out[i].kept_float;
  }
  r.tensors = tensors.size();
  for (const TensorOutcome& o : out) {
    if (!o.refused.empty()) {
      r.unavailable = o.refused;
      const double nan = std::nan("");
      r.error.rel_rmse = r.error.snr_db = r.error.max_abs = r.error.rmse = r.worst_rel_rmse = r.bits_per_weight = nan;
      r.worst_tensor.clear();
      return r;
    }
  }
  r.error = combine_error_sums(all);
  r.bits_per_weight = weights > 0 ? bits / weights : 0;
  return r;
}

void mark_pareto(std::vector<SchemeResult>& results) {
  for (SchemeResult& a : results) {
    // A scheme that held none of the tensors (every row too short for its blocks) is the
    // float model again, not a choice: never on the front, nor does it push others off.
    auto candidate = [](const SchemeResult& r) {
      return !std::isnan(r.error.rel_rmse) && !(r.tensors > 0 && r.kept_float == r.tensors);
    };
    a.pareto = candidate(a);
    for (const SchemeResult& b : results) {
      if (&a == &b || !a.pareto || !candidate(b)) continue;
      const bool no_worse = b.bits_per_weight <= a.bits_per_weight && b.error.rel_rmse <= a.error.rel_rmse;
      const bool better = b.bits_per_weight < a.bits_per_weight || b.error.rel_rmse < a.error.rel_rmse;
      if (no_worse && better) a.pareto = false;
    }
  }
}

}  // namespace wq::cli
