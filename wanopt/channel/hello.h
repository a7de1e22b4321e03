// The inner-channel handshake, protocol v1 (spec: wanopt/docs/inner-channel.md).
//
// The opening box (branch) sends a Hello frame first: who it is, what it offers and
// where the client wanted to go. The accepting box (datacenter) answers with a
// HelloAck once it has tried to reach that destination, so the branch learns both
// the negotiated policy and whether the server accepted the connection.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "wanopt/channel/policy.h"

namespace wanopt::channel {

inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr std::string_view kHelloMagic = "WOPT";
inline constexpr size_t kMaxModules = 16;
inline constexpr size_t kMaxModuleNameLength = 32;

// 6 bytes, shown as 02:00:5e:00:00:01. Unique per box; the status pages name peers by it.
using DeviceId = std::array<uint8_t, 6>;
std::string FormatDeviceId(const DeviceId& id);
std::optional<DeviceId> ParseDeviceId(std::string_view text);

struct Hello {
  uint8_t version = kProtocolVersion;
  DeviceId device_id{};
  Policy offered = Policy::kTcpOnly;
  boost::asio::ip::tcp::endpoint destination;  // the server the client connected to
  boost::asio::ip::tcp::endpoint source;       // the client (port 0: not told)
  std::vector<std::string> modules;            // module slot i is modules[i]
  // DRE: the peering's fingerprint seed and this box's chunk store instance. Present
  // when the offered policy includes DRE.
  std::optional<std::array<uint8_t, 32>> dre_seed;
  uint64_t store_instance = 0;
  // Where the opening box itself is (its own address towards the acceptor, port 0).
  // An intercepted inner channel may come from the client's address (the branch's
  // probe is transparent), so without this the acceptor could only name a client.
  // Optional at the end of the payload (older boxes omit it, and ignore it).
  std::optional<boost::asio::ip::address> opener;
  // The largest zstd window log the opening box's decoder takes (dre/lz_params.h);
  // 0: not told (an older box), which means 20. After the opener (written as family
  // 0 when there is none), optional.
  uint8_t lz_window_log = 0;
};

enum class HelloStatus : uint8_t {
  kOk = 0,
  kRefused = 1,             // the server refused the connection (RST)
  kUnreachable = 2,         // no route, host unreachable
  kTimeout = 3,             // the server did not answer within the connect timeout
  kVersionUnsupported = 4,  // `version` in the ack is the highest the acceptor speaks
  kRejected = 5,            // the acceptor's configuration does not serve this destination
};
std::string_view HelloStatusName(HelloStatus status);

struct HelloAck {
  uint8_t version = kProtocolVersion;
  HelloStatus status = HelloStatus::kOk;
  DeviceId device_id{};
  Policy offered = Policy::kTcpOnly;     // the acceptor's own offer
  Policy negotiated = Policy::kTcpOnly;  // Intersect of both offers
  Policy applied = Policy::kTcpOnly;     // what both sides will actually run
  uint32_t accepted_modules = 0;         // bit i set: the acceptor runs module slot i
  uint64_t store_instance = 0;           // the acceptor's chunk store instance (0: none)
  // Where the acceptor box itself is: its own address towards the branch, and its
  // [datacenter] listen port (0: none). An intercepted inner channel is connected to
  // the server's address, so without this the branch could only name the server.
  // Optional at the end of the payload (older boxes omit it).
  std::optional<boost::asio::ip::tcp::endpoint> acceptor;
  // The largest zstd window log the acceptor's decoder takes; 0: not told (an older
  // box sends 0 in this byte, reserved then), which means 20.
  uint8_t lz_window_log = 0;
};

std::vector<uint8_t> EncodeHello(const Hello& hello);
std::vector<uint8_t> EncodeHelloAck(const HelloAck& ack);

// Parse a frame payload. Return nullopt (and set *error) for any malformed input;
// never read past `payload`.
std::optional<Hello> DecodeHello(std::span<const uint8_t> payload, std::string* error);
std::optional<HelloAck> DecodeHelloAck(std::span<const uint8_t> payload, std::string* error);

}  // namespace wanopt::channel
