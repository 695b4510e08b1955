// wquant dequantize QUANT OUT.safetensors: every tensor back to float (f32, f16 or bf16),
// exactly as a loader reconstructs it; non-float tensors are copied unchanged.
#include <cstdio>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/output_path.h"
#include "cli/run_support.h"
#include "engine/error.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"
#include "io/model_reader.h"
#include "io/model_writer.h"

namespace wq::cli {

namespace {

// f32 -> bf16, round to nearest even; NaN stays NaN (quiet, sign kept). The kernel table
// has no bf16 narrowing: this runs once per output element, off the hot path.
void narrow_bf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, &src[i], 4);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) {
      dst[i] = uint16_t((b >> 16) | 0x0040u);
    } else {
      dst[i] = uint16_t((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
    }
  }
}

// The tensor's weights (v, rows of `cols`) in the output dtype. A finite weight that
// narrows to Inf (beyond f16's 65504, or rounding past bf16's largest) is refused, naming
// it: the file would not hold the model (a NaN or Inf already in v is written as it is).
OutputBytes to_bytes(const std::vector<float>& v, size_t cols, DType t, const Kernels& k, const std::string& where) {
  OutputBytes out(v.size() * dtype_size(t));
  switch (t) {
    case DType::F32: std::memcpy(out.data(), v.data(), out.size()); return out;
    case DType::F16: k.narrow_f16(v.data(), reinterpret_cast<uint16_t*>(out.data()), v.size()); break;
    case DType::BF16: narrow_bf16(v.data(), reinterpret_cast<uint16_t*>(out.data()), v.size()); break;
  }
  const size_t n = v.size();
  if (const size_t i = first_narrowing_overflow(out.data(), t, n, [&](size_t j) { return v[j]; }, k); i != n) {
    char what[64];
    std::snprintf(what, sizeof what, "%.6g", double(v[i]));
    const size_t c = cols ? cols : 1;
    throw Error(where + ": row " + std::to_string(i / c) + ", column " + std::to_string(i % c) + ": dequantizes to " +
                what + ", which " + dtype_name(t) + " cannot hold (it would be Inf; largest " +
                (t == DType::F16 ? "65504" : "3.38953e+38") + "); dequantize without --" + (t == DType::F16 ? "fp16" : "bf16"));
  }
  return out;
}

}  // namespace

int run_dequantize(const DequantizeArgs& a, Console& con) {
  const Isa isa = choose_isa(a.run);
  set_signal_input(a.input);
  const Kernels& k = *kernels_for(isa);
  OutputFormat format;
  try {
    format = format_from_path(a.output);
  } catch (const Error&) {
    format = OutputFormat::Wq;  // any non-safetensors name is refused below
  }
  if (format != OutputFormat::Safetensors) {
    throw Error(a.output + ": dequantize writes safetensors: name OUT *.safetensors", ErrorKind::Usage);
  }
  std::unique_ptr<ModelReader> r = open_model(a.input);
  check_output_path(a.output, model_files(a.input, *r), a.force);
  const std::vector<TensorInfo>& infos = r->tensors();

  std::vector<TensorPlan> plan(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    TensorPlan& p = plan[i];
    p.source_index = i;
    p.name = infos[i].name;
    p.shape = infos[i].shape;
    p.action = infos[i].kind == StoredKind::Other ? TensorAction::CopyRaw : TensorAction::KeepFloat;
    p.out_dtype = a.dtype;
  }
  check_free_space(a.output, naming_file(a.output, {a.output}, [&] {
                     return planned_output_bytes(plan, infos, OutputFormat::Safetensors, *r);
                   }));

  Scheduler sched(worker_threads(a.run, con));
  std::unique_ptr<ModelWriter> writer = make_writer(a.output, OutputFormat::Safetensors, plan, *r);
  sched.run([&] {
    for (size_t i = 0; i < plan.size(); ++i) {
      TensorResult res;
      res.plan = &plan[i];
      if (plan[i].action == TensorAction::CopyRaw) {
        res.raw = r->raw(i, &res.raw_bytes);
      } else {
        res.bytes = to_bytes(read_f32(*r, i), matrix_dims(plan[i].shape).cols, a.dtype, k, a.input + ": " + plan[i].name);
      }
      writer->write(res);
      r->release(i);
    }
  });
  writer->commit();
  size_t transposed = 0;
  for (const TensorInfo& t : infos) transposed += t.listed_transposed && t.shape.size() == 2;
  if (transposed) {
    con.note(std::to_string(transposed) + " ONNX MatMul weights written as [N, K] (output channels first, as wquant "
             "quantizes them), the transpose of the [K, N] the ONNX file stores");
  }
  size_t converted = 0;
  for (const TensorPlan& p : plan) converted += p.action == TensorAction::KeepFloat;
  if (con.human()) {
    std::printf("dequantized %s -> %s: %zu tensors, %zu as %s (%zu others copied as they are), %s\n", a.input.c_str(),
                a.output.c_str(), plan.size(), converted, dtype_name(a.dtype), plan.size() - converted,
                format_bytes(total_file_bytes({a.output})).c_str());
  } else if (con.verbosity().json) {
    const nlohmann::json doc = {{"command", "dequantize"}, {"input", a.input}, {"output", a.output},
                                {"dtype", dtype_name(a.dtype)}, {"tensors", plan.size()}, {"as_dtype", converted},
                                {"output_bytes", total_file_bytes({a.output})}};
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return 0;
}

}  // namespace wq::cli
