// The endpoint mapper's ept_map (protocols/mapi/epm.h) on malformed input of every
// kind: truncated stubs, towers pointing outside, fragment sequences that are not
// one call, flipped bits. Well-formed input: epm_test.cc.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "protocols/common/dcerpc/tests/pdu_builder.h"
#include "protocols/mapi/epm.h"
#include "protocols/mapi/tests/epm_stubs.h"

using namespace wanopt::protocols::epm;
using namespace wanopt::protocols::epm::testing;

// ---------------------------------------------------------------------------------
// Malformed input

TEST_CASE("epm malformed: every truncation of a bind, bind_ack and ept_map stub") {
  // A bind or bind_ack cut short, with frag_length cut to match: the header says
  // the PDU is whole, so the body parser must find the missing bytes.
  for (const char* file : {"nspi_bind.c2s.bin", "nspi_bind.s2c.bin", "epm_map_nspi.s2c.bin"}) {
    CAPTURE(file);
    auto stream = Fixture(file);
    auto first = SplitAll(stream)[0];
    for (size_t n = kHeaderSize; n < first.second; ++n) {
      Bytes cut(stream.begin(), stream.begin() + n);
      cut[8] = static_cast<uint8_t>(n);
      cut[9] = static_cast<uint8_t>(n >> 8);
      auto pdu = ParsePdu(cut);
      if (!pdu) continue;  // shorter than the type's fixed fields
      if (pdu->header.ptype == PType::kBind) CHECK_FALSE(ParseBind(*pdu).ok());
      else CHECK_FALSE(ParseBindAck(*pdu).ok());
    }
  }
  for (const char* file : {"epm_map_nspi.s2c.bin", "epm_map_emsmdb.s2c.bin"}) {
    CAPTURE(file);
    auto stream = Fixture(file);
    Bytes stub(stream.begin() + 60 + 24, stream.end());
    REQUIRE(ParseMapResponse(stub, true).ok());
    for (size_t n = 0; n < stub.size(); ++n) {
      Bytes cut(stub.begin(), stub.begin() + n);
      REQUIRE_FALSE(ParseMapResponse(cut, true).ok());
      REQUIRE_FALSE(RewriteMapResponsePorts(cut, true, kRemaps).ok());
    }
  }
  auto stream = Fixture("epm_map_nspi.c2s.bin");
  Bytes stub(stream.begin() + 72 + 24, stream.end());
  REQUIRE(ParseMapRequest(stub, true).ok());
  for (size_t n = 0; n < stub.size(); ++n) {
    REQUIRE_FALSE(ParseMapRequest(std::span(stub).first(n), true).ok());
  }
}

TEST_CASE("epm malformed: towers whose counts and lengths point outside") {
  auto octets = TowerOctets({uuids::kEmsmdb, 0, 81, 1032, Ip(10, 0, 0, 1)});
  REQUIRE(ParseTower(octets).ok());
  auto tower_with = [&](size_t at, std::initializer_list<uint8_t> bytes) {
    Bytes b = octets;
    std::copy(bytes.begin(), bytes.end(), b.begin() + static_cast<long>(at));
    return b;
  };
  CHECK_FALSE(ParseTower(tower_with(0, {6, 0})).ok());        // one floor more than there is
  CHECK_FALSE(ParseTower(tower_with(0, {0xff, 0xff})).ok());  // 65535 floors
  CHECK_FALSE(ParseTower(tower_with(0, {0, 0})).ok());        // no floors
  CHECK_FALSE(ParseTower(tower_with(0, {4, 0})).ok());        // bytes left after floor 4
  CHECK_FALSE(ParseTower(tower_with(2, {0xff, 0})).ok());     // floor 1 LHS beyond the tower
  CHECK_FALSE(ParseTower(tower_with(2, {18, 0})).ok());       // UUID floor of the wrong size
  CHECK_FALSE(ParseTower(tower_with(23, {0xff, 0xff})).ok()); // floor 1 RHS beyond the tower
  const size_t tcp_rhs_length = 2 + 25 + 25 + 7 + 3;          // floors 1-3, then floor 4's LHS
  CHECK_FALSE(ParseTower(tower_with(tcp_rhs_length, {3, 0})).ok());  // 3-byte port
  CHECK_FALSE(ParseTower(tower_with(tcp_rhs_length - 3, {0, 0})).ok());  // LHS length 0
  for (size_t n = 0; n < octets.size(); ++n) CHECK_FALSE(ParseTower(std::span(octets).first(n)).ok());

  // In a response stub: tower_length, conformance, the array counts.
  auto stub = MapResponseStub(true, {octets});
  REQUIRE(ParseMapResponse(stub, true).ok());
  auto stub_with = [&](size_t at, uint32_t v) {
    Bytes b = stub;
    for (int i = 0; i < 4; ++i) b.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
    return b;
  };
  // Layout: handle 0-19, num_towers 20, max 24, offset 28, actual 32, referent 36,
  // conformance 40, tower_length 44, octets 48.
  CHECK_FALSE(ParseMapResponse(stub_with(20, 2), true).ok());             // num_towers != actual
  CHECK_FALSE(ParseMapResponse(stub_with(32, 2), true).ok());             // actual != num_towers
  auto many = stub_with(20, 0x10000000);
  for (int i = 0; i < 4; ++i) many[32 + i] = many[20 + i];
  for (int i = 0; i < 4; ++i) many[24 + i] = 0xff;
  CHECK_FALSE(ParseMapResponse(many, true).ok());                         // num towers beyond the data
  CHECK_FALSE(ParseMapResponse(stub_with(24, 0), true).ok());             // actual > max_count
  CHECK(ParseMapResponse(stub_with(28, 1), true).error().kind == Error::kUnsupported);  // offset
  CHECK_FALSE(ParseMapResponse(stub_with(40, 76), true).ok());            // conformance != length
  auto long_tower = stub_with(44, 0x7fffffff);
  for (int i = 0; i < 4; ++i) long_tower[40 + i] = long_tower[44 + i];
  CHECK_FALSE(ParseMapResponse(long_tower, true).ok());                   // tower_length beyond
  CHECK_FALSE(ParseMapResponse(stub_with(48, 0x0000ffff), true).ok());    // floor count in the stub
  // On error, the rewriter writes nothing.
  Bytes bad = stub_with(20, 2);
  Bytes before = bad;
  CHECK_FALSE(RewriteMapResponsePorts(bad, true, kRemaps).ok());
  CHECK(bad == before);
}

TEST_CASE("epm malformed: fragment sequences that are not one call") {
  auto stub = MapResponseStub(true, {TowerOctets({uuids::kEmsmdb, 0, 81, 1032, 0})});
  auto three = Fragmented(true, stub, {30, 60});
  auto pdus = SplitAll(three);
  REQUIRE(pdus.size() == 3);
  auto sub = [&](size_t i) { return std::span<const uint8_t>(three).subspan(pdus[i].first, pdus[i].second); };
  auto rewrite = [](Bytes b) { return RewriteMapResponsePdus(b, kRemaps); };
  CHECK(rewrite(three).ok());
  // The first fragment missing.
  CHECK_FALSE(rewrite(Bytes(three.begin() + static_cast<long>(pdus[1].first), three.end())).ok());
  // The last fragment missing.
  CHECK_FALSE(rewrite(Bytes(three.begin(), three.begin() + static_cast<long>(pdus[2].first))).ok());
  // Bytes after the last fragment; half a PDU at the end.
  Bytes extra = three;
  extra.push_back(5);
  CHECK_FALSE(rewrite(extra).ok());
  // A fragment of another call in the middle.
  Bytes other = three;
  other[pdus[1].first + 12] ^= 1;
  CHECK_FALSE(rewrite(other).ok());
  // FIRST_FRAG twice.
  Bytes twice = three;
  twice[pdus[1].first + 3] |= pfc::kFirstFrag;
  CHECK_FALSE(rewrite(twice).ok());
  // A request is not a response.
  auto req = BuildPdu(PType::kRequest, 3, 1, RequestBody(true, 3, stub), true);
  CHECK_FALSE(rewrite(req).ok());
  CHECK_FALSE(rewrite({}).ok());
  // The assembler refuses a fragment after the last, and a stub above its limit.
  StubAssembler call(50);
  REQUIRE(call.Add(MustParse(sub(0)), 0).ok());
  CHECK(call.Add(MustParse(sub(1)), 0).error().kind == Error::kUnsupported);
  StubAssembler done;
  auto single = Fragmented(true, stub, {});
  REQUIRE(*done.Add(MustParse(single), 0));
  CHECK_FALSE(done.Add(MustParse(single), 0).ok());
  done.Reset();
  CHECK(*done.Add(MustParse(single), 0));
}

TEST_CASE("epm malformed: every flipped bit of a captured ept_map response is handled") {
  auto stream = Fixture("epm_map_emsmdb.s2c.bin");
  Bytes response(stream.begin() + 60, stream.end());
  size_t ok = 0;
  for (size_t bit = 0; bit < response.size() * 8; ++bit) {
    Bytes b = response;
    b[bit / 8] ^= static_cast<uint8_t>(1 << (bit % 8));
    Bytes before = b;
    auto done = RewriteMapResponsePdus(b, kRemaps);
    if (done.ok()) {
      ++ok;
      REQUIRE(Differences(before, b).size() == 2 * done->size());
    } else {
      REQUIRE(b == before);
    }
  }
  CHECK(ok > 0);
}
