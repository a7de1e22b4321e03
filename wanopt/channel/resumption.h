// Private to wanopt/channel/: the opening side's TLS 1.3 session tickets, one per
// peer, so that a box authenticates each peer with certificates once per lifetime
// and resumes from then on (an ECDHE exchange and no certificate work: with
// OpenSSL 3.0 that is about a third of the CPU of a full handshake, which was most
// of what a new optimized connection cost).
//
// Tickets come only from full handshakes (the accepting side issues none on a
// resumed one), so a ticket's age is that of the certificate check behind it, and
// one is offered only while that is younger than kLifetime. The accepting side keeps
// each session in OpenSSL's cache for the same time (SSL_CTX_set_timeout in
// secure_context.cc), in memory only: a restarted box, or one with a new CA, makes
// every peer authenticate it in full again.
//
// The cache never shares a session object with a connection: it keeps copies, and
// hands out copies. OpenSSL marks a session not resumable when a connection that
// used it ends without close_notify (a reset relayed, a peer gone), and a shared
// ticket would then be offered and ignored until the next full handshake replaced it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include <openssl/ssl.h>

namespace wanopt::channel::tls_internal {

class ResumptionCache {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kLifetime{600};
  // Peers remembered at most; past it the one authenticated longest ago goes.
  static constexpr size_t kMaxPeers = 4096;

  struct Ticket {
    SSL_SESSION* session = nullptr;  // nullptr: none; else a copy the caller owns
    Clock::time_point authenticated_at;
  };

  ResumptionCache() = default;
  ~ResumptionCache();
  ResumptionCache(const ResumptionCache&) = delete;
  ResumptionCache& operator=(const ResumptionCache&) = delete;

  // A copy of the newest ticket for `key`, if its full handshake was less than
  // kLifetime before `now`. Several connections may resume from one ticket at once.
  Ticket Find(const std::string& key, Clock::time_point now);
  // Keeps a copy of `session` as key's newest ticket, replacing the one before.
  void Keep(const std::string& key, const SSL_SESSION* session, Clock::time_point authenticated_at);
  // Drops key's ticket: its handshake failed, the next one is a full one.
  void Forget(const std::string& key);
  size_t size();

 private:
  struct Entry {
    SSL_SESSION* session;
    Clock::time_point authenticated_at;
  };

  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace wanopt::channel::tls_internal
