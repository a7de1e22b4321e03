#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "wanopt/config/config.h"

using namespace wanopt;

namespace {
std::string ErrorOf(const char* text) {
  std::string error;
  auto config = ParseConfig(text, "test.toml", &error);
  CHECK_FALSE(config);
  return error;
}
}  // namespace

TEST_CASE("a box that is both branch and datacenter") {
  const char* text = R"(
[box]
name = "branch-1"
device_id = "02:00:5e:00:00:01"
policy = "D"
threads = 2

[timeouts]
connect_ms = 5000
keepalive_ms = 1000
dead_peer_ms = 4000

[datacenter]
listen = "0.0.0.0"
plaintext_peers = ["198.18.0.0/24", "198.18.5.7"]
serves = ["198.18.1.0/24"]

[[branch.forward]]
listen = "127.0.0.1:8080"
destination = "198.18.1.10:80"
peer = "198.18.0.2"
modules = ["bytecount"]
peer_down = "reset"

[[branch.forward]]
listen = "[::1]:8443"
destination = "[2001:db8::1]:443"
peer = "198.18.0.2:7900"
policy = "T"
)";
  std::string error;
  auto config = ParseConfig(text, "test.toml", &error);
  REQUIRE_MESSAGE(config, error);
  CHECK(config->name == "branch-1");
  CHECK(channel::FormatDeviceId(config->device_id) == "02:00:5e:00:00:01");
  CHECK(config->policy == Policy::kDre);
  CHECK(config->threads == 2);
  CHECK(config->timeouts.connect.count() == 5000);
  REQUIRE(config->datacenter);
  CHECK(config->datacenter->listen.port() == kDefaultPeerPort);
  CHECK_FALSE(config->datacenter->modules.empty());  // default: every registered module
  REQUIRE(config->forwards.size() == 2);
  CHECK(config->forwards[0].name == "branch.forward[0]");
  CHECK(config->forwards[0].peer.port() == kDefaultPeerPort);
  CHECK(config->forwards[0].policy == Policy::kDre);  // inherited from [box]
  CHECK(config->forwards[0].peer_down == PeerDownAction::kReset);
  CHECK(config->forwards[0].modules == std::vector<std::string>{"bytecount"});
  CHECK(config->forwards[1].listen.address().is_v6());
  CHECK(config->forwards[1].policy == Policy::kTcpOnly);
  CHECK(config->forwards[1].peer_down == PeerDownAction::kPassThrough);
}

TEST_CASE("bad configs fail with one line naming file, line and key") {
  CHECK(ErrorOf("[box]\nname = 3\n[datacenter]\nlisten=\"0.0.0.0\"\n") == "test.toml:2: box.name: must be a string");
  CHECK(ErrorOf("[datacenter]\nlisten = \"0.0.0.0\"\nlisen = 1\n") == "test.toml:3: datacenter.lisen: unknown key");
  CHECK(ErrorOf("[datacenter]\nlisten = \"300.1.1.1:80\"\n").starts_with(
      "test.toml:2: datacenter.listen: '300.1.1.1:80' is not an address:port"));
  CHECK(ErrorOf("[[branch.forward]]\nlisten = \"127.0.0.1:1\"\npeer = \"127.0.0.1\"\n") ==
        "test.toml:1: branch.forward[0].destination: is required");
  CHECK(ErrorOf("[[branch.forward]]\nlisten = \"127.0.0.1:1\"\ndestination = \"127.0.0.1:2\"\n"
                "peer = \"127.0.0.1\"\nmodules = [\"nope\"]\n")
            .starts_with("test.toml:5: branch.forward[0].modules: unknown module 'nope' (known: "));
  CHECK(ErrorOf("[box]\npolicy = \"X\"\n[datacenter]\nlisten=\"0.0.0.0\"\n") ==
        "test.toml:2: box.policy: 'X' is not a policy (F, D, L or T)");
  CHECK(ErrorOf("[box]\nthreads = 1000\n[datacenter]\nlisten=\"0.0.0.0\"\n") ==
        "test.toml:2: box.threads: must be between 0 and 256");
  CHECK(ErrorOf("[box]\ndevice_id = \"zz\"\n[datacenter]\nlisten=\"0.0.0.0\"\n").starts_with(
      "test.toml:2: box.device_id: 'zz' is not 6 hex bytes"));
  CHECK(ErrorOf("[timeouts]\nkeepalive_ms = 5000\ndead_peer_ms = 4000\n[datacenter]\nlisten=\"0.0.0.0\"\n") ==
        "test.toml:3: timeouts.dead_peer_ms: must be longer than keepalive_ms");
  CHECK(ErrorOf("[box]\nname = \"idle\"\n").find("none of [datacenter], [[branch.forward]], [intercept]") != std::string::npos);
  CHECK(ErrorOf("[datacenter\n").starts_with("test.toml:1: TOML syntax: "));
  CHECK(ErrorOf("[[branch.forward]]\nlisten = \"127.0.0.1:1\"\ndestination = \"127.0.0.1:2\"\npeer=\"127.0.0.1\"\n"
                "[[branch.forward]]\nlisten = \"127.0.0.1:1\"\ndestination = \"127.0.0.1:3\"\npeer=\"127.0.0.1\"\n") ==
        "test.toml:6: branch.forward[1].listen: same address as branch.forward[0]");
  CHECK(ErrorOf("[[branch.forward]]\nlisten = \"127.0.0.1:1\"\ndestination = \"127.0.0.1:2\"\npeer=\"127.0.0.1\"\n"
                "peer_down = \"maybe\"\n") ==
        "test.toml:5: branch.forward[0].peer_down: 'maybe' is not pass-through or reset");
}

TEST_CASE("endpoints: IPv4, bracketed IPv6, default ports") {
  CHECK(ParseEndpoint("192.0.2.1:80", std::nullopt)->port() == 80);
  CHECK(ParseEndpoint("[2001:db8::1]:443", std::nullopt)->address().is_v6());
  CHECK(ParseEndpoint("192.0.2.1", 7800)->port() == 7800);
  CHECK_FALSE(ParseEndpoint("192.0.2.1", std::nullopt));
  CHECK_FALSE(ParseEndpoint("2001:db8::1", 7800));  // IPv6 needs brackets
  CHECK_FALSE(ParseEndpoint("192.0.2.1:99999", std::nullopt));
  CHECK_FALSE(ParseEndpoint("192.0.2.1:", std::nullopt));
  CHECK_FALSE(ParseEndpoint("host.example:80", std::nullopt));
}

TEST_CASE("status section: defaults and the token rule") {
  std::string error;
  auto config = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n[status]\nlisten = \"127.0.0.1\"\n", "t.toml", &error);
  REQUIRE_MESSAGE(config, error);
  REQUIRE(config->status);
  CHECK(config->status->listen.port() == 7880);
  CHECK(config->status->closed_window.count() == 300);
  CHECK(ErrorOf("[datacenter]\nlisten = \"127.0.0.1\"\n[status]\nlisten = \"198.18.0.1:7880\"\ntoken = \"short\"\n") ==
        "test.toml:5: status.token: a token of at least 16 characters is required when listen is not a loopback address");
}

TEST_CASE("dre section: datastore, sizes, chunking, and what the box can do") {
  std::string error;
  auto config = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n[dre]\ndatastore = \"/tmp/x\"\nmax_size_mb = 64\n"
                            "lz_level = 5\nchunk_avg = 8192\n", "t.toml", &error);
  REQUIRE_MESSAGE(config, error);
  CHECK(config->dre.datastore == "/tmp/x");
  CHECK(config->dre.max_bytes == uint64_t{64} << 20);
  CHECK(config->dre.lz_level == 5);
  CHECK(config->dre.chunker.min_size == 2048);
  CHECK(config->dre.chunker.max_size == 65536);
  CHECK(config->dre.capability() == Policy::kFull);
  auto plain = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n", "t.toml", &error);
  REQUIRE(plain);
  CHECK(plain->dre.capability() == Policy::kLz);  // no datastore: LZ at most
  CHECK(ErrorOf("[datacenter]\nlisten = \"127.0.0.1\"\n[dre]\nchunk_avg = 3000\n").find("dre.chunk_avg") !=
        std::string::npos);
  CHECK(ErrorOf("[datacenter]\nlisten = \"127.0.0.1\"\n[dre]\nlz_level = 40\n") ==
        "test.toml:4: dre.lz_level: must be between 1 and 19");
  // The adaptive zstd level: up to 19 unless said, never below lz_level.
  CHECK(config->dre.lz_level_max == 19);
  CHECK(config->dre.lz_adaptive_memory_bytes == uint64_t{256} << 20);
  auto fixed = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n[dre]\nlz_level = 9\nlz_level_max = 9\n"
                           "lz_adaptive_memory_mb = 64\n", "t.toml", &error);
  REQUIRE_MESSAGE(fixed, error);
  CHECK(fixed->dre.lz_level_max == 9);
  CHECK(fixed->dre.lz_adaptive_memory_bytes == uint64_t{64} << 20);
  CHECK(ErrorOf("[datacenter]\nlisten = \"127.0.0.1\"\n[dre]\nlz_level = 9\nlz_level_max = 6\n") ==
        "test.toml:5: dre.lz_level_max: must be at least lz_level (9); equal to it turns adapting off");
  // The store's read cache: 32 MiB unless said, 0 turns it off.
  CHECK(config->dre.read_cache_bytes == uint64_t{32} << 20);
  auto cached = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n[dre]\nread_cache_mb = 1024\n", "t.toml", &error);
  REQUIRE_MESSAGE(cached, error);
  CHECK(cached->dre.read_cache_bytes == uint64_t{1} << 30);
  auto uncached = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n[dre]\nread_cache_mb = 0\n", "t.toml", &error);
  REQUIRE_MESSAGE(uncached, error);
  CHECK(uncached->dre.read_cache_bytes == 0);
  CHECK(ErrorOf("[datacenter]\nlisten = \"127.0.0.1\"\n[dre]\nread_cache_mb = -1\n") ==
        "test.toml:4: dre.read_cache_mb: must be between 0 and 1048576");
}

TEST_CASE("wan section: congestion control and buffers from the bandwidth-delay product") {
  std::string error;
  auto config = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n[wan]\nbandwidth_mbit = 100\nrtt_ms = 80\n", "t.toml",
                            &error);
  REQUIRE_MESSAGE(config, error);
  CHECK(config->wan.congestion == "bbr");
  CHECK(config->wan.buffer_bytes() == 2'000'000);  // 2 x 100 Mbit/s x 80 ms
  auto plain = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n", "t.toml", &error);
  REQUIRE(plain);
  CHECK(plain->wan.buffer_bytes() == 0);  // autotuned
  CHECK(ErrorOf("[datacenter]\nlisten = \"127.0.0.1\"\n[wan]\nrtt_ms = 80\n").find("together") != std::string::npos);
  CHECK(ErrorOf("[datacenter]\nlisten = \"127.0.0.1\"\n[wan]\ncongestion = \"vegas\"\n").find("wan.congestion") !=
        std::string::npos);
}

TEST_CASE("[intercept]: ordered in-path rules, defaults, and [peering] with a pre-shared key") {
  const char* text = R"(
[peering]
psk_identity = "branch-paris"
psk = "00112233445566778899aabbccddeeff"

[intercept]
queue = 9
listen_port = 7901
option_drop_memory_s = 120

[[intercept.rule]]
source = "198.18.1.0/24"
destination = "198.18.2.10"
ports = "445"
action = "pass-through"

[[intercept.rule]]
ports = "8000-8999"
action = "fixed-target"
peer = "198.18.0.2"
policy = "L"
encryption = false
server_source = "box"

[[intercept.rule]]
ports = "23"
action = "deny"
)";
  std::string error;
  auto config = ParseConfig(text, "test.toml", &error);
  REQUIRE_MESSAGE(config, error);
  REQUIRE(config->intercept);
  const InterceptConfig& i = *config->intercept;
  CHECK(i.queue == 9);
  CHECK(i.listen_port == 7901);
  CHECK(i.answer);
  CHECK(i.option_drop_memory == std::chrono::seconds(120));
  REQUIRE(i.rules.size() == 3);
  CHECK(i.rules[0].action == InpathAction::kPassThrough);
  auto ip = [](const char* text) { return boost::asio::ip::make_address(text); };
  CHECK(i.rules[0].Matches(ip("198.18.1.5"), ip("198.18.2.10"), 445));
  CHECK_FALSE(i.rules[0].Matches(ip("198.18.3.5"), ip("198.18.2.10"), 445));  // another client subnet
  CHECK_FALSE(i.rules[0].Matches(ip("198.18.1.5"), ip("198.18.2.11"), 445));  // another server
  CHECK_FALSE(i.rules[0].Matches(ip("198.18.1.5"), ip("198.18.2.10"), 446));
  CHECK_FALSE(i.rules[0].Matches(ip("::ffff:198.18.1.5"), ip("198.18.2.10"), 445));  // an IPv4 subnet: IPv4 only
  CHECK(i.rules[1].action == InpathAction::kFixedTarget);
  CHECK(i.rules[1].peer->port() == kDefaultPeerPort);
  CHECK(i.rules[1].Matches(ip("198.18.1.5"), ip("2001:2::1"), 8000));  // no subnet: any address, either family
  CHECK(i.rules[1].Matches(ip("2001:2::5"), ip("2001:2::1"), 8999));
  CHECK_FALSE(i.rules[1].Matches(ip("198.18.1.5"), ip("198.18.2.10"), 9000));
  CHECK(i.rules[1].policy == Policy::kLz);
  CHECK_FALSE(i.rules[1].encryption);
  CHECK(i.rules[1].server_source == ServerSource::kBox);
  CHECK(i.rules[2].action == InpathAction::kDeny);
  CHECK(i.rules[2].name == "intercept.rule[2]");
  // No rule matches: auto-discover with the box's policy, encrypted, client's address.
  CHECK(i.default_rule.action == InpathAction::kAutoDiscover);
  CHECK(i.default_rule.encryption);
  CHECK(i.default_rule.server_source == ServerSource::kClient);
  CHECK(config->peering.mode == channel::PeeringSecurity::Mode::kPsk);
  CHECK(config->peering.psk.size() == 16);
  CHECK(config->peering.psk[1] == 0x11);
}

TEST_CASE("[intercept] and [peering]: each mistake named with its line") {
  CHECK(ErrorOf("[intercept]\n") ==
        "test.toml:1: intercept: inner channels are encrypted: configure [peering] (ca, certificate, key or psk), "
        "or set encryption = false on every rule (lab measurements only)");
  const char* psk = "[peering]\npsk_identity = \"x\"\npsk = \"00112233445566778899aabbccddeeff\"\n[intercept]\n";
  auto with = [&](const std::string& more) { return ErrorOf((std::string(psk) + more).c_str()); };
  CHECK(with("[[intercept.rule]]\nsource = \"198.18.1.0/33\"\n") ==
        "test.toml:6: intercept.rule[0].source: '198.18.1.0/33' is not a subnet (like 198.18.1.0/24 or 2001:db8::/32)");
  CHECK(with("[[intercept.rule]]\nsource = \"2001:db8::/129\"\n") ==
        "test.toml:6: intercept.rule[0].source: '2001:db8::/129' is not a subnet (like 198.18.1.0/24 or 2001:db8::/32)");
  CHECK(with("[[intercept.rule]]\nports = \"90-80\"\n") ==
        "test.toml:6: intercept.rule[0].ports: '90-80' is not a port or a range like 1024-65535");
  CHECK(with("[[intercept.rule]]\naction = \"optimize\"\n") ==
        "test.toml:6: intercept.rule[0].action: 'optimize' is not auto-discover, fixed-target, pass-through or deny");
  CHECK(with("[[intercept.rule]]\naction = \"fixed-target\"\n") ==
        "test.toml:5: intercept.rule[0].peer: is required with action = \"fixed-target\"");
  CHECK(with("[[intercept.rule]]\npeer = \"198.18.0.2\"\n") ==
        "test.toml:6: intercept.rule[0].peer: only goes with action = \"fixed-target\"");
  CHECK(with("[[intercept.rule]]\nserver_source = \"router\"\n") ==
        "test.toml:6: intercept.rule[0].server_source: 'router' is not client or box");
  CHECK(with("[[intercept.rule]]\nport = \"80\"\n") == "test.toml:6: intercept.rule[0].port: unknown key");
  CHECK(with("queue = 70000\n") == "test.toml:5: intercept.queue: must be between 0 and 65535");
  CHECK(ErrorOf("[peering]\npsk_identity = \"x\"\npsk = \"0011\"\n[intercept]\n") ==
        "test.toml:3: peering.psk: must be at least 16 bytes written as hex (32+ hex digits)");
  CHECK(ErrorOf("[peering]\nca = \"/nonexistent/ca.pem\"\n[intercept]\n") ==
        "test.toml:2: peering.ca: cannot read '/nonexistent/ca.pem': No such file or directory");
  CHECK(ErrorOf("[peering]\npsk = \"00112233445566778899aabbccddeeff\"\n[intercept]\n") ==
        "test.toml:1: peering.psk_identity: is required with psk");
  // Encryption off on a rule that matches everything: allowed without [peering] (the lab).
  std::string error;
  auto lab = ParseConfig("[intercept]\n[[intercept.rule]]\nencryption = false\n", "test.toml", &error);
  CHECK_MESSAGE(lab, error);
  CHECK(ErrorOf("[intercept]\n[[intercept.rule]]\nports = \"80\"\nencryption = false\n").find("configure [peering]") !=
        std::string::npos);
}

TEST_CASE("subnets: IPv4 and IPv6, each matching its own family") {
  auto ip = [](const char* text) { return boost::asio::ip::make_address(text); };
  auto v6 = ParseSubnet("2001:2:0:1::/64");
  REQUIRE(v6);
  CHECK(v6->Contains(ip("2001:2:0:1::10")));
  CHECK(v6->Contains(ip("2001:2:0:1:ffff:ffff:ffff:ffff")));
  CHECK_FALSE(v6->Contains(ip("2001:2:0:2::10")));
  CHECK_FALSE(v6->Contains(ip("198.18.1.10")));
  auto odd = ParseSubnet("2001:2:0:1::/61");  // a prefix that ends inside a byte
  REQUIRE(odd);
  CHECK(odd->Contains(ip("2001:2:0:7::1")));
  CHECK_FALSE(odd->Contains(ip("2001:2:0:8::1")));
  auto v4 = ParseSubnet("198.18.1.0/24");
  REQUIRE(v4);
  CHECK(v4->Contains(ip("198.18.1.200")));
  CHECK_FALSE(v4->Contains(ip("198.18.2.1")));
  CHECK_FALSE(v4->Contains(ip("2001:2:0:1::10")));
  auto host = ParseSubnet("2001:2::1");  // a bare address: /128
  REQUIRE(host);
  CHECK(host->Contains(ip("2001:2::1")));
  CHECK_FALSE(host->Contains(ip("2001:2::2")));
  // An IPv6 prefix that covers ::ffff:0:0/96 still matches no IPv4 address.
  auto low = ParseSubnet("::/64");
  REQUIRE(low);
  CHECK(low->Contains(ip("::1")));
  CHECK_FALSE(low->Contains(ip("198.18.1.1")));
  // A prefix of 0, in either family, is every address (as 0.0.0.0/0 was before IPv6).
  for (const char* text : {"0.0.0.0/0", "::/0"}) {
    auto everything = ParseSubnet(text);
    REQUIRE(everything);
    CHECK(everything->Contains(ip("2001:2::1")));
    CHECK(everything->Contains(ip("198.18.1.1")));
  }
  CHECK_FALSE(ParseSubnet("2001:2::1/"));
  CHECK_FALSE(ParseSubnet("198.18.1.0/24x"));
  CHECK_FALSE(ParseSubnet("[2001:2::1]"));
}

TEST_CASE("[datacenter] off loopback without [peering]: refused unless plaintext_peers says who may") {
  CHECK(ErrorOf("[datacenter]\nlisten = \"0.0.0.0\"\n") ==
        "test.toml:1: datacenter.listen: a listener off loopback needs [peering] (authenticated peers), or "
        "datacenter.plaintext_peers naming the subnets allowed to peer in plaintext");
  CHECK(ErrorOf("[datacenter]\nlisten = \"198.18.0.2\"\nplaintext_peers = \"198.18.0.0/24\"\n")
            .starts_with("test.toml:3: datacenter.plaintext_peers: must be an array of subnets"));
  CHECK(ErrorOf("[datacenter]\nlisten = \"198.18.0.2\"\nserves = [\"198.18.1.0/33\"]\n")
            .starts_with("test.toml:3: datacenter.serves: must be an array of subnets"));
  std::string error;
  auto loopback = ParseConfig("[datacenter]\nlisten = \"127.0.0.1\"\n", "test.toml", &error);
  REQUIRE_MESSAGE(loopback, error);
  CHECK(loopback->datacenter->AllowsPlaintextFrom(boost::asio::ip::make_address("127.0.0.1")));
  auto lab = ParseConfig("[datacenter]\nlisten = \"0.0.0.0\"\nplaintext_peers = [\"198.18.0.0/24\"]\n"
                         "serves = [\"198.18.1.0/24\", \"198.18.2.10\"]\n",
                         "test.toml", &error);
  REQUIRE_MESSAGE(lab, error);
  const DatacenterConfig& dc = *lab->datacenter;
  CHECK(dc.AllowsPlaintextFrom(boost::asio::ip::make_address("198.18.0.9")));
  CHECK_FALSE(dc.AllowsPlaintextFrom(boost::asio::ip::make_address("198.18.1.9")));
  CHECK_FALSE(dc.AllowsPlaintextFrom(boost::asio::ip::make_address("127.0.0.1")));  // the listener is not on loopback
  CHECK(dc.Serves(boost::asio::ip::make_address("198.18.1.200")));
  CHECK(dc.Serves(boost::asio::ip::make_address("198.18.2.10")));
  CHECK_FALSE(dc.Serves(boost::asio::ip::make_address("198.18.2.11")));
  auto with_peering = ParseConfig("[datacenter]\nlisten = \"0.0.0.0\"\n[peering]\npsk_identity = \"x\"\n"
                                  "psk = \"000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f\"\n",
                                  "test.toml", &error);
  CHECK_MESSAGE(with_peering, error);
}

TEST_CASE("a module configured in [modules.NAME] that no rule runs is a warning with its line") {
  const char* idle = R"([intercept]
[[intercept.rule]]
action = "auto-discover"
modules = []
[peering]
psk_identity = "x"
psk = "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f"
[modules.mapi]
mode = "remap"
)";
  std::string error;
  auto config = ParseConfig(idle, "test.toml", &error);
  REQUIRE_MESSAGE(config, error);
  REQUIRE(config->warnings.size() == 1);
  CHECK(config->warnings[0].starts_with("test.toml:8: modules.mapi: configured, but no rule runs it"));
  std::string used = idle;
  used.replace(used.find("modules = []"), 12, "modules = [\"mapi\"]");
  config = ParseConfig(used, "test.toml", &error);
  REQUIRE_MESSAGE(config, error);
  CHECK(config->warnings.empty());
}

TEST_CASE("two listeners on one address: the later one is named with its line, as the start would fail on it") {
  const char* forward = "[[branch.forward]]\nlisten = \"127.0.0.1:8080\"\ndestination = \"127.0.0.1:1\"\npeer = \"127.0.0.1\"\n";
  CHECK(ErrorOf((std::string("[datacenter]\nlisten = \"127.0.0.1:8080\"\n") + forward).c_str()) ==
        "test.toml:4: branch.forward[0].listen: same listen address as datacenter.listen (127.0.0.1:8080): "
        "the second cannot bind");
  CHECK(ErrorOf((std::string(forward) + "[status]\nlisten = \"127.0.0.1:8080\"\n").c_str()) ==
        "test.toml:6: status.listen: same listen address as branch.forward[0].listen (127.0.0.1:8080): "
        "the second cannot bind");
  // A wildcard covers every address of its family; [::] covers IPv4 too.
  CHECK(ErrorOf((std::string("[datacenter]\nlisten = \"0.0.0.0:8080\"\nplaintext_peers = [\"198.18.0.0/24\"]\n") + forward).c_str())
            .starts_with("test.toml:5: branch.forward[0].listen: same listen address as datacenter.listen"));
  CHECK(ErrorOf((std::string("[datacenter]\nlisten = \"[::]:8080\"\nplaintext_peers = [\"198.18.0.0/24\"]\n") + forward).c_str())
            .starts_with("test.toml:5: branch.forward[0].listen: same listen address as datacenter.listen"));
  // The transparent listeners are 0.0.0.0:listen_port and [::]:listen_port (7801
  // unless set); their line is the key's, or the table's when the port is the default.
  const char* intercept = "[intercept]\n[[intercept.rule]]\nencryption = false\n";
  CHECK(ErrorOf((std::string("[datacenter]\nlisten = \"127.0.0.1:7801\"\n") + intercept).c_str())
            .starts_with("test.toml:3: intercept.listen_port: same listen address as datacenter.listen (127.0.0.1:7801)"));
  CHECK(ErrorOf((std::string(intercept) + "[status]\nlisten = \"127.0.0.1:7801\"\n").c_str())
            .starts_with("test.toml:5: status.listen: same listen address as intercept.listen_port"));
  CHECK(ErrorOf((std::string("[datacenter]\nlisten = \"[2001:2::2]:7801\"\nplaintext_peers = [\"2001:2::/64\"]\n") +
                 intercept).c_str())
            .starts_with("test.toml:4: intercept.listen_port: same listen address as datacenter.listen ([2001:2::2]:7801)"));

  // Distinct ports, different addresses of one port, port 0 (any free port): fine.
  std::string error;
  CHECK_MESSAGE(ParseConfig("[datacenter]\nlisten = \"127.0.0.1:8081\"\n[status]\nlisten = \"127.0.0.1:8082\"\n"
                            "[[branch.forward]]\nlisten = \"127.0.0.2:8081\"\ndestination = \"127.0.0.1:1\"\n"
                            "peer = \"127.0.0.1\"\n",
                            "test.toml", &error),
                error);
  CHECK_MESSAGE(ParseConfig("[datacenter]\nlisten = \"127.0.0.1:0\"\n[status]\nlisten = \"127.0.0.1:0\"\n", "test.toml", &error),
                error);
}

TEST_CASE("a datastore that cannot be a directory fails the config, not the start") {
  char dir_template[] = "/tmp/wanopt-config-test-XXXXXX";
  REQUIRE(mkdtemp(dir_template));
  std::string dir = dir_template;
  std::string file = dir + "/a-file";
  std::ofstream(file) << "not a directory\n";
  for (const std::string& path : {file, file + "/store", file + "/deeper/store"}) {
    std::string text = "[dre]\ndatastore = \"" + path + "\"\n[datacenter]\nlisten = \"127.0.0.1:1\"\n";
    CHECK(ErrorOf(text.c_str()) == "test.toml:2: dre.datastore: '" + path + "' cannot be a directory: '" + file +
                                       "' is a file, not a directory");
  }
  // A directory that exists, or one that can be made: fine.
  for (const std::string& path : {dir, dir + "/new/store"}) {
    std::string error;
    std::string text = "[dre]\ndatastore = \"" + path + "\"\n[datacenter]\nlisten = \"127.0.0.1:1\"\n";
    CHECK_MESSAGE(ParseConfig(text, "test.toml", &error), error);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("[wccp]: routers, methods, WAAS's service groups by default, dynamic ones, and its errors") {
  const char* base = R"(
[peering]
psk_identity = "branch"
psk = "00112233445566778899aabbccddeeff"
[intercept]
)";
  std::string error;
  auto config = ParseConfig(std::string(base) + R"(
[wccp]
address = "198.18.1.2"
routers = ["198.18.1.1", "198.18.1.254"]
password = "secret"
forwarding = "gre"
return = "l2"
assignment = "mask"
weight = 3
here_i_am_interval_ms = 2000
)", "test.toml", &error);
  REQUIRE_MESSAGE(config, error);
  REQUIRE(config->wccp);
  const WccpConfig& w = *config->wccp;
  CHECK(w.address == 0xC6120102);
  CHECK(w.routers == std::vector<uint32_t>{0xC6120101, 0xC61201FE});
  CHECK(w.password == "secret");
  CHECK(w.forwarding == wccp::capability::kGre);
  CHECK(w.return_method == wccp::capability::kL2);
  CHECK(w.assignment == wccp::capability::kMask);
  CHECK(w.weight == 3);
  CHECK(w.here_i_am_interval == std::chrono::milliseconds(2000));
  REQUIRE(w.services.size() == 2);
  CHECK(w.services[0] == wccp::WaasService(61));
  CHECK(w.services[1].flags == wccp::service_flag::kDstIpHash);

  config = ParseConfig(std::string(base) + R"(
[wccp]
address = "198.18.1.2"
routers = ["198.18.1.1"]
[[wccp.service]]
id = 90
protocol = "tcp"
priority = 200
hash = "destination"
ports = [80, 443]
)", "test.toml", &error);
  REQUIRE_MESSAGE(config, error);
  REQUIRE(config->wccp->services.size() == 1);
  const wccp::ServiceInfo& s = config->wccp->services[0];
  CHECK(s.id == 90);
  CHECK(s.protocol == 6);
  CHECK(s.priority == 200);
  CHECK(s.flags == (wccp::service_flag::kDstIpHash | wccp::service_flag::kPortsDefined));
  CHECK(s.ports[0] == 80);
  CHECK(s.ports[1] == 443);

  auto error_of = [&](const std::string& wccp_section, bool with_intercept = true) {
    std::string e;
    auto c = ParseConfig((with_intercept ? std::string(base) : std::string("[datacenter]\nlisten = \"127.0.0.1:7800\"\n")) +
                             wccp_section, "test.toml", &e);
    return c ? std::string("(parsed)") : e;
  };
  CHECK(error_of("[wccp]\nrouters = [\"198.18.1.1\"]\n").find("wccp.address: is required") != std::string::npos);
  CHECK(error_of("[wccp]\naddress = \"198.18.1.2\"\n").find("wccp.routers: is required") != std::string::npos);
  CHECK(error_of("[wccp]\naddress = \"198.18.1.2\"\nrouters = [\"router\"]\n").find("'router' is not an IPv4 address") !=
        std::string::npos);
  CHECK(error_of("[wccp]\naddress = \"198.18.1.2\"\nrouters = [\"198.18.1.1\"]\npassword = \"ninechars\"\n")
            .find("at most 8 characters") != std::string::npos);
  CHECK(error_of("[wccp]\naddress = \"198.18.1.2\"\nrouters = [\"198.18.1.1\"]\nforwarding = \"carrier-pigeon\"\n")
            .find("is not gre, l2 or any") != std::string::npos);
  CHECK(error_of("[wccp]\naddress = \"198.18.1.2\"\nrouters = [\"198.18.1.1\"]\n[[wccp.service]]\nid = 7\n")
            .find("wccp.service[0].id: must be between 51 and 255") != std::string::npos);
  CHECK(error_of("[wccp]\naddress = \"198.18.1.2\"\nrouters = [\"198.18.1.1\"]\n", false).find("needs [intercept]") !=
        std::string::npos);
}
