// What the interceptor does with each queued SYN (wanopt/intercept/syn_decisions.cc),
// decided without root: no transparent listener, no netlink queue, the verdicts
// recorded by a queue of the test's own. The decisions that probe the path (they
// open sockets) are the namespace tests' (tests/integration/discovery_test.py).
#include <doctest/doctest.h>

#include <map>
#include <vector>

#include "wanopt/config/config.h"
#include "wanopt/intercept/interceptor_impl.h"
#include "wanopt/session/connection_table.h"
#include "wanopt/session/counters.h"

using boost::asio::ip::address_v4;

namespace wanopt::intercept {

namespace {

// The verdicts given, by packet id: the mark (0 for none) or "dropped".
class RecordingQueue : public NetlinkQueue {
 public:
  struct Verdict {
    bool accepted = false;
    uint32_t mark = 0;
  };
  explicit RecordingQueue(std::map<uint32_t, Verdict>& verdicts) : verdicts_(verdicts) {}
  void Accept(uint32_t id, std::optional<uint32_t> mark, std::span<const uint8_t>) override {
    CHECK_MESSAGE(!verdicts_.count(id), "a second verdict for packet " << id);
    verdicts_[id] = {true, mark.value_or(0)};
  }
  void Drop(uint32_t id) override {
    CHECK_MESSAGE(!verdicts_.count(id), "a second verdict for packet " << id);
    verdicts_[id] = {false, 0};
  }
  void Close() override {}

 private:
  std::map<uint32_t, Verdict>& verdicts_;
};

// A SYN's 20-byte TCP header (no options, checksum left 0: nothing checks it here).
std::vector<uint8_t> SynHeader(uint16_t client_port, uint16_t server_port, uint32_t sequence) {
  return {static_cast<uint8_t>(client_port >> 8), static_cast<uint8_t>(client_port),
          static_cast<uint8_t>(server_port >> 8), static_cast<uint8_t>(server_port),
          static_cast<uint8_t>(sequence >> 24), static_cast<uint8_t>(sequence >> 16),
          static_cast<uint8_t>(sequence >> 8), static_cast<uint8_t>(sequence),
          0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0};
}

// `ip_header` followed by a SYN's TCP header, with `option` added the way the
// kernel would carry it.
std::vector<uint8_t> Packet(std::vector<uint8_t> ip_header, uint16_t client_port, uint16_t server_port,
                            uint32_t sequence, const DiscoveryOption* option) {
  std::vector<uint8_t> tcp = SynHeader(client_port, server_port, sequence);
  ip_header.insert(ip_header.end(), tcp.begin(), tcp.end());
  if (!option) return ip_header;
  auto with = AddOption(ip_header, *option);
  REQUIRE(with);
  return *with;
}

// An IPv4 SYN from `client` to `server`.
std::vector<uint8_t> Syn(std::array<uint8_t, 4> client, uint16_t client_port, std::array<uint8_t, 4> server,
                         uint16_t server_port, uint32_t sequence, const DiscoveryOption* option = nullptr) {
  std::vector<uint8_t> ip = {0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0};
  ip.insert(ip.end(), client.begin(), client.end());
  ip.insert(ip.end(), server.begin(), server.end());
  return Packet(std::move(ip), client_port, server_port, sequence, option);
}

constexpr std::array<uint8_t, 4> kClient{198, 18, 1, 10}, kServer{198, 18, 2, 10};

// An IPv6 SYN (no extension headers) from `client` to `server`.
std::vector<uint8_t> Syn6(const char* client, uint16_t client_port, const char* server, uint16_t server_port,
                          uint32_t sequence, const DiscoveryOption* option = nullptr) {
  std::vector<uint8_t> ip = {0x60, 0, 0, 0, 0, 20, 6, 64};
  for (const char* a : {client, server}) {
    auto bytes = boost::asio::ip::make_address_v6(a).to_bytes();
    ip.insert(ip.end(), bytes.begin(), bytes.end());
  }
  return Packet(std::move(ip), client_port, server_port, sequence, option);
}

const char* kConfig = R"(
[box]
name = "branch"
[peering]
psk_identity = "branch"
psk = "00112233445566778899aabbccddeeff"
[intercept]
answer = %ANSWER%
[[intercept.rule]]
ports = "445"
action = "pass-through"
[[intercept.rule]]
ports = "23"
action = "deny"
[[intercept.rule]]
ports = "8000"
action = "fixed-target"
peer = "198.18.0.2"
)";

}  // namespace

// A box whose interceptor is fed SYNs by hand. Without [peering] credentials
// (security null), auto-discovery cannot secure an inner channel and passes through:
// every decision here is made without opening a socket.
struct SynDecisionsTest {
  explicit SynDecisionsTest(bool answer = true) {
    std::string text = kConfig, error;
    text.replace(text.find("%ANSWER%"), 8, answer ? "true" : "false");
    config = ParseConfig(text, "test.toml", &error);
    REQUIRE_MESSAGE(config, error);
    env = std::make_unique<SessionEnvironment>(SessionEnvironment{*config, counters, table, next_id});
    impl = std::make_shared<Interceptor::Impl>(*env, nullptr, loop, [this]() -> asio::io_context& { return loop; });
    impl->queue_ = std::make_unique<RecordingQueue>(verdicts);
  }
  ~SynDecisionsTest() { impl->Stop(); }

  // The verdict on the packet, which gets the next id.
  RecordingQueue::Verdict Decide(const std::vector<uint8_t>& packet, Hook hook = Hook::kPreRouting) {
    uint32_t id = ++next_packet;
    impl->OnPacket(QueuedPacket{id, hook, 0, packet});
    REQUIRE_MESSAGE(verdicts.count(id), "no verdict for packet " << id);
    return verdicts[id];
  }
  std::vector<std::string> LastNotes() {
    auto all = table.Connections();
    REQUIRE(!all.empty());
    return all.back().notes;
  }
  bool Holding() const { return !impl->held_.empty(); }
  void RememberOptionDropper(std::array<uint8_t, 4> server) {
    auto now = Clock::now();
    for (int i = 0; i < 2; ++i) impl->option_droppers_.Saw(address_v4(server), now, now);
    REQUIRE(impl->option_droppers_.Remembered(address_v4(server), now));
  }

  std::optional<Config> config;
  Counters counters;
  ConnectionTable table;
  std::atomic<uint64_t> next_id{1};
  std::unique_ptr<SessionEnvironment> env;
  asio::io_context loop;
  std::shared_ptr<Interceptor::Impl> impl;
  std::map<uint32_t, RecordingQueue::Verdict> verdicts;
  uint32_t next_packet = 0;
};

namespace {

bool HasNote(const std::vector<std::string>& notes, std::string_view text) {
  for (const auto& n : notes) {
    if (n.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST_CASE("SYN decisions: what is not a SYN, or is the box's own loopback traffic, passes unmarked or bypassed") {
  SynDecisionsTest box;
  std::vector<uint8_t> garbage = {0x45, 0, 0, 3};
  auto v = box.Decide(garbage);
  CHECK(v.accepted);
  CHECK(v.mark == 0);
  v = box.Decide(Syn({127, 0, 0, 1}, 40000, {127, 0, 0, 1}, 8080, 1));
  CHECK(v.accepted);
  CHECK(v.mark == kMarkBypass);
  CHECK(box.table.Connections().empty());
}

TEST_CASE("SYN decisions: a pass-through rule routes the SYN on, listed once however often the client retransmits") {
  SynDecisionsTest box;
  auto syn = Syn(kClient, 40000, kServer, 445, 1000);
  auto v = box.Decide(syn);
  CHECK(v.accepted);
  CHECK(v.mark == kMarkBypass);
  CHECK(HasNote(box.LastNotes(), "pass-through (routed, not proxied): intercept.rule[0]: pass-through"));
  CHECK(box.counters.pass_through == 1);
  // The retransmission gets the same verdict, and is not a second connection.
  v = box.Decide(syn);
  CHECK(v.mark == kMarkBypass);
  CHECK(box.counters.pass_through == 1);
  // The client reuses its port for a new connection (another initial sequence): decided anew.
  v = box.Decide(Syn(kClient, 40000, kServer, 445, 99999));
  CHECK(v.mark == kMarkBypass);
  CHECK(box.counters.pass_through == 2);
}

TEST_CASE("SYN decisions: IPv6 SYNs are decided by the same rules, their addresses shown bracketed") {
  SynDecisionsTest box;
  auto v = box.Decide(Syn6("2001:2:0:1::10", 40100, "2001:2:0:2::10", 445, 1));
  CHECK(v.mark == kMarkBypass);
  auto listed = box.table.Connections();
  REQUIRE(listed.size() == 1);
  CHECK(FormatEndpoint(listed[0].client) == "[2001:2:0:1::10]:40100");
  CHECK(FormatEndpoint(listed[0].server) == "[2001:2:0:2::10]:445");
  CHECK(box.Decide(Syn6("2001:2:0:1::10", 40101, "2001:2:0:2::10", 23, 2)).mark == kMarkDeny);
  CHECK(box.Decide(Syn6("2001:2:0:1::10", 40102, "2001:2:0:2::10", 8000, 3)).mark == kMarkIntercept);
  box.Decide(Syn6("2001:2:0:1::10", 40103, "2001:2:0:2::10", 80, 4));
  CHECK(HasNote(box.LastNotes(), "no [peering] credentials"));
  // An IPv4 and an IPv6 connection with the same ports are two connections.
  CHECK(box.Decide(Syn(kClient, 40100, kServer, 445, 1)).mark == kMarkBypass);
  CHECK(box.counters.pass_through == 3);
  // An offer with an IPv6 client address, to a box that does not answer: routed on.
  SynDecisionsTest quiet(/*answer=*/false);
  DiscoveryOption offer;
  offer.policy = Policy::kFull;
  offer.client = boost::asio::ip::make_address("2001:2:0:1::10");
  CHECK(quiet.Decide(Syn6("2001:2::1", 40104, "2001:2:0:2::10", 80, 5, &offer)).mark == kMarkBypass);
  CHECK(quiet.table.Connections().empty());  // an offer routed on is not listed: it was read as one
}

TEST_CASE("SYN decisions: a deny rule marks the SYN for a reset, and its retransmissions too") {
  SynDecisionsTest box;
  auto syn = Syn(kClient, 40001, kServer, 23, 5);
  CHECK(box.Decide(syn).mark == kMarkDeny);
  CHECK(box.Decide(syn).mark == kMarkDeny);
  CHECK(box.counters.pass_through == 0);
}

TEST_CASE("SYN decisions: a fixed-target rule intercepts the SYN without probing") {
  SynDecisionsTest box;
  auto v = box.Decide(Syn(kClient, 40002, kServer, 8000, 7));
  CHECK(v.accepted);
  CHECK(v.mark == kMarkIntercept);
  CHECK_FALSE(box.Holding());
}

TEST_CASE("SYN decisions: auto-discovery without [peering] credentials passes through and says why") {
  SynDecisionsTest box;
  auto v = box.Decide(Syn(kClient, 40003, kServer, 80, 9));
  CHECK(v.mark == kMarkBypass);
  CHECK(HasNote(box.LastNotes(), "no [peering] credentials on this box to secure an inner channel"));
  CHECK_FALSE(box.Holding());
}

TEST_CASE("SYN decisions: a server remembered for dropping SYNs with options is not probed, and the note says so") {
  SynDecisionsTest box;
  box.RememberOptionDropper(kServer);
  auto v = box.Decide(Syn(kClient, 40004, kServer, 80, 11));
  CHECK(v.mark == kMarkBypass);
  CHECK(HasNote(box.LastNotes(), "server 198.18.2.10 drops SYNs carrying TCP options (remembered for 60 min)"));
  // Another server is not affected.
  box.Decide(Syn(kClient, 40005, {198, 18, 2, 11}, 80, 12));
  CHECK(HasNote(box.LastNotes(), "no [peering] credentials"));
}

TEST_CASE("SYN decisions: SYNs carrying option 0x21 are another box's business unless this one answers") {
  DiscoveryOption offer;
  offer.policy = Policy::kFull;
  offer.device_id = {2, 0, 0, 0, 0, 1};
  offer.client = address_v4(kClient);
  DiscoveryOption answer = offer;
  answer.answer = true;
  SUBCASE("an answer in a SYN is not ours to act on: routed on, not listed") {
    SynDecisionsTest box;
    CHECK(box.Decide(Syn(kClient, 40006, kServer, 80, 13, &answer)).mark == kMarkBypass);
    CHECK(box.table.Connections().empty());
  }
  SUBCASE("a box that does not answer probes routes an offer on, not listed") {
    SynDecisionsTest box(/*answer=*/false);
    CHECK(box.Decide(Syn(kClient, 40007, kServer, 80, 14, &offer)).mark == kMarkBypass);
    CHECK(box.table.Connections().empty());
  }
  SUBCASE("an answering box without credentials leaves an encrypted offer for a box further along") {
    SynDecisionsTest box;
    CHECK(box.Decide(Syn(kClient, 40008, kServer, 80, 15, &offer)).mark == kMarkBypass);
    CHECK_FALSE(box.Holding());
  }
  SUBCASE("a pass-through rule for the offer's client: a datacenter does not answer, it does not refuse either") {
    SynDecisionsTest box;
    CHECK(box.Decide(Syn({198, 18, 7, 7}, 40009, kServer, 445, 16, &offer)).mark == kMarkBypass);
    CHECK(box.table.Connections().empty());
  }
}

}  // namespace
}  // namespace wanopt::intercept
