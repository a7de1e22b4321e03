// Helpers for the DRE chunk store's tests (datastore_*_test.cc): a fresh directory
// under /tmp removed at the end, random and numbered chunks, opening a store (a
// failure fails the test), and damaging a stored chunk in its segment file.
#pragma once

#include <doctest/doctest.h>

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "datastore/chunk_store.h"

namespace wanopt::datastore::test_helpers {

using Chunk = std::vector<uint8_t>;

// The store size of datastore_crash_child's evict-forever: segments of 4 MiB (an
// eighth of it), so that evicted chunks' segments are released all along.
inline constexpr uint64_t kEvictStoreBytes = uint64_t{32} << 20;

#ifdef WANOPT_DATASTORE_CHILD
// Starts datastore_crash_child (its header says what each mode does) with `args`;
// returns its pid and the read end of its stdout, where it reports.
struct CrashChild {
  pid_t pid;
  int reports;
};
inline CrashChild StartCrashChild(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(WANOPT_DATASTORE_CHILD));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // only exec-safe calls here
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}
#endif

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/wanopt-datastore-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path_ = name;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // A directory inside, not yet created: where a store goes.
  std::string store() const { return path_ + "/store"; }

 private:
  std::string path_;
};

inline Chunk RandomChunk(std::mt19937_64& rng, size_t size) {
  Chunk chunk(size);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t r = rng();
    std::memcpy(chunk.data() + i, &r, std::min<size_t>(8, size - i));
  }
  return chunk;
}

// Sizes from 1 B to 64 KiB, spread evenly over the orders of magnitude.
inline size_t RandomSize(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> log_size(0, 16);
  return static_cast<size_t>(std::pow(2.0, log_size(rng)));
}

// Chunk number i of a deterministic sequence: a child process and its parent agree
// on it without talking.
inline Chunk NthChunk(uint64_t i) {
  std::mt19937_64 rng(i * 7919 + 1);
  return RandomChunk(rng, 1 + rng() % (16 << 10));
}

inline std::unique_ptr<ChunkStore> OpenStore(const std::string& path, uint64_t max_bytes = uint64_t{1} << 30) {
  std::string error;
  auto store = ChunkStore::Open({.path = path, .max_bytes = max_bytes, .block_cache_bytes = 4 << 20}, &error);
  REQUIRE_MESSAGE(store, error);
  return store;
}

inline std::unique_ptr<ChunkStore> OpenWith(const ChunkStoreOptions& options) {
  std::string error;
  auto store = ChunkStore::Open(options, &error);
  REQUIRE_MESSAGE(store, error);
  return store;
}

inline std::string OpenError(const std::string& path) {
  std::string error;
  auto store = ChunkStore::Open({.path = path}, &error);
  CHECK(store == nullptr);
  return error;
}

// Opens a store at `path`, puts `chunks` and closes it; returns their ids.
inline std::vector<ContentId> PutAndClose(const std::string& path, const std::vector<Chunk>& chunks) {
  auto store = OpenStore(path);
  std::vector<ContentId> ids;
  for (const auto& chunk : chunks) ids.push_back(store->Put(chunk));
  return ids;
}

// The store's segment files, oldest first.
inline std::vector<std::filesystem::path> SegmentFiles(const std::string& path) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(path + "/segments")) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

// Overwrites, in its segment file, the stored bytes equal to `original` with
// `replacement`, zero-filled to the original length if shorter (as a torn write
// leaves them): what a failing disk would do. The store must be closed.
inline void RewriteStoredValue(const std::string& path, const Chunk& original, const Chunk& replacement) {
  REQUIRE(replacement.size() <= original.size());
  const std::string needle(original.begin(), original.end());
  std::string bytes(replacement.begin(), replacement.end());
  bytes.resize(original.size(), '\0');
  int rewritten = 0;
  for (const auto& file : SegmentFiles(path)) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    for (auto at = content.find(needle); at != std::string::npos; at = content.find(needle, at + 1)) {
      f.clear();
      f.seekp(static_cast<std::streamoff>(at));
      f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      REQUIRE(f.good());
      ++rewritten;
    }
  }
  REQUIRE(rewritten == 1);
}

}  // namespace wanopt::datastore::test_helpers
