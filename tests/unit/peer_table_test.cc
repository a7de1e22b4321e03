// A peering's map of chunk names is bounded by the chunk store: names of evicted
// chunks are dropped (dre/peer_table.h), in memory and in the peer file.
#include <doctest/doctest.h>

#include <filesystem>
#include <optional>

#include "datastore/chunk_store.h"
#include "tests/unit/datastore_test_util.h"
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
