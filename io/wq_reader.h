// The native .wq model in: preamble checked, the flatbuffer header verified
// (flatbuffers::Verifier) before it is read, then every offset and size checked against
// the file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "io/model_reader.h"

namespace wq {

std::unique_ptr<ModelReader> open_wq(const std::string& path);

// True if the first 8 bytes are the .wq magic.
bool is_wq_file(const uint8_t* first8);

}  // namespace wq
