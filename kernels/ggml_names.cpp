#include "kernels/ggml_blocks.h"

namespace wq {

const char* ggml_block_name(GgmlBlock t) {
  switch (t) {
    case GgmlBlock::Q8_0: return "Q8_0";
    case GgmlBlock::Q4_0: return "Q4_0";
    case GgmlBlock::Q4_1: return "Q4_1";
    case GgmlBlock::Q5_0: return "Q5_0";
    case GgmlBlock::Q5_1: return "Q5_1";
  }
  return "?";
}

}  // namespace wq
