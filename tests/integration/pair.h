// A branch proxy and a datacenter proxy in this process, in front of an echo
// origin, on 127.0.0.1 ephemeral ports: the fixture of the loopback tests.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "wanopt/daemon/daemon.h"
#include "wanopt/lab/echo.h"

namespace wanopt::testing {

struct PairOptions {
  std::vector<std::string> modules;
  PeerDownAction peer_down = PeerDownAction::kPassThrough;
  // Overrides: where the branch sends clients, and which peer it uses.
  std::optional<boost::asio::ip::tcp::endpoint> destination;
  std::optional<boost::asio::ip::tcp::endpoint> peer;
  bool start_datacenter = true;
  Timeouts timeouts;
  // DRE: chunk store directories ("" = none: the pair runs LZ only).
  std::string branch_store;
  std::string datacenter_store;
  uint64_t datacenter_store_bytes = uint64_t{1} << 30;
  uint64_t datacenter_read_cache_bytes = DreConfig{}.read_cache_bytes;  // [dre] read_cache_mb
  std::string branch_device_id = "02:00:00:00:00:01";
  // [datacenter]: where it listens (loopback unless given), plaintext_peers, serves.
  boost::asio::ip::address datacenter_listen = boost::asio::ip::address_v4::loopback();
  std::vector<Subnet> datacenter_plaintext_peers;
  std::vector<Subnet> datacenter_serves;
  std::string congestion = "bbr";  // [wan] congestion of both proxies
  // [peering] of each proxy (Mode kNone: plaintext inner channels).
  channel::PeeringSecurity branch_security;
  channel::PeeringSecurity datacenter_security;
};

class Pair {
 public:
  explicit Pair(PairOptions options = {});
  // Stops both proxies and starts them again on the same stores (the datacenter on
  // the same port). `before_start` runs while both are stopped.
  void Restart(const std::function<void()>& before_start = {});
  boost::asio::ip::tcp::endpoint entry() const { return branch->forward_endpoint(0); }
  boost::asio::ip::tcp::endpoint datacenter_endpoint() const { return datacenter->datacenter_endpoint(); }

  lab::EchoOrigin origin;
  std::unique_ptr<Daemon> datacenter;
  std::unique_ptr<Daemon> branch;

 private:
  void Start();
  PairOptions options_;
  uint16_t datacenter_port_ = 0;
};

// A fresh directory under /tmp, removed with the object.
struct TempDir {
  TempDir();
  ~TempDir();
  std::string path;
};

// A server on 127.0.0.1 for one connection, whose behaviour the test scripts: a
// server with odd manners, or a fake peer box. The script runs on its own thread
// with the accepted socket; it is closed when the script returns.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<void(int fd)> script);
  ~ScriptedServer();
  boost::asio::ip::tcp::endpoint endpoint() const { return endpoint_; }
  // Waits for the script to finish (it ends when its connection does).
  void Join();

 private:
  int listen_fd_;
  boost::asio::ip::tcp::endpoint endpoint_;
  std::thread thread_;
};

// A port on 127.0.0.1 where nothing listens (bound, then released).
boost::asio::ip::tcp::endpoint ClosedPort();

// Blocking client socket helpers; -1 / false on failure.
int ConnectTo(const boost::asio::ip::tcp::endpoint& target);
bool SendAll(int fd, std::string_view bytes);
// Reads until EOF, an error or `timeout_ms` without data. *error: "" (clean EOF),
// "reset", "timeout" or another errno text.
std::string ReadAll(int fd, int timeout_ms, std::string* error);
// Whether one of the connection's notes contains `text`; whether any connection on
// `daemon`'s table (ended ones included) has such a note.
bool Noted(const ConnectionSnapshot& connection, std::string_view text);
bool Noted(Daemon& daemon, std::string_view text);

// Reads exactly `n` bytes (fewer only if the connection ends or fails first).
std::string ReadExactly(int fd, size_t n);

// Polls `done` until it holds (true) or `limit` has passed (false): the bounded wait
// for a condition the loopback tests use instead of sleeping.
template <class Condition>
bool WaitFor(Condition done, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling a condition, not synchronising
  }
  return true;
}

}  // namespace wanopt::testing
