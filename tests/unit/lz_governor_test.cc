// The zstd level governor (dre/lz_governor.h) and level changes in a running stream.
#include <doctest/doctest.h>

#include "tests/unit/codec_test_util.h"
#include "wanopt/dre/codec.h"
#include "wanopt/dre/lz_governor.h"
#include "wanopt/dre/lz_params.h"

using namespace wanopt;
using namespace wanopt::dre;
using namespace wanopt::dre::test_helpers;
using std::chrono::milliseconds;

namespace {

constexpr uint64_t kPlenty = uint64_t{1} << 30;

// One decision period in which the up direction spent `encoding` ms encoding and
// `waiting` ms waiting for the WAN (frames of at most 10 ms each), ending at `now`;
// returns the level decided.
int Period(LzGovernor& g, LzGovernor::Clock::time_point& now, int encoding, int waiting) {
  g.AddEncoding(milliseconds(encoding));
  for (int left = waiting; left > 0; left -= 10) g.AddWanWait(milliseconds(std::min(left, 10)));
  now += milliseconds(encoding + waiting);
  return g.Decide(now);
}

}  // namespace

TEST_CASE("lz governor: a WAN-bound connection climbs to the ceiling, an encoder-bound one to the floor") {
  LzMemoryBudget budget(kPlenty);
  LzGovernor g(3, 19, &budget);
  LzGovernor::Clock::time_point now{};
  CHECK(g.level() == 3);
  static_assert(LzGovernor::kDecisionPeriod == std::chrono::milliseconds(250));
  CHECK(Period(g, now, 50, 100) == 3);   // less than a decision period of activity decides nothing
  CHECK(Period(g, now, 100, 400) == 6);  // then mostly waiting for the WAN: one step up
  CHECK(Period(g, now, 300, 700) == 9);
  CHECK(Period(g, now, 300, 700) == 12);
  CHECK(Period(g, now, 300, 700) == 15);
  CHECK(Period(g, now, 300, 700) == 18);
  CHECK(Period(g, now, 300, 700) == 19);
  CHECK(Period(g, now, 300, 700) == 19);  // the ceiling
  CHECK(budget.available() < kPlenty);
  CHECK(Period(g, now, 500, 500) == 19);  // balanced: stays
  CHECK(Period(g, now, 800, 200) == 19);  // frames still wait now and then: the WAN is kept busy
  CHECK(Period(g, now, 900, 100) == 16);  // mostly encoding: one step down
  CHECK(Period(g, now, 900, 100) == 13);
  CHECK(Period(g, now, 900, 100) == 10);
  CHECK(Period(g, now, 900, 100) == 7);
  CHECK(Period(g, now, 900, 100) == 4);
  CHECK(Period(g, now, 900, 100) == 3);  // the floor
  CHECK(Period(g, now, 900, 100) == 3);
  CHECK(budget.available() == kPlenty);  // at the floor nothing is borrowed
  CHECK(g.peak() == 19);
}

TEST_CASE("lz governor: a level that proved too slow is not tried again for a while") {
  LzMemoryBudget budget(kPlenty);
  LzGovernor g(3, 19, &budget);
  LzGovernor::Clock::time_point now{};
  REQUIRE(Period(g, now, 100, 900) == 6);
  REQUIRE(Period(g, now, 100, 900) == 9);
  REQUIRE(Period(g, now, 900, 100) == 6);  // 9 was too slow
  CHECK(Period(g, now, 100, 900) == 6);    // WAN-bound again, but 9 is still held against
  CHECK(Period(g, now, 100, 900) == 6);
  now += LzGovernor::kHoldTooSlow;
  CHECK(Period(g, now, 100, 900) == 9);  // the hold expired: 9 is tried again
}

TEST_CASE("lz governor: a step up needs a quarter second of waiting, a step down a whole second without") {
  LzMemoryBudget budget(kPlenty);
  LzGovernor g(3, 19, &budget);
  LzGovernor::Clock::time_point now{};
  REQUIRE(Period(g, now, 50, 200) == 6);  // a quarter second, mostly waiting
  CHECK(Period(g, now, 250, 0) == 6);     // the buffers the last level drained fill up: no verdict yet
  CHECK(Period(g, now, 500, 0) == 6);
  CHECK(Period(g, now, 250, 0) == 3);     // a second without waiting: too slow
}

TEST_CASE("lz governor: over a slow WAN one frame waits seconds, and a burst without waits is no verdict") {
  LzMemoryBudget budget(kPlenty);
  LzGovernor g(3, 19, &budget);
  LzGovernor::Clock::time_point now{};
  g.AddEncoding(milliseconds(60));
  g.AddWanWait(std::chrono::seconds(6));  // one frame: the buffers were full for 6 s
  now += std::chrono::seconds(6);
  REQUIRE(g.Decide(now) == 6);
  CHECK(Period(g, now, 1500, 0) == 6);   // then they drained at once: 1.5 s of frames without a wait
  CHECK(Period(g, now, 9000, 0) == 6);   // 10.5 s: still less than four of those 6 s waits
  CHECK(Period(g, now, 14000, 0) == 3);  // 24.5 s without a wait: the encoder is the bottleneck
}

TEST_CASE("lz governor: the box-wide memory budget bounds the levels above the configured one") {
  uint64_t one_step = LzContextBytes(6, kLzWindowLog) - LzContextBytes(3, kLzWindowLog);
  LzMemoryBudget budget(one_step + one_step / 2);
  LzGovernor a(3, 19, &budget), b(3, 19, &budget);
  LzGovernor::Clock::time_point now{};
  CHECK(Period(a, now, 100, 900) == 6);
  CHECK(Period(b, now, 100, 900) == 3);  // spent: b stays at its floor
  CHECK(Period(a, now, 100, 900) == 6);  // and a cannot climb further
  a.Reset();                             // a went idle: its share comes back
  CHECK(a.level() == 3);
  CHECK(Period(b, now, 100, 900) == 6);
  {
    LzGovernor c(3, 19, &budget);  // a connection that ends gives back what it holds
    CHECK(Period(c, now, 100, 900) == 3);
  }
  CHECK(budget.available() == one_step / 2);
  LzGovernor off(3, 19, nullptr);  // no budget: never adapts
  CHECK(Period(off, now, 0, 1000) == 3);
  LzGovernor fixed(5, 5, &budget);  // lz_level_max = lz_level: never adapts
  CHECK(Period(fixed, now, 0, 1000) == 5);
}

TEST_CASE("lz contexts: tables sized for the window keep a level-19 context far below zstd's default for 19") {
  CHECK(LzContextBytes(3, kLzWindowLog) < (uint64_t{4} << 20));
  CHECK(LzContextBytes(19, kLzWindowLog) < (uint64_t{24} << 20));
  CHECK(LzContextBytes(19, kLzWindowLog) > LzContextBytes(9, kLzWindowLog));
  CHECK(LzContextBytes(12, kLzWideWindowLog) > LzContextBytes(12, kLzWindowLog));
  CHECK(LzContextBytes(19, kLzWideWindowLog) < (uint64_t{128} << 20));
}

TEST_CASE("lz governor: raised levels get the peer's widest window, the configured level 1 MiB") {
  LzMemoryBudget budget(kPlenty);
  LzGovernor g(3, 19, &budget);
  LzGovernor::Clock::time_point now{};
  CHECK(g.window_log() == kLzWindowLog);
  REQUIRE(Period(g, now, 100, 900) == 6);
  CHECK(g.window_log() == kLzWindowLog);  // an older peer: 1 MiB at every level
  g.set_peer_window_log(kLzWideWindowLog);
  CHECK(g.window_log() == kLzWideWindowLog);
  uint64_t before = budget.available();
  REQUIRE(Period(g, now, 100, 900) == 9);
  CHECK(kPlenty - budget.available() == LzContextBytes(9, kLzWideWindowLog) - LzContextBytes(3, kLzWindowLog));
  CHECK(budget.available() < before);
  g.set_peer_window_log(40);  // more than this version uses: clamped
  CHECK(g.window_log() == kLzWideWindowLog);
  g.Reset();
  CHECK(g.window_log() == kLzWindowLog);
  CHECK(budget.available() == kPlenty);
}

TEST_CASE("codec: level changes in a running stream restart it and every byte still decodes") {
  Box a("a"), b("b");
  CodecOptions options;
  options.dre = false;  // first-pass bytes: only LZ shrinks them
  Link link(a, b, options);
  auto data = Text(6 << 20, 11);
  Buffer out;
  int resets = 0;
  int levels[] = {3, 9, 19, 12, 1, 6};
  int windows[] = {kLzWindowLog, kLzWideWindowLog, kLzWideWindowLog, kLzWindowLog, kLzWindowLog, kLzWideWindowLog};
  size_t piece = data.size() / std::size(levels);
  for (size_t i = 0; i < std::size(levels); ++i) {
    link.encoder.set_lz_level(levels[i], windows[i]);
    CHECK(link.encoder.lz_level() == levels[i]);
    link.encoder.Append(std::span<const uint8_t>(data).subspan(i * piece, i + 1 == std::size(levels) ? data.size() - i * piece : piece));
    link.encoder.Flush();
    while (link.encoder.HasPayload()) {
      Buffer payload;
      uint8_t flags = 0;
      link.encoder.TakePayload(payload, &flags);
      if (flags & kFlagLzReset) ++resets;
      REQUIRE(link.decoder.Decode(flags, payload.span(), out) == Decoder::Status::kDone);
    }
  }
  CHECK(resets == static_cast<int>(std::size(levels)));  // the first frame, then one per change
  CHECK(std::equal(out.span().begin(), out.span().end(), data.begin(), data.end()));
}
