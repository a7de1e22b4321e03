// ChunkStore eviction: the oldest chunks go first, their bytes a segment at a time.
#include "datastore/chunk_store_impl.h"

#include <algorithm>
#include <cstring>

#include <rocksdb/write_batch.h>

namespace wanopt::datastore {
namespace {

// Entries one eviction round may remove beyond what max_bytes requires.
constexpr size_t kMaxRoundEntries = 4096;

}  // namespace

bool ChunkStoreImpl::RemoveLocked(Shard& shard, const ContentId& id, uint64_t seq) {
  if (!shard.index.Erase(id, seq)) return false;
  if (auto it = shard.pending.find(id); it != shard.pending.end() && it->second.seq == seq) {
    shard.pending.erase(it);
  }
  shard.cache.Erase(id);
  return true;
}

void ChunkStoreImpl::Evict() {
  std::unique_lock lock(evict_mu_);
  // A degraded store stores nothing more, so it need not make room.
  if (bytes_.load() <= max_bytes_ || degraded()) return;
  // Only chunks on disk are seen here. The writer writes in sequence order, so the
  // cursor, which moves only past entries on disk, never passes a chunk still
  // queued; queued chunks are the newest, and the queue's cap (max_bytes / 4) leaves
  // enough on disk to get back within max_bytes.
  const uint64_t round_start = evict_cursor_;
  SeqKey lower(evict_cursor_);
  rocksdb::Slice lower_slice = lower.slice();
  rocksdb::ReadOptions scan;
  scan.iterate_lower_bound = &lower_slice;  // below it, only tombstones of earlier rounds
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(scan, index_cf_));
  rocksdb::WriteBatch batch;
  uint64_t freed = 0;
  // Down to evict_to_, but past max_bytes by at most kMaxRoundEntries entries: a
  // round of tiny chunks must not hold the other threads up for long.
  size_t entries = 0;
  for (it->Seek(lower_slice); it->Valid(); it->Next(), ++entries) {
    uint64_t bytes = bytes_.load();
    if (bytes <= evict_to_ || (bytes <= max_bytes_ && entries >= kMaxRoundEntries)) break;
    rocksdb::Slice key = it->key();
    batch.Delete(index_cf_, key);
    if (key.size() != sizeof(SeqKey::bytes)) continue;
    uint64_t seq = bytes::GetBe64(reinterpret_cast<const uint8_t*>(key.data()));
    evict_cursor_ = seq + 1;
    IndexEntry entry;
    if (!entry.Parse(it->value())) continue;
    Shard& shard = ShardOf(entry.id);
    bool erased;
    {
      std::lock_guard shard_lock(shard.mu);
      erased = RemoveLocked(shard, entry.id, seq);
    }
    if (erased) {  // else dropped as corrupt meanwhile; its dropper counted it
      bytes_.fetch_sub(entry.size);
      evictions_.fetch_add(1, std::memory_order_relaxed);
      freed += entry.size;
    }
  }
  rocksdb::Status s = it->status();
  it.reset();
  if (s.ok() && batch.Count() > 0) s = Writing([&] { return db_->Write(write_options_, &batch); });
  if (!s.ok()) {
    // The chunks are out of the in-memory index already. Their entries stay on disk
    // (the next round deletes them; a restart before that brings them back as stored
    // chunks), and so must their segments: the cursor goes back.
    evict_cursor_ = round_start;
    uint64_t n = write_errors_.fetch_add(1) + 1;
    if (!s.IsAborted() && WorthLogging(n)) {
      WANOPT_LOG(kError, kComponent) << path_ << ": eviction: " << s.ToString();
    }
    return;
  }
  evicted_since_reclaim_ += freed;
  if (evicted_since_reclaim_ < segment_bytes_) return;
  evicted_since_reclaim_ = 0;
  uint64_t cursor = evict_cursor_;
  lock.unlock();
  {
    std::lock_guard queue_lock(queue_mu_);
    reclaim_to_ = std::max(reclaim_to_, cursor);
  }
  work_cv_.notify_one();
}

void ChunkStoreImpl::Reclaim(uint64_t cursor) {
  // The evictions' index deletes are in RocksDB's log, not synced: sync it before
  // the bytes go, or a power loss could bring back entries whose segment is gone
  // (a miss on Get, but the peer would be sent their names meanwhile).
  rocksdb::Status s = Writing([&] { return db_->SyncWAL(); });
  if (!s.ok()) return;  // the store degraded (logged once there): keep the segments
  segments_.ReleaseBelow(cursor);
}

}  // namespace wanopt::datastore
