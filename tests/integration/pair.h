// A branch proxy and a datacenter proxy in this process, in front of an echo
// origin, on 127.0.0.1 ephemeral ports: the fixture of the loopback tests.
#pragma once

#include <memory>
#include <optional>
#include <string>
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
};

class Pair {
 public:
  explicit Pair(PairOptions options = {});
  boost::asio::ip::tcp::endpoint entry() const { return branch->forward_endpoint(0); }
  boost::asio::ip::tcp::endpoint datacenter_endpoint() const { return datacenter->datacenter_endpoint(); }

  lab::EchoOrigin origin;
  std::unique_ptr<Daemon> datacenter;
  std::unique_ptr<Daemon> branch;
};

// A port on 127.0.0.1 where nothing listens (bound, then released).
boost::asio::ip::tcp::endpoint ClosedPort();

// Blocking client socket helpers; -1 / false on failure.
int ConnectTo(const boost::asio::ip::tcp::endpoint& target);
bool SendAll(int fd, std::string_view bytes);
// Reads until EOF, an error or `timeout_ms` without data. *error: "" (clean EOF),
// "reset", "timeout" or another errno text.
std::string ReadAll(int fd, int timeout_ms, std::string* error);

}  // namespace wanopt::testing
