// UTF-8 as RFC 3629 defines it (shortest forms, no surrogates, nothing above U+10FFFF):
// the writers check names that go into text fields which must be UTF-8 (a safetensors
// header is JSON; flatbuffers strings are UTF-8, and readers such as flatc and Rust's
// verifier refuse others), and the console escapes the bytes that are not.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace wq {

// Length of the well-formed sequence of two or more bytes at s[i], or 0 (an ASCII byte,
// or a malformed sequence).
inline size_t utf8_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

inline bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
    } else if (const size_t n = utf8_length(s, i)) {
      i += n;
    } else {
      return false;
    }
  }
  return true;
}

// s with every byte that does not begin a well-formed sequence replaced by U+FFFD (for
// informative text such as a file name, which must be UTF-8 where it is written).
inline std::string valid_utf8(std::string_view s) {
  std::string r;
  r.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      r += s[i++];
    } else if (const size_t n = utf8_length(s, i)) {
      r.append(s.substr(i, n));
      i += n;
    } else {
      r += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return r;
}

}  // namespace wq
