#include "tests/integration/pair.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace wanopt::testing {

using boost::asio::ip::tcp;

namespace {
const tcp::endpoint kLoopbackAny{boost::asio::ip::address_v4::loopback(), 0};
}

Pair::Pair(PairOptions options) : options_(std::move(options)) { Start(); }

void Pair::Restart(const std::function<void()>& before_start) {
  branch.reset();
  datacenter.reset();
  if (before_start) before_start();
  Start();
}

TempDir::TempDir() {
  char name[] = "/tmp/wanopt-test-XXXXXX";
  if (!mkdtemp(name)) throw std::runtime_error("mkdtemp failed");
  path = name;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

void Pair::Start() {
  const PairOptions& options = options_;
  std::string error;
  tcp::endpoint peer = options.peer.value_or(ClosedPort());
  if (options.start_datacenter) {
    Config dc;
    dc.name = "test-datacenter";
    dc.device_id = *channel::ParseDeviceId("02:00:00:00:00:02");
    dc.threads = 2;
    dc.timeouts = options.timeouts;
    // The datacenter runs bytecount and whatever the branch's rule asks for.
    std::vector<std::string> modules{"bytecount"};
    for (const auto& name : options.modules) {
      if (name != "bytecount") modules.push_back(name);
    }
    dc.datacenter = DatacenterConfig{{options.datacenter_listen, datacenter_port_}, modules};
    dc.datacenter->plaintext_peers = options.datacenter_plaintext_peers;
    dc.datacenter->serves = options.datacenter_serves;
    dc.dre.datastore = options.datacenter_store;
    dc.dre.max_bytes = options.datacenter_store_bytes;
    dc.dre.read_cache_bytes = options.datacenter_read_cache_bytes;
    dc.wan.congestion = options.congestion;
    dc.peering = options.datacenter_security;
    datacenter = std::make_unique<Daemon>(dc);
    if (!datacenter->Start(&error)) throw std::runtime_error(error);
    datacenter_port_ = datacenter->datacenter_endpoint().port();
    if (!options.peer) peer = {boost::asio::ip::address_v4::loopback(), datacenter_port_};
  }
  Config br;
  br.name = "test-branch";
  br.device_id = *channel::ParseDeviceId(options.branch_device_id);
  br.threads = 2;
  br.timeouts = options.timeouts;
  br.dre.datastore = options.branch_store;
  br.wan.congestion = options.congestion;
  br.peering = options.branch_security;
  ForwardRule rule;
  rule.name = "test";
  rule.listen = kLoopbackAny;
  rule.destination = options.destination.value_or(origin.endpoint());
  rule.peer = peer;
  rule.peer_down = options.peer_down;
  rule.modules = options.modules;
  br.forwards.push_back(rule);
  branch = std::make_unique<Daemon>(br);
  if (!branch->Start(&error)) throw std::runtime_error(error);
}

ScriptedServer::ScriptedServer(std::function<void(int fd)> script) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::listen(listen_fd_, 4);
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  endpoint_ = {boost::asio::ip::address_v4::loopback(), ntohs(addr.sin_port)};
  thread_ = std::thread([this, script = std::move(script)] {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    script(fd);
    ::close(fd);
  });
}

ScriptedServer::~ScriptedServer() {
  Join();
  ::close(listen_fd_);
}

void ScriptedServer::Join() {
  if (!thread_.joinable()) return;
  ::shutdown(listen_fd_, SHUT_RDWR);  // a script that never got its connection ends here
  thread_.join();
}

tcp::endpoint ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return {boost::asio::ip::address_v4::loopback(), ntohs(addr.sin_port)};
}

int ConnectTo(const tcp::endpoint& target) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(target.port());
  auto bytes = target.address().to_v4().to_bytes();
  std::memcpy(&addr.sin_addr, bytes.data(), 4);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string ReadExactly(int fd, size_t n) {
  std::string out;
  char buffer[4096];
  while (out.size() < n) {
    ssize_t got = ::recv(fd, buffer, std::min(sizeof buffer, n - out.size()), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buffer, static_cast<size_t>(got));
  }
  return out;
}

std::string ReadAll(int fd, int timeout_ms, std::string* error) {
  std::string out;
  char buffer[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) == 0) {
      *error = "timeout";
      return out;
    }
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n == 0) {
      error->clear();
      return out;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = errno == ECONNRESET ? "reset" : std::strerror(errno);
      return out;
    }
    out.append(buffer, static_cast<size_t>(n));
  }
}

bool Noted(const ConnectionSnapshot& connection, std::string_view text) {
  for (const auto& note : connection.notes) {
    if (note.find(text) != std::string::npos) return true;
  }
  return false;
}

bool Noted(Daemon& daemon, std::string_view text) {
  for (const auto& c : daemon.table().Connections()) {
    if (Noted(c, text)) return true;
  }
  return false;
}

}  // namespace wanopt::testing
