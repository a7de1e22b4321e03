// Faults and load in the loopback pair: timers racing connects under 300 concurrent
// connections, a hello that trickles in, a box stopped mid-transfer. Whatever
// happens, a client or server gets every byte or a reset: never a hang, never a
// clean end of a cut stream. (Signals to real processes: fault_signals_test.py.)
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/pair.h"
#include "wanopt/channel/frame.h"
#include "wanopt/channel/hello.h"

using namespace wanopt;
using namespace wanopt::testing;
using boost::asio::ip::tcp;

namespace {

channel::PeeringSecurity Psk() {
  channel::PeeringSecurity s;
  s.mode = channel::PeeringSecurity::Mode::kPsk;
  s.psk_identity = "wanopt-fault";
  s.psk.assign(32, 0x5a);
  return s;
}

// 300 concurrent echo transfers through the pair; the error of each ("" = verified).
std::vector<std::string> ConcurrentTransfers(Pair& pair, int connections) {
  std::vector<std::string> errors(static_cast<size_t>(connections));
  std::vector<std::thread> clients;
  for (int i = 0; i < connections; ++i) {
    clients.emplace_back([&, i] {
      auto data = lab::RandomBytes(32 * 1024 + static_cast<size_t>(i), static_cast<uint64_t>(i));
      auto r = lab::EchoTransfer(pair.entry(), 5000 + static_cast<uint64_t>(i), data, pair.origin, 20000);
      errors[static_cast<size_t>(i)] = r.verified ? "" : r.error;
    });
  }
  for (auto& t : clients) t.join();
  return errors;
}

bool IsReset(const std::string& error) {
  return error.find("Connection reset") != std::string::npos || error.find("Broken pipe") != std::string::npos;
}

// Waits (bounded) until no connection of `daemon` is still open; true if none is.
bool AllEnded(Daemon& daemon, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    bool open = false;
    for (const auto& c : daemon.table().Connections()) {
      if (c.state != ConnectionState::kClosed && c.state != ConnectionState::kReset) open = true;
    }
    if (!open) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a condition, not synchronising
  }
}

// A server that sends a pattern until its connection fails.
struct EndlessSource {
  ScriptedServer server{[](int fd) {
    std::string chunk(64 * 1024, 'w');
    while (SendAll(fd, chunk)) {
    }
  }};
};

// A server that reads until EOF or an error; records which, and counts as it reads.
struct Sink {
  std::atomic<uint64_t> bytes{0};
  std::string error;
  ScriptedServer server{[this](int fd) {
    char buffer[65536];
    for (;;) {
      ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        bytes += static_cast<uint64_t>(n);
        continue;
      }
      error = n == 0 ? "" : errno == ECONNRESET ? "reset" : std::strerror(errno);
      return;
    }
  }};
};

}  // namespace

TEST_CASE("peer-connect timeout racing 300 connections with PSK and peer_down = reset: no crash, each verified or reset") {
  Timeouts t;
  t.peer_connect = std::chrono::milliseconds(1);
  Pair pair({.peer_down = PeerDownAction::kReset, .timeouts = t, .branch_security = Psk(),
             .datacenter_security = Psk()});
  auto errors = ConcurrentTransfers(pair, 300);
  int verified = 0, reset = 0;
  for (const auto& e : errors) {
    if (e.empty()) ++verified;
    else if (IsReset(e)) ++reset;
    else FAIL_CHECK("neither verified nor reset: " << e);  // a hang or a cut stream
  }
  MESSAGE(verified << " verified, " << reset << " reset");
  // (Each transfer's end is checked in the loop.) No session is left open on either box.
  CHECK(AllEnded(*pair.branch, std::chrono::seconds(10)));
  CHECK(AllEnded(*pair.datacenter, std::chrono::seconds(10)));
}

TEST_CASE("peer-connect timeout racing 300 plaintext connections, pass-through: every transfer verified, none left open") {
  Timeouts t;
  t.peer_connect = std::chrono::milliseconds(1);
  Pair pair({.timeouts = t});
  auto errors = ConcurrentTransfers(pair, 300);
  int verified = 0;
  for (const auto& e : errors) {
    if (e.empty()) ++verified;
    else MESSAGE(e);
  }
  CHECK(verified == 300);
  CHECK(AllEnded(*pair.branch, std::chrono::seconds(10)));
  CHECK(AllEnded(*pair.datacenter, std::chrono::seconds(10)));
}

TEST_CASE("a hello trickling in at one byte per 100 ms is cut at the handshake deadline") {
  Timeouts t;
  t.handshake = std::chrono::milliseconds(500);
  Pair pair({.timeouts = t});
  channel::Hello hello;
  hello.destination = pair.origin.endpoint();
  auto payload = channel::EncodeHello(hello);
  std::string frame(channel::kFrameHeaderSize, '\0');
  channel::EncodeFrameHeader({channel::FrameType::kHello, 0, 0, static_cast<uint32_t>(payload.size())}, payload,
                             {reinterpret_cast<uint8_t*>(frame.data()), frame.size()});
  frame.append(payload.begin(), payload.end());
  int fd = ConnectTo(pair.datacenter_endpoint());
  REQUIRE(fd >= 0);
  size_t sent = 0;
  bool cut = false;
  for (; sent < frame.size(); ++sent) {
    if (::send(fd, frame.data() + sent, 1, MSG_NOSIGNAL) != 1) {
      cut = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the trickle itself
  }
  if (!cut) {
    std::string error;
    ReadAll(fd, 2000, &error);
    cut = error == "reset";
  }
  ::close(fd);
  MESSAGE("sent " << sent << " of " << frame.size() << " bytes");
  CHECK(cut);
  CHECK(sent < frame.size());  // the deadline came long before the last byte
}

TEST_CASE("the branch stopped mid-download: the client sees a reset, never a clean end") {
  EndlessSource source;
  Pair pair({.destination = source.server.endpoint()});
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  CHECK(ReadExactly(fd, 1 << 20).size() == size_t{1} << 20);
  pair.branch.reset();  // Stop(): what SIGTERM does
  std::string error;
  ReadAll(fd, 10000, &error);
  ::close(fd);
  CHECK(error == "reset");
}

TEST_CASE("the datacenter stopped mid-upload: the server sees a reset, never a clean end") {
  Sink sink;
  Pair pair({.destination = sink.server.endpoint()});
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  std::string chunk(64 * 1024, 'u');
  for (int i = 0; i < 16; ++i) REQUIRE(SendAll(fd, chunk));
  std::atomic<bool> stop_sending{false};
  std::thread writer([&] {
    while (!stop_sending && SendAll(fd, chunk)) {
    }
  });
  // Mid-upload: the server has bytes, more are on their way.
  REQUIRE(WaitFor([&] { return sink.bytes >= 256 * 1024; }, std::chrono::seconds(20)));
  pair.datacenter.reset();
  sink.server.Join();
  stop_sending = true;
  ::shutdown(fd, SHUT_RDWR);
  writer.join();
  ::close(fd);
  MESSAGE("the server read " << sink.bytes.load() << " bytes");
  CHECK(sink.error == "reset");
}

TEST_CASE("the datacenter stopped mid-download: the client sees a reset") {
  EndlessSource source;
  Pair pair({.destination = source.server.endpoint()});
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  CHECK(ReadExactly(fd, 1 << 20).size() == size_t{1} << 20);
  pair.datacenter.reset();
  std::string error;
  ReadAll(fd, 10000, &error);
  ::close(fd);
  CHECK(error == "reset");
}
