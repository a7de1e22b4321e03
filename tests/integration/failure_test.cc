// What a client sees when something fails: a refused server, a datacenter that is
// down, dies, stays silent or speaks garbage. Never a hang; never wrong bytes.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/integration/pair.h"
#include "wanopt/channel/frame.h"
#include "wanopt/channel/hello.h"
#include "util/log.h"

using namespace wanopt;
using namespace wanopt::testing;
using boost::asio::ip::tcp;

namespace {

std::string Frame(channel::FrameType type, std::string_view payload) {
  std::string out(channel::kFrameHeaderSize, '\0');
  std::span<const uint8_t> p(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  channel::EncodeFrameHeader({type, 0, 0, static_cast<uint32_t>(payload.size())}, p,
                             {reinterpret_cast<uint8_t*>(out.data()), out.size()});
  return out + std::string(payload);
}

std::string HelloTo(const tcp::endpoint& destination) {
  channel::Hello hello;
  hello.destination = destination;
  auto bytes = channel::EncodeHello(hello);
  return Frame(channel::FrameType::kHello, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("origin refuses the connection: the client is reset within a second") {
  Pair pair({.destination = ClosedPort()});
  auto start = std::chrono::steady_clock::now();
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  std::string error;
  std::string got = ReadAll(fd, 1000, &error);  // "timeout" if nothing happens within 1 s
  ::close(fd);
  CHECK(error == "reset");
  CHECK(got.empty());
  CHECK(SecondsSince(start) < 1.0);
}

TEST_CASE("datacenter down, peer_down = reset: the client is reset at once, and the log says why") {
  log::StartCapture();
  Pair pair({.peer_down = PeerDownAction::kReset, .start_datacenter = false});
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  std::string error;
  ReadAll(fd, 1000, &error);
  ::close(fd);
  CHECK(error == "reset");
  std::string logged = log::Captured();
  CHECK(logged.find("unreachable") != std::string::npos);
  CHECK(logged.find("resetting the client (peer_down = reset)") != std::string::npos);
}

TEST_CASE("datacenter down, peer_down = pass-through: the transfer succeeds directly, and the log says so") {
  log::StartCapture();
  Pair pair({.peer_down = PeerDownAction::kPassThrough, .start_datacenter = false});
  auto data = lab::RandomBytes(4 << 20, 5);
  auto result = lab::EchoTransfer(pair.entry(), 11, data, pair.origin);
  CHECK_MESSAGE(result.verified, result.error);
  CHECK(pair.branch->counters().pass_through.load() == 1);
  // Passing through, the bytes cross the WAN unreduced: counted as WAN bytes.
  const auto& c = pair.branch->counters();
  CHECK(c.lan_in.load() == data.size() + 8);  // the transfer id, then the payload
  CHECK(c.wan_out.load() == c.lan_in.load());
  CHECK(c.wan_in.load() == c.lan_out.load());
  CHECK(c.lan_out.load() == data.size() + 8);
  CHECK(log::Captured().find("pass-through: peer") != std::string::npos);
}

TEST_CASE("malformed inner-channel input drops that connection only, the datacenter keeps serving") {
  Pair pair;
  // A real connection is open through the pair the whole time.
  int real = ConnectTo(pair.entry());
  REQUIRE(real >= 0);
  REQUIRE(SendAll(real, std::string("\0\0\0\0\0\0\0\x21", 8) + "first half, "));

  const std::string hello = HelloTo(pair.origin.endpoint());
  std::string corrupted = Frame(channel::FrameType::kData, "payload");
  corrupted.back() ^= 1;
  std::string oversized = Frame(channel::FrameType::kData, "");
  oversized[4] = '\x7f';  // length far above the maximum
  const std::vector<std::pair<const char*, std::string>> attacks = {
      {"garbage", std::string(64, '\xee')},
      {"bad magic", Frame(channel::FrameType::kHello, "NOPE-not-a-hello")},
      {"data before hello", Frame(channel::FrameType::kData, "x")},
      {"checksum mismatch after a valid hello", hello + corrupted},
      {"oversized frame after a valid hello", hello + oversized},
      {"unknown frame type after a valid hello", hello + std::string(16, '\x7e')},
  };
  for (const auto& [name, bytes] : attacks) {
    CAPTURE(name);
    int fd = ConnectTo(pair.datacenter_endpoint());
    REQUIRE(fd >= 0);
    SendAll(fd, bytes);
    std::string error;
    ReadAll(fd, 2000, &error);  // the datacenter must hang up, not wait
    CHECK(error != "timeout");
    ::close(fd);
  }
  CHECK(pair.datacenter->counters().protocol_errors.load() == attacks.size());

  // The real connection still works end to end.
  REQUIRE(SendAll(real, "second half"));
  ::shutdown(real, SHUT_WR);
  std::string error;
  std::string echoed = ReadAll(real, 5000, &error);
  ::close(real);
  CHECK(error == "");
  CHECK(echoed == std::string("\0\0\0\0\0\0\0\x21", 8) + "first half, second half");
}

TEST_CASE("a peer that answers garbage: the client is reset, the branch keeps serving") {
  ScriptedServer liar([](int fd) {
    std::string error;
    char buffer[4096];
    (void)::recv(fd, buffer, sizeof buffer, 0);  // the hello
    SendAll(fd, std::string(32, '\x42'));
    ReadAll(fd, 2000, &error);
  });
  Pair pair({.peer = liar.endpoint(), .start_datacenter = false});
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  std::string error;
  ReadAll(fd, 2000, &error);
  ::close(fd);
  CHECK(error == "reset");
  CHECK(pair.branch->counters().protocol_errors.load() == 1);
}

TEST_CASE("a silent peer is given up after the dead-peer time: the client is reset") {
  ScriptedServer silent([](int fd) {
    std::string error;
    ReadAll(fd, 3000, &error);  // reads the hello and the keepalives, never answers
  });
  Timeouts fast;
  fast.keepalive = std::chrono::milliseconds(100);
  fast.dead_peer = std::chrono::milliseconds(400);
  Pair pair({.peer = silent.endpoint(), .start_datacenter = false, .timeouts = fast});
  auto start = std::chrono::steady_clock::now();
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  std::string error;
  ReadAll(fd, 2000, &error);
  ::close(fd);
  CHECK(error == "reset");
  CHECK(SecondsSince(start) < 2.0);
}

TEST_CASE("the datacenter dies mid-transfer: the client is reset, never handed a short stream as complete") {
  Pair pair;
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  REQUIRE(SendAll(fd, std::string("\0\0\0\0\0\0\0\x31", 8) + "some bytes"));
  // Wait until the bytes made the round trip, so the session is surely established.
  REQUIRE(ReadExactly(fd, 18).size() == 18);
  pair.datacenter->Stop();
  std::string error;
  ReadAll(fd, 3000, &error);
  ::close(fd);
  CHECK(error == "reset");
}

TEST_CASE("a hello of another protocol version is answered with version-unsupported") {
  Pair pair;
  int fd = ConnectTo(pair.datacenter_endpoint());
  REQUIRE(fd >= 0);
  channel::Hello hello;
  hello.destination = pair.origin.endpoint();
  auto bytes = channel::EncodeHello(hello);
  bytes[4] = 2;  // version 2
  SendAll(fd, Frame(channel::FrameType::kHello, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size())));
  ::shutdown(fd, SHUT_WR);
  std::string error;
  std::string answer = ReadAll(fd, 2000, &error);
  ::close(fd);
  CHECK(error == "");
  channel::DecodedFrame frame;
  REQUIRE(channel::DecodeFrame({reinterpret_cast<const uint8_t*>(answer.data()), answer.size()}, &frame) ==
          channel::DecodeStatus::kFrame);
  REQUIRE(frame.header.type == channel::FrameType::kHelloAck);
  std::string decode_error;
  auto ack = channel::DecodeHelloAck(frame.payload, &decode_error);
  REQUIRE_MESSAGE(ack, decode_error);
  CHECK(ack->status == channel::HelloStatus::kVersionUnsupported);
  CHECK(ack->version == channel::kProtocolVersion);
}
