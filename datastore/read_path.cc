// ChunkStore::Get and GetInto: from the read cache or the write queue, else from
// RocksDB, verified; read-ahead into the cache; dropping chunks that fail to verify.
#include "datastore/chunk_store_impl.h"

#include <cstring>

namespace wanopt::datastore {

template <typename Sink>
bool ChunkStoreImpl::Read(const ContentId& id, Sink&& sink) {
  Shard& shard = ShardOf(id);
  uint64_t seq;
  {
    std::lock_guard lock(shard.mu);
    seq = shard.index.Find(id);
    // Only for an id the index holds: an evicted or dropped chunk is a miss even if
    // its bytes were still cached.
    if (seq != 0) {
      const Blob* blob = shard.cache.Lookup(id);
      if (!blob && (seq & ChunkIndex::kPending)) {
        auto it = shard.pending.find(id);
        if (it != shard.pending.end()) blob = &it->second.blob;
      }
      if (blob) {
        // Not hashed again: bytes enter the cache and the queue verified (hashed by
        // Put, or re-hashed on their RocksDB read below), and memory is not a disk
        // block. Copied out under the lock: a few microseconds at most, and no
        // reference counting on the hot path.
        hits_.fetch_add(1, std::memory_order_relaxed);
        memory_hits_.fetch_add(1, std::memory_order_relaxed);
        sink(blob->span());
        return true;
      }
    }
  }
  // kPending without pending bytes cannot be (both change under the shard's lock).
  if (seq == 0 || (seq & ChunkIndex::kPending)) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  SeqKey key(seq);
  rocksdb::PinnableSlice value;  // pins the cached block: hashed and copied in place
  rocksdb::Status s = db_->Get({}, chunks_cf_, key.slice(), &value);
  if (s.ok() && IdOf(Bytes(value)) == id) {
    hits_.fetch_add(1, std::memory_order_relaxed);
    sink(Bytes(value));
    if (caching_) {
      if (ReadBefore(id)) CacheRead(id, seq, Bytes(value));
      value.Reset();
      if (uint64_t from = read_ahead_bytes_ > 0 ? ReadAheadFrom(seq) : 0) ContinueRun(seq, ReadAhead(from));
    }
    return true;
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  if (s.ok()) {
    Drop(id, seq, "its bytes do not match its id (" + std::to_string(value.size()) + " bytes read)");
  } else if (s.IsNotFound()) {
    Drop(id, seq, "its bytes are missing");
  } else if (s.IsCorruption()) {
    Drop(id, seq, s.ToString());
  } else {  // an I/O error may pass; the chunk stays
    uint64_t n = read_errors_.fetch_add(1) + 1;
    if (WorthLogging(n)) {
      WANOPT_LOG(kError, kComponent) << path_ << ": cannot read chunk " << Hex(id) << " ("
                                     << n << " read errors so far): " << s.ToString();
    }
  }
  return false;
}

void ChunkStoreImpl::CacheRead(const ContentId& id, uint64_t seq, std::span<const uint8_t> bytes) {
  Blob blob = Blob::Copy(bytes);
  Shard& shard = ShardOf(id);
  std::lock_guard lock(shard.mu);
  if (shard.index.Find(id) == seq) shard.cache.Insert(id, std::move(blob));
}

bool ChunkStoreImpl::ReadBefore(const ContentId& id) {
  uint64_t tag;
  std::memcpy(&tag, id.data(), sizeof tag);
  tag |= 1;
  Shard& shard = ShardOf(id);
  std::lock_guard lock(shard.mu);
  uint64_t& slot = shard.read_tags[tag % kReadTags];
  if (slot == tag) return true;
  slot = tag;
  return false;
}

uint64_t ChunkStoreImpl::ReadAheadFrom(uint64_t seq) {
  std::lock_guard lock(runs_mu_);
  ++run_clock_;
  Run* oldest = &runs_[0];
  for (auto& run : runs_) {
    if (run.next != 0 && seq + kRunSlack >= run.next && seq <= run.next + kRunSlack) {
      // Continues a run: once it is one for sure, read what follows (ContinueRun
      // then says where that stopped).
      run.next = seq + 1;
      run.used = run_clock_;
      if (run.reads < kRunReads) ++run.reads;
      return run.reads >= kRunReads ? seq + 1 : 0;
    }
    if (run.used < oldest->used) oldest = &run;
  }
  // Perhaps the start of one.
  *oldest = {seq + 1, 1, run_clock_};
  return 0;
}

void ChunkStoreImpl::ContinueRun(uint64_t seq, uint64_t next) {
  std::lock_guard lock(runs_mu_);
  for (auto& run : runs_) {
    if (run.next == seq + 1) run.next = next;
  }
}

uint64_t ChunkStoreImpl::ReadAhead(uint64_t seq) {
  SeqKey lower(seq), upper(seq + kReadAheadChunks);
  rocksdb::Slice upper_slice = upper.slice();
  rocksdb::ReadOptions options;
  options.iterate_upper_bound = &upper_slice;
  options.fill_cache = false;  // the bytes go to the read cache, not twice in memory
  options.readahead_size = read_ahead_bytes_;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, chunks_cf_));
  uint64_t bytes = 0, next = seq + kReadAheadChunks;
  for (it->Seek(lower.slice()); it->Valid(); it->Next()) {
    rocksdb::Slice key = it->key();
    if (key.size() != sizeof(SeqKey::bytes)) continue;
    uint64_t at = bytes::GetBe64(reinterpret_cast<const uint8_t*>(key.data()));
    if (bytes >= read_ahead_bytes_) {
      next = at;
      break;
    }
    std::span<const uint8_t> value = Bytes(it->value());
    bytes += value.size();
    // The verification: the bytes' id must be stored under this very sequence
    // number. Damaged bytes hash to an id that is not (a Get of the real id reads
    // and drops them); so do the bytes of an evicted chunk not yet reclaimed.
    ContentId id = IdOf(value);
    Shard& shard = ShardOf(id);
    {
      std::lock_guard lock(shard.mu);
      if (shard.index.Find(id) != at || shard.cache.Contains(id)) continue;
    }
    CacheRead(id, at, value);
  }
  return next;
}

std::optional<std::vector<uint8_t>> ChunkStoreImpl::Get(const ContentId& id) {
  std::optional<std::vector<uint8_t>> out;
  Read(id, [&](std::span<const uint8_t> bytes) { out.emplace(bytes.begin(), bytes.end()); });
  return out;
}

bool ChunkStoreImpl::GetInto(const ContentId& id, Buffer& out) {
  return Read(id, [&](std::span<const uint8_t> bytes) { out.Append(bytes); });
}

void ChunkStoreImpl::Drop(const ContentId& id, uint64_t seq, const std::string& reason) {
  SeqKey key(seq);
  std::string entry;
  rocksdb::Status s = db_->Get({}, index_cf_, key.slice(), &entry);
  {
    Shard& shard = ShardOf(id);
    std::lock_guard lock(shard.mu);
    // Evicted, or dropped by another reader, in the meantime: theirs to count.
    if (!RemoveLocked(shard, id, seq)) return;
  }
  // The size is in the index entry; if that is unreadable too, bytes_ stays too high
  // (evicting a little early) until the next Open recounts.
  if (s.ok() && entry.size() == kIndexValueSize) {
    bytes_.fetch_sub(bytes::GetBe32(reinterpret_cast<const uint8_t*>(entry.data()) + id.size()));
  }
  // Only the index entry goes: the bytes are reclaimed with their file.
  Writing([&] { return db_->Delete(write_options_, index_cf_, key.slice()); });
  uint64_t n = corrupt_dropped_.fetch_add(1) + 1;
  if (WorthLogging(n)) {
    WANOPT_LOG(kWarn, kComponent) << path_ << ": dropped chunk " << Hex(id) << ": " << reason
                                  << " (" << n << " dropped so far)";
  }
}

}  // namespace wanopt::datastore
