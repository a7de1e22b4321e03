#include <doctest/doctest.h>

#include "util/log_rate_limit.h"

using namespace wanopt;
using Clock = log::RateLimit::Clock;

TEST_CASE("log::RateLimit: N lines a second per key, the rest counted and reported with the next line") {
  log::RateLimit limit(3);
  Clock::time_point t0 = Clock::now();
  uint64_t suppressed = 99;
  for (int i = 0; i < 3; ++i) {
    CHECK(limit.Allow("rejected", &suppressed, t0 + std::chrono::milliseconds(i)));
    CHECK(suppressed == 0);
  }
  // A flood within the second: refused, counted.
  for (int i = 0; i < 1000; ++i) CHECK_FALSE(limit.Allow("rejected", &suppressed, t0 + std::chrono::milliseconds(100)));
  // Another key has its own budget.
  CHECK(limit.Allow("accept", &suppressed, t0 + std::chrono::milliseconds(100)));
  CHECK(suppressed == 0);
  // The next second: allowed again, with the count of what was held back, once.
  CHECK(limit.Allow("rejected", &suppressed, t0 + std::chrono::milliseconds(1000)));
  CHECK(suppressed == 1000);
  CHECK(log::Suppressed(suppressed) == " (1000 more suppressed)");
  CHECK(limit.Allow("rejected", &suppressed, t0 + std::chrono::milliseconds(1001)));
  CHECK(suppressed == 0);
  CHECK(log::Suppressed(0).empty());
}

TEST_CASE("log::RateLimit: the key table stays bounded") {
  log::RateLimit limit(1);
  uint64_t suppressed = 0;
  Clock::time_point t0 = Clock::now();
  for (int i = 0; i < 10000; ++i) CHECK(limit.Allow("key " + std::to_string(i), &suppressed, t0));
  // Cleared when full: an old key starts over rather than the table growing.
  CHECK(limit.Allow("key 0", &suppressed, t0));
}
