// Bounds-checked reading of DCE/RPC and NDR bytes, for the parsers in
// protocols/common/dcerpc and those built on it (protocols/mapi/epm.cc).
//
// Every read checks the remaining length first and fails without moving; once a
// read failed the reader stays failed, so a parser may read several fields and check
// ok() once. Alignment is relative to the start of the span (NDR aligns relative to
// the start of the stub, PDU bodies relative to the start of the PDU).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "protocols/common/dcerpc/dcerpc.h"

namespace wanopt::protocols::dcerpc::internal {

inline uint16_t Get16(const uint8_t* p, bool le) {
  return le ? static_cast<uint16_t>(p[0] | p[1] << 8) : static_cast<uint16_t>(p[0] << 8 | p[1]);
}
inline uint32_t Get32(const uint8_t* p, bool le) {
  return le ? (uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24)
            : (uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]});
}
inline void Put16(uint8_t* p, uint16_t v, bool le) {
  p[le ? 0 : 1] = static_cast<uint8_t>(v);
  p[le ? 1 : 0] = static_cast<uint8_t>(v >> 8);
}
inline void Put32(uint8_t* p, uint32_t v, bool le) {
  for (int i = 0; i < 4; ++i) p[le ? i : 3 - i] = static_cast<uint8_t>(v >> (8 * i));
}

class Reader {
 public:
  Reader(std::span<const uint8_t> data, size_t pos, bool little_endian)
      : data_(data), pos_(pos), le_(little_endian), ok_(pos <= data.size()) {}

  bool ok() const { return ok_; }
  size_t pos() const { return pos_; }
  size_t remaining() const { return ok_ ? data_.size() - pos_ : 0; }
  bool little_endian() const { return le_; }

  uint8_t U8() {
    if (!Need(1)) return 0;
    return data_[pos_++];
  }
  uint16_t U16() {
    if (!Need(2)) return 0;
    uint16_t v = Get16(data_.data() + pos_, le_);
    pos_ += 2;
    return v;
  }
  uint32_t U32() {
    if (!Need(4)) return 0;
    uint32_t v = Get32(data_.data() + pos_, le_);
    pos_ += 4;
    return v;
  }
  Uuid ReadUuid() {
    if (!Need(16)) return {};
    Uuid u = Uuid::Read(data_.data() + pos_, le_);
    pos_ += 16;
    return u;
  }
  // The next n bytes, or an empty span (and failed) if there are fewer.
  std::span<const uint8_t> Bytes(size_t n) {
    if (!Need(n)) return {};
    auto out = data_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  void Skip(size_t n) {
    if (Need(n)) pos_ += n;
  }
  // Skips padding up to a multiple of `n` (a power of two). The padding must be
  // there: a stream that ends before it is short.
  void Align(size_t n) {
    size_t pad = (n - pos_ % n) % n;
    Skip(pad);
  }
  void Fail() { ok_ = false; }

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
  bool le_;
  bool ok_;
};

}  // namespace wanopt::protocols::dcerpc::internal
