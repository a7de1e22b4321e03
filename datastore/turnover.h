// How fast a store takes new chunks: how many sequence numbers and bytes it stored
// over about the last `window`. ChunkStore::Lasting needs it: a chunk this box names
// must outlive the peer's request for it, and how long that is depends on the rate
// chunks arrive at, not on the store's size alone.
//
// Record is called under one lock (the store's queue lock, for each chunk queued);
// seqs() and bytes() by any thread.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace wanopt::datastore {

class Turnover {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Turnover(Clock::duration window) : window_(window) {}

  // The store has taken sequence number `seq`, `total_bytes` since it opened, at
  // `now`. REQUIRES: calls serialized, in the order of `now`.
  void Record(Clock::time_point now, uint64_t seq, uint64_t total_bytes) {
    if (count_ == 0 || now - ring_[newest_].at >= window_ / 32) {
      newest_ = count_ == 0 ? 0 : (newest_ + 1) % ring_.size();
      ring_[newest_] = {now, seq, total_bytes};
      if (count_ < ring_.size()) ++count_;
      ChooseBases(now);  // once per sample, not per chunk: Record is on the Put path
    }
    const Sample& base = ring_[base_];
    uint64_t seqs = seq - base.seq, bytes = total_bytes - base.bytes;
    if (recent_) {
      // Scaled by the time it really spans (after a pause, far more than an eighth).
      const Sample& recent = ring_[*recent_];
      double scale = std::chrono::duration<double>(window_) / std::chrono::duration<double>(now - recent.at);
      seqs = std::max(seqs, static_cast<uint64_t>(static_cast<double>(seq - recent.seq) * scale));
      bytes = std::max(bytes, static_cast<uint64_t>(static_cast<double>(total_bytes - recent.bytes) * scale));
    }
    seqs_.store(seqs, std::memory_order_relaxed);
    bytes_.store(bytes, std::memory_order_relaxed);
  }

  // Sequence numbers and bytes stored over about the last window.
  uint64_t seqs() const { return seqs_.load(std::memory_order_relaxed); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  struct Sample {
    Clock::time_point at;
    uint64_t seq = 0, bytes = 0;
  };
  // What Record measures from, chosen when a sample is taken (until the next one,
  // a window/32 later, the choice stays: both only grow older, never too young).
  // Over the whole window: from the newest sample at least a window old (before a
  // pause, the last one before it); with none that old yet, from the oldest. And a
  // burst that began less than a window ago, at the rate since the newest sample an
  // eighth of a window old, as if it went on for a whole one.
  void ChooseBases(Clock::time_point now) {
    base_ = (newest_ + ring_.size() - (count_ - 1)) % ring_.size();
    recent_.reset();
    for (size_t back = 0; back < count_; ++back) {
      size_t at = (newest_ + ring_.size() - back) % ring_.size();
      if (!recent_ && now - ring_[at].at >= window_ / 8) recent_ = at;
      if (now - ring_[at].at >= window_) {
        base_ = at;
        break;
      }
    }
  }

  const Clock::duration window_;
  std::array<Sample, 64> ring_{};  // a sample per window/32 at most: 2 windows
  size_t count_ = 0, newest_ = 0;
  size_t base_ = 0;                // ring_ index
  std::optional<size_t> recent_;   // ring_ index
  std::atomic<uint64_t> seqs_{0}, bytes_{0};
};

}  // namespace wanopt::datastore
