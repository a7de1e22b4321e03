// DCE/RPC connection-oriented PDUs (protocols/common/dcerpc/dcerpc.h): splitting,
// parsing, binds and contexts, fragment reassembly, on real PDUs from mapi.pcap
// (protocols/mapi/tests/fixtures, made by extract.py there), hand-built PDUs for what
// the capture lacks, and malformed input of every kind. The endpoint mapper's
// ept_map on top of them is tested in protocols/mapi/tests/epm_test.cc.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "protocols/common/dcerpc/dcerpc.h"
#include "protocols/common/dcerpc/tests/pdu_builder.h"
#include "util/buffer.h"

using namespace wanopt::protocols::dcerpc;
using namespace wanopt::protocols::dcerpc::testing;

namespace {

const Uuid kBindTimeFeatures = *Uuid::Parse("6cb71c2c-9812-4540-0300-000000000000");

Bytes First(const Bytes& b, size_t n) { return Bytes(b.begin(), b.begin() + static_cast<long>(n)); }

}  // namespace

// ---------------------------------------------------------------------------------
// Real PDUs from mapi.pcap

TEST_CASE("epm capture: every stream splits into whole PDUs, as tshark counts them") {
  struct {
    const char* file;
    size_t pdus;
  } streams[] = {
      {"epm_map_nspi.c2s.bin", 2},      {"epm_map_nspi.s2c.bin", 2},     {"epm_map_emsmdb.c2s.bin", 2},
      {"epm_map_emsmdb.s2c.bin", 2},    {"epm_lookup.c2s.bin", 2},       {"epm_lookup.s2c.bin", 2},
      {"nspi_bind.c2s.bin", 2},         {"nspi_bind.s2c.bin", 2},        {"nspi_bind_ntlm.c2s.bin", 3},
      {"nspi_bind_ntlm.s2c.bin", 2},    {"emsmdb_bind_ntlm.c2s.bin", 9}, {"emsmdb_bind_ntlm.s2c.bin", 7},
      {"emsmdb_two_fragments.s2c.bin", 2}, {"lsarpc_privacy_request.bin", 1}, {"lsarpc_privacy_response.bin", 1},
  };
  for (const auto& s : streams) {
    CAPTURE(s.file);
    auto bytes = Fixture(s.file);
    CHECK(SplitAll(bytes).size() == s.pdus);
  }
}

TEST_CASE("epm capture: fed one byte at a time, the splitter finds the same PDUs") {
  auto stream = Fixture("emsmdb_bind_ntlm.c2s.bin");
  wanopt::Buffer held;  // what a module holds with kStopIteration
  std::vector<size_t> lengths;
  for (uint8_t byte : stream) {
    held.Append(std::span(&byte, 1));
    for (;;) {
      Split s = SplitPdu(held.span());
      REQUIRE(s.kind != Split::kMalformed);
      if (s.kind == Split::kNeedMore) {
        CHECK(s.needed > held.size());
        break;
      }
      lengths.push_back(s.pdu.bytes.size());
      held.Consume(s.pdu.bytes.size());
    }
  }
  CHECK(held.empty());
  CHECK(lengths == std::vector<size_t>{129, 190, 160, 160, 112, 128, 224, 128, 208});
}

TEST_CASE("epm capture: the NSPI and EMSMDB binds name their interfaces and auth levels") {
  {
    auto stream = Fixture("nspi_bind.c2s.bin");
    auto bind = ParseBind(MustParse(std::span(stream).first(72)));
    REQUIRE(bind.ok());
    REQUIRE(bind->contexts.size() == 1);
    CHECK(bind->contexts[0].abstract_syntax == SyntaxId{uuids::kNspi, 56, 0});
    CHECK(InterfaceName(bind->contexts[0].abstract_syntax.uuid) == "NSPI");
    auto ack_stream = Fixture("nspi_bind.s2c.bin");
    auto ack = ParseBindAck(MustParse(std::span(ack_stream).first(60)));
    REQUIRE(ack.ok());
    CHECK(ack->secondary_address == "4997");
  }
  struct {
    const char* c2s;
    const char* s2c;
    SyntaxId interface;
    const char* port;
  } cases[] = {{"nspi_bind_ntlm.c2s.bin", "nspi_bind_ntlm.s2c.bin", {uuids::kNspi, 56, 0}, "4997"},
               {"emsmdb_bind_ntlm.c2s.bin", "emsmdb_bind_ntlm.s2c.bin", {uuids::kEmsmdb, 0, 81}, "1032"}};
  for (const auto& c : cases) {
    CAPTURE(c.c2s);
    auto client = Fixture(c.c2s);
    auto server = Fixture(c.s2c);
    auto client_pdus = SplitAll(client);
    auto server_pdus = SplitAll(server);
    Pdu bind_pdu = MustParse(std::span(client).first(client_pdus[0].second));
    REQUIRE(bind_pdu.auth);
    CHECK(bind_pdu.auth->auth_type == 10);  // NTLM
    CHECK(bind_pdu.auth_level() == AuthLevel::kConnect);
    CHECK_FALSE(bind_pdu.protected_by_auth());
    CHECK(bind_pdu.header.auth_length == 49);
    CHECK(bind_pdu.body_end == 72);
    auto bind = ParseBind(bind_pdu);
    REQUIRE(bind.ok());
    REQUIRE(bind->contexts.size() == 1);
    CHECK(bind->contexts[0].abstract_syntax == c.interface);

    Pdu ack_pdu = MustParse(std::span(server).first(server_pdus[0].second));
    auto ack = ParseBindAck(ack_pdu);
    REQUIRE(ack.ok());
    CHECK(ack->secondary_address == c.port);

    ContextTable table;
    REQUIRE(table.OnBind(*bind, bind_pdu.auth_level()).ok());
    REQUIRE(table.OnBindAck(*ack).ok());
    const auto* entry = table.Find(0);
    REQUIRE(entry);
    CHECK(entry->abstract_syntax == c.interface);
    CHECK(entry->transfer_syntax == SyntaxId{uuids::kNdr, 2, 0});
    CHECK(table.auth_level() == AuthLevel::kConnect);
    CHECK(table.client_to_server_max_frag() == 5840);
    CHECK(table.server_to_client_max_frag() == 5840);

    Pdu auth3 = MustParse(std::span(client).subspan(client_pdus[1].first, client_pdus[1].second));
    CHECK(auth3.header.ptype == PType::kAuth3);
    CHECK(auth3.auth_level() == AuthLevel::kConnect);
    // Requests of the bound context carry the connect-level verifier: still rewritable.
    Pdu req = MustParse(std::span(client).subspan(client_pdus[2].first, client_pdus[2].second));
    auto request = ParseRequest(req);
    REQUIRE(request.ok());
    CHECK(request->opnum == 0);  // NspiBind / EcDoConnect
    CHECK(table.Find(request->context_id) == entry);
    CHECK_FALSE(req.protected_by_auth());
    // Negotiated limit: the client's PDUs fit the server's max_recv_frag.
    SplitAll(client, {.max_frag = table.client_to_server_max_frag()});
  }
}

TEST_CASE("epm capture: a real two-fragment response reassembles and maps back to its bytes") {
  auto stream = Fixture("emsmdb_two_fragments.s2c.bin");
  auto pdus = SplitAll(stream);
  REQUIRE(pdus.size() == 2);
  StubAssembler call;
  Pdu first = MustParse(std::span(stream).first(pdus[0].second));
  CHECK(first.header.first_frag());
  CHECK_FALSE(first.header.last_frag());
  auto added = call.Add(first, 0);
  REQUIRE(added.ok());
  CHECK_FALSE(*added);
  Pdu last = MustParse(std::span(stream).subspan(pdus[1].first));
  CHECK(last.auth->auth_pad_length == 12);
  added = call.Add(last, pdus[1].first);
  REQUIRE(added.ok());
  CHECK(*added);
  CHECK(call.call_id() == 156);
  CHECK(call.fragments() == 2);
  CHECK_FALSE(call.protected_by_auth());
  CHECK(call.stub().size() == 7844);  // the first fragment's alloc_hint
  CHECK(ParseResponse(first)->alloc_hint == 7844);
  // Stub byte i comes from where StreamOffset says, across the fragment boundary.
  for (size_t i = 0; i < call.stub().size(); ++i) REQUIRE(stream[call.StreamOffset(i)] == call.stub()[i]);
  CHECK(call.StreamOffset(5791) == 24 + 5791);
  CHECK(call.StreamOffset(5792) == 5840 + 24);
}

// ---------------------------------------------------------------------------------
// Hand-built PDUs

TEST_CASE("epm: a bind with 3 contexts, its bind_ack, then an alter_context") {
  Writer w{true};
  w.U16(5840);
  w.U16(5840);
  w.U32(0);
  w.U8(3);
  w.U8(0);
  w.U16(0);
  struct {
    uint16_t id;
    Uuid transfer;
    uint16_t version;
  } offered[] = {{0, uuids::kNdr, 2}, {1, uuids::kNdr64, 1}, {2, kBindTimeFeatures, 1}};
  for (const auto& o : offered) {
    w.U16(o.id);
    w.U8(1);
    w.U8(0);
    w.Syntax(uuids::kEmsmdb, 0, 81);
    w.Syntax(o.transfer, o.version, 0);
  }
  Auth privacy{AuthLevel::kPrivacy, 9, 0, 40};
  auto bind_bytes = BuildPdu(PType::kBind, 3, 1, w.b, true, privacy);
  Pdu bind_pdu = MustParse(bind_bytes);  // a Pdu aliases its bytes: keep them alive
  auto bind = ParseBind(bind_pdu);
  REQUIRE(bind.ok());
  REQUIRE(bind->contexts.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(bind->contexts[i].context_id == i);
    CHECK(bind->contexts[i].abstract_syntax == SyntaxId{uuids::kEmsmdb, 0, 81});
  }
  CHECK(bind->contexts[1].transfer_syntaxes[0].uuid == uuids::kNdr64);
  CHECK(bind_pdu.auth_level() == AuthLevel::kPrivacy);  // "encrypted MAPI"
  CHECK(bind_pdu.auth->auth_type == 9);

  Writer a{true};
  a.U16(5840);
  a.U16(4280);
  a.U32(0x1234);
  a.U16(5);
  for (char c : std::string("1032")) a.U8(static_cast<uint8_t>(c));
  a.U8(0);
  a.Align(4);
  a.U8(3);
  a.U8(0);
  a.U16(0);
  a.U16(ContextResult::kAcceptance);
  a.U16(0);
  a.Id(uuids::kNdr);
  a.U32(2);
  a.U16(ContextResult::kProviderRejection);
  a.U16(2);
  a.Id(Uuid{});
  a.U32(0);
  a.U16(ContextResult::kNegotiateAck);
  a.U16(3);
  a.Id(Uuid{});
  a.U32(0);
  auto ack = ParseBindAck(MustParse(BuildPdu(PType::kBindAck, 3, 1, a.b, true, privacy)));
  REQUIRE(ack.ok());
  CHECK(ack->secondary_address == "1032");
  CHECK(ack->assoc_group_id == 0x1234);
  REQUIRE(ack->results.size() == 3);

  ContextTable table;
  REQUIRE(table.OnBind(*bind, bind_pdu.auth_level()).ok());
  REQUIRE(table.OnBindAck(*ack).ok());
  CHECK(table.entries().size() == 1);
  REQUIRE(table.Find(0));
  CHECK(table.Find(0)->transfer_syntax.uuid == uuids::kNdr);
  CHECK(table.Find(1) == nullptr);
  CHECK(table.Find(2) == nullptr);
  CHECK(table.auth_level() == AuthLevel::kPrivacy);
  CHECK(table.client_to_server_max_frag() == 4280);
  CHECK(table.server_to_client_max_frag() == 5840);

  // alter_context adds NSPI as context 3 on the same connection.
  Writer alter{true};
  alter.U16(5840);
  alter.U16(5840);
  alter.U32(0x1234);
  alter.U8(1);
  alter.U8(0);
  alter.U16(0);
  alter.U16(3);
  alter.U8(1);
  alter.U8(0);
  alter.Syntax(uuids::kNspi, 56, 0);
  alter.Syntax(uuids::kNdr, 2, 0);
  auto alter_bind = ParseBind(MustParse(BuildPdu(PType::kAlterContext, 3, 2, alter.b, true)));
  REQUIRE(alter_bind.ok());
  REQUIRE(table.OnBind(*alter_bind, AuthLevel::kNone).ok());
  Writer ar{true};
  ar.U16(5840);
  ar.U16(4280);
  ar.U32(0x1234);
  ar.U16(0);  // no secondary address
  ar.Align(4);
  ar.U8(1);
  ar.U8(0);
  ar.U16(0);
  ar.U16(0);
  ar.U16(0);
  ar.Id(uuids::kNdr);
  ar.U32(2);
  auto alter_resp = ParseBindAck(MustParse(BuildPdu(PType::kAlterContextResp, 3, 2, ar.b, true)));
  REQUIRE(alter_resp.ok());
  CHECK(alter_resp->secondary_address.empty());
  REQUIRE(table.OnBindAck(*alter_resp).ok());
  CHECK(table.Find(3)->abstract_syntax.uuid == uuids::kNspi);
  CHECK(table.Find(0)->abstract_syntax.uuid == uuids::kEmsmdb);
  CHECK(table.auth_level() == AuthLevel::kPrivacy);  // the highest seen stays

  // A bind_ack that answers another number of contexts is malformed.
  REQUIRE(table.OnBind(*alter_bind, AuthLevel::kNone).ok());
  CHECK_FALSE(table.OnBindAck(*ack).ok());
}

TEST_CASE("epm: a fault and the PDUs without a body") {
  Writer f{true};
  f.U32(0);
  f.U16(0);
  f.U8(0);
  f.U8(0);
  f.U32(0x1c010003);  // nca_s_unk_if
  f.U32(0);
  auto fault = ParseFault(MustParse(BuildPdu(PType::kFault, 3, 2, f.b, true)));
  REQUIRE(fault.ok());
  CHECK(fault->status == 0x1c010003);
  for (PType t : {PType::kShutdown, PType::kCoCancel, PType::kOrphaned}) {
    CHECK(MustParse(BuildPdu(t, 3, 2, {}, true)).header.ptype == t);
  }
  Bytes nak_body = {4, 0};
  CHECK(*ParseBindNakReason(MustParse(BuildPdu(PType::kBindNak, 3, 2, nak_body, true))) == 4);
  // Asking a parser for the wrong type is an error, not a misread.
  auto shutdown_bytes = BuildPdu(PType::kShutdown, 3, 2, {}, true);
  Pdu shutdown = MustParse(shutdown_bytes);
  CHECK_FALSE(ParseRequest(shutdown).ok());
  CHECK_FALSE(ParseBind(shutdown).ok());
  CHECK_FALSE(ParseBindAck(shutdown).ok());
  // RTS only when asked for.
  Bytes rts_body = {0, 0, 0, 0};
  auto rts = BuildPdu(PType::kRts, 3, 0, rts_body, true);
  CHECK_FALSE(ParsePdu(rts).ok());
  CHECK(ParsePdu(rts, {.allow_rts = true}).ok());
}

// ---------------------------------------------------------------------------------
// Malformed input

TEST_CASE("epm malformed: every truncation of every captured PDU needs more, never parses") {
  const char* files[] = {"epm_map_nspi.c2s.bin", "epm_map_nspi.s2c.bin", "emsmdb_bind_ntlm.c2s.bin",
                         "emsmdb_bind_ntlm.s2c.bin", "emsmdb_two_fragments.s2c.bin", "lsarpc_privacy_request.bin"};
  for (const char* file : files) {
    CAPTURE(file);
    auto stream = Fixture(file);
    for (auto [offset, length] : SplitAll(stream)) {
      auto pdu = std::span<const uint8_t>(stream).subspan(offset, length);
      for (size_t n = 0; n < length; ++n) {
        Split s = SplitPdu(pdu.first(n));
        REQUIRE(s.kind == Split::kNeedMore);
        REQUIRE(s.needed > n);
        REQUIRE(s.needed <= length);
        REQUIRE_FALSE(ParsePdu(pdu.first(n)).ok());
      }
    }
  }
}

TEST_CASE("epm malformed: frag_length and auth_length that do not fit") {
  auto good = BuildPdu(PType::kRequest, 3, 1, RequestBody(true, 3, Bytes(8, 0)), true);
  auto with = [&](size_t at, std::initializer_list<uint8_t> bytes) {
    Bytes b = good;
    std::copy(bytes.begin(), bytes.end(), b.begin() + static_cast<long>(at));
    return b;
  };
  auto malformed = [](std::span<const uint8_t> b, const Limits& limits = {}) {
    Split s = SplitPdu(b, limits);
    return s.kind == Split::kMalformed;
  };
  REQUIRE(SplitPdu(good).kind == Split::kPdu);
  CHECK(malformed(with(8, {15, 0})));                     // smaller than the header
  CHECK(malformed(with(8, {0, 0})));                      // zero
  CHECK(malformed(with(8, {20, 0})));                     // smaller than a request's fixed fields
  CHECK(malformed(good, {.max_frag = 31}));               // larger than the limit
  CHECK(SplitPdu(good, {.max_frag = 32}).kind == Split::kPdu);
  // Larger than the limit is known from the first 10 bytes, before the PDU arrives.
  CHECK(malformed(First(with(8, {0xff, 0xff}), 10), {.max_frag = 5840}));
  // Larger than the buffer: needs more, exactly frag_length.
  Split more = SplitPdu(with(8, {0, 1}));
  CHECK(more.kind == Split::kNeedMore);
  CHECK(more.needed == 256);
  // ParsePdu on a buffer that does not match frag_length.
  CHECK_FALSE(ParsePdu(with(8, {0, 1})).ok());
  CHECK_FALSE(ParsePdu(with(8, {31, 0})).ok());
  // auth_length larger than the PDU, or leaving no room for the trailer.
  CHECK(malformed(with(10, {0xff, 0xff})));
  CHECK(malformed(with(10, {32, 0})));
  CHECK(malformed(with(10, {1, 0})));  // 16 + 8 fixed + 8 trailer + 1 > 32
  // Header fields: version, minor version, connectionless or unknown type, drep.
  CHECK(malformed(First(with(0, {4}), 1)));  // seen at the first byte
  CHECK(malformed(with(1, {2})));
  CHECK(malformed(with(2, {1})));   // ping: connectionless only
  CHECK(malformed(with(2, {21})));
  CHECK(malformed(with(4, {0x20})));
  // An auth trailer whose padding reaches into the header, or an unknown level.
  Auth a{AuthLevel::kConnect, 10, 0, 4};
  auto authed = BuildPdu(PType::kRequest, 3, 1, RequestBody(true, 3, Bytes(8, 0)), true, a);
  REQUIRE(ParsePdu(authed).ok());
  Bytes pad = authed;
  pad[authed.size() - 4 - 8 + 2] = 9;  // 8 bytes of stub can hold 8 bytes of padding, not 9
  CHECK_FALSE(ParsePdu(pad).ok());
  pad[authed.size() - 4 - 8 + 2] = 8;
  CHECK(ParsePdu(pad).ok());
  CHECK(ParseRequest(*ParsePdu(pad))->stub.empty());
  Bytes level = authed;
  level[authed.size() - 4 - 8 + 1] = 7;
  CHECK_FALSE(ParsePdu(level).ok());
}
