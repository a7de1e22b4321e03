// The ChunkStore on segment files and RocksDB.
//
// On disk:
//   segments/NNNN.seg  the chunks' bytes, back to back, in the order stored (segment_log.h)
//   RocksDB, two column families:
//     index    seq (8 bytes, big-endian) -> id (16), size (4), segment (8), offset (4)
//     default  "format" -> "2", "secret-check" -> IdOf(kSecretCheck)
//   SECRET, the 192-byte hash key.
// `seq` counts the chunks stored, in order: it is the age eviction goes by.
//
// Why the bytes are not RocksDB values (format 1 kept them in a "chunks" family):
// every new chunk was then copied into a write batch, into a memtable, into table
// blocks with their checksums, and written out by a flush, on both boxes. On novel
// data that was about a third of the CPU the whole pipeline spends per box
// (pipeline_bench, F on random data: 202 -> 292 MB/s with the bytes appended to a
// file instead). A segment is written with one pwritev per batch, read with one
// pread per chunk, and released whole once every chunk in it is evicted (chunks are
// evicted oldest first): no compaction, no byte rewritten. RocksDB keeps what it is
// good at, the ordered, crash-safe index (36 bytes a chunk).
//
// Open rebuilds the in-memory index from the index family alone: 32 bytes a chunk
// to read, whatever the chunks' sizes. A format 1 store is emptied on open (a cache:
// its chunks are learnt again as they cross) and its chunks family dropped.
//
// Write-behind. Put claims a sequence number, enters the chunk in the index (with
// kPending), in its shard's pending map (id -> the shared bytes) and in the write
// queue, and returns. One writer thread takes the queue's front, up to
// kWriteBatchBytes at a time, appends it to the segment log, writes the index
// entries as one WriteBatch, then clears kPending and the pending entries. Sequence
// numbers are claimed and queued under the queue's lock, so the writer writes them
// in increasing order: on disk there is always a prefix of the chunks stored, and
// the eviction cursor, which only follows entries on disk, cannot pass a chunk still
// queued. The queue is bounded (a Put that finds it full waits) and capped at
// max_bytes / 4: eviction, which only sees written chunks, can then always bring the
// store back within max_bytes.
//
// Lock order: evict_mu_, then a shard's mu, then queue_mu_. The writer holds
// queue_mu_ alone, and a shard's mu alone.
//
// Durability. Index entries go through RocksDB's log (36 bytes a chunk), synced only
// with sync_writes; a segment's bytes are in the page cache once appended. So a
// kill -9 loses only the write queue, and what survives is everything stored before
// some point (the log is replayed up to its first torn record). Against a power
// loss, the writer syncs the segments and then the log every kSyncEveryBytes of
// chunks (Flush, closing and sync_writes do it at once). An index entry whose bytes
// did not reach the disk anyway (written back before them) fails Get's re-hash and
// is dropped: a miss, one resend by the peer, never wrong bytes.
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
void FailSegmentReads(ChunkStore& store, int error) { static_cast<ChunkStoreImpl&>(store).FailSegmentReads(error); }
}  // namespace testing

ChunkStoreImpl::ChunkStoreImpl(const ChunkStoreOptions& options)
    : path_(options.path),
      max_bytes_(options.max_bytes),
      evict_to_(options.max_bytes - std::min<uint64_t>(options.max_bytes / 64, 8 << 20)),
      segment_bytes_(std::clamp<uint64_t>(options.max_bytes / 8, 64 << 10, kMaxSegmentBytes)),
      queue_limit_(std::min(options.write_queue_bytes, options.max_bytes / 4)),
      sync_writes_(options.sync_writes),
      caching_(options.cache_bytes > 0),
      read_ahead_bytes_(std::min<uint64_t>(kReadAheadBytes, options.cache_bytes / 8)) {
  write_options_.sync = options.sync_writes;  // else synced every kSyncEveryBytes (the top)
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
  SyncWritten();
  // Written out so that the next Open need not replay the log. Not on a degraded
  // store.
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
  s.read_errors = read_errors_.load();
  s.write_errors = write_errors_.load();
  s.degraded = degraded();
  s.memory_hits = memory_hits_.load();
  s.queue_waits = queue_waits_.load();
  s.disk_bytes = segments_.disk_bytes();
  for (rocksdb::ColumnFamilyHandle* family : {meta_cf_, index_cf_}) {
    uint64_t bytes = 0;
    if (family && db_->GetIntProperty(family, "rocksdb.cur-size-all-mem-tables", &bytes)) s.index_db_memory_bytes += bytes;
  }
  if (block_cache_) s.index_db_memory_bytes += block_cache_->GetUsage();
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
