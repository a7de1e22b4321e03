// How fast a store takes new chunks: how many sequence numbers and bytes it stored
// over about the last `window`. ChunkStore::Lasting needs it: a chunk this box names
// must outlive the peer's request for it, and how long that is depends on the rate
// chunks arrive at, not on the store's size alone.
//
// Record is called by one thread (the store's writer, once per batch); seqs() and
// bytes() by any thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace wanopt::datastore {

class Turnover {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Turnover(Clock::duration window) : window_(window) {}

  // The store has written through sequence number `seq`, `total_bytes` since it
  // opened, at `now`. REQUIRES: calls in the order of `now`, from one thread.
  void Record(Clock::time_point now, uint64_t seq, uint64_t total_bytes) {
    if (count_ == 0 || now - ring_[newest_].at >= window_ / 32) {
      newest_ = count_ == 0 ? 0 : (newest_ + 1) % ring_.size();
      ring_[newest_] = {now, seq, total_bytes};
      if (count_ < ring_.size()) ++count_;
    }
    // From the newest sample at least a window old (before a pause, the last one
    // before it); with none that old yet, from the oldest.
    const Sample* base = &ring_[(newest_ + ring_.size() - (count_ - 1)) % ring_.size()];
    for (size_t back = 0; back < count_; ++back) {
      const Sample& s = ring_[(newest_ + ring_.size() - back) % ring_.size()];
      if (now - s.at >= window_) {
        base = &s;
        break;
      }
    }
    seqs_.store(seq - base->seq, std::memory_order_relaxed);
    bytes_.store(total_bytes - base->bytes, std::memory_order_relaxed);
  }

  // Sequence numbers and bytes stored over about the last window.
  uint64_t seqs() const { return seqs_.load(std::memory_order_relaxed); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  struct Sample {
    Clock::time_point at;
    uint64_t seq = 0, bytes = 0;
  };
  const Clock::duration window_;
  std::array<Sample, 64> ring_{};  // a sample per window/32 at most: 2 windows
  size_t count_ = 0, newest_ = 0;
  std::atomic<uint64_t> seqs_{0}, bytes_{0};
};

}  // namespace wanopt::datastore
