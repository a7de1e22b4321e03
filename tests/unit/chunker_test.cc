#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include "wanopt/dre/chunker.h"
#include "wanopt/dre/fingerprint.h"

using namespace wanopt::dre;

namespace {

// Small sizes give many chunks from little data, so the tests stay fast under ASan.
constexpr ChunkerOptions kSmall{.min_size = 256, .avg_size = 1024, .max_size = 8192};

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

std::vector<uint8_t> Random(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = SplitMix(seed);
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

// Chunk lengths of `data` fed as one piece.
std::vector<size_t> Chunks(std::span<const uint8_t> data, const ChunkerOptions& options) {
  Chunker chunker(options);
  std::vector<size_t> lengths;
  while (size_t n = chunker.NextBoundary(data, true)) {
    lengths.push_back(n);
    data = data.subspan(n);
  }
  return lengths;
}

// Chunk lengths of `data` arriving in pieces of next_piece() bytes, the way the DRE
// encoder sees a socket: the pending bytes of the unfinished chunk are passed again
// with each new piece.
template <typename NextPiece>
std::vector<size_t> ChunksStreamed(std::span<const uint8_t> data, const ChunkerOptions& options,
                                   NextPiece next_piece) {
  Chunker chunker(options);
  std::vector<size_t> lengths;
  size_t start = 0;     // first byte of the pending chunk
  size_t received = 0;  // bytes "read" so far
  while (received < data.size()) {
    received = std::min(data.size(), received + next_piece());
    bool end = received == data.size();
    while (size_t n = chunker.NextBoundary(data.subspan(start, received - start), end)) {
      lengths.push_back(n);
      start += n;
    }
  }
  CHECK(start == data.size());
  return lengths;
}

// Chunk contents, to compare two versions of a text regardless of offsets.
std::vector<std::string> Contents(std::span<const uint8_t> data, const std::vector<size_t>& lengths) {
  std::vector<std::string> out;
  size_t at = 0;
  for (size_t n : lengths) {
    out.emplace_back(reinterpret_cast<const char*>(data.data() + at), n);
    at += n;
  }
  return out;
}

// How many chunks of `b` do not occur in `a`.
size_t NewChunks(std::span<const uint8_t> a, std::span<const uint8_t> b, const ChunkerOptions& options) {
  auto old_chunks = Contents(a, Chunks(a, options));
  std::unordered_set<std::string> seen(old_chunks.begin(), old_chunks.end());
  size_t fresh = 0;
  for (const auto& chunk : Contents(b, Chunks(b, options))) fresh += !seen.contains(chunk);
  return fresh;
}

void CheckSizes(const std::vector<size_t>& lengths, const ChunkerOptions& options, size_t total) {
  size_t sum = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    CHECK(lengths[i] <= options.max_size);
    if (i + 1 < lengths.size()) CHECK(lengths[i] >= options.min_size);
    sum += lengths[i];
  }
  CHECK(sum == total);
}

std::array<uint8_t, kFingerprintSeedSize> Seed(uint8_t first) {
  std::array<uint8_t, kFingerprintSeedSize> seed{};
  seed[0] = first;
  return seed;
}

}  // namespace

TEST_SUITE("chunker") {

TEST_CASE("the gear table is fixed: both boxes must cut at the same places") {
  const auto& gear = GearTable();
  // SplitMix64 from the seed 0x5741'4e4f'5054'4452 ("WANOPTDR"): entries 0, 1, 255.
  CHECK(gear[0] == 0x5ff1f528041dbe62);
  CHECK(gear[1] == 0x676219b212b4b617);
  CHECK(gear[255] == 0xd53e1f6be4a0d80f);
  std::unordered_set<uint64_t> distinct(gear.begin(), gear.end());
  CHECK(distinct.size() == 256);
}

TEST_CASE("the default chunker cuts known data where it always did") {
  // Pins the table, the masks and the skipping rules together: if this changes, boxes
  // of the old and new build no longer find each other's chunks.
  auto data = Random(1 << 20, 42);
  auto lengths = Chunks(data, ChunkerOptions{});
  REQUIRE(lengths.size() >= 6);
  // Cross-checked against a straightforward Python model of the algorithm.
  CHECK(lengths.size() == 220);
  CHECK(std::vector<size_t>(lengths.begin(), lengths.begin() + 6) ==
        std::vector<size_t>{5245, 4227, 1193, 4228, 4694, 2974});
}

TEST_CASE("chunk sizes stay within min and max") {
  for (const ChunkerOptions& options : {kSmall, ChunkerOptions{}}) {
    CAPTURE(options.avg_size);
    auto random = Random(4 << 20, 7);
    auto lengths = Chunks(random, options);
    CheckSizes(lengths, options, random.size());
    double mean = double(random.size()) / lengths.size();
    CHECK(mean > options.avg_size * 0.75);
    CHECK(mean < options.avg_size * 1.5);

    // A run of one byte value hashes to a constant once the window is full: either
    // every position cuts or none does. These values cut nowhere, so a run becomes
    // maximum-size chunks (and repeats as one chunk).
    for (uint8_t value : {0x00, 0x20, 0x61, 0xff}) {
      CAPTURE(int(value));
      std::vector<uint8_t> run(1 << 20, value);
      auto run_lengths = Chunks(run, options);
      CheckSizes(run_lengths, options, run.size());
      for (size_t i = 0; i + 1 < run_lengths.size(); ++i) CHECK(run_lengths[i] == options.max_size);
    }
  }
}

TEST_CASE("an insertion or deletion changes only the chunks around it") {
  auto data = Random(2 << 20, 11);
  for (const ChunkerOptions& options : {kSmall, ChunkerOptions{}}) {
    CAPTURE(options.avg_size);
    auto inserted = data;
    inserted.insert(inserted.begin() + 5000, 37, 'x');
    CHECK(NewChunks(data, inserted, options) <= 2);

    auto deleted = data;
    deleted.erase(deleted.begin() + 3000, deleted.begin() + 3100);
    CHECK(NewChunks(data, deleted, options) <= 2);

    auto overwritten = data;
    std::fill(overwritten.begin() + 100'000, overwritten.begin() + 100'040, 0);
    CHECK(NewChunks(data, overwritten, options) <= 2);

    // And the unchanged data chunks identically.
    CHECK(NewChunks(data, data, options) == 0);
  }
}

TEST_CASE("pieces of any size give the same boundaries as one piece") {
  auto data = Random(3 << 20, 5);
  // Runs of one value produce maximum-size cuts, which must stream identically too.
  std::fill(data.begin() + 100'000, data.begin() + 400'000, 0);
  for (const ChunkerOptions& options : {kSmall, ChunkerOptions{}}) {
    CAPTURE(options.avg_size);
    auto whole = Chunks(data, options);
    uint64_t state = 99;
    CHECK(ChunksStreamed(data, options, [&] { return 1 + SplitMix(state) % 20'000; }) == whole);
    CHECK(ChunksStreamed(data, options, [&] { return 1 + SplitMix(state) % 300; }) == whole);
    CHECK(ChunksStreamed(data, options, [] { return 128 * 1024; }) == whole);
  }
  auto small = std::span(data).first(64 * 1024);
  CHECK(ChunksStreamed(small, kSmall, [] { return 1; }) == Chunks(small, kSmall));
}

TEST_CASE("a boundary does not depend on the bytes after it") {
  auto data = Random(256 * 1024, 3);
  auto lengths = Chunks(data, kSmall);
  size_t start = 0;
  for (size_t i = 0; i + 1 < lengths.size(); ++i) {
    auto chunk = std::span(data).subspan(start, lengths[i]);
    // The chunk alone, without end_of_stream, is recognized as complete...
    CHECK(Chunker(kSmall).NextBoundary(chunk, false) == lengths[i]);
    // ...and followed by other bytes it ends at the same place.
    std::vector<uint8_t> other(chunk.begin(), chunk.end());
    auto tail = Random(kSmall.max_size, 1000 + i);
    other.insert(other.end(), tail.begin(), tail.end());
    CHECK(Chunker(kSmall).NextBoundary(other, false) == lengths[i]);
    // One byte short, it is not complete.
    CHECK(Chunker(kSmall).NextBoundary(chunk.first(chunk.size() - 1), false) == 0);
    start += lengths[i];
  }
}

TEST_CASE("end of stream makes the tail a chunk, without it the tail waits") {
  auto data = Random(kSmall.min_size / 2, 8);
  Chunker chunker(kSmall);
  CHECK(chunker.NextBoundary(data, false) == 0);
  CHECK(chunker.NextBoundary(data, true) == data.size());

  auto longer = Random(100'000, 9);
  auto lengths = Chunks(longer, kSmall);
  size_t before_last = longer.size() - lengths.back();
  CHECK(Chunker(kSmall).NextBoundary(std::span(longer).subspan(before_last), false) == 0);
}

TEST_CASE("empty input has no chunks") {
  Chunker chunker;
  CHECK(chunker.NextBoundary({}, false) == 0);
  CHECK(chunker.NextBoundary({}, true) == 0);
  CHECK(Chunks({}, kSmall).empty());
}

TEST_CASE("bad options are rejected with a message naming the problem") {
  CHECK(ValidateChunkerOptions({}) == "");
  CHECK(ValidateChunkerOptions(kSmall) == "");
  CHECK(ValidateChunkerOptions({.min_size = 64, .avg_size = 128, .max_size = 129}) == "");
  CHECK(ValidateChunkerOptions({.min_size = 1, .avg_size = 4096, .max_size = 65536}) ==
        "chunker min_size 1 is below 64");
  CHECK(ValidateChunkerOptions({.min_size = 1024, .avg_size = 3000, .max_size = 65536}) ==
        "chunker avg_size 3000 is not a power of two");
  CHECK(ValidateChunkerOptions({.min_size = 1024, .avg_size = 0, .max_size = 65536}) ==
        "chunker avg_size 0 is not a power of two");
  CHECK(ValidateChunkerOptions({.min_size = 4096, .avg_size = 4096, .max_size = 65536}) ==
        "chunker min_size 4096 is not below avg_size 4096");
  CHECK(ValidateChunkerOptions({.min_size = 1024, .avg_size = 4096, .max_size = 4096}) ==
        "chunker avg_size 4096 is not below max_size 4096");
  CHECK(ValidateChunkerOptions({.min_size = 1024, .avg_size = 4096, .max_size = 512 * 1024}) ==
        "chunker max_size 524288 is above 262144");
  CHECK_THROWS_WITH_AS(Chunker({.min_size = 1024, .avg_size = 3000, .max_size = 65536}),
                       "chunker avg_size 3000 is not a power of two", std::invalid_argument);
}

TEST_CASE("fingerprints are stable for a key and differ between keys and contents") {
  FingerprintKey key(Seed(1));
  FingerprintKey same_key(Seed(1));
  FingerprintKey other_key(Seed(2));
  auto chunk = Random(8192, 1);
  Fingerprint f = FingerprintOf(chunk, key);
  CHECK(f == FingerprintOf(chunk, same_key));
  CHECK(!(f == FingerprintOf(chunk, other_key)));
  auto changed = chunk;
  changed[4000] ^= 1;
  CHECK(!(f == FingerprintOf(changed, key)));
  CHECK(!(FingerprintOf({}, key) == FingerprintOf({}, other_key)));

  // Pinned: both boxes, whatever their libxxhash build, derive the same fingerprints.
  const uint8_t text[] = "wanopt";
  Fingerprint pinned = FingerprintOf(std::span(text, 6), key);
  CHECK(pinned.hi == 0xa7ea3e07f1908fa9);
  CHECK(pinned.lo == 0x7e319638c0cb9842);

  CHECK(FingerprintFromBytes(FingerprintBytes(f)) == f);
  CHECK(FingerprintBytes({.lo = 0x0102030405060708, .hi = 0x1112131415161718})[0] == 0x11);
  std::unordered_set<Fingerprint> set{f, FingerprintOf(changed, key), f};
  CHECK(set.size() == 2);
}

}  // TEST_SUITE
