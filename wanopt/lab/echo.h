// The lab's origin server and client: a verified echo over TCP.
//
// A transfer sends an 8-byte transfer id and then the payload, and half-closes.
// The origin echoes every byte back as it arrives, hashes what it received, and
// closes when the client's FIN arrives. The client hashes what comes back. A
// transfer is verified when the origin's hash (client-to-server direction) and the
// client's hash of the echo (server-to-client) both equal the hash of what was sent.
//
// Blocking sockets and a thread per connection: simple enough to trust as the
// reference the proxies are judged against.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

namespace wanopt::lab {

class EchoOrigin {
 public:
  // Listens on 127.0.0.1 (an ephemeral port unless `port` is given).
  explicit EchoOrigin(uint16_t port = 0);
  ~EchoOrigin();
  EchoOrigin(const EchoOrigin&) = delete;
  EchoOrigin& operator=(const EchoOrigin&) = delete;

  boost::asio::ip::tcp::endpoint endpoint() const;
  // SHA-256 of everything received on the connection whose transfer id is `id`,
  // once that connection ended; empty if unknown.
  std::string ReceivedDigest(uint64_t id) const;

 private:
  void AcceptLoop();
  void Serve(int fd);

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::string> digests_;
  std::vector<std::thread> workers_;
  std::vector<int> open_fds_;
};

struct TransferResult {
  bool verified = false;
  std::string error;          // why not verified
  uint64_t bytes_sent = 0;    // id + payload
  uint64_t bytes_received = 0;
  double seconds = 0;
};

// Sends `payload` through `target` to an EchoOrigin and checks both directions.
// `receive_timeout_ms` bounds every wait for data (0: none).
TransferResult EchoTransfer(const boost::asio::ip::tcp::endpoint& target, uint64_t transfer_id,
                            std::span<const uint8_t> payload, const EchoOrigin& origin,
                            int receive_timeout_ms = 30000);

// Deterministic sample data: pseudo-random bytes, or English-like text.
std::vector<uint8_t> RandomBytes(size_t size, uint64_t seed);
std::vector<uint8_t> SampleText(size_t size, uint64_t seed);

}  // namespace wanopt::lab
