// Shared by the smb2 parser tests: the captured streams (tests/fixtures), a builder
// for hand-made messages, and one call that runs every body parser a message may
// have, checking that whatever it returns lies inside the message.
#pragma once

#include <doctest/doctest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "protocols/smb2/messages.h"

namespace wanopt::protocols::smb2::testing {

using Bytes = std::vector<uint8_t>;

inline Bytes Fixture(const std::string& name) {
  std::ifstream in(std::string(WANOPT_MODULE_FIXTURES) + "/" + name, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture " << name);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

inline const char* const kStreams[] = {
    "smb2.c2s.bin",          "smb2.s2c.bin",          "smb2readwrite.c2s.bin", "smb2readwrite.s2c.bin",
    "smb2-multiple-pdus.c2s.bin", "smb2-multiple-pdus.s2c.bin", "smb3.c2s.bin", "smb3.s2c.bin",
    "smb311.c2s.bin",        "smb311.s2c.bin",
};

// The payloads of every frame of a whole stream; fails the test on anything else.
inline std::vector<std::span<const uint8_t>> Frames(std::span<const uint8_t> stream) {
  std::vector<std::span<const uint8_t>> out;
  size_t pos = 0;
  while (pos < stream.size()) {
    FrameSplit s = SplitFrame(stream.subspan(pos));
    REQUIRE_MESSAGE(s.kind == FrameSplit::kFrame, "at offset " << pos << ": " << s.error.reason);
    out.push_back(s.payload);
    pos += s.bytes.size();
  }
  return out;
}

// Little-endian body bytes.
struct Writer {
  Bytes b;
  Writer& U8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  Writer& U16(uint16_t v) { return U8(static_cast<uint8_t>(v)).U8(static_cast<uint8_t>(v >> 8)); }
  Writer& U32(uint32_t v) { return U16(static_cast<uint16_t>(v)).U16(static_cast<uint16_t>(v >> 16)); }
  Writer& U64(uint64_t v) { return U32(static_cast<uint32_t>(v)).U32(static_cast<uint32_t>(v >> 32)); }
  Writer& Zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
  Writer& Append(const Bytes& more) {
    b.insert(b.end(), more.begin(), more.end());
    return *this;
  }
};

// A whole message: a header for `command` and `body` after it.
inline Bytes MakeMessage(Command command, bool response, const Bytes& body, uint32_t status = 0,
                         uint32_t next_command = 0) {
  Header h;
  h.command = command;
  h.status = status;
  h.flags = response ? flags::kServerToRedir : 0;
  h.next_command = next_command;
  h.message_id = 7;
  Bytes out(kHeaderSize);
  WriteHeader(h, out.data());
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

inline bool InsideOf(std::span<const uint8_t> inner, std::span<const uint8_t> outer) {
  return inner.empty() || (inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size());
}

// Runs the parser(s) for the message's command and direction (the error-body parser
// for error responses). Returns the first error, or an empty reason. Every span a
// parser returns is CHECKed to lie inside the message.
inline Error ParseBody(const Message& m) {
  const auto in = [&](std::span<const uint8_t> s) { CHECK(InsideOf(s, m.bytes)); };
  const bool response = m.header.is_response();
  if (response && IsErrorResponse(m)) {
    auto r = ParseErrorResponse(m);
    if (r) in(r->data);
    return r ? Error{} : r.error();
  }
  auto check = [](const auto& result) { return result ? Error{} : result.error(); };
  switch (m.header.command) {
    case Command::kNegotiate:
      if (response) {
        auto r = ParseNegotiateResponse(m);
        if (!r) return r.error();
        in(r->security_buffer);
        for (const auto& c : r->contexts) in(c.data);
        return {};
      } else {
        auto r = ParseNegotiateRequest(m);
        if (!r) return r.error();
        for (const auto& c : r->contexts) in(c.data);
        return {};
      }
    case Command::kSessionSetup:
      if (response) {
        auto r = ParseSessionSetupResponse(m);
        if (r) in(r->security_buffer);
        return check(r);
      } else {
        auto r = ParseSessionSetupRequest(m);
        if (r) in(r->security_buffer);
        return check(r);
      }
    case Command::kTreeConnect:
      return response ? check(ParseTreeConnectResponse(m)) : check(ParseTreeConnectRequest(m));
    case Command::kCreate: {
      std::vector<CreateContext> contexts;
      Error e;
      if (response) {
        auto r = ParseCreateResponse(m);
        if (r) contexts = r->contexts;
        e = check(r);
      } else {
        auto r = ParseCreateRequest(m);
        if (r) contexts = r->contexts;
        e = check(r);
      }
      for (const auto& c : contexts) {
        in(c.data);
        in({reinterpret_cast<const uint8_t*>(c.name.data()), c.name.size()});
      }
      return e;
    }
    case Command::kClose:
      return response ? check(ParseCloseResponse(m)) : check(ParseCloseRequest(m));
    case Command::kRead:
      if (response) {
        auto r = ParseReadResponse(m);
        if (r) {
          in(r->data);
          CHECK(r->data.size() == r->data_length);
        }
        return check(r);
      } else {
        auto r = ParseReadRequest(m);
        if (r) in(r->channel_info);
        return check(r);
      }
    case Command::kWrite:
      if (response) return check(ParseWriteResponse(m));
      {
        auto r = ParseWriteRequest(m);
        if (r) in(r->data);
        return check(r);
      }
    case Command::kFlush:
      return response ? check(ParseEmptyBody(m)) : check(ParseFlushRequest(m));
    case Command::kLock:
      return response ? check(ParseEmptyBody(m)) : check(ParseLockRequest(m));
    case Command::kSetInfo:
      if (response) return check(ParseEmptyBody(m));
      {
        auto r = ParseSetInfoRequest(m);
        if (r) in(r->buffer);
        return check(r);
      }
    case Command::kOplockBreak:
      return check(ParseOplockBreak(m));
    case Command::kCancel:
    case Command::kEcho:
    case Command::kLogoff:
    case Command::kTreeDisconnect:
      return check(ParseEmptyBody(m));
    default:
      return {};  // IOCTL, QUERY_DIRECTORY, CHANGE_NOTIFY, QUERY_INFO: header only
  }
}

}  // namespace wanopt::protocols::smb2::testing
