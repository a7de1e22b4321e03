// Chooses the zstd level of one direction of one connection from where its time goes.
//
// A first pass over a slow WAN sends new bytes, which only compression shrinks, and
// the box's CPU idles while the inner channel's socket drains: a higher level would
// send fewer bytes in the same time. Over a fast WAN the encoder is the bottleneck
// and a high level only slows the transfer. The session reports, for its up
// direction, how long it spent encoding (reading the LAN side, the modules, DRE, zstd)
// and how long each encoded frame waited to be written to the inner channel (the WAN
// socket's buffer was full). Frames waited twice as long as they took to encode over
// a quarter second of such activity -> one step up; they hardly waited over a whole
// second, and over at least four of the longest single waits lately (a slow WAN
// drains the buffers in bursts) -> one step down (the WAN may idle), and the level
// that proved too slow is not tried again for a while. It never goes below the
// configured level ([dre] lz_level: what a fast WAN gets) nor above [dre] lz_level_max.
//
// A raised level also gets the wider window when the peer's decoder takes it
// (lz_params.h): on text that is worth more than the level itself.
//
// Memory: a zstd context at level 3 with a 1 MiB window holds ~2.5 MiB, at level 12
// with an 8 MiB window tens of MiB. Levels above the configured one are paid from
// a box-wide budget ([dre] lz_adaptive_memory_mb): when it is spent, connections stay
// where they are. The governor gives its share back when it steps down, when the
// connection goes idle (Reset) and when it is destroyed.
//
// A level change restarts the zstd stream (the encoder's set_lz_level), so the
// governor changes level at most once per decision period of activity (and only when
// a frame's write completes): at 20 Mbit/s a transfer climbs from 3 to 12 in about
// 2.4 s, at 2 Mbit/s a step takes several seconds.
//
// Not thread-safe (one per direction, the session's loop); the budget is.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace wanopt::dre {

// Box-wide: the bytes zstd contexts may hold beyond what the configured level needs.
class LzMemoryBudget {
 public:
  explicit LzMemoryBudget(uint64_t bytes) : available_(static_cast<int64_t>(bytes)) {}
  // Takes `bytes` if that many are left.
  bool TryTake(uint64_t bytes);
  void Give(uint64_t bytes) { available_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed); }
  uint64_t available() const;

 private:
  std::atomic<int64_t> available_;
};

class LzGovernor {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kDecisionPeriod = std::chrono::milliseconds(250);
  static constexpr Clock::duration kLowerAfter = std::chrono::seconds(1);
  static constexpr Clock::duration kHoldTooSlow = std::chrono::seconds(30);
  static constexpr int kStep = 3;

  // `budget` outlives the governor; null: no level above `floor` is ever chosen.
  // REQUIRES: 1 <= floor <= ceiling <= 19.
  LzGovernor(int floor, int ceiling, LzMemoryBudget* budget);
  ~LzGovernor();
  LzGovernor(const LzGovernor&) = delete;
  LzGovernor& operator=(const LzGovernor&) = delete;

  // The largest window log the peer's decoder takes (its hello or hello-ack); until
  // told, kLzWindowLog. Applies from the next level change.
  void set_peer_window_log(int window_log);

  void AddEncoding(Clock::duration d) { encoding_ += d; }
  // One encoded frame waited `d` for its write.
  void AddWanWait(Clock::duration d);
  // The level to use from now on: a new one only when a decision period of activity
  // is complete (the caller then calls the encoder's set_lz_level).
  int Decide(Clock::time_point now);
  // The connection went idle: back to the configured level, budget given back, the
  // measurements cleared.
  void Reset();

  int level() const { return level_; }
  // The window log that goes with level(): 1 MiB at the configured level, the peer's
  // widest above it.
  int window_log() const { return WindowLogAt(level_); }
  int peak() const { return peak_; }
  // What the last decision was made on.
  Clock::duration last_encoding() const { return last_encoding_; }
  Clock::duration last_waiting() const { return last_waiting_; }

 private:
  void MoveTo(int level);
  int WindowLogAt(int level) const;

  const int floor_, ceiling_;
  LzMemoryBudget* budget_;
  int level_;
  int peak_;
  int peer_window_log_;
  uint64_t taken_ = 0;  // from the budget, for level_
  Clock::duration encoding_{}, waiting_{};
  Clock::duration last_encoding_{}, last_waiting_{};
  Clock::duration longest_wait_{}, previous_longest_wait_{};  // one frame's, this decision and the last
  int too_slow_ = 0;  // a level at which the encoder was the bottleneck (0: none) ...
  Clock::time_point too_slow_until_{};  // ... not tried again before this
};

}  // namespace wanopt::dre
