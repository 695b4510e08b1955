// Writers: .wq and safetensors outputs read back exactly (codes, scales, zeros, kept
// tensors) for every bits / scheme / block / fp16 combination; broken .wq files (cut
// short, bytes flipped in the header) give errors, never a crash (also run under ASan).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/error.h"
#include "engine/pipeline.h"
#include "engine/plan.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"
#include "io/model_reader.h"
#include "io/model_writer.h"
#include "io/safetensors_writer.h"
#include "io/wq_layout.h"
#include "tests/counting_sink.h"
#include "wq_format_generated.h"
#include "tests/test_support.h"

namespace wq {
namespace {

namespace fs = std::filesystem;

struct Dir {
  fs::path p = fs::temp_directory_path() / ("wq-writers-" + std::to_string(::getpid()));
  Dir() { fs::create_directories(p); }
  ~Dir() {
    std::error_code ec;
    fs::remove_all(p, ec);
  }
  std::string operator()(const std::string& n) const { return (p / n).string(); }
};

// A float safetensors model of these tensors, t-distributed values (seed 9).
std::string write_source(const std::string& path, const std::vector<TensorInfo>& infos) {
  std::vector<TensorPlan> plan;
  for (size_t i = 0; i < infos.size(); ++i) plan.push_back(test::keep_float_entry(i, infos[i]));
  auto w = make_safetensors_writer(path, plan, infos);
  std::mt19937 g(9);
  std::student_t_distribution<float> t(4.0f);
  for (size_t i = 0; i < plan.size(); ++i) {
    TensorResult r;
    r.plan = &plan[i];
    std::vector<float> v(infos[i].nbytes / 4);
    for (float& x : v) x = 0.02f * t(g);
    r.bytes.resize(infos[i].nbytes);
    std::memcpy(r.bytes.data(), v.data(), r.bytes.size());
    w->write(r);
  }
  w->commit();
  return path;
}

// A float source model: three matrices (one 172 wide) and a norm.
std::string make_source(const Dir& d) {
  return write_source(d("source.safetensors"),
                      {{"a.weight", {48, 128}, StoredKind::Float, DType::F32, "F32", 48 * 128 * 4},
                       {"b.weight", {40, 172}, StoredKind::Float, DType::F32, "F32", 40 * 172 * 4},
                       {"norm.weight", {128}, StoredKind::Float, DType::F32, "F32", 128 * 4},
                       {"c.weight", {16, 256}, StoredKind::Float, DType::F32, "F32", 16 * 256 * 4}});
}

void convert(const std::string& in, const std::string& out, const QuantSpec& spec) {
  auto r = open_model(in);
  PlanOptions o;
  o.defaults = spec;
  o.format = format_from_path(out);
  const std::vector<TensorPlan> plan = make_plan(r->tensors(), o);
  auto w = make_writer(out, o.format, plan, *r);
  Scheduler s(2);
  s.run([&] { run_pipeline(plan, r->tensors(), *r, *w, PipelineOptions{}); });
  w->commit();
  EXPECT_EQ(fs::file_size(out), planned_output_bytes(plan, r->tensors(), o.format, *r)) << out;
}

TEST(Writers, EveryCombinationReadsBackExactly) {
  Dir d;
  const std::string src_path = make_source(d);
  auto src = open_model(src_path);
  for (const char* ext : {".wq", ".safetensors"}) {
    for (int bits = 2; bits <= 8; ++bits) {
      for (int scheme = 0; scheme < 3; ++scheme) {
        for (int64_t block : {int64_t(0), int64_t(32)}) {
          QuantSpec s;
          s.bits = bits;
          s.block = block;
          s.asym = scheme >= 1;
          s.hqq = scheme == 2;
          s.fp16 = (bits + scheme) % 2 == 0;
          s.hqq_opts.max_steps = 3;
          const std::string out = d(std::string("out") + ext);
          convert(src_path, out, s);
          auto q = open_model(out);
          const std::string at = std::string(ext) + " " + s.describe();
          ASSERT_EQ(q->tensors().size(), src->tensors().size()) << at;
          for (size_t i = 0; i < src->tensors().size(); ++i) {
            const TensorInfo& ti = q->tensors()[i];
            EXPECT_EQ(ti.name, src->tensors()[i].name) << at;
            if (ti.name == "norm.weight") {
              EXPECT_EQ(ti.kind, StoredKind::Float) << at;
              EXPECT_EQ(ti.type_name, s.fp16 ? "F16" : "F32") << at << ": --fp16 stores kept tensors as f16";
              std::vector<float> want = test::read_f32(*src, i);
              if (s.fp16) {  // what f16 storage keeps of each value
                std::vector<uint16_t> h(want.size());
                kernels().narrow_f16(want.data(), h.data(), h.size());
                kernels().widen_f16(h.data(), want.data(), h.size());
              }
              EXPECT_EQ(test::read_f32(*q, i), want) << at;
              continue;
            }
            ASSERT_EQ(ti.kind, StoredKind::Quantized) << at << " " << ti.name;
            QuantizedTensor got = q->load_quantized(i);
            EXPECT_EQ(got.scales_f16, s.fp16 ? quantize_tensor(src->view(i), s, size_t(got.block)).scales_f16 : std::vector<uint16_t>{}) << at;
            widen_f16_params(got);  // the stored halves as floats (engine)
            const size_t cols = size_t(src->tensors()[i].shape[1]);
            const size_t blk = (block == 0 || cols % size_t(block)) ? cols : size_t(block);
            const QuantizedTensor want = quantize_tensor(src->view(i), s, blk);
            EXPECT_EQ(got.packed, want.packed) << at << " " << ti.name;
            EXPECT_EQ(got.scales, want.scales) << at << " " << ti.name;
            EXPECT_EQ(got.zeros, want.zeros) << at << " " << ti.name;
            EXPECT_EQ(got.block, want.block) << at;
            EXPECT_EQ(got.scheme, want.scheme) << at;
          }
        }
      }
    }
  }
}

using test::CountingSink;

// .wq pieces of 64 KiB and more start on a 4 KiB boundary of the file (the data section
// on one too), the others on 64 bytes; with O_DIRECT output the writer writes them from
// the pipeline's buffers and gives those back once written; the file is byte for byte the
// one buffered output writes, and reads back as quantize_tensor makes the tensors.
TEST(Writers, WqLargePiecesSitOnPagesAndAreWrittenFromThePipelinesBuffers) {
  Dir d;
  const std::string src_path = write_source(
      d("big.safetensors"),
      {{"big.weight", {8192, 1024}, StoredKind::Float, DType::F32, "F32", 8192 * 1024 * 4},  // codes 4 MiB, scales 1 MiB
       {"small.weight", {40, 172}, StoredKind::Float, DType::F32, "F32", 40 * 172 * 4},
       {"norm.weight", {128}, StoredKind::Float, DType::F32, "F32", 128 * 4},
       {"mid.weight", {96, 4096}, StoredKind::Float, DType::F32, "F32", 96 * 4096 * 4},  // codes 192 KiB, scales 48 KiB
       {"wide.weight", {4096, 2048}, StoredKind::Float, DType::F32, "F32", 4096 * 2048 * 4}});
  auto src = open_model(src_path);
  QuantSpec s;
  s.bits = 4;
  s.block = 32;
  s.asym = true;
  PlanOptions o;
  o.defaults = s;
  o.format = OutputFormat::Wq;
  const std::vector<TensorPlan> plan = make_plan(src->tensors(), o);
  auto write = [&](const std::string& out, bool buffered) {
    if (buffered) ::setenv("WQUANT_OUTPUT_IO", "buffered", 1);
    auto w = make_writer(out, o.format, plan, *src);
    ::unsetenv("WQUANT_OUTPUT_IO");
    CountingSink sink(*w);
    Scheduler sch(2);
    sch.run([&] { run_pipeline(plan, src->tensors(), *src, sink, PipelineOptions{}); });
    w->commit();
    return sink.released;
  };
  const size_t released = write(d("direct.wq"), false);
  EXPECT_EQ(write(d("buffered.wq"), true), 0u) << "buffered output copies every byte";
  auto file = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  const std::vector<uint8_t> bytes = file(d("direct.wq"));
  EXPECT_TRUE(bytes == file(d("buffered.wq")));
  if (test::accepts_direct(d.p.string())) {
    // The codes of big and wide (4 MiB: buffers that large are mappings, page-aligned:
    // engine/output_bytes.h) are written from the pipeline's buffers: big's come back
    // once wide's write has waited for it (the last one's go with the writer).
    EXPECT_GE(released, 1u) << "no buffer was held and given back";
  } else {
    std::printf("%s refuses O_DIRECT: the held writes were not checked\n", d.p.c_str());
  }
  // The layout, from the header.
  WqPreamble pre;
  std::memcpy(&pre, bytes.data(), sizeof pre);
  EXPECT_EQ(pre.data_offset % 4096, 0u);
  const fb::Model* m = fb::GetModel(bytes.data() + pre.header_offset);
  size_t large = 0;
  for (const fb::Tensor* t : *m->tensors()) {
    const uint64_t offs[3] = {t->data_offset(), t->scales_offset(), t->zeros_offset()};
    const uint64_t szs[3] = {t->data_size(), t->scales_size(), t->zeros_size()};
    for (int k = 0; k < 3; ++k) {
      const uint64_t at = pre.data_offset + offs[k];
      EXPECT_EQ(at % (szs[k] >= (64u << 10) ? 4096 : 64), 0u) << t->name()->str() << " piece " << k << " of " << szs[k] << " bytes at " << at;
      large += szs[k] >= (64u << 10);
    }
  }
  EXPECT_EQ(large, 7u) << "big and wide: codes, scales, zeros; mid: codes (its scales are 48 KiB)";
  auto q = open_model(d("direct.wq"));
  for (size_t i = 0; i < q->tensors().size(); ++i) {
    if (q->tensors()[i].kind != StoredKind::Quantized) continue;
    const QuantizedTensor got = q->load_quantized(i);
    const QuantizedTensor want = quantize_tensor(src->view(i), s, size_t(got.block));  // (small: one block a row)
    EXPECT_EQ(got.packed, want.packed) << q->tensors()[i].name;
    EXPECT_EQ(got.scales, want.scales) << q->tensors()[i].name;
    EXPECT_EQ(got.zeros, want.zeros) << q->tensors()[i].name;
  }
}

// The .wq and safetensors writers take a large quantized tensor in row pieces (its codes
// written as they come, its scales and zeros after the last): the file is byte for byte
// the one written from whole tensors, with f32 and f16 parameters, with and without
// zeros, direct or buffered output, and (.wq) some pieces' buffers are written without a
// copy and given back.
TEST(Writers, FileIsTheSameWhenLargeTensorsComeInRowPieces) {
  Dir d;
  const std::string src_path = write_source(
      d("pieces.safetensors"),
      {{"big.weight", {4096, 1024}, StoredKind::Float, DType::F32, "F32", 4096 * 1024 * 4},  // 16 MiB
       {"norm.weight", {128}, StoredKind::Float, DType::F32, "F32", 128 * 4},
       {"odd.weight", {999, 640}, StoredKind::Float, DType::F32, "F32", 999 * 640 * 4}});  // 3-bit rows of 240 bytes
  auto src = open_model(src_path);
  auto file = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  struct Case {
    int bits;
    bool asym, fp16;
    size_t piece_bytes;  // PipelineOptions::row_piece_bytes
  };
  // 256 KiB: big in 64 pieces of 64 rows, odd in 16 (the last 39 rows); 4 MiB: big in 4
  // pieces of 1 MiB of 8-bit codes, buffers large enough to be written without a copy
  // (engine/output_bytes.h); odd whole.
  for (const OutputFormat format : {OutputFormat::Wq, OutputFormat::Safetensors})
  for (const Case& c : {Case{4, true, false, 256 << 10}, Case{3, false, false, 256 << 10}, Case{8, true, true, 4 << 20}}) {
    const std::string ext = format == OutputFormat::Wq ? ".wq" : ".safetensors";
    SCOPED_TRACE(ext + ", " + std::to_string(c.bits) + " bits" + (c.asym ? " asym" : " sym") + (c.fp16 ? " fp16" : ""));
    PlanOptions o;
    o.defaults.bits = c.bits;
    o.defaults.block = 64;
    o.defaults.asym = c.asym;
    o.defaults.fp16 = c.fp16;
    o.format = format;
    const std::vector<TensorPlan> plan = make_plan(src->tensors(), o);
    auto write = [&](const std::string& out, bool pieces, bool buffered) {
      if (buffered) ::setenv("WQUANT_OUTPUT_IO", "buffered", 1);
      auto w = make_writer(out, o.format, plan, *src);
      ::unsetenv("WQUANT_OUTPUT_IO");
      CountingSink sink(*w);
      sink.quantized_pieces = pieces;
      PipelineOptions po;
      po.row_piece_bytes = po.quantized_piece_bytes = c.piece_bytes;
      Scheduler sch(2);
      sch.run([&] { run_pipeline(plan, src->tensors(), *src, sink, po); });
      w->commit();
      return std::make_pair(sink.pieces, sink.released);
    };
    EXPECT_EQ(write(d("whole" + ext), false, true).first, 0u);
    const std::vector<uint8_t> whole = file(d("whole" + ext));
    const auto [pieces, released] = write(d("direct" + ext), true, false);
    EXPECT_GE(pieces, 4u) << "big did not come in pieces";
    EXPECT_TRUE(file(d("direct" + ext)) == whole) << "pieces, direct output";
    write(d("buffered" + ext), true, true);
    EXPECT_TRUE(file(d("buffered" + ext)) == whole) << "pieces, buffered output";
    if (format == OutputFormat::Wq && c.piece_bytes == (4 << 20) && test::accepts_direct(d.p.string())) {
      EXPECT_GE(released, 1u) << "no piece's buffer was held and given back";
    }
    auto q = open_model(d("direct" + ext));
    for (size_t i = 0; i < q->tensors().size(); ++i) {
      if (q->tensors()[i].kind != StoredKind::Quantized) continue;
      const QuantizedTensor got = q->load_quantized(i);
      const QuantizedTensor want = quantize_tensor(src->view(i), plan[i].spec, size_t(plan[i].block));
      EXPECT_EQ(got.packed, want.packed) << q->tensors()[i].name;
      if (c.fp16) {
        EXPECT_EQ(got.scales_f16, want.scales_f16) << q->tensors()[i].name;
        EXPECT_EQ(got.zeros_f16, want.zeros_f16) << q->tensors()[i].name;
      } else {
        EXPECT_EQ(got.scales, want.scales) << q->tensors()[i].name;
        EXPECT_EQ(got.zeros, want.zeros) << q->tensors()[i].name;
      }
    }
  }
}

TEST(Writers, GgufBlocksAreRefusedOutsideGguf) {
  Dir d;
  const std::string src_path = make_source(d);
  auto r = open_model(src_path);
  PlanOptions o;
  o.format = OutputFormat::Gguf;
  const std::vector<TensorPlan> plan = make_plan(r->tensors(), o);
  EXPECT_THROW(make_writer(d("x.safetensors"), OutputFormat::Safetensors, plan, *r), Error);
  EXPECT_THROW(make_writer(d("x.gguf"), OutputFormat::Gguf, plan, *r), Error);  // GGUF needs a GGUF source
  EXPECT_THROW(format_from_path("model.bin"), Error);
  EXPECT_FALSE(fs::exists(d("x.safetensors")));
}

TEST(WqReader, BrokenFilesAreErrorsNeverCrashes) {
  Dir d;
  const std::string src_path = make_source(d);
  QuantSpec s;
  s.bits = 4;
  s.block = 32;
  s.asym = true;
  convert(src_path, d("good.wq"), s);
  std::ifstream f(d("good.wq"), std::ios::binary);
  const std::vector<uint8_t> good((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto try_open = [&](const std::vector<uint8_t>& bytes) -> bool {
    {
      std::ofstream o(d("bad.wq"), std::ios::binary);
      o.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    }
    try {
      auto r = open_model(d("bad.wq"));
      for (size_t i = 0; i < r->tensors().size(); ++i) test::read_f32(*r, i);
      return true;
    } catch (const Error&) {
      return false;
    }
  };
  // Cut short anywhere before the last tensor's data ends: an error.
  for (size_t cut = 0; cut < good.size() - 64; cut += (cut < 4096 ? 7 : 997)) {
    EXPECT_FALSE(try_open(std::vector<uint8_t>(good.begin(), good.begin() + long(cut)))) << "cut at " << cut;
  }
  // Every byte of the preamble and header flipped: an error or a file that still reads,
  // never a crash or an out-of-bounds read (ASan checks that part).
  uint64_t header_end;
  std::memcpy(&header_end, good.data() + 16, 8);
  header_end += 64;
  int errors = 0;
  for (size_t i = 0; i < header_end && i < good.size(); ++i) {
    std::vector<uint8_t> b = good;
    b[i] ^= 0x5a;
    errors += !try_open(b);
  }
  EXPECT_GT(errors, 0);
  std::vector<uint8_t> b = good;
  const uint64_t huge = uint64_t(1) << 62;
  std::memcpy(b.data() + 24, &huge, 8);  // header size
  EXPECT_FALSE(try_open(b));
}

// A .wq file: the preamble, the finished header in fbb, and `data_bytes` zero bytes of
// tensor data after it (64-byte aligned).
void write_wq_file(const std::string& path, const flatbuffers::FlatBufferBuilder& fbb, uint64_t data_bytes) {
  WqPreamble pre{};
  std::memcpy(pre.magic, kWqMagic, 8);
  pre.version = kWqVersion;
  pre.header_offset = 64;
  pre.header_size = fbb.GetSize();
  pre.data_offset = (64 + fbb.GetSize() + 63) / 64 * 64;
  std::vector<uint8_t> b(pre.data_offset + data_bytes, 0);
  std::memcpy(b.data(), &pre, 64);
  std::memcpy(b.data() + 64, fbb.GetBufferPointer(), fbb.GetSize());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// A .wq file of quantized [1, 32] tensors (4 bits, block 32, one f32 scale; zeros when
// the scheme is not symmetric), each given as (name, dtype, scheme).
struct WqTensorSpec {
  std::string name, dtype;
  int scheme;
};
void write_wq(const std::string& path, const std::vector<WqTensorSpec>& ts, uint32_t header_version = kWqVersion) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
  const std::vector<int64_t> shape{1, 32};
  uint64_t off = 0;
  for (const WqTensorSpec& t : ts) {
    const uint64_t codes = off, scales = off + 64, zeros = off + 128;
    const bool z = t.scheme != 0;
    tensors.push_back(fb::CreateTensorDirect(fbb, t.name.c_str(), &shape, fb::TensorKind_Quantized, t.dtype.c_str(), 4, 32,
                                             fb::QuantScheme(int8_t(t.scheme)), false, false, 0, 0, 0, 0, false, 16,
                                             codes, 16, scales, 4, z ? zeros : 0, z ? 4 : 0));
    off += 192;
  }
  fbb.Finish(fb::CreateModelDirect(fbb, header_version, "safetensors", nullptr, &tensors), fb::ModelIdentifier());
  write_wq_file(path, fbb, off);
}

std::string open_error(const std::string& path) {
  try {
    auto r = open_model(path);
    for (size_t i = 0; i < r->tensors().size(); ++i) test::read_f32(*r, i);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Issue 11 items 8/10: a .wq with two tensors of one name, a negative or unknown scheme,
// an empty name, or a dtype that does not say "wq<bits>" is refused, naming the value.
TEST(WqReader, DuplicateNamesBadSchemesDtypesAndEmptyNamesAreRefused) {
  Dir d;
  write_wq(d("ok.wq"), {{"a", "wq4", 0}, {"b", "wq4", 2}});
  EXPECT_EQ(open_error(d("ok.wq")), "");
  write_wq(d("dup.wq"), {{"a", "wq4", 0}, {"a", "wq4", 0}});
  EXPECT_NE(open_error(d("dup.wq")).find("a: two tensors have this name"), std::string::npos) << open_error(d("dup.wq"));
  write_wq(d("neg.wq"), {{"a", "wq4", -1}});
  EXPECT_NE(open_error(d("neg.wq")).find("unknown scheme -1"), std::string::npos) << open_error(d("neg.wq"));
  write_wq(d("dtype.wq"), {{"a", "F32", 0}});
  EXPECT_NE(open_error(d("dtype.wq")).find("dtype F32"), std::string::npos) << open_error(d("dtype.wq"));
  write_wq(d("empty.wq"), {{"", "wq4", 0}});
  EXPECT_NE(open_error(d("empty.wq")).find("empty name"), std::string::npos) << open_error(d("empty.wq"));
  // The header's own version (the schema's Model.version) is checked as the preamble's is.
  write_wq(d("v2.wq"), {{"a", "wq4", 0}}, 2);
  EXPECT_NE(open_error(d("v2.wq")).find("the header's version 2 is not supported (1 is)"), std::string::npos)
      << open_error(d("v2.wq"));
}

// A .wq file of one tensor copied as it was (kind Raw): `size` bytes of `dtype` for `shape`.
void write_wq_raw(const std::string& path, const std::string& dtype, const std::vector<int64_t>& shape, uint64_t size) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
  tensors.push_back(fb::CreateTensorDirect(fbb, "t", &shape, fb::TensorKind_Raw, dtype.c_str(), 0, 0, fb::QuantScheme(0), false,
                                           false, 0, 0, 0, 0, false, 0, 0, size));
  fbb.Finish(fb::CreateModelDirect(fbb, kWqVersion, "gguf", nullptr, &tensors), fb::ModelIdentifier());
  write_wq_file(path, fbb, size);
}

// A tensor copied as it was must have the size its dtype and shape need (a writer passed a
// short one on, into a safetensors file its own reader refuses); llama.cpp's block types
// are blocks that dequantize as from the GGUF they came from.
TEST(WqReader, RawTensorsHoldWhatTheirDtypeAndShapeNeed) {
  Dir d;
  write_wq_raw(d("short.wq"), "F32", {4, 8}, 3);
  EXPECT_NE(open_error(d("short.wq")).find("t: 3 bytes of data for shape of 32 F32 elements (128 bytes)"), std::string::npos)
      << open_error(d("short.wq"));
  write_wq_raw(d("i8.wq"), "I8", {4, 8}, 32);  // (not float: opened, not read as f32)
  EXPECT_EQ(open_model(d("i8.wq"))->tensors()[0].kind, StoredKind::Other);
  write_wq_raw(d("q8.wq"), "Q8_0", {2, 32}, 2 * 34);  // two rows of one 34-byte block
  EXPECT_EQ(open_error(d("q8.wq")), "");
  EXPECT_EQ(open_model(d("q8.wq"))->tensors()[0].kind, StoredKind::Ggml);
  write_wq_raw(d("q8short.wq"), "Q8_0", {2, 32}, 60);
  EXPECT_NE(open_error(d("q8short.wq")).find("60 bytes of data for shape of 64 Q8_0 elements (68 bytes)"), std::string::npos)
      << open_error(d("q8short.wq"));
  write_wq_raw(d("q8row.wq"), "Q8_0", {2, 31}, 62);
  EXPECT_NE(open_error(d("q8row.wq")).find("rows of 31 are not whole Q8_0 blocks"), std::string::npos) << open_error(d("q8row.wq"));
  write_wq_raw(d("odd.wq"), "F33", {4}, 16);
  EXPECT_NE(open_error(d("odd.wq")).find("unknown dtype F33"), std::string::npos) << open_error(d("odd.wq"));
}

}  // namespace
}  // namespace wq
