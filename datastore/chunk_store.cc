// The RocksDB-backed ChunkStore.
//
// On disk, one RocksDB database with three column families:
//   chunks   seq (8 bytes, big-endian) -> the chunk's bytes
//   index    seq                       -> id (16 bytes) + size (4 bytes, big-endian)
//   default  "format" -> "1", "secret-check" -> IdOf(kSecretCheck)
// plus SECRET, the 192-byte hash key. A Put writes its two entries in one WriteBatch:
// both are on disk or neither is. `seq` counts the chunks ever stored and is never
// reused, so it is also the age that eviction goes by.
//
// Why chunks are keyed by sequence number rather than by id: keys then arrive in
// increasing order and leave only from the front, so the chunks family's files
// never overlap and compaction moves them down the levels without rewriting them
// (datastore_bench: 1.6 GB through an 80 MB store, 23 trivial moves, no byte
// rewritten). Keyed by id, every compaction would merge random keys into the older
// data: on a full 4 GiB store with new chunks arriving all the time, leveled
// compaction writes about ten bytes per byte stored, on a 2-core box that also runs
// the proxy. Evicting deletes
// only the small index entry; the bytes go a file at a time (DeleteFilesInRange) once
// every key in a file is older than the eviction cursor, so the chunks family never
// holds a tombstone. A chunk evicted and stored again also gets a new key, so a late
// eviction can never delete the newer copy.
//
// Open rebuilds the in-memory index from the index family alone: 20 bytes a chunk
// to read, whatever the chunks' sizes.
//
// Write-behind. Put claims a sequence number, enters the chunk in the index (with
// kPending), in its shard's pending map (id -> the shared bytes) and in the write
// queue, and returns. One writer thread takes the queue's front, up to
// kWriteBatchBytes at a time, writes it as one WriteBatch, then clears kPending and
// the pending entries. Sequence numbers are claimed and queued under the queue's
// lock, so the writer writes them in increasing order: on disk there is always a
// prefix of the chunks stored, and the eviction cursor, which only follows entries
// on disk, cannot pass a chunk still queued. The queue is bounded (a Put that finds
// it full waits) and capped at max_bytes / 4: eviction, which only sees written
// chunks, can then always bring the store back within max_bytes.
//
// Lock order: evict_mu_, then a shard's mu, then queue_mu_. The writer holds
// queue_mu_ alone, and a shard's mu alone.
//
// The write-ahead log is off for chunks (on, and synced, only with sync_writes). A
// chunk the writer wrote is in a memtable until RocksDB flushes the memtables to
// table files (16 MiB of chunks at a time, synced): a kill -9 or a power loss loses
// what is not flushed yet, at most the two chunk memtables (32 MiB) plus the write
// queue, the most recent chunks. That is a cache's loss - each lost chunk costs its
// peer one resend (a NACK) - and the log cost more than it saved: it wrote every
// new chunk twice and, on novel data, took 30% of the CPU the whole pipeline
// spends (pipeline_bench: F on random data 146 -> 203 MB/s, 6.2 -> 4.3 CPU s/GB per
// box). atomic_flush keeps the families in step: the chunks and index entries
// flushed together are the ones written together, so what survives a crash is
// everything stored before some point, as it was with the log. The meta family's
// two entries are written once, with the log, synced. Bytes damaged some other way
// are caught by RocksDB's block checksums or by the re-hash in Get, and dropped.
#include "datastore/chunk_store_impl.h"

#include <algorithm>
#include <cstring>

#define XXH_INLINE_ALL  // inlined: every chunk stored or read is hashed
#include <xxhash.h>

#include "datastore/testing.h"

namespace wanopt::datastore {

static_assert(kSecretSize >= XXH3_SECRET_SIZE_MIN);

namespace testing {
void HoldWriter(ChunkStore& store, bool hold) { static_cast<ChunkStoreImpl&>(store).HoldWriter(hold); }
void IgnoreTurnover(ChunkStore& store) { static_cast<ChunkStoreImpl&>(store).IgnoreTurnover(); }
}  // namespace testing

ChunkStoreImpl::ChunkStoreImpl(const ChunkStoreOptions& options)
    : path_(options.path),
      max_bytes_(options.max_bytes),
      evict_to_(options.max_bytes - std::min<uint64_t>(options.max_bytes / 64, 8 << 20)),
      reclaim_every_(std::clamp<uint64_t>(options.max_bytes / 8, 1 << 20, 64 << 20)),
      queue_limit_(std::min(options.write_queue_bytes, options.max_bytes / 4)),
      sync_writes_(options.sync_writes),
      caching_(options.cache_bytes > 0),
      read_ahead_bytes_(std::min<uint64_t>(kReadAheadBytes, options.cache_bytes / 8)) {
  write_options_.sync = options.sync_writes;
  write_options_.disableWAL = !options.sync_writes;  // why: the comment at the top
  for (auto& shard : shards_) {
    shard.cache.set_capacity(options.cache_bytes / kShards);
    if (caching_) shard.read_tags = std::make_unique<uint64_t[]>(kReadTags);
  }
}

ChunkStoreImpl::~ChunkStoreImpl() {
  if (writer_.joinable()) {
    {
      std::lock_guard lock(queue_mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    writer_.join();  // after it wrote the queue out
  }
  if (!db_) return;
  // The memtables hold the chunks written since the last flush, and no log has
  // them: a clean close keeps them. (RocksDB's own close would flush them too; this
  // one is explicit and logged.) Not on a degraded store.
  rocksdb::Status s = Writing([&] { return db_->Flush({}, handles_); });
  if (!s.ok() && !s.IsAborted()) WANOPT_LOG(kWarn, kComponent) << path_ << ": flush at close: " << s.ToString();
  for (auto* handle : handles_) db_->DestroyColumnFamilyHandle(handle);
  db_->Close();
}

ContentId ChunkStoreImpl::IdOf(std::span<const uint8_t> chunk) const {
  XXH128_hash_t hash = XXH3_128bits_withSecret(chunk.data(), chunk.size(), secret_.data(), secret_.size());
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  ContentId id;
  std::memcpy(id.data(), canonical.digest, id.size());
  return id;
}

bool ChunkStoreImpl::Contains(const ContentId& id) const {
  Shard& shard = ShardOf(id);
  std::lock_guard lock(shard.mu);
  return shard.index.Find(id) != 0;
}

bool ChunkStoreImpl::Lasting(const ContentId& id) const {
  uint64_t seq;
  {
    Shard& shard = ShardOf(id);
    std::lock_guard lock(shard.mu);
    seq = shard.index.Find(id) & ~ChunkIndex::kPending;
  }
  if (seq == 0) return false;
  // What the next kRepairWindow will bring at the rate chunks arrived over the last
  // one, and a quarter of the store at least.
  bool rate = !ignore_turnover_.load(std::memory_order_relaxed);
  uint64_t coming_bytes = std::max(max_bytes_ / 4, rate ? turnover_.bytes() : 0);
  if (bytes_.load() + coming_bytes <= max_bytes_) return true;  // nothing is about to go
  uint64_t oldest = evict_cursor_.load(std::memory_order_relaxed), next = next_seq_.load(std::memory_order_relaxed);
  uint64_t coming_seqs = std::max((next - std::min(next, oldest)) / 4, rate ? turnover_.seqs() : 0);
  return seq >= oldest + coming_seqs;
}

ChunkStore::Stats ChunkStoreImpl::stats() const {
  Stats s;
  s.index_memory_bytes = kShards * (sizeof(std::mutex) + sizeof(ChunkIndex));
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard.mu);
    s.chunks += shard.index.size();
    s.index_memory_bytes += shard.index.memory_bytes();
    s.cache_bytes += shard.cache.charged();
  }
  {
    std::lock_guard lock(queue_mu_);
    s.queued_bytes = queued_bytes_;
  }
  s.bytes = bytes_.load();
  s.puts = puts_.load();
  s.duplicates = duplicates_.load();
  s.hits = hits_.load();
  s.misses = misses_.load();
  s.evictions = evictions_.load();
  s.corrupt_dropped = corrupt_dropped_.load();
  s.write_errors = write_errors_.load();
  s.degraded = degraded();
  s.memory_hits = memory_hits_.load();
  s.queue_waits = queue_waits_.load();
  return s;
}

std::string ChunkStoreImpl::degraded_reason() const {
  std::lock_guard lock(degraded_mu_);
  return degraded_reason_;
}

void ChunkStoreImpl::Degrade(const std::string& reason) {
  {
    std::lock_guard lock(degraded_mu_);
    if (degraded_.load(std::memory_order_relaxed)) return;
    degraded_reason_ = reason;
    degraded_.store(true, std::memory_order_release);
  }
  WANOPT_LOG(kError, kComponent) << path_ << ": degraded: " << reason
                                 << ": storing stopped (chunks already stored are still served) until restart";
}

}  // namespace wanopt::datastore
