// DCE/RPC PDUs (protocols/common/dcerpc) and the endpoint mapper's ept_map
// (protocols/mapi/epm.h): real PDUs from mapi.pcap (tests/fixtures, made by
// extract.py there), hand-built PDUs for what the capture lacks, and malformed input
// of every kind.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "protocols/common/dcerpc/dcerpc.h"
#include "protocols/mapi/epm.h"
#include "util/buffer.h"

using namespace wanopt::protocols::epm;
using Bytes = std::vector<uint8_t>;

namespace {

Bytes Fixture(const std::string& name) {
  std::ifstream in(std::string(WANOPT_MODULE_FIXTURES) + "/" + name, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture " << name);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// Splits a whole stream into PDUs (offset, length); fails the test on anything else.
std::vector<std::pair<size_t, size_t>> SplitAll(std::span<const uint8_t> stream, const Limits& limits = {}) {
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

Pdu MustParse(std::span<const uint8_t> bytes) {
  auto pdu = ParsePdu(bytes);
  REQUIRE_MESSAGE(pdu.ok(), pdu.error().reason);
  return *pdu;
}

uint32_t Ip(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t{a} << 24 | uint32_t{b} << 16 | uint32_t{c} << 8 | d;
}

const Uuid kBindTimeFeatures = *Uuid::Parse("6cb71c2c-9812-4540-0300-000000000000");

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

Bytes BuildPdu(PType ptype, uint8_t flags, uint32_t call_id, std::span<const uint8_t> body, bool le,
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

Bytes ResponseBody(bool le, std::span<const uint8_t> stub, uint32_t alloc_hint) {
  Writer w{le};
  w.U32(alloc_hint);
  w.U16(0);  // context id
  w.U8(0);
  w.U8(0);
  w.Raw(stub);
  return w.b;
}

Bytes RequestBody(bool le, uint16_t opnum, std::span<const uint8_t> stub, const Uuid* object = nullptr) {
  Writer w{le};
  w.U32(static_cast<uint32_t>(stub.size()));
  w.U16(0);
  w.U16(opnum);
  if (object) w.Id(*object);
  w.Raw(stub);
  return w.b;
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

Bytes TowerOctets(const TowerSpec& t) {
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

void NdrTower(Writer& w, std::span<const uint8_t> octets) {
  w.Align(4);
  w.U32(static_cast<uint32_t>(octets.size()));
  w.U32(static_cast<uint32_t>(octets.size()));
  w.Raw(octets);
}

// An ept_map response stub; a referent of 0 is a null pointer, a repeated one a
// full pointer to the same tower (whose octets then are not repeated).
Bytes MapResponseStub(bool le, const std::vector<Bytes>& towers, uint32_t status = 0,
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

Bytes MapRequestStub(bool le, const Bytes& tower, bool with_object) {
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
Bytes Fragmented(bool le, std::span<const uint8_t> stub, std::vector<size_t> cuts, uint32_t call_id = 9) {
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

Bytes First(const Bytes& b, size_t n) { return Bytes(b.begin(), b.begin() + static_cast<long>(n)); }

std::vector<size_t> Differences(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  REQUIRE(a.size() == b.size());
  std::vector<size_t> out;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) out.push_back(i);
  return out;
}

// Reassembles and parses the ept_map response in `pdus`.
MapResponse ParseResponsePdus(std::span<const uint8_t> pdus) {
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

const PortRemap kRemaps[] = {{uuids::kEmsmdb, 7830}, {uuids::kNspi, 7840}};

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
