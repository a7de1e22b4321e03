// Optimization policies, as WAAS names them: F (DRE+LZ), D (DRE), L (LZ), T (TCP only).
//
// A policy is a set of two features, DRE and LZ. Two boxes negotiate the lowest
// common policy: the intersection of what each offers (F with L gives L, D with L gives T).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace wanopt {

enum class Policy : uint8_t {
  kTcpOnly = 0,  // T
  kLz = 1,       // L: bit 0
  kDre = 2,      // D: bit 1
  kFull = 3,     // F: DRE and LZ
};

inline constexpr Policy Intersect(Policy a, Policy b) {
  return static_cast<Policy>(static_cast<uint8_t>(a) & static_cast<uint8_t>(b));
}

inline constexpr char PolicyLetter(Policy p) {
  constexpr char kLetters[] = {'T', 'L', 'D', 'F'};
  return kLetters[static_cast<uint8_t>(p) & 3];
}

inline constexpr std::optional<Policy> PolicyFromLetter(char c) {
  switch (c) {
    case 'T': case 't': return Policy::kTcpOnly;
    case 'L': case 'l': return Policy::kLz;
    case 'D': case 'd': return Policy::kDre;
    case 'F': case 'f': return Policy::kFull;
  }
  return std::nullopt;
}

}  // namespace wanopt
