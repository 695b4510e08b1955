#include "engine/gguf_mix.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <regex>

#include "engine/error.h"
#include "engine/tensor.h"

namespace wq {
namespace {

// llama.h LLAMA_FTYPE_MOSTLY_* of the mixes wquant writes.
enum Ftype : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 7, kQ5_0 = 8, kQ5_1 = 9, kQ2_K = 10, kQ3_K_S = 11, kQ3_K_M = 12,
  kQ3_K_L = 13, kQ4_K_S = 14, kQ4_K_M = 15, kQ5_K_S = 16, kQ5_K_M = 17, kQ6_K = 18, kQ2_K_S = 21,
  kIQ4_NL = 25, kIQ4_XS = 30, kBF16 = 32,
};

struct TypeFacts {
  GgmlType type;
  const char* name;
  int64_t block;
};

constexpr TypeFacts kTypes[] = {
    {GgmlType::F32, "F32", 1},      {GgmlType::F16, "F16", 1},       {GgmlType::Q4_0, "Q4_0", 32},
    {GgmlType::Q4_1, "Q4_1", 32},   {GgmlType::Q5_0, "Q5_0", 32},    {GgmlType::Q5_1, "Q5_1", 32},
    {GgmlType::Q8_0, "Q8_0", 32},   {GgmlType::Q2_K, "Q2_K", 256},   {GgmlType::Q3_K, "Q3_K", 256},
    {GgmlType::Q4_K, "Q4_K", 256},  {GgmlType::Q5_K, "Q5_K", 256},   {GgmlType::Q6_K, "Q6_K", 256},
    {GgmlType::IQ4_NL, "IQ4_NL", 32}, {GgmlType::IQ4_XS, "IQ4_XS", 256}, {GgmlType::BF16, "BF16", 1},
};

const TypeFacts& facts(GgmlType t) {
  for (const TypeFacts& f : kTypes) {
    if (f.type == t) return f;
  }
  throw Error("ggml type " + std::to_string(uint32_t(t)) + " is not one wquant writes", ErrorKind::Internal);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// sscanf(name, "blk.%d.", &layer) == 1, as llama.cpp parses it: "blk." then an int (after
// optional spaces and a sign); what follows the digits does not matter.
bool layer_of(const std::string& name, int* layer) {
  if (name.compare(0, 4, "blk.") != 0) return false;
  size_t i = 4;
  while (i < name.size() && std::isspace(static_cast<unsigned char>(name[i]))) ++i;
  bool neg = false;
  if (i < name.size() && (name[i] == '+' || name[i] == '-')) neg = name[i++] == '-';
  const size_t start = i;
  long long v = 0;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && v < (1ll << 40)) v = v * 10 + (name[i++] - '0');
  if (i == start) return false;
  *layer = int(neg ? -v : v);
  return true;
}

// ggml's ne[0]: the innermost dimension, along which blocks run.
int64_t ne0(const TensorInfo& t) { return t.shape.empty() ? 1 : t.shape.back(); }

// ggml_n_dims: dimensions after dropping the outer ones of size 1 (at least 1).
size_t n_dims(const TensorInfo& t) {
  size_t n = t.shape.size();
  size_t lead = 0;
  while (lead + 1 < n && t.shape[lead] == 1) ++lead;
  return std::max<size_t>(1, n - lead);
}

// quantize_state_impl: the counters llama_tensor_get_type keeps across tensors.
struct MixState {
  int n_attention_wv = 0, n_ffn_down = 0, n_ffn_gate = 0, n_ffn_up = 0;
  int i_attention_wv = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;
  bool has_output = false;
};

bool use_more_bits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

MixChoice fitted_choice(const TensorInfo& t, GgmlType new_type);

// llama_tensor_get_type for the mixes of gguf_mixes() (the branches for the IQ1/IQ2/IQ3
// and TQ file types cannot apply to them and are left out).
MixChoice tensor_type(MixState& qs, GgmlType new_type, const TensorInfo& t, uint32_t ftype, const MixModel& m,
                      const MixOptions& o) {
  using T = GgmlType;
  const std::string& name = t.name;
  const bool falcon = m.arch == "falcon";
  const int n_expert = std::max(1, int(m.n_expert));
  auto layer_info = [&](int i_layer, int n_layer) {
    if (n_expert > 1) {
      // Experts are not consecutive in every model: the layer comes from the name.
      if (!layer_of(name, &i_layer)) throw Error(name + ": failed to determine the layer of this expert tensor");
      if (i_layer < 0 || i_layer >= n_layer) {
        throw Error(name + ": bad layer " + std::to_string(i_layer) + ", must be in [0, " + std::to_string(n_layer) + ")");
      }
    }
    return std::make_pair(i_layer, n_layer);
  };

  if (name == "output.weight" || (!qs.has_output && name == "token_embd.weight")) {
    // A shared token embedding / output matrix gets the output's type.
    if (o.output_type) {
      new_type = *o.output_type;
    } else if (falcon || rows_misfit(t, new_type)) {
      new_type = T::Q8_0;
    } else if (new_type != T::Q8_0) {
      new_type = T::Q6_K;
    }
  } else if (name == "token_embd.weight") {
    if (o.token_embd_type) new_type = *o.token_embd_type;
  } else if (contains(name, "attn_v.weight")) {
    if (ftype == kQ2_K) {
      new_type = m.n_gqa() >= 4 ? T::Q4_K : T::Q3_K;
    } else if (ftype == kQ2_K_S && m.n_gqa() >= 4) {
      new_type = T::Q4_K;
    } else if (ftype == kQ3_K_M) {
      new_type = qs.i_attention_wv < 2 ? T::Q5_K : T::Q4_K;
    } else if (ftype == kQ3_K_L) {
      new_type = T::Q5_K;
    } else if ((ftype == kIQ4_NL || ftype == kIQ4_XS) && m.n_gqa() >= 4) {
      new_type = T::Q5_K;
    } else if ((ftype == kQ4_K_M || ftype == kQ5_K_M) && use_more_bits(qs.i_attention_wv, qs.n_attention_wv)) {
      new_type = T::Q6_K;
    } else if (ftype == kQ4_K_S && qs.i_attention_wv < 4) {
      new_type = T::Q5_K;
    }
    // 70B: 8 heads share attn_v, 8x smaller than attn_q: more bits cost little.
    if (m.is_70b && (new_type == T::Q3_K || new_type == T::Q4_K)) new_type = T::Q5_K;
    if (m.n_expert == 8) new_type = T::Q8_0;
    ++qs.i_attention_wv;
  } else if (contains(name, "attn_k.weight")) {
    if (m.n_expert == 8) new_type = T::Q8_0;
  } else if (contains(name, "attn_q.weight")) {
    // only the IQ3 file types change attn_q
  } else if (contains(name, "ffn_down")) {
    const auto [i_layer, n_layer] = layer_info(qs.i_ffn_down, qs.n_ffn_down);
    if (ftype == kQ2_K) {
      new_type = T::Q3_K;
    } else if (ftype == kQ2_K_S) {
      if (i_layer < n_layer / 8) new_type = T::Q4_K;
    } else if (ftype == kQ3_K_M) {
      new_type = i_layer < n_layer / 16                    ? T::Q5_K
                 : !falcon || use_more_bits(i_layer, n_layer) ? T::Q4_K
                                                              : T::Q3_K;
    } else if (ftype == kQ3_K_L) {
      new_type = falcon ? T::Q4_K : T::Q5_K;
    } else if (ftype == kQ4_K_M) {
      if (falcon) {
        new_type = i_layer < n_layer / 16 ? T::Q6_K : use_more_bits(i_layer, n_layer) ? T::Q5_K : T::Q4_K;
      } else if (use_more_bits(i_layer, n_layer)) {
        new_type = T::Q6_K;
      }
    } else if (i_layer < n_layer / 8 && (ftype == kIQ4_NL || ftype == kIQ4_XS) && !o.has_imatrix) {
      new_type = T::Q5_K;
    } else if (ftype == kQ5_K_M && use_more_bits(i_layer, n_layer)) {
      new_type = T::Q6_K;
    } else if (ftype == kQ4_K_S && !falcon && i_layer < n_layer / 8) {
      new_type = T::Q5_K;
    } else if ((ftype == kQ4_0 || ftype == kQ5_0) && o.has_imatrix && i_layer < n_layer / 8) {
      // llama.cpp guards the first ffn_down layers of Q4_0 / Q5_0, only with an imatrix
      // (so that a run without one stays what it always was).
      new_type = ftype == kQ4_0 ? T::Q4_1 : T::Q5_1;
    }
    ++qs.i_ffn_down;
  } else if (contains(name, "attn_output.weight")) {
    if (!falcon) {
      if (m.n_expert == 8) {
        if (ftype == kQ2_K || ftype == kQ3_K_S || ftype == kQ3_K_M || ftype == kIQ4_NL || ftype == kQ4_K_S ||
            ftype == kQ4_K_M || ftype == kIQ4_XS)
          new_type = T::Q5_K;
      } else {
        if (ftype == kQ2_K) new_type = T::Q3_K;
        else if (ftype == kQ3_K_M) new_type = T::Q4_K;
        else if (ftype == kQ3_K_L) new_type = T::Q5_K;
      }
    } else if (ftype == kQ3_K_L) {
      new_type = T::Q4_K;
    }
  } else if (contains(name, "attn_qkv.weight")) {
    if (ftype == kQ3_K_M || ftype == kQ3_K_L) new_type = T::Q4_K;
    else if (ftype == kQ4_K_M) new_type = T::Q5_K;
    else if (ftype == kQ5_K_M) new_type = T::Q6_K;
  } else if (contains(name, "ffn_gate")) {
    layer_info(qs.i_ffn_gate, qs.n_ffn_gate);  // checks an expert tensor's layer as llama.cpp does
    ++qs.i_ffn_gate;
  } else if (contains(name, "ffn_up")) {
    layer_info(qs.i_ffn_up, qs.n_ffn_up);
    ++qs.i_ffn_up;
  }

  return fitted_choice(t, new_type);
}

// The choice of `new_type` for t, or where t's rows fit no block of it llama.cpp's
// fallback type (or, where it has none, a note that llama-quantize aborts).
MixChoice fitted_choice(const TensorInfo& t, GgmlType new_type) {
  using T = GgmlType;
  MixChoice c;
  c.quantize = true;
  c.type = new_type;
  if (rows_misfit(t, new_type)) {
    // The row fits no block of the chosen type: llama.cpp's fallback table.
    const T chosen = new_type;
    switch (new_type) {
      case T::Q2_K: case T::Q3_K: case T::IQ4_XS: new_type = T::IQ4_NL; break;
      case T::Q4_K: new_type = T::Q5_0; break;
      case T::Q5_K: new_type = T::Q5_1; break;
      case T::Q6_K: new_type = T::Q8_0; break;
      default:
        c.unsupported = true;
        c.note = rows_misfit_note(t, chosen) +
                 " (llama-quantize aborts the whole model here: \"Unsupported tensor size encountered\")";
        return c;
    }
    if (rows_misfit(t, new_type)) new_type = T::F16;
    c.type = new_type;
    c.fallback = true;
    c.note = rows_misfit_note(t, chosen) + ": " + facts(new_type).name + " instead, as llama-quantize falls back";
  }
  return c;
}

}  // namespace

const char* ggml_type_name(GgmlType t) { return facts(t).name; }
int64_t ggml_type_block(GgmlType t) { return facts(t).block; }

bool rows_misfit(const TensorInfo& t, GgmlType type) { return ne0(t) % facts(type).block != 0; }

std::string rows_misfit_note(const TensorInfo& t, GgmlType type) {
  return t.name + ": rows of " + std::to_string(ne0(t)) + " are not a multiple of " + std::to_string(facts(type).block) +
         ", required by " + facts(type).name;
}

std::optional<GgmlType> ggml_type_named(std::string_view name) {
  for (const TypeFacts& f : kTypes) {
    if (iequals(name, f.name)) return f.type;
  }
  return std::nullopt;
}

const std::vector<GgufMix>& gguf_mixes() {
  static const std::vector<GgufMix> mixes = {
      {"Q4_0", kQ4_0, GgmlType::Q4_0},       {"Q4_1", kQ4_1, GgmlType::Q4_1},
      {"Q5_0", kQ5_0, GgmlType::Q5_0},       {"Q5_1", kQ5_1, GgmlType::Q5_1},
      {"Q2_K", kQ2_K, GgmlType::Q2_K},       {"Q2_K_S", kQ2_K_S, GgmlType::Q2_K},
      {"Q3_K_S", kQ3_K_S, GgmlType::Q3_K},   {"Q3_K_M", kQ3_K_M, GgmlType::Q3_K},
      {"Q3_K_L", kQ3_K_L, GgmlType::Q3_K},   {"IQ4_NL", kIQ4_NL, GgmlType::IQ4_NL},
      {"IQ4_XS", kIQ4_XS, GgmlType::IQ4_XS}, {"Q4_K_S", kQ4_K_S, GgmlType::Q4_K},
      {"Q4_K_M", kQ4_K_M, GgmlType::Q4_K},   {"Q5_K_S", kQ5_K_S, GgmlType::Q5_K},
      {"Q5_K_M", kQ5_K_M, GgmlType::Q5_K},   {"Q6_K", kQ6_K, GgmlType::Q6_K},
      {"Q8_0", kQ8_0, GgmlType::Q8_0},       {"F16", kF16, GgmlType::F16},
      {"BF16", kBF16, GgmlType::BF16},       {"F32", kF32, GgmlType::F32},
      {"COPY", kF32, GgmlType::F32, true},
  };
  return mixes;
}

const std::vector<GgufMixAlias>& gguf_mix_aliases() {
  static const std::vector<GgufMixAlias> aliases = {{"Q3_K", "Q3_K_M"}, {"Q4_K", "Q4_K_M"}, {"Q5_K", "Q5_K_M"}};
  return aliases;
}

std::optional<GgufMix> gguf_mix_named(std::string_view name) {
  for (const auto& [alias, target] : gguf_mix_aliases()) {
    if (iequals(name, alias)) name = target;
  }
  for (const GgufMix& m : gguf_mixes()) {
    if (iequals(name, m.name)) return m;
  }
  if (!name.empty() && name.size() < 4 && std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    const uint32_t ftype = uint32_t(std::stoul(std::string(name)));
    for (const GgufMix& m : gguf_mixes()) {
      if (m.llama_ftype == ftype) return m;
    }
  }
  return std::nullopt;
}

MixModel mix_model_from_names(const std::vector<TensorInfo>& tensors) {
  MixModel m;
  for (const TensorInfo& t : tensors) {
    int layer;
    if (layer_of(t.name, &layer) && layer >= m.n_layer) m.n_layer = layer + 1;
    if (contains(t.name, "attn_v.weight") || contains(t.name, "attn_qkv.weight") || contains(t.name, "attn_kv_b.weight")) {
      ++m.n_attn_layer;
    }
    if (m.n_expert == 0 && contains(t.name, "ffn_gate_inp.weight") && t.shape.size() == 2) m.n_expert = uint32_t(t.shape[0]);
  }
  return m;
}

std::vector<size_t> llama_tensor_order(const std::vector<TensorInfo>& tensors) {
  std::vector<size_t> order(tensors.size());
  std::vector<int> layer(tensors.size(), -1);
  for (size_t i = 0; i < tensors.size(); ++i) {
    order[i] = i;
    if (!layer_of(tensors[i].name, &layer[i])) layer[i] = -1;
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (layer[a] != layer[b]) return layer[a] < layer[b];
    return tensors[a].name < tensors[b].name;
  });
  return order;
}

bool llama_quantizes(const TensorInfo& t, bool leave_output) {
  const std::string& n = t.name;
  // llama.cpp's test, name.rfind("weight") == name.size() - 6, also holds for every
  // 5-character name: size() - 6 wraps to npos, which rfind returns when it finds none.
  const bool weight = n.size() == 5 || (n.size() >= 6 && n.compare(n.size() - 6, 6, "weight") == 0);
  if (!weight) return false;
  if (n_dims(t) < 2) return false;
  if (leave_output && n == "output.weight") return false;
  if (n == "position_embd.weight" || n == "token_types.weight") return false;
  static const char* const kKept[] = {
      "_norm.weight",          "ffn_gate_inp.weight",      "ssm_conv1d.weight",        "time_mix_first.weight",
      "time_mix_w1.weight",    "time_mix_w2.weight",       "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
      "time_mix_lerp_fused.weight", "attn_rel_b.weight",
  };
  for (const char* k : kKept) {
    if (contains(n, k)) return false;
  }
  return true;
}

std::vector<MixChoice> choose_mix_types(const std::vector<TensorInfo>& tensors, const MixModel& model,
                                        const MixOptions& opts) {
  MixState qs;
  for (const TensorInfo& t : tensors) {
    if (contains(t.name, "attn_v.weight") || contains(t.name, "attn_qkv.weight") || contains(t.name, "attn_kv_b.weight")) {
      ++qs.n_attention_wv;
    } else if (t.name == "output.weight") {
      qs.has_output = true;
    }
  }
  qs.n_ffn_down = qs.n_ffn_gate = qs.n_ffn_up = model.n_layer;
  if (qs.n_attention_wv != 0 && qs.n_attention_wv != model.n_attn_layer) {
    throw Error("the model has " + std::to_string(qs.n_attention_wv) + " attention value tensors (attn_v, attn_qkv, "
                "attn_kv_b) for " + std::to_string(model.n_attn_layer) +
                " attention layers: llama-quantize refuses such a model (\"n_attention_wv is unexpected\")");
  }
  const bool quantized_base = !ggml_type_is_float(opts.mix.base);
  std::vector<std::pair<std::regex, GgmlType>> overrides;
  for (const auto& [pattern, type] : opts.tensor_types) {
    try {
      overrides.emplace_back(std::regex(pattern), type);
    } catch (const std::regex_error& e) {
      throw Error("--tensor-type " + pattern + "=" + ggml_type_name(type) + ": not a regular expression (" + e.what() + ")",
                  ErrorKind::Usage);
    }
  }
  std::vector<MixChoice> out;
  out.reserve(tensors.size());
  for (const TensorInfo& t : tensors) {
    MixChoice c;
    if (!opts.mix.only_copy && t.kind != StoredKind::Other && llama_quantizes(t, opts.leave_output)) {
      if (!opts.pure && quantized_base) {
        c = tensor_type(qs, opts.mix.base, t, opts.mix.llama_ftype, model, opts);
        // The first pattern that matches decides, even where it asks for the type the mix
        // chose (a later, wider pattern must not then change it).
        for (const auto& [re, type] : overrides) {
          if (!std::regex_search(t.name, re)) continue;
          c.fallback = false;  // the user's type now, even where the mix fell back to it
          if (type != c.type) {
            c.type = type;
            c.unsupported = rows_misfit(t, type);
            c.note = c.unsupported ? rows_misfit_note(t, type) + " (--tensor-type)" : "";
          }
          break;
        }
      } else {
        c.quantize = true;
        c.type = opts.mix.base;
      }
      // --pure asks for the base type everywhere; where its blocks do not fit the rows,
      // llama-quantize fails on the model (unless an explicit type below replaces it).
      c.pure_misfit = opts.pure && quantized_base && rows_misfit(t, opts.mix.base);
      // The explicit types win over the mix and --tensor-type (applied last, as
      // llama-quantize applies them) without its fallback table: where the rows do not
      // fit, llama-quantize fails, and wquant keeps the tensor float, as for --tensor-type.
      auto explicit_type = [&](GgmlType type, const char* option) {
        MixChoice e;
        e.quantize = true;
        e.type = type;
        e.unsupported = rows_misfit(t, type);
        if (e.unsupported) e.note = rows_misfit_note(t, type) + " (" + option + "; llama-quantize fails on it)";
        return e;
      };
      if (opts.token_embd_type && t.name == "token_embd.weight") c = explicit_type(*opts.token_embd_type, "--token-embedding-type");
      if (opts.output_type && t.name == "output.weight") c = explicit_type(*opts.output_type, "--output-tensor-type");
      // A tensor already of the chosen type is copied, as llama-quantize copies it.
      if (t.type_name == ggml_type_name(c.type)) c.quantize = false;
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace wq
