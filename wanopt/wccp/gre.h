// GRE as WCCPv2 redirection uses it: the router wraps a redirected IPv4 packet in GRE
// (protocol type 0x883E with the 4-byte WCCPv2 redirect header, or plain 0x0800) and
// sends it to the cache; the cache returns packets it declines the same way. This is
// only the bytes after the outer IP header; no sockets.
//
// Redirect header (as Wireshark reads it): byte 0 flags (0x01 dynamic service, 0x02
// alternate bucket used, 0x04 header present but not valid), service id, alternate
// bucket, primary bucket. A 0x883E payload whose first byte looks like an IPv4 header
// (0x4_) carries no redirect header (some routers send it so).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "wanopt/wccp/message.h"

namespace wanopt::wccp {

inline constexpr uint16_t kGreProtoWccp = 0x883E;
inline constexpr uint16_t kGreProtoIpv4 = 0x0800;

struct RedirectHeader {
  bool dynamic = false;
  bool alternate_bucket_used = false;
  uint8_t service_id = 0;
  uint8_t alternate_bucket = 0;
  uint8_t primary_bucket = 0;
  friend bool operator==(const RedirectHeader&, const RedirectHeader&) = default;
};

struct GrePacket {
  uint16_t protocol = 0;
  std::optional<RedirectHeader> redirect;  // present only for 0x883E with the header
  std::span<const uint8_t> inner;          // the inner IPv4 packet, inside the input
};

// Parses the GRE payload of an IP protocol 47 packet. Accepts version 0 with optional
// checksum, key and sequence fields (skipped); refuses routing, other versions and
// protocol types, and an inner packet that is not a whole IPv4 packet (version 4,
// header length >= 20, total length within the input; bytes after it are ignored).
Result<GrePacket> ParseGre(std::span<const uint8_t> payload);

// GRE header (no optional fields) + the redirect header when `redirect` is set
// (protocol 0x883E), else protocol 0x0800; then `inner` as it is.
std::vector<uint8_t> BuildGre(const std::optional<RedirectHeader>& redirect, std::span<const uint8_t> inner);

}  // namespace wanopt::wccp
