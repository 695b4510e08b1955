#include "io/quant_record.h"

#include <cstdint>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/tensor.h"

namespace wq {

const char* scheme_name(Scheme s) {
  switch (s) {
    case Scheme::MnnSym: return "mnn_sym";
    case Scheme::MnnAsym: return "mnn_asym";
    case Scheme::Affine: return "affine";
  }
  return "?";
}

std::string quant_record_json(const QuantizedTensor& q) {
  nlohmann::json j;
  j["shape"] = q.shape;
  j["bits"] = q.spec.bits;
  j["block"] = q.block;
  j["scheme"] = scheme_name(q.scheme);
  j["fp16"] = q.spec.fp16;
  j["hqq"] = q.spec.hqq;
  if (q.spec.hqq) {
    j["hqq_steps"] = q.spec.hqq_opts.max_steps;  // the --hqq-steps budget, as the params file names it
    j["hqq_p"] = q.spec.hqq_opts.p;
    j["hqq_beta"] = q.spec.hqq_opts.beta;
    j["hqq_kappa"] = q.spec.hqq_opts.kappa;
    j["hqq_round_zero"] = q.spec.hqq_opts.round_zero;
  }
  j["packed_row_bytes"] = q.packed_row_bytes;
  return j.dump();
}

QuantizedTensor parse_quant_record(const std::string& text, const std::string& name, const std::string& where) {
  const std::string at = where + ": " + name + ": quantization record";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
    // Counts must be JSON integers in range: nlohmann's get<int>() would read 4.7 as 4 and
    // get<size_t>() -32 as 2^64 - 32.
    auto count = [&](const char* key, int64_t lo, int64_t hi) {
      const nlohmann::json& v = j.at(key);
      if (!v.is_number_integer()) throw Error(at + ": " + key + " is " + v.dump() + ", not an integer");
      const int64_t n = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v.get<int64_t>();
      if (n < lo || n > hi) throw Error(at + ": " + key + " " + v.dump() + " outside " + std::to_string(lo) + ".." + std::to_string(hi));
      return n;
    };
    QuantizedTensor q;
    q.name = name;
    const nlohmann::json& shape = j.at("shape");
    if (!shape.is_array()) throw Error(at + ": shape is " + shape.dump() + ", not an array");
    for (const nlohmann::json& d : shape) {
      if (!d.is_number_integer() || (d.is_number_unsigned() && d.get<uint64_t>() > uint64_t(INT64_MAX)))
        throw Error(at + ": shape " + shape.dump() + " holds " + d.dump() + ", not an integer");
      q.shape.push_back(d.get<int64_t>());
    }
    q.spec.bits = int(count("bits", 2, 8));
    q.block = size_t(count("block", 1, INT64_MAX));
    const std::string scheme = j.at("scheme").get<std::string>();
    if (scheme == "mnn_sym") q.scheme = Scheme::MnnSym;
    else if (scheme == "mnn_asym") q.scheme = Scheme::MnnAsym;
    else if (scheme == "affine") q.scheme = Scheme::Affine;
    else throw Error(at + ": unknown scheme " + scheme);
    q.spec.fp16 = j.at("fp16").get<bool>();
    q.spec.hqq = j.at("hqq").get<bool>();
    q.spec.asym = q.scheme != Scheme::MnnSym;
    if (q.spec.hqq) {
      // "hqq_steps_max" in records written before the names were unified.
      const char* steps = j.contains("hqq_steps") ? "hqq_steps" : "hqq_steps_max";
      q.spec.hqq_opts.max_steps = int(count(steps, 0, INT32_MAX));
      q.spec.hqq_opts.p = j.at("hqq_p").get<float>();
      q.spec.hqq_opts.beta = j.at("hqq_beta").get<float>();
      q.spec.hqq_opts.kappa = j.at("hqq_kappa").get<float>();
      q.spec.hqq_opts.round_zero = j.at("hqq_round_zero").get<bool>();
      // Older records carry "solver_steps", always 0 (the header is written before any
      // tensor is solved); the steps a run took are in its summary (--json), not in files.
    }
    q.packed_row_bytes = size_t(count("packed_row_bytes", 0, INT64_MAX));
    checked_numel(at, q.shape);
    q.rows = matrix_dims(q.shape).rows;
    q.cols = matrix_dims(q.shape).cols;
    if (q.block == 0 || q.cols % q.block) throw Error(at + ": block " + std::to_string(q.block) + " does not divide rows of " + std::to_string(q.cols));
    if (q.packed_row_bytes != (q.cols * size_t(q.spec.bits) + 7) / 8)
      throw Error(at + ": packed_row_bytes " + std::to_string(q.packed_row_bytes) + " does not match " + std::to_string(q.cols) + " codes of " + std::to_string(q.spec.bits) + " bits");
    q.spec.block = q.block == q.cols ? 0 : int64_t(q.block);
    return q;
  } catch (const nlohmann::json::exception& e) {
    throw Error(at + ": " + e.what());
  }
}

}  // namespace wq
