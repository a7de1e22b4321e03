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
// The write-ahead log is on, and synced only with sync_writes or Flush. With it, a
// chunk the writer wrote is in the kernel's page cache and survives the process
// being killed; without it, a crash would lose every chunk still in the memtables
// (up to 128 MiB of recent chunks, the ones most likely to be referenced next), and
// the two families would need atomic_flush to stay in step. The price is writing each new chunk twice
// (log, then table file), which a WAN link's rate of new data does not come near a
// disk's. On a power loss, kPointInTimeRecovery replays the log up to its first torn
// record: the last unsynced chunks are lost, the store still opens, and what it
// holds is consistent. Bytes damaged some other way are caught by RocksDB's block
// checksums or by the re-hash in Get, and dropped.
#include "datastore/chunk_store.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#define XXH_INLINE_ALL  // inlined: every chunk stored or read is hashed
#include <xxhash.h>

#include "datastore/chunk_cache.h"
#include "datastore/chunk_index.h"
#include "datastore/rocksdb_hooks.h"
#include "datastore/testing.h"
#include "wanopt/util/bytes.h"
#include "wanopt/util/log.h"

namespace wanopt::datastore {
namespace {

constexpr char kComponent[] = "datastore";
constexpr size_t kSecretSize = 192;
static_assert(kSecretSize >= XXH3_SECRET_SIZE_MIN);
constexpr char kSecretFile[] = "SECRET";
constexpr char kChunksFamily[] = "chunks";
constexpr char kIndexFamily[] = "index";
constexpr char kFormatKey[] = "format";
constexpr char kFormat[] = "1";
constexpr char kSecretCheckKey[] = "secret-check";
// Hashed with the secret and kept in the database: a SECRET file that is not the one
// the chunks were stored with (restored from elsewhere, regenerated) fails Open
// instead of turning every stored chunk into a verification failure.
constexpr char kSecretCheck[] = "wanopt datastore secret check";

// Ids are uniform, so the index shards on one id byte; 16 shards keep 4 event-loop
// threads off each other's locks and a shard's rehash short (1/16 of the index).
constexpr size_t kShards = 16;

constexpr size_t kIndexValueSize = 20;

// Entries one eviction round may remove beyond what max_bytes requires.
constexpr size_t kMaxRoundEntries = 4096;

// What a queued chunk costs the write queue's bound beyond its bytes: the queue and
// pending-map entries and the shared block.
constexpr uint64_t kQueueEntryOverhead = 128;
// The most the writer puts in one WriteBatch: large enough that the per-write costs
// (the write thread's handoff, the log's write()) are spread over many chunks, small
// enough that the memtable insert does not hold up the readers' view for long.
constexpr uint64_t kWriteBatchBytes = 4 << 20;
// A writer that finds less than kLingerBytes queued waits up to kLinger for more
// (unless a Put, or Flush, is waiting for it): when Puts come one at a time, a
// batch then holds a millisecond's worth instead of one chunk, and a Put wakes the
// writer only when the queue was empty or passes kLingerBytes.
constexpr uint64_t kLingerBytes = 256 << 10;
constexpr std::chrono::microseconds kLinger{1000};

// A chunk read from RocksDB enters the read cache on its second read within a while:
// each shard remembers the ids of its last reads from RocksDB, one in each of
// kReadTags slots (8 KiB a shard). A read that is the only one of its chunk (random
// access over a store much larger than the cache) then costs no copy into the cache
// and pushes nothing out of it.
constexpr size_t kReadTags = 1024;

// Read-ahead: a RocksDB read that continues a run of reads in storage order reads up
// to this many following sequence numbers, and at most kReadAheadBytes of them
// (capped at an eighth of the cache), into the read cache.
constexpr uint64_t kReadAheadChunks = 128;
constexpr uint64_t kReadAheadBytes = 512 << 10;
// A RocksDB read continues a run if it is at most this many sequence numbers
// before or after where the run's next read was expected (chunks of other traffic
// stored in between, or one pushed out of the cache before its turn). A run reads
// ahead from its third read on: random reads pass for a run about
// kRuns * (2 * kRunSlack)^2 / chunks^2 of the time, never on a store of any size.
// Runs tracked at once (one per connection replaying something, roughly):
constexpr uint64_t kRunSlack = 4;
constexpr int kRunReads = 3;
constexpr size_t kRuns = 8;

struct SeqKey {
  explicit SeqKey(uint64_t seq) { bytes::PutBe64(reinterpret_cast<uint8_t*>(bytes), seq); }
  rocksdb::Slice slice() const { return {bytes, sizeof bytes}; }
  char bytes[8];
};

std::string Hex(const ContentId& id) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : id) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

std::span<const uint8_t> Bytes(const rocksdb::Slice& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The first ten of a kind, then one in a thousand: a failing disk must not flood
// the journal. `count` is the number of events so far, this one included.
bool WorthLogging(uint64_t count) { return count <= 10 || count % 1000 == 0; }

std::string ErrnoText(int error) { return std::error_code(error, std::generic_category()).message(); }

bool WriteAll(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Makes `dir`'s entries (the SECRET just linked in) durable.
void SyncDirectory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

rocksdb::CompressionType ChunkCompression() {
  // LZ4: chunks are raw application data (DRE runs before LZ), often compressible,
  // and LZ4 decompresses an 8 KiB chunk in about a microsecond on the Get path.
  // RocksDB stores a block raw when it does not compress.
  for (auto type : rocksdb::GetSupportedCompressions()) {
    if (type == rocksdb::kLZ4Compression) return type;
  }
  return rocksdb::kNoCompression;
}

}  // namespace

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
  bool Contains(const ContentId& id) const override;
  Stats stats() const override;
  bool healthy() const override { return !degraded(); }
  std::string degraded_reason() const override;
  void Flush() override;

  void HoldWriter(bool hold);

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
    std::unordered_map<ContentId, Pending, IdHash> pending;
    ChunkCache cache;
    // The ids of recent reads from RocksDB, by their first 8 bytes (| 1: 0 is free),
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
  bool Rebuild(std::string* why);

  // Reads chunk `id`, verifies it and hands its bytes to `sink` (perhaps under a
  // shard's lock: `sink` only copies them); false on a miss.
  template <typename Sink>
  bool Read(const ContentId& id, Sink&& sink);
  // Caches the bytes of chunk `id` just read from RocksDB under `seq`, unless it
  // was evicted or dropped meanwhile.
  void CacheRead(const ContentId& id, uint64_t seq, std::span<const uint8_t> bytes);
  // Whether chunk `id`, just read from RocksDB, was read from it recently too (and
  // so goes in the cache); remembers this read either way.
  bool ReadBefore(const ContentId& id);
  // Where to read ahead from after reading `seq` from RocksDB: seq + 1 if that read
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
  void Drop(const ContentId& id, uint64_t seq, const std::string& reason);
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
  // Deletes the chunks family's files whose keys are all below `cursor`. Skipped when
  // another thread is at it: the next round covers these files too.
  // REQUIRES: the index entries below `cursor` are deleted on disk.
  void Reclaim(uint64_t cursor);

  const std::string path_;
  const uint64_t max_bytes_;
  // Each eviction round frees a little more than needed (1/64 of the store, at most
  // 8 MiB) so that its iterator and write are amortized over many Puts.
  const uint64_t evict_to_;
  // Reclaiming rewrites RocksDB's manifest; done once per this many evicted bytes.
  const uint64_t reclaim_every_;

  alignas(64) std::array<uint8_t, kSecretSize> secret_{};

  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* chunks_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* index_cf_ = nullptr;
  rocksdb::WriteOptions write_options_;

  mutable std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> next_seq_{1};
  std::atomic<uint64_t> bytes_{0};  // sizes of the chunks in the index; whoever removes an entry subtracts

  // Held for one eviction round: an iterator over the index family from the cursor
  // and one write; a few milliseconds at most. Reclaiming is not under it.
  std::mutex evict_mu_;
  uint64_t evict_cursor_ = 0;           // guarded by evict_mu_: every seq below is evicted
  uint64_t evicted_since_reclaim_ = 0;  // guarded by evict_mu_
  std::mutex reclaim_mu_;

  // The write queue. Sequence numbers are claimed under queue_mu_ (see the top).
  const uint64_t queue_limit_;
  const bool sync_writes_;
  mutable std::mutex queue_mu_;
  std::condition_variable work_cv_;      // the writer waits for chunks (or stop_)
  std::condition_variable progress_cv_;  // Puts wait for room, Flush for written_
  std::deque<Queued> queue_;             // guarded by queue_mu_
  uint64_t queued_bytes_ = 0;            // guarded: reserved, queued or being written
  uint64_t waiting_bytes_ = 0;           // guarded: the sizes of the chunks in queue_
  int urgent_ = 0;                       // guarded: threads waiting for the writer
  uint64_t enqueued_ = 0;                // guarded: chunks ever queued
  uint64_t written_ = 0;                 // guarded: ... whose write finished (or failed)
  bool stop_ = false;                    // guarded
  bool held_ = false;                    // guarded: testing::HoldWriter
  std::thread writer_;

  // Every write to RocksDB, under write_mu_ (see Writing).
  std::mutex write_mu_;
  std::atomic<bool> degraded_{false};
  mutable std::mutex degraded_mu_;
  std::string degraded_reason_;  // guarded by degraded_mu_

  const bool caching_;  // cache_bytes > 0
  // Runs of RocksDB reads in storage order, for read-ahead.
  const uint64_t read_ahead_bytes_;
  struct Run {
    uint64_t next = 0;  // the sequence number a read continuing it is expected near
    int reads = 0;      // RocksDB reads that made it so far
    uint64_t used = 0;  // run_clock_ when last continued, for replacing the oldest
  };
  std::mutex runs_mu_;
  std::array<Run, kRuns> runs_{};  // guarded by runs_mu_
  uint64_t run_clock_ = 0;         // guarded by runs_mu_

  std::atomic<uint64_t> puts_{0}, duplicates_{0}, hits_{0}, misses_{0}, evictions_{0},
      corrupt_dropped_{0}, write_errors_{0}, read_errors_{0}, memory_hits_{0}, queue_waits_{0};
};

namespace testing {
void HoldWriter(ChunkStore& store, bool hold) { static_cast<ChunkStoreImpl&>(store).HoldWriter(hold); }
}  // namespace testing

std::unique_ptr<ChunkStore> ChunkStore::Open(const ChunkStoreOptions& options, std::string* error,
                                             bool* misconfigured) {
  if (misconfigured) *misconfigured = false;
  std::error_code ec;
  auto status = std::filesystem::status(options.path, ec);
  if (options.path.empty() || ec == std::errc::not_a_directory ||
      (!ec && status.type() != std::filesystem::file_type::directory &&
       status.type() != std::filesystem::file_type::not_found)) {
    if (misconfigured) *misconfigured = true;
  }
  auto store = std::make_unique<ChunkStoreImpl>(options);
  std::string why;
  if (!store->Init(options, &why)) {
    if (error) *error = "datastore " + options.path + ": cannot open: " + why;
    return nullptr;
  }
  return store;
}

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
  // Not needed for durability (the log has it all), but the next Open then reads
  // table files instead of replaying up to max_total_wal_size of log: 1M small
  // chunks reopen in 0.5 s instead of 1.2 s. Not on a degraded store.
  rocksdb::Status s = Writing([&] { return db_->Flush({}, handles_); });
  if (!s.ok() && !s.IsAborted()) WANOPT_LOG(kWarn, kComponent) << path_ << ": flush at close: " << s.ToString();
  for (auto* handle : handles_) db_->DestroyColumnFamilyHandle(handle);
  db_->Close();
}

bool ChunkStoreImpl::Init(const ChunkStoreOptions& options, std::string* why) {
  auto start = std::chrono::steady_clock::now();
  if (path_.empty()) {
    *why = "no path given";
    return false;
  }
  std::error_code ec;
  std::filesystem::create_directories(path_, ec);
  if (ec) {
    *why = "cannot create the directory: " + ec.message();
    return false;
  }
  if (!std::filesystem::is_directory(path_, ec)) {
    *why = "not a directory";
    return false;
  }
  if (!LoadOrCreateSecret(why) || !OpenDatabase(options, why) || !CheckMeta(why)) return false;
  auto rebuild_start = std::chrono::steady_clock::now();
  if (!Rebuild(why)) return false;
  auto rebuild_end = std::chrono::steady_clock::now();
  if (bytes_.load() > max_bytes_) Evict();  // max_bytes may have been lowered
  uint64_t cursor;
  {
    std::lock_guard lock(evict_mu_);
    cursor = evict_cursor_;
  }
  Reclaim(cursor);  // files left by evictions before a restart
  writer_ = std::thread([this] { WriterLoop(); });
  using std::chrono::milliseconds, std::chrono::duration_cast;
  auto millis = duration_cast<milliseconds>(std::chrono::steady_clock::now() - start).count();
  auto rebuild_millis = duration_cast<milliseconds>(rebuild_end - rebuild_start).count();
  Stats s = stats();
  WANOPT_LOG(kInfo, kComponent) << path_ << ": opened with " << s.chunks << " chunks, " << s.bytes
                                << " bytes, in " << millis << " ms (index: " << rebuild_millis << " ms)";
  return true;
}

bool ChunkStoreImpl::LoadOrCreateSecret(std::string* why) {
  std::string file = path_ + "/" + kSecretFile;
  for (;;) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      struct stat st {};
      ssize_t n = -1;
      if (::fstat(fd, &st) == 0 && st.st_size == static_cast<off_t>(kSecretSize)) {
        n = ::read(fd, secret_.data(), kSecretSize);
      }
      ::close(fd);
      if (n != static_cast<ssize_t>(kSecretSize)) {
        *why = file + " is damaged (it must hold exactly 192 bytes); remove the directory to start an empty store";
        return false;
      }
      return true;
    }
    if (errno != ENOENT) {
      *why = "cannot read " + file + ": " + ErrnoText(errno);
      return false;
    }
    // Chunks stored under a lost secret could never be verified again.
    if (std::filesystem::exists(path_ + "/CURRENT")) {
      *why = file + " is missing but the database is there; remove the directory to start an empty store";
      return false;
    }
    bool lost_race = false;
    if (!CreateSecret(file, &lost_race, why)) return false;
    if (!lost_race) return true;
    // Another process created the store at the same moment: use its secret.
  }
}

bool ChunkStoreImpl::CreateSecret(const std::string& file, bool* lost_race, std::string* why) {
  for (size_t got = 0; got < kSecretSize;) {
    ssize_t n = ::getrandom(secret_.data() + got, kSecretSize - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *why = "getrandom: " + ErrnoText(errno);
      return false;
    }
    got += static_cast<size_t>(n);
  }
  // Written aside, then linked into place (link, unlike rename, never replaces a
  // SECRET another process made meanwhile), and before the database exists: a crash
  // leaves either no SECRET and no database, or a complete SECRET.
  std::string temp = file + ".tmp." + std::to_string(::getpid());
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *why = "cannot create " + temp + ": " + ErrnoText(errno);
    return false;
  }
  bool ok = WriteAll(fd, secret_.data(), kSecretSize) && ::fsync(fd) == 0;
  int error = errno;
  ::close(fd);
  if (ok && ::link(temp.c_str(), file.c_str()) != 0) {
    ok = false;
    error = errno;
  }
  ::unlink(temp.c_str());
  if (!ok && error == EEXIST) {
    *lost_race = true;
    return true;
  }
  if (!ok) {
    *why = "cannot write " + file + ": " + ErrnoText(error);
    return false;
  }
  SyncDirectory(path_);
  return true;
}

bool ChunkStoreImpl::OpenDatabase(const ChunkStoreOptions& options, std::string* why) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  db_options.max_background_jobs = 2;
  // The index family's memtable fills slowly; this bound makes RocksDB flush it so
  // old log files can go, instead of keeping gigabytes of log for it.
  db_options.max_total_wal_size = 256 << 20;
  db_options.bytes_per_sync = 1 << 20;  // write back gradually, not in flush-sized bursts
  db_options.wal_bytes_per_sync = 1 << 20;
  // RocksDB's messages go to the journal, not to a LOG file on the store's disk,
  // and its background errors degrade the store (rocksdb_hooks.h).
  db_options.info_log = MakeJournalLogger(path_, rocksdb::InfoLogLevel::ERROR_LEVEL);
  db_options.listeners.push_back(
      MakeErrorListener([this](const rocksdb::Status& s) { Degrade("cannot write: " + s.ToString()); }));

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  // Index blocks of the table files (one entry per chunk-sized block) are charged to
  // the block cache rather than held outside any bound.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  auto table_factory = std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(table));

  rocksdb::ColumnFamilyOptions chunk_options;
  chunk_options.table_factory = table_factory;
  chunk_options.compression = ChunkCompression();
  chunk_options.level_compaction_dynamic_level_bytes = true;

  rocksdb::ColumnFamilyOptions index_options;
  index_options.table_factory = table_factory;
  index_options.write_buffer_size = 16 << 20;
  index_options.level_compaction_dynamic_level_bytes = true;

  rocksdb::ColumnFamilyOptions meta_options;
  meta_options.table_factory = table_factory;
  meta_options.write_buffer_size = 1 << 20;

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, meta_options},
      {kChunksFamily, chunk_options},
      {kIndexFamily, index_options},
  };
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, path_, families, &handles_, &db);
  if (!s.ok()) {
    if (s.IsCorruption()) {
      *why = "the database is corrupted (" + s.ToString() +
             "); it was left as it is: move or remove the directory to start an empty store";
    } else if (s.ToString().find("/LOCK") != std::string::npos &&
               (s.ToString().find("lock hold by current process") != std::string::npos ||
                s.ToString().find("Resource temporarily unavailable") != std::string::npos)) {
      *why = "already open, by this or another process (" + s.ToString() + ")";
    } else {
      *why = s.ToString();
    }
    return false;
  }
  db_.reset(db);
  meta_cf_ = handles_[0];
  chunks_cf_ = handles_[1];
  index_cf_ = handles_[2];
  return true;
}

bool ChunkStoreImpl::CheckMeta(std::string* why) {
  std::span<const uint8_t> check_text(reinterpret_cast<const uint8_t*>(kSecretCheck), sizeof kSecretCheck - 1);
  ContentId check = IdOf(check_text);
  rocksdb::Slice check_slice(reinterpret_cast<const char*>(check.data()), check.size());
  std::string format, stored_check;
  rocksdb::Status s1 = db_->Get({}, meta_cf_, kFormatKey, &format);
  rocksdb::Status s2 = db_->Get({}, meta_cf_, kSecretCheckKey, &stored_check);
  if ((!s1.ok() && !s1.IsNotFound()) || (!s2.ok() && !s2.IsNotFound())) {
    *why = "cannot read the store's format: " + (s1.ok() ? s2 : s1).ToString();
    return false;
  }
  if (s1.ok() && format != kFormat) {
    *why = "unknown store format '" + format + "' (this version reads format " + kFormat + ")";
    return false;
  }
  if (s2.ok() && rocksdb::Slice(stored_check) != check_slice) {
    *why = std::string(kSecretFile) +
           " is not the secret this database was written with; remove the directory to start an empty store";
    return false;
  }
  if (s1.ok() && s2.ok()) return true;
  // A new database (or one whose first Open crashed before this write). SECRET was
  // made before the database, so any chunk in it was stored under this secret.
  rocksdb::WriteBatch batch;
  batch.Put(meta_cf_, kFormatKey, kFormat);
  batch.Put(meta_cf_, kSecretCheckKey, check_slice);
  rocksdb::WriteOptions sync;
  sync.sync = true;
  rocksdb::Status s = Writing([&] { return db_->Write(sync, &batch); });
  if (!s.ok()) {
    *why = "cannot write: " + s.ToString();
    return false;
  }
  return true;
}

bool ChunkStoreImpl::Rebuild(std::string* why) {
  uint64_t estimate = 0;
  if (db_->GetIntProperty(index_cf_, "rocksdb.estimate-num-keys", &estimate)) {
    for (auto& shard : shards_) shard.index.Reserve(estimate / kShards);
  }
  rocksdb::ReadOptions scan;
  scan.fill_cache = false;           // read once, not worth caching
  scan.readahead_size = 4 << 20;     // one sequential pass
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(scan, index_cf_));
  rocksdb::WriteBatch fix;
  uint64_t first = 0, last = 0, bytes = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    rocksdb::Slice key = it->key(), value = it->value();
    if (key.size() != sizeof(SeqKey::bytes) || value.size() != kIndexValueSize) {
      fix.Delete(index_cf_, key);  // not something this code writes; forget it
      continue;
    }
    uint64_t seq = bytes::GetBe64(reinterpret_cast<const uint8_t*>(key.data()));
    ContentId id;
    std::memcpy(id.data(), value.data(), id.size());
    uint32_t size = bytes::GetBe32(reinterpret_cast<const uint8_t*>(value.data()) + id.size());
    if (seq == 0 || (seq & ChunkIndex::kPending)) {
      fix.Delete(index_cf_, key);
      continue;
    }
    ChunkIndex& index = ShardOf(id).index;
    if (index.Find(id) != 0) {  // the same chunk twice: keep the older entry
      fix.Delete(index_cf_, key);
      continue;
    }
    index.Insert(id, seq);
    bytes += size;
    if (first == 0) first = seq;
    last = seq;
  }
  if (!it->status().ok()) {
    *why = it->status().IsCorruption()
               ? "the database is corrupted (" + it->status().ToString() +
                     "); it was left as it is: move or remove the directory to start an empty store"
               : "cannot read the index: " + it->status().ToString();
    return false;
  }
  it.reset();
  if (fix.Count() > 0) {
    WANOPT_LOG(kWarn, kComponent) << path_ << ": removing " << fix.Count() << " malformed or repeated index entries";
    Writing([&] { return db_->Write(write_options_, &fix); });
  }
  // Chunk bytes may outlive their index entry (evicted, not yet reclaimed): new
  // sequence numbers start above both, so no key is ever written twice.
  std::unique_ptr<rocksdb::Iterator> chunks(db_->NewIterator({}, chunks_cf_));
  chunks->SeekToLast();
  if (chunks->Valid() && chunks->key().size() == sizeof(SeqKey::bytes)) {
    last = std::max(last, bytes::GetBe64(reinterpret_cast<const uint8_t*>(chunks->key().data())));
  }
  next_seq_ = last + 1;
  bytes_ = bytes;
  std::lock_guard lock(evict_mu_);
  evict_cursor_ = first != 0 ? first : last + 1;
  return true;
}

ContentId ChunkStoreImpl::IdOf(std::span<const uint8_t> chunk) const {
  XXH128_hash_t hash = XXH3_128bits_withSecret(chunk.data(), chunk.size(), secret_.data(), secret_.size());
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  ContentId id;
  std::memcpy(id.data(), canonical.digest, id.size());
  return id;
}

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
    {
      std::unique_lock lock(queue_mu_);
      // Closing writes the queue out, held or not.
      work_cv_.wait(lock, [&] { return stop_ || (!held_ && !queue_.empty()); });
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
    WriteBatchOut(batch);
    batch.clear();
  }
}

void ChunkStoreImpl::WriteBatchOut(std::vector<Queued>& batch) {
  uint64_t bytes = 0;
  for (const auto& q : batch) bytes += q.blob.size;
  rocksdb::WriteBatch write(bytes + batch.size() * 64 + 64);
  for (const auto& q : batch) {
    SeqKey key(q.seq);
    char entry[kIndexValueSize];
    std::memcpy(entry, q.id.data(), q.id.size());
    bytes::PutBe32(reinterpret_cast<uint8_t*>(entry) + q.id.size(), q.blob.size);
    write.Put(chunks_cf_, key.slice(), {reinterpret_cast<const char*>(q.blob.data.get()), q.blob.size});
    write.Put(index_cf_, key.slice(), {entry, sizeof entry});
  }
  rocksdb::Status s = Writing([&] { return db_->Write(write_options_, &write); });
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
    // On disk: Get reads it from RocksDB (or the cache) from now on. Evicted
    // meanwhile (once on disk, eviction may take it before this), nothing to do.
    if (shard.index.Update(q.id, q.seq | ChunkIndex::kPending, q.seq)) shard.pending.erase(q.id);
  }
  // Logged once, by Degrade.
  if (!s.ok()) write_errors_.fetch_add(batch.size());
  {
    std::lock_guard lock(queue_mu_);
    queued_bytes_ -= charge;
    written_ += batch.size();
  }
  progress_cv_.notify_all();
}

bool ChunkStoreImpl::RemoveLocked(Shard& shard, const ContentId& id, uint64_t seq) {
  if (!shard.index.Erase(id, seq)) return false;
  if (auto it = shard.pending.find(id); it != shard.pending.end() && it->second.seq == seq) {
    shard.pending.erase(it);
  }
  shard.cache.Erase(id);
  return true;
}

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
    rocksdb::Slice key = it->key(), value = it->value();
    batch.Delete(index_cf_, key);
    if (key.size() != sizeof(SeqKey::bytes)) continue;
    uint64_t seq = bytes::GetBe64(reinterpret_cast<const uint8_t*>(key.data()));
    evict_cursor_ = seq + 1;
    if (value.size() != kIndexValueSize) continue;
    ContentId id;
    std::memcpy(id.data(), value.data(), id.size());
    uint32_t size = bytes::GetBe32(reinterpret_cast<const uint8_t*>(value.data()) + id.size());
    Shard& shard = ShardOf(id);
    bool erased;
    {
      std::lock_guard shard_lock(shard.mu);
      erased = RemoveLocked(shard, id, seq);
    }
    if (erased) {  // else dropped as corrupt meanwhile; its dropper counted it
      bytes_.fetch_sub(size);
      evictions_.fetch_add(1, std::memory_order_relaxed);
      freed += size;
    }
  }
  rocksdb::Status s = it->status();
  it.reset();
  if (s.ok() && batch.Count() > 0) s = Writing([&] { return db_->Write(write_options_, &batch); });
  if (!s.ok()) {
    // The chunks are out of the in-memory index already. Their entries stay on disk
    // (the next round deletes them; a restart before that brings them back as stored
    // chunks), and so must their bytes: the cursor goes back.
    evict_cursor_ = round_start;
    uint64_t n = write_errors_.fetch_add(1) + 1;
    if (!s.IsAborted() && WorthLogging(n)) {
      WANOPT_LOG(kError, kComponent) << path_ << ": eviction: " << s.ToString();
    }
    return;
  }
  evicted_since_reclaim_ += freed;
  if (evicted_since_reclaim_ < reclaim_every_) return;
  evicted_since_reclaim_ = 0;
  uint64_t cursor = evict_cursor_;
  lock.unlock();
  Reclaim(cursor);
}

void ChunkStoreImpl::Reclaim(uint64_t cursor) {
  std::unique_lock lock(reclaim_mu_, std::try_to_lock);
  if (!lock) return;
  SeqKey end(cursor);
  rocksdb::Slice end_slice = end.slice();
  rocksdb::Status s = Writing([&] {
    return rocksdb::DeleteFilesInRange(db_.get(), chunks_cf_, nullptr, &end_slice, /*include_end=*/false);
  });
  if (!s.ok() && !s.IsAborted()) {
    WANOPT_LOG(kWarn, kComponent) << path_ << ": cannot delete evicted chunk files: " << s.ToString();
  }
}

bool ChunkStoreImpl::Contains(const ContentId& id) const {
  Shard& shard = ShardOf(id);
  std::lock_guard lock(shard.mu);
  return shard.index.Find(id) != 0;
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

void ChunkStoreImpl::Flush() {
  uint64_t target;
  {
    std::lock_guard lock(queue_mu_);
    target = enqueued_;
  }
  WaitForWriter(target);
  // A failure degrades the store, which logs it.
  Writing([&] { return db_->FlushWAL(/*sync=*/true); });
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

template <typename Write>
rocksdb::Status ChunkStoreImpl::Writing(Write&& write) {
  std::lock_guard lock(write_mu_);
  if (degraded()) return rocksdb::Status::Aborted("the datastore is degraded");
  rocksdb::Status s = write();
  if (!s.ok()) Degrade("cannot write: " + s.ToString());
  return s;
}

}  // namespace wanopt::datastore
