// The rpch module (protocols/rpch): RPC over HTTP channels recognised and paired
// into virtual connections, classified from their binds, recycled, and reset
// together; MAPI over HTTP and HTTPS named; bytes never changed; settings, admission
// control and session affinity.
#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "protocols/chain.h"
#include "protocols/common/dcerpc/rts.h"
#include "protocols/rpch/virtual_connection.h"

using namespace wanopt;
using namespace wanopt::protocols;
using namespace wanopt::protocols::rpch;
using namespace wanopt::protocols::dcerpc;
using boost::asio::ip::make_address;
using boost::asio::ip::tcp;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes Fixture(const std::string& name) {
  std::ifstream in(std::string(WANOPT_MODULE_FIXTURES) + "/" + name, std::ios::binary);
  REQUIRE_MESSAGE(in, name);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

Bytes Text(const std::string& s) { return Bytes(s.begin(), s.end()); }
Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

RpchSettings Settings(ModuleSettings s = {}) {
  std::string error;
  auto parsed = ParseRpchSettings(s, &error);
  REQUIRE_MESSAGE(parsed, error);
  return *parsed;
}

// One connection through a chain with the rpch module; what the module says and
// the resets it asks for are recorded.
class Connection final : public ModuleChain::Host {
 public:
  Connection(uint64_t id, BoxModule* box, boost::asio::io_context* io = nullptr, uint16_t port = 80)
      : box_(box), io_(io), resets_(std::make_shared<std::vector<std::string>>()) {
    info.id = id;
    info.client = tcp::endpoint(make_address("198.18.1.10"), static_cast<uint16_t>(40000 + id));
    info.server = tcp::endpoint(make_address("198.18.2.10"), port);
    chain_ = std::make_unique<ModuleChain>(*this, std::vector<std::string>{"rpch"});
    chain_->Start();
  }
  const ConnectionInfo& connection() const override { return info; }
  bool SendModuleMessage(uint16_t, std::span<const uint8_t>) override { return false; }
  void SetApplication(std::string_view name) override { application = name; }
  void AddNote(std::string_view note) override { notes.emplace_back(note); }
  void SetNote(std::string_view key, std::string_view note) override {
    for (auto& n : notes) {
      if (n.rfind(key, 0) == 0) { n = note; return; }
    }
    notes.emplace_back(note);
  }
  BoxModule* BoxModuleFor(std::string_view name) override { return name == "rpch" ? box_ : nullptr; }
  ModuleContext::ResetHandle ResetHandle() override {
    return [resets = resets_](std::string why) { resets->push_back(std::move(why)); };
  }
  std::optional<boost::asio::any_io_executor> ModuleExecutor() override {
    if (!io_) return std::nullopt;
    return io_->get_executor();
  }

  // Passes `bytes` in `step`-byte pieces; returns what left the chain.
  Bytes Send(Direction d, const Bytes& bytes, size_t step = 1 << 20, bool end = false) {
    Bytes out;
    for (size_t at = 0; at < bytes.size(); at += step) {
      Buffer data;
      data.Append(std::span<const uint8_t>(bytes.data() + at, std::min(step, bytes.size() - at)));
      chain_->Process(d, data, end && at + step >= bytes.size());
      out.insert(out.end(), data.data(), data.data() + data.size());
    }
    return out;
  }
  void End() {
    for (Direction d : {Direction::kClientToServer, Direction::kServerToClient}) {
      Buffer none;
      chain_->Process(d, none, true);
    }
  }
  void Close() { chain_->Close(); }
  std::string Note(std::string_view start) const {
    for (const auto& n : notes) {
      if (n.find(start) != std::string::npos) return n;
    }
    return "";
  }
  const std::vector<std::string>& resets() const { return *resets_; }

  ConnectionInfo info;
  std::string application;
  std::vector<std::string> notes;

 private:
  BoxModule* box_;
  boost::asio::io_context* io_;
  std::shared_ptr<std::vector<std::string>> resets_;
  std::unique_ptr<ModuleChain> chain_;
};

const Uuid kVc = *Uuid::Parse("11111111-2222-3333-4444-555555555555");
const Uuid kIn1 = *Uuid::Parse("aaaaaaaa-0000-0000-0000-000000000001");
const Uuid kIn2 = *Uuid::Parse("aaaaaaaa-0000-0000-0000-000000000002");
const Uuid kOut1 = *Uuid::Parse("bbbbbbbb-0000-0000-0000-000000000001");
const Uuid kAssoc = *Uuid::Parse("cccccccc-0000-0000-0000-000000000001");

Bytes InHead() {
  return Text("RPC_IN_DATA /rpc/rpcproxy.dll?exch.example:6001 HTTP/1.1\r\nHost: exch.example\r\n"
              "Content-Length: 1073741824\r\nAuthorization: Basic dTpw\r\n\r\n");
}
Bytes OutHead() {
  return Text("RPC_OUT_DATA /rpc/rpcproxy.dll?exch.example:6001 HTTP/1.1\r\nHost: exch.example\r\n"
              "Content-Length: 76\r\nAuthorization: Basic dTpw\r\n\r\n");
}
Bytes OutAnswer() {
  return Cat({Text("HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n"),
              BuildConnA3(), BuildConnC2()});
}
Bytes InRecycle(const Uuid& predecessor, const Uuid& successor) {
  std::vector<RtsCommand> commands = {rts_cmd::Value(RtsCommandType::kVersion, kRtsVersion), rts_cmd::Cookie(kVc),
                                      rts_cmd::Cookie(predecessor), rts_cmd::Cookie(successor)};
  return BuildRts(rts_flags::kRecycleChannel, commands);
}

}  // namespace

TEST_CASE("rpch: IN and OUT channels pair into one virtual connection, classified from the IN channel's bind") {
  RpchBox box(Settings());
  Connection out(2, &box), in(3, &box);
  Bytes out_c2s = Cat({OutHead(), BuildConnA1(kVc, kOut1)});
  Bytes in_c2s = Cat({InHead(), BuildConnB1(kVc, kIn1, kAssoc), Fixture("emsmdb_bind_ntlm.c2s.bin")});
  // Every byte goes on unchanged, whatever the split.
  for (size_t step : {size_t{1}, size_t{13}, size_t{1} << 20}) {
    RpchBox fresh(Settings());
    Connection o(20, &fresh), i(21, &fresh);
    CHECK(o.Send(Direction::kClientToServer, out_c2s, step) == out_c2s);
    CHECK(o.Send(Direction::kServerToClient, OutAnswer(), step) == OutAnswer());
    CHECK(i.Send(Direction::kClientToServer, in_c2s, step) == in_c2s);
    o.Send(Direction::kServerToClient, BuildPing());
    CHECK(i.application == "MAPI-OA");
    CHECK(o.application == "MAPI-OA");  // learned from the IN channel, through the box
    CHECK(o.Note("virtual connection 11111111-2222-3333-4444-555555555555: IN #21, OUT #20; bound: EMSMDB") != "");
  }
  out.Send(Direction::kClientToServer, out_c2s);
  in.Send(Direction::kClientToServer, in_c2s);
  CHECK(box.channels == 2);
  CHECK(in.Note("RPC over HTTP v2 IN channel (RPC_IN_DATA /rpc/rpcproxy.dll) to exch.example:6001") != "");
  CHECK(out.Note("RPC over HTTP v2 OUT channel") != "");
  auto gauges = box.Gauges();
  CHECK(std::find(gauges.begin(), gauges.end(), std::pair<std::string, uint64_t>{"virtual_connections", 1}) != gauges.end());
  // The status page's table of virtual connections (/api/modules).
  auto tables = box.Tables();
  REQUIRE(tables.size() == 1);
  CHECK(tables[0].name == "virtual_connections");
  REQUIRE(tables[0].rows.size() == 1);
  CHECK(tables[0].rows[0] == std::vector<std::string>{"11111111-2222-3333-4444-555555555555", "MAPI-OA",
                                                      "IN #3, OUT #2; bound: EMSMDB", "0"});
  // Closed in order: nobody is reset.
  in.End();
  in.Close();
  out.End();
  out.Close();
  CHECK(out.resets().empty());
  CHECK(in.resets().empty());
  CHECK(box.channels == 0);
  // A virtual connection leaves the table with the last of its channels.
  RpchBox scoped(Settings());
  {
    Connection o(30, &scoped);
    o.Send(Direction::kClientToServer, out_c2s);
    CHECK(scoped.Tables()[0].rows.size() == 1);
  }
  CHECK(scoped.Tables()[0].rows.empty());
}

TEST_CASE("rpch: MAPI bound with packet privacy inside the channel is eMAPI-OA, said to gain little") {
  RpchBox box(Settings());
  Bytes bind = Fixture("emsmdb_bind_ntlm.c2s.bin");
  // Its first PDU is the bind, NTLM at connect level: made privacy (auth_level 6).
  size_t frag_length = bind[8] | bind[9] << 8, auth_length = bind[10] | bind[11] << 8;
  REQUIRE(bind[frag_length - auth_length - 8] == 0x0a);  // NTLM
  bind[frag_length - auth_length - 8 + 1] = 6;
  Connection out(2, &box), in(3, &box);
  out.Send(Direction::kClientToServer, Cat({OutHead(), BuildConnA1(kVc, kOut1)}));
  in.Send(Direction::kClientToServer, Cat({InHead(), BuildConnB1(kVc, kIn1, kAssoc), bind}));
  out.Send(Direction::kServerToClient, OutAnswer());
  CHECK(in.application == "eMAPI-OA");
  CHECK(out.application == "eMAPI-OA");
  CHECK(in.Note("encrypted MAPI (packet privacy) inside RPC over HTTP: the payload is encrypted, DRE gains little") != "");
}

TEST_CASE("rpch: a channel reset takes its partner down, a recycled channel does not") {
  RpchBox box(Settings());
  auto out = std::make_unique<Connection>(2, &box);
  auto in1 = std::make_unique<Connection>(3, &box);
  out->Send(Direction::kClientToServer, Cat({OutHead(), BuildConnA1(kVc, kOut1)}));
  in1->Send(Direction::kClientToServer, Cat({InHead(), BuildConnB1(kVc, kIn1, kAssoc)}));
  // IN channel recycling: a new IN channel names the old one as its predecessor.
  auto in2 = std::make_unique<Connection>(4, &box);
  in2->Send(Direction::kClientToServer, Cat({InHead(), InRecycle(kIn1, kIn2)}));
  CHECK(box.recycles == 1);
  out->Send(Direction::kServerToClient, OutAnswer());
  CHECK(out->Note("IN #3, #4, OUT #2") != "");
  CHECK(out->Note("recycled 1x (IN #3 -> #4)") != "");
  // The old IN channel dies without a clean close: it was replaced, nobody is reset.
  in1->Close();
  CHECK(out->resets().empty());
  CHECK(in2->resets().empty());
  // The new IN channel is reset: the OUT channel goes with it, once.
  in2->Close();
  REQUIRE(out->resets().size() == 1);
  CHECK(out->resets()[0].find("lost its IN channel (connection #4 reset)") != std::string::npos);
  CHECK(box.partner_resets == 1);
  out->Close();  // the reset arriving: nobody left to reset
  CHECK(box.partner_resets == 1);
}

TEST_CASE("rpch: a channel left without a partner is reset after the pairing timeout") {
  boost::asio::io_context io;
  RpchBox box(Settings({{"pairing_timeout_ms", "100"}}));
  Connection out(7, &box, &io), in(8, &box, &io);
  out.Send(Direction::kClientToServer, Cat({OutHead(), BuildConnA1(kVc, kOut1)}));
  const Uuid other_vc = *Uuid::Parse("99999999-2222-3333-4444-555555555555");
  in.Send(Direction::kClientToServer, Cat({InHead(), BuildConnB1(other_vc, kIn1, kAssoc)}));
  // Two timers, one per channel; each finds itself alone (different virtual connections).
  for (int fired = 0; fired < 2 && io.run_one_for(std::chrono::seconds(10)); ++fired) {}
  REQUIRE(out.resets().size() == 1);
  CHECK(out.resets()[0].find("this OUT channel found no IN channel of virtual connection") != std::string::npos);
  CHECK(in.resets().size() == 1);
  CHECK(box.pairing_resets == 2);
  // Paired channels are left alone.
  RpchBox box2(Settings({{"pairing_timeout_ms", "100"}}));
  Connection o2(9, &box2, &io), i2(10, &box2, &io);
  o2.Send(Direction::kClientToServer, Cat({OutHead(), BuildConnA1(kVc, kOut1)}));
  i2.Send(Direction::kClientToServer, Cat({InHead(), BuildConnB1(kVc, kIn1, kAssoc)}));
  io.restart();
  for (int fired = 0; fired < 2 && io.run_one_for(std::chrono::seconds(10)); ++fired) {}
  CHECK(o2.resets().empty());
  CHECK(i2.resets().empty());
}

TEST_CASE("rpch: malformed HTTP or PDUs stop the module, the bytes still pass unchanged") {
  RpchBox box(Settings());
  Bytes lying = Cat({InHead(), BuildConnB1(kVc, kIn1, kAssoc)});
  lying.insert(lying.end(), {5, 0, 11, 3, 0x10, 0, 0, 0, 0x08, 0x00, 0, 0, 1, 0, 0, 0});  // bind, frag_length 8
  lying.insert(lying.end(), 100, 0xEE);
  Connection a(1, &box);
  CHECK(a.Send(Direction::kClientToServer, lying, 7) == lying);
  CHECK(a.Note("rpch: malformed PDU in the channel body from the client: left untouched") != "");
  Bytes garbage = Text("RPC_IN_DATA /rpc/rpcproxy.dll?x:1 HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n");
  Connection b(2, &box);
  CHECK(b.Send(Direction::kClientToServer, garbage, 3) == garbage);
  CHECK(b.application.empty());  // framing refused before the head counted: never one of ours
  Bytes bad_chunk = Text("RPC_IN_DATA /rpc/rpcproxy.dll?x:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  Connection b2(4, &box);
  CHECK(b2.Send(Direction::kClientToServer, bad_chunk, 3) == bad_chunk);
  CHECK(b2.Note("rpch: HTTP from the client: chunked body") != "");
  // Absurd RTS: NumberOfCommands far beyond the PDU.
  Bytes rts = BuildConnB1(kVc, kIn1, kAssoc);
  rts[18] = 0xFF;
  rts[19] = 0x7F;
  Connection c(3, &box);
  Bytes bad = Cat({InHead(), rts, Text("more")});
  CHECK(c.Send(Direction::kClientToServer, bad) == bad);
  CHECK(c.Note("rpch: RTS PDU does not parse") != "");
  CHECK(box.Gauges()[1].second == 1);  // only the first joined one: its CONN/B1 came before the lie
}

TEST_CASE("rpch: MAPI over HTTP request types, HTTPS, and plain web traffic") {
  RpchBox box(Settings());
  Connection m(1, &box);
  Bytes requests = Text(
      "POST /mapi/emsmdb/?MailboxId=x HTTP/1.1\r\nX-RequestType: Connect\r\nContent-Length: 3\r\n\r\nabc"
      "POST /mapi/emsmdb/?MailboxId=x HTTP/1.1\r\nX-RequestType: Execute\r\nContent-Length: 0\r\n\r\n"
      "POST /mapi/emsmdb/?MailboxId=x HTTP/1.1\r\nX-RequestType: Execute\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
      "POST /mapi/emsmdb/?MailboxId=x HTTP/1.1\r\nX-RequestType: NotificationWait\r\nContent-Length: 0\r\n\r\n");
  CHECK(m.Send(Direction::kClientToServer, requests, 5) == requests);
  Bytes pending = Text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-ResponseCode: 0\r\n\r\n9\r\nPENDING\r\n\r\n");
  CHECK(m.Send(Direction::kServerToClient, pending, 4) == pending);
  CHECK(m.application == "MAPI-HTTP");
  CHECK(m.Note("MAPI over HTTP (emsmdb) requests: Connect 1, Execute 2, NotificationWait 1") != "");
  CHECK(box.mapi_http == 1);

  Connection tls(2, &box, nullptr, 443);
  Bytes hello = {0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0};
  CHECK(tls.Send(Direction::kClientToServer, hello) == hello);
  CHECK(tls.application == "HTTPS");
  CHECK(tls.Note("HTTPS: payload encrypted, RPC over HTTP not visible") != "");

  // TLS elsewhere than an RPC proxy's port, SMB, a server that speaks first: no word.
  Connection other_tls(4, &box, nullptr, 8443);
  CHECK(other_tls.Send(Direction::kClientToServer, hello) == hello);
  Connection smb(5, &box, nullptr, 445);
  Bytes negotiate = {0, 0, 0, 4, 0xFE, 'S', 'M', 'B'};
  CHECK(smb.Send(Direction::kClientToServer, negotiate, 3) == negotiate);
  Connection smtp(6, &box, nullptr, 80);
  Bytes banner = Text("220 mail ESMTP\r\n");
  CHECK(smtp.Send(Direction::kServerToClient, banner) == banner);
  CHECK(smtp.Send(Direction::kClientToServer, Text("EHLO x\r\n")) == Text("EHLO x\r\n"));
  for (Connection* c : {&other_tls, &smb, &smtp}) {
    CHECK(c->application.empty());
    CHECK(c->notes.empty());
  }

  Connection web(3, &box);
  Bytes get = Text("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(web.Send(Direction::kClientToServer, get) == get);
  CHECK(web.application.empty());
  CHECK(web.notes.empty());
}

TEST_CASE("rpch: settings, admission control and session affinity") {
  std::string error;
  CHECK_FALSE(ParseRpchSettings({{"ports", "80,99999"}}, &error));
  CHECK(error == "ports: '99999' is not a port");
  CHECK_FALSE(ParseRpchSettings({{"pairing_timeout_ms", "5"}}, &error));
  CHECK_FALSE(ParseRpchSettings({{"colour", "blue"}}, &error));
  CHECK(error.rfind("colour: unknown setting", 0) == 0);
  RpchSettings s = Settings({{"ports", "80,8080"}, {"admission_channels", "1"}});
  CHECK(s.ports == std::set<uint16_t>{80, 8080});

  RpchBox box(s);
  tcp::endpoint client(make_address("198.18.1.10"), 40000), other(make_address("198.18.1.11"), 40000);
  tcp::endpoint proxy(make_address("198.18.2.10"), 80), elsewhere(make_address("198.18.2.10"), 25);
  CHECK_FALSE(box.OnNewFlow(client, proxy).pass_through);  // the session's first connection: optimized
  box.channels = 1;                                         // the box is full now
  CHECK_FALSE(box.OnNewFlow(client, proxy).pass_through);   // the same session stays optimized
  FlowAdvice full = box.OnNewFlow(other, proxy);
  CHECK(full.pass_through);
  CHECK(full.reason.find("rpch admission control: 1 RPC over HTTP channels") == 0);
  box.channels = 0;
  CHECK(box.OnNewFlow(other, proxy).pass_through);  // that session passes through whole, while it lasts
  CHECK_FALSE(box.OnNewFlow(other, elsewhere).pass_through);  // not an RPC proxy port

  // Over IPv6 alike: a full box passes a new session through, an optimized one goes on.
  RpchBox box6(s);
  tcp::endpoint client6(make_address("2001:2:0:1::10"), 40000), other6(make_address("2001:2:0:1::11"), 40000);
  tcp::endpoint proxy6(make_address("2001:2:0:2::10"), 80);
  CHECK_FALSE(box6.OnNewFlow(client6, proxy6).pass_through);
  box6.channels = 1;
  CHECK_FALSE(box6.OnNewFlow(client6, proxy6).pass_through);
  CHECK(box6.OnNewFlow(other6, proxy6).pass_through);
  box6.channels = 0;
  CHECK(box6.OnNewFlow(other6, proxy6).pass_through);
}
