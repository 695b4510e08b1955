#include "cli/params_file.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "engine/tensor.h"
#include "io/json_duplicate_keys.h"
#include "io/output_file.h"
#include "engine/gguf_mix.h"
#include "kernels/ggml_types.h"
#include "kernels/ggml_blocks.h"

namespace wq::cli {

using nlohmann::json;

namespace {

// Deeper nesting than this is no params file; refused before parsing, so no recursive
// walk (destruction, dump) of a hostile document can run out of stack.
constexpr int kMaxDepth = 64;

// A value for an error message: scalars as JSON, containers by kind (a dump of a large
// or deeply nested container is no help and may be huge).
std::string brief(const json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Deepest nesting of arrays and objects in JSON text (strings skipped).
int json_depth(const std::string& text) {
  int depth = 0, most = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      most = std::max(most, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return most;
}

size_t row_length(const std::vector<int64_t>& shape) {
  TensorView v;
  v.shape = shape;
  return v.cols();
}

// Reads typed values out of a JSON object, naming "<file>: <where>.<key>" in errors.
class Fields {
 public:
  Fields(const json& obj, std::string file, std::string where)
      : obj_(obj), file_(std::move(file)), where_(std::move(where)) {
    if (!obj_.is_object()) fail("", "expected a JSON object");
  }

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    std::string at = where_;
    if (!key.empty()) at += (at.empty() ? "" : ".") + key;
    throw Error(file_ + ": " + (at.empty() ? "" : at + ": ") + problem, ErrorKind::Usage);
  }

  const json* find(const char* key) const {
    auto it = obj_.find(key);
    return it == obj_.end() ? nullptr : &*it;
  }
  // The first of two spellings present (protobuf JSON accepts lowerCamelCase and the
  // proto's own names).
  const json* find(const char* key, const char* alt) const {
    const json* v = find(key);
    return v ? v : find(alt);
  }

  std::optional<int64_t> integer(const char* key, const json* v = nullptr) const {
    if (!v) v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer()) fail(key, "expected an integer, got " + brief(*v));
    // get<int64_t> would wrap an unsigned value above INT64_MAX to a negative one.
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)) fail(key, v->dump() + " is out of range");
    return v->get<int64_t>();
  }
  std::optional<double> number(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) fail(key, "expected a number, got " + brief(*v));
    const double d = v->get<double>();
    if (!std::isfinite(float(d))) fail(key, v->dump() + " is out of range");
    return d;
  }
  // true/false, or 1/0 as MNN users write them.
  std::optional<bool> boolean(const char* key, const json* v = nullptr) const {
    if (!v) v = find(key);
    if (!v) return std::nullopt;
    if (v->is_boolean()) return v->get<bool>();
    if (v->is_number_integer() && (v->get<int64_t>() == 0 || v->get<int64_t>() == 1)) return v->get<int64_t>() == 1;
    fail(key, "expected true or false, got " + brief(*v));
  }
  std::optional<std::string> string(const char* key, const json* v = nullptr) const {
    if (!v) v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(key, "expected a string, got " + brief(*v));
    return v->get<std::string>();
  }
  // An array of strings.
  std::optional<std::vector<std::string>> strings(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_array()) fail(key, "expected an array of strings, got " + brief(*v));
    std::vector<std::string> out;
    for (const json& e : *v) {
      if (!e.is_string()) fail(key, "expected an array of strings, got an element " + brief(e));
      out.push_back(e.get<std::string>());
    }
    return out;
  }
  std::optional<GgmlBlock> ggml(const char* key) const {
    const std::optional<std::string> s = string(key);
    if (!s) return std::nullopt;
    GgmlBlock t;
    if (!parse_ggml_type(*s, &t)) fail(key, "expected Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0, got \"" + *s + "\"");
    return t;
  }

  void only(std::initializer_list<const char*> allowed) const {
    for (auto it = obj_.begin(); it != obj_.end(); ++it) {
      bool ok = it.key() == "comment";
      for (const char* a : allowed) ok = ok || it.key() == a;
      if (!ok) {
        std::string list;
        for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
        fail(it.key(), "unknown key (expected one of: " + list + ", comment)");
      }
    }
  }

 private:
  const json& obj_;
  std::string file_, where_;
};

int checked_bits(const Fields& f, const char* key, int64_t bits) {
  if (bits != 0 && (bits < 2 || bits > 8)) f.fail(key, "bits must be 0 (keep float) or 2..8, got " + std::to_string(bits));
  return int(bits);
}

int64_t checked_block(const Fields& f, const char* key, int64_t block) {
  if (block < -1) f.fail(key, "block must be positive, or -1 / 0 for channel-wise, got " + std::to_string(block));
  return block;
}

// bits 0 is "keep float" (MNN's meaning). Bits 2..8 need nothing more: a rule that sets
// a field quantizes the 2-D float tensors it matches (make_plan), which also undoes an
// earlier skip, as MNN's per-layer bits override --weightQuantBits 0.
void apply_bits(TensorRule& r, int bits) {
  if (bits == 0) r.skip = true;
  else r.bits = bits;
}

void add_rule(ParamsFile& p, TensorRule rule, const std::string& label) {
  rule.origin = p.path + ": " + label;
  if (p.entries.empty() || p.entries.back() != label) p.entries.push_back(label);
  p.rule_entry.push_back(p.entries.size() - 1);
  p.rules.push_back(std::move(rule));
}

// The importance matrix of a GGUF run (ParamsImatrix): its path as it was given, its
// digest, and the include / exclude lists.
void parse_imatrix_fields(const Fields& f, ParamsImatrix& m) {
  if (auto v = f.string("imatrix")) {
    if (v->empty()) f.fail("imatrix", "expected the importance matrix's path, got \"\"");
    m.path = *v;
  }
  if (auto v = f.string("imatrix_sha256")) {
    const bool hex = v->size() == 64 && v->find_first_not_of("0123456789abcdef") == std::string::npos;
    if (!hex) f.fail("imatrix_sha256", "expected 64 lower-case hex digits, got \"" + *v + "\"");
    if (m.path.empty()) f.fail("imatrix_sha256", "a digest without \"imatrix\", the file it is of");
    m.sha256 = *v;
  }
  for (const char* key : {"include_weights", "exclude_weights"}) {
    if (auto v = f.strings(key)) {
      if (m.path.empty()) f.fail(key, "a filter of the importance matrix without \"imatrix\"");
      (key[0] == 'i' ? m.include : m.exclude) = *v;
    }
  }
}

void parse_wquant_form(const json& doc, ParamsFile& p) {
  const Fields top(doc, p.path, "");
  top.only({"defaults", "rules"});
  if (const json* d = top.find("defaults")) {
    const Fields f(*d, p.path, "defaults");
    f.only({"bits", "block", "asym", "hqq", "fp16", "scale_bits", "type", "hqq_steps", "hqq_p", "hqq_beta",
            "hqq_kappa", "hqq_round_zero", "hqq_stop", "mnn_flush", "imatrix", "imatrix_sha256", "include_weights",
            "exclude_weights"});
    parse_imatrix_fields(f, p.imatrix);
    SpecSettings& s = p.defaults;
    if (auto v = f.integer("bits")) s.bits = checked_bits(f, "bits", *v);
    if (auto v = f.integer("block")) s.block = checked_block(f, "block", *v) == 0 ? -1 : *v;
    s.asym = f.boolean("asym");
    s.hqq = f.boolean("hqq");
    s.fp16 = f.boolean("fp16");
    if (auto v = f.integer("scale_bits")) s.scale_bits = int(*v);  // checked once merged (resolve_settings)
    s.mnn_form = f.boolean("mnn_flush").value_or(false);  // as MNNConvert's spellings do
    if (auto v = f.string("type")) {
      // A llama-quantize mix (Q4_K_M, ...) or a legacy block type, as --type takes it.
      const auto mix = gguf_mix_named(*v);
      if (!mix) f.fail("type", "expected a GGUF type or llama-quantize mix (Q4_0, Q4_K_M, ...), got \"" + *v + "\"");
      s.mix = mix->name;
      GgmlBlock b;
      if (parse_ggml_type(mix->name, &b)) s.ggml = b;
    }
    if (auto v = f.integer("hqq_steps")) {
      if (*v < 0 || *v > 10000) f.fail("hqq_steps", "HQQ steps must be between 0 and 10000, got " + std::to_string(*v));
      s.hqq_steps = int(*v);
    }
    if (auto v = f.number("hqq_p")) s.hqq_p = float(*v);
    if (auto v = f.number("hqq_beta")) s.hqq_beta = float(*v);
    if (auto v = f.number("hqq_kappa")) s.hqq_kappa = float(*v);
    s.hqq_round_zero = f.boolean("hqq_round_zero");
    if (auto v = f.string("hqq_stop")) {
      HqqStop stop;
      if (!parse_hqq_stop(*v, &stop)) f.fail("hqq_stop", "expected \"block\" or \"tensor\", got \"" + *v + "\"");
      s.hqq_stop = stop;
    }
    // The combination (HQQ options without HQQ, ...) is checked once merged with the
    // command line, which may supply the rest.
  }
  if (const json* rules = top.find("rules")) {
    if (!rules->is_array()) top.fail("rules", "expected an array of rules");
    for (size_t i = 0; i < rules->size(); ++i) {
      const std::string where = "rules[" + std::to_string(i) + "]";
      const Fields f((*rules)[i], p.path, where);
      f.only({"match", "bits", "block", "asym", "hqq", "skip", "type"});
      TensorRule r;
      const std::optional<std::string> match = f.string("match");
      if (!match || match->empty()) f.fail("match", "every rule needs a non-empty \"match\" (a tensor name or glob)");
      r.pattern = *match;
      r.skip = f.boolean("skip");
      if (auto v = f.integer("bits")) apply_bits(r, checked_bits(f, "bits", *v));
      if (auto v = f.integer("block")) r.block = checked_block(f, "block", *v);
      r.asym = f.boolean("asym");
      r.hqq = f.boolean("hqq");
      if (auto v = f.string("type")) {
        // Any type GGUF output holds (Q4_K, F16, ...); a legacy block type also meets the
        // bits / HQQ checks.
        const auto t = ggml_type_named(*v);
        if (!t) f.fail("type", "expected a ggml type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, "
                               "IQ4_XS, F16, BF16, F32), got \"" + *v + "\"");
        r.gguf_type = t;
        GgmlBlock b;
        if (parse_ggml_type(*v, &b)) r.ggml = b;
      }
      if (r.hqq && *r.hqq && r.asym && !*r.asym) {
        f.fail("asym", "HQQ is always asymmetric; this rule sets \"hqq\": true and \"asym\": false");
      }
      add_rule(p, std::move(r), where + " \"" + *match + "\"");
    }
  }
}

bool is_quantize_algo(const Fields& f) {
  const json* t = f.find("type");
  if (!t) return true;  // proto2 default: QUANTIZE
  if (t->is_string()) return t->get<std::string>() == "QUANTIZE";
  if (t->is_number_integer()) return t->get<int64_t>() == 0;
  f.fail("type", "expected \"QUANTIZE\" or \"PRUNE\", got " + brief(*t));
}

void parse_mnn_form(const json& doc, ParamsFile& p) {
  p.form = ParamsFile::Form::Mnn;
  const Fields top(doc, p.path, "");
  const json& algos = doc.at("algo");
  if (!algos.is_array()) top.fail("algo", "expected an array (MNN compression pipeline)");
  for (size_t a = 0; a < algos.size(); ++a) {
    const std::string algo_where = "algo[" + std::to_string(a) + "]";
    const Fields algo(algos[a], p.path, algo_where);
    if (!is_quantize_algo(algo)) continue;
    const json* qp = algo.find("quantParams", "quant_params");
    if (!qp) continue;
    const Fields quant(*qp, p.path, algo_where + ".quantParams");
    const json* layers = quant.find("layer");
    if (!layers) continue;
    if (!layers->is_array()) quant.fail("layer", "expected an array of layers");
    for (size_t l = 0; l < layers->size(); ++l) {
      const std::string where = algo_where + ".quantParams.layer[" + std::to_string(l) + "]";
      const Fields layer((*layers)[l], p.path, where);
      const std::optional<std::string> op = layer.string("opName", layer.find("opName", "op_name"));
      const json* weights = layer.find("weight");
      // MNNConvert skips layers without an op name or weight parameters; so does wquant.
      if (!op || op->empty() || !weights) continue;
      if (!weights->is_array()) layer.fail("weight", "expected an array");
      if (weights->empty()) continue;
      const Fields w((*weights)[0], p.path, where + ".weight[0]");
      TensorRule r;
      if (auto v = w.integer("bits")) apply_bits(r, checked_bits(w, "bits", *v));
      r.asym = w.boolean("asymmetric");
      if (auto v = w.integer("blockSize", w.find("blockSize", "block_size"))) {
        r.block = checked_block(w, "blockSize", *v) <= 0 ? -1 : *v;
        r.mnn_block = true;  // MNNConvert reads it with --weightQuantBlock's rule
      }
      const std::string label = where + " \"" + *op + "\"";
      r.pattern = escape_glob(*op);
      add_rule(p, r, label);
      r.pattern = escape_glob(*op + ".weight");
      add_rule(p, r, label);
    }
  }
}

}  // namespace

std::string escape_glob(const std::string& name) {
  std::string r;
  for (char c : name) {
    if (c == '*' || c == '?' || c == '[') {
      r += '[';
      r += c;
      r += ']';
    } else {
      r += c;
    }
  }
  return r;
}

ParamsFile parse_params_json(const json& doc, const std::string& path) {
  ParamsFile p;
  p.path = path;
  if (!doc.is_object()) throw Error(path + ": expected a JSON object (wquant's or MNN's params form)", ErrorKind::Usage);
  if (doc.contains("algo")) parse_mnn_form(doc, p);
  else parse_wquant_form(doc, p);
  return p;
}

ParamsFile read_params_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw Error(path + ": is a directory, not a params file", ErrorKind::Usage);
  }
  // Read up to a bound: a device or FIFO that never ends (/dev/zero) is no params file,
  // and must not take the machine's memory first. (A written file of one rule per tensor
  // of a model of 100 000 tensors is about 10 MB.)
  constexpr size_t kMaxBytes = size_t(64) << 20;
  const auto unreadable = [&] {
    return Error(path + ": cannot read the params file: " + std::strerror(errno ? errno : EIO), ErrorKind::Input);
  };
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw unreadable();
  std::string text;
  std::vector<char> chunk(size_t(1) << 16);
  while (in.read(chunk.data(), std::streamsize(chunk.size())) || in.gcount() > 0) {
    text.append(chunk.data(), size_t(in.gcount()));
    if (text.size() > kMaxBytes) {
      throw Error(path + ": longer than " + std::to_string(kMaxBytes >> 20) + " MiB: not a params file", ErrorKind::Usage);
    }
  }
  if (in.bad()) throw unreadable();
  if (json_depth(text) > kMaxDepth) {
    throw Error(path + ": nested more than " + std::to_string(kMaxDepth) + " levels deep: not a params file",
                ErrorKind::Usage);
  }
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e400
    throw Error(path + ": not valid JSON: " + e.what(), ErrorKind::Usage);
  }
  // A setting given twice in one object ({"bits": 8, "bits": 2}) would be read as its
  // last value without a word.
  if (const DuplicateJsonKey dup = duplicate_json_key(text.data(), text.data() + text.size()); !dup.key.empty()) {
    throw Error(path + ": " + dup.key + " appears twice in one object", ErrorKind::Usage);
  }
  return parse_params_json(doc, path);
}

std::vector<std::string> unmatched_entries(const ParamsFile& p, const std::vector<std::string>& names) {
  std::vector<bool> matched(p.entries.size(), false);
  for (size_t i = 0; i < p.rules.size(); ++i) {
    if (matched[p.rule_entry[i]]) continue;
    for (const std::string& n : names) {
      if (glob_match(p.rules[i].pattern, n)) {
        matched[p.rule_entry[i]] = true;
        break;
      }
    }
  }
  std::vector<std::string> r;
  for (size_t e = 0; e < p.entries.size(); ++e) {
    if (!matched[e]) r.push_back(p.entries[e]);
  }
  return r;
}

json params_used(const EffectiveSpec& e, OutputFormat format, const std::string& gguf_mix, const ParamsImatrix& imatrix,
                 const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos) {
  const QuantSpec& s = e.spec;
  json defaults = json::object();
  if (format == OutputFormat::Gguf) {
    // The mix decides each tensor's type (the rules below say which): wquant's bits and
    // block have nothing to set there, and a rerun refuses them beside a mix.
    defaults["type"] = gguf_mix;
    if (s.hqq) defaults["hqq"] = true;
  } else {
    defaults["bits"] = e.keep_float ? 0 : s.bits;
    defaults["block"] = s.block > 0 ? s.block : int64_t(-1);
    defaults["asym"] = s.asym;
    defaults["hqq"] = s.hqq;
    defaults["fp16"] = e.kept_f16;  // --fp16 (scales f16 for scale_bits 16 alone do not count)
    if (s.fp16_truncate) defaults["scale_bits"] = 16;  // --weightQuantScaleBit 16
    // MNNConvert's spellings flush |w| < FLT_MIN to +0 first, as MNNConvert does: the
    // same bytes again need it said.
    if (s.mnn_flush) defaults["mnn_flush"] = true;
  }
  if (s.hqq) {
    defaults["hqq_steps"] = s.hqq_opts.max_steps;
    defaults["hqq_p"] = s.hqq_opts.p;
    defaults["hqq_beta"] = s.hqq_opts.beta;
    defaults["hqq_kappa"] = s.hqq_opts.kappa;
    defaults["hqq_round_zero"] = s.hqq_opts.round_zero;
    defaults["hqq_stop"] = hqq_stop_name(s.hqq_opts.stop);
  }
  if (format == OutputFormat::Gguf && !imatrix.path.empty()) {
    defaults["imatrix"] = imatrix.path;
    defaults["imatrix_sha256"] = imatrix.sha256;
    if (!imatrix.include.empty()) defaults["include_weights"] = imatrix.include;
    if (!imatrix.exclude.empty()) defaults["exclude_weights"] = imatrix.exclude;
  }
  json rules = json::array();
  for (const TensorPlan& t : plan) {
    json r = json::object();
    r["match"] = escape_glob(t.name);
    switch (t.action) {
      case TensorAction::Quantize:
        r["bits"] = t.spec.bits;
        // The effective block (-1: one block a row, asked for or fallen back to).
        r["block"] = t.block == row_length(t.shape) ? int64_t(-1) : int64_t(t.block);
        r["asym"] = t.spec.asym;
        r["hqq"] = t.spec.hqq;
        break;
      case TensorAction::Ggml:
        r["type"] = ggml_block_name(t.ggml);
        r["hqq"] = t.spec.hqq;
        break;
      case TensorAction::KeepFloat:
        if (format == OutputFormat::Gguf) {
          // A float type the mix (or a rule) chose for a tensor llama-quantize converts.
          if (!llama_quantizes(infos[t.source_index], false)) continue;
          if (t.out_dtype == infos[t.source_index].dtype) r["skip"] = true;
          else r["type"] = t.out_dtype == DType::F16 ? "F16" : t.out_dtype == DType::BF16 ? "BF16" : "F32";
          break;
        }
        // Kept by the default choice (1-D, norms) or by bits 0 in the defaults: nothing to say.
        if (e.keep_float || !is_quantizable_weight(infos[t.source_index])) continue;
        r["skip"] = true;
        break;
      case TensorAction::CopyRaw:
        continue;
    }
    rules.push_back(std::move(r));
  }
  json doc = json::object();
  doc["comment"] = "wquant parameters: edit and rerun with --params (see 'wquant help quantize')";
  doc["defaults"] = std::move(defaults);
  doc["rules"] = std::move(rules);
  return doc;
}

void write_json_file(OutputFile& out, const json& doc) {
  // Through OutputFile like every output: a temporary beside it, fsync, and a rename that
  // never replaces a file that appeared during the run.
  const std::string text = doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  out.write(text.data(), text.size());
  out.commit_removable();
}

}  // namespace wq::cli
