// Writes the GGUF fixture (tests/gguf_fixture.h) to a file, so llama-quantize can be run
// on exactly what the test regenerates:
//   wq_gguf_fixture ../shared/data/models/stories260K/stories260K-f32.gguf fixture.gguf
#include <cstdio>
#include <exception>

#include "tests/gguf_fixture.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s STORIES260K_F32.gguf OUT.gguf\n", argv[0]);
    return 2;
  }
  try {
    wq::test::write_gguf_fixture(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wq_gguf_fixture: %s\n", e.what());
    return 1;
  }
  return 0;
}
