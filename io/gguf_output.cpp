// io/gguf_output.h: the mix, hyper-parameters, importance matrix and keys of a GGUF output.
#include "io/gguf_output.h"

#include <cctype>
#include <cstring>
#include <map>
#include <regex>

#include "engine/error.h"
#include "io/gguf_format.h"
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
  const GgmlType type = ggml_type_argument(text.substr(eq + 1), option);
  // Checked here, with the command line, not when the mix is chosen after the model is
  // opened (choose_mix_types compiles it again, with the same message).
  try {
    std::regex check(pattern);
  } catch (const std::regex_error& e) {
    throw Error(option + " " + text + ": not a regular expression (" + e.what() + ")", ErrorKind::Usage);
  }
  return {pattern, type};
}

uint32_t gguf_copy_file_type(const ModelReader& source, const std::string& input) {
  const auto* g = dynamic_cast<const GgufReader*>(&source);
  if (g) {
    if (const GgufKV* kv = g->metadata().find("general.file_type")) {
      uint32_t v;
      if (kv->type != uint32_t(GgufValueType::U32) || kv->value.size() != 4)
        throw Error(input + ": metadata general.file_type: not a u32 (llama.cpp reads it as one)");
      std::memcpy(&v, kv->value.data(), 4);
      return v;
    }
  }
  // llama_model_loader's guess (llama-model-loader.cpp): the file type of each ggml type.
  static const std::pair<const char*, uint32_t> kFtypeOf[] = {
      {"F32", 0},      {"F16", 1},       {"BF16", 32},    {"Q4_0", 2},     {"Q4_1", 3},     {"Q5_0", 8},
      {"Q5_1", 9},     {"Q8_0", 7},      {"Q2_K", 10},    {"Q3_K", 12},    {"Q4_K", 15},    {"Q5_K", 17},
      {"Q6_K", 18},    {"TQ1_0", 36},    {"TQ2_0", 37},   {"IQ2_XXS", 19}, {"IQ2_XS", 20},  {"IQ2_S", 28},
      {"IQ3_XXS", 23}, {"IQ1_S", 24},    {"IQ1_M", 31},   {"IQ4_NL", 25},  {"IQ4_XS", 30},  {"IQ3_S", 26},
  };
  constexpr uint32_t kGuessed = 1024;
  const std::vector<TensorInfo>& tensors = source.tensors();
  std::map<std::string, size_t> count;
  size_t best = 0;
  std::string most = "F32";  // (llama's type_max starts at F32)
  for (size_t i : llama_tensor_order(tensors)) {
    const size_t c = ++count[tensors[i].type_name];
    if (c > best) {
      best = c;
      most = tensors[i].type_name;
    }
  }
  for (const auto& [name, ftype] : kFtypeOf) {
    if (most == name) return ftype | kGuessed;
  }
  return 0 | kGuessed;  // llama warns "unknown type" and takes ALL_F32
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
    o.imatrix = read_imatrix(r.imatrix, r.include_weights, r.exclude_weights);
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
  o.keys.file_type = r.mix.only_copy ? gguf_copy_file_type(source, input) : r.mix.llama_ftype;
  o.model = gguf_mix_model(g->metadata(), input);
  return o;
}

}  // namespace wq
