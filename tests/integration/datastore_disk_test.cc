// A datastore whose disk fails: full, read-only, or losing its files. The box keeps
// relaying correct bytes, stops storing, and falls to LZ for new connections; it
// starts on such a disk too. The disks are small tmpfs mounts (root).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>

#include "datastore/chunk_store.h"
#include "tests/integration/pair.h"

using namespace wanopt;
using namespace wanopt::testing;

namespace {

// A tmpfs of `bytes` mounted on a fresh directory, unmounted (lazily, so that a
// store still open cannot keep it) and removed with the object.
class Tmpfs {
 public:
  explicit Tmpfs(uint64_t bytes) {
    char name[] = "/tmp/wanopt-disk-XXXXXX";
    if (!mkdtemp(name)) throw std::runtime_error("mkdtemp failed");
    path = name;
    std::string options = "size=" + std::to_string(bytes) + ",mode=0755";
    if (::mount("tmpfs", path.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      int error = errno;
      ::rmdir(path.c_str());
      throw std::runtime_error("mount tmpfs on " + path + ": " + std::strerror(error) + " (the test needs root)");
    }
  }
  ~Tmpfs() {
    ::umount2(path.c_str(), MNT_DETACH);
    ::rmdir(path.c_str());
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;

  // Fills what is left with one file: every later write fails with ENOSPC.
  void Fill() const {
    int fd = ::open((path + "/filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    static const char block[64 << 10] = {};
    while (::write(fd, block, sizeof block) > 0) {
    }
    int error = errno;
    ::close(fd);
    REQUIRE(error == ENOSPC);
  }
  void RemountReadOnly() const {
    REQUIRE(::mount("tmpfs", path.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, nullptr) == 0);
  }

  std::string path;
};

bool Send(Pair& pair, uint64_t id, const std::vector<uint8_t>& data) {
  auto r = lab::EchoTransfer(pair.entry(), id, data, pair.origin);
  if (!r.verified) MESSAGE(r.error);
  return r.verified;
}

// The datacenter's record of the connection whose transfer was `nth` (1-based, in
// the order they were accepted), once its session closed.
ConnectionSnapshot DatacenterConnection(Pair& pair, size_t nth) {
  for (int i = 0; i < 5000 && pair.datacenter->counters().sessions_active; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // bounded wait for a condition
  }
  auto connections = pair.datacenter->table().Connections();
  std::sort(connections.begin(), connections.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  REQUIRE(connections.size() >= nth);
  return connections[nth - 1];
}

// Creates a datastore in `path` with a few chunks in it, and closes it.
void MakeStore(const std::string& path) {
  datastore::ChunkStoreOptions options;
  options.path = path;
  std::string error;
  auto store = datastore::ChunkStore::Open(options, &error);
  REQUIRE_MESSAGE(store, error);
  auto bytes = lab::RandomBytes(64 << 10, 43);
  store->Put(bytes);
  store->Flush();
}

// Starts a pair whose datacenter store is `store`, which cannot be used: the box
// must start all the same, relay correct bytes at L, and say why.
void ExpectStartsWithoutDre(const std::string& branch_store, const std::string& store) {
  std::unique_ptr<Pair> pair;
  REQUIRE_NOTHROW(pair = std::make_unique<Pair>(PairOptions{.branch_store = branch_store, .datacenter_store = store}));
  REQUIRE(pair->datacenter->store());
  CHECK_FALSE(pair->datacenter->store()->healthy());
  auto data = lab::SampleText(2 << 20, 44);
  CHECK(Send(*pair, 1, data));
  CHECK(Send(*pair, 2, data));
  auto c = DatacenterConnection(*pair, 2);
  REQUIRE(c.policy.applied);
  CHECK(*c.policy.applied == Policy::kLz);
  CHECK(Noted(c, "datastore degraded: datastore " + store + ": cannot open"));
}

}  // namespace

TEST_CASE("datastore disk full mid-transfer: correct bytes, the store degrades, DRE off after, a restart on the full disk too") {
  TempDir dir;
  Tmpfs disk(8 << 20);
  std::string store = disk.path + "/dc";
  Pair pair({.branch_store = dir.path + "/branch", .datacenter_store = store});
  auto data = lab::RandomBytes(64 << 20, 41);
  CHECK(Send(pair, 1, data));
  datastore::ChunkStore* dc = pair.datacenter->store();
  REQUIRE(dc);
  // Chunks reach the disk in the store's writer thread: the failure may be
  // reported a moment after the transfer.
  for (int i = 0; i < 5000 && dc->healthy(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // bounded wait for a condition
  }
  CHECK_FALSE(dc->healthy());
  CHECK(dc->stats().degraded);
  CHECK(dc->stats().write_errors > 0);
  CHECK(dc->degraded_reason().find("No space left on device") != std::string::npos);
  // New connections apply L and say why; the branch, which encodes a connection's
  // first bytes as its peering applied last time, follows.
  auto more = lab::RandomBytes(4 << 20, 42);
  CHECK(Send(pair, 2, more));
  CHECK(Send(pair, 3, more));
  auto c = DatacenterConnection(pair, 3);
  REQUIRE(c.policy.applied);
  CHECK(*c.policy.applied == Policy::kLz);
  CHECK(Noted(c, "datastore degraded: cannot write chunks: No space left on device"));
  // Closing the degraded store writes nothing; starting again on the still-full
  // disk runs without DRE.
  REQUIRE_NOTHROW(pair.Restart());
  CHECK(Send(pair, 4, more));
}

TEST_CASE("the datacenter starts on a full disk, without DRE, and says so") {
  TempDir dir;
  Tmpfs disk(8 << 20);
  MakeStore(disk.path + "/dc");
  disk.Fill();
  ExpectStartsWithoutDre(dir.path + "/branch", disk.path + "/dc");
  // A store that was never created cannot be on a full disk either.
  ExpectStartsWithoutDre(dir.path + "/branch2", disk.path + "/new");
}

TEST_CASE("the datacenter starts on a read-only disk, without DRE, and says so") {
  TempDir dir;
  Tmpfs disk(8 << 20);
  MakeStore(disk.path + "/dc");
  disk.RemountReadOnly();
  ExpectStartsWithoutDre(dir.path + "/branch", disk.path + "/dc");
  ExpectStartsWithoutDre(dir.path + "/branch2", disk.path + "/new");
}

TEST_CASE("a datacenter restarted on a read-only disk still decodes what the branch encoded with DRE") {
  TempDir dir;
  Tmpfs disk(8 << 20);
  Pair pair({.branch_store = dir.path + "/branch", .datacenter_store = disk.path + "/dc"});
  auto data = lab::SampleText(2 << 20, 45);
  // Applied F: the branch encodes the first bytes of its next connections with DRE,
  // before the datacenter's answer.
  REQUIRE(Send(pair, 1, data));
  pair.Restart([&] { disk.RemountReadOnly(); });
  REQUIRE(pair.datacenter->store());
  CHECK_FALSE(pair.datacenter->store()->healthy());
  CHECK(Send(pair, 2, data));
  CHECK(Send(pair, 3, data));
  auto c = DatacenterConnection(pair, 2);
  REQUIRE(c.policy.applied);
  CHECK(*c.policy.applied == Policy::kLz);
  CHECK(Noted(c, "datastore degraded: datastore " + disk.path + "/dc: cannot open"));
}

TEST_CASE("the datacenter starts when its store's files were lost, without DRE, and says so") {
  TempDir dir;
  Tmpfs disk(8 << 20);
  MakeStore(disk.path + "/dc");
  // The database's files went missing (a failing disk, an operator's mistake)
  // while SECRET and CURRENT survived.
  int removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(disk.path + "/dc")) {
    std::string name = entry.path().filename().string();
    if (name.starts_with("MANIFEST") || name.ends_with(".log") || name.ends_with(".sst")) {
      std::filesystem::remove(entry.path());
      ++removed;
    }
  }
  REQUIRE(removed > 0);
  ExpectStartsWithoutDre(dir.path + "/branch", disk.path + "/dc");
}

TEST_CASE("a datastore path under a regular file is still a start failure") {
  TempDir dir;
  std::string file = dir.path + "/file";
  FILE* f = std::fopen(file.c_str(), "w");
  REQUIRE(f);
  std::fclose(f);
  CHECK_THROWS_WITH_AS(Pair(PairOptions{.datacenter_store = file + "/dc"}), doctest::Contains("cannot open"),
                       std::runtime_error);
}

TEST_CASE("a chunk store whose disk fills degrades: it stops storing, still serves, flushes and closes") {
  Tmpfs disk(4 << 20);
  datastore::ChunkStoreOptions options;
  options.path = disk.path + "/store";
  options.write_queue_bytes = 1 << 20;
  std::string error;
  bool misconfigured = true;
  auto store = datastore::ChunkStore::Open(options, &error, &misconfigured);
  REQUIRE_MESSAGE(store, error);
  CHECK_FALSE(misconfigured);
  auto first = lab::RandomBytes(8 << 10, 51);
  auto first_id = store->Put(first);
  store->Flush();
  REQUIRE(store->healthy());
  CHECK(store->degraded_reason().empty());
  // Until the disk is full, and then some.
  uint64_t seed = 52;
  for (int i = 0; i < 4000 && store->healthy(); ++i) store->Put(lab::RandomBytes(8 << 10, seed++));
  REQUIRE_FALSE(store->healthy());
  CHECK(store->degraded_reason().find("No space left on device") != std::string::npos);
  auto later = lab::RandomBytes(8 << 10, 9999);
  auto later_id = store->Put(later);
  CHECK_FALSE(store->Contains(later_id));
  CHECK_FALSE(store->Get(later_id));
  auto served = store->Get(first_id);
  REQUIRE(served);
  CHECK(*served == first);
  store->Flush();  // returns, and writes nothing
  auto stats = store->stats();
  CHECK(stats.degraded);
  CHECK(stats.write_errors > 0);
  store.reset();  // closes without writing
  // Still full: Open fails, as a disk problem, not as a misconfiguration.
  store = datastore::ChunkStore::Open(options, &error, &misconfigured);
  if (!store) {
    CHECK_FALSE(misconfigured);
    CHECK(error.find("cannot open") != std::string::npos);
  } else {
    CHECK(store->Get(first_id));  // or it opens, and serves what it held
  }
}
