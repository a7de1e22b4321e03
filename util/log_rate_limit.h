// A bound on repeated log lines: at most `per_second` lines a second for each key
// (a kind of event, like "status: rejected request"), so that a flood of rejected
// connections or failing accepts costs a few lines, not one line per event.
//
//   static log::RateLimit limit(5);
//   uint64_t suppressed = 0;
//   if (limit.Allow("auth", &suppressed))
//     WANOPT_LOG(kWarn, "datacenter") << "..." << log::Suppressed(suppressed);
//
// The lines a key lost are counted and reported with the next line it writes
// ("(K more suppressed)"), so nothing is lost silently. Thread-safe. Keys are a
// fixed set of kinds chosen by the caller, never addresses (an attacker choosing
// addresses must not grow the table): at most 256 keys are kept, and the table
// is cleared when it fills.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace wanopt::log {

class RateLimit {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RateLimit(unsigned per_second) : per_second_(per_second) {}

  // True when a line for `key` may be written now. Then *suppressed is the number of
  // lines for `key` refused since the last one allowed (0 when none).
  bool Allow(std::string_view key, uint64_t* suppressed, Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mu_);
    auto it = keys_.find(key);
    if (it == keys_.end()) {
      if (keys_.size() >= kMaxKeys) keys_.clear();
      it = keys_.emplace(std::string(key), State{}).first;
    }
    State& s = it->second;
    if (now - s.window_start >= std::chrono::seconds(1)) {
      s.window_start = now;
      s.in_window = 0;
    }
    if (s.in_window >= per_second_) {
      ++s.suppressed;
      return false;
    }
    ++s.in_window;
    *suppressed = s.suppressed;
    s.suppressed = 0;
    return true;
  }

 private:
  static constexpr size_t kMaxKeys = 256;
  struct State {
    Clock::time_point window_start{};
    unsigned in_window = 0;
    uint64_t suppressed = 0;
  };
  const unsigned per_second_;
  std::mutex mu_;
  std::map<std::string, State, std::less<>> keys_;
};

// " (K more suppressed)" after a line that follows suppressed ones, else "".
inline std::string Suppressed(uint64_t count) {
  return count ? " (" + std::to_string(count) + " more suppressed)" : std::string();
}

}  // namespace wanopt::log
