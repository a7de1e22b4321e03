// DCE/RPC connection-oriented PDUs (C706 chapter 12, MS-RPCE 2.2): the parsing half
// of the mapi module (protocols/mapi), a static library so that other modules that
// carry the same PDUs (RPC over HTTP) can use it. Owns no sockets and no connection state except the small
// helpers at the end (StubAssembler, ContextTable).
//
// Every function here reads only the bytes it is given and trusts no length field:
// a PDU is accepted only if every count and length in it points inside it. Anything
// not understood is an Error; a module's answer to any Error is the same: stop
// touching the connection and let its bytes flow on unchanged.
//
// Integers in the header and body follow the PDU's data representation (drep byte 0:
// 0x10 little-endian, 0x00 big-endian), and so do the first three fields of every
// UUID. Uuid values here are always in canonical (RFC 4122, as printed) byte order.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wanopt::protocols::dcerpc {

// Why parsing failed. Reasons are static strings (safe to keep, log or show).
struct Error {
  enum Kind : uint8_t {
    kMalformed,    // the bytes break the protocol: count it as a protocol error
    kUnsupported,  // valid, but not something this module rewrites (NDR64, signed...)
  };
  Kind kind = kMalformed;
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

// For functions with nothing to return but success.
struct Done {};
using Status = Result<Done>;

inline Error Malformed(std::string_view reason) { return {Error::kMalformed, reason}; }
inline Error Unsupported(std::string_view reason) { return {Error::kUnsupported, reason}; }

struct Uuid {
  std::array<uint8_t, 16> bytes{};  // canonical order: "a4f1db00-..." is a4 f1 db 00 ...

  // "a4f1db00-ca47-1067-b31f-00dd010662da" (any case); nullopt if not that shape.
  static constexpr std::optional<Uuid> Parse(std::string_view text);
  // Reads the 16-byte wire encoding: time_low u32, time_mid u16, time_hi u16 in the
  // given byte order, then 8 bytes as they are.
  static Uuid Read(const uint8_t* p, bool little_endian);
  void Write(uint8_t* p, bool little_endian) const;
  std::string ToString() const;  // lower case, with dashes
  bool IsNil() const;
  friend bool operator==(const Uuid&, const Uuid&) = default;
  friend auto operator<=>(const Uuid&, const Uuid&) = default;  // a map key (rpch pairs by cookie)
};

constexpr std::optional<Uuid> Uuid::Parse(std::string_view text) {
  auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  };
  if (text.size() != 36) return std::nullopt;
  Uuid u;
  size_t out = 0;
  for (size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i++] != '-') return std::nullopt;
      continue;
    }
    int hi = hex(text[i]), lo = hex(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    u.bytes[out++] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
  }
  return u;
}

// Interfaces and transfer syntaxes the module cares about (compile-time constants).
namespace uuids {
inline constexpr Uuid kEpm = *Uuid::Parse("e1af8308-5d1f-11c9-91a4-08002b14a0fa");    // endpoint mapper v3.0
inline constexpr Uuid kEmsmdb = *Uuid::Parse("a4f1db00-ca47-1067-b31f-00dd010662da");  // Exchange store (MAPI)
inline constexpr Uuid kAsyncEmsmdb = *Uuid::Parse("5261574a-4572-206e-b268-6b199213b4e4");
inline constexpr Uuid kNspi = *Uuid::Parse("f5cc5a18-4264-101a-8c59-08002b2f8426");    // address book
inline constexpr Uuid kRfr = *Uuid::Parse("1544f5e0-613c-11d1-93df-00c04fd7bd09");     // referral
inline constexpr Uuid kNdr = *Uuid::Parse("8a885d04-1ceb-11c9-9fe8-08002b104860");     // NDR 32-bit, v2
inline constexpr Uuid kNdr64 = *Uuid::Parse("71710533-beba-4937-8319-b5dbef9ccc36");   // NDR64, v1
}  // namespace uuids
// "EMSMDB", "NSPI", "EPM", "SAMR", ... for the status page; empty for others.
std::string_view InterfaceName(const Uuid& uuid);

// ---------------------------------------------------------------------------------
// The common header

enum class PType : uint8_t {
  kRequest = 0,
  kResponse = 2,
  kFault = 3,
  kBind = 11,
  kBindAck = 12,
  kBindNak = 13,
  kAlterContext = 14,
  kAlterContextResp = 15,
  kAuth3 = 16,
  kShutdown = 17,
  kCoCancel = 18,
  kOrphaned = 19,
  kRts = 20,  // RPC over HTTP only; accepted only with Limits::allow_rts
};
std::string_view PTypeName(PType ptype);

namespace pfc {
inline constexpr uint8_t kFirstFrag = 0x01;
inline constexpr uint8_t kLastFrag = 0x02;
inline constexpr uint8_t kPendingCancel = 0x04;  // bind/alter: PFC_SUPPORT_HEADER_SIGN
inline constexpr uint8_t kConcMpx = 0x10;
inline constexpr uint8_t kDidNotExecute = 0x20;
inline constexpr uint8_t kMaybe = 0x40;
inline constexpr uint8_t kObjectUuid = 0x80;  // request: a 16-byte object UUID follows
}  // namespace pfc

enum class AuthLevel : uint8_t {
  kDefault = 0,
  kNone = 1,
  kConnect = 2,
  kCall = 3,
  kPacket = 4,
  kIntegrity = 5,  // every PDU signed: must not be changed
  kPrivacy = 6,    // every stub encrypted ("encrypted MAPI"): must not be changed
};

inline constexpr size_t kHeaderSize = 16;
inline constexpr size_t kSecTrailerSize = 8;

struct Header {
  uint8_t version = 5;
  uint8_t version_minor = 0;
  PType ptype = PType::kRequest;
  uint8_t flags = 0;  // pfc::
  std::array<uint8_t, 4> drep{0x10, 0, 0, 0};
  uint16_t frag_length = 0;
  uint16_t auth_length = 0;
  uint32_t call_id = 0;

  bool little_endian() const { return (drep[0] & 0xf0) == 0x10; }
  bool first_frag() const { return flags & pfc::kFirstFrag; }
  bool last_frag() const { return flags & pfc::kLastFrag; }
};

// The sec_trailer before the auth verifier (present iff auth_length > 0).
struct SecTrailer {
  uint8_t auth_type = 0;  // 9 SPNEGO, 10 NTLM, 16 Kerberos, 0x44 Netlogon, ...
  AuthLevel auth_level = AuthLevel::kNone;
  uint8_t auth_pad_length = 0;
  uint32_t auth_context_id = 0;
  size_t offset = 0;  // of the trailer in the PDU
};

struct Limits {
  // Largest frag_length accepted. frag_length is 16 bits, so 65535 means "any";
  // after a bind the glue may lower it to the negotiated size (ContextTable).
  uint32_t max_frag = 65535;
  bool allow_rts = false;
};

// One whole PDU whose common part checked out: header, auth trailer and lengths.
struct Pdu {
  Header header;
  std::span<const uint8_t> bytes;     // exactly frag_length bytes, aliasing the input
  std::optional<SecTrailer> auth;     // iff auth_length > 0
  size_t body_end = 0;                // end of the PDU body: before auth padding and trailer

  bool little_endian() const { return header.little_endian(); }
  // The bytes after the 16-byte header, up to body_end.
  std::span<const uint8_t> body() const { return bytes.subspan(kHeaderSize, body_end - kHeaderSize); }
  AuthLevel auth_level() const { return auth ? auth->auth_level : AuthLevel::kNone; }
  // True when changing any byte of this PDU would break it or be wrong: packet,
  // integrity or privacy protection. Connect level (or none) may be rewritten.
  bool protected_by_auth() const { return auth && auth->auth_level > AuthLevel::kConnect; }
};

// Parses one PDU; `bytes` must be exactly one PDU (frag_length bytes). Checks
// version 5.0/5.1, a known connection-oriented ptype, drep, frag_length against
// `bytes` and limits, auth_length + trailer + auth padding inside the PDU, and the
// fixed-size part of request/response/fault/bind/... bodies.
Result<Pdu> ParsePdu(std::span<const uint8_t> bytes, const Limits& limits = {});

// The streaming splitter. Looks at the front of `stream` (everything not yet
// consumed of one direction) and says whether a whole PDU is there.
struct Split {
  enum Kind : uint8_t {
    kPdu,        // `pdu` is the PDU at the front; consume pdu.bytes.size() bytes
    kNeedMore,   // the stream ends inside the first PDU (which looks fine so far)
    kMalformed,  // `error` says why; stop parsing this direction for good
  };
  Kind kind = kNeedMore;
  Pdu pdu;      // kPdu only
  Error error;  // kMalformed only
  // kNeedMore: bytes needed in total before calling again (at least 16, or the
  // PDU's frag_length once the header is in).
  size_t needed = kHeaderSize;
};
// Never reads past `stream`. Bad bytes are reported as soon as they are seen: a
// stream starting with a version other than 5 is malformed at its first byte, not
// after 16; a frag_length above the limit is malformed before its PDU arrives.
Split SplitPdu(std::span<const uint8_t> stream, const Limits& limits = {});

// ---------------------------------------------------------------------------------
// PDU bodies. Each takes a Pdu from ParsePdu/SplitPdu of the matching ptype; the
// spans they return alias the PDU's bytes. Offsets are from the start of the PDU.

struct Request {
  uint32_t alloc_hint = 0;
  uint16_t context_id = 0;
  uint16_t opnum = 0;
  std::optional<Uuid> object;  // with pfc::kObjectUuid
  size_t stub_offset = 0;
  std::span<const uint8_t> stub;  // up to the auth padding
};
Result<Request> ParseRequest(const Pdu& pdu);

struct Response {
  uint32_t alloc_hint = 0;
  uint16_t context_id = 0;
  uint8_t cancel_count = 0;
  size_t stub_offset = 0;
  std::span<const uint8_t> stub;
};
Result<Response> ParseResponse(const Pdu& pdu);

struct Fault {
  uint32_t alloc_hint = 0;
  uint16_t context_id = 0;
  uint8_t cancel_count = 0;
  uint32_t status = 0;  // nca_s_... / Win32 error
};
Result<Fault> ParseFault(const Pdu& pdu);

struct SyntaxId {
  Uuid uuid;
  // In a bind, if_version is one u32 (drep order): major in its low 16 bits, minor
  // in its high 16 bits. In a tower floor: major u16 in the LHS, minor u16 in the RHS.
  uint16_t major = 0;
  uint16_t minor = 0;
  friend bool operator==(const SyntaxId&, const SyntaxId&) = default;
};

struct PresentationContext {
  uint16_t context_id = 0;
  SyntaxId abstract_syntax;              // the interface
  std::vector<SyntaxId> transfer_syntaxes;  // NDR, NDR64, bind-time feature negotiation...
};

// bind and alter_context.
struct Bind {
  uint16_t max_xmit_frag = 0;  // largest fragment the client sends
  uint16_t max_recv_frag = 0;  // largest fragment the client accepts
  uint32_t assoc_group_id = 0;
  std::vector<PresentationContext> contexts;
};
Result<Bind> ParseBind(const Pdu& pdu);

struct ContextResult {
  enum : uint16_t { kAcceptance = 0, kUserRejection = 1, kProviderRejection = 2, kNegotiateAck = 3 };
  uint16_t result = 0;
  uint16_t reason = 0;
  SyntaxId transfer_syntax;
};

// bind_ack and alter_context_resp.
struct BindAck {
  uint16_t max_xmit_frag = 0;  // largest fragment the server sends
  uint16_t max_recv_frag = 0;  // largest fragment the server accepts
  uint32_t assoc_group_id = 0;
  std::string secondary_address;  // "4997" (the port, as text); empty in alter_context_resp
  std::vector<ContextResult> results;  // in the order of the bind's contexts
};
Result<BindAck> ParseBindAck(const Pdu& pdu);

// bind_nak: the reason only.
Result<uint16_t> ParseBindNakReason(const Pdu& pdu);

// ---------------------------------------------------------------------------------
// Connection helpers for the glue

// Reassembles the stub of one call (request or response) from its fragments
// (FIRST_FRAG ... LAST_FRAG, one call_id, one ptype, one drep) and remembers where
// each stub byte came from, so a change to the reassembled stub can be written back
// into the caller's copy of the fragments. Bounded by max_stub bytes.
class StubAssembler {
 public:
  explicit StubAssembler(size_t max_stub = 256 * 1024) : max_stub_(max_stub) {}

  // Adds the next fragment: `pdu` is a request or response that starts at byte
  // `stream_offset` of the caller's buffer. Returns true when the call is complete
  // (LAST_FRAG), false when more fragments are due. Errors: a fragment of another
  // call or type, a missing FIRST_FRAG, a fragment after LAST_FRAG, too big.
  Result<bool> Add(const Pdu& pdu, size_t stream_offset);
  void Reset();

  bool complete() const { return complete_; }
  bool little_endian() const { return little_endian_; }
  uint32_t call_id() const { return call_id_; }
  PType ptype() const { return ptype_; }
  uint16_t opnum() const { return opnum_; }          // requests
  uint16_t context_id() const { return context_id_; }
  size_t fragments() const { return fragments_; }  // added so far
  // True if any fragment is signed or sealed (see Pdu::protected_by_auth).
  bool protected_by_auth() const { return protected_; }
  std::span<const uint8_t> stub() const { return stub_; }
  std::span<uint8_t> mutable_stub() { return stub_; }
  // Where stub byte `stub_offset` sits in the caller's buffer.
  // REQUIRES: stub_offset < stub().size().
  size_t StreamOffset(size_t stub_offset) const;

 private:
  struct Piece {
    size_t stub_begin;    // in stub_
    size_t stream_begin;  // in the caller's buffer
  };
  size_t max_stub_;
  std::vector<uint8_t> stub_;
  std::vector<Piece> pieces_;  // fragments with a non-empty stub
  size_t fragments_ = 0;
  bool started_ = false;
  bool complete_ = false;
  bool little_endian_ = true;
  bool protected_ = false;
  uint32_t call_id_ = 0;
  PType ptype_ = PType::kRequest;
  uint16_t opnum_ = 0;
  uint16_t context_id_ = 0;
};

// What each presentation context id of one association (connection) means: filled
// from bind/alter_context (client) and bind_ack/alter_context_resp (server).
// Several contexts per connection are normal. Bounded: at most kMaxContexts.
class ContextTable {
 public:
  static constexpr size_t kMaxContexts = 256;

  struct Entry {
    uint16_t context_id = 0;
    SyntaxId abstract_syntax;
    bool accepted = false;
    SyntaxId transfer_syntax;  // what the server accepted (NDR, NDR64)
  };

  // A bind or alter_context went out: its contexts are pending until the answer.
  // `auth_level` is the bind's (AuthLevel::kNone without a trailer); the highest
  // seen is kept, since later PDUs are protected at the bound level.
  Status OnBind(const Bind& bind, AuthLevel auth_level);
  // The server's answer, matched to the pending contexts by position.
  Status OnBindAck(const BindAck& ack);
  // bind_nak: the pending contexts are dropped.
  void OnBindNak() { pending_.clear(); }

  const Entry* Find(uint16_t context_id) const;  // accepted contexts only
  std::span<const Entry> entries() const { return entries_; }
  AuthLevel auth_level() const { return auth_level_; }
  // Negotiated fragment sizes (0 until the bind_ack): what the client sends is at
  // most the server's max_recv_frag, what the server sends at most max_xmit_frag.
  uint16_t client_to_server_max_frag() const { return c2s_max_frag_; }
  uint16_t server_to_client_max_frag() const { return s2c_max_frag_; }

 private:
  std::vector<Entry> entries_;
  std::vector<Entry> pending_;
  AuthLevel auth_level_ = AuthLevel::kNone;
  uint16_t c2s_max_frag_ = 0;
  uint16_t s2c_max_frag_ = 0;
};

}  // namespace wanopt::protocols::dcerpc
