// Test helpers for the endpoint mapper's ept_map (protocols/mapi/epm.h): towers,
// ept_map request and response stubs built by hand, response fragments, and the
// port remaps the tests rewrite to. On the DCE/RPC helpers in
// protocols/common/dcerpc/tests/pdu_builder.h. Shared by epm_test.cc and
// epm_malformed_test.cc.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "protocols/common/dcerpc/tests/pdu_builder.h"
#include "protocols/mapi/epm.h"

namespace wanopt::protocols::epm::testing {

using namespace wanopt::protocols::dcerpc::testing;

inline uint32_t Ip(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t{a} << 24 | uint32_t{b} << 16 | uint32_t{c} << 8 | d;
}

// Tower octet strings (always little-endian; port and address big-endian).
struct TowerSpec {
  Uuid interface;
  uint16_t major = 0;
  uint16_t minor = 0;
  std::optional<uint16_t> port = 135;
  uint32_t ip = 0;
  bool pipe = false;  // ncacn_np instead of ncacn_ip_tcp
};

inline Bytes TowerOctets(const TowerSpec& t) {
  Writer w{true};
  auto uuid_floor = [&](const Uuid& u, uint16_t major, uint16_t minor) {
    w.U16(19);
    w.U8(0x0d);
    w.Id(u);
    w.U16(major);
    w.U16(2);
    w.U16(minor);
  };
  auto simple_floor = [&](uint8_t protocol, Bytes rhs) {
    w.U16(1);
    w.U8(protocol);
    w.U16(static_cast<uint16_t>(rhs.size()));
    w.Raw(rhs);
  };
  w.U16(t.pipe ? 5 : (t.port ? 5 : 4));
  uuid_floor(t.interface, t.major, t.minor);
  uuid_floor(uuids::kNdr, 2, 0);
  simple_floor(0x0b, {0, 0});
  if (t.pipe) {
    simple_floor(0x0f, {'\\', 'p', 'i', 'p', 'e', '\\', 'x', 0});
    simple_floor(0x11, {'S', 'R', 'V', 0});
  } else {
    if (t.port) simple_floor(0x07, {static_cast<uint8_t>(*t.port >> 8), static_cast<uint8_t>(*t.port)});
    simple_floor(0x09, {static_cast<uint8_t>(t.ip >> 24), static_cast<uint8_t>(t.ip >> 16),
                        static_cast<uint8_t>(t.ip >> 8), static_cast<uint8_t>(t.ip)});
  }
  return w.b;
}

inline void NdrTower(Writer& w, std::span<const uint8_t> octets) {
  w.Align(4);
  w.U32(static_cast<uint32_t>(octets.size()));
  w.U32(static_cast<uint32_t>(octets.size()));
  w.Raw(octets);
}

// An ept_map response stub; a referent of 0 is a null pointer, a repeated one a
// full pointer to the same tower (whose octets then are not repeated).
inline Bytes MapResponseStub(bool le, const std::vector<Bytes>& towers, uint32_t status = 0,
                      std::vector<uint32_t> referents = {}) {
  if (referents.empty())
    for (size_t i = 0; i < towers.size(); ++i) referents.push_back(static_cast<uint32_t>(3 + i));
  Writer w{le};
  for (int i = 0; i < 20; ++i) w.U8(static_cast<uint8_t>(i));  // entry handle
  w.U32(static_cast<uint32_t>(referents.size()));
  w.U32(std::max<uint32_t>(4, static_cast<uint32_t>(referents.size())));
  w.U32(0);
  w.U32(static_cast<uint32_t>(referents.size()));
  for (uint32_t r : referents) w.U32(r);
  size_t next = 0;
  std::vector<uint32_t> seen;
  for (uint32_t r : referents) {
    if (r == 0 || std::find(seen.begin(), seen.end(), r) != seen.end()) continue;
    seen.push_back(r);
    NdrTower(w, towers.at(next++));
  }
  w.Align(4);
  w.U32(status);
  return w.b;
}

inline Bytes MapRequestStub(bool le, const Bytes& tower, bool with_object) {
  Writer w{le};
  w.U32(with_object ? 1 : 0);
  if (with_object) w.Id(*Uuid::Parse("00000000-0000-0000-0000-000000000000"));
  w.U32(2);
  NdrTower(w, tower);
  w.Align(4);
  for (int i = 0; i < 20; ++i) w.U8(0);
  w.U32(4);
  return w.b;
}

// Cuts a stub into response fragments at `cuts` (stub offsets), each a whole PDU.
inline Bytes Fragmented(bool le, std::span<const uint8_t> stub, std::vector<size_t> cuts, uint32_t call_id = 9) {
  cuts.insert(cuts.begin(), 0);
  cuts.push_back(stub.size());
  Bytes out;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    uint8_t flags = (i == 0 ? pfc::kFirstFrag : 0) | (i + 2 == cuts.size() ? pfc::kLastFrag : 0);
    auto body = ResponseBody(le, stub.subspan(cuts[i], cuts[i + 1] - cuts[i]),
                             static_cast<uint32_t>(stub.size() - cuts[i]));
    auto pdu = BuildPdu(PType::kResponse, flags, call_id, body, le);
    out.insert(out.end(), pdu.begin(), pdu.end());
  }
  return out;
}

inline std::vector<size_t> Differences(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  REQUIRE(a.size() == b.size());
  std::vector<size_t> out;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) out.push_back(i);
  return out;
}

// Reassembles and parses the ept_map response in `pdus`.
inline MapResponse ParseResponsePdus(std::span<const uint8_t> pdus) {
  StubAssembler call;
  for (auto [offset, length] : SplitAll(pdus)) {
    auto added = call.Add(MustParse(pdus.subspan(offset, length)), offset);
    REQUIRE_MESSAGE(added.ok(), added.error().reason);
  }
  REQUIRE(call.complete());
  auto response = ParseMapResponse(call.stub(), call.little_endian());
  REQUIRE_MESSAGE(response.ok(), response.error().reason);
  return *response;
}

inline const PortRemap kRemaps[] = {{uuids::kEmsmdb, 7830}, {uuids::kNspi, 7840}};

}  // namespace wanopt::protocols::epm::testing
