// WCCPv2 messages (draft-wilson-wrec-wccp-v2, draft-mclaggan-wccp-v2rev1): the wire
// format only, as plain structs with Encode/Decode. Owns no sockets and no protocol
// state; the WCCP client (the router and cache views, the timers, the designated
// cache's assignment) is built on top of this and lives beside it in wanopt/wccp/.
//
// Decode reads only the bytes it is given and trusts no length or count: a message is
// accepted only if every component lies inside the message, every element inside its
// component, and every count fits the bytes that remain (and the bounds below). A
// component this code does not know is kept as it came (type, body), so a message
// decoded and encoded again keeps it. Component order on the wire is not checked;
// Encode writes the known components in the draft's order, then the unknown ones.
//
// Addresses are IPv4 in host order (0xC0A80001 is 192.168.0.1). IPv6 (the rev1
// Address Table component) is not supported: it decodes as an unknown component.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace wanopt::wccp {

// Why decoding failed. Reasons are static strings (safe to keep, log or show).
struct Error {
  std::string_view reason;
};

// A value or an Error; a small std::expected for C++20.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Error error) : error_(error) {}         // NOLINT
  bool ok() const { return value_.has_value(); }
  explicit operator bool() const { return ok(); }
  // REQUIRES: ok().
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  // REQUIRES: !ok().
  const Error& error() const { return error_; }

 private:
  std::optional<T> value_;
  Error error_;
};

inline constexpr uint16_t kUdpPort = 2048;
inline constexpr uint16_t kVersion = 0x0200;
inline constexpr size_t kHeaderSize = 8;  // type u32, version u16, length u16
// Bounds beyond "fits the bytes": the draft allows 32 routers and 32 caches in a
// service group; the others are generous limits on what a real router sends.
inline constexpr size_t kMaxRouters = 32;
inline constexpr size_t kMaxCaches = 32;
inline constexpr size_t kMaxMaskSets = 16;
inline constexpr size_t kMaxValues = 256;
inline constexpr size_t kMaxReceivedFrom = 32;

enum class MessageType : uint32_t {
  kHereIAm = 10,
  kISeeYou = 11,
  kRedirectAssign = 12,
  kRemovalQuery = 13,
};

// Component types (the "item types" Wireshark shows).
namespace component {
inline constexpr uint16_t kSecurityInfo = 0;
inline constexpr uint16_t kServiceInfo = 1;
inline constexpr uint16_t kRouterIdentity = 2;
inline constexpr uint16_t kWebCacheIdentity = 3;
inline constexpr uint16_t kRouterView = 4;
inline constexpr uint16_t kWebCacheView = 5;
inline constexpr uint16_t kAssignment = 6;
inline constexpr uint16_t kQuery = 7;
inline constexpr uint16_t kCapabilities = 8;
inline constexpr uint16_t kAlternateAssignment = 13;
inline constexpr uint16_t kCommandExtension = 15;  // 15 in Wireshark and Squid (not 10)
}  // namespace component

// ---- Security Info (0)
inline constexpr uint32_t kSecurityNone = 0;
inline constexpr uint32_t kSecurityMd5 = 1;
struct SecurityInfo {
  uint32_t option = kSecurityNone;
  std::array<uint8_t, 16> digest{};  // on the wire only when option == kSecurityMd5
  friend bool operator==(const SecurityInfo&, const SecurityInfo&) = default;
};

// ---- Service Info (1)
namespace service_flag {
inline constexpr uint32_t kSrcIpHash = 0x0001;
inline constexpr uint32_t kDstIpHash = 0x0002;
inline constexpr uint32_t kSrcPortHash = 0x0004;
inline constexpr uint32_t kDstPortHash = 0x0008;
inline constexpr uint32_t kPortsDefined = 0x0010;
inline constexpr uint32_t kPortsSource = 0x0020;
inline constexpr uint32_t kSrcIpAltHash = 0x0100;
inline constexpr uint32_t kDstIpAltHash = 0x0200;
inline constexpr uint32_t kSrcPortAltHash = 0x0400;
inline constexpr uint32_t kDstPortAltHash = 0x0800;
}  // namespace service_flag
struct ServiceInfo {
  enum Type : uint8_t { kStandard = 0, kDynamic = 1 };
  uint8_t type = kDynamic;
  uint8_t id = 0;
  uint8_t priority = 0;
  uint8_t protocol = 0;  // IP protocol (6 = TCP); 0 for standard services
  uint32_t flags = 0;    // service_flag::*
  std::array<uint16_t, 8> ports{};
  friend bool operator==(const ServiceInfo&, const ServiceInfo&) = default;
};

// ---- Elements shared by several components
struct RouterIdElement {
  uint32_t ip = 0;
  uint32_t receive_id = 0;
  friend bool operator==(const RouterIdElement&, const RouterIdElement&) = default;
};
struct AssignmentKey {
  uint32_t ip = 0;
  uint32_t change_number = 0;
  friend bool operator==(const AssignmentKey&, const AssignmentKey&) = default;
};
struct RouterAssignment {  // Router Assignment Element
  uint32_t ip = 0;
  uint32_t receive_id = 0;
  uint32_t change_number = 0;
  friend bool operator==(const RouterAssignment&, const RouterAssignment&) = default;
};
struct MaskElement {
  uint32_t src_ip_mask = 0;
  uint32_t dst_ip_mask = 0;
  uint16_t src_port_mask = 0;
  uint16_t dst_port_mask = 0;
  friend bool operator==(const MaskElement&, const MaskElement&) = default;
};
struct ValueElement {
  uint32_t src_ip = 0;
  uint32_t dst_ip = 0;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  uint32_t cache_ip = 0;
  friend bool operator==(const ValueElement&, const ValueElement&) = default;
};
struct MaskValueSet {
  MaskElement mask;
  std::vector<ValueElement> values;  // at most kMaxValues
  friend bool operator==(const MaskValueSet&, const MaskValueSet&) = default;
};

// A Web-Cache Identity Element: in the Web-Cache Identity Info component (3) and,
// one per cache, in the Router View (4). Flags bits 1-2 say which data follows.
struct WebCacheIdentity {
  enum DataType : uint8_t { kHash = 0, kMask = 1, kNone = 2 };  // 3 (extended): refused
  uint32_t ip = 0;
  uint16_t hash_revision = 0;
  bool historical = false;  // the U flag: this hash data is historical
  DataType data_type = kHash;
  std::array<uint8_t, 32> bucket_bits{};  // kHash: bucket n is bit (n % 8) from the top of byte n / 8
  std::vector<MaskValueSet> mask_sets;    // kMask
  uint16_t weight = 0;                    // kHash and kMask
  uint16_t status = 0;
  friend bool operator==(const WebCacheIdentity&, const WebCacheIdentity&) = default;
};

// ---- Router Identity Info (2)
struct RouterIdentity {
  RouterIdElement router;
  uint32_t sent_to = 0;
  std::vector<uint32_t> received_from;  // at most kMaxReceivedFrom
  friend bool operator==(const RouterIdentity&, const RouterIdentity&) = default;
};

// ---- Router View Info (4)
struct RouterView {
  uint32_t member_change_number = 0;
  AssignmentKey key;
  std::vector<uint32_t> routers;
  std::vector<WebCacheIdentity> caches;
  friend bool operator==(const RouterView&, const RouterView&) = default;
};

// ---- Web-Cache View Info (5)
struct WebCacheView {
  uint32_t change_number = 0;
  std::vector<RouterIdElement> routers;
  std::vector<uint32_t> caches;
  friend bool operator==(const WebCacheView&, const WebCacheView&) = default;
};

// ---- Assignment Info (6): hash assignment. Bucket byte: 0xFF unassigned, else the
// index of the cache in `caches` (low 7 bits) and 0x80 when the alternate hash is used.
inline constexpr uint8_t kBucketUnassigned = 0xFF;
struct HashAssignment {
  AssignmentKey key;
  std::vector<RouterAssignment> routers;
  std::vector<uint32_t> caches;
  std::array<uint8_t, 256> buckets{};
  friend bool operator==(const HashAssignment&, const HashAssignment&) = default;
};

// ---- Alternate Assignment (13): a typed assignment, hash or mask.
struct MaskAssignment {
  AssignmentKey key;
  std::vector<RouterAssignment> routers;
  std::vector<MaskValueSet> sets;
  friend bool operator==(const MaskAssignment&, const MaskAssignment&) = default;
};
struct AlternateAssignment {
  enum Type : uint16_t { kHash = 0, kMask = 1 };
  uint16_t type = kMask;
  HashAssignment hash;      // type kHash
  MaskAssignment mask;      // type kMask
  std::vector<uint8_t> other;  // any other type: its body as it came
  friend bool operator==(const AlternateAssignment&, const AlternateAssignment&) = default;
};

// ---- Router Query Info (7)
struct QueryInfo {
  RouterIdElement router;
  uint32_t sent_to = 0;
  uint32_t target = 0;  // the web cache queried
  friend bool operator==(const QueryInfo&, const QueryInfo&) = default;
};

// ---- Capabilities Info (8): elements (type u16, length u16, value).
namespace capability {
inline constexpr uint16_t kForwardingMethod = 1;
inline constexpr uint16_t kAssignmentMethod = 2;
inline constexpr uint16_t kReturnMethod = 3;
inline constexpr uint32_t kGre = 0x1;   // forwarding and return
inline constexpr uint32_t kL2 = 0x2;
inline constexpr uint32_t kHash = 0x1;  // assignment
inline constexpr uint32_t kMask = 0x2;
}  // namespace capability
struct CapabilityElement {
  uint16_t type = 0;
  std::vector<uint8_t> value;  // 4 bytes (a u32 bitmask) for the three methods
  friend bool operator==(const CapabilityElement&, const CapabilityElement&) = default;
};
struct Capabilities {
  std::vector<CapabilityElement> elements;
  // The u32 of element `type`, if present with a 4-byte value.
  std::optional<uint32_t> Get(uint16_t type) const;
  void Set(uint16_t type, uint32_t value);
  friend bool operator==(const Capabilities&, const Capabilities&) = default;
};

// ---- Command Extension (15): commands (type u16, length u16, data).
namespace command {
inline constexpr uint16_t kShutdown = 1;          // data: the cache's address
inline constexpr uint16_t kShutdownResponse = 2;  // data: the cache's address
}  // namespace command
struct Command {
  uint16_t type = 0;
  std::vector<uint8_t> data;
  friend bool operator==(const Command&, const Command&) = default;
};

struct OpaqueComponent {
  uint16_t type = 0;
  std::vector<uint8_t> body;
  friend bool operator==(const OpaqueComponent&, const OpaqueComponent&) = default;
};

struct Message {
  MessageType type = MessageType::kHereIAm;
  std::optional<SecurityInfo> security;
  std::optional<ServiceInfo> service;
  std::optional<RouterIdentity> router_identity;
  std::optional<WebCacheIdentity> web_cache_identity;
  std::optional<RouterView> router_view;
  std::optional<WebCacheView> web_cache_view;
  std::optional<HashAssignment> assignment;
  std::optional<QueryInfo> query;
  std::optional<AlternateAssignment> alternate_assignment;
  std::optional<Capabilities> capabilities;
  std::optional<std::vector<Command>> commands;
  std::vector<OpaqueComponent> unknown;
  friend bool operator==(const Message&, const Message&) = default;
};

// The message on the wire. An MD5 security component is written with a zero digest:
// Sign fills it. Fails (empty) only if the message would exceed 65535 bytes. Encode
// does not enforce the kMax* bounds: a message beyond them encodes, but Decode (ours
// and, for 32 routers or caches, a router's) refuses it; the client keeps within them.
std::optional<std::vector<uint8_t>> Encode(const Message& message);
// REQUIRES nothing of `wire`: any bytes. The message must be version 0x0200, its length
// field must match the bytes given (trailing bytes are refused), components as above.
Result<Message> Decode(std::span<const uint8_t> wire);

// MD5 service security: the digest is MD5 over the password (zero-padded or cut to 8
// bytes) then the whole message with the digest field zeroed. Sign fails (false) if
// the message does not decode to one with an MD5 security component.
bool Sign(std::span<uint8_t> wire, std::string_view password);
// True only if the message carries an MD5 security component whose digest matches.
bool Verify(std::span<const uint8_t> wire, std::string_view password);

// Bucket helpers for WebCacheIdentity::bucket_bits.
inline bool BucketBit(const std::array<uint8_t, 32>& bits, unsigned bucket) {
  return (bits[bucket / 8 & 31] >> (7 - bucket % 8)) & 1;
}
inline void SetBucketBit(std::array<uint8_t, 32>& bits, unsigned bucket) {
  bits[bucket / 8 & 31] |= static_cast<uint8_t>(0x80 >> (bucket % 8));
}

}  // namespace wanopt::wccp
