#include "wanopt/dre/fingerprint.h"

#define XXH_INLINE_ALL  // inlined: every chunk of every DRE-encoded stream is hashed
#include <xxhash.h>

#include "util/bytes.h"

namespace wanopt::dre {

static_assert(sizeof(FingerprintKey) >= XXH3_SECRET_SIZE_MIN);

std::array<uint8_t, 16> FingerprintBytes(const Fingerprint& fingerprint) {
  std::array<uint8_t, 16> out;
  bytes::PutBe64(out.data(), fingerprint.hi);
  bytes::PutBe64(out.data() + 8, fingerprint.lo);
  return out;
}

Fingerprint FingerprintFromBytes(std::span<const uint8_t, 16> bytes) {
  return {.lo = bytes::GetBe64(bytes.data() + 8), .hi = bytes::GetBe64(bytes.data())};
}

FingerprintKey::FingerprintKey(std::span<const uint8_t, kFingerprintSeedSize> seed) {
  for (size_t block = 0; block < secret_.size() / 16; ++block) {
    XXH128_hash_t h = XXH3_128bits_withSeed(seed.data(), seed.size(), block);
    bytes::PutBe64(secret_.data() + 16 * block, h.high64);
    bytes::PutBe64(secret_.data() + 16 * block + 8, h.low64);
  }
}

Fingerprint FingerprintOf(std::span<const uint8_t> chunk, const FingerprintKey& key) {
  XXH128_hash_t h =
      XXH3_128bits_withSecret(chunk.data(), chunk.size(), key.secret_.data(), key.secret_.size());
  return {.lo = h.low64, .hi = h.high64};
}

}  // namespace wanopt::dre
