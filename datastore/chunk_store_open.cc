// ChunkStore::Open: the directory, the secret, the database, the in-memory index.
#include "datastore/chunk_store_impl.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include "datastore/rocksdb_hooks.h"

namespace wanopt::datastore {
namespace {

constexpr char kSecretFile[] = "SECRET";
constexpr char kSegmentsDir[] = "segments";
// Format 1 kept the chunks' bytes in this family (chunk_store.cc).
constexpr char kFormat1ChunksFamily[] = "chunks";
constexpr char kIndexFamily[] = "index";
constexpr char kFormatKey[] = "format";
constexpr char kFormat[] = "2";
constexpr char kFormat1[] = "1";
constexpr char kSecretCheckKey[] = "secret-check";
// Hashed with the secret and kept in the database: a SECRET file that is not the one
// the chunks were stored with (restored from elsewhere, regenerated) fails Open
// instead of turning every stored chunk into a verification failure.
constexpr char kSecretCheck[] = "wanopt datastore secret check";

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


}  // namespace

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
  if (!segments_.Open(path_ + "/" + kSegmentsDir, segment_bytes_, why) || !Rebuild(why)) return false;
  if (size_t dropped = segments_.DropUnindexed()) {
    WANOPT_LOG(kInfo, kComponent) << path_ << ": removed " << dropped
                                  << " segment(s) with no indexed chunk (evicted, or written just before a crash)";
  }
  auto rebuild_end = std::chrono::steady_clock::now();
  if (bytes_.load() > max_bytes_) Evict();  // max_bytes may have been lowered
  uint64_t cursor;
  {
    std::lock_guard lock(evict_mu_);
    cursor = evict_cursor_;
  }
  Reclaim(cursor);  // segments left by evictions before a restart
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
  // Closing flushes the memtables itself when healthy (the destructor); a degraded
  // store must write nothing more, and RocksDB's own close would try to.
  db_options.avoid_flush_during_shutdown = true;
  // The log has every index entry (36 bytes a chunk): this bound makes RocksDB
  // flush so that old log files can go.
  db_options.max_total_wal_size = 64 << 20;
  db_options.bytes_per_sync = 1 << 20;  // write back gradually, not in flush-sized bursts
  db_options.wal_bytes_per_sync = 1 << 20;
  // RocksDB's messages go to the journal, not to a LOG file on the store's disk,
  // and its background errors degrade the store (rocksdb_hooks.h).
  db_options.info_log = MakeJournalLogger(path_, rocksdb::InfoLogLevel::ERROR_LEVEL);
  db_options.listeners.push_back(
      MakeErrorListener([this](const rocksdb::Status& s) { Degrade("cannot write: " + s.ToString()); }));

  rocksdb::BlockBasedTableOptions table;
  block_cache_ = rocksdb::NewLRUCache(options.block_cache_bytes);
  table.block_cache = block_cache_;
  // The table files' own index blocks are charged to the block cache rather than
  // held outside any bound.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  auto table_factory = std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(table));

  rocksdb::ColumnFamilyOptions index_options;
  index_options.table_factory = table_factory;
  // Ids are keyed hashes: compressing them costs CPU (Snappy took 1% of the
  // pipeline's on novel data) and saves nothing.
  index_options.compression = rocksdb::kNoCompression;
  index_options.write_buffer_size = 16 << 20;
  index_options.level_compaction_dynamic_level_bytes = true;

  rocksdb::ColumnFamilyOptions meta_options;
  meta_options.table_factory = table_factory;
  meta_options.write_buffer_size = 1 << 20;

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, meta_options},
      {kIndexFamily, index_options},
  };
  // A format 1 store has a chunks family, which must be opened to be dropped.
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, path_, &existing).ok() &&
      std::find(existing.begin(), existing.end(), kFormat1ChunksFamily) != existing.end()) {
    families.push_back({kFormat1ChunksFamily, {}});
  }
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
  index_cf_ = handles_[1];
  if (handles_.size() > 2) {
    format1_chunks_cf_ = handles_[2];
  }
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
  if (s1.ok() && format == kFormat1) {
    if (!EmptyFormat1(why)) return false;
    s1 = rocksdb::Status::NotFound();  // written below
  } else if (s1.ok() && format != kFormat) {
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
  // Out of the log at once: RocksDB keeps every log file from the oldest one with an
  // unflushed write, and nothing else is ever written to this family. Left in the
  // log, it kept every later log file until max_total_wal_size forced a flush
  // (a 64 MiB store's directory grew by 60 MiB in the soak).
  if (s.ok()) s = Writing([&] { return db_->Flush({}, meta_cf_); });
  if (!s.ok()) {
    *why = "cannot write: " + s.ToString();
    return false;
  }
  return true;
}

bool ChunkStoreImpl::EmptyFormat1(std::string* why) {
  // Its index entries name chunks in the chunks family: all go, and the family with
  // them. A cache's loss, once, at the upgrade.
  const std::string all_keys_end(sizeof(SeqKey::bytes) + 1, '\xff');
  rocksdb::WriteOptions sync;
  sync.sync = true;
  rocksdb::Status s = Writing([&] { return db_->DeleteRange(sync, index_cf_, "", all_keys_end); });
  if (s.ok() && format1_chunks_cf_) {
    s = Writing([&] { return db_->DropColumnFamily(format1_chunks_cf_); });
    if (s.ok()) {
      handles_.erase(std::find(handles_.begin(), handles_.end(), format1_chunks_cf_));
      db_->DestroyColumnFamilyHandle(format1_chunks_cf_);
      format1_chunks_cf_ = nullptr;
    }
  }
  if (!s.ok()) {
    *why = "cannot empty the format 1 store: " + s.ToString();
    return false;
  }
  WANOPT_LOG(kWarn, kComponent) << path_ << ": a format 1 store (chunks inside RocksDB, from an earlier version): "
                                << "emptied for format 2 (segment files); its chunks are learnt again as they cross";
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
  uint64_t first = 0, last = 0, bytes = 0, gone = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    rocksdb::Slice key = it->key();
    IndexEntry entry;
    if (key.size() != sizeof(SeqKey::bytes) || !entry.Parse(it->value())) {
      fix.Delete(index_cf_, key);  // not something this code writes; forget it
      continue;
    }
    uint64_t seq = bytes::GetBe64(reinterpret_cast<const uint8_t*>(key.data()));
    if (seq == 0 || (seq & ChunkIndex::kPending)) {
      fix.Delete(index_cf_, key);
      continue;
    }
    ChunkIndex& index = ShardOf(entry.id).index;
    if (index.Find(entry.id) != 0) {  // the same chunk twice: keep the older entry
      fix.Delete(index_cf_, key);
      continue;
    }
    // Its bytes are gone: a segment lost with the disk, or cut short by a crash.
    if (!segments_.NoteIndexed(entry.at, entry.size, seq)) {
      fix.Delete(index_cf_, key);
      ++gone;
      continue;
    }
    index.Insert(entry.id, seq);
    bytes += entry.size;
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
    WANOPT_LOG(kWarn, kComponent) << path_ << ": removing " << fix.Count() << " index entries: " << gone
                                  << " whose bytes are gone, the others malformed or repeated";
    Writing([&] { return db_->Write(write_options_, &fix); });
  }
  // Segments are never appended to after a restart (Open starts a new one), so new
  // sequence numbers need only start above the indexed ones.
  next_seq_ = last + 1;
  bytes_ = bytes;
  std::lock_guard lock(evict_mu_);
  evict_cursor_ = first != 0 ? first : last + 1;
  return true;
}

}  // namespace wanopt::datastore
