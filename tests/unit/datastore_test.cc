// The DRE chunk store: round trips, eviction order, restarts, corrupted values, a
// kill -9 mid-write, the write queue (reads of queued chunks, Flush, backpressure,
// what a kill -9 loses), the read cache and read-ahead, concurrency, and the errors
// Open reports. Every test works in a fresh directory under /tmp, removed at its end.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include <rocksdb/db.h>

#include "datastore/chunk_index.h"
#include "datastore/chunk_store.h"
#include "datastore/testing.h"
#include "util/log.h"

using namespace wanopt;
using namespace wanopt::datastore;
namespace fs = std::filesystem;

namespace {

using Chunk = std::vector<uint8_t>;

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/wanopt-datastore-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path_ = name;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // A directory inside, not yet created: where a store goes.
  std::string store() const { return path_ + "/store"; }

 private:
  std::string path_;
};

Chunk RandomChunk(std::mt19937_64& rng, size_t size) {
  Chunk chunk(size);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t r = rng();
    std::memcpy(chunk.data() + i, &r, std::min<size_t>(8, size - i));
  }
  return chunk;
}

// Sizes from 1 B to 64 KiB, spread evenly over the orders of magnitude.
size_t RandomSize(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> log_size(0, 16);
  return static_cast<size_t>(std::pow(2.0, log_size(rng)));
}

// Chunk number i of a deterministic sequence: a child process and its parent agree
// on it without talking.
Chunk NthChunk(uint64_t i) {
  std::mt19937_64 rng(i * 7919 + 1);
  return RandomChunk(rng, 1 + rng() % (16 << 10));
}

std::unique_ptr<ChunkStore> OpenStore(const std::string& path, uint64_t max_bytes = uint64_t{1} << 30) {
  std::string error;
  auto store = ChunkStore::Open({.path = path, .max_bytes = max_bytes, .block_cache_bytes = 4 << 20}, &error);
  REQUIRE_MESSAGE(store, error);
  return store;
}

std::unique_ptr<ChunkStore> OpenWith(const ChunkStoreOptions& options) {
  std::string error;
  auto store = ChunkStore::Open(options, &error);
  REQUIRE_MESSAGE(store, error);
  return store;
}

std::string OpenError(const std::string& path) {
  std::string error;
  auto store = ChunkStore::Open({.path = path}, &error);
  CHECK(store == nullptr);
  return error;
}

// Rewrites, straight through RocksDB, the stored value equal to `original`, as a
// failing disk or a torn write would. The store must be closed.
void RewriteStoredValue(const std::string& path, const Chunk& original, const Chunk& replacement) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies({}, path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const auto& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  REQUIRE(rocksdb::DB::Open({}, path, families, &handles, &db).ok());
  rocksdb::Slice wanted(reinterpret_cast<const char*>(original.data()), original.size());
  int rewritten = 0;
  for (auto* handle : handles) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, handle));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (it->value() != wanted) continue;
      REQUIRE(db->Put({}, handle, it->key(),
                      rocksdb::Slice(reinterpret_cast<const char*>(replacement.data()), replacement.size()))
                  .ok());
      ++rewritten;
    }
  }
  for (auto* handle : handles) db->DestroyColumnFamilyHandle(handle);
  delete db;
  REQUIRE(rewritten == 1);
}

}  // namespace

TEST_SUITE("datastore") {

TEST_CASE("chunks of 1 B to 64 KiB come back byte for byte") {
  TempDir dir;
  auto store = OpenStore(dir.store());
  std::mt19937_64 rng(1);
  std::vector<Chunk> chunks;
  std::vector<ContentId> ids;
  uint64_t total = 0;
  std::set<std::string> seen;  // tiny random chunks repeat; keep them distinct
  while (chunks.size() < 300) {
    Chunk chunk = RandomChunk(rng, chunks.empty() ? 1 : chunks.size() == 1 ? 64 << 10 : RandomSize(rng));
    if (!seen.emplace(chunk.begin(), chunk.end()).second) continue;
    chunks.push_back(chunk);
    ids.push_back(store->Put(chunks.back()));
    total += chunks.back().size();
    CHECK(ids.back() == store->IdOf(chunks.back()));
    CHECK(store->Contains(ids.back()));
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    auto got = store->Get(ids[i]);
    REQUIRE(got);
    CHECK(*got == chunks[i]);
    Buffer out;
    out.Append(std::span<const uint8_t>(chunks[0]));  // GetInto appends
    REQUIRE(store->GetInto(ids[i], out));
    CHECK(out.size() == chunks[0].size() + chunks[i].size());
    CHECK(std::equal(chunks[i].begin(), chunks[i].end(), out.data() + chunks[0].size()));
  }
  // Storing again is a no-op that returns the same id.
  CHECK(store->Put(chunks[7]) == ids[7]);
  auto stats = store->stats();
  CHECK(stats.chunks == 300);
  CHECK(stats.bytes == total);
  CHECK(stats.puts == 301);
  CHECK(stats.duplicates == 1);
  CHECK(stats.hits == 600);
  CHECK(stats.misses == 0);
  CHECK(stats.evictions == 0);
  CHECK(stats.corrupt_dropped == 0);
}

TEST_CASE("an unknown id is a miss, and Contains says no without a Get") {
  TempDir dir;
  auto store = OpenStore(dir.store());
  std::mt19937_64 rng(2);
  Chunk stored = RandomChunk(rng, 100), never = RandomChunk(rng, 100);
  store->Put(stored);
  ContentId unknown = store->IdOf(never);
  CHECK_FALSE(store->Contains(unknown));
  CHECK_FALSE(store->Get(unknown));
  Buffer out;
  out.Append(std::span<const uint8_t>(stored));
  CHECK_FALSE(store->GetInto(unknown, out));
  CHECK(out.size() == stored.size());  // left alone
  CHECK(store->stats().misses == 2);
}

TEST_CASE("ids are keyed with each store's own secret") {
  TempDir a, b;
  auto one = OpenStore(a.store());
  auto two = OpenStore(b.store());
  std::mt19937_64 rng(3);
  Chunk chunk = RandomChunk(rng, 4096);
  CHECK(one->IdOf(chunk) == one->IdOf(chunk));
  CHECK(one->IdOf(chunk) != two->IdOf(chunk));
  struct stat st {};
  REQUIRE(::stat((a.store() + "/SECRET").c_str(), &st) == 0);
  CHECK(st.st_size == 192);
  CHECK((st.st_mode & 0777) == 0600);
  // The empty chunk is a chunk like any other.
  ContentId empty = one->Put({});
  auto got = one->Get(empty);
  REQUIRE(got);
  CHECK(got->empty());
}

TEST_CASE("eviction keeps the stored bytes within max_bytes, oldest first, hits or not") {
  TempDir dir;
  constexpr uint64_t kMax = 256 << 10;
  auto store = OpenStore(dir.store(), kMax);
  std::mt19937_64 rng(4);
  std::vector<Chunk> chunks;
  std::vector<ContentId> ids;
  for (int i = 0; i < 200; ++i) {
    chunks.push_back(RandomChunk(rng, 4096 + rng() % 4096));
    ids.push_back(store->Put(chunks.back()));
    CHECK(store->stats().bytes <= kMax);
    // Chunk 0 is read after every Put: reading does not keep it.
    store->Get(ids[0]);
  }
  // What is left is exactly the newest chunks: a prefix is gone, the rest is there.
  size_t first_kept = 0;
  while (first_kept < ids.size() && !store->Contains(ids[first_kept])) ++first_kept;
  CHECK(first_kept > 0);
  uint64_t kept_bytes = 0;
  for (size_t i = first_kept; i < ids.size(); ++i) {
    CHECK(store->Contains(ids[i]));
    auto got = store->Get(ids[i]);
    REQUIRE(got);
    CHECK(*got == chunks[i]);
    kept_bytes += chunks[i].size();
  }
  auto stats = store->stats();
  CHECK(stats.bytes == kept_bytes);
  CHECK(stats.chunks == ids.size() - first_kept);
  CHECK(stats.evictions == first_kept);
  CHECK(kept_bytes > kMax - 16 * 8192);  // evicts what it must, and not much more
  for (size_t i = 0; i < first_kept; ++i) CHECK_FALSE(store->Get(ids[i]));
  // A Put of a chunk already there does not make it younger either.
  store->Put(chunks[first_kept]);
  for (int i = 0; i < 4; ++i) store->Put(RandomChunk(rng, 8192));
  CHECK_FALSE(store->Contains(ids[first_kept]));
  // A chunk bigger than the whole store is not stored.
  Chunk huge = RandomChunk(rng, kMax + 1);
  CHECK_FALSE(store->Contains(store->Put(huge)));
}

TEST_CASE("reopening keeps the chunks, the secret and the eviction order") {
  TempDir dir;
  std::mt19937_64 rng(5);
  std::vector<Chunk> chunks;
  std::vector<ContentId> ids;
  ChunkStore::Stats before;
  {
    auto store = OpenStore(dir.store());
    for (int i = 0; i < 100; ++i) {
      chunks.push_back(RandomChunk(rng, 1 + rng() % 10000));
      ids.push_back(store->Put(chunks.back()));
    }
    before = store->stats();
  }
  {
    auto store = OpenStore(dir.store());
    for (size_t i = 0; i < chunks.size(); ++i) {
      CHECK(store->IdOf(chunks[i]) == ids[i]);
      CHECK(store->Contains(ids[i]));
      auto got = store->Get(ids[i]);
      REQUIRE(got);
      CHECK(*got == chunks[i]);
    }
    CHECK(store->stats().chunks == before.chunks);
    CHECK(store->stats().bytes == before.bytes);
  }
  // Reopened smaller: the oldest go first, at Open; then new chunks push out the
  // rest of the old ones before any of their own.
  uint64_t half = before.bytes / 2;
  auto store = OpenStore(dir.store(), half);
  CHECK(store->stats().bytes <= half);
  CHECK_FALSE(store->Contains(ids.front()));
  CHECK(store->Contains(ids.back()));
  std::vector<ContentId> fresh;
  for (int i = 0; i < 20; ++i) fresh.push_back(store->Put(RandomChunk(rng, 1000)));
  CHECK(store->stats().bytes <= half);
  for (const auto& id : fresh) CHECK(store->Contains(id));
  size_t first_kept = 0;
  while (first_kept < ids.size() && !store->Contains(ids[first_kept])) ++first_kept;
  for (size_t i = first_kept; i < ids.size(); ++i) CHECK(store->Contains(ids[i]));
}

TEST_CASE("deleting the directory while closed gives an empty store") {
  TempDir dir;
  std::mt19937_64 rng(6);
  Chunk chunk = RandomChunk(rng, 1000);
  ContentId old_id;
  {
    auto store = OpenStore(dir.store());
    old_id = store->Put(chunk);
  }
  fs::remove_all(dir.store());
  auto store = OpenStore(dir.store());
  CHECK(store->stats().chunks == 0);
  CHECK(store->stats().bytes == 0);
  CHECK_FALSE(store->Contains(old_id));
  CHECK(store->IdOf(chunk) != old_id);  // a new secret
  ContentId id = store->Put(chunk);
  CHECK(store->Get(id) == chunk);
}

TEST_CASE("a corrupted value is dropped on Get, counted, logged, and can be stored again") {
  TempDir dir;
  std::mt19937_64 rng(7);
  Chunk flipped = RandomChunk(rng, 5000), torn = RandomChunk(rng, 9000), intact = RandomChunk(rng, 3000);
  ContentId flipped_id, torn_id, intact_id;
  {
    auto store = OpenStore(dir.store());
    flipped_id = store->Put(flipped);
    torn_id = store->Put(torn);
    intact_id = store->Put(intact);
  }
  Chunk bad = flipped;
  bad[1234] ^= 0x10;
  RewriteStoredValue(dir.store(), flipped, bad);
  RewriteStoredValue(dir.store(), torn, Chunk(torn.begin(), torn.begin() + 4096));

  auto store = OpenStore(dir.store());
  CHECK(store->Contains(flipped_id));  // the index cannot know before reading
  log::StartCapture();
  CHECK_FALSE(store->Get(flipped_id));
  CHECK(store->stats().corrupt_dropped == 1);
  CHECK_FALSE(store->Contains(flipped_id));
  CHECK_FALSE(store->Get(flipped_id));  // dropped: a plain miss now
  CHECK(store->stats().corrupt_dropped == 1);
  Buffer out;
  CHECK_FALSE(store->GetInto(torn_id, out));
  CHECK(out.empty());
  CHECK(store->Get(intact_id) == intact);
  auto stats = store->stats();
  CHECK(stats.corrupt_dropped == 2);
  CHECK(stats.chunks == 1);
  CHECK(stats.bytes == intact.size());
  std::string logged = log::Captured();
  CHECK(logged.find("WARN datastore: ") != std::string::npos);
  CHECK(logged.find("dropped chunk") != std::string::npos);
  CHECK(logged.find("(1 dropped so far)") != std::string::npos);
  CHECK(logged.find("(2 dropped so far)") != std::string::npos);

  CHECK(store->Put(flipped) == flipped_id);
  CHECK(store->Get(flipped_id) == flipped);
  store.reset();
  store = OpenStore(dir.store());
  CHECK(store->Get(flipped_id) == flipped);
  CHECK_FALSE(store->Contains(torn_id));
  CHECK(store->stats().bytes == flipped.size() + intact.size());
}

TEST_CASE("a damaged block in a table file is caught by RocksDB's checksum and dropped") {
  TempDir dir;
  std::mt19937_64 rng(11);
  Chunk damaged = RandomChunk(rng, 30000), intact = RandomChunk(rng, 30000);
  ContentId damaged_id, intact_id;
  {
    auto store = OpenStore(dir.store());
    damaged_id = store->Put(damaged);
    intact_id = store->Put(intact);
  }  // closing flushes the chunks into a table file
  // Random bytes do not compress, so the chunk is in the file as it is.
  std::string needle(damaged.begin() + 10000, damaged.begin() + 10064);
  int flipped = 0;
  for (const auto& entry : fs::directory_iterator(dir.store())) {
    if (entry.path().extension() != ".sst") continue;
    std::fstream f(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto at = content.find(needle);
    if (at == std::string::npos) continue;
    f.seekp(static_cast<std::streamoff>(at + 10));
    f.put(static_cast<char>(content[at + 10] ^ 1));
    ++flipped;
  }
  REQUIRE(flipped == 1);
  auto store = OpenStore(dir.store());
  CHECK_FALSE(store->Get(damaged_id));
  CHECK(store->stats().corrupt_dropped == 1);
  CHECK_FALSE(store->Contains(damaged_id));
  CHECK(store->Get(intact_id) == intact);
  CHECK(store->Put(damaged) == damaged_id);
  CHECK(store->Get(damaged_id) == damaged);
}

TEST_CASE("a store killed with SIGKILL mid-write reopens and serves only verified chunks") {
  TempDir dir;
  // A child process stores chunk 0, 1, 2, ..., calls Flush after every fourth and
  // then reports the last one flushed on a pipe; the parent kills it while it is
  // still writing. Twice on the same store: the second time the log is also torn
  // and scribbled over, as a power loss could leave it. The contract: what Flush
  // covered survives a kill -9; chunks Put since may be lost (they were still in
  // the write queue), but what survives is everything stored before some point.
  uint64_t first_round = 0;  // chunks the first round left (a prefix of its sequence)
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    uint64_t base = round * 1000000;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      ::alarm(30);  // never outlives a parent that died
      std::string error;
      auto store = ChunkStore::Open({.path = dir.store()}, &error);
      if (!store) ::_exit(1);
      for (uint32_t i = 0;; ++i) {
        store->Put(NthChunk(base + i));
        if (i % 4 != 3) continue;
        store->Flush();
        if (::write(fds[1], &i, sizeof i) != sizeof i) ::_exit(2);
      }
    }
    ::close(fds[1]);
    uint32_t last = 0;
    bool killed = false, any = false;
    for (;;) {
      pollfd p{fds[0], POLLIN, 0};
      REQUIRE_MESSAGE(::poll(&p, 1, 20000) == 1, "the child stopped reporting");
      uint32_t acks[1024];
      ssize_t n = ::read(fds[0], acks, sizeof acks);
      if (n <= 0) break;  // the child is dead and the pipe drained
      REQUIRE(n % sizeof(uint32_t) == 0);
      last = acks[n / sizeof(uint32_t) - 1];
      any = true;
      if (last >= 300 && !killed) {
        ::kill(pid, SIGKILL);
        killed = true;
      }
    }
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE_MESSAGE(WIFSIGNALED(status), "the writer exited on its own, status " << WEXITSTATUS(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);
    REQUIRE(any);
    uint64_t flushed = uint64_t{last} + 1;  // chunks 0 .. last were flushed

    if (round == 1) {
      fs::path newest;
      for (const auto& entry : fs::directory_iterator(dir.store())) {
        if (entry.path().extension() == ".log" && entry.path() > newest) newest = entry.path();
      }
      REQUIRE(!newest.empty());
      auto size = fs::file_size(newest);
      REQUIRE(size > 100000);
      fs::resize_file(newest, size - 3000);
      std::fstream f(newest, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(static_cast<std::streamoff>(size / 2));
      f.write("torn torn torn torn", 19);
    }

    auto store = OpenStore(dir.store());
    // At most 4 chunks were Put after the last Flush reported: 10 covers them.
    uint64_t present = 0, first_missing = 0;
    bool missing = false;
    for (uint64_t i = 0; i < flushed + 10; ++i) {
      Chunk chunk = NthChunk(base + i);
      ContentId id = store->IdOf(chunk);
      if (round == 0 && i < flushed) CHECK(store->Contains(id));  // what Flush covered survives
      auto got = store->Get(id);
      if (got) {
        CHECK(*got == chunk);
        CHECK_MESSAGE(!missing, "chunk " << i << " survived, chunk " << first_missing << " before it did not");
        ++present;
      } else if (!missing) {
        missing = true;
        first_missing = i;
      }
    }
    CHECK(present >= (round == 0 ? flushed : 1));
    if (round == 1) CHECK(present < flushed * 3 / 4);  // the scribble cut the log halfway
    for (uint64_t i = 0; i < first_round; ++i) {  // flushed when the first round reopened
      Chunk chunk = NthChunk(i);
      CHECK(store->Get(store->IdOf(chunk)) == chunk);
    }
    CHECK(store->stats().chunks == present + first_round);
    CHECK(store->stats().corrupt_dropped == 0);
    if (round == 0) first_round = present;
  }
}

// Runs `child` in a child process, waits for the code it returns, kills it with
// SIGKILL, and returns the code (-1 if it died first). The child leaves the store it
// opened in `store`, open until the kill: closing it in a forked child would wait
// for RocksDB's background threads, which are the parent's.
int RunAndKill(const std::function<int(std::unique_ptr<ChunkStore>& store)>& child) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::alarm(30);
    std::unique_ptr<ChunkStore> store;
    int code = child(store);
    if (::write(fds[1], &code, sizeof code) != sizeof code) ::_exit(2);
    ::pause();  // until killed
    ::_exit(0);
  }
  ::close(fds[1]);
  int report = -1;
  pollfd p{fds[0], POLLIN, 0};
  REQUIRE_MESSAGE(::poll(&p, 1, 20000) == 1, "the child did not report");
  if (::read(fds[0], &report, sizeof report) != sizeof report) report = -1;
  ::kill(pid, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  ::close(fds[0]);
  return report;
}

TEST_CASE("chunks still in the write queue are served, Flush and closing write them out, a kill -9 loses them") {
  TempDir dir;
  // The cache off: whatever is served before the writer runs comes from the queue.
  ChunkStoreOptions options{.path = dir.store(), .block_cache_bytes = 4 << 20, .cache_bytes = 0};
  std::vector<Chunk> chunks;
  for (uint64_t i = 0; i < 40; ++i) chunks.push_back(NthChunk(7000 + i));
  auto check_queued = [&](ChunkStore& store, size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      ContentId id = store.IdOf(chunks[i]);
      if (!store.Contains(id) || store.Get(id) != chunks[i]) return false;
      Buffer out;
      if (!store.GetInto(id, out) || !std::equal(chunks[i].begin(), chunks[i].end(), out.data())) return false;
    }
    return true;
  };

  SUBCASE("read while queued, then written out by closing, held or not") {
    {
      auto store = OpenWith(options);
      testing::HoldWriter(*store, true);
      uint64_t total = 0;
      for (size_t i = 0; i < 10; ++i) {
        store->Put(chunks[i]);
        total += chunks[i].size();
      }
      auto stats = store->stats();
      CHECK(stats.queued_bytes == total + 10 * 128);
      CHECK(stats.bytes == total);  // queued chunks count as stored
      CHECK(stats.chunks == 10);
      CHECK(check_queued(*store, 0, 10));
      stats = store->stats();
      CHECK(stats.hits == 20);
      CHECK(stats.memory_hits == 20);
      CHECK(stats.queued_bytes == total + 10 * 128);  // still queued
    }  // closed while held
    auto store = OpenWith(options);
    CHECK(store->stats().chunks == 10);
    CHECK(check_queued(*store, 0, 10));
    CHECK(store->stats().memory_hits == 0);  // from RocksDB this time
  }

  SUBCASE("Flush makes queued chunks survive a kill -9") {
    int report = RunAndKill([&](std::unique_ptr<ChunkStore>& store) {
      store = ChunkStore::Open(options, nullptr);
      if (!store) return 1;
      testing::HoldWriter(*store, true);
      for (size_t i = 0; i < 20; ++i) store->Put(chunks[i]);
      if (store->stats().queued_bytes == 0) return 2;
      testing::HoldWriter(*store, false);
      store->Flush();
      if (store->stats().queued_bytes != 0) return 3;
      return 0;
    });
    REQUIRE(report == 0);
    auto store = OpenWith(options);
    CHECK(store->stats().chunks == 20);
    CHECK(check_queued(*store, 0, 20));
  }

  SUBCASE("a kill -9 loses what was still queued: misses, never wrong bytes") {
    int report = RunAndKill([&](std::unique_ptr<ChunkStore>& store) {
      store = ChunkStore::Open(options, nullptr);
      if (!store) return 1;
      for (size_t i = 0; i < 20; ++i) store->Put(chunks[i]);
      store->Flush();
      testing::HoldWriter(*store, true);
      for (size_t i = 20; i < 40; ++i) store->Put(chunks[i]);  // Put returned, but queued
      return check_queued(*store, 20, 40) ? 0 : 2;
    });
    REQUIRE(report == 0);
    auto store = OpenWith(options);
    CHECK(check_queued(*store, 0, 20));
    for (size_t i = 20; i < 40; ++i) {
      ContentId id = store->IdOf(chunks[i]);
      CHECK_FALSE(store->Contains(id));
      CHECK_FALSE(store->Get(id));
    }
    CHECK(store->stats().chunks == 20);
    CHECK(store->stats().corrupt_dropped == 0);
  }
}

TEST_CASE("a full write queue makes Put wait, and never holds more than its bound") {
  TempDir dir;
  constexpr uint64_t kQueue = 64 << 10, kChunk = 8192, kCharge = kChunk + 128;
  auto store = OpenWith({.path = dir.store(), .block_cache_bytes = 4 << 20, .write_queue_bytes = kQueue});
  std::mt19937_64 rng(12);
  std::vector<Chunk> chunks;
  for (int i = 0; i < 9; ++i) chunks.push_back(RandomChunk(rng, kChunk));
  testing::HoldWriter(*store, true);
  constexpr size_t kFit = kQueue / kCharge;  // 7
  for (size_t i = 0; i < kFit; ++i) store->Put(chunks[i]);
  CHECK(store->stats().queued_bytes == kFit * kCharge);
  CHECK(store->stats().queue_waits == 0);
  std::atomic<bool> returned{false};
  std::thread late([&] {
    store->Put(chunks[kFit]);
    returned = true;
  });
  // The writer is held: the Put cannot get room, however long it is given.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK_FALSE(returned.load());
  CHECK(store->stats().queue_waits == 1);
  CHECK(store->stats().queued_bytes == kFit * kCharge);
  CHECK_FALSE(store->Contains(store->IdOf(chunks[kFit])));  // not stored before it has room
  testing::HoldWriter(*store, false);
  late.join();
  CHECK(returned.load());
  CHECK(store->Contains(store->IdOf(chunks[kFit])));
  store->Flush();
  CHECK(store->stats().queued_bytes == 0);
  for (size_t i = 0; i <= kFit; ++i) CHECK(store->Get(store->IdOf(chunks[i])) == chunks[i]);

  // A chunk bigger than the whole bound still goes in, alone.
  testing::HoldWriter(*store, true);
  Chunk big = RandomChunk(rng, kQueue * 2);
  store->Put(big);
  CHECK(store->stats().queued_bytes == big.size() + 128);
  testing::HoldWriter(*store, false);
  store->Flush();
  CHECK(store->Get(store->IdOf(big)) == big);

  // With sync_writes, Put returns once its chunk is written.
  TempDir other;
  auto synced = OpenWith({.path = other.store(), .block_cache_bytes = 4 << 20, .sync_writes = true});
  for (int i = 0; i < 5; ++i) {
    synced->Put(RandomChunk(rng, 1000));
    CHECK(synced->stats().queued_bytes == 0);
  }
}

TEST_CASE("the read cache serves recent chunks from memory, within its bound, and never an evicted one") {
  TempDir dir;
  // A cache bigger than the store: an evicted chunk would still fit in it.
  constexpr uint64_t kMax = 256 << 10;
  auto store = OpenWith({.path = dir.store(), .max_bytes = kMax, .block_cache_bytes = 4 << 20,
                         .cache_bytes = 4 << 20});
  std::mt19937_64 rng(13);
  Chunk first = RandomChunk(rng, 5000);
  ContentId first_id = store->Put(first);
  store->Flush();  // written: a hit now can only come from the cache
  CHECK(store->Get(first_id) == first);
  CHECK(store->stats().memory_hits == 1);
  // Push it out of the store.
  std::vector<ContentId> later;
  while (store->Contains(first_id)) later.push_back(store->Put(RandomChunk(rng, 6000)));
  auto stats = store->stats();
  uint64_t memory_hits = stats.memory_hits;
  CHECK_FALSE(store->Get(first_id));
  Buffer out;
  CHECK_FALSE(store->GetInto(first_id, out));
  CHECK(out.empty());
  stats = store->stats();
  CHECK(stats.memory_hits == memory_hits);
  CHECK(stats.misses == 2);
  // Evicted chunks left the cache too: it holds no more than the store.
  CHECK(stats.cache_bytes <= stats.bytes + stats.chunks * 128);
  CHECK(stats.cache_bytes > 0);
  // Stored again, it is served again.
  CHECK(store->Put(first) == first_id);
  CHECK(store->Get(first_id) == first);
  store.reset();

  // Reopened: the cache starts empty; a chunk read from RocksDB twice is cached.
  store = OpenWith({.path = dir.store(), .max_bytes = kMax, .block_cache_bytes = 4 << 20, .cache_bytes = 4 << 20});
  CHECK(store->stats().cache_bytes == 0);
  ContentId some = later.back();
  auto bytes = store->Get(some);
  REQUIRE(bytes);
  CHECK(store->stats().cache_bytes == 0);  // read once: not cached
  CHECK(store->Get(some) == bytes);
  CHECK(store->stats().memory_hits == 0);
  CHECK(store->stats().cache_bytes == bytes->size() + 128);
  CHECK(store->Get(some) == bytes);
  CHECK(store->stats().memory_hits == 1);
  store.reset();

  // The bound holds, whatever goes through.
  TempDir small;
  constexpr uint64_t kCache = 256 << 10;
  store = OpenWith({.path = small.store(), .block_cache_bytes = 4 << 20, .cache_bytes = kCache});
  std::vector<Chunk> chunks;
  std::vector<ContentId> ids;
  for (int i = 0; i < 200; ++i) {
    chunks.push_back(RandomChunk(rng, 1 + rng() % 3000));
    ids.push_back(store->Put(chunks.back()));
    CHECK(store->stats().cache_bytes <= kCache);
  }
  store->Flush();  // else the queue serves some of them
  for (int i = 0; i < 400; ++i) {
    size_t pick = rng() % ids.size();
    CHECK(store->Get(ids[pick]) == chunks[pick]);
    CHECK(store->stats().cache_bytes <= kCache);
  }
  auto last = store->stats();
  CHECK(last.memory_hits > 0);
  CHECK(last.memory_hits < last.hits);  // and the rest came from RocksDB
  store.reset();  // before its directory goes
}

TEST_CASE("reading chunks in the order stored reads ahead into the cache, verified") {
  TempDir dir;
  std::mt19937_64 rng(14);
  std::vector<Chunk> chunks;
  std::vector<ContentId> ids;
  {
    auto store = OpenStore(dir.store());
    for (int i = 0; i < 300; ++i) {
      chunks.push_back(RandomChunk(rng, 1000 + rng() % 3000));
      ids.push_back(store->Put(chunks.back()));
    }
  }
  // One chunk in the middle damaged on disk: read-ahead must not cache its bytes.
  Chunk bad = chunks[150];
  bad[10] ^= 1;
  RewriteStoredValue(dir.store(), chunks[150], bad);
  auto store = OpenStore(dir.store());
  for (size_t i = 0; i < chunks.size(); ++i) {
    auto got = store->Get(ids[i]);
    if (i == 150) {
      CHECK_FALSE(got);
      continue;
    }
    REQUIRE(got);
    CHECK(*got == chunks[i]);
  }
  auto stats = store->stats();
  CHECK(stats.corrupt_dropped == 1);
  CHECK(stats.hits == chunks.size() - 1);
  MESSAGE("served from memory: " << stats.memory_hits << " of " << stats.hits);
  CHECK(stats.memory_hits >= 250);
  // Random reads do not read ahead, and a chunk read once is not cached: each read
  // is one RocksDB read.
  TempDir other;
  std::vector<Chunk> small;
  std::vector<ContentId> small_ids;
  std::set<std::string> seen;
  {
    auto s2 = OpenStore(other.store());
    while (small.size() < 10000) {
      Chunk chunk = RandomChunk(rng, 100 + rng() % 300);
      if (!seen.emplace(chunk.begin(), chunk.end()).second) continue;
      small.push_back(chunk);
      small_ids.push_back(s2->Put(chunk));
    }
  }
  auto s2 = OpenStore(other.store());
  std::vector<size_t> order(small.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t i : order) CHECK(s2->Get(small_ids[i]) == small[i]);
  MESSAGE("random order, served from memory: " << s2->stats().memory_hits << " of " << s2->stats().hits);
  CHECK(s2->stats().memory_hits < 1000);
  CHECK(s2->stats().cache_bytes < 300 * 1024);
}

TEST_CASE("four threads putting and getting at once, with eviction") {
  TempDir dir;
  constexpr uint64_t kMax = 1 << 20;
  ChunkStoreOptions options{.path = dir.store(), .max_bytes = kMax, .block_cache_bytes = 4 << 20};
  // The queue's bound: max_bytes / 4 by default.
  uint64_t queue_bound = kMax / 4;
  SUBCASE("default queue and cache") {}
  SUBCASE("a tiny queue and cache: Puts wait all the time, the cache churns") {
    options.write_queue_bytes = queue_bound = 24 << 10;
    options.cache_bytes = 128 << 10;
  }
  auto store = OpenWith(options);
  // 400 distinct chunks; every thread puts and reads all of them, in its own order,
  // so the same chunk is often stored by two threads at once.
  std::vector<Chunk> chunks;
  std::vector<ContentId> ids;
  std::mt19937_64 rng(8);
  for (int i = 0; i < 400; ++i) {
    chunks.push_back(RandomChunk(rng, 1024 + rng() % 8192));
    ids.push_back(store->IdOf(chunks.back()));
  }
  std::atomic<int> wrong_id{0}, wrong_bytes{0}, over{0}, over_queue{0}, hits{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 local(100 + t);
      for (int n = 0; n < 1500; ++n) {
        size_t i = local() % chunks.size();
        if (local() % 2) {
          if (store->Put(chunks[i]) != ids[i]) ++wrong_id;
        } else if (auto got = store->Get(ids[i])) {
          if (*got != chunks[i]) ++wrong_bytes;
          ++hits;
        }
        auto stats = store->stats();
        if (stats.bytes > kMax + 4 * 9216) ++over;
        if (stats.queued_bytes > queue_bound || stats.cache_bytes > options.cache_bytes) ++over_queue;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong_id == 0);
  CHECK(wrong_bytes == 0);
  CHECK(over == 0);
  CHECK(over_queue == 0);
  CHECK(hits > 0);
  // The accounting came out exact: stored bytes are the sizes of the chunks held.
  uint64_t held = 0, count = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (store->Contains(ids[i])) {
      held += chunks[i].size();
      ++count;
      CHECK(store->Get(ids[i]) == chunks[i]);
    }
  }
  auto stats = store->stats();
  CHECK(stats.bytes == held);
  CHECK(stats.chunks == count);
  CHECK(stats.evictions > 0);
  CHECK(stats.corrupt_dropped == 0);
  CHECK(stats.write_errors == 0);
  MESSAGE("hits from memory: " << stats.memory_hits << " of " << stats.hits << ", Puts that waited: "
                               << stats.queue_waits);
  store.reset();
  store = OpenStore(dir.store(), kMax);
  CHECK(store->stats().bytes == held);
  CHECK(store->stats().chunks == count);
}

TEST_CASE("the in-memory index takes at most 64 bytes a chunk") {
  TempDir dir;
  auto store = OpenStore(dir.store());
  uint64_t worst_milli = 0;
  for (uint64_t i = 1; i <= 30000; ++i) {
    store->Put(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&i), sizeof i));
    if (i >= 2000 && i % 97 == 0) {
      auto s = store->stats();
      worst_milli = std::max(worst_milli, s.index_memory_bytes * 1000 / s.chunks);
    }
  }
  MESSAGE("index bytes per chunk, worst seen: " << worst_milli / 1000.0);
  CHECK(worst_milli <= 64000);
}

TEST_CASE("the index matches a reference map through growth, shrinking and updates") {
  ChunkIndex index;
  std::unordered_map<std::string, uint64_t> reference;
  std::mt19937_64 rng(9);
  auto key = [](const ContentId& id) { return std::string(id.begin(), id.end()); };
  std::vector<ContentId> known;
  uint64_t seq = 1;
  // Grow to 20k entries, shrink to a few hundred, grow again.
  for (int phase = 0; phase < 3; ++phase) {
    for (int step = 0; step < 40000; ++step) {
      bool growing = phase != 1;
      uint64_t dice = rng() % 10;
      if (known.empty() || (growing ? dice < 6 : dice < 2)) {
        ContentId id;
        for (auto& b : id) b = static_cast<uint8_t>(rng());
        index.Insert(id, seq);
        reference[key(id)] = seq++;
        known.push_back(id);
      } else {
        size_t pick = rng() % known.size();
        ContentId id = known[pick];
        uint64_t current = reference[key(id)];
        if (dice == 9) {  // toggle the pending flag
          uint64_t toggled = current ^ ChunkIndex::kPending;
          CHECK(index.Update(id, current, toggled));
          CHECK_FALSE(index.Update(id, current, 5));
          reference[key(id)] = toggled;
          continue;
        }
        CHECK_FALSE(index.Erase(id, (current & ~ChunkIndex::kPending) + 1));  // wrong seq
        CHECK(index.Erase(id, current & ~ChunkIndex::kPending));
        reference.erase(key(id));
        known[pick] = known.back();
        known.pop_back();
      }
      if (index.size() > 1000) {
        REQUIRE(index.memory_bytes() <= 60 * index.size() + 24);
        REQUIRE(index.memory_bytes() >= 32 * index.size());
      }
    }
    REQUIRE(index.size() == reference.size());
    for (const auto& id : known) REQUIRE(index.Find(id) == reference[key(id)]);
    for (int i = 0; i < 1000; ++i) {
      ContentId absent;
      for (auto& b : absent) b = static_cast<uint8_t>(rng());
      REQUIRE(index.Find(absent) == 0);
    }
  }
}

TEST_CASE("Open explains unusable directories and refuses a corrupted database") {
  TempDir dir;
  SUBCASE("no path") { CHECK(OpenError("") == "datastore : cannot open: no path given"); }
  SUBCASE("a file where the directory should be") {
    std::ofstream(dir.path() + "/file") << "x";
    std::string error = OpenError(dir.path() + "/file");
    CHECK(error.find("datastore " + dir.path() + "/file: cannot open: ") == 0);
    error = OpenError(dir.path() + "/file/store");
    CHECK(error.find("datastore " + dir.path() + "/file/store: cannot open: cannot create the directory") == 0);
  }
  SUBCASE("no permission") {
    if (::geteuid() == 0) return;  // root may write anywhere
    fs::create_directory(dir.path() + "/locked");
    fs::permissions(dir.path() + "/locked", fs::perms::owner_read | fs::perms::owner_exec);
    std::string error = OpenError(dir.path() + "/locked");
    CHECK(error.find("Permission denied") != std::string::npos);
    fs::permissions(dir.path() + "/locked", fs::perms::owner_all);
  }
  SUBCASE("already open") {
    auto store = OpenStore(dir.store());
    std::string error = OpenError(dir.store());
    CHECK(error.find("datastore " + dir.store() + ": cannot open: already open, by this or another process (") == 0);
  }
  SUBCASE("a damaged, missing or foreign secret") {
    TempDir other;
    OpenStore(dir.store()).reset();
    OpenStore(other.store()).reset();
    std::string secret = dir.store() + "/SECRET";
    fs::copy_file(secret, dir.path() + "/saved");
    fs::resize_file(secret, 100);
    CHECK(OpenError(dir.store()).find("SECRET is damaged") != std::string::npos);
    fs::remove(secret);
    CHECK(OpenError(dir.store()).find("SECRET is missing") != std::string::npos);
    fs::copy_file(other.store() + "/SECRET", secret);
    CHECK(OpenError(dir.store()).find("SECRET is not the secret this database was written with") !=
          std::string::npos);
    fs::copy_file(dir.path() + "/saved", secret, fs::copy_options::overwrite_existing);
    OpenStore(dir.store());
  }
  SUBCASE("a corrupted database is reported and left in place") {
    std::mt19937_64 rng(10);
    {
      auto store = OpenStore(dir.store());
      for (int i = 0; i < 10; ++i) store->Put(RandomChunk(rng, 1000));
    }
    std::vector<fs::path> before;
    for (const auto& entry : fs::directory_iterator(dir.store())) {
      before.push_back(entry.path());
      if (entry.path().filename().string().starts_with("MANIFEST-")) {
        std::ofstream(entry.path(), std::ios::binary | std::ios::trunc) << std::string(300, '\x5a');
      }
    }
    std::string error = OpenError(dir.store());
    CHECK(error.find("datastore " + dir.store() + ": cannot open: the database is corrupted (Corruption: ") == 0);
    CHECK(error.find("left as it is") != std::string::npos);
    for (const auto& path : before) CHECK(fs::exists(path));
  }
}

}  // TEST_SUITE
