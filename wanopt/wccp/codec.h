// Bounds-checked reading and appending of WCCPv2 bytes (big-endian), shared by
// message.cc and components.cc. Not part of the WCCP API.
//
// Every read checks the remaining length first; once a read failed the reader stays
// failed and returns zeros, so a parser may read several fields and check ok() once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "util/bytes.h"
#include "wanopt/wccp/message.h"

namespace wanopt::wccp::internal {

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> data) : data_(data) {}
  bool ok() const { return ok_; }
  size_t remaining() const { return ok_ ? data_.size() - pos_ : 0; }
  bool done() const { return ok_ && pos_ == data_.size(); }
  uint8_t U8() { return Need(1) ? data_[pos_++] : 0; }
  uint16_t U16() {
    if (!Need(2)) return 0;
    pos_ += 2;
    return bytes::GetBe16(data_.data() + pos_ - 2);
  }
  uint32_t U32() {
    if (!Need(4)) return 0;
    pos_ += 4;
    return bytes::GetBe32(data_.data() + pos_ - 4);
  }
  std::span<const uint8_t> Bytes(size_t n) {
    if (!Need(n)) return {};
    pos_ += n;
    return data_.subspan(pos_ - n, n);
  }
  // A count followed by `count` elements of at least `min_size` bytes each: false
  // (and failed) if the count is above `max` or the elements cannot fit.
  bool Count(uint32_t count, size_t max, size_t min_size) {
    if (count > max || count * min_size > remaining()) ok_ = false;
    return ok_;
  }
  void Fail() { ok_ = false; }

 private:
  bool Need(size_t n) {
    if (!ok_ || data_.size() - pos_ < n) ok_ = false;
    return ok_;
  }
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) {
    out_.resize(out_.size() + 2);
    bytes::PutBe16(out_.data() + out_.size() - 2, v);
  }
  void U32(uint32_t v) {
    out_.resize(out_.size() + 4);
    bytes::PutBe32(out_.data() + out_.size() - 4, v);
  }
  void Bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  size_t size() const { return out_.size(); }
  void PatchU16(size_t at, uint16_t v) { bytes::PutBe16(out_.data() + at, v); }

 private:
  std::vector<uint8_t>& out_;
};

// Component bodies (without the type/length header). Decoders require the body to be
// consumed exactly, except where noted in components.cc.
bool DecodeSecurity(std::span<const uint8_t> body, SecurityInfo& out);
bool DecodeService(std::span<const uint8_t> body, ServiceInfo& out);
bool DecodeRouterIdentity(std::span<const uint8_t> body, RouterIdentity& out);
bool DecodeWebCacheIdentity(std::span<const uint8_t> body, WebCacheIdentity& out);
bool DecodeRouterView(std::span<const uint8_t> body, RouterView& out);
bool DecodeWebCacheView(std::span<const uint8_t> body, WebCacheView& out);
bool DecodeHashAssignment(std::span<const uint8_t> body, HashAssignment& out);
bool DecodeAlternateAssignment(std::span<const uint8_t> body, AlternateAssignment& out);
bool DecodeQuery(std::span<const uint8_t> body, QueryInfo& out);
bool DecodeCapabilities(std::span<const uint8_t> body, Capabilities& out);
bool DecodeCommands(std::span<const uint8_t> body, std::vector<Command>& out);

void EncodeSecurity(Writer& w, const SecurityInfo& v);
void EncodeService(Writer& w, const ServiceInfo& v);
void EncodeRouterIdentity(Writer& w, const RouterIdentity& v);
void EncodeWebCacheIdentity(Writer& w, const WebCacheIdentity& v);
void EncodeRouterView(Writer& w, const RouterView& v);
void EncodeWebCacheView(Writer& w, const WebCacheView& v);
void EncodeHashAssignment(Writer& w, const HashAssignment& v);
void EncodeAlternateAssignment(Writer& w, const AlternateAssignment& v);
void EncodeQuery(Writer& w, const QueryInfo& v);
void EncodeCapabilities(Writer& w, const Capabilities& v);
void EncodeCommands(Writer& w, const std::vector<Command>& v);

}  // namespace wanopt::wccp::internal
