// datastore_bench: how fast the DRE chunk store is, and what it costs.
//
//   datastore_bench [--chunks N] [--size BYTES] [--threads T] [--churn X] [--dir PATH]
//                   [--cache BYTES] [--queue BYTES]
//
// Stores N distinct random chunks of BYTES each (default 100,000 x 8 KiB) in a fresh
// store, then measures:
//  - Put (new chunks): puts_per_s counts until the last Put returns (the write queue
//    may still hold up to --queue bytes), puts_flushed_per_s until Flush returns
//    after it (everything written): the rate the store sustains;
//  - Get hits, verified: gets_cached_per_s in random order over recent chunks that
//    fit in the read cache; gets_per_s in random order over all of them (from
//    RocksDB but for the fraction memory_hit_fraction); gets_sequential_per_s in the
//    order stored (read-ahead); gets_rocksdb_per_s in random order with the cache
//    off (after the reopen), every one a RocksDB read;
//  - Contains (hits and misses), the in-memory index's bytes per chunk, the time to
//    reopen, and the directory's size.
// --cache and --queue set cache_bytes and write_queue_bytes (defaults: the store's).
// Then, with max_bytes set to a quarter of what was stored,
// keeps storing X times max_bytes of new chunks (default 4) and reports the
// directory's size again: eviction must reclaim the disk, not only the index.
// Prints one JSON object on stdout. The store goes in a temporary directory, removed
// at the end, unless --dir is given.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "datastore/chunk_store.h"

using namespace wanopt::datastore;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

uint64_t DirectoryBytes(const std::string& path) {
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(path)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

// Chunk i, made on the fly: 8 random bytes at the front make each distinct, the
// rest is half-compressible filler, like real traffic.
void MakeChunk(uint64_t i, std::vector<uint8_t>& out, size_t size) {
  out.resize(size);
  std::mt19937_64 rng(i);
  for (size_t j = 0; j < size; j += 8) {
    uint64_t r = (j / 8) % 2 ? rng() : 0x2020202020202020ull + (j & 0xff);
    std::memcpy(out.data() + j, &r, std::min<size_t>(8, size - j));
  }
}

std::unique_ptr<ChunkStore> OpenOrDie(const ChunkStoreOptions& options) {
  std::string error;
  auto store = ChunkStore::Open(options, &error);
  if (!store) {
    std::fprintf(stderr, "datastore_bench: %s\n", error.c_str());
    std::exit(1);
  }
  return store;
}

// Runs body(thread, i) for i in [0, n) split over `threads` threads; returns seconds.
template <typename Body>
double Parallel(int threads, uint64_t n, Body body) {
  auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (uint64_t i = t; i < n; i += threads) body(t, i);
    });
  }
  for (auto& th : pool) th.join();
  return Seconds(start);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t chunks = 100000;
  size_t size = 8192;
  int threads = 1;
  double churn = 4;
  std::string dir;
  ChunkStoreOptions defaults;
  uint64_t cache_bytes = defaults.cache_bytes, queue_bytes = defaults.write_queue_bytes;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--chunks") chunks = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--size") size = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--threads") threads = std::atoi(argv[i + 1]);
    else if (flag == "--churn") churn = std::atof(argv[i + 1]);
    else if (flag == "--dir") dir = argv[i + 1];
    else if (flag == "--cache") cache_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--queue") queue_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr,
                   "usage: datastore_bench [--chunks N] [--size BYTES] [--threads T] [--churn X] [--dir PATH]"
                   " [--cache BYTES] [--queue BYTES]\n");
      return 2;
    }
  }
  bool temporary = dir.empty();
  if (temporary) {
    char name[] = "/tmp/datastore-bench-XXXXXX";
    if (!::mkdtemp(name)) return 1;
    dir = name;
  }
  std::string path = dir + "/store";
  ChunkStoreOptions options{.path = path, .max_bytes = chunks * size * 2};
  options.cache_bytes = cache_bytes;
  options.write_queue_bytes = queue_bytes;

  auto store = OpenOrDie(options);
  std::vector<std::vector<uint8_t>> scratch(threads);
  std::vector<ContentId> ids(chunks);
  auto put_start = Clock::now();
  double put_s = Parallel(threads, chunks, [&](int t, uint64_t i) {
    MakeChunk(i, scratch[t], size);
    ids[i] = store->Put(scratch[t]);
  });
  store->Flush();
  double put_flushed_s = Seconds(put_start);
  // Chunk generation alone, to subtract it from the Put time.
  double make_s = Parallel(threads, chunks, [&](int t, uint64_t i) { MakeChunk(i, scratch[t], size); });
  uint64_t queue_waits = store->stats().queue_waits;

  std::atomic<uint64_t> misses{0};
  std::vector<wanopt::Buffer> buffers(threads);
  // Recent chunks, half the cache's worth, in random order, as many reads as chunks.
  uint64_t recent = std::min<uint64_t>(chunks, cache_bytes / 2 / (size + 128));
  double get_cached_s = 0;
  uint64_t cached_memory_hits = 0;
  if (recent > 0) {
    std::vector<uint64_t> recent_order(chunks);
    std::mt19937_64 rng(5);
    for (auto& i : recent_order) i = chunks - 1 - rng() % recent;
    uint64_t before = store->stats().memory_hits;
    get_cached_s = Parallel(threads, chunks, [&](int t, uint64_t i) {
      buffers[t].Clear();
      if (!store->GetInto(ids[recent_order[i]], buffers[t])) ++misses;
    });
    cached_memory_hits = store->stats().memory_hits - before;
  }

  std::vector<uint64_t> order(chunks);
  for (uint64_t i = 0; i < chunks; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  uint64_t before = store->stats().memory_hits;
  double get_s = Parallel(threads, chunks, [&](int t, uint64_t i) {
    buffers[t].Clear();
    if (!store->GetInto(ids[order[i]], buffers[t])) ++misses;
  });
  uint64_t random_memory_hits = store->stats().memory_hits - before;
  double get_vector_s = Parallel(threads, chunks, [&](int, uint64_t i) {
    if (!store->Get(ids[order[i]])) ++misses;
  });
  // In the order stored, as a file sent again is (each thread its own stretch).
  before = store->stats().memory_hits;
  uint64_t per_thread = (chunks + threads - 1) / threads;
  double get_sequential_s = Parallel(threads, chunks, [&](int t, uint64_t i) {
    uint64_t n = i / threads + t * per_thread;
    if (n >= chunks) return;
    buffers[t].Clear();
    if (!store->GetInto(ids[n], buffers[t])) ++misses;
  });
  uint64_t sequential_memory_hits = store->stats().memory_hits - before;
  constexpr int kContainsRounds = 10;
  std::atomic<uint64_t> found{0};
  double contains_s = Parallel(threads, chunks * kContainsRounds, [&](int, uint64_t i) {
    ContentId id = ids[order[i % chunks]];
    if (i % 2) id[3] ^= 1;  // half misses
    if (store->Contains(id)) ++found;
  });
  auto stats = store->stats();
  uint64_t disk = DirectoryBytes(path);
  store.reset();

  auto reopen_start = Clock::now();
  ChunkStoreOptions uncached = options;
  uncached.cache_bytes = 0;
  store = OpenOrDie(uncached);
  double reopen_s = Seconds(reopen_start);
  uint64_t reopened_chunks = store->stats().chunks;
  double get_rocksdb_s = Parallel(threads, chunks, [&](int t, uint64_t i) {
    buffers[t].Clear();
    if (!store->GetInto(ids[order[i]], buffers[t])) ++misses;
  });
  store.reset();

  // Churn: a quarter of the size, X times that much new data through it.
  options.max_bytes = chunks * size / 4;
  store = OpenOrDie(options);
  uint64_t churn_chunks = static_cast<uint64_t>(churn * options.max_bytes / size);
  auto churn_start = Clock::now();
  Parallel(threads, churn_chunks, [&](int t, uint64_t i) {
    MakeChunk(chunks + i, scratch[t], size);
    store->Put(scratch[t]);
  });
  store->Flush();  // written, not only queued
  double churn_s = Seconds(churn_start);
  auto churned = store->stats();
  uint64_t churn_disk = DirectoryBytes(path);
  store.reset();
  if (temporary) fs::remove_all(dir);

  auto per_s = [](uint64_t n, double s) { return s > 0 ? n / s : 0.0; };
  std::printf(
      "{\"chunks\": %llu, \"chunk_bytes\": %zu, \"threads\": %d, \"cache_bytes\": %llu, \"queue_bytes\": %llu,\n"
      " \"puts_per_s\": %.0f, \"put_mib_per_s\": %.1f, \"puts_flushed_per_s\": %.0f, \"put_flushed_mib_per_s\": %.1f,"
      " \"queue_waits\": %llu,\n"
      " \"gets_cached_per_s\": %.0f, \"gets_cached_chunks\": %llu, \"gets_cached_memory_hits\": %llu,\n"
      " \"gets_per_s\": %.0f, \"get_mib_per_s\": %.1f, \"memory_hit_fraction\": %.3f, \"get_vector_per_s\": %.0f,\n"
      " \"gets_sequential_per_s\": %.0f, \"sequential_memory_hit_fraction\": %.3f,\n"
      " \"gets_rocksdb_per_s\": %.0f, \"get_misses\": %llu,\n"
      " \"contains_per_s\": %.0f, \"contains_found\": %llu,\n"
      " \"index_bytes\": %llu, \"index_bytes_per_chunk\": %.1f, \"cache_bytes_used\": %llu,\n"
      " \"reopen_s\": %.3f, \"reopened_chunks\": %llu, \"disk_bytes\": %llu,\n"
      " \"churn\": {\"max_bytes\": %llu, \"bytes_put\": %llu, \"puts_per_s\": %.0f, \"evictions\": %llu,\n"
      "           \"stored_bytes\": %llu, \"disk_bytes\": %llu, \"disk_over_max\": %.2f}}\n",
      static_cast<unsigned long long>(chunks), size, threads, static_cast<unsigned long long>(cache_bytes),
      static_cast<unsigned long long>(queue_bytes),
      per_s(chunks, put_s - make_s), per_s(chunks * size, put_s - make_s) / 1048576.0,
      per_s(chunks, put_flushed_s - make_s), per_s(chunks * size, put_flushed_s - make_s) / 1048576.0,
      static_cast<unsigned long long>(queue_waits),
      per_s(chunks, get_cached_s), static_cast<unsigned long long>(recent),
      static_cast<unsigned long long>(cached_memory_hits),
      per_s(chunks, get_s), per_s(chunks * size, get_s) / 1048576.0,
      static_cast<double>(random_memory_hits) / static_cast<double>(chunks), per_s(chunks, get_vector_s),
      per_s(chunks, get_sequential_s), static_cast<double>(sequential_memory_hits) / static_cast<double>(chunks),
      per_s(chunks, get_rocksdb_s), static_cast<unsigned long long>(misses.load()),
      per_s(chunks * kContainsRounds, contains_s), static_cast<unsigned long long>(found.load()),
      static_cast<unsigned long long>(stats.index_memory_bytes),
      static_cast<double>(stats.index_memory_bytes) / static_cast<double>(stats.chunks),
      static_cast<unsigned long long>(stats.cache_bytes),
      reopen_s, static_cast<unsigned long long>(reopened_chunks), static_cast<unsigned long long>(disk),
      static_cast<unsigned long long>(options.max_bytes),
      static_cast<unsigned long long>(churn_chunks * size), per_s(churn_chunks, churn_s),
      static_cast<unsigned long long>(churned.evictions), static_cast<unsigned long long>(churned.bytes),
      static_cast<unsigned long long>(churn_disk),
      static_cast<double>(churn_disk) / static_cast<double>(options.max_bytes));
  return 0;
}
