// TCP option 0x21, the auto-discovery option, and the IPv4/IPv6 TCP packet surgery
// the discovery agent does on the packets netlink queue hands it.
//
// Layout (spec: wanopt/docs/inner-channel.md, "Auto-discovery: TCP option 0x21"):
//   kind 0x21, length 11 (15 with CLIENT_V4, 27 with CLIENT_V6), magic 'W',
//   version 1, flags, 6-byte device id, [client address], then NOPs to keep 4-byte
//   alignment.
// Another open-source optimizer uses kind 33 too: an option whose magic or version
// is not ours is "not ours", never an error.
//
// Everything here is pure: bytes in, bytes out, nothing trusted.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "wanopt/channel/hello.h"
#include "wanopt/channel/policy.h"

namespace wanopt::intercept {

inline constexpr uint8_t kOptionKind = 0x21;
inline constexpr uint8_t kOptionMagic = 0x57;  // 'W'
inline constexpr uint8_t kOptionVersion = 1;

struct DiscoveryOption {
  Policy policy = Policy::kTcpOnly;  // what the sender offers
  bool answer = false;      // set in a SYN-ACK by the answering box
  bool plaintext = false;   // SYN: asks for an unencrypted inner channel; SYN-ACK: agreed
  bool relayed = false;     // SYN-ACK: a middle box passed on a further box's answer
  channel::DeviceId device_id{};
  std::optional<boost::asio::ip::address> client;  // SYN: the client's address (IPv4 or IPv6)
};

// The option's bytes including the trailing NOPs: 12, 16 with a client's IPv4
// address, 28 with an IPv6 one.
std::vector<uint8_t> EncodeOption(const DiscoveryOption& option);

// Identity and flags of one TCP segment (IPv4 or IPv6), as far as discovery cares.
struct TcpSegment {
  boost::asio::ip::address source, destination;
  uint16_t source_port = 0, destination_port = 0;
  uint32_t sequence = 0;
  bool syn = false, ack = false, rst = false, fin = false;
  // Our option, if the segment carries a well-formed one. An option of kind 0x21
  // with another magic or version, or a malformed one, leaves this empty and sets
  // `foreign_option`.
  std::optional<DiscoveryOption> option;
  bool foreign_option = false;
};

// Parses a packet that starts at the IP header (IPv4, or IPv6 with hop-by-hop,
// routing or destination-options headers before TCP). nullopt for anything that is
// not a complete, well-formed TCP segment (fragments included).
std::optional<TcpSegment> ParseSegment(std::span<const uint8_t> packet);

// Returns `packet` with `option` appended after the TCP options it has, the data
// offset, the IP length field and the checksums (IPv4 header, TCP) updated. A SYN
// (without ACK) too full for the option loses its timestamps option to make room:
// the box adds options only to its own connections' SYNs, and a connection without
// timestamps is sound (an IPv6 client address takes 28 of the 40 option bytes; a
// Linux SYN uses 20, 10 of them timestamps). nullopt if the packet is not a
// well-formed TCP segment, already carries kind 0x21, or the option does not fit.
std::optional<std::vector<uint8_t>> AddOption(std::span<const uint8_t> packet, const DiscoveryOption& option);

}  // namespace wanopt::intercept
