// What a box holds against a server only once it has seen it twice in a row.
//
// Two things a probe can see look the same the first time as one lost packet: a
// server that answers only the SYN without option 0x21 (or a lost SYN carrying it),
// and a server that answers the box's own address but not the client's (asymmetric
// routing, or a lost SYN from the client's address). Holding either against a
// server changes every connection to it for the memory (option_drop_memory or
// peer_memory, an hour by default: not optimized towards it; the server sees the
// box's address instead of the client's), so one lost packet must not do it: the
// first time the server is suspected, the second time in a row it is remembered.
// "In a row" means seen by a probe started no earlier than the first time was known
// (probes under way at that moment share its cause: a path that lost packets for a
// second), with no probe since that showed the opposite (Cleared).
//
// A pure value (the caller supplies the clock): tests/unit/twice_in_a_row_test.cc.
// Threading: none of its own; the interceptor's loop only.
#pragma once

#include <chrono>
#include <map>

#include <boost/asio/ip/address.hpp>

namespace wanopt::intercept {

class TwiceInARow {
 public:
  using Clock = std::chrono::steady_clock;
  using Server = boost::asio::ip::address;

  // `memory`: how long a suspicion, and a remembered server, lasts.
  explicit TwiceInARow(Clock::duration memory) : memory_(memory) {}

  // A probe started at `started` saw it at `now`. True: the second time in a row,
  // the server is now remembered. False: the first time, the server is suspected.
  bool Saw(const Server& server, Clock::time_point started, Clock::time_point now) {
    auto it = suspects_.find(server);
    if (it == suspects_.end() || it->second.until < now) {
      suspects_[server] = {now, now + memory_};
      return false;
    }
    if (started < it->second.seen) return false;  // under way when the first was seen: the same event
    suspects_.erase(it);
    remembered_[server] = now + memory_;
    return true;
  }

  // A probe showed the opposite: the suspicion ends (a remembered server stays).
  void Cleared(const Server& server) { suspects_.erase(server); }

  bool Suspected(const Server& server, Clock::time_point now) const {
    auto it = suspects_.find(server);
    return it != suspects_.end() && it->second.until > now;
  }
  bool Remembered(const Server& server, Clock::time_point now) const {
    auto it = remembered_.find(server);
    return it != remembered_.end() && it->second > now;
  }

  // Drops what has expired by `now` (the interceptor's sweep).
  void Expire(Clock::time_point now) {
    std::erase_if(suspects_, [now](const auto& e) { return e.second.until < now; });
    std::erase_if(remembered_, [now](const auto& e) { return e.second < now; });
  }

 private:
  struct Suspect {
    Clock::time_point seen;   // when the first time was known
    Clock::time_point until;  // forgotten after
  };

  Clock::duration memory_;
  std::map<Server, Suspect> suspects_;
  std::map<Server, Clock::time_point> remembered_;
};

}  // namespace wanopt::intercept
