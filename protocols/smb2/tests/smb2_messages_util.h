// Whole SMB2 messages for the read-ahead tests: a client's requests and a server's
// answers, built field by field as MS-SMB2 2.2 lays them out (the smallest valid
// form of each), on the Writer of smb2_test_util.h.
#pragma once

#include <functional>
#include <string>

#include "protocols/smb2/tests/smb2_test_util.h"

namespace wanopt::protocols::smb2::testing {

inline Bytes Build(const Header& h, const Bytes& body) {
  Bytes out(kHeaderSize);
  WriteHeader(h, out.data());
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

inline Bytes Framed(const Bytes& message) {
  Bytes out(kFramePrefixSize);
  WriteFramePrefix(out.data(), static_cast<uint32_t>(message.size()));
  out.insert(out.end(), message.begin(), message.end());
  return out;
}

// Calls `frame` for each whole frame of `stream` (prefix included).
inline void SplitFrames(std::span<const uint8_t> stream, const std::function<void(std::span<const uint8_t>)>& frame) {
  size_t pos = 0;
  while (pos < stream.size()) {
    FrameSplit s = SplitFrame(stream.subspan(pos));
    REQUIRE_MESSAGE(s.kind == FrameSplit::kFrame, "at offset " << pos);
    frame(s.bytes);
    pos += s.bytes.size();
  }
}

inline Header ResponseTo(const Header& request) {
  Header r = request;
  r.flags = flags::kServerToRedir;
  r.credit = std::max<uint16_t>(1, request.credit);
  r.next_command = 0;
  return r;
}

inline Bytes NegotiateRequestBody() {
  return Writer{}.U16(36).U16(1).U16(security_mode::kSigningEnabled).U16(0).U32(0).Zeros(16).U64(0).U16(dialect::kSmb302).b;
}

inline Bytes NegotiateResponseBody(uint16_t dialect, bool signing_required) {
  uint16_t mode = security_mode::kSigningEnabled | (signing_required ? security_mode::kSigningRequired : 0);
  return Writer{}
      .U16(65).U16(mode).U16(dialect).U16(0).Zeros(16).U32(0)
      .U32(8 << 20).U32(8 << 20).U32(8 << 20).U64(0).U64(0)
      .U16(kHeaderSize + 64).U16(1).U32(0).U8(0x60)  // a one-byte security buffer
      .b;
}

inline Bytes CreateRequestBody(const std::string& name, uint8_t oplock_level) {
  Bytes utf16;
  for (char ch : name) utf16.push_back(static_cast<uint8_t>(ch)), utf16.push_back(0);
  return Writer{}
      .U16(57).U8(0).U8(oplock_level).U32(2).U64(0).U64(0)
      .U32(0x80000000).U32(0).U32(7).U32(1).U32(0)
      .U16(kHeaderSize + 56).U16(static_cast<uint16_t>(utf16.size())).U32(0).U32(0)
      .Append(utf16)
      .b;
}

inline Bytes CreateResponseBody(uint8_t oplock_level, const FileId& id, uint64_t end_of_file) {
  return Writer{}
      .U16(89).U8(oplock_level).U8(0).U32(1).U64(0).U64(0).U64(0).U64(0)
      .U64(end_of_file).U64(end_of_file).U32(0x80).U32(0)
      .U64(id.persistent).U64(id.volatile_id).U32(0).U32(0).U8(0)
      .b;
}

inline Bytes ReadResponseBody(std::span<const uint8_t> data) {
  Writer w;
  w.U16(17).U8(kHeaderSize + 16).U8(0).U32(static_cast<uint32_t>(data.size())).U32(0).U32(0);
  w.b.insert(w.b.end(), data.begin(), data.end());
  return w.b;
}

inline Bytes ErrorBody() { return Writer{}.U16(9).U8(0).U8(0).U32(0).U8(0).b; }

inline Bytes OplockBreakBody(const FileId& id, uint8_t level) {
  return Writer{}.U16(24).U8(level).U8(0).U32(0).U64(id.persistent).U64(id.volatile_id).b;
}

}  // namespace wanopt::protocols::smb2::testing
