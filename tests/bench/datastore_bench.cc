// datastore_bench: how fast the DRE chunk store is, and what it costs.
//
//   datastore_bench [--chunks N] [--size BYTES] [--threads T] [--churn X] [--dir PATH]
//
// Stores N distinct random chunks of BYTES each (default 100,000 x 8 KiB) in a fresh
// store, then measures Put (new chunks), Get (hits, random order, verified), Contains
// (hits and misses), the in-memory index's bytes per chunk, the time to reopen, and
// the directory's size. Then, with max_bytes set to a quarter of what was stored,
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
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--chunks") chunks = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--size") size = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--threads") threads = std::atoi(argv[i + 1]);
    else if (flag == "--churn") churn = std::atof(argv[i + 1]);
    else if (flag == "--dir") dir = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: datastore_bench [--chunks N] [--size BYTES] [--threads T] [--churn X] [--dir PATH]\n");
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

  auto store = OpenOrDie(options);
  std::vector<std::vector<uint8_t>> scratch(threads);
  std::vector<ContentId> ids(chunks);
  double put_s = Parallel(threads, chunks, [&](int t, uint64_t i) {
    MakeChunk(i, scratch[t], size);
    ids[i] = store->Put(scratch[t]);
  });
  // Chunk generation alone, to subtract it from the Put time.
  double make_s = Parallel(threads, chunks, [&](int t, uint64_t i) { MakeChunk(i, scratch[t], size); });
  store->Flush();

  std::vector<uint64_t> order(chunks);
  for (uint64_t i = 0; i < chunks; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  std::atomic<uint64_t> misses{0};
  std::vector<wanopt::Buffer> buffers(threads);
  double get_s = Parallel(threads, chunks, [&](int t, uint64_t i) {
    buffers[t].Clear();
    if (!store->GetInto(ids[order[i]], buffers[t])) ++misses;
  });
  double get_vector_s = Parallel(threads, chunks, [&](int, uint64_t i) {
    if (!store->Get(ids[order[i]])) ++misses;
  });
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
  store = OpenOrDie(options);
  double reopen_s = Seconds(reopen_start);
  uint64_t reopened_chunks = store->stats().chunks;
  store.reset();

  // Churn: a quarter of the size, X times that much new data through it.
  options.max_bytes = chunks * size / 4;
  store = OpenOrDie(options);
  uint64_t churn_chunks = static_cast<uint64_t>(churn * options.max_bytes / size);
  double churn_s = Parallel(threads, churn_chunks, [&](int t, uint64_t i) {
    MakeChunk(chunks + i, scratch[t], size);
    store->Put(scratch[t]);
  });
  auto churned = store->stats();
  uint64_t churn_disk = DirectoryBytes(path);
  store.reset();
  if (temporary) fs::remove_all(dir);

  std::printf(
      "{\"chunks\": %llu, \"chunk_bytes\": %zu, \"threads\": %d,\n"
      " \"puts_per_s\": %.0f, \"put_mib_per_s\": %.1f,\n"
      " \"gets_per_s\": %.0f, \"get_mib_per_s\": %.1f, \"get_vector_per_s\": %.0f, \"get_misses\": %llu,\n"
      " \"contains_per_s\": %.0f, \"contains_found\": %llu,\n"
      " \"index_bytes\": %llu, \"index_bytes_per_chunk\": %.1f,\n"
      " \"reopen_s\": %.3f, \"reopened_chunks\": %llu, \"disk_bytes\": %llu,\n"
      " \"churn\": {\"max_bytes\": %llu, \"bytes_put\": %llu, \"puts_per_s\": %.0f, \"evictions\": %llu,\n"
      "           \"stored_bytes\": %llu, \"disk_bytes\": %llu, \"disk_over_max\": %.2f}}\n",
      static_cast<unsigned long long>(chunks), size, threads,
      chunks / (put_s - make_s), chunks * size / (put_s - make_s) / 1048576.0,
      chunks / get_s, chunks * size / get_s / 1048576.0, chunks / get_vector_s,
      static_cast<unsigned long long>(misses.load()),
      chunks * kContainsRounds / contains_s, static_cast<unsigned long long>(found.load()),
      static_cast<unsigned long long>(stats.index_memory_bytes),
      static_cast<double>(stats.index_memory_bytes) / static_cast<double>(stats.chunks),
      reopen_s, static_cast<unsigned long long>(reopened_chunks), static_cast<unsigned long long>(disk),
      static_cast<unsigned long long>(options.max_bytes),
      static_cast<unsigned long long>(churn_chunks * size), churn_chunks / churn_s,
      static_cast<unsigned long long>(churned.evictions), static_cast<unsigned long long>(churned.bytes),
      static_cast<unsigned long long>(churn_disk),
      static_cast<double>(churn_disk) / static_cast<double>(options.max_bytes));
  return 0;
}
