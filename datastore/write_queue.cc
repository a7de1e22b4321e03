// ChunkStore::Put and the write queue: the writer thread appends queued chunks to
// the segment log and writes their index entries to RocksDB, in batches
// (Write-behind in chunk_store.cc).
#include "datastore/chunk_store_impl.h"

#include <pthread.h>

#include <chrono>
#include <cstring>
#include <limits>
#include <utility>

#include <rocksdb/write_batch.h>

namespace wanopt::datastore {
namespace {

// What a queued chunk costs the write queue's bound beyond its bytes: the queue and
// pending-map entries and the shared block.
constexpr uint64_t kQueueEntryOverhead = 128;
// The most the writer takes in one batch: large enough that the per-write costs (a
// pwritev, RocksDB's write thread handoff and log write) are spread over many
// chunks, small enough that a batch is done within a few milliseconds.
constexpr uint64_t kWriteBatchBytes = 4 << 20;
// A writer that finds less than kLingerBytes queued waits up to kLinger for more
// (unless a Put, or Flush, is waiting for it): when Puts come one at a time, a
// batch then holds a millisecond's worth instead of one chunk, and a Put wakes the
// writer only when the queue was empty or passes kLingerBytes.
constexpr uint64_t kLingerBytes = 256 << 10;
constexpr std::chrono::microseconds kLinger{1000};

}  // namespace

ContentId ChunkStoreImpl::Put(std::span<const uint8_t> chunk) {
  ContentId id = IdOf(chunk);
  puts_.fetch_add(1, std::memory_order_relaxed);
  if (chunk.size() > max_bytes_ || chunk.size() > std::numeric_limits<uint32_t>::max()) return id;
  Shard& shard = ShardOf(id);
  {
    std::lock_guard lock(shard.mu);
    if (shard.index.Find(id) != 0) {
      duplicates_.fetch_add(1, std::memory_order_relaxed);
      return id;
    }
  }
  if (degraded()) {
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    return id;
  }
  // Room first, with no lock held: the writer needs the shard locks to make room.
  const uint64_t charge = chunk.size() + kQueueEntryOverhead;
  ReserveQueue(charge);
  Blob blob = Blob::Copy(chunk);
  uint64_t ticket;
  bool wake;
  {
    std::lock_guard lock(shard.mu);
    if (shard.index.Find(id) != 0) {  // stored by a concurrent Put meanwhile
      duplicates_.fetch_add(1, std::memory_order_relaxed);
      ReleaseQueue(charge);
      return id;
    }
    std::lock_guard queue_lock(queue_mu_);
    uint64_t seq = next_seq_.fetch_add(1, std::memory_order_relaxed);
    put_bytes_ += chunk.size();
    turnover_.Record(Turnover::Clock::now(), seq, put_bytes_);  // as it arrives: eviction follows Puts
    shard.index.Insert(id, seq | ChunkIndex::kPending);
    shard.pending.emplace(id, Shard::Pending{seq, blob});
    shard.cache.Insert(id, blob);  // recently stored: likely named again soon
    bytes_.fetch_add(chunk.size());
    queue_.push_back({seq, id, std::move(blob)});
    ticket = ++enqueued_;
    uint64_t before = waiting_bytes_;
    waiting_bytes_ += chunk.size();
    wake = before == 0 || (before < kLingerBytes && waiting_bytes_ >= kLingerBytes);
  }
  if (wake) work_cv_.notify_one();
  if (sync_writes_) WaitForWriter(ticket);
  if (bytes_.load() > max_bytes_) Evict();
  return id;
}

void ChunkStoreImpl::ReserveQueue(uint64_t charge) {
  std::unique_lock lock(queue_mu_);
  // An empty queue takes any chunk, however big: a Put never waits forever.
  auto room = [&] { return queued_bytes_ == 0 || queued_bytes_ + charge <= queue_limit_; };
  if (!room()) {
    queue_waits_.fetch_add(1, std::memory_order_relaxed);
    ++urgent_;
    work_cv_.notify_one();  // no lingering while a Put waits
    progress_cv_.wait(lock, room);
    --urgent_;
  }
  queued_bytes_ += charge;
}

void ChunkStoreImpl::WaitForWriter(uint64_t ticket) {
  std::unique_lock lock(queue_mu_);
  if (written_ >= ticket) return;
  ++urgent_;
  work_cv_.notify_one();
  progress_cv_.wait(lock, [&] { return written_ >= ticket; });
  --urgent_;
}

void ChunkStoreImpl::ReleaseQueue(uint64_t charge) {
  {
    std::lock_guard lock(queue_mu_);
    queued_bytes_ -= charge;
  }
  progress_cv_.notify_all();
}

void ChunkStoreImpl::HoldWriter(bool hold) {
  {
    std::lock_guard lock(queue_mu_);
    held_ = hold;
  }
  work_cv_.notify_all();
}

void ChunkStoreImpl::WriterLoop() {
  pthread_setname_np(pthread_self(), "chunk-writer");
  std::vector<Queued> batch;
  for (;;) {
    uint64_t reclaim = 0;  // a cursor to reclaim to, or 0
    {
      std::unique_lock lock(queue_mu_);
      // Closing writes the queue out, held or not.
      work_cv_.wait(lock, [&] { return stop_ || reclaim_to_ > reclaimed_to_ || (!held_ && !queue_.empty()); });
      // A reclaim first: it gives evicted segments back to the disk.
      if (reclaim_to_ > reclaimed_to_) {
        reclaim = reclaim_to_;
      } else {
        if (queue_.empty()) return;  // stop_
        work_cv_.wait_for(lock, kLinger,
                          [&] { return stop_ || urgent_ > 0 || held_ || waiting_bytes_ >= kLingerBytes; });
        if (held_ && !stop_) continue;
        uint64_t bytes = 0;
        while (!queue_.empty() && (batch.empty() || bytes + queue_.front().blob.size <= kWriteBatchBytes)) {
          bytes += queue_.front().blob.size;
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        waiting_bytes_ -= bytes;
      }
    }
    if (reclaim != 0) {
      Reclaim(reclaim);
      {
        std::lock_guard lock(queue_mu_);
        reclaimed_to_ = reclaim;
      }
      progress_cv_.notify_all();
      continue;
    }
    WriteBatchOut(batch);
    batch.clear();
  }
}

void ChunkStoreImpl::WriteBatchOut(std::vector<Queued>& batch) {
  uint64_t bytes = 0;
  std::vector<SegmentLog::Record> records;
  records.reserve(batch.size());
  for (const auto& q : batch) {
    bytes += q.blob.size;
    records.push_back({q.seq, q.blob.span()});
  }
  std::vector<SegmentLog::Location> where(batch.size());
  // The bytes first: an index entry is written only for bytes appended.
  rocksdb::Status s = rocksdb::Status::Aborted("the datastore is degraded");
  if (!degraded()) {
    int error = segments_.Append(records, where.data());
    if (error == 0 && sync_writes_) error = segments_.Sync();
    if (error != 0) {
      s = rocksdb::Status::IOError("segment " + std::string(std::strerror(error)));
      Degrade("cannot write chunks: " + std::string(std::strerror(error)));
    } else {
      rocksdb::WriteBatch write(batch.size() * (sizeof(SeqKey::bytes) + kIndexValueSize + 16) + 64);
      for (size_t i = 0; i < batch.size(); ++i) {
        IndexEntry entry{batch[i].id, batch[i].blob.size, where[i]};
        write.Put(index_cf_, SeqKey(batch[i].seq).slice(), entry.Encode().slice());
      }
      s = Writing([&] { return db_->Write(write_options_, &write); });
    }
  }
  uint64_t charge = 0;
  for (const auto& q : batch) {
    charge += q.blob.size + kQueueEntryOverhead;
    Shard& shard = ShardOf(q.id);
    std::lock_guard lock(shard.mu);
    if (!s.ok()) {
      // Not stored: a miss from now on (evicted meanwhile: its evictor counted it).
      if (RemoveLocked(shard, q.id, q.seq)) bytes_.fetch_sub(q.blob.size);
      continue;
    }
    // On disk: Get reads it from its segment (or the cache) from now on. Evicted
    // meanwhile (once on disk, eviction may take it before this), nothing to do.
    if (shard.index.Update(q.id, q.seq | ChunkIndex::kPending, q.seq)) shard.pending.erase(q.id);
  }
  // Logged once, by Degrade.
  if (!s.ok()) write_errors_.fetch_add(batch.size());
  if (s.ok() && !sync_writes_ && (unsynced_bytes_ += bytes) >= kSyncEveryBytes) {
    SyncWritten();
    unsynced_bytes_ = 0;
  }
  {
    std::lock_guard lock(queue_mu_);
    queued_bytes_ -= charge;
    written_ += batch.size();
  }
  progress_cv_.notify_all();
}

void ChunkStoreImpl::SyncWritten() {
  if (degraded()) return;
  if (int error = segments_.Sync()) {
    Degrade("cannot sync chunks: " + std::string(std::strerror(error)));
    return;
  }
  Writing([&] { return db_->SyncWAL(); });
}

void ChunkStoreImpl::Flush() {
  uint64_t target, reclaim;
  {
    std::lock_guard lock(queue_mu_);
    target = enqueued_;
    reclaim = reclaim_to_;
  }
  WaitForWriter(target);
  {
    std::unique_lock lock(queue_mu_);
    progress_cv_.wait(lock, [&] { return reclaimed_to_ >= reclaim; });
  }
  // A failure degrades the store, which logs it. With sync_writes every batch is
  // synced already.
  if (!sync_writes_) SyncWritten();
}

}  // namespace wanopt::datastore
