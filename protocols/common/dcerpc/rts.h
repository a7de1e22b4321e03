// RTS PDUs (PTYPE 20) of RPC over HTTP v2 (MS-RPCH 2.2.3.5, 2.2.3.6 and 2.2.4): the
// control PDUs that build, recycle and flow-control the two HTTP channels (IN and OUT)
// of one virtual connection. Pure parsing and building: no sockets, no state; the
// rpch module pairs channels with what Classify and Cookies say.
//
// An RTS PDU is the 16-byte common header (always little-endian, auth_length 0, never
// fragmented), then Flags u16 and NumberOfCommands u16, then the commands: each a u32
// CommandType and a body whose size the type fixes (Padding and ClientAddress carry
// their own sizes). Every count and size is checked against frag_length, and the
// commands must end exactly at frag_length. Cookies are 16-byte GUIDs in their
// little-endian field encoding; Uuid values here are canonical (as tshark prints them).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "protocols/common/dcerpc/dcerpc.h"

namespace wanopt::protocols::dcerpc {

namespace rts_flags {
inline constexpr uint16_t kNone = 0x0000;
inline constexpr uint16_t kPing = 0x0001;
inline constexpr uint16_t kOtherCmd = 0x0002;
inline constexpr uint16_t kRecycleChannel = 0x0004;
inline constexpr uint16_t kInChannel = 0x0008;
inline constexpr uint16_t kOutChannel = 0x0010;
inline constexpr uint16_t kEof = 0x0020;
inline constexpr uint16_t kEcho = 0x0040;
}  // namespace rts_flags

enum class RtsCommandType : uint32_t {
  kReceiveWindowSize = 0,
  kFlowControlAck = 1,
  kConnectionTimeout = 2,
  kCookie = 3,
  kChannelLifetime = 4,
  kClientKeepalive = 5,
  kVersion = 6,
  kEmpty = 7,
  kPadding = 8,
  kNegativeAnce = 9,
  kAnce = 10,
  kClientAddress = 11,
  kAssociationGroupId = 12,
  kDestination = 13,
  kPingTrafficSentNotify = 14,
};
std::string_view RtsCommandName(RtsCommandType type);

// Destination command values (MS-RPCH 2.2.3.3).
enum class RtsDestination : uint32_t { kClient = 0, kInProxy = 1, kServer = 2, kOutProxy = 3 };

// One command. Which fields mean something depends on `type`:
//   value: ReceiveWindowSize, ConnectionTimeout, ChannelLifetime, ClientKeepalive,
//          Version, Destination (RtsDestination), PingTrafficSentNotify; FlowControlAck:
//          BytesReceived; Padding: ConformanceCount; ClientAddress: AddressType (0 IPv4, 1 IPv6)
//   available_window: FlowControlAck
//   cookie: Cookie, AssociationGroupId, FlowControlAck (the ChannelCookie)
//   address: ClientAddress, in network order (the first 4 bytes for IPv4)
struct RtsCommand {
  RtsCommandType type = RtsCommandType::kEmpty;
  uint32_t value = 0;
  uint32_t available_window = 0;
  Uuid cookie;
  std::array<uint8_t, 16> address{};
  size_t offset = 0;  // of the CommandType in the PDU (set by the parser)
  friend bool operator==(const RtsCommand& a, const RtsCommand& b) {
    return a.type == b.type && a.value == b.value && a.available_window == b.available_window &&
           a.cookie == b.cookie && a.address == b.address;  // not offset: a built command has none
  }
};

inline constexpr size_t kRtsHeaderSize = kHeaderSize + 4;  // common header + Flags + NumberOfCommands
// Commands a parser accepts in one PDU. MS-RPCH's largest PDU has 7; a few more are
// tolerated, thousands (NumberOfCommands is 16 bits) are not.
inline constexpr size_t kMaxRtsCommands = 16;

struct RtsPdu {
  uint16_t flags = 0;  // rts_flags::
  std::vector<RtsCommand> commands;
  size_t length = 0;  // frag_length

  bool has(uint16_t flag) const { return (flags & flag) == flag; }
};

// `pdu` comes from ParsePdu/SplitPdu with Limits::allow_rts. Errors: not RTS, big-endian
// drep, auth_length > 0, a command type above 14, a count or size beyond the PDU,
// bytes left after the last command, more than kMaxRtsCommands commands.
Result<RtsPdu> ParseRts(const Pdu& pdu);
// The same from raw bytes (exactly one PDU).
Result<RtsPdu> ParseRts(std::span<const uint8_t> bytes);

// Which MS-RPCH 2.2.4 PDU this is, from its Flags and command sequence. Several PDUs
// share one shape (same flags, same command types): those are one kind, named after
// all of them; the channel and direction the PDU travels tell them apart.
enum class RtsKind : uint8_t {
  kOther,            // no PDU of MS-RPCH has this shape
  kConnA1,           // client -> outbound proxy, OUT channel: VC cookie, OUT channel cookie
  kConnA2,           // outbound proxy -> server: VC cookie, OUT channel cookie
  kConnA3,           // outbound proxy -> client: connection timeout
  kConnB1,           // client -> inbound proxy, IN channel: VC cookie, IN channel cookie, assoc group
  kConnB2,           // inbound proxy -> server: VC, IN channel cookie, assoc group, client address
  kConnB3,           // server -> inbound proxy
  kConnC1C2,         // CONN/C1 (server -> outbound proxy) or CONN/C2 (outbound proxy -> client)
  kInR1A1InR2A1,     // IN_R1/A1 or IN_R2/A1: VC, predecessor and successor IN channel cookies
  kInR1A2,           // IN_R1/A2: VC, predecessor, successor
  kInR1A3A4,         // IN_R1/A3 or IN_R1/A4
  kSuccessorCookie,  // one Cookie: IN_R1/A5, IN_R1/A6, IN_R2/A2, IN_R2/A5 or OUT_R2/A4
  kInR1B1,           // Empty
  kInR1B2,           // ReceiveWindowSize
  kInR2A3A4,         // Destination only, no flags: IN_R2/A3 or IN_R2/A4
  kOutRA1A2,         // OUT_R1/A1, OUT_R1/A2, OUT_R2/A1 or OUT_R2/A2: recycle, Destination
  kOutRA3,           // OUT_R1/A3 or OUT_R2/A3: VC, predecessor, successor OUT channel cookies
  kOutR1A4,          // OUT_R1/A4: VC, predecessor, successor
  kOutR1A5A6,        // OUT_R1/A5 or OUT_R1/A6
  kOutRA7A8,         // OUT_R1/A7, OUT_R1/A8 or OUT_R2/A8: Destination, successor cookie
  kAnce,             // one ANCE: OUT_R1/A9, A10, A11 or OUT_R2/B1
  kOutR2A5A6,        // Destination, ANCE
  kOutR2A7,          // Destination, successor cookie, Version
  kOutR2B2,          // NegativeANCE
  kOutR2B3,          // EOF flag, ANCE
  kOutR2C1,          // PING flag, Empty or Padding
  kKeepAlive,        // OTHER_CMD, ClientKeepalive
  kPingTrafficSentNotify,
  kEcho,
  kPing,             // PING flag, no commands
  kFlowControlAck,   // OTHER_CMD, FlowControlAck
  kFlowControlAckWithDestination,
};
RtsKind Classify(const RtsPdu& pdu);
std::string_view RtsKindName(RtsKind kind);  // "CONN/A1", "IN_R1/A1|IN_R2/A1", ...

// The cookies a PDU carries, by role, for pairing channels into virtual connections.
struct RtsCookies {
  std::optional<Uuid> virtual_connection;
  std::optional<Uuid> in_channel;           // CONN/B1, CONN/B2
  std::optional<Uuid> out_channel;          // CONN/A1, CONN/A2
  std::optional<Uuid> predecessor_channel;  // recycling: the channel being replaced
  std::optional<Uuid> successor_channel;    // recycling: the channel replacing it
  std::optional<Uuid> association_group;    // CONN/B1, CONN/B2
  std::optional<Uuid> ack_channel;          // FlowControlAck: the channel acknowledged
};
// `kind` is Classify(pdu)'s answer; any other kind gives no cookies.
RtsCookies Cookies(const RtsPdu& pdu, RtsKind kind);

// ---------------------------------------------------------------------------------
// Building (for tests and the test proxy). Always little-endian, call_id 0,
// FIRST_FRAG|LAST_FRAG. The result parses back to the same flags and commands.

std::vector<uint8_t> BuildRts(uint16_t flags, std::span<const RtsCommand> commands);

namespace rts_cmd {
RtsCommand Value(RtsCommandType type, uint32_t value);  // the u32-valued commands
RtsCommand Cookie(const Uuid& cookie);
RtsCommand AssociationGroupId(const Uuid& cookie);
RtsCommand FlowControlAck(uint32_t bytes_received, uint32_t available_window, const Uuid& channel);
RtsCommand Padding(uint32_t count);  // `count` zero bytes
RtsCommand Empty();
RtsCommand Ance();
RtsCommand ClientAddressV4(std::array<uint8_t, 4> address);
}  // namespace rts_cmd

inline constexpr uint32_t kRtsVersion = 1;  // the only RPC over HTTP v2 Version value

std::vector<uint8_t> BuildConnA1(const Uuid& virtual_connection, const Uuid& out_channel,
                                 uint32_t receive_window = 65536);
std::vector<uint8_t> BuildConnA3(uint32_t connection_timeout_ms = 900000);
std::vector<uint8_t> BuildConnB1(const Uuid& virtual_connection, const Uuid& in_channel,
                                 const Uuid& association_group, uint32_t channel_lifetime = 1073741824,
                                 uint32_t client_keepalive = 300000);
std::vector<uint8_t> BuildConnC2(uint32_t receive_window = 65536, uint32_t connection_timeout_ms = 900000);
std::vector<uint8_t> BuildFlowControlAck(uint32_t bytes_received, uint32_t available_window,
                                         const Uuid& channel);
std::vector<uint8_t> BuildPing();

}  // namespace wanopt::protocols::dcerpc
