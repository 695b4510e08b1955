#include "cli/spec_settings.h"

#include <cctype>

#include "engine/error.h"
#include "kernels/ggml_types.h"

namespace wq::cli {

namespace {

template <typename T>
void take(std::optional<T>& field, const std::optional<T>& fallback) {
  if (!field) field = fallback;
}

Error usage(const std::string& where, const std::string& problem) {
  return Error((where.empty() ? std::string() : where + ": ") + problem, ErrorKind::Usage);
}

}  // namespace

SpecSettings SpecSettings::or_else(const SpecSettings& fallback) const {
  SpecSettings r = *this;
  take(r.bits, fallback.bits);
  if (!r.block) {
    r.block = fallback.block;
    r.mnn_block = fallback.mnn_block;
  }
  take(r.scale_bits, fallback.scale_bits);
  r.mnn_form = r.mnn_form || fallback.mnn_form;
  take(r.asym, fallback.asym);
  take(r.hqq, fallback.hqq);
  take(r.fp16, fallback.fp16);
  if (!r.mix) {  // the type and the mix are one setting
    r.mix = fallback.mix;
    r.ggml = fallback.ggml;
  }
  take(r.hqq_steps, fallback.hqq_steps);
  take(r.hqq_p, fallback.hqq_p);
  take(r.hqq_beta, fallback.hqq_beta);
  take(r.hqq_kappa, fallback.hqq_kappa);
  take(r.hqq_round_zero, fallback.hqq_round_zero);
  take(r.hqq_stop, fallback.hqq_stop);
  return r;
}

EffectiveSpec resolve_settings(const SpecSettings& s, const std::string& where) {
  EffectiveSpec e;
  const int bits = s.bits.value_or(4);
  if (bits != 0 && (bits < 2 || bits > 8)) {
    throw usage(where, "bits must be between 2 and 8 (or 0 to keep every tensor float), got " +
                           std::to_string(bits));
  }
  e.keep_float = bits == 0;
  e.spec.bits = e.keep_float ? 4 : bits;
  const int64_t block = s.block.value_or(-1);
  if (block < -1 || block == 0) {
    // 0 is refused on the command line: it reads like "no blocks" and like "block of 0";
    // -1 (MNNConvert's spelling) says channel-wise without doubt. Files map 0 to -1 first.
    throw usage(where, "block must be a positive number of weights, or -1 for channel-wise, got " +
                           std::to_string(block));
  }
  e.spec.block = block > 0 ? block : 0;
  e.spec.hqq = s.hqq.value_or(false);
  if (e.spec.hqq && s.asym && !*s.asym) {
    throw usage(where, "HQQ is always asymmetric (it fits a zero point per block), but asymmetric was "
                       "turned off; drop one of --hqq and --weightQuantAsymmetric 0");
  }
  e.spec.asym = s.asym.value_or(false) || e.spec.hqq;
  e.asym_implied = e.spec.hqq && !s.asym;
  e.spec.fp16 = s.fp16.value_or(false);
  e.kept_f16 = e.spec.fp16;
  e.spec.mnn_blocks = s.mnn_block && e.spec.block > 0;
  e.spec.mnn_flush = s.mnn_form;
  if (s.scale_bits) {
    // MNNConvert stores scales as f16 for 16 and as f32 otherwise; 8 and 4 are "reserved"
    // there (source/core/IDSTEncoder.hpp EncodeOptions::scaleBit), so refused here.
    if (*s.scale_bits != 32 && *s.scale_bits != 16) {
      throw usage(where, "scale bits must be 32 (f32 scales) or 16 (f16 scales), got " +
                             std::to_string(*s.scale_bits));
    }
    if (*s.scale_bits == 16) {
      e.spec.fp16 = true;
      e.spec.fp16_truncate = true;
    }
  }
  HqqOptions& h = e.spec.hqq_opts;
  if (s.hqq_steps) h.max_steps = *s.hqq_steps;
  if (s.hqq_p) h.p = *s.hqq_p;
  if (s.hqq_beta) h.beta = *s.hqq_beta;
  if (s.hqq_kappa) h.kappa = *s.hqq_kappa;
  if (s.hqq_round_zero) h.round_zero = *s.hqq_round_zero;
  if (s.hqq_stop) h.stop = *s.hqq_stop;
  // validate_spec checks HQQ options only when HQQ is on; a user who set them without
  // --hqq has made a mistake worth reporting rather than ignoring silently.
  const bool hqq_opts_said = s.hqq_steps || s.hqq_p || s.hqq_beta || s.hqq_kappa || s.hqq_round_zero || s.hqq_stop;
  if (hqq_opts_said && !e.spec.hqq) throw usage(where, "HQQ options (--hqq-*) need --hqq");
  validate_spec(e.spec, where);
  e.ggml = s.ggml;
  return e;
}

bool parse_hqq_stop(std::string_view text, HqqStop* out) {
  if (text == "block") *out = HqqStop::Block;
  else if (text == "tensor") *out = HqqStop::Tensor;
  else return false;
  return true;
}

const char* hqq_stop_name(HqqStop s) { return s == HqqStop::Tensor ? "tensor" : "block"; }

bool parse_ggml_type(std::string_view text, GgmlBlock* out) {
  const std::optional<GgmlBlock> t = ggml_block_named(text);
  if (t) *out = *t;
  return t.has_value();
}

int ggml_type_bits(GgmlBlock t) { return ggml_traits(t).bits; }

bool ggml_type_has_min(GgmlBlock t) { return ggml_traits(t).has_min; }

GgmlBlock resolve_ggml_type(const EffectiveSpec& e, const SpecSettings& said, const std::string& where) {
  const QuantSpec& s = e.spec;
  if (said.block && *said.block != 32) {  // every type spec_settings picks from bits has 32
    throw usage(where, "GGUF block types have blocks of 32 weights; --block " + std::to_string(*said.block) +
                           " cannot be stored (use .wq or .safetensors output for other blocks)");
  }
  GgmlBlock t;
  if (e.ggml) {
    t = *e.ggml;
    if (said.bits && *said.bits != 0 && *said.bits != ggml_type_bits(t)) {
      throw usage(where, std::string("--type ") + ggml_block_name(t) + " stores " +
                             std::to_string(ggml_type_bits(t)) + "-bit codes, but bits " +
                             std::to_string(*said.bits) + " was asked for");
    }
  } else {
    const bool with_min = s.asym || s.hqq;
    const std::optional<GgmlBlock> legacy = legacy_block_for_bits(s.bits, with_min);
    if (!legacy && s.bits == 8) throw usage(where, "GGUF has no asymmetric 8-bit type that wquant writes; use Q8_0 (symmetric)");
    if (!legacy) {
      throw usage(where, "GGUF output stores 4, 5 or 8 bits (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0); " + std::to_string(s.bits) +
                             "-bit weights need .wq or .safetensors output");
    }
    t = *legacy;
  }
  if (s.hqq && !ggml_type_has_min(t)) {
    throw usage(where, std::string("HQQ needs a type with a per-block minimum (Q4_1 or Q5_1), not ") +
                           ggml_block_name(t));
  }
  if (said.asym && *said.asym && !ggml_type_has_min(t)) {
    throw usage(where, std::string(ggml_block_name(t)) + " is symmetric; asymmetric needs Q4_1 or Q5_1");
  }
  return t;
}

}  // namespace wq::cli
