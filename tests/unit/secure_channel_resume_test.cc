// TLS session resumption between boxes with certificates: the opening side keeps
// the newest ticket per peer and resumes from it, within the lifetime of the full
// handshake it descends from; a ticket never lets a box that is not the peer in.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include <sys/socket.h>

#include "tests/unit/secure_channel_test_util.h"
#include "wanopt/channel/resumption.h"
#include "wanopt/channel/secure_channel.h"

using namespace wanopt;
using namespace wanopt::channel;
using namespace wanopt::channel::test_helpers;
using tls_internal::ResumptionCache;

namespace {

SecureChannelOptions Keyed(const std::string& key, bool optimistic = false) {
  SecureChannelOptions options;
  options.optimistic = optimistic;
  options.resumption_key = key;
  return options;
}

// One channel from `client` to `server`: handshake, a message each way (which also
// carries the ticket to the client), both ends closed. The client's and server's
// results.
struct Channel {
  SecureChannelResult client, server;
};

Channel OneChannel(const SecureContext& client, const SecureContext& server, SecureChannelOptions options) {
  Boxes boxes;
  boxes.Start(client, server, 5s, std::move(options));
  REQUIRE(RunUntil(boxes.io, [&] { return boxes.client.calls > 0 && boxes.server.calls > 0; }));
  Channel channel{boxes.client.result, boxes.server.result};
  if (!boxes.client.result.ec && !boxes.server.result.ec) {
    ExchangeMessages(boxes, "from the branch", "from the datacenter");
  }
  boxes.client.plain.Close();
  boxes.server.plain.Close();
  CHECK(Drains(boxes.io));
  return channel;
}

std::chrono::steady_clock::time_point AuthenticatedAt(const SecureContext& context, const std::string& key) {
  ResumptionCache::Ticket ticket = context.resumption()->Find(key, ResumptionCache::Clock::now());
  REQUIRE(ticket.session != nullptr);
  SSL_SESSION_free(ticket.session);
  return ticket.authenticated_at;
}

}  // namespace

TEST_CASE("certificates: the second channel to a peer resumes, both still name the other, no new ticket comes") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  REQUIRE(branch->resumption() != nullptr);

  Channel first = OneChannel(*branch, *dc, Keyed("peer dc"));
  REQUIRE_FALSE(first.client.ec);
  REQUIRE_FALSE(first.server.ec);
  CHECK_FALSE(first.client.resumed);
  CHECK_FALSE(first.server.resumed);
  CHECK(branch->resumption()->size() == 1);
  auto authenticated = AuthenticatedAt(*branch, "peer dc");

  for (bool optimistic : {false, true}) {
    CAPTURE(optimistic);
    Channel again = OneChannel(*branch, *dc, Keyed("peer dc", optimistic));
    REQUIRE_FALSE(again.client.ec);
    REQUIRE_FALSE(again.server.ec);
    CHECK(again.client.resumed);
    CHECK(again.server.resumed);
    CHECK(again.client.peer_name == "dc");
    CHECK(again.server.peer_name == "branch");
    // A resumed handshake checked no certificate, so it brings no ticket: the one
    // kept still dates from the full handshake.
    CHECK(AuthenticatedAt(*branch, "peer dc") == authenticated);
  }
  CHECK(branch->resumption()->size() == 1);
  CHECK(dc->resumption()->size() == 0);  // the accepting side keeps its sessions in OpenSSL's cache:
  CHECK(SSL_CTX_sess_number(dc->native_handle()) == 1);
  CHECK(SSL_CTX_sess_number(branch->native_handle()) == 0);
}

TEST_CASE("certificates: a resumed channel cut without close_notify does not spoil the ticket for the next") {
  // OpenSSL marks a session not resumable, and drops it from the accepting side's
  // cache, when a connection using it ends without close_notify.
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  REQUIRE_FALSE(OneChannel(*branch, *dc, Keyed("peer dc")).client.ec);
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    Boxes boxes;
    boxes.Start(*branch, *dc, 5s, Keyed("peer dc"));
    REQUIRE(RunUntil(boxes.io, [&] { return boxes.client.calls > 0 && boxes.server.calls > 0; }));
    REQUIRE_FALSE(boxes.client.result.ec);
    CHECK(boxes.client.result.resumed);
    REQUIRE(::shutdown(boxes.server.tcp_fd, SHUT_RDWR) == 0);
    Reader at_client(boxes.client.plain), at_server(boxes.server.plain);
    at_client.Start();
    at_server.Start();
    REQUIRE(RunUntil(boxes.io, [&] { return at_client.ended && at_server.ended; }));
    boxes.client.plain.Close();
    boxes.server.plain.Close();
    CHECK(Drains(boxes.io));
  }
  CHECK(OneChannel(*branch, *dc, Keyed("peer dc")).client.resumed);
  CHECK(SSL_CTX_sess_number(dc->native_handle()) == 1);
}

TEST_CASE("certificates: no resumption key, or another peer's key, means a full handshake") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  REQUIRE_FALSE(OneChannel(*branch, *dc, Keyed("peer dc")).client.ec);

  Channel unkeyed = OneChannel(*branch, *dc, {});
  REQUIRE_FALSE(unkeyed.client.ec);
  CHECK_FALSE(unkeyed.client.resumed);
  CHECK_FALSE(unkeyed.server.resumed);

  Channel other = OneChannel(*branch, *dc, Keyed("peer other-dc"));
  REQUIRE_FALSE(other.client.ec);
  CHECK_FALSE(other.client.resumed);
  CHECK(branch->resumption()->size() == 2);
}

TEST_CASE("certificates: a restarted peer cannot read our ticket: a full handshake, then resumption again") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  REQUIRE_FALSE(OneChannel(*branch, *dc, Keyed("peer dc")).client.ec);
  auto before = AuthenticatedAt(*branch, "peer dc");

  auto restarted = CertContext("dc");  // a new process: a new ticket key
  Channel full = OneChannel(*branch, *restarted, Keyed("peer dc"));
  REQUIRE_FALSE(full.client.ec);
  REQUIRE_FALSE(full.server.ec);
  CHECK_FALSE(full.client.resumed);
  CHECK_FALSE(full.server.resumed);
  CHECK(AuthenticatedAt(*branch, "peer dc") > before);  // a certificate check again

  Channel resumed = OneChannel(*branch, *restarted, Keyed("peer dc"));
  CHECK(resumed.client.resumed);
  CHECK(resumed.server.resumed);
}

TEST_CASE("certificates: a ticket does not let a box from another CA stand in for the peer, and is forgotten") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  REQUIRE_FALSE(OneChannel(*branch, *dc, Keyed("peer dc")).client.ec);
  REQUIRE(branch->resumption()->size() == 1);

  // Same key (the rogue answers for the peer's address), but it cannot read the
  // ticket, so it must show a certificate, and ours does not pass.
  auto rogue = CertContext("rogue", "ca-and-rogue-ca.pem");
  Channel impostor = OneChannel(*branch, *rogue, Keyed("peer dc"));
  CHECK(impostor.client.ec);
  CHECK(impostor.client.error == "peer certificate not signed by the configured CA");
  CHECK(impostor.client.authentication_failed);
  CHECK(branch->resumption()->size() == 0);

  Channel full = OneChannel(*branch, *dc, Keyed("peer dc"));
  REQUIRE_FALSE(full.client.ec);
  CHECK_FALSE(full.client.resumed);
}

TEST_CASE("PSK: no tickets, nothing resumed") {
  auto a = PskContext("paris-dc", 7);
  auto b = PskContext("paris-dc", 7);
  CHECK(a->resumption() == nullptr);
  for (int i = 0; i < 2; ++i) {
    Channel channel = OneChannel(*a, *b, Keyed("peer paris"));
    REQUIRE_FALSE(channel.client.ec);
    CHECK_FALSE(channel.client.resumed);
    CHECK_FALSE(channel.server.resumed);
    CHECK(channel.client.peer_name == "paris-dc");
  }
}

TEST_CASE("ResumptionCache: a ticket is offered until its full handshake is kLifetime old, replaced, forgotten, bounded") {
  ResumptionCache cache;
  auto t0 = ResumptionCache::Clock::now();
  // Sessions told apart by their timeout; the cache keeps and hands out copies.
  auto session = [](long timeout) {
    SSL_SESSION* s = SSL_SESSION_new();
    REQUIRE(s != nullptr);
    SSL_SESSION_set_timeout(s, timeout);
    return std::unique_ptr<SSL_SESSION, decltype(&SSL_SESSION_free)>(s, SSL_SESSION_free);
  };
  auto first = session(101);
  cache.Keep("a", first.get(), t0);

  ResumptionCache::Ticket found = cache.Find("a", t0 + ResumptionCache::kLifetime - 1s);
  REQUIRE(found.session != nullptr);
  CHECK(found.session != first.get());  // a copy: never shared with a connection
  CHECK(SSL_SESSION_get_timeout(found.session) == 101);
  CHECK(found.authenticated_at == t0);
  SSL_SESSION_free(found.session);
  CHECK(cache.Find("b", t0).session == nullptr);

  cache.Keep("a", session(102).get(), t0 + 5s);  // replaces the first
  found = cache.Find("a", t0 + ResumptionCache::kLifetime + 1s);
  REQUIRE(found.session != nullptr);
  CHECK(SSL_SESSION_get_timeout(found.session) == 102);
  SSL_SESSION_free(found.session);

  CHECK(cache.Find("a", t0 + 5s + ResumptionCache::kLifetime).session == nullptr);  // too old: dropped
  CHECK(cache.size() == 0);

  cache.Keep("a", first.get(), t0);
  cache.Forget("a");
  CHECK(cache.Find("a", t0).session == nullptr);

  // Full: the peer authenticated longest ago makes room.
  for (size_t i = 0; i < ResumptionCache::kMaxPeers; ++i) {
    cache.Keep("peer " + std::to_string(i), first.get(), t0 + std::chrono::seconds(i == 3 ? 0 : 1));
  }
  cache.Keep("newcomer", first.get(), t0 + 2s);
  CHECK(cache.size() == ResumptionCache::kMaxPeers);
  found = cache.Find("peer 3", t0);
  CHECK(found.session == nullptr);
  found = cache.Find("newcomer", t0);
  CHECK(found.session != nullptr);
  SSL_SESSION_free(found.session);
}
