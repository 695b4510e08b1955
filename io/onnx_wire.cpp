#include "io/onnx_wire.h"

#include "engine/error.h"

namespace wq::onnxwire {
namespace {

bool read_varint(const uint8_t*& p, const uint8_t* end, uint64_t* v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (p >= end) return false;
    const uint8_t b = *p++;
    if (shift == 63 && b > 1) return false;  // more than 64 bits
    r |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

}  // namespace

std::vector<Field> fields(const uint8_t* p, uint64_t n, const std::string& what) {
  std::vector<Field> out;
  const uint8_t* end = p + n;
  while (p < end) {
    Field f;
    f.whole = p;
    uint64_t key = 0;
    if (!read_varint(p, end, &key)) throw Error(what + ": truncated or malformed protobuf (field key)");
    f.number = uint32_t(key >> 3);
    if (f.number == 0 || (key >> 3) > 0x1fffffff) throw Error(what + ": malformed protobuf (field number 0)");
    switch (key & 7) {
      case kVarint:
        f.type = kVarint;
        if (!read_varint(p, end, &f.value)) throw Error(what + ": truncated protobuf (varint of field " + std::to_string(f.number) + ")");
        break;
      case kFixed64:
      case kFixed32: {
        const uint64_t w = (key & 7) == kFixed64 ? 8 : 4;
        f.type = WireType(key & 7);
        if (uint64_t(end - p) < w) throw Error(what + ": truncated protobuf (field " + std::to_string(f.number) + ")");
        f.data = p;
        f.len = w;
        p += w;
        break;
      }
      case kLen:
        f.type = kLen;
        if (!read_varint(p, end, &f.len)) throw Error(what + ": truncated protobuf (length of field " + std::to_string(f.number) + ")");
        if (f.len > uint64_t(end - p))
          throw Error(what + ": truncated protobuf: field " + std::to_string(f.number) + " claims " + std::to_string(f.len) + " bytes, " + std::to_string(end - p) + " remain");
        f.data = p;
        p += f.len;
        break;
      default:
        throw Error(what + ": malformed protobuf (wire type " + std::to_string(key & 7) + " of field " + std::to_string(f.number) + ")");
    }
    f.whole_len = uint64_t(p - f.whole);
    out.push_back(f);
  }
  return out;
}

std::vector<uint64_t> packed_varints(const uint8_t* p, uint64_t n, const std::string& what) {
  std::vector<uint64_t> out;
  const uint8_t* end = p + n;
  while (p < end) {
    uint64_t v = 0;
    if (!read_varint(p, end, &v)) throw Error(what + ": malformed packed integers");
    out.push_back(v);
  }
  return out;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}

size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void put_len_header(std::string& out, uint32_t number, uint64_t len) {
  put_varint(out, (uint64_t(number) << 3) | kLen);
  put_varint(out, len);
}

size_t len_header_size(uint32_t number, uint64_t len) {
  return varint_size((uint64_t(number) << 3) | kLen) + varint_size(len);
}

}  // namespace wq::onnxwire
