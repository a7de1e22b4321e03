// SMB2/SMB3 messages (MS-SMB2 2.1, 2.2): the parsing half of the smb2 module, a
// static library (wanopt_smb2, this header and messages.h) with no sockets and no connection state. The module
// glue (read-ahead) builds on it; the fuzzer (tests/fuzz/smb2_fuzz.cc) and the unit
// tests (protocols/smb2/tests) hold it to its promises.
//
// Every function here reads only the bytes it is given and trusts no length field:
// a message is accepted only if every offset and length in it points inside it.
// Anything not understood is an Error; a module's answer to any Error is the same:
// stop touching the connection and let its bytes flow on unchanged.
//
// Layers, outermost first:
//   SplitFrame   one frame of the TCP stream: 4-byte prefix (0x00 + 24-bit length)
//   Classify     what the frame carries: SMB2, SMB3 transform (encrypted), SMB3
//                compression transform, SMB1 (only ever a NEGOTIATE)
//   SplitCompound  the SMB2 messages of one frame (NextCommand chain), each a
//                Message: a parsed 64-byte Header and its bytes
//   Parse...     the body of one command, request or response (messages.h)
// All integers on the wire are little-endian, except the frame prefix. All spans
// returned alias the caller's bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wanopt::protocols::smb2 {

// Why parsing failed. Reasons are static strings (safe to keep, log or show).
struct Error {
  enum Kind : uint8_t {
    kMalformed,    // the bytes break the protocol: count it as a protocol error
    kUnsupported,  // valid, but not what this parser reads (wrong command, error body...)
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

inline Error Malformed(std::string_view reason) { return {Error::kMalformed, reason}; }
inline Error Unsupported(std::string_view reason) { return {Error::kUnsupported, reason}; }

// ---------------------------------------------------------------------------------
// Framing: direct TCP (445) and the NetBIOS session service (139)

inline constexpr size_t kFramePrefixSize = 4;
// The largest frame accepted: an 8 MiB read or write plus headers fits many times;
// MS-SMB2 caps a direct-TCP frame at 16 MiB (24-bit length), this adds room for a
// compound's headers.
inline constexpr uint32_t kMaxFrameLength = 16 * 1024 * 1024 + 1024;

// NetBIOS session service packet types (RFC 1002 4.3.1). Direct TCP uses only kMessage.
enum class FrameType : uint8_t {
  kMessage = 0x00,
  kSessionRequest = 0x81,
  kPositiveResponse = 0x82,
  kNegativeResponse = 0x83,
  kKeepalive = 0x85,
};

struct FrameLimits {
  uint32_t max_length = kMaxFrameLength;  // of the payload after the prefix
  // Port 139: session request/response and keepalive frames are valid (and
  // kMessage lengths may use the 17-bit NetBIOS form, which is the same bytes).
  bool netbios_session = false;
};

struct FrameSplit {
  enum Kind : uint8_t {
    kFrame,      // a whole frame is at the front: consume bytes.size()
    kNeedMore,   // the stream ends inside the first frame (which looks fine so far)
    kMalformed,  // `error` says why; stop parsing this direction for good
  };
  Kind kind = kNeedMore;
  FrameType type = FrameType::kMessage;
  std::span<const uint8_t> bytes;    // kFrame: prefix + payload
  std::span<const uint8_t> payload;  // kFrame: after the prefix (an SMB message for kMessage)
  Error error;                       // kMalformed
  size_t needed = kFramePrefixSize;  // kNeedMore: total bytes needed before calling again
};
// Looks at the front of `stream` (one direction, everything not yet consumed). Never
// reads past it. A bad first byte or a length of 0 (for kMessage) or above the limit
// is malformed as soon as it is seen, before the rest arrives.
FrameSplit SplitFrame(std::span<const uint8_t> stream, const FrameLimits& limits = {});

// Writes the 4-byte direct-TCP prefix for a payload of `length` bytes.
// REQUIRES: length < 2^24.
void WriteFramePrefix(uint8_t* out, uint32_t length);

// ---------------------------------------------------------------------------------
// What a frame carries (its first four bytes)

enum class Protocol : uint8_t {
  kSmb2,         // 0xFE 'SMB': SMB2 header(s)
  kTransform,    // 0xFD 'SMB': SMB3 encrypted message, opaque
  kCompressed,   // 0xFC 'SMB': SMB3.1.1 compression transform, opaque
  kSmb1,         // 0xFF 'SMB': SMB1 (a client's first NEGOTIATE, offering SMB2), opaque
};
std::string_view ProtocolName(Protocol protocol);  // "SMB2", "encrypted", "compressed", "SMB1"
Result<Protocol> Classify(std::span<const uint8_t> payload);

// The transform header's fields the glue may want to report (not decrypt).
inline constexpr size_t kTransformHeaderSize = 52;
struct TransformHeader {
  uint32_t original_message_size = 0;
  uint16_t flags = 0;  // 1: encrypted
  uint64_t session_id = 0;
};
// REQUIRES nothing: checks the protocol id and that the header and OriginalMessageSize
// fit `payload`.
Result<TransformHeader> ParseTransformHeader(std::span<const uint8_t> payload);

// ---------------------------------------------------------------------------------
// The SMB2 header (64 bytes)

inline constexpr size_t kHeaderSize = 64;
// Field offsets from the start of a message, for rewriting fields in place.
inline constexpr size_t kProtocolIdOffset = 0;
inline constexpr size_t kStructureSizeOffset = 4;
inline constexpr size_t kCreditChargeOffset = 6;
inline constexpr size_t kStatusOffset = 8;  // requests (3.x): ChannelSequence u16 + Reserved
inline constexpr size_t kCommandOffset = 12;
inline constexpr size_t kCreditOffset = 14;  // CreditRequest / CreditResponse
inline constexpr size_t kFlagsOffset = 16;
inline constexpr size_t kNextCommandOffset = 20;
inline constexpr size_t kMessageIdOffset = 24;
inline constexpr size_t kAsyncIdOffset = 32;   // with flags::kAsync (8 bytes)
inline constexpr size_t kReservedOffset = 32;  // without: Reserved u32 (ProcessId), then TreeId
inline constexpr size_t kTreeIdOffset = 36;
inline constexpr size_t kSessionIdOffset = 40;
inline constexpr size_t kSignatureOffset = 48;
inline constexpr size_t kSignatureSize = 16;

namespace flags {
inline constexpr uint32_t kServerToRedir = 0x00000001;  // a response
inline constexpr uint32_t kAsync = 0x00000002;
inline constexpr uint32_t kRelatedOperations = 0x00000004;  // compound: use the previous FileId...
inline constexpr uint32_t kSigned = 0x00000008;
inline constexpr uint32_t kPriorityMask = 0x00000070;
inline constexpr uint32_t kDfsOperations = 0x10000000;
inline constexpr uint32_t kReplayOperation = 0x20000000;
}  // namespace flags

enum class Command : uint16_t {
  kNegotiate = 0x00,
  kSessionSetup = 0x01,
  kLogoff = 0x02,
  kTreeConnect = 0x03,
  kTreeDisconnect = 0x04,
  kCreate = 0x05,
  kClose = 0x06,
  kFlush = 0x07,
  kRead = 0x08,
  kWrite = 0x09,
  kLock = 0x0A,
  kIoctl = 0x0B,
  kCancel = 0x0C,
  kEcho = 0x0D,
  kQueryDirectory = 0x0E,
  kChangeNotify = 0x0F,
  kQueryInfo = 0x10,
  kSetInfo = 0x11,
  kOplockBreak = 0x12,
};
inline constexpr uint16_t kLastCommand = 0x12;
std::string_view CommandName(Command command);  // "READ", ...; "unknown" past kLastCommand

// NTSTATUS values the glue looks at.
namespace status {
inline constexpr uint32_t kSuccess = 0x00000000;
inline constexpr uint32_t kPending = 0x00000103;
inline constexpr uint32_t kNotifyEnumDir = 0x0000010C;
inline constexpr uint32_t kBufferOverflow = 0x80000005;
inline constexpr uint32_t kNoMoreFiles = 0x80000006;
inline constexpr uint32_t kEndOfFile = 0xC0000011;
inline constexpr uint32_t kMoreProcessingRequired = 0xC0000016;
inline constexpr uint32_t kAccessDenied = 0xC0000022;
inline constexpr uint32_t kObjectNameNotFound = 0xC0000034;
inline constexpr uint32_t kObjectNameCollision = 0xC0000035;
inline constexpr uint32_t kLogonFailure = 0xC000006D;
inline constexpr uint32_t kInsufficientResources = 0xC000009A;
inline constexpr uint32_t kNotSupported = 0xC00000BB;
inline constexpr uint32_t kCancelled = 0xC0000120;
inline constexpr uint32_t kFileClosed = 0xC0000128;
inline constexpr uint32_t kUserSessionDeleted = 0xC0000203;
inline constexpr uint32_t kNetworkSessionExpired = 0xC000035C;
}  // namespace status
std::string_view StatusName(uint32_t status);  // "STATUS_END_OF_FILE", ...; empty if unknown

struct Header {
  uint16_t credit_charge = 0;
  uint32_t status = 0;  // requests of 3.x dialects: ChannelSequence in the low 16 bits
  Command command = Command::kNegotiate;
  uint16_t credit = 0;  // CreditRequest in a request, CreditResponse (granted) in a response
  uint32_t flags = 0;
  uint32_t next_command = 0;
  uint64_t message_id = 0;
  uint64_t async_id = 0;  // with flags::kAsync
  uint32_t reserved = 0;  // without flags::kAsync (ProcessId)
  uint32_t tree_id = 0;   // without flags::kAsync
  uint64_t session_id = 0;
  std::array<uint8_t, kSignatureSize> signature{};

  bool is_response() const { return flags & flags::kServerToRedir; }
  bool is_async() const { return flags & flags::kAsync; }
  bool is_related() const { return flags & flags::kRelatedOperations; }
  bool is_signed() const { return flags & flags::kSigned; }
  // An interim response: the final one follows with the same MessageId and AsyncId.
  bool is_interim() const { return is_response() && is_async() && status == status::kPending; }
};

// Reads the 64-byte header at the front of `message`: protocol id 0xFE 'SMB',
// StructureSize 64, a command up to kLastCommand.
Result<Header> ParseHeader(std::span<const uint8_t> message);
// Writes all 64 bytes (protocol id and StructureSize included).
void WriteHeader(const Header& header, uint8_t* out);

// In-place edits of a message's header for a rewriter. Each returns false (and
// changes nothing) if `message` is shorter than the header.
bool PatchMessageId(std::span<uint8_t> message, uint64_t message_id);
bool PatchCredit(std::span<uint8_t> message, uint16_t credit);
bool PatchCreditCharge(std::span<uint8_t> message, uint16_t credit_charge);

// ---------------------------------------------------------------------------------
// Compound chains: the SMB2 messages of one frame

struct Message {
  Header header;
  size_t offset = 0;                // of the header in the frame's payload
  std::span<const uint8_t> bytes;   // header + body (+ padding up to the next one)
  std::span<const uint8_t> body() const { return bytes.subspan(kHeaderSize); }
  // The body's StructureSize (0 if fewer than 2 body bytes).
  uint16_t structure_size() const;
};

// Splits a frame's payload (Classify == kSmb2) into its messages: each NextCommand
// is a multiple of 8, at least a header long, and leads to another header inside
// the payload; the last is 0. At most kMaxCompound messages.
inline constexpr size_t kMaxCompound = 256;
Result<std::vector<Message>> SplitCompound(std::span<const uint8_t> payload);
// One message that is not part of a chain (NextCommand must be 0).
Result<Message> ParseMessage(std::span<const uint8_t> bytes);

// ---------------------------------------------------------------------------------
// What every command shares: file ids, error responses, dialects. The command
// bodies are in messages.h.

struct FileId {
  uint64_t persistent = 0;
  uint64_t volatile_id = 0;
  friend bool operator==(const FileId&, const FileId&) = default;
};

// An error response (StructureSize 9): a response whose status is not SUCCESS and
// whose body has StructureSize 9, except where the command's own body is 9 bytes
// too and the status is one it is answered with (SESSION_SETUP's
// MORE_PROCESSING_REQUIRED; BUFFER_OVERFLOW for QUERY_INFO, QUERY_DIRECTORY and
// CHANGE_NOTIFY). STATUS_PENDING interim responses and warnings such as
// NO_MORE_FILES are error responses; a failure answered with the command's own,
// differently sized body (READ's BUFFER_OVERFLOW on a pipe, some IOCTLs) is not.
bool IsErrorResponse(const Message& message);
struct ErrorResponse {
  uint32_t status = 0;
  uint8_t context_count = 0;  // 3.1.1
  uint32_t byte_count = 0;
  std::span<const uint8_t> data;  // byte_count bytes (ErrorData; a lone pad byte when 0)
};
Result<ErrorResponse> ParseErrorResponse(const Message& message);

// Dialect revisions.
namespace dialect {
inline constexpr uint16_t kSmb202 = 0x0202;
inline constexpr uint16_t kSmb21 = 0x0210;
inline constexpr uint16_t kSmb30 = 0x0300;
inline constexpr uint16_t kSmb302 = 0x0302;
inline constexpr uint16_t kSmb311 = 0x0311;
inline constexpr uint16_t kWildcard = 0x02FF;  // "SMB 2.???": answered to an SMB1 negotiate
}  // namespace dialect
std::string_view DialectName(uint16_t dialect);  // "2.0.2", ..., "3.1.1", "2.???"; empty if unknown
// ---------------------------------------------------------------------------------
// Building messages

// Credits a request of `length` bytes costs: 1 per 64 KiB started, at least 1.
uint16_t CreditChargeFor(uint64_t length);

struct ReadRequestParams {
  uint64_t message_id = 0;
  uint16_t credit_charge = 1;
  uint16_t credit_request = 1;
  uint32_t header_flags = 0;  // e.g. flags::kPriorityMask bits; never kSigned (not signed here)
  uint64_t session_id = 0;
  uint32_t tree_id = 0;
  FileId file_id;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t minimum_count = 0;
  uint8_t read_flags = 0;
  uint8_t padding = 0x50;  // the data after header + response body, as clients ask
};
// A whole READ request message (header + 49-byte body: 113 bytes), unsigned, without
// the frame prefix (WriteFramePrefix).
std::vector<uint8_t> WriteReadRequest(const ReadRequestParams& params);

// UTF-16LE to UTF-8 (unpaired surrogates become U+FFFD); an odd length is an error.
Result<std::string> Utf16ToUtf8(std::span<const uint8_t> utf16);

}  // namespace wanopt::protocols::smb2
