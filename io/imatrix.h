// Importance matrices as llama-imatrix writes them, read as llama-quantize reads them
// (tools/quantize/quantize.cpp load_imatrix / load_legacy_imatrix): the legacy binary
// .dat and the GGUF imatrix (<name>.in_sum2 + <name>.counts tensors). The values kept
// are what llama-quantize hands its quantizers: the sums divided by the call count.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "io/gguf_reader.h"

namespace wq {

struct Imatrix {
  std::map<std::string, std::vector<float>> entries;  // by tensor name; per matrix (expert) ne0 values
  std::vector<std::string> datasets;                  // the text(s) it was computed on
  int chunks = 0;  // chunks it was computed on (the .dat's last call, the GGUF's imatrix.chunk_count)
};

// Reads either format (told apart by the GGUF magic). Throws Error naming the file and
// the entry for anything malformed: truncation, a count or length out of range, an entry
// twice, a non-finite value, sums without counts, no entries at all.
Imatrix read_imatrix(const std::string& path);
// The same after filter_imatrix(include, exclude): a non-finite value in an entry the
// filter drops is no error, as in llama-quantize.
Imatrix read_imatrix(const std::string& path, const std::vector<std::string>& include, const std::vector<std::string>& exclude);

// llama-quantize's --exclude-weights (drop entries whose name contains any of them) and
// --include-weights (keep only entries whose name contains one of them).
void filter_imatrix(Imatrix& m, const std::vector<std::string>& include, const std::vector<std::string>& exclude);

// The quantize.imatrix.* keys llama-quantize writes, in its order: file (the path as
// given, at most 127 bytes), dataset (the first, at most 127 bytes, if any), entries_count
// and chunks_count (if > 0), both i32. Empty for an empty imatrix (nothing is used).
std::vector<GgufKV> imatrix_keys(const Imatrix& m, const std::string& path_as_given);

}  // namespace wq
