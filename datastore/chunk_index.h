// The in-memory index of a ChunkStore: content id -> sequence number, one entry per
// stored chunk. Internal to datastore/.
//
// It answers Contains() with no disk I/O and tells Get() which RocksDB key holds a
// chunk's bytes (chunks are keyed by sequence number; see chunk_store.cc). The index
// is the store's only per-chunk memory, so it is an open-addressing table of 24-byte
// slots {id, sequence} rather than a node-based map (std::unordered_map would take
// about 64 bytes per entry before the allocator's own overhead).
//
// Linear probing with backward-shift deletion: no per-entry allocation, no
// tombstones. Ids are keyed hashes that nobody outside the box can steer, so their
// bits are used as the table position as they are.
//
// Memory: the table grows by half when more than 3/4 full and shrinks when less than
// 2/5 full, so above its minimum size it holds 32 to 60 bytes per entry.
//
// Not thread-safe: ChunkStore shards the index and locks each shard.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "datastore/chunk_store.h"

namespace wanopt::datastore {

class ChunkIndex {
 public:
  // Set in a sequence number while the chunk's bytes are still being written:
  // Contains() says yes, Get() answers a miss without reading the disk.
  static constexpr uint64_t kPending = uint64_t{1} << 63;

  ChunkIndex();
  ChunkIndex(const ChunkIndex&) = delete;
  ChunkIndex& operator=(const ChunkIndex&) = delete;

  // The sequence number stored for `id` (kPending included), or 0 when absent.
  uint64_t Find(const ContentId& id) const;
  // REQUIRES: `id` absent; seq != 0.
  void Insert(const ContentId& id, uint64_t seq);
  // Replaces the sequence number of `id` if it is `expected`; returns whether it did.
  bool Update(const ContentId& id, uint64_t expected, uint64_t seq);
  // Removes `id` if its sequence number, with or without kPending, is `seq` (which
  // must not have kPending); returns whether it did. The sequence check is what
  // keeps a stale remover (an eviction or a drop racing a re-Put) from removing
  // the newer entry of the same id.
  bool Erase(const ContentId& id, uint64_t seq);
  // Sizes the table for `n` entries at once (before a rebuild inserts them).
  void Reserve(size_t n);

  size_t size() const { return size_; }
  size_t memory_bytes() const { return capacity_ * sizeof(Slot); }

 private:
  struct Slot {
    uint64_t a = 0;    // id bytes 0..7
    uint64_t b = 0;    // id bytes 8..15
    uint64_t seq = 0;  // 0: empty
  };

  // The slot holding `id`, or the empty slot where it would go.
  size_t Probe(uint64_t a, uint64_t b) const;
  size_t Home(uint64_t a) const;
  void Rehash(size_t capacity);

  std::unique_ptr<Slot[]> slots_;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

}  // namespace wanopt::datastore
