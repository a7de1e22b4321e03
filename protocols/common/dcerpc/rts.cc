#include "protocols/common/dcerpc/rts.h"

#include <algorithm>

#include "protocols/common/dcerpc/reader.h"

namespace wanopt::protocols::dcerpc {

using internal::Put16;
using internal::Put32;
using internal::Reader;

std::string_view RtsCommandName(RtsCommandType type) {
  switch (type) {
    case RtsCommandType::kReceiveWindowSize: return "ReceiveWindowSize";
    case RtsCommandType::kFlowControlAck: return "FlowControlAck";
    case RtsCommandType::kConnectionTimeout: return "ConnectionTimeout";
    case RtsCommandType::kCookie: return "Cookie";
    case RtsCommandType::kChannelLifetime: return "ChannelLifetime";
    case RtsCommandType::kClientKeepalive: return "ClientKeepalive";
    case RtsCommandType::kVersion: return "Version";
    case RtsCommandType::kEmpty: return "Empty";
    case RtsCommandType::kPadding: return "Padding";
    case RtsCommandType::kNegativeAnce: return "NegativeANCE";
    case RtsCommandType::kAnce: return "ANCE";
    case RtsCommandType::kClientAddress: return "ClientAddress";
    case RtsCommandType::kAssociationGroupId: return "AssociationGroupId";
    case RtsCommandType::kDestination: return "Destination";
    case RtsCommandType::kPingTrafficSentNotify: return "PingTrafficSentNotify";
  }
  return "unknown";
}

Result<RtsPdu> ParseRts(const Pdu& pdu) {
  if (pdu.header.ptype != PType::kRts) return Malformed("not an RTS PDU");
  // MS-RPCH 2.2.3.6.1: always little-endian, never authenticated.
  if (!pdu.little_endian()) return Malformed("RTS PDU not in little-endian byte order");
  if (pdu.header.auth_length != 0) return Malformed("RTS PDU with an auth trailer");
  Reader r(pdu.bytes, kHeaderSize, true);
  RtsPdu out;
  out.length = pdu.bytes.size();
  out.flags = r.U16();
  uint16_t count = r.U16();
  if (!r.ok()) return Malformed("RTS PDU shorter than its Flags and NumberOfCommands");
  if (count > kMaxRtsCommands) return Malformed("RTS NumberOfCommands above the limit");
  // Every command takes at least its 4-byte type: checked before reserving.
  if (size_t{count} * 4 > r.remaining()) return Malformed("RTS NumberOfCommands beyond the PDU");
  out.commands.reserve(count);
  for (uint16_t i = 0; i < count; ++i) {
    RtsCommand c;
    c.offset = r.pos();
    uint32_t type = r.U32();
    if (!r.ok()) return Malformed("RTS command beyond the PDU");
    if (type > static_cast<uint32_t>(RtsCommandType::kPingTrafficSentNotify))
      return Malformed("unknown RTS command type");
    c.type = static_cast<RtsCommandType>(type);
    switch (c.type) {
      case RtsCommandType::kReceiveWindowSize:
      case RtsCommandType::kConnectionTimeout:
      case RtsCommandType::kChannelLifetime:
      case RtsCommandType::kClientKeepalive:
      case RtsCommandType::kVersion:
      case RtsCommandType::kDestination:
      case RtsCommandType::kPingTrafficSentNotify:
        c.value = r.U32();
        break;
      case RtsCommandType::kFlowControlAck:
        c.value = r.U32();
        c.available_window = r.U32();
        c.cookie = r.ReadUuid();
        break;
      case RtsCommandType::kCookie:
      case RtsCommandType::kAssociationGroupId:
        c.cookie = r.ReadUuid();
        break;
      case RtsCommandType::kEmpty:
      case RtsCommandType::kNegativeAnce:
      case RtsCommandType::kAnce:
        break;
      case RtsCommandType::kPadding:
        c.value = r.U32();
        r.Skip(c.value);  // fails, without moving, if the count reaches past the PDU
        break;
      case RtsCommandType::kClientAddress: {
        c.value = r.U32();
        if (!r.ok()) break;
        if (c.value > 1) return Malformed("RTS ClientAddress of an unknown address type");
        auto address = r.Bytes(c.value == 0 ? 4 : 16);
        std::copy(address.begin(), address.end(), c.address.begin());
        r.Skip(12);  // padding
        break;
      }
    }
    if (!r.ok()) return Malformed("RTS command beyond the PDU");
    out.commands.push_back(c);
  }
  if (r.remaining() != 0) return Malformed("bytes after the last RTS command");
  return out;
}

Result<RtsPdu> ParseRts(std::span<const uint8_t> bytes) {
  auto pdu = ParsePdu(bytes, {.allow_rts = true});
  if (!pdu) return pdu.error();
  return ParseRts(*pdu);
}

namespace {

using T = RtsCommandType;

struct Shape {
  RtsKind kind;
  std::string_view name;
  uint16_t flags;
  std::array<RtsCommandType, 7> types;
  uint8_t count;
};

constexpr auto kV = T::kVersion;
constexpr auto kC = T::kCookie;
constexpr auto kW = T::kReceiveWindowSize;
constexpr auto kT = T::kConnectionTimeout;
constexpr auto kL = T::kChannelLifetime;
constexpr auto kD = T::kDestination;
constexpr auto kA = T::kAnce;

// MS-RPCH 2.2.4.2 - 2.2.4.50: flags and command types, in order.
constexpr Shape kShapes[] = {
    {RtsKind::kConnA1, "CONN/A1", rts_flags::kNone, {kV, kC, kC, kW}, 4},
    {RtsKind::kConnA2, "CONN/A2", rts_flags::kOutChannel, {kV, kC, kC, kL, kW}, 5},
    {RtsKind::kConnA3, "CONN/A3", rts_flags::kNone, {kT}, 1},
    {RtsKind::kConnB1, "CONN/B1", rts_flags::kNone, {kV, kC, kC, kL, T::kClientKeepalive, T::kAssociationGroupId}, 6},
    {RtsKind::kConnB2, "CONN/B2", rts_flags::kInChannel,
     {kV, kC, kC, kW, kT, T::kAssociationGroupId, T::kClientAddress}, 7},
    {RtsKind::kConnB3, "CONN/B3", rts_flags::kNone, {kW, kV}, 2},
    {RtsKind::kConnC1C2, "CONN/C1|CONN/C2", rts_flags::kNone, {kV, kW, kT}, 3},
    {RtsKind::kInR1A1InR2A1, "IN_R1/A1|IN_R2/A1", rts_flags::kRecycleChannel, {kV, kC, kC, kC}, 4},
    {RtsKind::kInR1A2, "IN_R1/A2", rts_flags::kInChannel | rts_flags::kRecycleChannel, {kV, kC, kC, kC, kW, kT}, 6},
    {RtsKind::kInR1A3A4, "IN_R1/A3|IN_R1/A4", rts_flags::kNone, {kD, kV, kW, kT}, 4},
    {RtsKind::kSuccessorCookie, "IN_R1/A5|IN_R1/A6|IN_R2/A2|IN_R2/A5|OUT_R2/A4", rts_flags::kNone, {kC}, 1},
    {RtsKind::kInR1B1, "IN_R1/B1", rts_flags::kNone, {T::kEmpty}, 1},
    {RtsKind::kInR1B2, "IN_R1/B2", rts_flags::kNone, {kW}, 1},
    {RtsKind::kInR2A3A4, "IN_R2/A3|IN_R2/A4", rts_flags::kNone, {kD}, 1},
    {RtsKind::kOutRA1A2, "OUT_R1/A1|OUT_R1/A2|OUT_R2/A1|OUT_R2/A2", rts_flags::kRecycleChannel, {kD}, 1},
    {RtsKind::kOutRA3, "OUT_R1/A3|OUT_R2/A3", rts_flags::kRecycleChannel, {kV, kC, kC, kC, kW}, 5},
    {RtsKind::kOutR1A4, "OUT_R1/A4", rts_flags::kRecycleChannel | rts_flags::kOutChannel, {kV, kC, kC, kC, kL, kW, kT}, 7},
    {RtsKind::kOutR1A5A6, "OUT_R1/A5|OUT_R1/A6", rts_flags::kOutChannel, {kD, kV, kT}, 3},
    {RtsKind::kOutRA7A8, "OUT_R1/A7|OUT_R1/A8|OUT_R2/A8", rts_flags::kOutChannel, {kD, kC}, 2},
    {RtsKind::kAnce, "OUT_R1/A9|OUT_R1/A10|OUT_R1/A11|OUT_R2/B1", rts_flags::kNone, {kA}, 1},
    {RtsKind::kOutR2A5A6, "OUT_R2/A5|OUT_R2/A6", rts_flags::kNone, {kD, kA}, 2},
    {RtsKind::kOutR2A7, "OUT_R2/A7", rts_flags::kOutChannel, {kD, kC, kV}, 3},
    {RtsKind::kOutR2B2, "OUT_R2/B2", rts_flags::kNone, {T::kNegativeAnce}, 1},
    {RtsKind::kOutR2B3, "OUT_R2/B3", rts_flags::kEof, {kA}, 1},
    {RtsKind::kOutR2C1, "OUT_R2/C1", rts_flags::kPing, {T::kEmpty}, 1},
    {RtsKind::kOutR2C1, "OUT_R2/C1", rts_flags::kPing, {T::kPadding}, 1},
    {RtsKind::kKeepAlive, "Keep-Alive", rts_flags::kOtherCmd, {T::kClientKeepalive}, 1},
    {RtsKind::kPingTrafficSentNotify, "PingTrafficSentNotify", rts_flags::kOtherCmd, {T::kPingTrafficSentNotify}, 1},
    {RtsKind::kEcho, "Echo", rts_flags::kEcho, {}, 0},
    {RtsKind::kPing, "Ping", rts_flags::kPing, {}, 0},
    {RtsKind::kFlowControlAck, "FlowControlAck", rts_flags::kOtherCmd, {T::kFlowControlAck}, 1},
    {RtsKind::kFlowControlAckWithDestination, "FlowControlAckWithDestination", rts_flags::kOtherCmd,
     {kD, T::kFlowControlAck}, 2},
};

}  // namespace

RtsKind Classify(const RtsPdu& pdu) {
  for (const Shape& s : kShapes) {
    if (s.flags != pdu.flags || s.count != pdu.commands.size()) continue;
    bool match = true;
    for (size_t i = 0; i < s.count && match; ++i) match = pdu.commands[i].type == s.types[i];
    if (match) return s.kind;
  }
  return RtsKind::kOther;
}

std::string_view RtsKindName(RtsKind kind) {
  for (const Shape& s : kShapes)
    if (s.kind == kind) return s.name;
  return "other";
}

RtsCookies Cookies(const RtsPdu& pdu, RtsKind kind) {
  RtsCookies c;
  if (Classify(pdu) != kind) return c;  // the wrong kind: its command positions do not hold
  const auto& cmd = pdu.commands;
  switch (kind) {
    case RtsKind::kConnA1:
    case RtsKind::kConnA2:
      c.virtual_connection = cmd[1].cookie;
      c.out_channel = cmd[2].cookie;
      break;
    case RtsKind::kConnB1:
    case RtsKind::kConnB2:
      c.virtual_connection = cmd[1].cookie;
      c.in_channel = cmd[2].cookie;
      c.association_group = cmd[5].cookie;
      break;
    case RtsKind::kInR1A1InR2A1:
    case RtsKind::kInR1A2:
    case RtsKind::kOutRA3:
    case RtsKind::kOutR1A4:
      c.virtual_connection = cmd[1].cookie;
      c.predecessor_channel = cmd[2].cookie;
      c.successor_channel = cmd[3].cookie;
      break;
    case RtsKind::kSuccessorCookie:
      c.successor_channel = cmd[0].cookie;
      break;
    case RtsKind::kOutRA7A8:
    case RtsKind::kOutR2A7:
      c.successor_channel = cmd[1].cookie;
      break;
    case RtsKind::kFlowControlAck:
      c.ack_channel = cmd[0].cookie;
      break;
    case RtsKind::kFlowControlAckWithDestination:
      c.ack_channel = cmd[1].cookie;
      break;
    default:
      break;
  }
  return c;
}

// ---------------------------------------------------------------------------------

std::vector<uint8_t> BuildRts(uint16_t flags, std::span<const RtsCommand> commands) {
  std::vector<uint8_t> b(kRtsHeaderSize);
  b[0] = 5;
  b[1] = 0;
  b[2] = static_cast<uint8_t>(PType::kRts);
  b[3] = pfc::kFirstFrag | pfc::kLastFrag;
  b[4] = 0x10;  // little-endian, ASCII, IEEE
  auto u32 = [&b](uint32_t v) {
    uint8_t raw[4];
    Put32(raw, v, true);
    b.insert(b.end(), raw, raw + 4);
  };
  auto uuid = [&b](const Uuid& u) {
    uint8_t raw[16];
    u.Write(raw, true);
    b.insert(b.end(), raw, raw + 16);
  };
  Put16(b.data() + 16, flags, true);
  Put16(b.data() + 18, static_cast<uint16_t>(commands.size()), true);
  for (const RtsCommand& c : commands) {
    u32(static_cast<uint32_t>(c.type));
    switch (c.type) {
      case RtsCommandType::kFlowControlAck:
        u32(c.value);
        u32(c.available_window);
        uuid(c.cookie);
        break;
      case RtsCommandType::kCookie:
      case RtsCommandType::kAssociationGroupId:
        uuid(c.cookie);
        break;
      case RtsCommandType::kEmpty:
      case RtsCommandType::kNegativeAnce:
      case RtsCommandType::kAnce:
        break;
      case RtsCommandType::kPadding:
        u32(c.value);
        b.insert(b.end(), c.value, 0);
        break;
      case RtsCommandType::kClientAddress:
        u32(c.value);
        b.insert(b.end(), c.address.begin(), c.address.begin() + (c.value == 0 ? 4 : 16));
        b.insert(b.end(), 12, 0);
        break;
      default:
        u32(c.value);
        break;
    }
  }
  Put16(b.data() + 8, static_cast<uint16_t>(b.size()), true);
  return b;
}

namespace rts_cmd {
RtsCommand Value(RtsCommandType type, uint32_t value) { return {.type = type, .value = value}; }
RtsCommand Cookie(const Uuid& cookie) { return {.type = RtsCommandType::kCookie, .cookie = cookie}; }
RtsCommand AssociationGroupId(const Uuid& cookie) {
  return {.type = RtsCommandType::kAssociationGroupId, .cookie = cookie};
}
RtsCommand FlowControlAck(uint32_t bytes_received, uint32_t available_window, const Uuid& channel) {
  return {.type = RtsCommandType::kFlowControlAck, .value = bytes_received, .available_window = available_window,
          .cookie = channel};
}
RtsCommand Padding(uint32_t count) { return {.type = RtsCommandType::kPadding, .value = count}; }
RtsCommand Empty() { return {.type = RtsCommandType::kEmpty}; }
RtsCommand Ance() { return {.type = RtsCommandType::kAnce}; }
RtsCommand ClientAddressV4(std::array<uint8_t, 4> address) {
  RtsCommand c{.type = RtsCommandType::kClientAddress, .value = 0};
  std::copy(address.begin(), address.end(), c.address.begin());
  return c;
}
}  // namespace rts_cmd

std::vector<uint8_t> BuildConnA1(const Uuid& virtual_connection, const Uuid& out_channel, uint32_t receive_window) {
  const RtsCommand c[] = {rts_cmd::Value(T::kVersion, kRtsVersion), rts_cmd::Cookie(virtual_connection),
                          rts_cmd::Cookie(out_channel), rts_cmd::Value(T::kReceiveWindowSize, receive_window)};
  return BuildRts(rts_flags::kNone, c);
}

std::vector<uint8_t> BuildConnA3(uint32_t connection_timeout_ms) {
  const RtsCommand c[] = {rts_cmd::Value(T::kConnectionTimeout, connection_timeout_ms)};
  return BuildRts(rts_flags::kNone, c);
}

std::vector<uint8_t> BuildConnB1(const Uuid& virtual_connection, const Uuid& in_channel,
                                 const Uuid& association_group, uint32_t channel_lifetime,
                                 uint32_t client_keepalive) {
  const RtsCommand c[] = {rts_cmd::Value(T::kVersion, kRtsVersion),
                          rts_cmd::Cookie(virtual_connection),
                          rts_cmd::Cookie(in_channel),
                          rts_cmd::Value(T::kChannelLifetime, channel_lifetime),
                          rts_cmd::Value(T::kClientKeepalive, client_keepalive),
                          rts_cmd::AssociationGroupId(association_group)};
  return BuildRts(rts_flags::kNone, c);
}

std::vector<uint8_t> BuildConnC2(uint32_t receive_window, uint32_t connection_timeout_ms) {
  const RtsCommand c[] = {rts_cmd::Value(T::kVersion, kRtsVersion),
                          rts_cmd::Value(T::kReceiveWindowSize, receive_window),
                          rts_cmd::Value(T::kConnectionTimeout, connection_timeout_ms)};
  return BuildRts(rts_flags::kNone, c);
}

std::vector<uint8_t> BuildFlowControlAck(uint32_t bytes_received, uint32_t available_window, const Uuid& channel) {
  const RtsCommand c[] = {rts_cmd::FlowControlAck(bytes_received, available_window, channel)};
  return BuildRts(rts_flags::kOtherCmd, c);
}

std::vector<uint8_t> BuildPing() { return BuildRts(rts_flags::kPing, {}); }

}  // namespace wanopt::protocols::dcerpc
