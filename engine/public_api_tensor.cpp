// include/wquant/wquant.h: the ISA choice and one-tensor quantization, over the engine.
#include <wquant/wquant.h>

#include "engine/error.h"
#include "engine/public_api_errors.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"
#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace wquant {

const char* version() { return WQUANT_VERSION; }

namespace {

std::string available_list() {
  std::string s;
  for (const std::string& i : available_isas()) s += (s.empty() ? "" : ", ") + i;
  return s;
}

// a * b, or a usage error where it overflows (a forged record's sizes must not wrap to
// agree with its buffers).
size_t checked_product(size_t a, size_t b) {
  size_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) {
    throw wq::Error("tensor: rows and cols overflow the address space", wq::ErrorKind::Usage);
  }
  return r;
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (int i = 0; i < wq::kIsaCount; ++i) {
    if (wq::isa_available(wq::Isa(i))) out.emplace_back(wq::isa_name(wq::Isa(i)));
  }
  return out;
}

void use_isa(const std::string& name) {
  translate_errors([&] {
    wq::Isa isa;
    if (!wq::parse_isa(name, &isa)) {
      throw wq::Error("unknown ISA '" + name + "' (one of " + wq::isa_names() + ")", wq::ErrorKind::Usage);
    }
    // (Said here, as a usage error: select_isa's own words name the program's --isa.)
    if (!wq::isa_available(isa)) {
      throw wq::Error("ISA '" + name + "' is not available on this CPU or in this build; available: " + available_list(),
                      wq::ErrorKind::Usage);
    }
    wq::select_isa(isa);
  });
}

std::string active_isa() {
  return translate_errors([] { return std::string(wq::isa_name(wq::kernels().isa)); });
}

QuantizedTensor quantize(const float* weights, size_t rows, size_t cols, const QuantOptions& opts) {
  return translate_errors([&] {
    wq::TensorView w;
    w.name = "tensor";
    w.shape = {int64_t(rows), int64_t(cols)};
    w.dtype = wq::DType::F32;
    w.data = weights;
    w.nbytes = rows * cols * sizeof(float);
    // The caller's arguments, not a model's tensor: a usage error (no rows is an empty result).
    if (cols == 0) throw wq::Error("tensor: cols is 0; a row holds at least one weight", wq::ErrorKind::Usage);
    const wq::QuantSpec spec = spec_of(opts);
    wq::validate_spec(spec, "tensor");
    const size_t block = wq::resolve_block(spec, cols, "tensor", wq::BlockFallback::Error, nullptr);
    wq::Scheduler sched(capped_threads(opts.threads));
    wq::QuantizedTensor q;
    sched.run([&] { q = wq::quantize_tensor(w, spec, block); });
    QuantizedTensor out;
    out.rows = q.rows;
    out.cols = q.cols;
    out.bits = q.spec.bits;
    out.block = q.block;
    out.scheme = q.scheme == wq::Scheme::MnnSym ? "mnn_sym" : q.scheme == wq::Scheme::MnnAsym ? "mnn_asym" : "affine";
    out.packed_row_bytes = q.packed_row_bytes;
    out.packed.assign(q.packed.begin(), q.packed.end());  // the public type is a plain vector
    out.scales.assign(q.scales.begin(), q.scales.end());
    out.zeros.assign(q.zeros.begin(), q.zeros.end());
    return out;
  });
}

std::vector<float> dequantize(const QuantizedTensor& q) {
  return translate_errors([&] {
    wq::QuantizedTensor t;
    t.name = "tensor";
    t.rows = q.rows;
    t.cols = q.cols;
    t.shape = {int64_t(q.rows), int64_t(q.cols)};
    t.spec.bits = q.bits;
    t.block = q.block;
    if (q.scheme == "mnn_sym") t.scheme = wq::Scheme::MnnSym;
    else if (q.scheme == "mnn_asym") t.scheme = wq::Scheme::MnnAsym;
    else if (q.scheme == "affine") t.scheme = wq::Scheme::Affine;
    else throw wq::Error("tensor: unknown scheme '" + q.scheme + "'", wq::ErrorKind::Usage);
    const size_t nb = q.block ? q.cols / q.block : 0;
    const size_t numel = checked_product(q.rows, q.cols);
    checked_product(q.cols, size_t(8));  // (the packed row's bits, below)
    if (q.bits < 2 || q.bits > 8 || q.block == 0 || q.cols % q.block || q.packed_row_bytes != (q.cols * size_t(q.bits) + 7) / 8 ||
        q.packed.size() != checked_product(q.rows, q.packed_row_bytes) || q.scales.size() != checked_product(q.rows, nb) ||
        (t.scheme != wq::Scheme::MnnSym && q.zeros.size() != checked_product(q.rows, nb))) {
      throw wq::Error("tensor: sizes of the quantized tensor do not agree with its rows, cols, bits and block",
                      wq::ErrorKind::Usage);
    }
    t.packed_row_bytes = q.packed_row_bytes;
    t.packed.assign(q.packed.begin(), q.packed.end());
    t.scales.assign(q.scales.begin(), q.scales.end());
    t.zeros.assign(q.zeros.begin(), q.zeros.end());
    std::vector<float> out(numel);
    wq::dequantize_tensor(t, out.data());
    return out;
  });
}

}  // namespace wquant
