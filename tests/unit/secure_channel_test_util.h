// Helpers for the TLS pump's tests (secure_channel_*_test.cc): the test PKI made
// once per run, contexts for certificates and PSKs, two boxes on a loopback TCP
// pair, running an io_context until a condition holds (never sleeping), and a
// reader that hashes what arrives. A failure fails the running test.
#pragma once

#include <doctest/doctest.h>

#include <stdlib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <algorithm>
#include <array>
#include <system_error>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "wanopt/channel/secure_channel.h"
#include "util/sha256.h"

namespace wanopt::channel::test_helpers {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// tests/lab/make-pki's output, made once per run in a temporary directory.
class Pki {
 public:
  static const Pki& Get() {
    static Pki pki;
    return pki;
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  Pki() {
    char name[] = "/tmp/wanopt-pki-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    dir_ = name;
    std::string command = std::string("'") + WANOPT_MAKE_PKI + "' '" + dir_ + "' >/dev/null";
    REQUIRE_MESSAGE(std::system(command.c_str()) == 0, command);
    // A rogue box that trusts our CA as well as its own: it accepts a real box's
    // certificate, so only the real box's check can stop it.
    std::ofstream both(Path("ca-and-rogue-ca.pem"));
    both << std::ifstream(Path("ca.pem")).rdbuf() << std::ifstream(Path("rogue-ca.pem")).rdbuf();
  }
  ~Pki() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string dir_;
};

inline std::unique_ptr<SecureContext> CertContext(const std::string& box, const std::string& ca = "ca.pem") {
  const Pki& pki = Pki::Get();
  PeeringSecurity security;
  security.mode = PeeringSecurity::Mode::kCertificate;
  security.ca_file = pki.Path(ca);
  security.cert_file = pki.Path(box + ".pem");
  security.key_file = pki.Path(box + ".key");
  std::string error;
  auto context = SecureContext::Create(security, &error);
  REQUIRE_MESSAGE(context, error);
  return context;
}

inline std::unique_ptr<SecureContext> PskContext(const std::string& identity, uint8_t key_byte) {
  PeeringSecurity security;
  security.mode = PeeringSecurity::Mode::kPsk;
  security.psk_identity = identity;
  security.psk.assign(32, key_byte);
  security.psk[0] = 0x42;
  std::string error;
  auto context = SecureContext::Create(security, &error);
  REQUIRE_MESSAGE(context, error);
  return context;
}

// Runs `io` until `done()` or `limit`; false on the limit. Never sleeps.
inline bool RunUntil(asio::io_context& io, const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
  auto deadline = Clock::now() + limit;
  while (!done()) {
    auto now = Clock::now();
    if (now >= deadline) return false;
    if (io.stopped()) io.restart();
    io.run_one_for(deadline - now);
  }
  return true;
}

// True once every pump and socket operation on `io` is gone.
inline bool Drains(asio::io_context& io) {
  io.restart();
  io.run_for(5s);
  return io.stopped();
}

// A connected loopback TCP pair on `io`: `a` opened it, `b` accepted it.
inline void ConnectPair(asio::io_context& io, tcp::socket& a, tcp::socket& b) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  a = tcp::socket(io);
  a.connect(acceptor.local_endpoint());
  b = acceptor.accept();
}

struct End {
  explicit End(asio::io_context& io) : plain(io.get_executor()) {}
  int calls = 0;
  SecureChannelResult result;
  PlainStream plain;
  int tcp_fd = -1;  // the pump's TCP socket, for cutting it under the pump
};

// Two boxes: `client` opened the TCP connection to `server`.
struct Boxes {
  asio::io_context io;
  End client{io}, server{io};

  void Start(const SecureContext& client_context, const SecureContext& server_context,
             std::chrono::milliseconds timeout = 5s, SecureChannelOptions options = {}) {
    tcp::socket a(io), b(io);
    ConnectPair(io, a, b);
    client.tcp_fd = a.native_handle();
    server.tcp_fd = b.native_handle();
    StartSecureChannel(client_context, std::move(a), true, timeout, Recorder(client), std::move(options));
    StartSecureChannel(server_context, std::move(b), false, timeout, Recorder(server));
  }

  static std::function<void(SecureChannelResult, PlainStream)> Recorder(End& end) {
    return [&end](SecureChannelResult result, PlainStream plain) {
      ++end.calls;
      end.result = std::move(result);
      end.plain = std::move(plain);
    };
  }

  bool Handshake(const SecureContext& client_context, const SecureContext& server_context,
                 std::chrono::milliseconds timeout = 5s) {
    Start(client_context, server_context, timeout);
    return RunUntil(io, [&] { return client.calls > 0 && server.calls > 0; });
  }
};

inline std::string Text(std::span<const uint8_t> bytes) { return std::string(bytes.begin(), bytes.end()); }

// Writes a short message that fits the pipe at once (a session's writes are
// asynchronous; a test's short ones need not be).
inline void WriteNow(PlainStream& plain, std::string_view message) {
  std::array<asio::const_buffer, 1> buffers{asio::buffer(message)};
  error_code ec;
  size_t n = plain.WriteSome(buffers, ec);
  REQUIRE_MESSAGE(!ec, ec.message());
  REQUIRE(n == message.size());
}

// Reads a stream to its end, hashing what came.
struct Reader {
  explicit Reader(PlainStream& s) : stream(s), buffer(64 * 1024) {}
  void Start() {
    stream.WaitReadable([this](error_code ec) {
      if (ec) return End(ec);
      for (;;) {
        size_t n = stream.ReadSome(asio::buffer(buffer), ec);
        if (ec == asio::error::would_block) return Start();
        if (ec) return End(ec);
        sha.Update(std::span(buffer).first(n));
        if (received.size() < 4096) {
          received.insert(received.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
        }
        bytes += n;
      }
    });
  }
  void End(error_code ec) {
    end = ec;
    ended = true;
  }
  PlainStream& stream;
  std::vector<uint8_t> buffer;
  Sha256 sha;
  size_t bytes = 0;
  std::vector<uint8_t> received;  // the first few KiB, for the short messages below
  bool ended = false;
  error_code end;
};

// Reads what is there now, up to `want` bytes in all; true once `got` has them.
inline bool ReadNow(PlainStream& plain, std::string& got, size_t want) {
  char buffer[256];
  while (got.size() < want) {
    error_code ec;
    size_t n = plain.ReadSome(asio::buffer(buffer, std::min(sizeof buffer, want - got.size())), ec);
    if (ec) break;
    got.append(buffer, n);
  }
  return got.size() >= want;
}

// One message each way through two channels that are up (client writes `request`,
// server `reply`); checks both arrived intact.
inline void ExchangeMessages(Boxes& boxes, const std::string& request, const std::string& reply) {
  WriteNow(boxes.client.plain, request);
  WriteNow(boxes.server.plain, reply);
  std::string got_request, got_reply;
  REQUIRE(RunUntil(boxes.io, [&] {
    bool server_done = ReadNow(boxes.server.plain, got_request, request.size());
    return ReadNow(boxes.client.plain, got_reply, reply.size()) && server_done;
  }));
  CHECK(got_request == request);
  CHECK(got_reply == reply);
}

inline std::vector<uint8_t> PseudoRandom(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  uint64_t x = seed;
  for (auto& byte : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    byte = static_cast<uint8_t>(x >> 24);
  }
  return out;
}

inline size_t OpenDescriptors() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

}  // namespace wanopt::channel::test_helpers
