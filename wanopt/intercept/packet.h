// TCP option 0x21, the auto-discovery option, and the IPv4/TCP packet surgery the
// discovery agent does on the packets netlink queue hands it.
//
// Layout (spec: wanopt/docs/inner-channel.md, "Auto-discovery: TCP option 0x21"):
//   kind 0x21, length 11 (15 with CLIENT_V4), magic 'W', version 1, flags,
//   6-byte device id, [client IPv4], then one NOP to keep 4-byte alignment.
// Another open-source optimizer uses kind 33 too: an option whose magic or version
// is not ours is "not ours", never an error.
//
// Everything here is pure: bytes in, bytes out, nothing trusted. Only IPv4.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <boost/asio/ip/address_v4.hpp>

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
  std::optional<boost::asio::ip::address_v4> client;  // SYN: the client's address
};

// The option's bytes including the trailing NOP: 12, or 16 with a client address.
std::vector<uint8_t> EncodeOption(const DiscoveryOption& option);

// Identity and flags of one IPv4 TCP segment, as far as discovery cares.
struct TcpSegment {
  boost::asio::ip::address_v4 source, destination;
  uint16_t source_port = 0, destination_port = 0;
  uint32_t sequence = 0;
  bool syn = false, ack = false, rst = false, fin = false;
  // Our option, if the segment carries a well-formed one. An option of kind 0x21
  // with another magic or version, or a malformed one, leaves this empty and sets
  // `foreign_option`.
  std::optional<DiscoveryOption> option;
  bool foreign_option = false;
};

// Parses an IPv4 packet that starts at the IP header. nullopt for anything that is
// not a complete, well-formed IPv4 TCP segment (fragments included).
std::optional<TcpSegment> ParseSegment(std::span<const uint8_t> packet);

// Returns `packet` with `option` appended after the TCP options it has, the data
// offset, IP total length and both checksums updated. nullopt if the packet is not
// a well-formed IPv4 TCP segment, already carries kind 0x21, or the option does not
// fit in the 40 bytes TCP allows.
std::optional<std::vector<uint8_t>> AddOption(std::span<const uint8_t> packet, const DiscoveryOption& option);

}  // namespace wanopt::intercept
