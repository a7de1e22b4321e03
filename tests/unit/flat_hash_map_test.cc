// FlatHashMap (util/flat_hash_map.h) against std::unordered_map, through growth,
// erasure with long probe runs that wrap around the table, Prune, clear and moves.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "util/flat_hash_map.h"

using wanopt::FlatHashMap;

namespace {

// Spreads keys over 64 bits, as a keyed fingerprint is.
struct GoodHash {
  uint64_t operator()(uint64_t key) const { return key * 0x9e3779b97f4a7c15ull; }
};
// Only 8 homes whatever the capacity, some at the very end of the table: long runs
// that wrap around, which is where backward-shift deletion goes wrong if it does.
struct ClusteringHash {
  uint64_t operator()(uint64_t key) const { return (key % 8) << 61 | (key % 8 == 7 ? (uint64_t{1} << 61) - 1 : 0); }
};

// A key that counts the comparisons made with it: how long the probe runs were.
uint64_t comparisons = 0;
struct CountedKey {
  uint64_t value;
  friend bool operator==(const CountedKey& a, const CountedKey& b) {
    ++comparisons;
    return a.value == b.value;
  }
};
struct CountedKeyHash {
  uint64_t operator()(const CountedKey& key) const { return GoodHash{}(key.value); }
};

template <typename Hash>
void MatchReference(uint64_t seed, uint64_t key_space) {
  FlatHashMap<uint64_t, uint32_t, Hash> map;
  std::unordered_map<uint64_t, uint32_t> reference;
  std::mt19937_64 rng(seed);
  auto check_all = [&] {
    REQUIRE(map.size() == reference.size());
    for (const auto& [key, value] : reference) {
      const uint32_t* got = map.find(key);
      REQUIRE(got);
      REQUIRE(*got == value);
    }
    size_t seen = 0;
    map.ForEach([&](uint64_t key, uint32_t value) {
      ++seen;
      REQUIRE(reference.at(key) == value);
    });
    REQUIRE(seen == reference.size());
  };
  for (int phase = 0; phase < 3; ++phase) {
    for (int step = 0; step < 20000; ++step) {
      uint64_t key = rng() % key_space;
      uint64_t dice = rng() % 10;
      bool growing = phase != 1;
      if (growing ? dice < 6 : dice < 2) {
        auto value = static_cast<uint32_t>(rng());
        map.insert_or_assign(key, value);
        reference[key] = value;
      } else {
        REQUIRE(map.erase(key) == (reference.erase(key) == 1));
        REQUIRE_FALSE(map.contains(key));
      }
    }
    check_all();
  }
  size_t before = map.size();
  size_t gone = map.Prune([](uint64_t key, uint32_t) { return key % 3 == 0; });
  std::erase_if(reference, [](const auto& entry) { return entry.first % 3 != 0; });
  CHECK(gone == before - reference.size());
  check_all();
  FlatHashMap<uint64_t, uint32_t, Hash> moved = std::move(map);
  CHECK(map.empty());
  CHECK_FALSE(map.contains(3));
  map.insert_or_assign(3, 4);  // a moved-from map is an empty one
  CHECK(*map.find(3) == 4);
  map = std::move(moved);
  check_all();
  map.clear();
  CHECK(map.empty());
  CHECK(map.memory_bytes() == 0);
  CHECK_FALSE(map.erase(0));
}

}  // namespace

TEST_SUITE("util") {

TEST_CASE("FlatHashMap matches a reference map: uniform hashes, and clustered ones that wrap around") {
  SUBCASE("uniform") { MatchReference<GoodHash>(1, 1 << 20); }
  SUBCASE("clustered, few keys (runs longer than the table is wide)") { MatchReference<ClusteringHash>(2, 300); }
  SUBCASE("clustered, many keys") { MatchReference<ClusteringHash>(3, 5000); }
}

TEST_CASE("FlatHashMap holds at most 8/3 slots an entry, and Prune gives memory back") {
  FlatHashMap<uint64_t, uint64_t, GoodHash> map;
  constexpr size_t kSlot = 24;  // key, value, the used flag padded
  CHECK(map.memory_bytes() == 0);
  for (uint64_t i = 0; i < 100000; ++i) {
    map.insert_or_assign(i, i);
    // Doubling past 3/4 full leaves it at least 3/8 full.
    if (i >= 16) REQUIRE(map.memory_bytes() * 3 <= (i + 1) * kSlot * 8);
  }
  size_t full = map.memory_bytes();
  map.Prune([](uint64_t key, uint64_t) { return key < 1000; });
  CHECK(map.size() == 1000);
  CHECK(map.memory_bytes() * 32 <= full);
  for (uint64_t i = 0; i < 1000; ++i) REQUIRE(*map.find(i) == i);
}

TEST_CASE("FlatHashMap filled in another table's order keeps its probe runs short: Prune, and a reserved copy") {
  // Iteration is in hash order; fed into a table that grows meanwhile, such keys all
  // land in its first part, one run as long as the table so far (quadratic).
  constexpr uint64_t kEntries = 50000;
  using Map = FlatHashMap<CountedKey, uint64_t, CountedKeyHash>;
  Map map;
  for (uint64_t i = 0; i < kEntries; ++i) map.insert_or_assign({i}, i);
  comparisons = 0;
  // A quarter goes: the rest moves to a table half the size, in this one's order.
  CHECK(map.Prune([](const CountedKey& key, uint64_t) { return key.value % 4 != 0; }) == kEntries / 4);
  // A run at most 3/4 full averages a couple of comparisons an insertion.
  CHECK(comparisons < 10 * kEntries);
  for (uint64_t i = 0; i < kEntries; ++i) REQUIRE(map.contains({i}) == (i % 4 != 0));
  for (uint64_t i = 0; i < kEntries; i += 4) map.insert_or_assign({i}, i);
  Map copy;
  copy.reserve(map.size());
  comparisons = 0;
  map.ForEach([&](const CountedKey& key, uint64_t value) { copy.insert_or_assign(key, value); });
  CHECK(comparisons < 10 * kEntries);
  CHECK(copy.size() == kEntries);
  for (uint64_t i = 0; i < kEntries; ++i) REQUIRE(*copy.find({i}) == i);
}

TEST_CASE("FlatHashMap::PruneSlice: a pass in slices drops what a whole Prune would, keeps the rest, wraps included") {
  for (uint64_t seed : {1, 2, 3}) {
    SUBCASE(("seed " + std::to_string(seed)).c_str()) {
      // Clustered keys make long runs that wrap around the end: erasures there pull
      // entries back across the slice boundaries and across the wrap.
      FlatHashMap<uint64_t, uint64_t, ClusteringHash> clustered;
      FlatHashMap<uint64_t, uint64_t, GoodHash> uniform;
      std::unordered_map<uint64_t, uint64_t> reference;
      std::mt19937_64 rng(seed);
      for (int i = 0; i < 3000; ++i) {
        uint64_t key = rng() % 100000;
        clustered.insert_or_assign(key, key * 3);
        uniform.insert_or_assign(key, key * 3);
        reference[key] = key * 3;
      }
      auto keep = [](uint64_t key, uint64_t) { return key % 5 != 0; };
      size_t cursor_c = 0, cursor_u = 0, looks = 0;
      bool done_c = false, done_u = false;
      while (!done_c || !done_u) {
        size_t slots = 1 + rng() % 40;
        if (!done_c) done_c = clustered.PruneSlice(&cursor_c, slots, keep);
        if (!done_u) done_u = uniform.PruneSlice(&cursor_u, slots, keep);
        REQUIRE(++looks < 100000);
      }
      std::erase_if(reference, [&](const auto& e) { return !keep(e.first, e.second); });
      CHECK(clustered.size() == reference.size());
      CHECK(uniform.size() == reference.size());
      for (const auto& [key, value] : reference) {
        REQUIRE(clustered.find(key));
        REQUIRE(*clustered.find(key) == value);
        REQUIRE(uniform.find(key));
      }
    }
  }
}

TEST_CASE("FlatHashMap::PruneSlice: small slices over many small tables, drops at slot 0 included") {
  // A slice whose every look erases at slot 0 leaves the cursor at 0: that is not
  // the end of the pass.
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 3000; ++trial) {
    FlatHashMap<uint64_t, uint64_t, GoodHash> map;
    std::unordered_map<uint64_t, uint64_t> reference;
    int n = 1 + static_cast<int>(rng() % 60);
    for (int i = 0; i < n; ++i) {
      uint64_t key = rng() % 1000;
      map.insert_or_assign(key, key);
      reference[key] = key;
    }
    const uint64_t salt = rng();
    auto keep = [salt](uint64_t key, uint64_t) { return ((key ^ salt) * 0x9e3779b97f4a7c15ull) >> 62 != 0; };
    size_t cursor = 0;
    for (int calls = 0; !map.PruneSlice(&cursor, 1 + rng() % 7, keep); ++calls) REQUIRE(calls < 1000);
    std::erase_if(reference, [&](const auto& e) { return !keep(e.first, e.second); });
    REQUIRE(map.size() == reference.size());
    for (const auto& [key, value] : reference) REQUIRE(map.contains(key));
  }
  FlatHashMap<uint64_t, uint64_t, GoodHash> big;
  for (uint64_t i = 0; i < 10000; ++i) big.insert_or_assign(i, i);
  big.Prune([](uint64_t, uint64_t) { return true; });
  size_t full = big.memory_bytes();
  size_t cursor = 0;
  while (!big.PruneSlice(&cursor, 100, [](uint64_t key, uint64_t) { return key < 100; })) {
  }
  CHECK(big.memory_bytes() == full);  // slices never shrink the table
  big.shrink_to_fit();
  CHECK(big.memory_bytes() * 32 <= full);
  for (uint64_t i = 0; i < 100; ++i) REQUIRE(*big.find(i) == i);
}

}  // TEST_SUITE
