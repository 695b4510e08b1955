// Writes the GGUF fixtures (tests/gguf_fixture.h) to files, so llama-quantize can be run
// on exactly what the tests regenerate:
//   wq_gguf_fixture ../shared/data/models/stories260K/stories260K-f32.gguf fixture.gguf [192|256|moe]
//   wq_gguf_fixture STORIES PREFIX split   (the 192 fixture as PREFIX-0000K-of-00003.gguf, 20 tensors a shard)
//   wq_gguf_fixture STORIES PREFIX split0  (the same after a first shard of keys alone: PREFIX-0000K-of-00004.gguf)
#include <cstdio>
#include <cstring>
#include <exception>

#include "tests/gguf_fixture.h"

int main(int argc, char** argv) {
  const char* which = argc == 4 ? argv[3] : "192";
  if ((argc != 3 && argc != 4) ||
      (std::strcmp(which, "192") != 0 && std::strcmp(which, "256") != 0 && std::strcmp(which, "moe") != 0 &&
       std::strcmp(which, "split") != 0 && std::strcmp(which, "split0") != 0)) {
    std::fprintf(stderr, "usage: %s STORIES260K_F32.gguf OUT.gguf [192|256|moe|split|split0]\n", argv[0]);
    return 2;
  }
  try {
    if (std::strcmp(which, "192") == 0) {
      wq::test::write_gguf_fixture(argv[1], argv[2]);
    } else if (std::strcmp(which, "split") == 0 || std::strcmp(which, "split0") == 0) {
      wq::test::write_gguf_fixture_split(argv[1], argv[2], 20, std::strcmp(which, "split0") == 0 ? 0 : -1);
    } else {
      wq::test::write_gguf_wide_fixture(argv[1], argv[2],
                                        std::strcmp(which, "256") == 0 ? wq::test::dense_fixture() : wq::test::moe_fixture());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wq_gguf_fixture: %s\n", e.what());
    return 1;
  }
  return 0;
}
