// The DRE chunk store's write queue (reads of queued chunks, Flush, backpressure,
// what a kill -9 loses), the read cache and read-ahead, and concurrency. Every test
// works in a fresh directory under /tmp, removed at its end.
#include <doctest/doctest.h>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <random>
#include <set>
#include <thread>

#include "datastore/chunk_store.h"
#include "datastore/testing.h"
#include "tests/unit/datastore_test_util.h"

using namespace wanopt;
using namespace wanopt::datastore;
using namespace wanopt::datastore::test_helpers;
namespace fs = std::filesystem;

TEST_SUITE("datastore") {

// Runs datastore_crash_child `mode` on `dir`, waits for the code it reports, kills
// it with SIGKILL, and returns the code (-1 if it died first). The child leaves its
// store open until the kill.
int RunAndKill(const std::string& mode, const std::string& dir) {
  CrashChild child = StartCrashChild({mode, dir});
  int report = -1;
  pollfd p{child.reports, POLLIN, 0};
  REQUIRE_MESSAGE(::poll(&p, 1, 20000) == 1, "the child did not report");
  if (::read(child.reports, &report, sizeof report) != sizeof report) report = -1;
  ::kill(child.pid, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(child.pid, &status, 0) == child.pid);
  ::close(child.reports);
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
    // The child: Puts chunks 0..19 while its writer is held, lets it go, Flushes.
    int report = RunAndKill("flush-queued", dir.store());
    REQUIRE(report == 0);
    auto store = OpenWith(options);
    CHECK(store->stats().chunks == 20);
    CHECK(check_queued(*store, 0, 20));
  }

  SUBCASE("a kill -9 loses what was still queued: misses, never wrong bytes") {
    // The child: Puts chunks 0..19 and Flushes, then holds its writer and Puts
    // 20..39, which it serves from the queue.
    int report = RunAndKill("lose-queued", dir.store());
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
  // Read-ahead reads chunks adjacent on disk with one call: runs also end where a
  // segment does.
  uint64_t max_bytes = uint64_t{1} << 30;
  SUBCASE("one segment") {}
  SUBCASE("segments of 128 KiB, some 50 chunks each") { max_bytes = 1 << 20; }
  {
    auto store = OpenStore(dir.store(), max_bytes);
    for (int i = 0; i < 300; ++i) {
      chunks.push_back(RandomChunk(rng, 1000 + rng() % 3000));
      ids.push_back(store->Put(chunks.back()));
    }
  }
  if (max_bytes == 1 << 20) CHECK(SegmentFiles(dir.store()).size() >= 5);
  // One chunk in the middle damaged on disk: read-ahead must not cache its bytes.
  Chunk bad = chunks[150];
  bad[10] ^= 1;
  RewriteStoredValue(dir.store(), chunks[150], bad);
  auto store = OpenStore(dir.store(), max_bytes);
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

}  // TEST_SUITE
