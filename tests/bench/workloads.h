// Deterministic workloads shared by the benchmarks: pseudo-random bytes and the
// "1% scattered edits" version of a file. Header-only; benchmarks only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace wanopt::bench {

using Bytes = std::vector<uint8_t>;

inline uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

inline Bytes RandomBytes(size_t n, uint64_t seed) {
  Bytes out(n);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = SplitMix(seed);
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

struct EditStats {
  size_t inserts = 0, deletes = 0, overwrites = 0;
  size_t bytes_touched = 0;  // inserted + deleted + overwritten
};

// v1 with edits scattered uniformly until `rate` of its bytes are touched. Each edit
// is 10..90 bytes (mean 50); inserted and overwriting bytes are copied from elsewhere
// in v1, so v2 is still text.
inline Bytes Edit(std::span<const uint8_t> v1, double rate, uint64_t seed, EditStats* stats) {
  const size_t mean_length = 50;
  const size_t edits = static_cast<size_t>(rate * v1.size() / mean_length);
  std::vector<size_t> positions(edits);
  for (auto& p : positions) p = SplitMix(seed) % v1.size();
  std::sort(positions.begin(), positions.end());
  Bytes v2;
  v2.reserve(v1.size() + v1.size() / 50);
  size_t at = 0;  // next byte of v1 to copy
  for (size_t p : positions) {
    if (p < at) continue;  // inside the previous edit
    v2.insert(v2.end(), v1.begin() + at, v1.begin() + p);
    at = p;
    size_t length = 10 + SplitMix(seed) % 81;
    size_t from = SplitMix(seed) % (v1.size() - length);
    switch (SplitMix(seed) % 3) {
      case 0:
        v2.insert(v2.end(), v1.begin() + from, v1.begin() + from + length);
        ++stats->inserts;
        break;
      case 1:
        length = std::min(length, v1.size() - at);
        at += length;
        ++stats->deletes;
        break;
      default:
        length = std::min(length, v1.size() - at);
        v2.insert(v2.end(), v1.begin() + from, v1.begin() + from + length);
        at += length;
        ++stats->overwrites;
        break;
    }
    stats->bytes_touched += length;
  }
  v2.insert(v2.end(), v1.begin() + at, v1.end());
  return v2;
}

}  // namespace wanopt::bench
