#include <doctest/doctest.h>

#include "wanopt/channel/repair.h"

using namespace wanopt::channel;

namespace {
WireFingerprint Fp(uint8_t fill) {
  WireFingerprint fp;
  fp.fill(fill);
  fp[0] = 0xf0;
  return fp;
}
}  // namespace

TEST_CASE("nack payload: fingerprints round-trip in order, and empty or ragged payloads are refused") {
  std::vector<WireFingerprint> missing{Fp(1), Fp(2), Fp(3)};
  auto payload = EncodeNack(missing);
  CHECK(payload.size() == 3 * kFingerprintSize);
  auto decoded = DecodeNack(payload);
  REQUIRE(decoded);
  CHECK(*decoded == missing);
  CHECK_FALSE(DecodeNack({}));
  for (size_t n = 1; n < payload.size(); ++n) {
    if (n % kFingerprintSize == 0) continue;
    CHECK_FALSE(DecodeNack(std::span<const uint8_t>(payload.data(), n)));
  }
}

TEST_CASE("repair payload: fingerprint then chunk, and shorter than a fingerprint is refused") {
  std::vector<uint8_t> chunk{'c', 'h', 'u', 'n', 'k'};
  auto payload = EncodeRepair(Fp(9), chunk);
  CHECK(payload.size() == kFingerprintSize + chunk.size());
  auto decoded = DecodeRepair(payload);
  REQUIRE(decoded);
  CHECK(decoded->fingerprint == Fp(9));
  CHECK(std::vector<uint8_t>(decoded->chunk.begin(), decoded->chunk.end()) == chunk);
  auto empty = DecodeRepair(EncodeRepair(Fp(9), {}));
  REQUIRE(empty);
  CHECK(empty->chunk.empty());
  for (size_t n = 0; n < kFingerprintSize; ++n) CHECK_FALSE(DecodeRepair(std::span<const uint8_t>(payload.data(), n)));
}
