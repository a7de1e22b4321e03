// The mapi module's glue (protocols/mapi/mapi.h): settings, the box-wide binding
// table, admission control and session affinity, and ept_map answers rewritten on
// the branch only, on PDUs captured from Outlook talking to Exchange.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <vector>

#include "protocols/chain.h"
#include "protocols/mapi/binding_store.h"
#include "protocols/mapi/mapi.h"

using namespace wanopt;
using namespace wanopt::protocols;
using namespace wanopt::protocols::epm;
using boost::asio::ip::make_address;
using boost::asio::ip::tcp;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes Fixture(const std::string& name) {
  std::ifstream in(std::string(WANOPT_MODULE_FIXTURES) + "/" + name, std::ios::binary);
  REQUIRE_MESSAGE(in, name);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// Parsed settings; nothing kept on disk or in the kernel unless the test says so.
MapiSettings Settings(ModuleSettings s = {}) {
  s.emplace("state_file", "");
  s.emplace("fail_open_chain", "");
  std::string error;
  auto parsed = ParseMapiSettings(s, &error);
  REQUIRE_MESSAGE(parsed, error);
  return *parsed;
}

class Host final : public ModuleChain::Host {
 public:
  Host(Side side, BoxModule* box, uint16_t port = 135, const char* client = "198.18.1.10",
       const char* server = "198.18.2.10")
      : box_(box) {
    info.side = side;
    info.client = tcp::endpoint(make_address(client), 50000);
    info.server = tcp::endpoint(make_address(server), port);
  }
  const ConnectionInfo& connection() const override { return info; }
  bool SendModuleMessage(uint16_t, std::span<const uint8_t>) override { return false; }
  void SetApplication(std::string_view name) override { application = name; }
  void AddNote(std::string_view note) override { notes.emplace_back(note); }
  BoxModule* BoxModuleFor(std::string_view name) override { return name == "mapi" ? box_ : nullptr; }
  ConnectionInfo info;
  std::string application;
  std::vector<std::string> notes;

 private:
  BoxModule* box_;
};

// Runs a captured exchange through a chain with the mapi module, `step` bytes at a
// time; returns what the client receives.
Bytes Exchange(Side side, MapiBox& box, const std::string& name, size_t step, Host** host_out = nullptr,
               uint16_t port = 135, const char* client = "198.18.1.10", const char* server = "198.18.2.10") {
  static std::vector<std::unique_ptr<Host>> hosts;  // kept for the notes
  hosts.push_back(std::make_unique<Host>(side, &box, port, client, server));
  Host& host = *hosts.back();
  if (host_out) *host_out = &host;
  ModuleChain chain(host, {"mapi"});
  chain.Start();
  Bytes c2s = Fixture(name + ".c2s.bin"), s2c = Fixture(name + ".s2c.bin");
  auto feed = [&](Direction d, const Bytes& bytes) {
    Bytes out;
    for (size_t at = 0; at < bytes.size(); at += step) {
      Buffer data;
      size_t n = std::min(step, bytes.size() - at);
      data.Append(std::span<const uint8_t>(bytes.data() + at, n));
      chain.Process(d, data, false);
      out.insert(out.end(), data.data(), data.data() + data.size());
    }
    return out;
  };
  Bytes sent = feed(Direction::kClientToServer, c2s);
  CHECK(sent == c2s);  // the client's side is never changed
  // The bind_ack and the answer arrive after the requests, as on the wire.
  return feed(Direction::kServerToClient, s2c);
}

uint16_t PortAt(const Bytes& s2c, size_t offset) { return static_cast<uint16_t>(s2c[offset] << 8 | s2c[offset + 1]); }

// Where the TCP floor's port sits in a one-tower answer: found by its value.
size_t FindPort(const Bytes& s2c, uint16_t port) {
  for (size_t i = 0; i + 1 < s2c.size(); ++i) {
    if (s2c[i] == 0x07 && i + 5 < s2c.size() && s2c[i + 1] == 2 && s2c[i + 2] == 0 && PortAt(s2c, i + 3) == port) return i + 3;
  }
  return 0;
}

// The IP floor's address in a one-tower answer.
MapiBox::Address TowerAddress(const Bytes& s2c) {
  for (size_t i = 0; i + 7 < s2c.size(); ++i) {
    if (s2c[i] == 0x09 && s2c[i + 1] == 4 && s2c[i + 2] == 0) {
      return boost::asio::ip::address_v4({s2c[i + 3], s2c[i + 4], s2c[i + 5], s2c[i + 6]});
    }
  }
  return {};
}

// A hand-built bind (little endian) for one interface, with an NTLM trailer at
// `auth_level` (6: packet privacy) and a 16-byte verifier.
Bytes BindWithAuth(const Uuid& interface, uint16_t major, uint8_t auth_level) {
  Bytes b = {5, 0, 11, 0x03, 0x10, 0, 0, 0, 0, 0, 16, 0, 1, 0, 0, 0};  // frag/auth length filled below
  auto u16 = [&](uint16_t v) { b.push_back(static_cast<uint8_t>(v)); b.push_back(static_cast<uint8_t>(v >> 8)); };
  auto u32 = [&](uint32_t v) { u16(static_cast<uint16_t>(v)); u16(static_cast<uint16_t>(v >> 16)); };
  auto uuid = [&](const Uuid& u) {
    uint8_t raw[16];
    u.Write(raw, true);
    b.insert(b.end(), raw, raw + 16);
  };
  u16(4280);
  u16(4280);
  u32(0);
  b.insert(b.end(), {1, 0, 0, 0});  // one context
  u16(0);                           // context id
  b.insert(b.end(), {1, 0});        // one transfer syntax
  uuid(interface);
  u32(major);
  uuid(uuids::kNdr);
  u32(2);
  b.insert(b.end(), {10, auth_level, 0, 0});  // NTLM, level, no padding
  u32(0);                                     // auth context id
  b.insert(b.end(), 16, 0xab);                // verifier
  b[8] = static_cast<uint8_t>(b.size());
  b[9] = static_cast<uint8_t>(b.size() >> 8);
  return b;
}

}  // namespace

TEST_CASE("mapi settings: defaults, every key, and one-line errors") {
  MapiSettings d = Settings();
  CHECK(d.mode == MapiSettings::Mode::kRemap);
  CHECK(d.mapi_port == 7830);
  CHECK(d.nspi_port == 7840);
  CHECK(d.binding_ttl == std::chrono::seconds(7200));
  std::string error;
  auto defaults = ParseMapiSettings({}, &error);
  REQUIRE(defaults);
  CHECK(defaults->state_file == "/var/lib/wanopt/mapi-bindings");
  CHECK(defaults->fail_open_chain == "WANOPT_MAPI");
  MapiSettings s = Settings({{"mode", "no-remap"}, {"mapi_port", "9830"}, {"binding_ttl_s", "60"},
                             {"remap_interfaces", "12345778-1234-abcd-ef00-0123456789ac,e3514235-4b06-11d1-ab04-00c04fc2dcd2"},
                             {"admission_connections", "5"}});
  CHECK(s.mode == MapiSettings::Mode::kNoRemap);
  CHECK(s.mapi_port == 9830);
  CHECK(s.remap_interfaces.size() == 2);
  CHECK(s.admission_connections == 5);
  CHECK(s.state_file.empty());
  CHECK(s.fail_open_chain.empty());
  CHECK(Settings({{"state_file", "/tmp/b"}, {"fail_open_chain", "MY_CHAIN"}}).state_file == "/tmp/b");
  CHECK_FALSE(ParseMapiSettings({{"state_file", "relative/b"}}, &error));
  CHECK(error == "state_file: 'relative/b' is not an absolute path");
  CHECK_FALSE(ParseMapiSettings({{"fail_open_chain", "A B"}}, &error));
  CHECK(error.starts_with("fail_open_chain: 'A B' is not an iptables chain name"));
  CHECK_FALSE(ParseMapiSettings({{"mode", "fast"}}, &error));
  CHECK(error == "mode: 'fast' is not remap, no-remap or pass-through");
  CHECK_FALSE(ParseMapiSettings({{"remap_interfaces", "samr"}}, &error));
  CHECK(error == "remap_interfaces: 'samr' is not a UUID");
  CHECK_FALSE(ParseMapiSettings({{"nspi_port", "7830"}}, &error));
  CHECK(error == "nspi_port: must differ from mapi_port");
  CHECK_FALSE(ParseMapiSettings({{"mapi_port", "70000"}}, &error));
  CHECK_FALSE(ParseMapiSettings({{"port", "1"}}, &error));
  CHECK(error.starts_with("port: unknown setting"));
}

TEST_CASE("mapi box: a handed-out port redirects to the real one, a taken proxy port is not reused") {
  MapiBox box(Settings());
  auto server = make_address("198.18.2.10");
  tcp::endpoint client(make_address("198.18.1.10"), 40000);
  CHECK_FALSE(box.OnNewFlow(client, tcp::endpoint(make_address("198.18.2.10"), 7830)).port);
  CHECK(box.Bind(server, 7830, 1032, "EMSMDB"));
  CHECK(box.Bind(server, 7830, 1032, "EMSMDB"));          // the same again: fine
  CHECK_FALSE(box.Bind(server, 7830, 1033, "EMSMDB"));    // another real port: refused
  auto advice = box.OnNewFlow(client, tcp::endpoint(make_address("198.18.2.10"), 7830));
  CHECK_FALSE(advice.pass_through);
  REQUIRE(advice.port);
  CHECK(*advice.port == 1032);
  // Another server's 7830 is not this binding.
  CHECK_FALSE(box.OnNewFlow(client, tcp::endpoint(make_address("198.18.2.11"), 7830)).port);
  auto found = box.FindByRealPort(server, 1032);
  REQUIRE(found);
  CHECK(found->first == 7830);
}

TEST_CASE("mapi box: admission control passes new sessions through whole, decided sessions keep their way") {
  MapiBox box(Settings({{"admission_connections", "1"}}));
  tcp::endpoint early(make_address("198.18.1.10"), 40000), late(make_address("198.18.1.11"), 40000);
  tcp::endpoint epm(make_address("198.18.2.10"), 135);
  CHECK_FALSE(box.OnNewFlow(early, epm).pass_through);  // first session: optimized
  box.ConnectionStarted();                              // the box is now at its limit
  auto advice = box.OnNewFlow(late, epm);
  CHECK(advice.pass_through);
  CHECK(advice.reason.find("admission control") != std::string::npos);
  CHECK_FALSE(box.OnNewFlow(early, epm).pass_through);  // the early client's session goes on
  auto gauges = box.Gauges();  // what /metrics shows of admission control
  CHECK(gauges == std::vector<std::pair<std::string, uint64_t>>{{"connections", 1}, {"admission_connections", 1},
                                                                {"bindings", 0}});
  // The late client's MAPI connections to a real port this box knows pass through too.
  CHECK(box.Bind(epm.address(), 7830, 1032, "EMSMDB"));
  CHECK(box.OnNewFlow(late, tcp::endpoint(epm.address(), 1032)).pass_through);
  CHECK_FALSE(box.OnNewFlow(early, tcp::endpoint(epm.address(), 1032)).pass_through);
  box.ConnectionEnded();
  // Decided for the binding's lifetime: still passing through (never a mix).
  CHECK(box.OnNewFlow(late, epm).pass_through);
}

TEST_CASE("mapi box: admission control and mode pass-through hold for endpoint mappers reached over IPv6") {
  MapiBox box(Settings({{"admission_connections", "1"}}));
  tcp::endpoint early(make_address("2001:2:0:1::10"), 40000), late(make_address("2001:2:0:1::11"), 40000);
  tcp::endpoint epm(make_address("2001:2:0:2::10"), 135);
  CHECK_FALSE(box.OnNewFlow(early, epm).pass_through);
  box.ConnectionStarted();
  auto advice = box.OnNewFlow(late, epm);
  CHECK(advice.pass_through);
  CHECK(advice.reason.find("admission control") != std::string::npos);
  CHECK_FALSE(box.OnNewFlow(early, epm).pass_through);
  CHECK(box.Bind(epm.address(), 7830, 1032, "EMSMDB"));
  CHECK(box.OnNewFlow(late, tcp::endpoint(epm.address(), 1032)).pass_through);
  CHECK_FALSE(box.OnNewFlow(early, tcp::endpoint(epm.address(), 1032)).pass_through);
  MapiBox off(Settings({{"mode", "pass-through"}}));
  CHECK(off.OnNewFlow(early, epm).pass_through);
}

TEST_CASE("mapi box: mode pass-through leaves the endpoint mapper alone") {
  MapiBox box(Settings({{"mode", "pass-through"}}));
  auto advice = box.OnNewFlow(tcp::endpoint(make_address("198.18.1.10"), 1), tcp::endpoint(make_address("198.18.2.10"), 135));
  CHECK(advice.pass_through);
  CHECK(advice.reason.find("pass-through") != std::string::npos);
}

TEST_CASE("mapi module: Outlook's ept_map answers are remapped on the branch, byte by byte or whole") {
  for (size_t step : {size_t{1}, size_t{7}, size_t{100000}}) {
    CAPTURE(step);
    MapiBox box(Settings());
    Bytes original = Fixture("epm_map_emsmdb.s2c.bin");
    size_t at = FindPort(original, 1032);
    REQUIRE(at != 0);
    Host* host = nullptr;
    Bytes got = Exchange(Side::kBranch, box, "epm_map_emsmdb", step, &host);
    REQUIRE(got.size() == original.size());
    CHECK(PortAt(got, at) == 7830);
    // Only those two bytes changed.
    got[at] = original[at];
    got[at + 1] = original[at + 1];
    CHECK(got == original);
    CHECK(host->application == "EPM");
    // Keyed by the tower's IPv4 address (the Exchange server's), not the connection's.
    auto binding = box.Lookup(TowerAddress(original), 7830);
    REQUIRE(binding);
    CHECK(binding->real_port == 1032);
    CHECK(binding->interface == "EMSMDB");
  }
  MapiBox box(Settings());
  Bytes original = Fixture("epm_map_nspi.s2c.bin");
  size_t at = FindPort(original, 4997);
  REQUIRE(at != 0);
  CHECK(PortAt(Exchange(Side::kBranch, box, "epm_map_nspi", 13), at) == 7840);
}

TEST_CASE("mapi module: over IPv6 the answer is remapped and the binding kept for the address asked") {
  // A tower carries an IPv4 address only (here the Exchange server's); a client that
  // asked over IPv6 keeps the IPv6 address it asked at and takes only the port.
  MapiBox box(Settings());
  Host* host = nullptr;
  Bytes original = Fixture("epm_map_emsmdb.s2c.bin");
  size_t at = FindPort(original, 1032);
  Bytes got = Exchange(Side::kBranch, box, "epm_map_emsmdb", 9, &host, 135, "2001:2:1::10", "2001:2:2::10");
  REQUIRE(got.size() == original.size());
  CHECK(PortAt(got, at) == 7830);
  CHECK(host->application == "EPM");
  CHECK(std::none_of(host->notes.begin(), host->notes.end(), [](const std::string& n) { return n.find("IPv6") != std::string::npos; }));
  CHECK_FALSE(box.Lookup(TowerAddress(original), 7830));  // not under the tower's IPv4 address
  auto binding = box.Lookup(make_address("2001:2:2::10"), 7830);
  REQUIRE(binding);
  CHECK(binding->real_port == 1032);
  // The client's next connection, to [2001:2:2::10]:7830, goes to the real port;
  // the same port at another IPv6 server or at the tower's IPv4 address does not.
  tcp::endpoint client(make_address("2001:2:1::10"), 40001);
  auto advice = box.OnNewFlow(client, tcp::endpoint(make_address("2001:2:2::10"), 7830));
  REQUIRE(advice.port);
  CHECK(*advice.port == 1032);
  CHECK_FALSE(box.OnNewFlow(client, tcp::endpoint(make_address("2001:2:2::11"), 7830)).port);
  CHECK_FALSE(box.OnNewFlow(client, tcp::endpoint(TowerAddress(original), 7830)).port);

  // A link-local server: the session's address has a scope, the SYN the box is
  // asked about next has none; the binding is found all the same.
  MapiBox local(Settings());
  (void)Exchange(Side::kBranch, local, "epm_map_emsmdb", 9, &host, 135, "fe80::1%1", "fe80::2%1");
  auto steered = local.OnNewFlow(tcp::endpoint(make_address("fe80::1"), 40002), tcp::endpoint(make_address("fe80::2"), 7830));
  REQUIRE(steered.port);
  CHECK(*steered.port == 1032);
}

TEST_CASE("mapi module: the datacenter side and no-remap mode change nothing") {
  MapiBox remap(Settings());
  CHECK(Exchange(Side::kDatacenter, remap, "epm_map_emsmdb", 5) == Fixture("epm_map_emsmdb.s2c.bin"));
  MapiBox off(Settings({{"mode", "no-remap"}}));
  CHECK(Exchange(Side::kBranch, off, "epm_map_emsmdb", 5) == Fixture("epm_map_emsmdb.s2c.bin"));
}

TEST_CASE("mapi module: binds classify MAPI and NSPI") {
  MapiBox box(Settings());
  Host* host = nullptr;
  // The capture's dynamic ports: NSPI at 4997, EMSMDB at 1032.
  (void)Exchange(Side::kBranch, box, "nspi_bind", 3, &host, 4997);
  CHECK(host->application == "NSPI");
  (void)Exchange(Side::kBranch, box, "emsmdb_bind_ntlm", 3, &host, 1032);
  CHECK(host->application == "MAPI");  // NTLM at connect level in this capture, not privacy
}

TEST_CASE("mapi module: EMSMDB bound with packet privacy is eMAPI, and the note says why DRE gains little") {
  MapiBox box(Settings());
  Host host(Side::kBranch, &box, 1032);
  ModuleChain chain(host, {"mapi"});
  chain.Start();
  Buffer data;
  data.Append(BindWithAuth(uuids::kEmsmdb, 4821, 6));
  chain.Process(Direction::kClientToServer, data, false);
  CHECK(host.application == "eMAPI");
  bool noted = false;
  for (const auto& n : host.notes) noted |= n.find("DRE gains little") != std::string::npos;
  CHECK(noted);
  // A second context on the same connection (alter_context) is fine, and noted.
  Bytes alter = BindWithAuth(uuids::kNspi, 56, 6);
  alter[2] = 14;  // alter_context
  data.Clear();
  data.Append(alter);
  chain.Process(Direction::kClientToServer, data, false);
  bool multiple = false;
  for (const auto& n : host.notes) multiple |= n.find("multiple contexts on one connection: EMSMDB, NSPI") != std::string::npos;
  CHECK(multiple);
}

TEST_CASE("mapi module: garbage from the server is passed through unchanged, with a note") {
  MapiBox box(Settings());
  Host host(Side::kBranch, &box);
  ModuleChain chain(host, {"mapi"});
  chain.Start();
  Buffer c2s;
  Bytes request = Fixture("epm_map_emsmdb.c2s.bin");
  c2s.Append(request);
  chain.Process(Direction::kClientToServer, c2s, false);
  Buffer s2c;
  Bytes garbage = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
  s2c.Append(garbage);
  chain.Process(Direction::kServerToClient, s2c, false);
  CHECK(Bytes(s2c.data(), s2c.data() + s2c.size()) == garbage);
  bool noted = false;
  for (const auto& n : host.notes) noted |= n.find("left untouched") != std::string::npos;
  CHECK(noted);
}

TEST_CASE("mapi module: an ept_map answer in three fragments, cut inside the port, is rewritten whole") {
  // Outlook's captured exchange, with the server's answer re-cut into three
  // response fragments; one cut falls between the two bytes of the port.
  Bytes c2s = Fixture("epm_map_emsmdb.c2s.bin");
  Bytes s2c = Fixture("epm_map_emsmdb.s2c.bin");
  const size_t ack_size = 60, header = 24;  // bind_ack, then the response's header and fixed body
  Bytes ack(s2c.begin(), s2c.begin() + ack_size);
  Bytes response(s2c.begin() + ack_size, s2c.end());
  Bytes stub(response.begin() + header, response.end());
  size_t port_at = FindPort(s2c, 1032) - ack_size - header;  // in the stub
  uint32_t call_id = uint32_t{response[12]} | uint32_t{response[13]} << 8;
  std::vector<size_t> cuts = {0, 20, port_at + 1, stub.size()};
  Bytes fragments;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    Bytes pdu(response.begin(), response.begin() + header);
    pdu[3] = static_cast<uint8_t>((i == 0 ? 0x01 : 0) | (i + 2 == cuts.size() ? 0x02 : 0));
    pdu[12] = static_cast<uint8_t>(call_id);
    pdu[13] = static_cast<uint8_t>(call_id >> 8);
    uint32_t alloc_hint = static_cast<uint32_t>(stub.size() - cuts[i]);
    for (int b = 0; b < 4; ++b) pdu[16 + b] = static_cast<uint8_t>(alloc_hint >> (8 * b));
    pdu.insert(pdu.end(), stub.begin() + static_cast<long>(cuts[i]), stub.begin() + static_cast<long>(cuts[i + 1]));
    pdu[8] = static_cast<uint8_t>(pdu.size());
    pdu[9] = static_cast<uint8_t>(pdu.size() >> 8);
    fragments.insert(fragments.end(), pdu.begin(), pdu.end());
  }
  MapiBox box(Settings());
  Host host(Side::kBranch, &box);
  ModuleChain chain(host, {"mapi"});
  chain.Start();
  Buffer data;
  data.Append(c2s);
  chain.Process(Direction::kClientToServer, data, false);
  Bytes server = ack;
  server.insert(server.end(), fragments.begin(), fragments.end());
  Bytes got;
  for (size_t at = 0; at < server.size(); at += 5) {  // 5 bytes at a time: held until the last fragment
    Buffer piece;
    piece.Append(std::span<const uint8_t>(server.data() + at, std::min<size_t>(5, server.size() - at)));
    chain.Process(Direction::kServerToClient, piece, false);
    got.insert(got.end(), piece.data(), piece.data() + piece.size());
  }
  REQUIRE(got.size() == server.size());
  // The port's two bytes sit in the second and third fragments now: both rewritten.
  uint16_t port = 0;
  size_t changed = 0;
  for (size_t i = 0; i < got.size(); ++i) changed += got[i] != server[i];
  CHECK(changed == 2);
  size_t second_end = ack_size + (header + cuts[2] - cuts[1]) + (header + cuts[1]);
  port = static_cast<uint16_t>(got[second_end - 1] << 8 | got[second_end + header]);
  CHECK(port == 7830);
}

TEST_CASE("mapi box: its table lists the live bindings for the status page") {
  MapiBox box(Settings({{"binding_ttl_s", "600"}}));
  CHECK(box.Bind(make_address("198.18.2.10"), 7830, 1032, "EMSMDB"));
  CHECK(box.Bind(make_address("2001:2:0:2::10"), 7840, 4997, "NSPI"));
  auto tables = box.Tables();
  REQUIRE(tables.size() == 1);
  const ModuleTable& t = tables[0];
  CHECK(t.name == "port_bindings");
  REQUIRE(t.columns.size() == 5);
  CHECK(t.columns[0].name == "server");
  CHECK(t.columns[4].name == "expires_in_s");
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0] == std::vector<std::string>{"198.18.2.10", "7830", "1032", "EMSMDB", t.rows[0][4]});
  CHECK(t.rows[1][0] == "2001:2:0:2::10");
  CHECK(t.rows[1][3] == "NSPI");
  int left = std::stoi(t.rows[0][4]);
  CHECK(left >= 598);
  CHECK(left <= 600);
  // Bounded: at most kMaxSavedBindings rows, however many bindings live.
  for (uint16_t port = 1; port <= kMaxSavedBindings + 10; ++port) {
    CHECK(box.Bind(make_address("198.18.3.1"), port, 1000, "EMSMDB"));
  }
  CHECK(box.Tables()[0].rows.size() == kMaxSavedBindings);
}
