#include "io/onnx_graph.h"

#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "io/onnx_layout.h"
#include "io/onnx_zero_points.h"
#include "io/quant_record.h"

namespace wq {
namespace {

// The widest block onnxruntime's MatMulNBits loads (16, 32, 64, 128 or 256 weights).
constexpr size_t kMatMulNBitsMaxBlock = 256;

// accuracy_level 1 (fp32): MatMulNBits dequantizes B and multiplies in f32, so the
// runtime computes with exactly the weights wquant's dequantization gives. Level 4 would
// also quantize the activations to int8 per block (faster on CPUs with VNNI), a second
// lossy step that the user opts into by editing the attribute, not one wquant hides.
static_assert(kOnnxAccuracyLevel == 1);

onnx::NodeProto make_node(const std::string& op, const std::vector<std::string>& in, const std::string& out,
                          const std::string& name) {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(name);
  for (const auto& s : in) n.add_input(s);
  n.add_output(out);
  return n;
}

void add_int(onnx::NodeProto& n, const char* name, int64_t v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

onnx::TensorProto header_of(const std::string& name, int type, const std::vector<int64_t>& dims) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(type);
  for (int64_t d : dims) t.add_dims(d);
  return t;
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

class Planner {
 public:
  Planner(const std::string& out, const std::vector<TensorPlan>& plan, const OnnxReader& src)
      : out_(out), plan_(plan), src_(src) {
    for (const auto& op : src_.model().opset_import())
      if (op.domain().empty() || op.domain() == "ai.onnx") opset_ = op.version();
  }

  OnnxOutPlan run() {
    o_.model = src_.model();
    o_.form.assign(plan_.size(), OnnxWeightForm::None);
    o_.transposed.assign(plan_.size(), false);
    for (size_t pi = 0; pi < plan_.size(); ++pi) entry(pi);
    auto* g = o_.model.mutable_graph();
    // The dequantization nodes read only initializers: they go first, so the graph stays
    // topologically sorted whatever reads their outputs.
    google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
    for (auto& n : front_) *nodes.Add() = std::move(n);
    for (int k = 0; k < g->node_size(); ++k) {
      if (!dropped_nodes_.count(k)) *nodes.Add() = std::move(*g->mutable_node(k));
    }
    g->mutable_node()->Swap(&nodes);
    // Models of IR < 4 list initializers among the graph's inputs too; a weight that is
    // now computed (or gone) must not stay an input the caller would have to feed, and
    // every initializer the output adds must be one (the ONNX checker refuses it else).
    google::protobuf::RepeatedPtrField<onnx::ValueInfoProto> inputs;
    std::set<std::string> listed;
    for (auto& v : *g->mutable_input()) {
      if (replaced_.count(v.name())) continue;
      listed.insert(v.name());
      *inputs.Add() = std::move(v);
    }
    if (o_.model.ir_version() < 4) {
      for (const OnnxOutInit& o : o_.inits) {
        if (o.piece == OnnxPiece::Verbatim || !listed.insert(o.header.name()).second) continue;
        onnx::ValueInfoProto* v = inputs.Add();
        v->set_name(o.header.name());
        auto* t = v->mutable_type()->mutable_tensor_type();
        t->set_elem_type(o.header.data_type());
        auto* shape = t->mutable_shape();
        for (int64_t d : o.header.dims()) shape->add_dim()->set_dim_value(d);
      }
    }
    g->mutable_input()->Swap(&inputs);
    if (any_nbits_) {
      bool have = false;
      for (const auto& op : o_.model.opset_import()) have |= op.domain() == "com.microsoft";
      if (!have) {
        auto* op = o_.model.add_opset_import();
        op->set_domain("com.microsoft");
        op->set_version(1);
      }
    }
    check_new_names();
    // One version key, also where the input is a wquant output already (--bits 0 kept
    // every weight float): a second would make the metadata ambiguous (the ONNX checker
    // refuses duplicate keys).
    auto* props = o_.model.mutable_metadata_props();
    for (int i = props->size() - 1; i >= 0; --i) {
      if (props->Get(i).key() == kOnnxVersionKey) props->DeleteSubrange(i, 1);
    }
    auto* version = o_.model.add_metadata_props();
    version->set_key(kOnnxVersionKey);
    version->set_value("1");
    return std::move(o_);
  }

  // The names the output adds (the pieces' initializers, the dequantization's values)
  // must be new: a value or initializer the graph already has under one of them would be a
  // second definition, which onnxruntime refuses (and wquant could not read the file back).
  // A replaced weight's own name, which its dequantization gives back, is not new.
  void check_new_names() const {
    std::set<std::string> taken, added;
    const onnx::GraphProto& g = src_.model().graph();
    for (const OnnxInitializer& in : src_.initializers()) {
      if (!replaced_.count(in.header.name())) taken.insert(in.header.name());
    }
    for (const auto& v : g.input()) taken.insert(v.name());
    for (int k = 0; k < g.node_size(); ++k) {
      if (dropped_nodes_.count(k)) continue;
      for (const auto& o : g.node(k).output()) taken.insert(o);
    }
    auto check = [&](const std::string& name, const std::string& of) {
      if (name.empty() || replaced_.count(name)) return;
      if (taken.count(name) || !added.insert(name).second) {
        throw Error(out_ + ": " + name + ": the quantized form of " + of + " needs this name, which the model already "
                    "uses (an initializer, input or node output); rename that one",
                    ErrorKind::Usage);
      }
    };
    for (const OnnxOutInit& o : o_.inits) {
      const OnnxInitializer& in = src_.initializers()[src_.initializer_of(plan_[o.plan_index].source_index)];
      const std::string& source = in.read_as();
      if (o.piece == OnnxPiece::Raw || o.piece == OnnxPiece::Verbatim || o.header.name() == source ||
          o.header.name() == in.header.name())
        continue;
      check(o.header.name(), source);
    }
    for (const onnx::NodeProto& n : front_) {
      for (const auto& out : n.output()) check(out, n.name());
    }
  }

 private:
  void entry(size_t pi) {
    const TensorPlan& p = plan_[pi];
    const TensorInfo& info = src_.tensors().at(p.source_index);
    if (info.kind == StoredKind::Quantized)
      throw Error(out_ + ": " + p.name + ": is already quantized (dequantize the model first)", ErrorKind::Usage);
    const OnnxInitializer& in = src_.initializers()[src_.initializer_of(p.source_index)];
    o_.transposed[pi] = in.transposed;
    if (in.cast_node >= 0 && (p.action == TensorAction::Quantize || p.action == TensorAction::KeepFloat)) {
      // An earlier run's NAME.f16 + Cast: this entry writes the weight's form anew.
      dropped_nodes_.insert(in.cast_node);
      replaced_.insert(in.header.name());
    }
    switch (p.action) {
      case TensorAction::Quantize: return quantized(pi, p, info, in);
      case TensorAction::KeepFloat: return kept_float(pi, p, info, in);
      case TensorAction::CopyRaw: {
        OnnxOutInit o;
        o.plan_index = pi;
        if (!in.verbatim.empty() || (in.data == nullptr && in.header.data_type() == onnx::TensorProto::STRING)) {
          o.piece = OnnxPiece::Verbatim;
          o.constant = in.verbatim;
          o.nbytes = in.verbatim.size();
        } else {
          o.piece = OnnxPiece::Raw;
          o.header = clean(in.header);
          o.nbytes = in.nbytes;
        }
        o_.inits.push_back(std::move(o));
        return;
      }
      case TensorAction::Ggml:
        throw Error(out_ + ": " + p.name + ": llama.cpp block types cannot be stored in ONNX (use --bits)", ErrorKind::Usage);
    }
  }

  // The source header without where its payload was.
  static onnx::TensorProto clean(const onnx::TensorProto& h) {
    onnx::TensorProto t = h;
    t.clear_data_location();
    t.clear_external_data();
    return t;
  }

  // The element type the graph reads the weight as: its own, or an earlier run's Cast's.
  static DType graph_dtype(const OnnxInitializer& in, const TensorInfo& info) {
    DType t = info.dtype;
    dtype_of_onnx(in.graph_type, &t);  // (0 when there is no Cast: the weight's own)
    return t;
  }

  void kept_float(size_t pi, const TensorPlan& p, const TensorInfo& info, const OnnxInitializer& in) {
    const std::string& name = in.read_as();
    const DType graph = graph_dtype(in, info);
    OnnxOutInit o;
    o.plan_index = pi;
    o.piece = OnnxPiece::Float;
    o.header = clean(in.header);
    o.header.set_name(name);
    o.header.set_data_type(onnx_type_of(p.out_dtype));
    o.nbytes = uint64_t(checked_numel(p.name, info.shape)) * dtype_size(p.out_dtype);
    if (p.out_dtype != graph) {
      replaced_.insert(name);
      // Stored narrower (--fp16): a Cast gives the graph the type it was built for.
      const std::string stored = name + "." + dtype_name(p.out_dtype);
      o.header.set_name(stored);
      onnx::NodeProto n = make_node("Cast", {stored}, name, name + "/cast");
      add_int(n, "to", onnx_type_of(graph));
      front_.push_back(std::move(n));
    }
    o_.inits.push_back(std::move(o));
  }

  void quantized(size_t pi, const TensorPlan& p, const TensorInfo& info, const OnnxInitializer& in) {
    const std::string& name = in.read_as();
    const DType graph = graph_dtype(in, info);
    replaced_.insert(name);
    const MatrixDims d = matrix_dims(p.shape);
    const size_t rows = d.rows, cols = d.cols, block = p.block, nb = cols / block;
    const int bits = p.spec.bits;
    const bool pow2 = block >= 16 && (block & (block - 1)) == 0;
    const Scheme scheme = p.spec.scheme();
    // Integral zero points are stored as integers: MatMulNBits' packed uint8 zero points,
    // and DequantizeLinear's (io/onnx_zero_points.h).
    const bool integral = zero_points_are_integral(p.spec);
    // onnxruntime's CPU MatMulNBits (1.30) takes float zero points only with 2 and 4 bits
    // ("only 2b and 4b quantization is supported for unpacked compute"): 8-bit blocks with
    // float zero points take the standard-op form; packed uint8 ones it takes.
    const bool bits_ok = bits == 2 || bits == 4 || (bits == 8 && integral);
    // Its blocks are 16 to 256 weights (matmul_nbits.cc refuses any other at load, 1.30):
    // a wider one (channel-wise on rows of 512 or more, every LLM's) takes the other forms.
    const bool nbits = in.matmul_only && graph == DType::F32 && bits_ok && pow2 && block <= kMatMulNBitsMaxBlock;
    // GatherBlockQuantized's zero points are integers in the data's type: symmetric codes.
    const bool gather = !nbits && in.gather_only && graph == DType::F32 && (bits == 4 || bits == 8) &&
                        scheme == Scheme::MnnSym && pow2;
    // Opset 21's blocked DequantizeLinear, only where the model already runs at 21 or later
    // (raising its opset would change other ops' meaning): (q - z) * s in f32, exactly
    // kernels/reference.h dequantize_one for an integral z.
    const bool dql = !nbits && !gather && integral && opset_ >= 21;
    QuantizedTensor rq;
    rq.shape = p.shape;
    rq.spec = p.spec;
    rq.block = block;
    rq.scheme = scheme;
    rq.packed_row_bytes = (cols * size_t(bits) + 7) / 8;
    if (nbits || gather || dql) {
      rq.spec.fp16 = false;                                // the scales have the output's type
      if (scheme == Scheme::MnnAsym) rq.scheme = Scheme::Affine;  // min + q s stored as (q - z) s
    }
    nlohmann::json j = nlohmann::json::parse(quant_record_json(rq));
    j["onnx_form"] = nbits ? kFormMatMulNBits : gather ? kFormGather : dql ? kFormDequantizeLinear : kFormDequant;
    j["transposed"] = in.transposed;
    auto* meta = o_.model.add_metadata_props();
    meta->set_key(kOnnxRecordPrefix + name);
    meta->set_value(j.dump());
    o_.form[pi] = nbits ? OnnxWeightForm::MatMulNBits : gather ? OnnxWeightForm::Gather
                  : dql ? OnnxWeightForm::DequantizeLinear : OnnxWeightForm::Dequant;
    auto add = [&](OnnxPiece piece, onnx::TensorProto h, uint64_t nbytes, std::string constant = {}) {
      OnnxOutInit o;
      o.plan_index = pi;
      o.piece = piece;
      o.header = std::move(h);
      o.nbytes = nbytes;
      o.constant = std::move(constant);
      o_.inits.push_back(std::move(o));
    };
    const bool has_zeros = rq.scheme != Scheme::MnnSym;
    if (nbits) {
      any_nbits_ = true;
      const int64_t blob = int64_t(block) * bits / 8;
      add(OnnxPiece::Codes, header_of(name + ".qweight", onnx::TensorProto::UINT8, {int64_t(rows), int64_t(nb), blob}),
          rows * nb * uint64_t(blob));
      add(OnnxPiece::Scales, header_of(name + ".scales", onnx::TensorProto::FLOAT, {int64_t(rows * nb)}), rows * nb * 4);
      if (has_zeros && integral) {
        const uint64_t zb = rows * zero_point_row_bytes(nb, bits);
        add(OnnxPiece::Zeros, header_of(name + ".zeros", onnx::TensorProto::UINT8, {int64_t(zb)}), zb);
      } else if (has_zeros) {
        add(OnnxPiece::Zeros, header_of(name + ".zeros", onnx::TensorProto::FLOAT, {int64_t(rows * nb)}), rows * nb * 4);
      }
      rewrite_matmuls(name, rows, cols, block, bits, has_zeros);
      return;
    }
    if (gather) {
      any_nbits_ = true;
      add(OnnxPiece::Codes, header_of(name + ".qweight", onnx::TensorProto::UINT8, {int64_t(rows), int64_t(rq.packed_row_bytes)}),
          rows * rq.packed_row_bytes);
      add(OnnxPiece::Scales, header_of(name + ".scales", onnx::TensorProto::FLOAT, {int64_t(rows), int64_t(nb)}), rows * nb * 4);
      // 2^(b-1) for every block, packed as the data is (low nibble first for 4 bits).
      const size_t zrow = (nb * size_t(bits) + 7) / 8;
      std::string z(rows * zrow, '\0');
      for (size_t r = 0; r < rows; ++r)
        for (size_t b = 0; b < nb; ++b) {
          const size_t bit = b * size_t(bits);
          z[r * zrow + (bit >> 3)] = char(uint8_t(z[r * zrow + (bit >> 3)]) | uint8_t((1u << (bits - 1)) << (bit & 7)));
        }
      add(OnnxPiece::Constant, header_of(name + ".gather_zeros", onnx::TensorProto::UINT8, {int64_t(rows), int64_t(zrow)}),
          z.size(), z);
      rewrite_gathers(name, block, bits);
      return;
    }
    if (dql) {
      const std::vector<int64_t> qdims{int64_t(rows), int64_t(nb)};
      add(OnnxPiece::Codes, header_of(name + ".qweight", onnx::TensorProto::UINT8, {int64_t(rows), int64_t(cols)}), rows * cols);
      add(OnnxPiece::Scales, header_of(name + ".scales", onnx::TensorProto::FLOAT, qdims), rows * nb * 4);
      add(OnnxPiece::Zeros, header_of(name + ".zeros", onnx::TensorProto::UINT8, qdims), rows * nb);
      const bool reshape = p.shape.size() != 2;
      if (reshape)
        add(OnnxPiece::Constant, header_of(name + ".dq_shape", onnx::TensorProto::INT64, {int64_t(p.shape.size())}),
            p.shape.size() * 8, bytes_of(p.shape));
      const std::string out = reshape || in.transposed || graph != DType::F32 ? name + "/dequant/blocks" : name;
      onnx::NodeProto n = make_node("DequantizeLinear", {name + ".qweight", name + ".scales", name + ".zeros"}, out, out);
      add_int(n, "axis", 1);
      add_int(n, "block_size", int64_t(block));
      front_.push_back(std::move(n));
      shape_back(name, out, reshape, in.transposed, graph);
      return;
    }
    const int ptype = p.spec.fp16 ? onnx::TensorProto::FLOAT16 : onnx::TensorProto::FLOAT;
    const uint64_t es = p.spec.fp16 ? 2 : 4;
    const std::vector<int64_t> pdims{int64_t(rows), int64_t(nb), 1};
    add(OnnxPiece::Codes, header_of(name + ".qweight", onnx::TensorProto::UINT8, {int64_t(rows), int64_t(nb), int64_t(block)}),
        rows * cols);
    add(OnnxPiece::Scales, header_of(name + ".scales", ptype, pdims), rows * nb * es);
    if (has_zeros) add(OnnxPiece::Zeros, header_of(name + ".zeros", ptype, pdims), rows * nb * es);
    const std::vector<int64_t> target = p.shape;
    add(OnnxPiece::Constant, header_of(name + ".dq_shape", onnx::TensorProto::INT64, {int64_t(target.size())}),
        target.size() * 8, bytes_of(target));
    if (scheme == Scheme::MnnSym) {
      const std::vector<float> half{float(1 << (bits - 1))};
      add(OnnxPiece::Constant, header_of(name + ".dq_offset", onnx::TensorProto::FLOAT, {}), 4, bytes_of(half));
    }
    dequant_nodes(name, scheme, p.spec.fp16, in.transposed, graph, has_zeros);
  }

  // Exactly wquant's dequantization (kernels/reference.h dequantize_one), one rounding per
  // operation as there: sym (c - 2^(b-1)) * s, asym c * s + min, affine (c - z) * s.
  void dequant_nodes(const std::string& name, Scheme scheme, bool fp16, bool transposed, DType dtype, bool has_zeros) {
    const std::string pre = name + "/dequant/";
    auto cast = [&](const std::string& in, const std::string& out, int to) {
      onnx::NodeProto n = make_node("Cast", {in}, out, out);
      add_int(n, "to", to);
      front_.push_back(std::move(n));
    };
    auto op = [&](const char* type, const std::string& a, const std::string& b, const std::string& out) {
      front_.push_back(make_node(type, {a, b}, out, out));
    };
    cast(name + ".qweight", pre + "codes", onnx::TensorProto::FLOAT);
    std::string s = name + ".scales", z = name + ".zeros";
    if (fp16) {
      cast(s, pre + "scales", onnx::TensorProto::FLOAT);
      s = pre + "scales";
      if (has_zeros) {
        cast(z, pre + "zeros", onnx::TensorProto::FLOAT);
        z = pre + "zeros";
      }
    }
    switch (scheme) {
      case Scheme::MnnSym:
        op("Sub", pre + "codes", name + ".dq_offset", pre + "centred");
        op("Mul", pre + "centred", s, pre + "blocks");
        break;
      case Scheme::MnnAsym:
        op("Mul", pre + "codes", s, pre + "scaled");
        op("Add", pre + "scaled", z, pre + "blocks");
        break;
      case Scheme::Affine:
        op("Sub", pre + "codes", z, pre + "centred");
        op("Mul", pre + "centred", s, pre + "blocks");
        break;
    }
    shape_back(name, pre + "blocks", true, transposed, dtype);
  }

  // From the dequantized blocks `from` to the graph's tensor NAME: reshaped to the
  // weight's shape, transposed back to MatMul's [K, N], cast to the weight's own type.
  void shape_back(const std::string& name, const std::string& from, bool reshape, bool transposed, DType dtype) {
    const std::string pre = name + "/dequant/";
    const bool narrow = dtype != DType::F32;
    std::string last = from;
    if (reshape) {
      last = transposed || narrow ? pre + "shaped" : name;
      front_.push_back(make_node("Reshape", {from, name + ".dq_shape"}, last, last));
    }
    if (transposed) {
      const std::string shaped = last;
      const std::string t = narrow ? pre + "transposed" : name;
      onnx::NodeProto n = make_node("Transpose", {shaped}, t, t);
      auto* a = n.add_attribute();
      a->set_name("perm");
      a->set_type(onnx::AttributeProto::INTS);
      a->add_ints(1);
      a->add_ints(0);
      front_.push_back(std::move(n));
      last = t;
    }
    if (narrow) {
      onnx::NodeProto n = make_node("Cast", {last}, name, name);
      add_int(n, "to", onnx_type_of(dtype));
      front_.push_back(std::move(n));
    }
  }

  void rewrite_gathers(const std::string& name, size_t block, int bits) {
    for (auto& n : *o_.model.mutable_graph()->mutable_node()) {
      if (n.op_type() != "Gather" || n.input_size() != 2 || n.input(0) != name) continue;
      const std::string indices = n.input(1);
      n.clear_input();
      n.add_input(name + ".qweight");
      n.add_input(indices);
      n.add_input(name + ".scales");
      n.add_input(name + ".gather_zeros");
      n.clear_attribute();  // Gather's axis is 0 (the reader checked): gather_axis below
      n.set_op_type("GatherBlockQuantized");
      n.set_domain("com.microsoft");
      add_int(n, "gather_axis", 0);
      add_int(n, "quantize_axis", 1);
      add_int(n, "block_size", int64_t(block));
      add_int(n, "bits", bits);
    }
  }

  void rewrite_matmuls(const std::string& name, size_t rows, size_t cols, size_t block, int bits, bool has_zeros) {
    for (auto& n : *o_.model.mutable_graph()->mutable_node()) {
      if (n.op_type() != "MatMul" || n.input_size() != 2 || n.input(1) != name) continue;
      const std::string a = n.input(0);
      n.clear_input();
      n.add_input(a);
      n.add_input(name + ".qweight");
      n.add_input(name + ".scales");
      if (has_zeros) n.add_input(name + ".zeros");
      n.set_op_type("MatMulNBits");
      n.set_domain("com.microsoft");
      add_int(n, "K", int64_t(cols));
      add_int(n, "N", int64_t(rows));
      add_int(n, "bits", bits);
      add_int(n, "block_size", int64_t(block));
      add_int(n, "accuracy_level", kOnnxAccuracyLevel);
    }
  }

  const std::string& out_;
  const std::vector<TensorPlan>& plan_;
  const OnnxReader& src_;
  OnnxOutPlan o_;
  std::vector<onnx::NodeProto> front_;
  std::set<std::string> replaced_;  // initializers no longer stored under their name
  std::set<int> dropped_nodes_;     // the source graph's nodes the output leaves out
  bool any_nbits_ = false;
  int64_t opset_ = 0;  // the model's default-domain opset
};

}  // namespace

OnnxOutPlan plan_onnx_output(const std::string& out, const std::vector<TensorPlan>& plan, const OnnxReader& src) {
  return Planner(out, plan, src).run();
}

}  // namespace wq
