#include "wanopt/channel/resumption.h"

#include <algorithm>

namespace wanopt::channel::tls_internal {

ResumptionCache::~ResumptionCache() {
  for (auto& [key, entry] : entries_) SSL_SESSION_free(entry.session);
}

ResumptionCache::Ticket ResumptionCache::Find(const std::string& key, Clock::time_point now) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return {};
  if (now - it->second.authenticated_at >= kLifetime) {
    SSL_SESSION_free(it->second.session);
    entries_.erase(it);
    return {};
  }
  return {SSL_SESSION_dup(it->second.session), it->second.authenticated_at};
}

void ResumptionCache::Keep(const std::string& key, const SSL_SESSION* original, Clock::time_point authenticated_at) {
  SSL_SESSION* session = SSL_SESSION_dup(original);
  if (session == nullptr) return;  // out of memory: the next handshake is a full one
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    SSL_SESSION_free(it->second.session);
    it->second = {session, authenticated_at};
    return;
  }
  if (entries_.size() >= kMaxPeers) {
    // Rare (a new peer past thousands), so a scan rather than a second index.
    auto oldest = std::min_element(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
      return a.second.authenticated_at < b.second.authenticated_at;
    });
    SSL_SESSION_free(oldest->second.session);
    entries_.erase(oldest);
  }
  entries_.emplace(key, Entry{session, authenticated_at});
}

void ResumptionCache::Forget(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  SSL_SESSION_free(it->second.session);
  entries_.erase(it);
}

size_t ResumptionCache::size() {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace wanopt::channel::tls_internal
