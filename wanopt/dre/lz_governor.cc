#include "wanopt/dre/lz_governor.h"

#include <algorithm>

#include "wanopt/dre/lz_params.h"

namespace wanopt::dre {

bool LzMemoryBudget::TryTake(uint64_t bytes) {
  int64_t want = static_cast<int64_t>(bytes);
  int64_t have = available_.load(std::memory_order_relaxed);
  while (have >= want) {
    if (available_.compare_exchange_weak(have, have - want, std::memory_order_relaxed)) return true;
  }
  return false;
}

uint64_t LzMemoryBudget::available() const {
  return static_cast<uint64_t>(std::max<int64_t>(0, available_.load(std::memory_order_relaxed)));
}

LzGovernor::LzGovernor(int floor, int ceiling, LzMemoryBudget* budget)
    : floor_(floor),
      ceiling_(budget ? ceiling : floor),
      budget_(budget),
      level_(floor),
      peak_(floor),
      peer_window_log_(kLzWindowLog) {}

LzGovernor::~LzGovernor() {
  if (taken_) budget_->Give(taken_);
}

void LzGovernor::set_peer_window_log(int window_log) {
  peer_window_log_ = std::clamp(window_log, kLzWindowLog, kLzWideWindowLog);
}

int LzGovernor::WindowLogAt(int level) const { return level > floor_ ? peer_window_log_ : kLzWindowLog; }

int LzGovernor::Decide(Clock::time_point now) {
  Clock::duration active = encoding_ + waiting_;
  if (active < kDecisionPeriod) return level_;
  // One step up costs about twice the encoding time: worth it when frames waited
  // twice as long as they took to encode. The socket buffers keep the WAN busy while
  // the next frame is encoded, so the encoder is the bottleneck only when frames
  // hardly ever wait, and only over a longer look: right after a step down, the
  // buffers the slower level drained fill up again without a wait; and over a slow
  // WAN the buffers drain in bursts (one frame waits seconds, the next several
  // none), so the look is at least a few of the longest waits.
  Clock::duration lower_after = std::max<Clock::duration>(kLowerAfter, 4 * std::max(longest_wait_, previous_longest_wait_));
  bool wan_bound = waiting_ >= 2 * encoding_;
  bool encoder_bound = active >= lower_after && 8 * waiting_ <= encoding_;
  if (!wan_bound && !encoder_bound && active < lower_after) return level_;  // look longer
  last_encoding_ = encoding_;
  last_waiting_ = waiting_;
  encoding_ = waiting_ = {};
  previous_longest_wait_ = longest_wait_;
  longest_wait_ = {};
  if (wan_bound && level_ < ceiling_) {
    int next = std::min(ceiling_, level_ + kStep);
    // Below a level that proved too slow the connection stays where it stepped down
    // to: every change restarts the stream, and probing levels in between costs more
    // history than it gains.
    if (too_slow_ && now < too_slow_until_) next = std::min(next, too_slow_ - kStep);
    if (next > level_) MoveTo(next);
  } else if (encoder_bound && level_ > floor_) {
    too_slow_ = level_;
    too_slow_until_ = now + kHoldTooSlow;
    MoveTo(std::max(floor_, level_ - kStep));
  }
  return level_;
}

void LzGovernor::AddWanWait(Clock::duration d) {
  waiting_ += d;
  longest_wait_ = std::max(longest_wait_, d);
}

void LzGovernor::Reset() {
  encoding_ = waiting_ = {};
  longest_wait_ = previous_longest_wait_ = {};
  if (level_ != floor_) MoveTo(floor_);
}

void LzGovernor::MoveTo(int level) {
  // The budget pays for what a level needs beyond the configured one.
  uint64_t base = LzContextBytes(floor_, kLzWindowLog);
  uint64_t full = LzContextBytes(level, WindowLogAt(level));
  uint64_t need = level > floor_ ? full - std::min(base, full) : 0;
  if (need > taken_) {
    if (!budget_->TryTake(need - taken_)) return;  // spent: stay
  } else if (need < taken_) {
    budget_->Give(taken_ - need);
  }
  taken_ = need;
  level_ = level;
  peak_ = std::max(peak_, level);
}

}  // namespace wanopt::dre
