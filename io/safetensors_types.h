// The dtype strings of the safetensors format and their element sizes, shared by the
// reader and the writer.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>

#include "kernels/kernels.h"

namespace wq {

struct SafetensorsDType {
  const char* name;
  size_t size;
  bool is_float;  // one of the three float dtypes wquant quantizes
  DType dtype;    // valid when is_float
};

inline const SafetensorsDType* find_safetensors_dtype(const std::string& name) {
  static const SafetensorsDType kTypes[] = {
      {"F32", 4, true, DType::F32},   {"F16", 2, true, DType::F16},   {"BF16", 2, true, DType::BF16},
      {"F64", 8, false, DType::F32},  {"I64", 8, false, DType::F32},  {"U64", 8, false, DType::F32},
      {"I32", 4, false, DType::F32},  {"U32", 4, false, DType::F32},  {"I16", 2, false, DType::F32},
      {"U16", 2, false, DType::F32},  {"I8", 1, false, DType::F32},   {"U8", 1, false, DType::F32},
      {"BOOL", 1, false, DType::F32}, {"F8_E4M3", 1, false, DType::F32}, {"F8_E5M2", 1, false, DType::F32},
  };
  for (const SafetensorsDType& t : kTypes) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

inline const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "F32";
}

}  // namespace wq
