// A peering's map of chunk names is bounded by the chunk store: names of evicted
// chunks are dropped (dre/peer_table.h), in memory and in the peer file.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "datastore/chunk_store.h"
#include "tests/unit/datastore_test_util.h"
#include "util/log.h"
#include "wanopt/dre/fingerprint.h"
#include "wanopt/dre/peer_table.h"

using namespace wanopt;
using namespace wanopt::datastore::test_helpers;

TEST_CASE("a peering forgets the chunks the store evicted: its map, its guesses and its file stay bounded") {
  TempDir dir;
  auto store = OpenStore(dir.store(), 1 << 20);  // 1 MiB: a few thousand 256-byte chunks
  dre::PeerTable table(dir.path() + "/peers", store.get());
  auto peer = table.Get("peer-a", std::nullopt);
  std::vector<dre::Fingerprint> names;
  std::optional<dre::Fingerprint> previous;
  for (uint64_t i = 0; i < 160000; ++i) {  // 40 MiB of chunks through a 1 MiB store
    Chunk chunk = NthChunk(i);
    chunk.resize(256);
    chunk[0] = static_cast<uint8_t>(i);
    chunk[1] = static_cast<uint8_t>(i >> 8);
    chunk[2] = static_cast<uint8_t>(i >> 16);
    auto fingerprint = dre::FingerprintOf(chunk, peer->key());
    peer->Learn(fingerprint, store->Put(chunk));
    if (previous) peer->SetNext(*previous, fingerprint);  // as the encoder does
    previous = fingerprint;
    if (i % 1000 == 0) names.push_back(fingerprint);
    REQUIRE(peer->size() <= 2 * std::max<size_t>(64 << 10, store->stats().chunks) + 1);
  }
  // Pruned at least once: an early chunk's name is gone; a recent one is still known.
  CHECK_FALSE(peer->Find(names.front()));
  CHECK(peer->Find(names.back()));
  // The guess of what followed an early chunk went with its name; a recent one stays.
  CHECK_FALSE(peer->Next(names.front()));
  CHECK(peer->Next(names.back()));
  CHECK(peer->size() < 160000 / 2);
  // The file was rewritten with what is left, not with every chunk ever learned.
  auto file = std::filesystem::path(dir.path()) / "peers";
  uintmax_t bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(file)) bytes += entry.file_size();
  CHECK(bytes < 160000 * 33 / 2);
}

TEST_CASE("a peering's file across restarts: appended to as it is, a torn last record ignored, read back whole") {
  TempDir dir;
  const std::string peers = dir.path() + "/peers";
  auto name = [](uint64_t i) { return dre::Fingerprint{i * 0x9e3779b97f4a7c15ull, i}; };
  auto id = [](uint64_t i) {
    datastore::ContentId c{};
    c[0] = static_cast<uint8_t>(i);
    c[15] = 0x42;
    return c;
  };
  dre::Seed seed;
  {
    dre::PeerTable table(peers);
    auto peer = table.Get("peer-b", std::nullopt);
    seed = peer->seed();
    peer->SetPeerInstance(77);
    for (uint64_t i = 1; i <= 10; ++i) peer->Learn(name(i), id(i));
    peer->Forget(name(3));
  }
  const auto file = std::filesystem::path(peers) / "peer-b.idx";
  const auto written = std::filesystem::file_size(file);
  {
    dre::PeerTable table(peers);
    auto peer = table.Get("peer-b", std::nullopt);
    CHECK(peer->seed() == seed);
    CHECK(peer->peer_instance() == 77);
    CHECK(peer->size() == 9);
    CHECK_FALSE(peer->Find(name(3)));
    CHECK(peer->Find(name(10)) == id(10));
    for (uint64_t i = 11; i <= 15; ++i) peer->Learn(name(i), id(i));
  }
  // Appended to, not rewritten: what was there is still there, five records more.
  CHECK(std::filesystem::file_size(file) == written + 5 * 33);
  {
    std::ofstream torn(file, std::ios::app | std::ios::binary);
    torn.write("\x01torn", 5);  // a record cut short by a kill -9
  }
  {
    dre::PeerTable table(peers);
    auto peer = table.Get("peer-b", std::nullopt);
    CHECK(peer->size() == 14);
    peer->Learn(name(16), id(16));
  }
  // Rewritten once (the torn bytes gone, the forgotten name with them), then appended.
  CHECK((std::filesystem::file_size(file) - 8 - 32) % 33 == 0);
  dre::PeerTable table(peers);
  auto peer = table.Get("peer-b", std::nullopt);
  CHECK(peer->size() == 15);
  CHECK(peer->Find(name(16)) == id(16));
  CHECK(peer->Find(name(1)) == id(1));
  CHECK(peer->peer_instance() == 77);
}

TEST_CASE("a peering unused for kIdlePeeringAge loses its file, one in use or read since keeps it") {
  TempDir dir;
  const std::string peers = dir.path() + "/peers";
  const auto fp = dre::Fingerprint{0x1234, 0x5678};
  datastore::ContentId id{};
  id[0] = 9;
  {
    dre::PeerTable table(peers);
    for (const char* name : {"gone", "idle-read", "in-use", "recent"}) table.Get(name, std::nullopt)->Learn(fp, id);
  }
  auto file = [&](const char* name) { return std::filesystem::path(peers) / (std::string(name) + ".idx"); };
  auto age = [&](const char* name, std::chrono::hours by) {
    std::filesystem::last_write_time(file(name), std::filesystem::file_time_type::clock::now() - by);
  };
  age("gone", dre::kIdlePeeringAge + std::chrono::hours(1));
  age("idle-read", dre::kIdlePeeringAge + std::chrono::hours(1));
  age("in-use", dre::kIdlePeeringAge + std::chrono::hours(1));
  age("recent", dre::kIdlePeeringAge - std::chrono::hours(24));
  {
    dre::PeerTable table(peers);
    // Read in this run, nothing appended since (redundant traffic learns nothing).
    auto read = table.Get("idle-read", std::nullopt);
    CHECK(read->Find(fp) == id);
    // In use, and its file made to look old meanwhile: marked used by the sweep.
    auto used = table.Get("in-use", std::nullopt);
    age("in-use", dre::kIdlePeeringAge + std::chrono::hours(1));
    CHECK(table.ForgetIdleFiles() == 1);
    CHECK_FALSE(std::filesystem::exists(file("gone")));
    CHECK(std::filesystem::exists(file("idle-read")));
    CHECK(std::filesystem::exists(file("in-use")));
    CHECK(std::filesystem::exists(file("recent")));
  }
  // The next run: what the sweep marked survives a sweep at start.
  dre::PeerTable table(peers);
  CHECK(table.ForgetIdleFiles() == 0);
  CHECK(table.Get("in-use", std::nullopt)->Find(fp) == id);
  // A peering whose file went starts afresh.
  auto fresh = table.Get("gone", std::nullopt);
  CHECK(fresh->size() == 0);
  // With no grace at all, the two not read in this run go ("in-use" and "gone" are).
  CHECK(table.ForgetIdleFiles(std::chrono::seconds(0)) == 2);
  CHECK_FALSE(std::filesystem::exists(file("recent")));
  CHECK_FALSE(std::filesystem::exists(file("idle-read")));
  CHECK(std::filesystem::exists(file("in-use")));
}

TEST_CASE("a peering file the sweep cannot delete is kept and named, the other idle ones still go") {
  TempDir dir;
  const std::string peers = dir.path() + "/peers";
  {
    dre::PeerTable table(peers);
    for (const char* name : {"a", "b"}) table.Get(name, std::nullopt)->Learn(dre::Fingerprint{1, 2}, {});
  }
  // Not a file at all: a directory with something in it, under a peering file's name.
  const auto stuck = std::filesystem::path(peers) / "stuck.idx";
  std::filesystem::create_directory(stuck);
  std::ofstream(stuck / "inside").put('x');
  const auto old = std::filesystem::file_time_type::clock::now() - dre::kIdlePeeringAge - std::chrono::hours(1);
  for (const char* name : {"a.idx", "b.idx", "stuck.idx"}) {
    std::filesystem::last_write_time(std::filesystem::path(peers) / name, old);
  }
  log::StartCapture();
  dre::PeerTable table(peers);
  CHECK(table.ForgetIdleFiles() == 2);
  CHECK_FALSE(std::filesystem::exists(std::filesystem::path(peers) / "a.idx"));
  CHECK_FALSE(std::filesystem::exists(std::filesystem::path(peers) / "b.idx"));
  CHECK(std::filesystem::exists(stuck));
  CHECK(log::Captured().find("stuck.idx unused for 90 days: cannot delete it") != std::string::npos);
}
