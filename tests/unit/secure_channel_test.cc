// The TLS pump between two boxes, over loopback TCP: authentication both ways,
// bytes intact both ways, every way a channel ends, and pumps that never outlive it.
#include <doctest/doctest.h>

#include <stdlib.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "wanopt/channel/secure_channel.h"
#include "util/sha256.h"

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using namespace wanopt;
using namespace wanopt::channel;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

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

std::unique_ptr<SecureContext> CertContext(const std::string& box, const std::string& ca = "ca.pem") {
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

std::unique_ptr<SecureContext> PskContext(const std::string& identity, uint8_t key_byte) {
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
bool RunUntil(asio::io_context& io, const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
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
bool Drains(asio::io_context& io) {
  io.restart();
  io.run_for(5s);
  return io.stopped();
}

// A connected loopback TCP pair on `io`: `a` opened it, `b` accepted it.
void ConnectPair(asio::io_context& io, tcp::socket& a, tcp::socket& b) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  a = tcp::socket(io);
  a.connect(acceptor.local_endpoint());
  b = acceptor.accept();
}

struct End {
  explicit End(asio::io_context& io) : plain(io) {}
  int calls = 0;
  SecureChannelResult result;
  tcp::socket plain;
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

  static std::function<void(SecureChannelResult, tcp::socket)> Recorder(End& end) {
    return [&end](SecureChannelResult result, tcp::socket plain) {
      ++end.calls;
      end.result = std::move(result);
      end.plain = std::move(plain);
    };
  }

  bool Handshake(const SecureContext& client_context, const SecureContext& server_context) {
    Start(client_context, server_context);
    return RunUntil(io, [&] { return client.calls > 0 && server.calls > 0; });
  }
};

std::vector<uint8_t> PseudoRandom(size_t n, uint64_t seed) {
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

size_t OpenDescriptors() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

std::string Text(std::span<const uint8_t> bytes) { return std::string(bytes.begin(), bytes.end()); }

// Reads a socket to its end, hashing what came.
struct Reader {
  explicit Reader(tcp::socket& s) : socket(s), buffer(64 * 1024) {}
  void Start() {
    socket.async_read_some(asio::buffer(buffer), [this](error_code ec, size_t n) {
      sha.Update(std::span(buffer).first(n));
      if (received.size() < 4096) {
        received.insert(received.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
      }
      bytes += n;
      if (ec) {
        end = ec;
        ended = true;
        return;
      }
      Start();
    });
  }
  tcp::socket& socket;
  std::vector<uint8_t> buffer;
  Sha256 sha;
  size_t bytes = 0;
  std::vector<uint8_t> received;  // the first few KiB, for the short messages below
  bool ended = false;
  error_code end;
};

}  // namespace

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
    asio::async_write(end->plain, asio::buffer(*data), [end, data, &written](error_code ec, size_t n) {
      CHECK(!ec);
      CHECK(n == data->size());
      end->plain.shutdown(tcp::socket::shutdown_send, ec);
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
  boxes.client.plain.close();
  boxes.server.plain.close();
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

  std::string request = "ping from the branch", reply = "pong from the datacenter";
  std::string got_request(request.size(), '\0'), got_reply(reply.size(), '\0');
  int steps = 0;
  asio::async_write(boxes.client.plain, asio::buffer(request), [&](error_code ec, size_t) { CHECK(!ec); });
  asio::async_read(boxes.server.plain, asio::buffer(got_request), [&](error_code ec, size_t) {
    CHECK(!ec);
    ++steps;
    asio::async_write(boxes.server.plain, asio::buffer(reply), [&](error_code ec, size_t) { CHECK(!ec); });
  });
  asio::async_read(boxes.client.plain, asio::buffer(got_reply), [&](error_code ec, size_t) {
    CHECK(!ec);
    ++steps;
  });
  REQUIRE(RunUntil(boxes.io, [&] { return steps == 2; }));
  CHECK(got_request == request);
  CHECK(got_reply == reply);
  boxes.client.plain.close();
  boxes.server.plain.close();
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
  asio::write(boxes.client.plain, asio::buffer(hello));
  asio::write(boxes.server.plain, asio::buffer(answer));
  Reader at_client(boxes.client.plain), at_server(boxes.server.plain);
  at_client.Start();
  at_server.Start();
  REQUIRE(RunUntil(boxes.io, [&] {
    return at_client.received.size() >= answer.size() && at_server.received.size() >= hello.size();
  }));
  CHECK(Text(at_client.received) == answer);  // the first bytes are the server's, not the confirmation
  CHECK(Text(at_server.received) == hello);
  CHECK(late.empty());
  boxes.client.plain.close();
  boxes.server.plain.close();
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
  boxes.client.plain.close();
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

TEST_CASE("a box that closes its end: the other session reads everything sent, then EOF") {
  auto mid = CertContext("mid");
  auto dc = CertContext("dc");
  Boxes boxes;
  REQUIRE(boxes.Handshake(*mid, *dc));
  REQUIRE(!boxes.client.result.ec);
  CHECK(boxes.client.result.peer_name == "dc");
  CHECK(boxes.server.result.peer_name == "mid");
  std::string bye = "last words before closing";
  asio::write(boxes.server.plain, asio::buffer(bye));
  boxes.server.plain.close();
  Reader at_client(boxes.client.plain);
  at_client.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_client.ended; }));
  CHECK(Text(at_client.received) == bye);
  CHECK(at_client.end == asio::error::eof);
  boxes.client.plain.close();
  CHECK(Drains(boxes.io));
}

TEST_CASE("a session that only shuts down sending still gets the reply") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  Boxes boxes;
  REQUIRE(boxes.Handshake(*branch, *dc));
  REQUIRE(!boxes.client.result.ec);
  std::string request = "the whole request", reply = "a reply after the request ended";
  asio::write(boxes.client.plain, asio::buffer(request));
  boxes.client.plain.shutdown(tcp::socket::shutdown_send);
  Reader at_server(boxes.server.plain);
  at_server.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_server.ended; }));
  CHECK(Text(at_server.received) == request);
  CHECK(at_server.end == asio::error::eof);
  // The server's pump received close_notify and still relays its session's bytes.
  asio::write(boxes.server.plain, asio::buffer(reply));
  boxes.server.plain.close();
  Reader at_client(boxes.client.plain);
  at_client.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_client.ended; }));
  CHECK(Text(at_client.received) == reply);
  CHECK(at_client.end == asio::error::eof);
  boxes.client.plain.close();
  CHECK(Drains(boxes.io));
}

TEST_CASE("a session that shuts down sending, then closes, ends its pump while the peer is silent") {
  auto branch = CertContext("branch");
  auto dc = CertContext("dc");
  Boxes boxes;
  REQUIRE(boxes.Handshake(*branch, *dc));
  REQUIRE(!boxes.client.result.ec);
  boxes.client.plain.shutdown(tcp::socket::shutdown_send);
  Reader at_server(boxes.server.plain);
  at_server.Start();
  REQUIRE(RunUntil(boxes.io, [&] { return at_server.ended; }));
  CHECK(at_server.end == asio::error::eof);
  // The server's session keeps its end open and says nothing: only the client
  // session's close can end the client's pump, which holds two descriptors.
  size_t before = OpenDescriptors();
  boxes.client.plain.close();
  CHECK(RunUntil(boxes.io, [&] { return OpenDescriptors() == before - 3; }, 5s));
  boxes.server.plain.close();
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
  // Cut, not ended in order: the pumps closed the sessions' ends, so writing fails.
  for (End* end : {&boxes.client, &boxes.server}) {
    error_code ec;
    uint8_t byte = 1;
    end->plain.write_some(asio::buffer(&byte, 1), ec);
    CHECK(ec == asio::error::broken_pipe);
    end->plain.close();
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
