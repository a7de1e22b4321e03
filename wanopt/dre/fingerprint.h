// Chunk fingerprints for DRE: a keyed 128-bit hash that names a chunk on the wire
// between the two boxes of a peering.
//
// A fingerprint is XXH3-128 of the chunk's bytes, keyed with a 192-byte secret
// derived from a 32-byte seed that the two boxes of a peering agree on. The key is what
// keeps a sender from crafting two chunks with the same fingerprint (which would make
// the peer substitute one for the other): without the secret, no practical way to steer
// XXH3's output is known. XXH3 is not a cryptographic MAC, so anyone who knows the seed
// can craft collisions; the seed must be as private as the peering itself. Accidental
// collisions need about 2^64 distinct chunks.
//
// The secret is expanded from the seed with XXH3-128 under 12 fixed seeds (0..11), one
// 16-byte block each. xxHash's own XXH3_generateSecret() is not used: its output is
// "tied to a specific library version", and boxes with different libxxhash builds
// must still derive the same secret. XXH3's hash values are stable since 0.8.0.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace wanopt::dre {

struct Fingerprint {
  uint64_t lo = 0;
  uint64_t hi = 0;
  friend bool operator==(const Fingerprint&, const Fingerprint&) = default;
};

// The 16 bytes that go on the wire: hi then lo, big-endian (xxHash's canonical form
// of a 128-bit hash).
std::array<uint8_t, 16> FingerprintBytes(const Fingerprint& fingerprint);
Fingerprint FingerprintFromBytes(std::span<const uint8_t, 16> bytes);

inline constexpr size_t kFingerprintSeedSize = 32;

// The per-peering key. Immutable after construction: one key may be shared by any
// number of threads.
class FingerprintKey {
 public:
  explicit FingerprintKey(std::span<const uint8_t, kFingerprintSeedSize> seed);

 private:
  friend Fingerprint FingerprintOf(std::span<const uint8_t> chunk, const FingerprintKey& key);
  alignas(64) std::array<uint8_t, 192> secret_;
};

Fingerprint FingerprintOf(std::span<const uint8_t> chunk, const FingerprintKey& key);

}  // namespace wanopt::dre

// Fingerprints are uniformly distributed (keyed), so any 64 bits of one are a good hash.
template <>
struct std::hash<wanopt::dre::Fingerprint> {
  size_t operator()(const wanopt::dre::Fingerprint& f) const noexcept { return f.lo; }
};
