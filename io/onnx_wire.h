// Protocol-buffer wire format, just enough to take an ONNX model apart without letting
// protobuf copy tensor payloads: a model over 2 GB cannot be parsed whole (protobuf's
// limit), and an embedded raw_data would be copied into a std::string. The reader walks
// the top-level fields itself, hands protobuf only the small parts (graph structure,
// tensor headers) and keeps the payloads as spans of the mmapped file; the writer emits
// the same framing around payloads it streams.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace wq::onnxwire {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

// One field of a message: its number, wire type, and where its bytes are. For kLen the
// payload is [data, data + len); for kVarint `value` holds the number; whole is the
// field with its key (what to copy to keep the field).
struct Field {
  uint32_t number = 0;
  WireType type = kVarint;
  uint64_t value = 0;
  const uint8_t* data = nullptr;
  uint64_t len = 0;
  const uint8_t* whole = nullptr;
  uint64_t whole_len = 0;
};

// Splits [p, p + n) into its fields. Throws Error naming `what` for a truncated or
// malformed message (bad varint, a length past the end, groups, unknown wire types).
std::vector<Field> fields(const uint8_t* p, uint64_t n, const std::string& what);

// Decodes the varints of a packed repeated field; throws naming `what`.
std::vector<uint64_t> packed_varints(const uint8_t* p, uint64_t n, const std::string& what);

void put_varint(std::string& out, uint64_t v);
size_t varint_size(uint64_t v);
// Key and length of a length-delimited field (the payload follows).
void put_len_header(std::string& out, uint32_t number, uint64_t len);
size_t len_header_size(uint32_t number, uint64_t len);

}  // namespace wq::onnxwire
