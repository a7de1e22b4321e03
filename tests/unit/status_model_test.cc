#include <doctest/doctest.h>

#include "wanopt/config/config.h"
#include "wanopt/status/model.h"

using namespace wanopt;
using boost::asio::ip::make_address;
using boost::asio::ip::tcp;

namespace {
Config Parse(const char* text) {
  std::string error;
  auto config = ParseConfig(text, "test.toml", &error);
  REQUIRE_MESSAGE(config, error);
  return *config;
}
}  // namespace

TEST_CASE("status: each box's role and inner-channel encryption are what its config makes them") {
  auto f = status::FactsOf(Parse("[datacenter]\nlisten = \"127.0.0.1:1\"\n"));
  CHECK(f.roles == std::vector<std::string>{"datacenter"});
  CHECK(f.role_text == "datacenter");
  CHECK(f.encryption_mode == "none");
  CHECK(f.encryption_text == "none: inner channels are plaintext (no [peering] configured)");

  // Interception only: the role says so (no empty role, issue 15 item 3).
  f = status::FactsOf(Parse("[intercept]\nanswer = false\n[[intercept.rule]]\nencryption = false\n"));
  CHECK(f.roles == std::vector<std::string>{"interception"});
  CHECK(f.role_text == "interception (1 in-path rule + default, does not answer probes)");
  CHECK(f.plaintext_rules == std::vector<std::string>{"intercept.rule[0]"});

  // With [peering]: TLS 1.3, and the rules that opt out are named.
  f = status::FactsOf(Parse(
      "[peering]\npsk_identity = \"lab\"\npsk = \"000102030405060708090a0b0c0d0e0f\"\n"
      "[intercept]\n[[intercept.rule]]\ndestination = \"198.18.2.0/24\"\nencryption = false\n"
      "[[intercept.rule]]\nports = \"22\"\naction = \"pass-through\"\nencryption = false\n"
      "[[branch.forward]]\nlisten = \"127.0.0.1:2\"\ndestination = \"127.0.0.1:3\"\npeer = \"127.0.0.1\"\n"));
  CHECK(f.roles == std::vector<std::string>{"branch", "interception"});
  CHECK(f.encryption_mode == "psk");
  // A pass-through rule opens no inner channel: it is not a plaintext one.
  CHECK(f.plaintext_rules == std::vector<std::string>{"intercept.rule[0]"});
  CHECK(f.encryption_text ==
        "TLS 1.3, peers authenticated by a pre-shared key; plaintext for intercept.rule[0] (encryption = false)");
}

TEST_CASE("status: a peer found in-path is shown as reached via the server, not as at the server's address") {
  status::Model m;
  ConnectionSnapshot c;
  c.box = "branch";
  c.side = "branch";
  c.server = tcp::endpoint(make_address("198.18.2.10"), 80);
  c.peer_id = "02:00:00:00:00:02";
  c.peer_address = "198.18.2.10:80";  // the probe went to the server; the peer box took it on the way
  m.connections.push_back(c);
  PeerSnapshot peer;
  peer.device_id = c.peer_id;
  peer.address = c.peer_address;
  auto place = status::PlaceOf(m, "branch", peer);
  CHECK(place.address_kind == "server");
  CHECK(place.box_address.empty());
  CHECK(place.via_server == "198.18.2.10:80");
  CHECK(place.text == "in-path, reached on the way to server 198.18.2.10:80 (its own address is not known)");

  // An explicit peer (the inner channel went to the peer box itself).
  m.connections[0].peer_address = "198.18.0.2:7800";
  peer.address = "198.18.0.2:7800";
  place = status::PlaceOf(m, "branch", peer);
  CHECK(place.address_kind == "peer");
  CHECK(place.box_address == "198.18.0.2:7800");
  CHECK(place.via_server.empty());

  // The datacenter's view: where the inner channels came from.
  m.connections[0].side = "datacenter";
  place = status::PlaceOf(m, "branch", peer);
  CHECK(place.address_kind == "source");
  CHECK(place.box_address.empty());

  // No connection left to tell (pruned), and no config: said so.
  m.connections.clear();
  place = status::PlaceOf(m, "branch", peer);
  CHECK(place.address_kind == "unknown");
}

TEST_CASE("status: ages in seconds, minutes, hours and days") {
  auto now = status::Clock::now();
  CHECK(status::Age(now - std::chrono::seconds(42), now) == "42s");
  CHECK(status::Age(now - std::chrono::seconds(187), now) == "3m07s");
  CHECK(status::Age(now - std::chrono::seconds(2 * 3600 + 5 * 60), now) == "2h05m");
  CHECK(status::Age(now - std::chrono::hours(76), now) == "3d04h");
}
