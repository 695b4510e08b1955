// What a GGUF output needs besides the default spec, decided before any tensor data is
// read, for `wquant quantize` (cli/cmd_quantize.cpp) and the public API's convert()
// alike: llama-quantize's mix and options, the model's hyper-parameters from the source's
// metadata, the importance matrix, and the keys llama-quantize adds (general.file_type,
// quantize.imatrix.*). Both callers go through here, so the same request gives the same
// file.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/gguf_mix.h"
#include "engine/plan.h"
#include "io/gguf_writer_keys.h"
#include "io/imatrix.h"
#include "io/model_reader.h"

namespace wq {

// llama-quantize's choices for one run: the mix (engine/gguf_mix.h gguf_mix_named) and its
// options by the names llama-quantize gives them.
struct GgufOutputRequest {
  GgufMix mix{};
  std::string imatrix;                       // --imatrix FILE; "" = none
  std::vector<std::string> include_weights;  // --include-weights
  std::vector<std::string> exclude_weights;  // --exclude-weights
  bool pure = false;                         // --pure
  bool leave_output = false;                 // --leave-output-tensor
  std::optional<GgmlType> output_type;       // --output-tensor-type
  std::optional<GgmlType> token_embd_type;   // --token-embedding-type
  std::vector<std::pair<std::string, GgmlType>> tensor_types;  // --tensor-type PATTERN=TYPE
};

struct GgufOutput {
  MixOptions mix;
  MixModel model;
  Imatrix imatrix;  // after include_weights / exclude_weights
  GgufOutputKeys keys;
  // Points the plan's GGUF fields at this (which must outlive their use).
  void apply(PlanOptions& po) const {
    po.gguf_mix = &mix;
    po.gguf_model = &model;
    po.imatrix = &imatrix.entries;
  }
};

// A ggml type wquant writes, by llama-quantize's name (any case), for the option named
// `option` (--output-tensor-type, token_embedding_type, ...). Throws Error (Usage).
GgmlType ggml_type_argument(const std::string& text, const std::string& option);

// llama-quantize's --tensor-type PATTERN=TYPE (its parse_tensor_type): the pattern
// lower-cased, the type by name. Throws Error (Usage) naming `option`.
std::pair<std::string, GgmlType> tensor_type_rule(const std::string& text, const std::string& option);

// general.file_type of a COPY output: llama_model_loader's ftype of the input, as
// llama-quantize's only_copy writes it: the input's general.file_type, else the type most
// of its tensors have (the first to reach that count in llama's tensor order), as a file
// type, plus LLAMA_FTYPE_GUESSED (1024). Throws Error naming `input` if the key is not a u32.
uint32_t gguf_copy_file_type(const ModelReader& source, const std::string& input);

// Checks that `source` (read from `input`) is GGUF, which a GGUF output needs (its keys
// and vocabulary are copied), reads and filters the importance matrix, and refuses what
// llama-quantize refuses up front (Q2_K_S without an importance matrix). Throws Error
// naming `output`, `input` or the imatrix file.
GgufOutput prepare_gguf_output(const ModelReader& source, const std::string& input, const std::string& output,
                               const GgufOutputRequest& r);

}  // namespace wq
