// The endpoint mapper's ept_map (opnum 3 of e1af8308-5d1f-11c9-91a4-08002b14a0fa
// v3.0): its request and response stubs (NDR, 32-bit transfer syntax), the protocol
// towers inside them, and the in-place rewrite of the TCP port a response reports.
//
// Stubs are the reassembled stub of one call (StubAssembler in dcerpc.h), in the
// byte order of the PDU's drep. Tower octet strings are little-endian whatever the
// drep says (their own encoding); the TCP port and the IPv4 address in them are
// big-endian (network order).
//
// Only the 32-bit NDR transfer syntax (8a885d04-..., v2) is understood. A context
// bound with NDR64 must not be handed to these functions: the glue checks the
// accepted transfer syntax in its ContextTable and leaves such a connection alone.
//
// How the glue is meant to use this (branch box, TCP 135), per direction:
//   client->server: SplitPdu on the held bytes; kNeedMore -> kStopIteration;
//     bind/alter_context -> ContextTable::OnBind; a request on the EPM context with
//     opnum kOpnumEptMap -> remember its call_id (responses carry no opnum). This
//     direction is never changed: every whole PDU is passed on as it is.
//   server->client: bind_ack -> ContextTable::OnBindAck (then the negotiated
//     max_frag); a response whose call_id is a remembered ept_map call -> hold its
//     fragments (kStopIteration) until LAST_FRAG, then RewriteMapResponsePdus on
//     exactly those bytes, remember (server, interface, old_port) from the result
//     and pass them on; any other PDU passes through untouched.
//   Any Error, anywhere: stop parsing the connection and pass every byte through
//   unchanged from then on (Error::kMalformed counts as a protocol error).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "protocols/common/dcerpc/dcerpc.h"

namespace wanopt::protocols::epm {

// The endpoint mapper and MAPI are DCE/RPC: this module speaks in the types of the
// shared DCE/RPC layer (Result, Error, Uuid, Pdu, ContextTable...).
using namespace dcerpc;

inline constexpr uint16_t kOpnumEptMap = 3;
inline constexpr uint16_t kEpmVersionMajor = 3;

// Protocol identifiers of tower floors (C706 appendix I, MS-RPCE 2.2.1.3).
namespace floor_protocol {
inline constexpr uint8_t kUuid = 0x0d;          // interface or transfer syntax: UUID + major
inline constexpr uint8_t kRpcCl = 0x0a;         // ncadg: connectionless RPC
inline constexpr uint8_t kRpcCo = 0x0b;         // ncacn: connection-oriented RPC
inline constexpr uint8_t kLrpc = 0x0c;          // ncalrpc
inline constexpr uint8_t kTcp = 0x07;           // rhs: port, 2 bytes big-endian
inline constexpr uint8_t kUdp = 0x08;           // rhs: port, 2 bytes big-endian
inline constexpr uint8_t kIp = 0x09;            // rhs: IPv4 address, 4 bytes
inline constexpr uint8_t kNamedPipe = 0x0f;     // rhs: pipe name
inline constexpr uint8_t kNetBios = 0x11;       // rhs: host name
inline constexpr uint8_t kHttp = 0x1f;          // rhs: port, 2 bytes big-endian
}  // namespace floor_protocol

// Bounds: a tower above this many floors, or a response above this many towers, is
// refused (unsupported) rather than parsed. Real towers have 5 floors; a client
// asks for at most a few towers (max_towers, often 4 or 500).
inline constexpr size_t kMaxFloors = 32;
inline constexpr size_t kMaxTowers = 1024;

struct Floor {
  uint8_t protocol = 0;  // first LHS byte
  // Offsets of the LHS and RHS data in the stub (LHS data includes the protocol byte).
  size_t lhs_offset = 0;
  uint16_t lhs_length = 0;
  size_t rhs_offset = 0;
  uint16_t rhs_length = 0;
};

// One tower (twr_t) as found in a stub, with what the module needs decoded.
struct Tower {
  size_t offset = 0;   // of the tower octet string (its floor count) in the stub
  uint32_t length = 0;  // tower_length
  std::vector<Floor> floors;
  // Floor 1 when it is a UUID floor (19-byte LHS, 2-byte RHS): the interface.
  std::optional<SyntaxId> interface;
  // Floor 2 when it is a UUID floor: the transfer syntax.
  std::optional<SyntaxId> transfer_syntax;
  // The first TCP floor (0x07, 2-byte RHS), and where its port bytes are in the stub.
  std::optional<uint16_t> tcp_port;
  size_t tcp_port_offset = 0;
  // The first IP floor (0x09, 4-byte RHS), host order (192.168.0.2 = 0xc0a80002).
  std::optional<uint32_t> ipv4;
};

// Parses one tower octet string (the tower_length bytes after the NDR conformance
// and length), at `offset` in some stub: floor count, then the floors, which must
// end exactly at the end of the octets. Offsets in the result count from the
// start of `octets` plus `offset`.
Result<Tower> ParseTower(std::span<const uint8_t> octets, size_t offset = 0);

struct MapRequest {
  std::optional<Uuid> object;      // null pointer: nullopt
  std::optional<Tower> map_tower;  // null pointer: nullopt (a bad request, but valid NDR)
  std::array<uint8_t, 20> entry_handle{};
  uint32_t max_towers = 0;
};
Result<MapRequest> ParseMapRequest(std::span<const uint8_t> stub, bool little_endian);

struct MapResponse {
  std::array<uint8_t, 20> entry_handle{};
  uint32_t num_towers = 0;
  uint32_t max_count = 0;  // of the tower array (the request's max_towers)
  // The non-null towers, in array order. A full pointer the array repeats is listed
  // once per appearance, with the same offsets (its bytes are on the wire once).
  std::vector<Tower> towers;
  uint32_t status = 0;  // 0 = found; 0x16c9a0d6 = EPT_S_NOT_REGISTERED
};
Result<MapResponse> ParseMapResponse(std::span<const uint8_t> stub, bool little_endian);

// What one tower says: the interface at an address and TCP port.
struct Endpoint {
  SyntaxId interface;
  std::optional<uint32_t> ipv4;  // host order; 0 (0.0.0.0) is common in requests
  uint16_t port = 0;
};
// The towers of `response` that name an interface and a TCP port (others, such as
// named-pipe towers, are left out), in order.
std::vector<Endpoint> ListEndpoints(const MapResponse& response);

struct PortRemap {
  Uuid interface;     // matched on the UUID alone, any version
  uint16_t new_port;  // what the client will be told
};

struct PortRewrite {
  SyntaxId interface;
  std::optional<uint32_t> ipv4;  // from the same tower: the server the port is on
  uint16_t old_port = 0;         // the server's real port: what the module remembers
  uint16_t new_port = 0;
  size_t stub_offset = 0;        // of the 2 port bytes
};

// Parses the ept_map response `stub` and rewrites, in place, the TCP port of every
// tower whose interface is in `remaps` (same length: only the two port bytes
// change). Towers for other interfaces, towers without a TCP floor, and ports that
// already equal the new port are left alone. Returns what was rewritten, in tower
// order. On error nothing is written.
Result<std::vector<PortRewrite>> RewriteMapResponsePorts(std::span<uint8_t> stub, bool little_endian,
                                                         std::span<const PortRemap> remaps);

// The same on whole PDUs as they sit in the module's held bytes: `pdus` holds
// exactly the response fragments of one ept_map call (FIRST_FRAG ... LAST_FRAG, in
// order, nothing else). Splits them, reassembles the stub, rewrites the stub copy,
// then writes each changed byte back to its place in `pdus` (a port may even
// straddle two fragments). Refuses (unsupported) fragments protected by packet,
// integrity or privacy auth. On error `pdus` is unchanged.
Result<std::vector<PortRewrite>> RewriteMapResponsePdus(std::span<uint8_t> pdus, std::span<const PortRemap> remaps,
                                                        const Limits& limits = {});

}  // namespace wanopt::protocols::epm
