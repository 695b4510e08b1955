// io/gguf_output.h: the mix, hyper-parameters, importance matrix and keys of a GGUF output.
#include "io/gguf_output.h"

#include <cctype>

#include "engine/error.h"
#include "io/gguf_hparams.h"
#include "io/gguf_reader.h"

namespace wq {

GgmlType ggml_type_argument(const std::string& text, const std::string& option) {
  const auto t = ggml_type_named(text);
  if (!t) {
    throw Error(option + ": expected a ggml type wquant writes (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, "
                         "Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS), got '" + text + "'", ErrorKind::Usage);
  }
  return *t;
}

std::pair<std::string, GgmlType> tensor_type_rule(const std::string& text, const std::string& option) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    throw Error(option + ": expected PATTERN=TYPE (e.g. attn_v=q8_0), got '" + text + "'", ErrorKind::Usage);
  }
  std::string pattern = text.substr(0, eq);
  for (char& c : pattern) c = char(std::tolower(static_cast<unsigned char>(c)));
  return {pattern, ggml_type_argument(text.substr(eq + 1), option)};
}

GgufOutput prepare_gguf_output(const ModelReader& source, const std::string& input, const std::string& output,
                               const GgufOutputRequest& r) {
  const auto* g = dynamic_cast<const GgufReader*>(&source);
  if (!g) {
    throw Error(output + ": GGUF output needs a GGUF input (its metadata and vocabulary are copied); " + input +
                    " is " + source.format(),
                ErrorKind::Usage);
  }
  GgufOutput o;
  if (!r.imatrix.empty()) {
    o.imatrix = read_imatrix(r.imatrix);
    filter_imatrix(o.imatrix, r.include_weights, r.exclude_weights);
    o.keys.extra = imatrix_keys(o.imatrix, r.imatrix);
  }
  if (r.mix.llama_ftype == 21 && o.imatrix.entries.empty()) {  // Q2_K_S
    throw Error(std::string(r.mix.name) + " needs an importance matrix (an imatrix file" +
                    (r.imatrix.empty() ? "" : " with entries left after the include / exclude filter") +
                    "); llama-quantize refuses it without one too",
                ErrorKind::Usage);
  }
  o.mix.mix = r.mix;
  o.mix.pure = r.pure;
  o.mix.leave_output = r.leave_output;
  o.mix.output_type = r.output_type;
  o.mix.token_embd_type = r.token_embd_type;
  o.mix.tensor_types = r.tensor_types;
  o.keys.file_type = r.mix.llama_ftype;
  o.model = gguf_mix_model(g->metadata(), input);
  return o;
}

}  // namespace wq
