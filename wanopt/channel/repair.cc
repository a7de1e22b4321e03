#include "wanopt/channel/repair.h"

#include <algorithm>

namespace wanopt::channel {

std::vector<uint8_t> EncodeNack(std::span<const WireFingerprint> missing) {
  std::vector<uint8_t> out;
  out.reserve(missing.size() * kFingerprintSize);
  for (const auto& fingerprint : missing) out.insert(out.end(), fingerprint.begin(), fingerprint.end());
  return out;
}

std::optional<std::vector<WireFingerprint>> DecodeNack(std::span<const uint8_t> payload) {
  if (payload.empty() || payload.size() % kFingerprintSize != 0) return std::nullopt;
  std::vector<WireFingerprint> fingerprints(payload.size() / kFingerprintSize);
  for (size_t i = 0; i < fingerprints.size(); ++i) {
    std::copy_n(payload.begin() + static_cast<std::ptrdiff_t>(i * kFingerprintSize), kFingerprintSize,
                fingerprints[i].begin());
  }
  return fingerprints;
}

std::vector<uint8_t> EncodeRepair(const WireFingerprint& fingerprint, std::span<const uint8_t> chunk) {
  std::vector<uint8_t> out(fingerprint.begin(), fingerprint.end());
  out.insert(out.end(), chunk.begin(), chunk.end());
  return out;
}

std::optional<Repair> DecodeRepair(std::span<const uint8_t> payload) {
  if (payload.size() < kFingerprintSize) return std::nullopt;
  Repair repair;
  std::copy_n(payload.begin(), kFingerprintSize, repair.fingerprint.begin());
  repair.chunk = payload.subspan(kFingerprintSize);
  return repair;
}

}  // namespace wanopt::channel
