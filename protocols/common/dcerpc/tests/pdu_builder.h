// Test helpers for DCE/RPC PDUs (protocols/common/dcerpc/dcerpc.h): the captured
// streams read from WANOPT_MODULE_FIXTURES (the test target defines it: the captures
// from mapi.pcap in protocols/mapi/tests/fixtures), and PDUs built by hand, in either
// byte order, for what the capture lacks. Shared by the dcerpc tests and the mapi
// module's endpoint-mapper tests. Helpers fail the running doctest test on bad input.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "protocols/common/dcerpc/dcerpc.h"

namespace wanopt::protocols::dcerpc::testing {

using Bytes = std::vector<uint8_t>;

inline Bytes Fixture(const std::string& name) {
  std::ifstream in(std::string(WANOPT_MODULE_FIXTURES) + "/" + name, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture " << name);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// Splits a whole stream into PDUs (offset, length); fails the test on anything else.
inline std::vector<std::pair<size_t, size_t>> SplitAll(std::span<const uint8_t> stream, const Limits& limits = {}) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t pos = 0;
  while (pos < stream.size()) {
    Split s = SplitPdu(stream.subspan(pos), limits);
    REQUIRE_MESSAGE(s.kind == Split::kPdu, "at offset " << pos << ": " << s.error.reason);
    out.emplace_back(pos, s.pdu.bytes.size());
    pos += s.pdu.bytes.size();
  }
  return out;
}

inline Pdu MustParse(std::span<const uint8_t> bytes) {
  auto pdu = ParsePdu(bytes);
  REQUIRE_MESSAGE(pdu.ok(), pdu.error().reason);
  return *pdu;
}

// ---- building PDUs by hand, in either byte order

struct Writer {
  bool le = true;
  Bytes b;
  void U8(uint8_t v) { b.push_back(v); }
  void U16(uint16_t v) {
    if (le) { U8(v & 0xff); U8(v >> 8); }
    else { U8(v >> 8); U8(v & 0xff); }
  }
  void U32(uint32_t v) {
    if (le) { U16(v & 0xffff); U16(v >> 16); }
    else { U16(v >> 16); U16(v & 0xffff); }
  }
  void Id(const Uuid& u) {
    uint8_t raw[16];
    u.Write(raw, le);
    b.insert(b.end(), raw, raw + 16);
  }
  // p_syntax_id_t: the version is one u32 with the major version in its low half.
  void Syntax(const Uuid& u, uint16_t major, uint16_t minor) {
    Id(u);
    U32(uint32_t{minor} << 16 | major);
  }
  void Raw(std::span<const uint8_t> bytes) { b.insert(b.end(), bytes.begin(), bytes.end()); }
  void Align(size_t n) {
    while (b.size() % n) U8(0xaa);  // NDR padding bytes are arbitrary: not zero on purpose
  }
};

struct Auth {
  AuthLevel level = AuthLevel::kConnect;
  uint8_t type = 10;  // NTLM
  uint8_t pad = 0;
  uint16_t verifier = 16;
};

inline Bytes BuildPdu(PType ptype, uint8_t flags, uint32_t call_id, std::span<const uint8_t> body, bool le,
               std::optional<Auth> auth = std::nullopt) {
  Writer w{le};
  w.U8(5);
  w.U8(0);
  w.U8(static_cast<uint8_t>(ptype));
  w.U8(flags);
  w.U8(le ? 0x10 : 0x00);
  w.U8(0);
  w.U8(0);
  w.U8(0);
  size_t length = kHeaderSize + body.size() + (auth ? auth->pad + kSecTrailerSize + auth->verifier : 0);
  w.U16(static_cast<uint16_t>(length));
  w.U16(auth ? auth->verifier : 0);
  w.U32(call_id);
  w.Raw(body);
  if (auth) {
    for (int i = 0; i < auth->pad; ++i) w.U8(0);
    w.U8(auth->type);
    w.U8(static_cast<uint8_t>(auth->level));
    w.U8(auth->pad);
    w.U8(0);
    w.U32(0x1234);
    for (int i = 0; i < auth->verifier; ++i) w.U8(0x5a);
  }
  return w.b;
}

inline Bytes ResponseBody(bool le, std::span<const uint8_t> stub, uint32_t alloc_hint) {
  Writer w{le};
  w.U32(alloc_hint);
  w.U16(0);  // context id
  w.U8(0);
  w.U8(0);
  w.Raw(stub);
  return w.b;
}

inline Bytes RequestBody(bool le, uint16_t opnum, std::span<const uint8_t> stub, const Uuid* object = nullptr) {
  Writer w{le};
  w.U32(static_cast<uint32_t>(stub.size()));
  w.U16(0);
  w.U16(opnum);
  if (object) w.Id(*object);
  w.Raw(stub);
  return w.b;
}

}  // namespace wanopt::protocols::dcerpc::testing
