// include/wquant/wquant.h: models and whole conversions, over io and the engine's plan
// and pipeline (the same path `wquant quantize` takes, without the program's printing).
#include <chrono>
#include <filesystem>
#include <system_error>
#include <wquant/wquant.h>

#include "engine/pipeline.h"
#include "engine/plan.h"
#include "engine/public_api_errors.h"
#include "engine/scheduler.h"
#include "engine/stored_tensor.h"
#include "io/gguf_output.h"
#include "io/model_reader.h"
#include "io/model_writer.h"
#include "io/output_path.h"
#include "io/public_api_gguf.h"

namespace wquant {

struct Model::Impl {
  std::unique_ptr<wq::ModelReader> reader;
  std::vector<TensorInfo> tensors;
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::open(const std::string& path) {
  return translate_errors([&] {
    auto impl = std::make_unique<Impl>();
    impl->reader = wq::open_model(path);
    for (const wq::TensorInfo& t : impl->reader->tensors()) impl->tensors.push_back({t.name, t.shape, t.type_name});
    return Model(std::move(impl));
  });
}

const char* Model::format() const { return impl_->reader->format(); }
const std::vector<TensorInfo>& Model::tensors() const { return impl_->tensors; }

std::vector<float> Model::read_f32(const std::string& name) {
  return translate_errors([&] {
    const long i = impl_->reader->find(name);
    if (i < 0) throw wq::Error(impl_->reader->path() + ": " + name + ": no such tensor", wq::ErrorKind::Usage);
    return wq::tensor_as_f32(*impl_->reader, impl_->reader->tensors()[size_t(i)], size_t(i), impl_->reader->path());
  });
}

ConvertResult convert(const std::string& in, const std::string& out, const ConvertOptions& opts) {
  return translate_errors([&] {
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<wq::ModelReader> reader = wq::open_model(in);
    // Every file the run reads (a sharded checkpoint's shards, a split GGUF's, the
    // importance matrix), not only IN, is refused as OUT, whatever overwrite says: the
    // program's own checks (io/output_path.h).
    std::vector<std::string> inputs = wq::model_files(in, *reader);
    if (!opts.imatrix.empty()) inputs.push_back(opts.imatrix);
    wq::check_output_path(out, inputs, opts.overwrite, "set overwrite to replace it");
    wq::PlanOptions po;
    po.defaults = spec_of(opts.quant);
    wq::validate_spec(po.defaults, "convert");
    if (opts.format.empty()) po.format = wq::format_from_path(out);
    else if (opts.format == "wq") po.format = wq::OutputFormat::Wq;
    else if (opts.format == "safetensors") po.format = wq::OutputFormat::Safetensors;
    else if (opts.format == "gguf") po.format = wq::OutputFormat::Gguf;
    else throw wq::Error("format '" + opts.format + "' is not wq, safetensors or gguf", wq::ErrorKind::Usage);
    // GGUF output: the mix, hyper-parameters, importance matrix and keys exactly as
    // `wquant quantize` prepares them (io/gguf_output.h).
    wq::GgufOutput gguf;
    if (po.format == wq::OutputFormat::Gguf) {
      gguf = wq::prepare_gguf_output(*reader, in, out, gguf_request(opts, &po.ggml));
      gguf.apply(po);
      po.allow_requantize = opts.allow_requantize;
    } else if (has_gguf_options(opts)) {
      throw wq::Error(out + ": gguf_type, imatrix and llama-quantize's other options apply to GGUF output only",
                      wq::ErrorKind::Usage);
    }
    const std::vector<wq::TensorPlan> plan = wq::make_plan(reader->tensors(), po);
    wq::WriterOptions wo;
    wo.output_path = out;
    wo.gguf_keys = gguf.keys;
    std::unique_ptr<wq::ModelWriter> writer = wq::make_writer(out, po.format, plan, *reader, wo);
    wq::Scheduler sched(wquant::capped_threads(opts.quant.threads));
    wq::PipelineStats st;
    sched.run([&] { st = wq::run_pipeline(plan, reader->tensors(), *reader, *writer, {}); });
    writer->commit();
    ConvertResult r;
    r.tensors = plan.size();
    for (const wq::TensorPlan& p : plan) {
      if (p.action == wq::TensorAction::Quantize || p.action == wq::TensorAction::Ggml) ++r.quantized;
    }
    r.bytes_in = st.bytes_in;
    r.bytes_out = st.bytes_out;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  });
}

}  // namespace wquant
