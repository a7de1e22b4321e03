// When to retry a listener's failed accept, and whether to say so. Out of
// descriptors, the waiting connection stays in the listen queue and the listener
// stays ready: retrying at once would spin a core and log a line each time. The
// delay doubles while the failures last (10 ms to 1 s) and the log lines are bounded
// (log::RateLimit, 5 a second); one accept that succeeds starts over.
//
//   AcceptBackoff backoff;                    // one per listener
//   on failure:  auto retry = backoff.Failed();
//                if (retry.log) WANOPT_LOG(...) << "retrying in " << retry.delay.count() << " ms"
//                                               << log::Suppressed(retry.suppressed);
//                timer.expires_after(retry.delay) ...
//   on success:  backoff.Succeeded();
//
// Not thread-safe: used on the listener's own thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "util/log_rate_limit.h"

namespace wanopt {

class AcceptBackoff {
 public:
  static constexpr std::chrono::milliseconds kMin{10}, kMax{1000};

  struct Retry {
    std::chrono::milliseconds delay;
    bool log = false;         // write a line for this failure
    uint64_t suppressed = 0;  // failures not logged since the last line
  };

  Retry Failed() {
    delay_ = std::clamp(delay_ * 2, kMin, kMax);
    Retry retry{delay_};
    retry.log = log_.Allow("accept", &retry.suppressed);
    return retry;
  }

  void Succeeded() { delay_ = std::chrono::milliseconds(0); }

 private:
  std::chrono::milliseconds delay_{0};
  log::RateLimit log_{5};
};

}  // namespace wanopt
