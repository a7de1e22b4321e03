// The DRE chunk store: round trips, misses, per-store secrets, eviction within
// max_bytes, the in-memory index, and the errors Open reports. Restarts and damage:
// datastore_restart_test.cc; the write queue, read cache and concurrency:
// datastore_queue_test.cc. Every test works in a fresh directory under /tmp, removed
// at its end.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <unordered_map>

#include "datastore/chunk_index.h"
#include "datastore/chunk_store.h"
#include "datastore/testing.h"
#include "datastore/turnover.h"
#include "tests/unit/datastore_test_util.h"

using namespace wanopt;
using namespace wanopt::datastore;
using namespace wanopt::datastore::test_helpers;
namespace fs = std::filesystem;

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
  store->Flush();  // the writer releases evicted segments
  auto stats = store->stats();
  CHECK(stats.bytes == kept_bytes);
  CHECK(stats.chunks == ids.size() - first_kept);
  CHECK(stats.evictions == first_kept);
  CHECK(kept_bytes > kMax - 16 * 8192);  // evicts what it must, and not much more
  // On disk: what is kept, plus evicted chunks until their segment (64 KiB here) goes.
  CHECK(stats.disk_bytes >= stats.bytes);
  CHECK(stats.disk_bytes <= kMax + 3 * (64 << 10));
  for (size_t i = 0; i < first_kept; ++i) CHECK_FALSE(store->Get(ids[i]));
  // A Put of a chunk already there does not make it younger either.
  store->Put(chunks[first_kept]);
  for (int i = 0; i < 4; ++i) store->Put(RandomChunk(rng, 8192));
  CHECK_FALSE(store->Contains(ids[first_kept]));
  // A chunk bigger than the whole store is not stored.
  Chunk huge = RandomChunk(rng, kMax + 1);
  CHECK_FALSE(store->Contains(store->Put(huge)));
}


TEST_CASE("RocksDB's log files go as the index is flushed: nothing holds the oldest one") {
  // The index's memtable (16 MiB) fills after some 200,000 entries, each Put and
  // each eviction one; every fill starts a new log file. A write left unflushed in
  // another family (the format, written once) used to keep every log file after it.
  TempDir dir;
  auto store = OpenStore(dir.store(), 1 << 20);
  for (uint64_t i = 0; i < 400000; ++i) {
    uint8_t chunk[8];
    std::memcpy(chunk, &i, sizeof chunk);
    store->Put(chunk);
  }
  store->Flush();
  int logs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.store())) logs += entry.path().extension() == ".log";
  CHECK(logs <= 2);
}

TEST_CASE("Lasting: every chunk while the store has room, all but the oldest quarter once it is nearly full") {
  TempDir dir;
  constexpr uint64_t kMax = 1 << 20;
  auto store = OpenStore(dir.store(), kMax);
  testing::IgnoreTurnover(*store);  // the quarter alone (the rate: the next case)
  std::mt19937_64 rng(5);
  std::vector<ContentId> ids;
  for (int i = 0; i < 64; ++i) ids.push_back(store->Put(RandomChunk(rng, 8192)));  // half full
  for (const auto& id : ids) CHECK(store->Lasting(id));
  CHECK_FALSE(store->Lasting(store->IdOf(RandomChunk(rng, 100))));  // not stored
  for (int i = 0; i < 200; ++i) ids.push_back(store->Put(RandomChunk(rng, 8192)));  // evicting now
  size_t first_kept = 0;
  while (!store->Contains(ids[first_kept])) ++first_kept;
  REQUIRE(first_kept > 0);
  size_t kept = ids.size() - first_kept, not_lasting = 0;
  for (size_t i = first_kept; i < ids.size(); ++i) {
    bool lasting = store->Lasting(ids[i]);
    if (!lasting) ++not_lasting;
    // The ones that are not are the oldest: a prefix of what is kept.
    CHECK(lasting == (i - first_kept >= not_lasting));
  }
  CHECK(not_lasting == kept / 4);
  CHECK(store->Lasting(ids.back()));
}

TEST_CASE("Lasting: a store that turns over within the repair window names nothing") {
  TempDir dir;
  constexpr uint64_t kMax = 1 << 20;
  auto store = OpenStore(dir.store(), kMax);
  std::mt19937_64 rng(6);
  std::vector<ContentId> ids;
  for (int i = 0; i < 64; ++i) ids.push_back(store->Put(RandomChunk(rng, 8192)));  // half full
  store->Flush();
  for (const auto& id : ids) CHECK(store->Lasting(id));  // the other half is room enough for what came
  // Twice the store in far less than kRepairWindow (5 s): at that rate every chunk
  // kept now is gone before a peer's nack could come back.
  for (int i = 0; i < 200; ++i) ids.push_back(store->Put(RandomChunk(rng, 8192)));
  store->Flush();
  size_t kept = 0, lasting = 0;
  for (const auto& id : ids) {
    kept += store->Contains(id);
    lasting += store->Lasting(id);
  }
  CHECK(kept > 64);
  CHECK(lasting == 0);
}

TEST_CASE("Turnover: what the last window brought, from the newest sample a window old") {
  using Clock = Turnover::Clock;
  Turnover t(std::chrono::seconds(5));
  Clock::time_point t0{};
  t.Record(t0, 10, 1000);
  CHECK(t.seqs() == 0);  // one sample: nothing to measure against yet
  t.Record(t0 + std::chrono::seconds(1), 110, 101000);
  CHECK(t.seqs() == 500);  // a second of a burst: its rate, 100 a second, for a whole window
  CHECK(t.bytes() == 500000);
  for (int s = 2; s <= 12; ++s) t.Record(t0 + std::chrono::seconds(s), 10 + 100 * uint64_t(s), 1000 + 100000 * uint64_t(s));
  CHECK(t.seqs() == 500);  // 100 a second over the last 5 s
  CHECK(t.bytes() == 500000);
  // A pause of a minute, then a little: only what came since the pause counts.
  t.Record(t0 + std::chrono::seconds(72), 1220, 1202000);
  CHECK(t.seqs() == 10);
  CHECK(t.bytes() == 1000);
  // Many samples close together (more than the ring holds within a window): the
  // measure still spans the window, never less.
  Clock::time_point at = t0 + std::chrono::seconds(80);
  uint64_t seq = 1220;
  for (int i = 0; i < 1000; ++i) {
    seq += 2;
    t.Record(at += std::chrono::milliseconds(20), seq, 1202000 + seq);
  }
  CHECK(t.seqs() >= 500);  // 100 a second over at least 5 s
  CHECK(t.seqs() <= 1100);
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
