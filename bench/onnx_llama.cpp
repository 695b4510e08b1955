// Writes a llama-architecture GGUF (f32/f16/bf16 weights: stories260K-f32.gguf, or the
// synthetic TinyLlama-shaped model of wq_gen_model) as a float ONNX graph that maps
// token ids to logits, the way exporters lay such a model out: embedding Gather,
// RMSNorm, RoPE attention (llama.cpp's adjacent-pair rotation, as in its GGUF weights)
// with a causal mask and grouped KV heads, SwiGLU MLP, and the output projection (Gemm
// with transB over the embedding when the model ties it, else MatMul). Linear weights
// are stored [in, out] for MatMul, as exporters store them.
//
//   wq_gen_onnx [--external-data] [--opset 17|21] IN.gguf OUT.onnx
//
// Input "input_ids" int64 [1, T] (T <= the model's context), output "logits" f32
// [1, T, vocab]. With --external-data (needed past 2 GB) every weight goes to
// OUT.onnx.data, each at a 64-byte-aligned offset. Tensors are read and written one at a
// time, so memory stays near the largest tensor. --opset 21 (IR 10) writes the same graph
// at opset 21, the first with blocked DequantizeLinear (ReduceMean takes its axes as an
// input from 18 on; nothing else the graph uses changed).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "engine/error.h"
#include "engine/stored_tensor.h"
#include "io/gguf_reader.h"

namespace wq {
namespace {

struct LlamaShape {
  int64_t dim = 0, ffn = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, context = 0;
  float eps = 1e-5f, rope_base = 10000.0f;
  bool tied = true;
};

template <typename T>
T gguf_number(const GgufReader& r, const std::string& key, T dflt) {
  const GgufKV* kv = r.metadata().find(key);
  if (!kv) return dflt;
  if (kv->value.size() != sizeof(T)) throw Error(r.path() + ": " + key + ": unexpected value size");
  T v;
  std::memcpy(&v, kv->value.data(), sizeof v);
  return v;
}

class Writer {
 public:
  Writer(GgufReader& src, const std::string& out, bool external, int64_t opset)
      : src_(src), out_(out), external_(external), opset_(opset) {
    if (external_) {
      data_name_ = std::filesystem::path(out).filename().string() + ".data";
      data_.open(out + ".data", std::ios::binary | std::ios::trunc);
      if (!data_) throw Error(out + ".data: cannot create", ErrorKind::Output);
    }
    g_ = model_.mutable_graph();
  }

  void build() {
    read_shape();
    model_.set_ir_version(opset_ >= 21 ? 10 : 8);
    model_.set_producer_name("wq_gen_onnx");
    auto* op = model_.add_opset_import();
    op->set_domain("");
    op->set_version(opset_);
    g_->set_name("llama");
    auto* in = g_->add_input();
    in->set_name("input_ids");
    set_type(in, onnx::TensorProto::INT64, {"1", "T"});
    auto* outv = g_->add_output();
    outv->set_name("logits");
    set_type(outv, onnx::TensorProto::FLOAT, {"1", "T", std::to_string(s_.vocab)});
    constants();
    weight("token_embd.weight", false);
    node("Gather", {"token_embd.weight", "input_ids"}, {"x0"});
    std::string x = "x0";
    for (int64_t l = 0; l < s_.layers; ++l) x = layer(l, x);
    weight("output_norm.weight", false);
    const std::string h = rms_norm(x, "output_norm.weight", "final");
    node("Reshape", {h, "shape_T_dim"}, {"final_2d"});
    if (s_.tied) {
      node("Gemm", {"final_2d", "token_embd.weight"}, {"logits_2d"}, {{"transB", 1}});
    } else {
      weight("output.weight", true);
      node("MatMul", {"final_2d", "output.weight"}, {"logits_2d"});
    }
    node("Reshape", {"logits_2d", "shape_1_T_vocab"}, {"logits"});
    std::ofstream f(out_, std::ios::binary | std::ios::trunc);
    if (!f || !model_.SerializeToOstream(&f)) throw Error(out_ + ": cannot write (a model with embedded data must stay under 2 GB: use --external-data)", ErrorKind::Output);
    f.close();
    if (!f) throw Error(out_ + ": write failed", ErrorKind::Output);
    if (external_) {
      data_.close();
      if (!data_) throw Error(out_ + ".data: write failed", ErrorKind::Output);
    }
  }

 private:
  void read_shape() {
    const auto& ts = src_.tensors();
    auto shape_of = [&](const std::string& n) {
      const long i = src_.find(n);
      if (i < 0) throw Error(src_.path() + ": " + n + ": missing (not a llama GGUF?)");
      return ts[size_t(i)].shape;
    };
    s_.vocab = shape_of("token_embd.weight")[0];
    s_.dim = shape_of("token_embd.weight")[1];
    s_.ffn = shape_of("blk.0.ffn_gate.weight")[0];
    while (src_.find("blk." + std::to_string(s_.layers) + ".attn_q.weight") >= 0) ++s_.layers;
    s_.heads = gguf_number<uint32_t>(src_, "llama.attention.head_count", 0);
    s_.kv_heads = gguf_number<uint32_t>(src_, "llama.attention.head_count_kv", uint32_t(s_.heads));
    s_.context = gguf_number<uint32_t>(src_, "llama.context_length", 2048);
    s_.eps = gguf_number<float>(src_, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    s_.rope_base = gguf_number<float>(src_, "llama.rope.freq_base", 10000.0f);
    s_.tied = src_.find("output.weight") < 0;
    if (s_.heads <= 0 || s_.dim % s_.heads || s_.heads % s_.kv_heads)
      throw Error(src_.path() + ": head counts do not fit the model's width");
  }

  static void set_type(onnx::ValueInfoProto* v, int elem, const std::vector<std::string>& dims) {
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    for (const std::string& d : dims) {
      auto* dim = t->mutable_shape()->add_dim();
      if (d.find_first_not_of("0123456789") == std::string::npos) dim->set_dim_value(std::stoll(d));
      else dim->set_dim_param(d);
    }
  }

  void node(const std::string& op, const std::vector<std::string>& in, const std::vector<std::string>& out,
            const std::vector<std::pair<std::string, int64_t>>& ints = {},
            const std::vector<std::pair<std::string, std::vector<int64_t>>>& lists = {}) {
    auto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(out[0] + "_" + op);
    for (const auto& s : in) n->add_input(s);
    for (const auto& s : out) n->add_output(s);
    for (const auto& [k, v] : ints) {
      auto* a = n->add_attribute();
      a->set_name(k);
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(v);
    }
    for (const auto& [k, v] : lists) {
      auto* a = n->add_attribute();
      a->set_name(k);
      a->set_type(onnx::AttributeProto::INTS);
      for (int64_t x : v) a->add_ints(x);
    }
  }

  onnx::TensorProto* tensor(const std::string& name, int type, const std::vector<int64_t>& dims) {
    auto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    for (int64_t d : dims) t->add_dims(d);
    return t;
  }

  void ints(const std::string& name, const std::vector<int64_t>& v, bool scalar = false) {
    auto* t = tensor(name, onnx::TensorProto::INT64, scalar ? std::vector<int64_t>{} : std::vector<int64_t>{int64_t(v.size())});
    for (int64_t x : v) t->add_int64_data(x);
  }

  void floats(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
    auto* t = tensor(name, onnx::TensorProto::FLOAT, dims);
    t->set_raw_data(v.data(), v.size() * sizeof(float));
  }

  // Shapes, RoPE tables, the causal mask, and T taken from the input.
  void constants() {
    const int64_t hd = s_.dim / s_.heads, half = hd / 2, ctx = s_.context;
    node("Shape", {"input_ids"}, {"ids_shape"});
    ints("idx_1", {1});
    ints("zero_1", {0});
    node("Gather", {"ids_shape", "idx_1"}, {"T_1"}, {{"axis", 0}});
    ints("shape_T_dim_tail", {s_.dim});
    ints("minus1", {-1});
    node("Concat", {"T_1", "shape_T_dim_tail"}, {"shape_T_dim"}, {{"axis", 0}});
    ints("one_1", {1});
    ints("vocab_1", {s_.vocab});
    node("Concat", {"one_1", "T_1", "vocab_1"}, {"shape_1_T_vocab"}, {{"axis", 0}});
    ints("heads_hd", {s_.heads, hd});
    ints("kvheads_hd", {s_.kv_heads, hd});
    node("Concat", {"one_1", "T_1", "heads_hd"}, {"shape_q"}, {{"axis", 0}});
    node("Concat", {"one_1", "T_1", "kvheads_hd"}, {"shape_kv"}, {{"axis", 0}});
    ints("rep_shape_tail", {s_.heads / s_.kv_heads});
    ints("hd_1", {hd});
    ints("kv_1", {s_.kv_heads});
    ints("heads_1", {s_.heads});
    // [1, kv, rep, T, hd] to expand grouped KV heads to every query head.
    node("Concat", {"one_1", "kv_1", "rep_shape_tail", "T_1", "hd_1"}, {"shape_kv_rep"}, {{"axis", 0}});
    node("Concat", {"one_1", "heads_1", "T_1", "hd_1"}, {"shape_kv_all"}, {{"axis", 0}});
    ints("pairs_tail", {half, 2});
    node("Concat", {"one_1", "T_1", "heads_1", "pairs_tail"}, {"shape_q_pairs"}, {{"axis", 0}});
    node("Concat", {"one_1", "T_1", "kv_1", "pairs_tail"}, {"shape_k_pairs"}, {{"axis", 0}});
    // RoPE: theta_i = base^(-2i/hd), angle = pos * theta_i, computed in double then
    // rounded (llama.cpp computes in f32; the difference is far below the tolerance).
    std::vector<float> cosv(size_t(ctx * half)), sinv(size_t(ctx * half));
    for (int64_t p = 0; p < ctx; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const double theta = double(p) * std::pow(double(s_.rope_base), -2.0 * double(i) / double(hd));
        cosv[size_t(p * half + i)] = float(std::cos(theta));
        sinv[size_t(p * half + i)] = float(std::sin(theta));
      }
    floats("rope_cos_table", {ctx, 1, half}, cosv);
    floats("rope_sin_table", {ctx, 1, half}, sinv);
    node("Slice", {"rope_cos_table", "zero_1", "T_1", "zero_1"}, {"rope_cos"});
    node("Slice", {"rope_sin_table", "zero_1", "T_1", "zero_1"}, {"rope_sin"});
    // Causal mask from T: -inf where key > query (Trilu keeps the upper triangle).
    floats("neg_inf", {}, {-INFINITY});
    node("Concat", {"T_1", "T_1"}, {"shape_T_T"}, {{"axis", 0}});
    node("Expand", {"neg_inf", "shape_T_T"}, {"mask_full"});
    node("Trilu", {"mask_full", "one_1s"}, {"mask"}, {{"upper", 1}});
    ints("one_1s", {1}, true);
    ints("zero_1s", {0}, true);
    floats("eps", {}, {s_.eps});
    floats("attn_scale", {}, {float(1.0 / std::sqrt(double(hd)))});
  }

  // A GGUF weight as an initializer; `transpose` stores a 2-D [out, in] one as [in, out].
  void weight(const std::string& name, bool transpose) {
    const long i = src_.find(name);
    if (i < 0) throw Error(src_.path() + ": " + name + ": missing");
    const TensorInfo& info = src_.tensors()[size_t(i)];
    std::vector<float> v = tensor_as_f32(src_, info, size_t(i), src_.path());
    std::vector<int64_t> dims = info.shape;
    if (transpose) {
      const size_t rows = size_t(dims[0]), cols = size_t(dims[1]);
      std::vector<float> t(v.size());
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c) t[c * rows + r] = v[r * cols + c];
      v.swap(t);
      std::swap(dims[0], dims[1]);
    }
    src_.release(size_t(i));
    auto* t = tensor(name, onnx::TensorProto::FLOAT, dims);
    const uint64_t nbytes = v.size() * sizeof(float);
    if (!external_) {
      t->set_raw_data(v.data(), nbytes);
      return;
    }
    const uint64_t offset = (data_offset_ + 63) / 64 * 64;
    static const char zeros[64] = {};
    data_.write(zeros, std::streamsize(offset - data_offset_));
    data_.write(reinterpret_cast<const char*>(v.data()), std::streamsize(nbytes));
    data_offset_ = offset + nbytes;
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    for (const auto& [k, val] : std::vector<std::pair<std::string, std::string>>{
             {"location", data_name_}, {"offset", std::to_string(offset)}, {"length", std::to_string(nbytes)}}) {
      auto* e = t->add_external_data();
      e->set_key(k);
      e->set_value(val);
    }
  }

  std::string rms_norm(const std::string& x, const std::string& w, const std::string& p) {
    node("Mul", {x, x}, {p + "_sq"});
    if (opset_ >= 18) node("ReduceMean", {p + "_sq", "minus1"}, {p + "_ms"}, {{"keepdims", 1}});
    else node("ReduceMean", {p + "_sq"}, {p + "_ms"}, {{"keepdims", 1}}, {{"axes", {-1}}});
    node("Add", {p + "_ms", "eps"}, {p + "_mse"});
    node("Sqrt", {p + "_mse"}, {p + "_rms"});
    node("Div", {x, p + "_rms"}, {p + "_n"});
    node("Mul", {p + "_n", w}, {p + "_out"});
    return p + "_out";
  }

  // x [1, T, h, hd] -> rotated adjacent pairs (x0, x1) -> (x0 c - x1 s, x0 s + x1 c).
  std::string rope(const std::string& x, const std::string& pairs_shape, const std::string& back_shape, const std::string& p) {
    node("Reshape", {x, pairs_shape}, {p + "_pairs"});
    node("Gather", {p + "_pairs", "zero_1s"}, {p + "_x0"}, {{"axis", -1}});
    node("Gather", {p + "_pairs", "one_1s"}, {p + "_x1"}, {{"axis", -1}});
    node("Mul", {p + "_x0", "rope_cos"}, {p + "_a"});
    node("Mul", {p + "_x1", "rope_sin"}, {p + "_b"});
    node("Sub", {p + "_a", p + "_b"}, {p + "_r0"});
    node("Mul", {p + "_x0", "rope_sin"}, {p + "_c"});
    node("Mul", {p + "_x1", "rope_cos"}, {p + "_d"});
    node("Add", {p + "_c", p + "_d"}, {p + "_r1"});
    node("Unsqueeze", {p + "_r0", "minus1"}, {p + "_u0"});
    node("Unsqueeze", {p + "_r1", "minus1"}, {p + "_u1"});
    node("Concat", {p + "_u0", p + "_u1"}, {p + "_cat"}, {{"axis", -1}});
    node("Reshape", {p + "_cat", back_shape}, {p + "_out"});
    return p + "_out";
  }

  std::string layer(int64_t l, const std::string& x) {
    // Appended, not "l" + to_string(l): g++ 12 warns falsely (-Wrestrict) on the latter.
    std::string b = "blk.", p = "l";
    b += std::to_string(l);
    b += '.';
    p += std::to_string(l);
    for (const char* n : {"attn_norm.weight", "ffn_norm.weight"}) weight(b + n, false);
    for (const char* n : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_gate.weight",
                          "ffn_up.weight", "ffn_down.weight"})
      weight(b + n, true);
    const std::string h = rms_norm(x, b + "attn_norm.weight", p + "_an");
    node("MatMul", {h, b + "attn_q.weight"}, {p + "_q"});
    node("MatMul", {h, b + "attn_k.weight"}, {p + "_k"});
    node("MatMul", {h, b + "attn_v.weight"}, {p + "_v"});
    const std::string q = rope(p + "_q", "shape_q_pairs", "shape_q", p + "_rq");  // [1, T, H, hd]
    const std::string k = rope(p + "_k", "shape_k_pairs", "shape_kv", p + "_rk");
    node("Reshape", {p + "_v", "shape_kv"}, {p + "_v4"});
    node("Transpose", {q}, {p + "_qt"}, {}, {{"perm", {0, 2, 1, 3}}});             // [1, H, T, hd]
    node("Transpose", {k}, {p + "_kt"}, {}, {{"perm", {0, 2, 1, 3}}});             // [1, KV, T, hd]
    node("Transpose", {p + "_v4"}, {p + "_vt"}, {}, {{"perm", {0, 2, 1, 3}}});
    // Query head h reads KV head h / (H / KV), as llama.cpp groups them.
    for (const char* kv : {"_kt", "_vt"}) {
      node("Unsqueeze", {p + kv, "idx_2"}, {p + kv + "_u"});
      node("Expand", {p + kv + "_u", "shape_kv_rep"}, {p + kv + "_e"});
      node("Reshape", {p + kv + "_e", "shape_kv_all"}, {p + kv + "_all"});
    }
    if (l == 0) ints("idx_2", {2});
    node("Transpose", {p + "_kt_all"}, {p + "_ktT"}, {}, {{"perm", {0, 1, 3, 2}}});
    node("MatMul", {p + "_qt", p + "_ktT"}, {p + "_s"});
    node("Mul", {p + "_s", "attn_scale"}, {p + "_ss"});
    node("Add", {p + "_ss", "mask"}, {p + "_sm"});
    node("Softmax", {p + "_sm"}, {p + "_pr"}, {{"axis", -1}});
    node("MatMul", {p + "_pr", p + "_vt_all"}, {p + "_o"});
    node("Transpose", {p + "_o"}, {p + "_ot"}, {}, {{"perm", {0, 2, 1, 3}}});
    // (The shape first: ONNX's checker wants the nodes in topological order.)
    if (l == 0) node("Concat", {"one_1", "T_1", "shape_T_dim_tail"}, {"shape_1_T_dim"}, {{"axis", 0}});
    node("Reshape", {p + "_ot", "shape_1_T_dim"}, {p + "_o3"});
    node("MatMul", {p + "_o3", b + "attn_output.weight"}, {p + "_ao"});
    node("Add", {x, p + "_ao"}, {p + "_x1"});
    const std::string f = rms_norm(p + "_x1", b + "ffn_norm.weight", p + "_fn");
    node("MatMul", {f, b + "ffn_gate.weight"}, {p + "_g"});
    node("MatMul", {f, b + "ffn_up.weight"}, {p + "_up"});
    node("Sigmoid", {p + "_g"}, {p + "_gs"});
    node("Mul", {p + "_g", p + "_gs"}, {p + "_silu"});
    node("Mul", {p + "_silu", p + "_up"}, {p + "_act"});
    node("MatMul", {p + "_act", b + "ffn_down.weight"}, {p + "_down"});
    node("Add", {p + "_x1", p + "_down"}, {p + "_x2"});
    return p + "_x2";
  }

  GgufReader& src_;
  std::string out_;
  bool external_;
  std::string data_name_;
  std::ofstream data_;
  uint64_t data_offset_ = 0;
  int64_t opset_ = 17;
  onnx::ModelProto model_;
  onnx::GraphProto* g_;
  LlamaShape s_;
};

int run(int argc, char** argv) {
  bool external = false;
  int64_t opset = 17;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--external-data") external = true;
    else if (a == "--opset" && i + 1 < argc && (std::string(argv[i + 1]) == "17" || std::string(argv[i + 1]) == "21"))
      opset = std::stoll(argv[++i]);
    else if (!a.empty() && a[0] == '-') throw Error("unknown flag " + a, ErrorKind::Usage);
    else pos.push_back(a);
  }
  if (pos.size() != 2) throw Error("usage: wq_gen_onnx [--external-data] [--opset 17|21] IN.gguf OUT.onnx", ErrorKind::Usage);
  std::unique_ptr<GgufReader> src = open_gguf(pos[0]);
  Writer(*src, pos[1], external, opset).build();
  return 0;
}

}  // namespace
}  // namespace wq

int main(int argc, char** argv) {
  try {
    return wq::run(argc, argv);
  } catch (const wq::Error& e) {
    std::fprintf(stderr, "wq_gen_onnx: error: %s\n", e.message().c_str());
    return int(e.kind());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wq_gen_onnx: error: %s\n", e.what());
    return 1;
  }
}
