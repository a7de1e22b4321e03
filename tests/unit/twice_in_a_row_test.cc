// What a box holds against a server only the second time in a row
// (wanopt/intercept/twice_in_a_row.h).
#include <doctest/doctest.h>

#include "wanopt/intercept/twice_in_a_row.h"

using wanopt::intercept::TwiceInARow;
using std::chrono::minutes;
using std::chrono::seconds;

namespace {
const auto kServer = boost::asio::ip::make_address("198.18.2.10");
const auto kOther = boost::asio::ip::make_address("2001:2:0:2::10");
}  // namespace

TEST_CASE("the first time a server is suspected, the second time in a row it is remembered, for the memory") {
  TwiceInARow memory(minutes(60));
  TwiceInARow::Clock::time_point t0{};
  CHECK_FALSE(memory.Saw(kServer, t0, t0 + seconds(1)));
  CHECK(memory.Suspected(kServer, t0 + seconds(1)));
  CHECK_FALSE(memory.Remembered(kServer, t0 + seconds(1)));
  CHECK_FALSE(memory.Suspected(kOther, t0 + seconds(1)));
  CHECK(memory.Saw(kServer, t0 + seconds(2), t0 + seconds(3)));
  CHECK(memory.Remembered(kServer, t0 + seconds(3)));
  CHECK_FALSE(memory.Suspected(kServer, t0 + seconds(3)));
  CHECK(memory.Remembered(kServer, t0 + seconds(3) + minutes(59)));
  CHECK_FALSE(memory.Remembered(kServer, t0 + seconds(4) + minutes(60)));
}

TEST_CASE("probes under way when the first time was seen share its cause: not a second time") {
  TwiceInARow memory(minutes(60));
  TwiceInARow::Clock::time_point t0{};
  CHECK_FALSE(memory.Saw(kServer, t0, t0 + seconds(1)));
  // Started before the first was known (a burst of lost packets): still suspected.
  CHECK_FALSE(memory.Saw(kServer, t0 + seconds(0), t0 + seconds(2)));
  CHECK(memory.Suspected(kServer, t0 + seconds(2)));
  // Started the moment the first was known: after it, so the second time.
  CHECK(memory.Saw(kServer, t0 + seconds(1), t0 + seconds(3)));
}

TEST_CASE("a probe that showed the opposite ends the suspicion, not a remembered server") {
  TwiceInARow memory(minutes(60));
  TwiceInARow::Clock::time_point t0{};
  CHECK_FALSE(memory.Saw(kServer, t0, t0 + seconds(1)));
  memory.Cleared(kServer);
  CHECK_FALSE(memory.Suspected(kServer, t0 + seconds(2)));
  CHECK_FALSE(memory.Saw(kServer, t0 + seconds(3), t0 + seconds(4)));  // the first time again
  CHECK(memory.Saw(kServer, t0 + seconds(5), t0 + seconds(6)));
  memory.Cleared(kServer);
  CHECK(memory.Remembered(kServer, t0 + seconds(7)));
}

TEST_CASE("a suspicion older than the memory is forgotten: the next time is a first time") {
  TwiceInARow memory(minutes(10));
  TwiceInARow::Clock::time_point t0{};
  CHECK_FALSE(memory.Saw(kServer, t0, t0));
  CHECK_FALSE(memory.Saw(kServer, t0 + minutes(11), t0 + minutes(11)));
  CHECK(memory.Suspected(kServer, t0 + minutes(11)));
  memory.Expire(t0 + minutes(22));
  CHECK_FALSE(memory.Suspected(kServer, t0 + minutes(12)));  // expired entries are gone, whatever the time asked
  CHECK_FALSE(memory.Saw(kServer, t0 + minutes(22), t0 + minutes(22)));
}
