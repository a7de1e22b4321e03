// ChunkStore::Get and GetInto: from the read cache or the write queue, else from
// its segment, verified; read-ahead into the cache; dropping chunks that fail to
// verify.
#include "datastore/chunk_store_impl.h"

#include <cerrno>
#include <cstring>

namespace wanopt::datastore {
namespace {

// Reads the bytes `entry` names from the segment log into a new blob; 0 or the errno.
int ReadBlob(const SegmentLog& log, const IndexEntry& entry, Blob* blob) {
  auto data = std::make_shared_for_overwrite<uint8_t[]>(entry.size);
  int error = log.Read(entry.at, entry.size, data.get());
  blob->data = std::move(data);
  blob->size = entry.size;
  return error;
}

}  // namespace

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
        // Put, or re-hashed on their disk read below), and memory is not a disk
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
  IndexEntry entry;
  rocksdb::Status s;
  int error = 0;
  if (ReadEntry(seq, &entry, &s) && entry.id == id) {
    Blob blob;
    error = ReadBlob(segments_, entry, &blob);
    if (error == 0 && IdOf(blob.span()) == id) {
      hits_.fetch_add(1, std::memory_order_relaxed);
      sink(blob.span());
      if (caching_) {
        if (ReadBefore(id)) CacheRead(id, seq, std::move(blob));
        if (uint64_t from = read_ahead_bytes_ > 0 ? ReadAheadFrom(seq) : 0) ContinueRun(seq, ReadAhead(from));
      }
      return true;
    }
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  if (s.IsNotFound()) {
    Drop(id, seq, 0, "its index entry is missing");
  } else if (s.IsCorruption()) {
    Drop(id, seq, 0, s.ToString());
  } else if (!s.ok() || (error != 0 && error != ENOENT && error != ENODATA)) {
    // An I/O error may pass; the chunk stays.
    uint64_t n = read_errors_.fetch_add(1) + 1;
    if (WorthLogging(n)) {
      WANOPT_LOG(kError, kComponent) << path_ << ": cannot read chunk " << Hex(id) << " (" << n
                                     << " read errors so far): " << (s.ok() ? std::strerror(error) : s.ToString());
    }
  } else if (entry.id != id) {
    Drop(id, seq, 0, "its index entry names another chunk");
  } else if (error != 0) {
    Drop(id, seq, entry.size, "its bytes are missing");
  } else {
    Drop(id, seq, entry.size, "its bytes do not match its id (" + std::to_string(entry.size) + " bytes read)");
  }
  return false;
}

bool ChunkStoreImpl::ReadEntry(uint64_t seq, IndexEntry* entry, rocksdb::Status* status) {
  rocksdb::PinnableSlice value;
  *status = db_->Get({}, index_cf_, SeqKey(seq).slice(), &value);
  if (!status->ok()) return false;
  if (entry->Parse(value)) return true;
  *status = rocksdb::Status::Corruption("its index entry is malformed");
  return false;
}

void ChunkStoreImpl::CacheRead(const ContentId& id, uint64_t seq, Blob blob) {
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
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, index_cf_));
  // Chunks that follow each other on disk (appended one after another, none skipped
  // in between) are read with one system call, each straight into its own blob: a
  // pread each cost more in system-call overhead than in copying.
  struct Wanted {
    uint64_t seq;
    IndexEntry entry;
    std::shared_ptr<uint8_t[]> bytes;
  };
  static_assert(kReadAheadChunks <= SegmentLog::kMaxReadParts, "a run is read with one call");
  std::vector<Wanted> run;
  std::vector<std::span<uint8_t>> parts;
  auto read_run = [&] {
    if (run.empty()) return;
    parts.clear();
    for (auto& wanted : run) parts.push_back({wanted.bytes.get(), wanted.entry.size});
    if (segments_.Read(run.front().entry.at, parts) == 0) {
      // Verified as any read: bytes that are not the chunk's are left for a Get of
      // it to find and drop.
      for (auto& wanted : run) {
        Blob blob{std::move(wanted.bytes), wanted.entry.size};
        if (IdOf(blob.span()) == wanted.entry.id) CacheRead(wanted.entry.id, wanted.seq, std::move(blob));
      }
    }
    run.clear();
  };
  uint64_t bytes = 0, next = seq + kReadAheadChunks;
  for (it->Seek(lower.slice()); it->Valid(); it->Next()) {
    rocksdb::Slice key = it->key();
    IndexEntry entry;
    if (key.size() != sizeof(SeqKey::bytes) || !entry.Parse(it->value())) continue;
    uint64_t at = bytes::GetBe64(reinterpret_cast<const uint8_t*>(key.data()));
    if (bytes >= read_ahead_bytes_) {
      next = at;
      break;
    }
    Shard& shard = ShardOf(entry.id);
    {
      std::lock_guard lock(shard.mu);
      // Evicted, dropped or stored again meanwhile, or in the cache already.
      if (shard.index.Find(entry.id) != at || shard.cache.Contains(entry.id)) continue;
    }
    bytes += entry.size;
    if (!run.empty()) {
      const IndexEntry& last = run.back().entry;
      bool follows = entry.at.segment == last.at.segment && entry.at.offset == uint64_t{last.at.offset} + last.size;
      if (!follows) read_run();
    }
    run.push_back({at, entry, std::make_shared_for_overwrite<uint8_t[]>(entry.size)});
  }
  read_run();
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

void ChunkStoreImpl::Drop(const ContentId& id, uint64_t seq, uint32_t size, const std::string& reason) {
  SeqKey key(seq);
  {
    Shard& shard = ShardOf(id);
    std::lock_guard lock(shard.mu);
    // Evicted, or dropped by another reader, in the meantime: theirs to count.
    if (!RemoveLocked(shard, id, seq)) return;
  }
  bytes_.fetch_sub(size);
  // Only the index entry goes: the bytes are released with their segment.
  Writing([&] { return db_->Delete(write_options_, index_cf_, key.slice()); });
  uint64_t n = corrupt_dropped_.fetch_add(1) + 1;
  if (WorthLogging(n)) {
    WANOPT_LOG(kWarn, kComponent) << path_ << ": dropped chunk " << Hex(id) << ": " << reason
                                  << " (" << n << " dropped so far)";
  }
}

}  // namespace wanopt::datastore
