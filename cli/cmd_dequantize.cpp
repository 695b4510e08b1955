// wquant dequantize QUANT OUT.safetensors: every tensor back to float (f32, f16 or bf16),
// exactly as a loader reconstructs it; non-float tensors are copied unchanged.
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/output_path.h"
#include "cli/run_support.h"
#include "engine/error.h"
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

OutputBytes to_bytes(const std::vector<float>& v, DType t, const Kernels& k) {
  OutputBytes out(v.size() * dtype_size(t));
  switch (t) {
    case DType::F32: std::memcpy(out.data(), v.data(), out.size()); break;
    case DType::F16: k.narrow_f16(v.data(), reinterpret_cast<uint16_t*>(out.data()), v.size()); break;
    case DType::BF16: narrow_bf16(v.data(), reinterpret_cast<uint16_t*>(out.data()), v.size()); break;
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
  check_output_path(a.output, input_files(a.input), a.force);
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
        res.bytes = to_bytes(read_f32(*r, i), a.dtype, k);
      }
      writer->write(res);
      r->release(i);
    }
  });
  writer->commit();
  if (con.human()) {
    std::printf("dequantized %s -> %s: %zu tensors as %s, %s\n", a.input.c_str(), a.output.c_str(), plan.size(),
                dtype_name(a.dtype), format_bytes(total_file_bytes({a.output})).c_str());
  } else if (con.verbosity().json) {
    const nlohmann::json doc = {{"command", "dequantize"}, {"input", a.input}, {"output", a.output},
                                {"dtype", dtype_name(a.dtype)}, {"tensors", plan.size()},
                                {"output_bytes", total_file_bytes({a.output})}};
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return 0;
}

}  // namespace wq::cli
