// Session affinity for a module's admission control: for each (client, server)
// session, whether the module lets it pass through whole, until that decision
// expires. A client's session is several TCP connections (MAPI: the endpoint mapper,
// then the ports it hands out; RPC over HTTP: the IN and OUT channels), decided once
// by its first one, so that a session is never half optimized.
//
// Bounded by sweeps: each time the table has doubled since the last one (from
// `sweep_floor` entries up), the expired entries go. A sweep is one pass over the
// table, so its cost is a constant per new session, and the table holds at most
// about twice the sessions decided within their TTL. (Sweeping on every call once
// past a fixed size made each new connection a full pass as soon as more sessions
// than that were alive: 7 ms per connection at 150,000.)
//
// IPv4 and IPv6 addresses. Not thread-safe: the module holds its own lock around
// every call.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>

#include <boost/asio/ip/address.hpp>

namespace wanopt::protocols {

class AffinityTable {
 public:
  using Clock = std::chrono::steady_clock;
  using Address = boost::asio::ip::address;
  struct Entry {
    bool pass_through = false;
    Clock::time_point expires{};  // a new entry has expired already
  };

  explicit AffinityTable(size_t sweep_floor = size_t{64} << 10) : sweep_floor_(sweep_floor), sweep_at_(sweep_floor) {}

  // The entry of (client, server); a new (expired) one if there was none. The
  // reference is valid until the next call to At.
  Entry& At(const Address& client, const Address& server, Clock::time_point now) {
    if (entries_.size() >= sweep_at_) {
      std::erase_if(entries_, [&](const auto& e) { return e.second.expires < now; });
      sweep_at_ = std::max(sweep_floor_, 2 * entries_.size());
      ++sweeps_;
    }
    return entries_[{client, server}];
  }

  // The entry of (client, server) if there is one (expired or not).
  const Entry* Find(const Address& client, const Address& server) const {
    auto it = entries_.find({client, server});
    return it == entries_.end() ? nullptr : &it->second;
  }

  size_t size() const { return entries_.size(); }
  size_t sweeps() const { return sweeps_; }

 private:
  const size_t sweep_floor_;
  size_t sweep_at_;
  size_t sweeps_ = 0;
  std::map<std::pair<Address, Address>, Entry> entries_;
};

}  // namespace wanopt::protocols
