// Bytes as lower-case hex digits, two a byte: digests, chunk ids, UUIDs.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace wanopt {

inline std::string HexLower(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

}  // namespace wanopt
