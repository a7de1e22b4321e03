// The payloads of the inner channel's `nack` and `repair` frames (spec:
// wanopt/docs/inner-channel.md, "NACK and REPAIR"): a decoder that meets references
// it cannot resolve names their fingerprints in a nack; the encoder's side answers
// each with a repair, the fingerprint and the chunk's bytes.
//
// Pure functions over bytes: what the fingerprints mean, and when the frames may be
// sent, is the session's business (wanopt/session/).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace wanopt::channel {

// A chunk fingerprint as it crosses the wire (dre::FingerprintBytes).
inline constexpr size_t kFingerprintSize = 16;
using WireFingerprint = std::array<uint8_t, kFingerprintSize>;

// REQUIRES: !missing.empty().
std::vector<uint8_t> EncodeNack(std::span<const WireFingerprint> missing);
// The fingerprints, in order; nullopt for an empty payload or one whose length is
// not a multiple of kFingerprintSize.
std::optional<std::vector<WireFingerprint>> DecodeNack(std::span<const uint8_t> payload);

struct Repair {
  WireFingerprint fingerprint{};
  std::span<const uint8_t> chunk;  // a view into the decoded payload
};
std::vector<uint8_t> EncodeRepair(const WireFingerprint& fingerprint, std::span<const uint8_t> chunk);
// nullopt when the payload is shorter than a fingerprint. An empty chunk decodes
// (its fingerprint will not match: the caller's check refuses it).
std::optional<Repair> DecodeRepair(std::span<const uint8_t> payload);

}  // namespace wanopt::channel
