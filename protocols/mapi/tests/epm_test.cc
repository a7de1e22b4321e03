// The endpoint mapper's ept_map (protocols/mapi/epm.h) on the shared DCE/RPC layer
// (tested in protocols/common/dcerpc/tests): real PDUs from mapi.pcap
// (tests/fixtures, made by extract.py there) and hand-built PDUs for what the
// capture lacks. Malformed input: epm_malformed_test.cc.
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
// Real PDUs from mapi.pcap

TEST_CASE("epm capture: the ept_map requests ask for NSPI and EMSMDB over TCP") {
  struct {
    const char* file;
    Uuid interface;
    uint16_t major, minor;
  } cases[] = {{"epm_map_nspi.c2s.bin", uuids::kNspi, 56, 0}, {"epm_map_emsmdb.c2s.bin", uuids::kEmsmdb, 0, 81}};
  for (const auto& c : cases) {
    CAPTURE(c.file);
    auto stream = Fixture(c.file);
    auto pdus = SplitAll(stream);
    REQUIRE(pdus.size() == 2);
    Pdu bind_pdu = MustParse(std::span(stream).subspan(pdus[0].first, pdus[0].second));
    CHECK(bind_pdu.header.ptype == PType::kBind);
    CHECK(bind_pdu.auth_level() == AuthLevel::kNone);
    auto bind = ParseBind(bind_pdu);
    REQUIRE(bind.ok());
    REQUIRE(bind->contexts.size() == 1);
    CHECK(bind->contexts[0].abstract_syntax == SyntaxId{uuids::kEpm, 3, 0});
    CHECK(bind->contexts[0].transfer_syntaxes == std::vector<SyntaxId>{{uuids::kNdr, 2, 0}});
    CHECK(bind->max_xmit_frag == 5840);

    Pdu req_pdu = MustParse(std::span(stream).subspan(pdus[1].first, pdus[1].second));
    auto request = ParseRequest(req_pdu);
    REQUIRE(request.ok());
    CHECK(request->opnum == kOpnumEptMap);
    CHECK(request->context_id == 0);
    CHECK(request->stub.size() == 132);
    auto map = ParseMapRequest(request->stub, req_pdu.little_endian());
    REQUIRE_MESSAGE(map.ok(), map.error().reason);
    REQUIRE(map->object);
    CHECK(map->object->IsNil());
    REQUIRE(map->map_tower);
    CHECK(map->map_tower->floors.size() == 5);
    CHECK(*map->map_tower->interface == SyntaxId{c.interface, c.major, c.minor});
    CHECK(*map->map_tower->transfer_syntax == SyntaxId{uuids::kNdr, 2, 0});
    CHECK(map->map_tower->tcp_port == 135);
    CHECK(map->map_tower->ipv4 == 0u);
    CHECK(map->max_towers == 4);
  }
}

TEST_CASE("epm capture: the ept_map responses list NSPI at port 4997 and EMSMDB at 1032") {
  struct {
    const char* file;
    Uuid interface;
    uint16_t major, minor, port;
  } cases[] = {{"epm_map_nspi.s2c.bin", uuids::kNspi, 56, 0, 4997},
               {"epm_map_emsmdb.s2c.bin", uuids::kEmsmdb, 0, 81, 1032}};
  for (const auto& c : cases) {
    CAPTURE(c.file);
    auto stream = Fixture(c.file);
    auto pdus = SplitAll(stream);
    REQUIRE(pdus.size() == 2);
    auto ack = ParseBindAck(MustParse(std::span(stream).first(pdus[0].second)));
    REQUIRE(ack.ok());
    CHECK(ack->secondary_address == "135");
    REQUIRE(ack->results.size() == 1);
    CHECK(ack->results[0].result == ContextResult::kAcceptance);
    CHECK(ack->results[0].transfer_syntax == SyntaxId{uuids::kNdr, 2, 0});

    auto response = ParseResponsePdus(std::span(stream).subspan(pdus[1].first));
    CHECK(response.status == 0);
    CHECK(response.num_towers == 1);
    CHECK(response.max_count == 4);
    auto endpoints = ListEndpoints(response);
    REQUIRE(endpoints.size() == 1);
    CHECK(endpoints[0].interface == SyntaxId{c.interface, c.major, c.minor});
    CHECK(endpoints[0].ipv4 == Ip(192, 168, 0, 2));
    CHECK(endpoints[0].port == c.port);
  }
}

TEST_CASE("epm capture: rewriting to 7830/7840 changes exactly the two port bytes") {
  struct {
    const char* file;
    uint16_t old_port, new_port;
    Uuid interface;
  } cases[] = {{"epm_map_emsmdb.s2c.bin", 1032, 7830, uuids::kEmsmdb},
               {"epm_map_nspi.s2c.bin", 4997, 7840, uuids::kNspi}};
  for (const auto& c : cases) {
    CAPTURE(c.file);
    auto stream = Fixture(c.file);
    auto pdus = SplitAll(stream);
    const size_t at = pdus[1].first;
    Bytes rewritten = stream;
    auto done = RewriteMapResponsePdus(std::span(rewritten).subspan(at), kRemaps);
    REQUIRE_MESSAGE(done.ok(), done.error().reason);
    REQUIRE(done->size() == 1);
    CHECK((*done)[0].interface.uuid == c.interface);
    CHECK((*done)[0].old_port == c.old_port);
    CHECK((*done)[0].new_port == c.new_port);
    CHECK((*done)[0].ipv4 == Ip(192, 168, 0, 2));

    auto diff = Differences(stream, rewritten);
    REQUIRE(diff.size() == 2);
    CHECK(diff[1] == diff[0] + 1);
    CHECK(stream[diff[0]] == (c.old_port >> 8));
    CHECK(stream[diff[1]] == (c.old_port & 0xff));
    CHECK(rewritten[diff[0]] == (c.new_port >> 8));
    CHECK(rewritten[diff[1]] == (c.new_port & 0xff));
    // The port sits where the stub offset says: stub starts 24 bytes into the PDU.
    CHECK(diff[0] == at + 24 + (*done)[0].stub_offset);

    auto again = ListEndpoints(ParseResponsePdus(std::span(rewritten).subspan(at)));
    REQUIRE(again.size() == 1);
    CHECK(again[0].port == c.new_port);
    // Rewriting the rewritten response finds nothing more to do.
    auto twice = RewriteMapResponsePdus(std::span(rewritten).subspan(at), kRemaps);
    REQUIRE(twice.ok());
    CHECK(twice->empty());
  }
}

TEST_CASE("epm capture: remaps for other interfaces leave the response untouched") {
  auto stream = Fixture("epm_map_emsmdb.s2c.bin");
  Bytes copy = stream;
  const PortRemap other[] = {{uuids::kNspi, 7840}, {uuids::kRfr, 7850}};
  auto done = RewriteMapResponsePdus(std::span(copy).subspan(60), other);
  REQUIRE(done.ok());
  CHECK(done->empty());
  CHECK(copy == stream);
}

TEST_CASE("epm capture: privacy (auth level 6) is reported and never rewritten") {
  auto bytes = Fixture("lsarpc_privacy_request.bin");
  Pdu pdu = MustParse(bytes);
  REQUIRE(pdu.auth);
  CHECK(pdu.auth_level() == AuthLevel::kPrivacy);
  CHECK(pdu.auth->auth_type == 0x44);  // Netlogon secure channel
  CHECK(pdu.auth->auth_pad_length == 6);
  CHECK(pdu.protected_by_auth());
  auto request = ParseRequest(pdu);
  REQUIRE(request.ok());
  CHECK(request->opnum == 2);
  CHECK(request->stub.size() == 400 - 24 - 6 - 8 - 32);

  auto response = Fixture("lsarpc_privacy_response.bin");
  Bytes copy = response;
  auto done = RewriteMapResponsePdus(copy, kRemaps);
  REQUIRE_FALSE(done.ok());
  CHECK(done.error().kind == Error::kUnsupported);
  CHECK(copy == response);
}

// ---------------------------------------------------------------------------------
// Hand-built PDUs

TEST_CASE("epm: a big-endian ept_map response parses and rewrites like a little-endian one") {
  for (bool le : {true, false}) {
    CAPTURE(le);
    auto stub = MapResponseStub(le, {TowerOctets({uuids::kEmsmdb, 0, 81, 6001, Ip(10, 0, 0, 5)})});
    auto pdu = BuildPdu(PType::kResponse, pfc::kFirstFrag | pfc::kLastFrag, 7,
                        ResponseBody(le, stub, static_cast<uint32_t>(stub.size())), le);
    CHECK(MustParse(pdu).little_endian() == le);
    auto response = ParseResponsePdus(pdu);
    auto endpoints = ListEndpoints(response);
    REQUIRE(endpoints.size() == 1);
    CHECK(endpoints[0].interface == SyntaxId{uuids::kEmsmdb, 0, 81});
    CHECK(endpoints[0].port == 6001);
    CHECK(endpoints[0].ipv4 == Ip(10, 0, 0, 5));
    Bytes copy = pdu;
    auto done = RewriteMapResponsePdus(copy, kRemaps);
    REQUIRE(done.ok());
    REQUIRE(done->size() == 1);
    CHECK((*done)[0].old_port == 6001);
    CHECK(Differences(pdu, copy).size() == 2);
    CHECK(ListEndpoints(ParseResponsePdus(copy))[0].port == 7830);
  }
  // Big-endian bind: the UUID's first three fields and the versions follow drep.
  Writer w{false};
  w.U16(4280);
  w.U16(4280);
  w.U32(0);
  w.U8(1);
  w.U8(0);
  w.U16(0);
  w.U16(0);
  w.U8(1);
  w.U8(0);
  w.Syntax(uuids::kEmsmdb, 0, 81);
  w.Syntax(uuids::kNdr, 2, 0);
  auto bind = ParseBind(MustParse(BuildPdu(PType::kBind, 3, 1, w.b, false)));
  REQUIRE(bind.ok());
  CHECK(bind->max_xmit_frag == 4280);
  CHECK(bind->contexts[0].abstract_syntax == SyntaxId{uuids::kEmsmdb, 0, 81});
  CHECK(bind->contexts[0].transfer_syntaxes[0] == SyntaxId{uuids::kNdr, 2, 0});
}

TEST_CASE("epm: several towers with 5 floors: only the remapped interfaces' TCP ports change") {
  for (bool le : {true, false}) {
    CAPTURE(le);
    std::vector<Bytes> towers = {
        TowerOctets({uuids::kEmsmdb, 0, 81, 1032, Ip(192, 168, 0, 2)}),
        TowerOctets({uuids::kRfr, 1, 0, 1033, Ip(192, 168, 0, 2)}),
        TowerOctets({uuids::kEmsmdb, 0, 81, std::nullopt, 0, /*pipe=*/true}),
        TowerOctets({uuids::kNspi, 56, 0, 4997, Ip(192, 168, 0, 3)}),
        TowerOctets({uuids::kEmsmdb, 0, 81, std::nullopt, Ip(192, 168, 0, 2)}),  // 4 floors, no TCP
    };
    auto stub = MapResponseStub(le, towers);
    auto response = ParseMapResponse(stub, le);
    REQUIRE_MESSAGE(response.ok(), response.error().reason);
    REQUIRE(response->towers.size() == 5);
    CHECK(response->towers[0].floors.size() == 5);
    CHECK(response->towers[2].floors[3].protocol == floor_protocol::kNamedPipe);
    CHECK(response->towers[4].floors.size() == 4);
    auto endpoints = ListEndpoints(*response);
    REQUIRE(endpoints.size() == 3);
    CHECK(endpoints[1].interface.uuid == uuids::kRfr);
    CHECK(endpoints[2].ipv4 == Ip(192, 168, 0, 3));

    Bytes copy = stub;
    auto done = RewriteMapResponsePorts(copy, le, kRemaps);
    REQUIRE(done.ok());
    REQUIRE(done->size() == 2);
    CHECK((*done)[0].interface.uuid == uuids::kEmsmdb);
    CHECK((*done)[0].old_port == 1032);
    CHECK((*done)[1].interface.uuid == uuids::kNspi);
    CHECK((*done)[1].old_port == 4997);
    CHECK((*done)[1].new_port == 7840);
    CHECK(Differences(stub, copy).size() == 4);
    auto after = ListEndpoints(*ParseMapResponse(copy, le));
    CHECK(after[0].port == 7830);
    CHECK(after[1].port == 1033);  // RFR: not remapped
    CHECK(after[2].port == 7840);
  }
}

TEST_CASE("epm: null and repeated full pointers in the tower array") {
  std::vector<Bytes> towers = {TowerOctets({uuids::kNspi, 56, 0, 4997, Ip(1, 2, 3, 4)})};
  auto stub = MapResponseStub(true, towers, 0, {0, 7, 7});
  auto response = ParseMapResponse(stub, true);
  REQUIRE_MESSAGE(response.ok(), response.error().reason);
  CHECK(response->num_towers == 3);
  REQUIRE(response->towers.size() == 2);
  CHECK(response->towers[0].offset == response->towers[1].offset);
  Bytes copy = stub;
  auto done = RewriteMapResponsePorts(copy, true, kRemaps);
  REQUIRE(done.ok());
  CHECK(done->size() == 1);  // the tower's bytes exist once
  CHECK(Differences(stub, copy).size() == 2);
}

TEST_CASE("epm: a not-registered answer has no towers and nothing to rewrite") {
  auto stub = MapResponseStub(true, {}, 0x16c9a0d6);
  auto response = ParseMapResponse(stub, true);
  REQUIRE(response.ok());
  CHECK(response->status == 0x16c9a0d6);
  CHECK(response->towers.empty());
  Bytes copy = stub;
  auto done = RewriteMapResponsePorts(copy, true, kRemaps);
  REQUIRE(done.ok());
  CHECK(done->empty());
}

TEST_CASE("epm: a response in 3 fragments is rewritten wherever the cuts fall, even inside a port") {
  for (bool le : {true, false}) {
    CAPTURE(le);
    auto stub = MapResponseStub(le, {TowerOctets({uuids::kRfr, 1, 0, 1033, Ip(10, 1, 1, 1)}),
                                     TowerOctets({uuids::kEmsmdb, 0, 81, 1032, Ip(10, 1, 1, 1)}),
                                     TowerOctets({uuids::kNspi, 56, 0, 4997, Ip(10, 1, 1, 1)})});
    auto ports = ParseMapResponse(stub, le);
    REQUIRE(ports.ok());
    const size_t emsmdb_port = ports->towers[1].tcp_port_offset;
    for (size_t cut1 = 1; cut1 + 1 < stub.size(); ++cut1) {
      // Second cut: right after the first, inside the EMSMDB port, or elsewhere.
      for (size_t cut2 : {cut1 + 1, std::max(cut1 + 1, emsmdb_port + 1), std::max(cut1 + 1, stub.size() - 3)}) {
        if (cut2 >= stub.size()) continue;
        CAPTURE(cut1);
        CAPTURE(cut2);
        auto pdus = Fragmented(le, stub, {cut1, cut2});
        Bytes copy = pdus;
        auto done = RewriteMapResponsePdus(copy, kRemaps);
        REQUIRE_MESSAGE(done.ok(), done.error().reason);
        REQUIRE(done->size() == 2);
        REQUIRE(Differences(pdus, copy).size() == 4);
        auto after = ListEndpoints(ParseResponsePdus(copy));
        REQUIRE(after.size() == 3);
        CHECK(after[0].port == 1033);
        CHECK(after[1].port == 7830);
        CHECK(after[2].port == 7840);
      }
    }
  }
}

TEST_CASE("epm: an ept_map request with and without an object UUID") {
  auto tower = TowerOctets({uuids::kEmsmdb, 0, 81, 135, 0});
  for (bool le : {true, false}) {
    for (bool object : {true, false}) {
      CAPTURE(le);
      CAPTURE(object);
      auto map = ParseMapRequest(MapRequestStub(le, tower, object), le);
      REQUIRE_MESSAGE(map.ok(), map.error().reason);
      CHECK(map->object.has_value() == object);
      CHECK(map->map_tower->interface->uuid == uuids::kEmsmdb);
      CHECK(map->max_towers == 4);
    }
  }
  // A request PDU with the object-UUID flag has the UUID before its stub.
  auto object = *Uuid::Parse("01234567-89ab-cdef-0123-456789abcdef");
  Bytes stub = {1, 2, 3, 4};
  auto pdu = BuildPdu(PType::kRequest, pfc::kFirstFrag | pfc::kLastFrag | pfc::kObjectUuid, 3,
                      RequestBody(false, 3, stub, &object), false);
  auto request = ParseRequest(MustParse(pdu));
  REQUIRE(request.ok());
  CHECK(request->object == object);
  CHECK(request->object->ToString() == "01234567-89ab-cdef-0123-456789abcdef");
  CHECK(request->stub_offset == 40);
  CHECK(Bytes(request->stub.begin(), request->stub.end()) == stub);
}

TEST_CASE("epm: an auth verifier with privacy level bounds the stub and blocks rewriting") {
  auto stub = MapResponseStub(true, {TowerOctets({uuids::kEmsmdb, 0, 81, 1032, Ip(10, 0, 0, 1)})});
  Auth privacy{AuthLevel::kPrivacy, 10, 4, 16};
  auto bytes = BuildPdu(PType::kResponse, 3, 5, ResponseBody(true, stub, static_cast<uint32_t>(stub.size())), true,
                        privacy);
  Pdu pdu = MustParse(bytes);
  CHECK(pdu.auth_level() == AuthLevel::kPrivacy);
  CHECK(pdu.protected_by_auth());
  CHECK(pdu.auth->offset == bytes.size() - 16 - 8);
  CHECK(pdu.body_end == bytes.size() - 16 - 8 - 4);
  auto response = ParseResponse(pdu);
  REQUIRE(response.ok());
  CHECK(response->stub.size() == stub.size());  // padding excluded
  Bytes copy = bytes;
  auto done = RewriteMapResponsePdus(copy, kRemaps);
  REQUIRE_FALSE(done.ok());
  CHECK(done.error().kind == Error::kUnsupported);
  CHECK(copy == bytes);
  // Integrity (5) and packet (4) are protected too; connect (2) is not.
  for (auto [level, protect] : {std::pair{AuthLevel::kIntegrity, true}, std::pair{AuthLevel::kPacket, true},
                                std::pair{AuthLevel::kConnect, false}}) {
    Auth a{level, 10, 4, 16};
    Bytes b = BuildPdu(PType::kResponse, 3, 5, ResponseBody(true, stub, 0), true, a);
    CHECK(MustParse(b).protected_by_auth() == protect);
    CHECK(RewriteMapResponsePdus(b, kRemaps).ok() == !protect);
  }
}
