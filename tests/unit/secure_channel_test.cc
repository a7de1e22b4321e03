// The TLS pump between two boxes, over loopback TCP: authentication both ways
// (certificates, PSKs, the optimistic opening side), bytes intact both ways, and
// the settings SecureContext::Create refuses. How a channel ends:
// secure_channel_end_test.cc.
#include <doctest/doctest.h>

#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "tests/unit/secure_channel_test_util.h"
#include "wanopt/channel/secure_channel.h"
#include "util/sha256.h"

using namespace wanopt;
using namespace wanopt::channel;
using namespace wanopt::channel::test_helpers;

TEST_CASE("certificates: 8 MiB each way at once arrive intact, then both pumps go away") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  CHECK(branch->local_name() == "branch");
  Boxes boxes;
  REQUIRE(boxes.Handshake(*branch, *dc));
  CHECK_MESSAGE(!boxes.client.result.ec, boxes.client.result.error);
  CHECK_MESSAGE(!boxes.server.result.ec, boxes.server.result.error);
  REQUIRE((!boxes.client.result.ec && !boxes.server.result.ec));
  CHECK(boxes.client.result.peer_name == "dc");
  CHECK(boxes.server.result.peer_name == "branch");
  REQUIRE(boxes.client.plain.is_open());
  REQUIRE(boxes.server.plain.is_open());

  constexpr size_t kSize = 8 << 20;
  auto up = PseudoRandom(kSize, 1);
  auto down = PseudoRandom(kSize, 2);
  Reader at_server(boxes.server.plain), at_client(boxes.client.plain);
  at_server.Start();
  at_client.Start();
  // Each side writes everything, then shuts down sending: close_notify ends the other's read.
  int written = 0;
  auto write_all = [&written](End* end, const std::vector<uint8_t>* data) {
    end->plain.AsyncWrite({asio::buffer(*data), asio::const_buffer()}, [end, data, &written](error_code ec, size_t n) {
      CHECK(!ec);
      CHECK(n == data->size());
      end->plain.ShutdownSend();
      ++written;
    });
  };
  write_all(&boxes.client, &up);
  write_all(&boxes.server, &down);
  REQUIRE(RunUntil(boxes.io, [&] { return written == 2 && at_server.ended && at_client.ended; }, 60s));
  CHECK(at_server.end == asio::error::eof);
  CHECK(at_client.end == asio::error::eof);
  CHECK(at_server.bytes == kSize);
  CHECK(at_client.bytes == kSize);
  CHECK(at_server.sha.HexDigest() == Sha256Hex(up));
  CHECK(at_client.sha.HexDigest() == Sha256Hex(down));

  // Both directions ended in order on both boxes: the pumps are gone already, with
  // the sessions' ends still open.
  CHECK(Drains(boxes.io));
  boxes.client.plain.Close();
  boxes.server.plain.Close();
  CHECK(boxes.client.calls == 1);
  CHECK(boxes.server.calls == 1);
}

TEST_CASE("PSK: a round trip, and each side names the identity") {
  auto a = PskContext("paris-dc", 7);
  auto b = PskContext("paris-dc", 7);
  Boxes boxes;
  REQUIRE(boxes.Handshake(*a, *b));
  CHECK_MESSAGE(!boxes.client.result.ec, boxes.client.result.error);
  CHECK_MESSAGE(!boxes.server.result.ec, boxes.server.result.error);
  REQUIRE((!boxes.client.result.ec && !boxes.server.result.ec));
  CHECK(boxes.client.result.peer_name == "paris-dc");
  CHECK(boxes.server.result.peer_name == "paris-dc");

  ExchangeMessages(boxes, "ping from the branch", "pong from the datacenter");
  boxes.client.plain.Close();
  boxes.server.plain.Close();
  CHECK(Drains(boxes.io));
}

TEST_CASE("a certificate from another CA fails on both boxes, and no session gets a socket") {
  SUBCASE("the server is the rogue: the client rejects it") {
    auto branch = CertContext("branch");
    auto rogue = CertContext("rogue", "rogue-ca.pem");
    Boxes boxes;
    REQUIRE(boxes.Handshake(*branch, *rogue));
    CHECK(boxes.client.result.ec);
    CHECK(boxes.client.result.error == "peer certificate not signed by the configured CA");
    CHECK(boxes.server.result.ec);
    CHECK(boxes.server.result.error == "peer rejected our certificate (unknown CA)");
    CHECK(boxes.client.result.authentication_failed);
    CHECK(boxes.server.result.authentication_failed);
    CHECK(!boxes.client.plain.is_open());
    CHECK(!boxes.server.plain.is_open());
    CHECK(Drains(boxes.io));
  }
  SUBCASE("the client is the rogue: its handshake completes first, yet it fails too") {
    // The rogue trusts the real CA, so it accepts dc; dc's verdict comes after the
    // rogue's handshake finished: only the confirmation byte tells the rogue.
    auto rogue = CertContext("rogue", "ca-and-rogue-ca.pem");
    auto dc = CertContext("dc");
    Boxes boxes;
    REQUIRE(boxes.Handshake(*rogue, *dc));
    CHECK(boxes.server.result.ec);
    CHECK(boxes.server.result.error == "peer certificate not signed by the configured CA");
    CHECK(boxes.client.result.ec);
    CHECK(boxes.client.result.error == "peer rejected our certificate (unknown CA)");
    CHECK(!boxes.client.plain.is_open());
    CHECK(!boxes.server.plain.is_open());
    CHECK(Drains(boxes.io));
  }
}

TEST_CASE("optimistic opening side: bytes flow at once, the confirmation byte never reaches the session") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  Boxes boxes;
  std::string late;
  SecureChannelOptions options{true, [&](const std::string& why) { late = why; }};
  boxes.Start(*branch, *dc, 5s, std::move(options));
  REQUIRE(RunUntil(boxes.io, [&] { return boxes.client.calls > 0 && boxes.server.calls > 0; }));
  REQUIRE_FALSE(boxes.client.result.ec);
  REQUIRE_FALSE(boxes.server.result.ec);
  const std::string hello = "hello from the branch";
  const std::string answer = "answer";
  WriteNow(boxes.client.plain, hello);
  WriteNow(boxes.server.plain, answer);
  Reader at_client(boxes.client.plain), at_server(boxes.server.plain);
  at_client.Start();
  at_server.Start();
  REQUIRE(RunUntil(boxes.io, [&] {
    return at_client.received.size() >= answer.size() && at_server.received.size() >= hello.size();
  }));
  CHECK(Text(at_client.received) == answer);  // the first bytes are the server's, not the confirmation
  CHECK(Text(at_server.received) == hello);
  CHECK(late.empty());
  boxes.client.plain.Close();
  boxes.server.plain.Close();
  CHECK(Drains(boxes.io));
}

TEST_CASE("optimistic opening side refused after all: its session's end is cut, and it is told why") {
  // The rogue trusts our CA, so its own handshake completes; dc refuses it.
  auto rogue = CertContext("rogue", "ca-and-rogue-ca.pem");
  auto dc = CertContext("dc");
  Boxes boxes;
  std::string late;
  SecureChannelOptions options{true, [&](const std::string& why) { late = why; }};
  boxes.Start(*rogue, *dc, 5s, std::move(options));
  REQUIRE(RunUntil(boxes.io, [&] { return boxes.client.calls > 0 && boxes.server.calls > 0; }));
  CHECK_FALSE(boxes.client.result.ec);  // optimistic: it did not wait to be told
  CHECK(boxes.server.result.ec);
  Reader reader(boxes.client.plain);
  reader.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return reader.ended && !late.empty(); }));
  CHECK(reader.bytes == 0);  // nothing from a channel that was never up
  CHECK_MESSAGE(!late.empty(), late);
  boxes.client.plain.Close();
  CHECK(Drains(boxes.io));
}

TEST_CASE("a wrong PSK or an unknown identity fails on both boxes") {
  std::unique_ptr<SecureContext> client, server;
  SUBCASE("same identity, another key") {
    client = PskContext("paris-dc", 7);
    server = PskContext("paris-dc", 8);
  }
  SUBCASE("an identity the server does not know") {
    client = PskContext("lyon-dc", 7);
    server = PskContext("paris-dc", 7);
  }
  Boxes boxes;
  REQUIRE(boxes.Handshake(*client, *server));
  for (End* end : {&boxes.client, &boxes.server}) {
    CHECK(end->result.ec);
    CHECK_MESSAGE(end->result.error.starts_with("PSK mismatch or identity unknown"), end->result.error);
    CHECK(end->result.authentication_failed);
    CHECK(end->result.peer_name.empty());
    CHECK(!end->plain.is_open());
  }
  CHECK(Drains(boxes.io));
}


TEST_CASE("SecureContext::Create names the file, or the setting, that is wrong") {
  const Pki& pki = Pki::Get();
  PeeringSecurity security;
  security.mode = PeeringSecurity::Mode::kCertificate;
  security.ca_file = pki.Path("ca.pem");
  security.cert_file = pki.Path("branch.pem");
  security.key_file = pki.Path("branch.key");
  std::string error;

  auto missing = security;
  missing.ca_file = pki.Path("no-such-ca.pem");
  CHECK(!SecureContext::Create(missing, &error));
  CHECK(error == "CA file " + missing.ca_file + ": No such file or directory");

  missing = security;
  missing.key_file = pki.Path("no-such.key");
  CHECK(!SecureContext::Create(missing, &error));
  CHECK(error == "key file " + missing.key_file + ": No such file or directory");

  auto not_pem = security;
  not_pem.cert_file = pki.Path("ca.key");
  CHECK(!SecureContext::Create(not_pem, &error));
  CHECK_MESSAGE(error.starts_with("certificate file " + not_pem.cert_file + ": no usable certificate"), error);

  auto other_key = security;
  other_key.key_file = pki.Path("dc.key");
  CHECK(!SecureContext::Create(other_key, &error));
  CHECK(error == "key file " + other_key.key_file + " does not match certificate file " + security.cert_file);

  auto foreign = security;
  foreign.cert_file = pki.Path("rogue.pem");
  foreign.key_file = pki.Path("rogue.key");
  CHECK(!SecureContext::Create(foreign, &error));
  CHECK_MESSAGE(error.starts_with("certificate file " + foreign.cert_file + ": not valid under CA file " +
                                  security.ca_file),
                error);

  PeeringSecurity psk;
  psk.mode = PeeringSecurity::Mode::kPsk;
  psk.psk_identity = "paris-dc";
  psk.psk.assign(15, 1);
  CHECK(!SecureContext::Create(psk, &error));
  CHECK(error == "PSK is 15 bytes: it must be 16 to 48");

  CHECK(!SecureContext::Create(PeeringSecurity{}, &error));
  CHECK(!error.empty());
  CHECK(SecureContext::Create(security, &error));
}
