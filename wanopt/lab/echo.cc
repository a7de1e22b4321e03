#include "wanopt/lab/echo.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>

#include "util/bytes.h"
#include "util/sha256.h"

namespace wanopt::lab {

using boost::asio::ip::tcp;

EchoOrigin::EchoOrigin(uint16_t port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 1024) != 0) {
    throw std::runtime_error(std::string("echo origin: cannot listen: ") + std::strerror(errno));
  }
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

EchoOrigin::~EchoOrigin() {
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  ::close(listen_fd_);
  {
    std::lock_guard lock(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : workers_) t.join();
}

tcp::endpoint EchoOrigin::endpoint() const {
  return {boost::asio::ip::address_v4::loopback(), port_};
}

std::string EchoOrigin::ReceivedDigest(uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = digests_.find(id);
  return it == digests_.end() ? std::string() : it->second;
}

void EchoOrigin::AcceptLoop() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // listener shut down
    }
    std::lock_guard lock(mu_);
    open_fds_.push_back(fd);
    workers_.emplace_back([this, fd] { Serve(fd); });
  }
}

void EchoOrigin::Serve(int fd) {
  Sha256 sha;
  std::vector<uint8_t> buffer(256 * 1024);
  uint8_t id_bytes[8];
  size_t id_filled = 0;
  bool failed = false;
  for (;;) {
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      failed = true;
      break;
    }
    for (ssize_t i = 0; i < n && id_filled < 8; ++i) id_bytes[id_filled++] = buffer[i];
    sha.Update({buffer.data(), static_cast<size_t>(n)});
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::send(fd, buffer.data() + off, n - off, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        failed = true;
        break;
      }
      off += w;
    }
    if (failed) break;
  }
  // Record before closing: the client reads the digest once it sees our FIN.
  std::string digest = sha.HexDigest();
  std::lock_guard lock(mu_);
  if (!failed && id_filled == 8) digests_[bytes::GetBe64(id_bytes)] = digest;
  std::erase(open_fds_, fd);
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

namespace {

int Connect(const tcp::endpoint& target, std::string* error) {
  int fd = ::socket(target.address().is_v4() ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  sockaddr_storage storage{};
  socklen_t len;
  if (target.address().is_v4()) {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(target.port());
    auto bytes = target.address().to_v4().to_bytes();
    std::memcpy(&a->sin_addr, bytes.data(), 4);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(target.port());
    auto bytes = target.address().to_v6().to_bytes();
    std::memcpy(&a->sin6_addr, bytes.data(), 16);
    len = sizeof *a;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&storage), len) != 0) {
    *error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TransferResult EchoTransfer(const tcp::endpoint& target, uint64_t transfer_id, std::span<const uint8_t> payload,
                            const EchoOrigin& origin, int receive_timeout_ms) {
  TransferResult result;
  auto start = std::chrono::steady_clock::now();
  int fd = Connect(target, &result.error);
  if (fd < 0) return result;

  uint8_t id_bytes[8];
  bytes::PutBe64(id_bytes, transfer_id);
  Sha256 sent_sha;
  sent_sha.Update(id_bytes);
  sent_sha.Update(payload);
  std::string expected = sent_sha.HexDigest();

  std::string send_error;
  std::thread sender([&] {
    auto send_all = [&](const uint8_t* p, size_t n) {
      while (n > 0) {
        ssize_t w = ::send(fd, p, std::min<size_t>(n, 1 << 20), MSG_NOSIGNAL);
        if (w < 0) {
          if (errno == EINTR) continue;
          send_error = std::string("send: ") + std::strerror(errno);
          return false;
        }
        p += w;
        n -= static_cast<size_t>(w);
        result.bytes_sent += static_cast<size_t>(w);
      }
      return true;
    };
    if (send_all(id_bytes, 8) && send_all(payload.data(), payload.size())) ::shutdown(fd, SHUT_WR);
  });

  Sha256 received_sha;
  std::vector<uint8_t> buffer(256 * 1024);
  std::string receive_error;
  for (;;) {
    if (receive_timeout_ms > 0) {
      pollfd p{fd, POLLIN, 0};
      int ready = ::poll(&p, 1, receive_timeout_ms);
      if (ready == 0) {
        receive_error = "no data for " + std::to_string(receive_timeout_ms) + " ms";
        ::shutdown(fd, SHUT_RDWR);  // unblocks the sender too
        break;
      }
    }
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      receive_error = std::string("recv: ") + std::strerror(errno);
      ::shutdown(fd, SHUT_RDWR);
      break;
    }
    received_sha.Update({buffer.data(), static_cast<size_t>(n)});
    result.bytes_received += static_cast<size_t>(n);
  }
  sender.join();
  ::close(fd);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // The origin records its digest just before closing; our EOF follows that.
  std::string at_origin = origin.ReceivedDigest(transfer_id);
  std::string echoed = received_sha.HexDigest();
  if (!send_error.empty()) result.error = send_error;
  else if (!receive_error.empty()) result.error = receive_error;
  else if (at_origin != expected) result.error = "client-to-server bytes differ (origin SHA-256 " + at_origin + ")";
  else if (echoed != expected) result.error = "server-to-client bytes differ";
  result.verified = result.error.empty();
  return result;
}

std::vector<uint8_t> RandomBytes(size_t size, uint64_t seed) {
  std::vector<uint8_t> data(size);
  std::mt19937_64 rng(seed);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  for (; i < size; ++i) data[i] = static_cast<uint8_t>(rng());
  return data;
}

std::vector<uint8_t> SampleText(size_t size, uint64_t seed) {
  static const char* kWords[] = {
      "the", "branch", "office", "datacenter", "proxy", "connection", "server", "client", "bytes", "window",
      "latency", "bandwidth", "mailbox", "exchange", "message", "attachment", "report", "of", "and", "to",
      "a", "in", "is", "for", "with", "on", "that", "by", "this", "wide", "area", "network", "optimization",
      "redundancy", "elimination", "chunk", "reference", "literal", "compression", "stream"};
  constexpr size_t kCount = sizeof kWords / sizeof kWords[0];
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> data;
  data.reserve(size + 16);
  size_t line = 0;
  while (data.size() < size) {
    const char* word = kWords[rng() % kCount];
    data.insert(data.end(), word, word + std::strlen(word));
    line += std::strlen(word) + 1;
    if (line > 72) {
      data.push_back('\n');
      line = 0;
    } else {
      data.push_back(' ');
    }
  }
  data.resize(size);
  return data;
}

}  // namespace wanopt::lab
