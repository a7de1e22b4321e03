// Bounds-checked little-endian reading for the SMB2 parsers (protocols/smb2).
//
// Every read checks the remaining length first and fails without moving; once a
// read failed the reader stays failed, so a parser may read several fields and check
// ok() once.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "protocols/smb2/smb2.h"

namespace wanopt::protocols::smb2::internal {

inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
inline uint32_t Get32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
inline uint64_t Get64(const uint8_t* p) { return uint64_t{Get32(p)} | uint64_t{Get32(p + 4)} << 32; }
inline void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

class Reader {
 public:
  Reader(std::span<const uint8_t> data, size_t pos) : data_(data), pos_(pos), ok_(pos <= data.size()) {}

  bool ok() const { return ok_; }
  size_t pos() const { return pos_; }

  uint8_t U8() { return Need(1) ? data_[pos_++] : 0; }
  uint16_t U16() {
    if (!Need(2)) return 0;
    pos_ += 2;
    return Get16(data_.data() + pos_ - 2);
  }
  uint32_t U32() {
    if (!Need(4)) return 0;
    pos_ += 4;
    return Get32(data_.data() + pos_ - 4);
  }
  uint64_t U64() {
    if (!Need(8)) return 0;
    pos_ += 8;
    return Get64(data_.data() + pos_ - 8);
  }
  template <size_t N>
  void Copy(std::array<uint8_t, N>& out) {
    if (!Need(N)) return;
    for (size_t i = 0; i < N; ++i) out[i] = data_[pos_ + i];
    pos_ += N;
  }
  void Skip(size_t n) {
    if (Need(n)) pos_ += n;
  }

 private:
  bool Need(size_t n) {
    if (!ok_ || n > data_.size() - pos_) {
      ok_ = false;
      return false;
    }
    return true;
  }

  std::span<const uint8_t> data_;
  size_t pos_;
  bool ok_;
};

// The `length` bytes at `offset` of `data`, if they lie inside it (no overflow).
inline bool Inside(std::span<const uint8_t> data, uint64_t offset, uint64_t length) {
  return offset <= data.size() && length <= data.size() - offset;
}

// The checks every body parser starts with: the command, the direction, not an error
// response, the StructureSize and its fixed part inside the message. An empty
// reason means the body may be read.
inline Error CheckBody(const Message& m, Command command, bool response, uint16_t structure_size) {
  if (m.header.command != command) return Unsupported("another command");
  if (m.header.is_response() != response) return Unsupported(response ? "a request" : "a response");
  if (response && IsErrorResponse(m)) return Unsupported("an error response");
  if (m.bytes.size() < kHeaderSize + 2) return Malformed("message ends before its body");
  if (m.structure_size() != structure_size) return Malformed("unexpected body StructureSize");
  // An odd StructureSize counts one byte of the variable part.
  if (m.bytes.size() < kHeaderSize + (structure_size & ~1u)) return Malformed("body shorter than its fixed part");
  return {};
}
inline bool Failed(const Error& e) { return !e.reason.empty(); }

// The buffer at `offset` (from the header) of `length` bytes, if inside the message
// and not overlapping the header and the body's fixed part (`fixed_end`, from the
// header). An empty buffer is always fine, wherever its offset points.
inline bool Buffer(const Message& m, uint64_t offset, uint64_t length, size_t fixed_end,
                   std::span<const uint8_t>& out) {
  out = {};
  if (length == 0) return true;
  if (offset < fixed_end || !Inside(m.bytes, offset, length)) return false;
  out = m.bytes.subspan(offset, length);
  return true;
}

}  // namespace wanopt::protocols::smb2::internal
