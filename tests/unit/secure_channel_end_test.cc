// The TLS pump between two boxes, over loopback TCP: every way a channel ends, and
// pumps that never outlive it.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
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

namespace {

uint16_t LocalPort(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  return ntohs(address.sin_port);
}

// True when the kernel holds the loopback connection local_port -> remote_port in
// TIME_WAIT (state 06 in /proc/net/tcp; ports in hex).
bool InTimeWait(uint16_t local_port, uint16_t remote_port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // the header
  char local[16], remote[16];
  std::snprintf(local, sizeof(local), ":%04X", local_port);
  std::snprintf(remote, sizeof(remote), ":%04X", remote_port);
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, from, to, state;
    fields >> slot >> from >> to >> state;
    if (from.ends_with(local) && to.ends_with(remote) && state == "06") return true;
  }
  return false;
}

}  // namespace

TEST_CASE("a box that closes its end: the other session reads everything sent, then EOF") {
  auto mid = CertContext("mid");
  auto dc = CertContext("dc");
  Boxes boxes;
  REQUIRE(boxes.Handshake(*mid, *dc));
  REQUIRE(!boxes.client.result.ec);
  CHECK(boxes.client.result.peer_name == "dc");
  CHECK(boxes.server.result.peer_name == "mid");
  std::string bye = "last words before closing";
  WriteNow(boxes.server.plain, bye);
  boxes.server.plain.Close();
  Reader at_client(boxes.client.plain);
  at_client.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_client.ended; }));
  CHECK(Text(at_client.received) == bye);
  CHECK(at_client.end == asio::error::eof);
  boxes.client.plain.Close();
  CHECK(Drains(boxes.io));
}

TEST_CASE("a session that only shuts down sending still gets the reply") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  Boxes boxes;
  REQUIRE(boxes.Handshake(*branch, *dc));
  REQUIRE(!boxes.client.result.ec);
  std::string request = "the whole request", reply = "a reply after the request ended";
  WriteNow(boxes.client.plain, request);
  boxes.client.plain.ShutdownSend();
  Reader at_server(boxes.server.plain);
  at_server.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_server.ended; }));
  CHECK(Text(at_server.received) == request);
  CHECK(at_server.end == asio::error::eof);
  // The server's pump received close_notify and still relays its session's bytes.
  WriteNow(boxes.server.plain, reply);
  boxes.server.plain.Close();
  Reader at_client(boxes.client.plain);
  at_client.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_client.ended; }));
  CHECK(Text(at_client.received) == reply);
  CHECK(at_client.end == asio::error::eof);
  boxes.client.plain.Close();
  CHECK(Drains(boxes.io));
}

TEST_CASE("a session that shuts down sending, then closes, ends its pump while the peer is silent") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  Boxes boxes;
  // The pump waits for the peer's close_notify as long as for a handshake: 1 s here.
  REQUIRE(boxes.Handshake(*branch, *dc, 1s));
  REQUIRE(!boxes.client.result.ec);
  boxes.client.plain.ShutdownSend();
  Reader at_server(boxes.server.plain);
  at_server.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_server.ended; }));
  CHECK(at_server.end == asio::error::eof);
  // The server's session keeps its end open and says nothing: only the client
  // session's close can end the client's pump, which holds the TCP socket (the
  // sessions' ends hold no descriptor).
  size_t before = OpenDescriptors();
  boxes.client.plain.Close();
  CHECK(RunUntil(boxes.io, [&] { return OpenDescriptors() == before - 1; }, 5s));
  boxes.server.plain.Close();
  CHECK(Drains(boxes.io));
}

TEST_CASE("a session that closes its end first: its pump takes the peer's close_notify, no reset") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  Boxes boxes;
  REQUIRE(boxes.Handshake(*branch, *dc));
  REQUIRE(!boxes.client.result.ec);
  uint16_t client_port = LocalPort(boxes.client.tcp_fd), server_port = LocalPort(boxes.server.tcp_fd);
  boxes.client.plain.Close();
  Reader at_server(boxes.server.plain);
  at_server.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_server.ended; }));
  CHECK(at_server.end == asio::error::eof);
  // The server's session closes in turn: its close_notify and FIN reach a client
  // socket still open, which closes in order into TIME_WAIT. Had the client's pump
  // closed at once, its kernel would have answered them with a reset, leaving no
  // TIME_WAIT (and, were the reset lost, a server socket resending its FIN).
  boxes.server.plain.Close();
  CHECK(RunUntil(boxes.io, [&] { return InTimeWait(client_port, server_port); }, 5s));
  CHECK(Drains(boxes.io));
}

TEST_CASE("a TCP connection that ends without close_notify cuts both sessions' ends") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  Boxes boxes;
  REQUIRE(boxes.Handshake(*branch, *dc));
  REQUIRE(!boxes.client.result.ec);
  // FIN both ways under the server's pump, no TLS alert: what a middlebox cutting
  // the connection, or a crashed peer, looks like.
  REQUIRE(::shutdown(boxes.server.tcp_fd, SHUT_RDWR) == 0);
  Reader at_client(boxes.client.plain), at_server(boxes.server.plain);
  at_client.Start();
  at_server.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_client.ended && at_server.ended; }));
  CHECK(at_client.bytes == 0);
  CHECK(at_server.bytes == 0);
  // Cut, not ended in order: each read was a reset, and writing fails.
  CHECK(at_client.end == asio::error::connection_reset);
  CHECK(at_server.end == asio::error::connection_reset);
  for (End* end : {&boxes.client, &boxes.server}) {
    error_code ec;
    uint8_t byte = 1;
    std::array<asio::const_buffer, 1> one{asio::buffer(&byte, 1)};
    end->plain.WriteSome(one, ec);
    CHECK(ec == asio::error::broken_pipe);
    end->plain.Close();
  }
  CHECK(Drains(boxes.io));
}

TEST_CASE("a peer that never speaks fails the handshake by the timeout") {
  auto branch = CertContext("branch");
  asio::io_context io;
  tcp::socket silent(io), ours(io);
  bool client = true;
  SUBCASE("as the opening box") { client = true; }
  SUBCASE("as the accepting box") { client = false; }
  ConnectPair(io, client ? ours : silent, client ? silent : ours);
  End end(io);
  auto start = Clock::now();
  StartSecureChannel(*branch, std::move(ours), client, 300ms, Boxes::Recorder(end));
  REQUIRE(RunUntil(io, [&] { return end.calls > 0; }));
  auto elapsed = Clock::now() - start;
  CHECK(end.result.ec == asio::error::timed_out);
  CHECK(end.result.error == "handshake timed out");
  CHECK_FALSE(end.result.authentication_failed);  // a slow peer is not remembered as an impostor
  CHECK(!end.plain.is_open());
  CHECK(elapsed >= 300ms);
  CHECK(elapsed < 2s);
  silent.close();
  CHECK(Drains(io));
  CHECK(end.calls == 1);
}

