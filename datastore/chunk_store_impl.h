// ChunkStoreImpl, the ChunkStore on segment files and RocksDB (chunk_store.cc says how it works),
// and what its source files share. Private to datastore/: only its own .cc files include it.
//
// Its methods are spread by job:
//   chunk_store.cc        construction and closing, ids, Contains, stats
//   chunk_store_open.cc   Open: the directory, the secret, the database, the index
//   write_queue.cc        Put, the write queue and its writer thread, Flush
//   read_path.cc          Get, GetInto: the read cache, read-ahead, dropping bad chunks
//   eviction.cc           eviction and releasing the evicted chunks' segments
// and segment_log.{h,cc} keeps the chunks' bytes.
#pragma once

#include <array>
#include <atomic>
#include <cstring>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <rocksdb/cache.h>
#include <rocksdb/db.h>

#include "datastore/chunk_cache.h"
#include "datastore/chunk_index.h"
#include "datastore/chunk_store.h"
#include "datastore/segment_log.h"
#include "datastore/turnover.h"
#include "util/bytes.h"
#include "util/hex.h"
#include "util/log.h"

namespace wanopt::datastore {

inline constexpr char kComponent[] = "datastore";
inline constexpr size_t kSecretSize = 192;

// Ids are uniform, so the index shards on one id byte; 16 shards keep 4 event-loop
// threads off each other's locks and a shard's rehash short (1/16 of the index).
inline constexpr size_t kShards = 16;
// How long a chunk Lasting says yes to stays at least, at the rate chunks have been
// arriving: longer than a peer takes to decode what is in flight to it (socket
// buffers, its own queues, a loaded CPU) and send a nack back. The soak saw nacks
// come back later than a quarter of a 64 MiB store's turnover (about 1 s there).
inline constexpr std::chrono::seconds kRepairWindow{5};

// An index entry's value: id (16 bytes), size (4), segment (8), offset (4), big-endian.
inline constexpr size_t kIndexValueSize = 32;
struct IndexEntry {
  ContentId id;
  uint32_t size = 0;
  SegmentLog::Location at;

  // False for a value this code does not write.
  bool Parse(const rocksdb::Slice& value) {
    if (value.size() != kIndexValueSize) return false;
    const auto* p = reinterpret_cast<const uint8_t*>(value.data());
    std::memcpy(id.data(), p, id.size());
    size = bytes::GetBe32(p + 16);
    at = {bytes::GetBe64(p + 20), bytes::GetBe32(p + 28)};
    return true;
  }
  struct Encoded {
    rocksdb::Slice slice() const { return {bytes, sizeof bytes}; }
    char bytes[kIndexValueSize];
  };
  Encoded Encode() const {
    Encoded e;
    auto* p = reinterpret_cast<uint8_t*>(e.bytes);
    std::memcpy(p, id.data(), id.size());
    bytes::PutBe32(p + 16, size);
    bytes::PutBe64(p + 20, at.segment);
    bytes::PutBe32(p + 28, at.offset);
    return e;
  }
};

// Chunks go into segment files of up to this size (an eighth of the store, at
// least 64 KiB): the granularity at which evicted chunks' bytes leave the disk.
// Reclaiming (a sync of RocksDB's log) runs once a segment's worth is evicted.
inline constexpr uint64_t kMaxSegmentBytes = 64 << 20;
// Without sync_writes the writer makes the chunks durable (the segments, then
// RocksDB's log of their index entries) every this many bytes of chunks: what a
// power loss can take beyond the write queue.
inline constexpr uint64_t kSyncEveryBytes = 16 << 20;

// A chunk read from disk enters the read cache on its second read within a while:
// each shard remembers the ids of its last reads from disk, one in each of
// kReadTags slots (8 KiB a shard). A read that is the only one of its chunk (random
// access over a store much larger than the cache) then costs no copy into the cache
// and pushes nothing out of it.
inline constexpr size_t kReadTags = 1024;

// Read-ahead: a disk read that continues a run of reads in storage order reads up
// to this many following sequence numbers, and at most kReadAheadBytes of them
// (capped at an eighth of the cache), into the read cache.
inline constexpr uint64_t kReadAheadChunks = 128;
inline constexpr uint64_t kReadAheadBytes = 512 << 10;
// A disk read continues a run if it is at most this many sequence numbers
// before or after where the run's next read was expected (chunks of other traffic
// stored in between, or one pushed out of the cache before its turn). A run reads
// ahead from its third read on: random reads pass for a run about
// kRuns * (2 * kRunSlack)^2 / chunks^2 of the time, never on a store of any size.
// Runs tracked at once (one per connection replaying something, roughly):
inline constexpr uint64_t kRunSlack = 4;
inline constexpr int kRunReads = 3;
inline constexpr size_t kRuns = 8;

struct SeqKey {
  explicit SeqKey(uint64_t seq) { bytes::PutBe64(reinterpret_cast<uint8_t*>(bytes), seq); }
  rocksdb::Slice slice() const { return {bytes, sizeof bytes}; }
  char bytes[8];
};

inline std::string Hex(const ContentId& id) { return HexLower(id); }

// The first ten of a kind, then one in a thousand: a failing disk must not flood
// the journal. `count` is the number of events so far, this one included.
inline bool WorthLogging(uint64_t count) { return count <= 10 || count % 1000 == 0; }

class ChunkStoreImpl final : public ChunkStore {
 public:
  explicit ChunkStoreImpl(const ChunkStoreOptions& options);
  ~ChunkStoreImpl() override;

  // Everything Open does after construction; false with *why on failure.
  bool Init(const ChunkStoreOptions& options, std::string* why);

  ContentId IdOf(std::span<const uint8_t> chunk) const override;
  ContentId Put(std::span<const uint8_t> chunk) override;
  std::optional<std::vector<uint8_t>> Get(const ContentId& id) override;
  bool GetInto(const ContentId& id, Buffer& out) override;
  bool Lasting(const ContentId& id) const override;
  bool Contains(const ContentId& id) const override;
  Stats stats() const override;
  bool healthy() const override { return !degraded(); }
  std::string degraded_reason() const override;
  void Flush() override;

  void HoldWriter(bool hold);
  void IgnoreTurnover() { ignore_turnover_ = true; }
  void FailSegmentReads(int error) { segments_.FailReads(error); }

 private:
  struct alignas(64) Shard {
    mutable std::mutex mu;
    // Guarded by mu:
    ChunkIndex index;
    // The bytes of the shard's chunks still in the write queue (their index entry
    // has kPending), with their sequence number.
    struct Pending {
      uint64_t seq;
      Blob blob;
    };
    std::unordered_map<ContentId, Pending, IdHash, IdEqual> pending;
    ChunkCache cache;
    // The ids of recent reads from disk, by their first 8 bytes (| 1: 0 is free),
    // each at tag % kReadTags; empty when the cache is off.
    std::unique_ptr<uint64_t[]> read_tags;
  };
  Shard& ShardOf(const ContentId& id) const { return shards_[id[15] % kShards]; }

  struct Queued {
    uint64_t seq;
    ContentId id;
    Blob blob;
  };

  bool degraded() const { return degraded_.load(std::memory_order_acquire); }
  // Stops every write to RocksDB from now on, for `reason`; logs it the first time.
  // Quick and lock-free but for its own mutex: RocksDB's threads call it too.
  void Degrade(const std::string& reason);
  // Runs `write`, one write to RocksDB, unless the store is degraded (then returns
  // Aborted without running it); a failure degrades the store. Writes are
  // serialized: none can reach RocksDB after the one that failed.
  template <typename Write>
  rocksdb::Status Writing(Write&& write);

  bool LoadOrCreateSecret(std::string* why);
  // Draws a secret and makes it `file`; *lost_race if another process made one first.
  bool CreateSecret(const std::string& file, bool* lost_race, std::string* why);
  bool OpenDatabase(const ChunkStoreOptions& options, std::string* why);
  bool CheckMeta(std::string* why);
  // Deletes a format 1 store's index entries and drops its chunks family.
  bool EmptyFormat1(std::string* why);
  bool Rebuild(std::string* why);

  // Reads chunk `id`, verifies it and hands its bytes to `sink` (perhaps under a
  // shard's lock: `sink` only copies them); false on a miss.
  template <typename Sink>
  bool Read(const ContentId& id, Sink&& sink);
  // The index entry of `seq` (its chunk's id, size and place); false if there is
  // none or it cannot be read (*status says which).
  bool ReadEntry(uint64_t seq, IndexEntry* entry, rocksdb::Status* status);
  // Caches the bytes of chunk `id` just read from disk under `seq`, unless it was
  // evicted or dropped meanwhile.
  void CacheRead(const ContentId& id, uint64_t seq, Blob blob);
  // Whether chunk `id`, just read from disk, was read from it recently too (and
  // so goes in the cache); remembers this read either way.
  bool ReadBefore(const ContentId& id);
  // Where to read ahead from after reading `seq` from disk: seq + 1 if that read
  // continues a run of reads in storage order, else 0.
  uint64_t ReadAheadFrom(uint64_t seq);
  // Reads the chunks from `seq` on into the cache, those still stored under the
  // sequence number they are read at. Returns the sequence number after the last
  // one it read.
  uint64_t ReadAhead(uint64_t seq);
  // Where the run that read `seq` goes next: `next`.
  void ContinueRun(uint64_t seq, uint64_t next);
  // Removes `id` stored under `seq` from the shard: index, pending bytes, cache.
  // Returns whether the index held it. REQUIRES: shard.mu held.
  static bool RemoveLocked(Shard& shard, const ContentId& id, uint64_t seq);
  // Removes chunk `id` stored under `seq` after it failed to verify.
  // `size`: the chunk's, from its index entry (0 if that is gone or unreadable:
  // bytes_ then stays too high, evicting a little early, until the next Open).
  void Drop(const ContentId& id, uint64_t seq, uint32_t size, const std::string& reason);
  // Waits for room for `charge` bytes in the write queue, and takes it.
  void ReserveQueue(uint64_t charge);
  void ReleaseQueue(uint64_t charge);
  // Waits until the writer is done with the chunk queued `ticket`-th.
  void WaitForWriter(uint64_t ticket);
  // The writer thread: writes the queue out in batches until stop_.
  void WriterLoop();
  void WriteBatchOut(std::vector<Queued>& batch);
  // Evicts the oldest chunks until bytes_ <= evict_to_ (if still over max_bytes once
  // it has the eviction lock: the thread before may have done it already).
  void Evict();
  // Syncs RocksDB's log (so that the index deletes below `cursor` are on disk), then
  // releases the segments whose chunks are all below `cursor`. Run by the writer
  // thread, which Evict asks (the sync would otherwise stall the Put that evicted,
  // on a connection's event loop), and by Open before the writer starts. REQUIRES:
  // the index entries below `cursor` are deleted.
  void Reclaim(uint64_t cursor);
  // Makes every chunk written so far durable: the segments, then RocksDB's log of
  // their index entries. A failure degrades the store.
  void SyncWritten();

  const std::string path_;
  const uint64_t max_bytes_;
  // Each eviction round frees a little more than needed (1/64 of the store, at most
  // 8 MiB) so that its iterator and write are amortized over many Puts.
  const uint64_t evict_to_;
  const uint64_t segment_bytes_;  // see kMaxSegmentBytes

  alignas(64) std::array<uint8_t, kSecretSize> secret_{};

  std::unique_ptr<rocksdb::DB> db_;
  std::shared_ptr<rocksdb::Cache> block_cache_;  // db_'s: its usage is in stats()
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* index_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* format1_chunks_cf_ = nullptr;  // open only to be dropped
  rocksdb::WriteOptions write_options_;
  // The chunks' bytes.
  SegmentLog segments_;
  uint64_t unsynced_bytes_ = 0;  // the writer's: appended since the last sync

  mutable std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> next_seq_{1};
  std::atomic<uint64_t> bytes_{0};  // sizes of the chunks in the index; whoever removes an entry subtracts
  Turnover turnover_{kRepairWindow};          // fed by Put under queue_mu_
  uint64_t put_bytes_ = 0;                     // guarded by queue_mu_: chunk bytes ever queued
  std::atomic<bool> ignore_turnover_{false};  // testing::IgnoreTurnover

  // Held for one eviction round: an iterator over the index family from the cursor
  // and one write; a few milliseconds at most. Reclaiming is not under it.
  std::mutex evict_mu_;
  // Every seq below is evicted. Written under evict_mu_; Lasting reads it without.
  std::atomic<uint64_t> evict_cursor_{0};
  uint64_t evicted_since_reclaim_ = 0;  // guarded by evict_mu_

  // The write queue. Sequence numbers are claimed under queue_mu_ (see the top).
  const uint64_t queue_limit_;
  const bool sync_writes_;
  mutable std::mutex queue_mu_;
  std::condition_variable work_cv_;      // the writer waits for chunks, a reclaim, or stop_
  std::condition_variable progress_cv_;  // Puts wait for room, Flush for written_
  std::deque<Queued> queue_;             // guarded by queue_mu_
  uint64_t queued_bytes_ = 0;            // guarded: reserved, queued or being written
  uint64_t waiting_bytes_ = 0;           // guarded: the sizes of the chunks in queue_
  int urgent_ = 0;                       // guarded: threads waiting for the writer
  uint64_t enqueued_ = 0;                // guarded: chunks ever queued
  uint64_t written_ = 0;                 // guarded: ... whose write finished (or failed)
  uint64_t reclaim_to_ = 0;              // guarded: the highest cursor Evict asked the writer to reclaim to
  uint64_t reclaimed_to_ = 0;            // guarded: ... and the one it last did (Flush waits for it)
  bool stop_ = false;                    // guarded
  bool held_ = false;                    // guarded: testing::HoldWriter
  std::thread writer_;

  // Every write to RocksDB, under write_mu_ (see Writing).
  std::mutex write_mu_;
  std::atomic<bool> degraded_{false};
  mutable std::mutex degraded_mu_;
  std::string degraded_reason_;  // guarded by degraded_mu_

  const bool caching_;  // cache_bytes > 0
  // Runs of disk reads in storage order, for read-ahead.
  const uint64_t read_ahead_bytes_;
  struct Run {
    uint64_t next = 0;  // the sequence number a read continuing it is expected near
    int reads = 0;      // disk reads that made it so far
    uint64_t used = 0;  // run_clock_ when last continued, for replacing the oldest
  };
  std::mutex runs_mu_;
  std::array<Run, kRuns> runs_{};  // guarded by runs_mu_
  uint64_t run_clock_ = 0;         // guarded by runs_mu_

  std::atomic<uint64_t> puts_{0}, duplicates_{0}, hits_{0}, misses_{0}, evictions_{0},
      corrupt_dropped_{0}, write_errors_{0}, read_errors_{0}, memory_hits_{0}, queue_waits_{0};
};

template <typename Write>
rocksdb::Status ChunkStoreImpl::Writing(Write&& write) {
  std::lock_guard lock(write_mu_);
  if (degraded()) return rocksdb::Status::Aborted("the datastore is degraded");
  rocksdb::Status s = write();
  if (!s.ok()) Degrade("cannot write: " + s.ToString());
  return s;
}

}  // namespace wanopt::datastore
