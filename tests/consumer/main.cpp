// Uses wquant through its public header only: ISA list, one tensor quantized and
// dequantized, a small safetensors model converted to .wq and read back, GGUF-only
// options refused for it. Exits non-zero with a message on any mismatch.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#include <wquant/wquant.h>

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "consumer: %s\n", what.c_str());
  return 1;
}

void write_safetensors(const std::string& path, const std::vector<float>& w, int rows, int cols) {
  const std::string header = "{\"w.weight\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(rows) + "," +
                             std::to_string(cols) + "],\"data_offsets\":[0," + std::to_string(w.size() * 4) + "]}}";
  const uint64_t n = header.size();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(header.data(), std::streamsize(n));
  f.write(reinterpret_cast<const char*>(w.data()), std::streamsize(w.size() * 4));
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".";
  std::printf("wquant %s, ISAs:", wquant::version());
  for (const std::string& i : wquant::available_isas()) std::printf(" %s", i.c_str());
  std::printf("\n");

  const int rows = 8, cols = 64;
  std::vector<float> w(size_t(rows) * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i) * 0.37f) * 0.05f;

  wquant::QuantOptions o;
  o.bits = 4;
  o.block = 32;
  o.asym = true;
  const wquant::QuantizedTensor q = wquant::quantize(w.data(), rows, cols, o);
  if (q.packed.size() != size_t(rows) * 32 || q.scales.size() != size_t(rows) * 2) return fail("unexpected sizes");
  const std::vector<float> back = wquant::dequantize(q);
  double err = 0, ref = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    err += (back[i] - w[i]) * (back[i] - w[i]);
    ref += double(w[i]) * w[i];
  }
  if (!(std::sqrt(err / ref) < 0.1)) return fail("4-bit relative error too large");

  // The same bytes under every ISA.
  const std::vector<uint8_t> first = q.packed;
  for (const std::string& isa : wquant::available_isas()) {
    wquant::use_isa(isa);
    if (wquant::quantize(w.data(), rows, cols, o).packed != first) return fail("codes differ under " + isa);
  }

  try {
    wquant::quantize(w.data(), rows, cols, wquant::QuantOptions{9});
    return fail("bits 9 was accepted");
  } catch (const wquant::Error& e) {
    if (e.kind() != wquant::Error::Kind::Usage) return fail(std::string("bits 9: wrong error kind: ") + e.what());
  }

  const std::string in = dir + "/consumer-in.safetensors", out = dir + "/consumer-out.wq";
  write_safetensors(in, w, rows, cols);
  wquant::ConvertOptions co;
  co.quant = o;
  co.overwrite = true;
  const wquant::ConvertResult r = wquant::convert(in, out, co);
  if (r.tensors != 1 || r.quantized != 1) return fail("convert: expected one quantized tensor");
  // llama-quantize's options (a mix name, an importance matrix) are for GGUF output only.
  wquant::ConvertOptions gguf_only = co;
  gguf_only.gguf_type = "Q4_K_M";
  gguf_only.imatrix = dir + "/imatrix.dat";
  try {
    wquant::convert(in, dir + "/consumer-gguf-only.wq", gguf_only);
    return fail("gguf_type Q4_K_M was accepted for .wq output");
  } catch (const wquant::Error& e) {
    if (e.kind() != wquant::Error::Kind::Usage) return fail(std::string("gguf_type with .wq: wrong error kind: ") + e.what());
  }
  wquant::Model m = wquant::Model::open(out);
  if (std::string(m.format()) != "wq" || m.tensors().size() != 1) return fail("the .wq does not read back");
  if (m.read_f32("w.weight") != back) return fail("the .wq's weights differ from dequantize()");
  std::printf("consumer: ok\n");
  return 0;
}
