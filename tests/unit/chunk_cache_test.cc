// The chunk store's read cache (datastore/chunk_cache.h): least recently used out
// first, a hit makes an entry the newest, the byte bound with each entry's overhead,
// replacement, erasure, and memory given back when it empties. Checked against a
// plain model over a long random sequence too.
#include <doctest/doctest.h>

#include <list>
#include <map>
#include <random>

#include "datastore/chunk_cache.h"

using wanopt::datastore::Blob;
using wanopt::datastore::ChunkCache;
using wanopt::datastore::ContentId;

namespace {

ContentId Id(uint32_t n) {
  ContentId id{};
  // Spread like real ids (keyed hashes): the cache's table takes its first bytes.
  uint64_t h = (n + 1) * 0x9e3779b97f4a7c15ull;
  std::memcpy(id.data(), &h, sizeof h);
  std::memcpy(id.data() + 8, &n, sizeof n);
  return id;
}

Blob Bytes(size_t size, uint8_t fill) { return Blob::Copy(std::vector<uint8_t>(size, fill)); }

constexpr uint64_t kEntry = 1000 + ChunkCache::kEntryOverhead;  // what a 1000-byte chunk is charged

}  // namespace

TEST_CASE("chunk cache: the least recently used goes first, and a hit makes an entry the newest") {
  ChunkCache cache(8 * kEntry);
  for (uint32_t n = 0; n < 8; ++n) cache.Insert(Id(n), Bytes(1000, static_cast<uint8_t>(n)));
  CHECK(cache.size() == 8);
  CHECK(cache.charged() == 8 * kEntry);
  const Blob* hit = cache.Lookup(Id(0));  // 0 is now the newest: 1 is the oldest
  REQUIRE(hit);
  CHECK(hit->size == 1000);
  CHECK(hit->span()[999] == 0);
  cache.Insert(Id(8), Bytes(1000, 8));
  CHECK_FALSE(cache.Contains(Id(1)));
  CHECK(cache.Contains(Id(0)));
  CHECK(cache.Lookup(Id(1)) == nullptr);
  cache.Insert(Id(9), Bytes(1000, 9));  // then 2
  CHECK_FALSE(cache.Contains(Id(2)));
  CHECK(cache.size() == 8);
  CHECK(cache.charged() == 8 * kEntry);
  // A larger entry pushes out as many of the oldest as it needs: 3 and 4.
  cache.Insert(Id(10), Bytes(1900, 10));
  CHECK(cache.charged() == 6 * kEntry + 1900 + ChunkCache::kEntryOverhead);
  CHECK_FALSE(cache.Contains(Id(3)));
  CHECK_FALSE(cache.Contains(Id(4)));
  for (uint32_t n : {0, 5, 6, 7, 8, 9, 10}) CHECK(cache.Contains(Id(n)));
}

TEST_CASE("chunk cache: replacing, erasing, too large to cache, and a smaller capacity") {
  ChunkCache cache(8 * kEntry);
  cache.Insert(Id(1), Bytes(1000, 1));
  cache.Insert(Id(1), Bytes(500, 7));  // replaced, charged once
  CHECK(cache.size() == 1);
  CHECK(cache.charged() == 500 + ChunkCache::kEntryOverhead);
  CHECK(cache.Lookup(Id(1))->span()[0] == 7);
  // More than a quarter of the capacity: not cached, nothing else pushed out.
  cache.Insert(Id(2), Bytes(2 * kEntry, 2));
  CHECK_FALSE(cache.Contains(Id(2)));
  CHECK(cache.Contains(Id(1)));
  cache.Erase(Id(1));
  cache.Erase(Id(1));  // twice: nothing
  CHECK(cache.size() == 0);
  CHECK(cache.charged() == 0);
  CHECK(cache.Lookup(Id(1)) == nullptr);
  for (uint32_t n = 0; n < 8; ++n) cache.Insert(Id(n), Bytes(1000, static_cast<uint8_t>(n)));
  cache.set_capacity(3 * kEntry);  // the oldest five go at once
  CHECK(cache.size() == 3);
  for (uint32_t n = 5; n < 8; ++n) CHECK(cache.Contains(Id(n)));
  cache.set_capacity(0);
  CHECK(cache.size() == 0);
  CHECK(cache.charged() == 0);
}

TEST_CASE("chunk cache: the bytes of an entry that leaves are released, the caller's copy stays") {
  ChunkCache cache(4 * kEntry);
  Blob kept = Bytes(1000, 9);
  cache.Insert(Id(1), kept);
  CHECK(kept.data.use_count() == 2);
  cache.Erase(Id(1));
  CHECK(kept.data.use_count() == 1);
  cache.Insert(Id(1), kept);
  for (uint32_t n = 2; n < 6; ++n) cache.Insert(Id(n), Bytes(1000, 0));  // pushed out
  CHECK(kept.data.use_count() == 1);
  CHECK(kept.span()[0] == 9);
}

TEST_CASE("chunk cache: a long random sequence matches a plain LRU model") {
  constexpr uint64_t kCapacity = 64 * 1024;
  ChunkCache cache(kCapacity);
  std::list<uint32_t> order;  // front: most recently used
  std::map<uint32_t, std::pair<std::list<uint32_t>::iterator, uint32_t>> model;  // id -> (place, size)
  uint64_t charged = 0;
  auto model_erase = [&](uint32_t n) {
    auto it = model.find(n);
    if (it == model.end()) return;
    charged -= it->second.second + ChunkCache::kEntryOverhead;
    order.erase(it->second.first);
    model.erase(it);
  };
  std::mt19937 random(7);
  for (int step = 0; step < 200000; ++step) {
    uint32_t n = random() % 300;
    switch (random() % 4) {
      case 0:
      case 1: {  // insert
        uint32_t size = 1 + random() % 4000;
        cache.Insert(Id(n), Bytes(size, static_cast<uint8_t>(n)));
        if (size + ChunkCache::kEntryOverhead > kCapacity / 4) break;
        model_erase(n);
        while (charged > kCapacity - size - ChunkCache::kEntryOverhead) model_erase(order.back());
        order.push_front(n);
        model[n] = {order.begin(), size};
        charged += size + ChunkCache::kEntryOverhead;
        break;
      }
      case 2: {  // look up
        const Blob* blob = cache.Lookup(Id(n));
        auto it = model.find(n);
        REQUIRE((blob != nullptr) == (it != model.end()));
        if (blob) {
          REQUIRE(blob->size == it->second.second);
          REQUIRE(blob->span()[0] == static_cast<uint8_t>(n));
          order.splice(order.begin(), order, it->second.first);
        }
        break;
      }
      case 3:
        cache.Erase(Id(n));
        model_erase(n);
        break;
    }
    REQUIRE(cache.size() == model.size());
    REQUIRE(cache.charged() == charged);
  }
  for (const auto& [n, entry] : model) CHECK(cache.Contains(Id(n)));
}

TEST_CASE("chunk cache: ids that differ in one byte only, anywhere, are different entries") {
  ChunkCache cache(64 * kEntry);
  ContentId base = Id(1);
  cache.Insert(base, Bytes(1000, 0xaa));
  for (size_t at = 0; at < base.size(); ++at) {
    ContentId other = base;
    other[at] ^= 0x01;
    CAPTURE(at);
    CHECK(cache.Lookup(other) == nullptr);
    cache.Insert(other, Bytes(1000, static_cast<uint8_t>(at)));
    REQUIRE(cache.Lookup(other));
    CHECK(cache.Lookup(other)->span()[0] == at);
    CHECK(cache.Lookup(base)->span()[0] == 0xaa);
  }
  CHECK(cache.size() == 17);
}
