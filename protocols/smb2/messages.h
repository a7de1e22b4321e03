// SMB2/SMB3 command bodies (MS-SMB2 2.2), on the framing, header and compound
// layers of smb2.h. Each parser checks the command, the direction and the
// StructureSize, and that every buffer its offsets/lengths name lies inside the
// message and past the body's fixed part. Offsets on the wire are from the start of
// the header; the spans returned alias the message. A response parser given an
// error response (IsErrorResponse, smb2.h) answers kUnsupported: read it with
// ParseErrorResponse.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/smb2/smb2.h"

namespace wanopt::protocols::smb2 {

namespace security_mode {
inline constexpr uint16_t kSigningEnabled = 0x0001;
inline constexpr uint16_t kSigningRequired = 0x0002;
}  // namespace security_mode

namespace capabilities {
inline constexpr uint32_t kDfs = 0x01;
inline constexpr uint32_t kLeasing = 0x02;
inline constexpr uint32_t kLargeMtu = 0x04;  // multi-credit requests
inline constexpr uint32_t kMultiChannel = 0x08;
inline constexpr uint32_t kPersistentHandles = 0x10;
inline constexpr uint32_t kDirectoryLeasing = 0x20;
inline constexpr uint32_t kEncryption = 0x40;
}  // namespace capabilities

struct NegotiateContext {
  uint16_t type = 0;  // 1 preauth integrity, 2 encryption, 3 compression, 8 signing...
  std::span<const uint8_t> data;
};

struct NegotiateRequest {
  uint16_t security_mode = 0;
  uint32_t capabilities = 0;
  std::array<uint8_t, 16> client_guid{};
  std::vector<uint16_t> dialects;
  std::vector<NegotiateContext> contexts;  // only if 3.1.1 is offered
};
Result<NegotiateRequest> ParseNegotiateRequest(const Message& message);

struct NegotiateResponse {
  uint16_t security_mode = 0;
  uint16_t dialect = 0;
  std::array<uint8_t, 16> server_guid{};
  uint32_t capabilities = 0;
  uint32_t max_transact_size = 0;
  uint32_t max_read_size = 0;
  uint32_t max_write_size = 0;
  std::span<const uint8_t> security_buffer;
  std::vector<NegotiateContext> contexts;  // dialect 3.1.1 only
  bool signing_required() const { return security_mode & security_mode::kSigningRequired; }
};
Result<NegotiateResponse> ParseNegotiateResponse(const Message& message);

struct SessionSetupRequest {
  uint8_t flags = 0;  // 1: binding a session to a new channel
  uint8_t security_mode = 0;
  uint32_t capabilities = 0;
  uint64_t previous_session_id = 0;
  std::span<const uint8_t> security_buffer;
};
Result<SessionSetupRequest> ParseSessionSetupRequest(const Message& message);

namespace session_flags {
inline constexpr uint16_t kIsGuest = 0x0001;
inline constexpr uint16_t kIsNull = 0x0002;
inline constexpr uint16_t kEncryptData = 0x0004;
}  // namespace session_flags
struct SessionSetupResponse {
  uint16_t session_flags = 0;
  std::span<const uint8_t> security_buffer;
};
Result<SessionSetupResponse> ParseSessionSetupResponse(const Message& message);

struct TreeConnectRequest {
  uint16_t flags = 0;
  std::string path;  // "\\server\share", UTF-8
};
Result<TreeConnectRequest> ParseTreeConnectRequest(const Message& message);

namespace share_flags {
inline constexpr uint32_t kDfs = 0x00000001;
inline constexpr uint32_t kEncryptData = 0x00008000;
}  // namespace share_flags
struct TreeConnectResponse {
  uint8_t share_type = 0;  // 1 disk, 2 pipe, 3 print
  uint32_t share_flags = 0;
  uint32_t capabilities = 0;
  uint32_t maximal_access = 0;
};
Result<TreeConnectResponse> ParseTreeConnectResponse(const Message& message);

namespace oplock {
inline constexpr uint8_t kNone = 0x00;
inline constexpr uint8_t kLevelII = 0x01;
inline constexpr uint8_t kExclusive = 0x08;
inline constexpr uint8_t kBatch = 0x09;
inline constexpr uint8_t kLease = 0xFF;
}  // namespace oplock

struct CreateContext {
  std::string_view name;  // aliases the message: "RqLs", "MxAc", "DHnQ", ...
  std::span<const uint8_t> data;
};
// Walks a create-context chain (each Next 8-aligned and forward, names and data
// inside their element). Exposed for the glue and the fuzzer.
Result<std::vector<CreateContext>> ParseCreateContexts(std::span<const uint8_t> chain);

struct CreateRequest {
  uint8_t oplock_level = 0;
  uint32_t impersonation_level = 0;
  uint32_t desired_access = 0;
  uint32_t file_attributes = 0;
  uint32_t share_access = 0;
  uint32_t create_disposition = 0;
  uint32_t create_options = 0;
  std::string name;  // UTF-8; empty for the share's root
  std::vector<CreateContext> contexts;
  bool lease_requested = false;  // an "RqLs" context
};
Result<CreateRequest> ParseCreateRequest(const Message& message);

struct CreateResponse {
  uint8_t oplock_level = 0;
  uint8_t flags = 0;
  uint32_t create_action = 0;
  uint64_t creation_time = 0, last_access_time = 0, last_write_time = 0, change_time = 0;
  uint64_t allocation_size = 0;
  uint64_t end_of_file = 0;
  uint32_t file_attributes = 0;
  FileId file_id;
  std::vector<CreateContext> contexts;
  bool lease_granted = false;  // an "RqLs" context in the response
};
Result<CreateResponse> ParseCreateResponse(const Message& message);

inline constexpr uint16_t kClosePostqueryAttrib = 0x0001;
struct CloseRequest {
  uint16_t flags = 0;
  FileId file_id;
};
Result<CloseRequest> ParseCloseRequest(const Message& message);
struct CloseResponse {
  uint16_t flags = 0;  // with kClosePostqueryAttrib the fields below are set
  uint64_t allocation_size = 0;
  uint64_t end_of_file = 0;
  uint32_t file_attributes = 0;
};
Result<CloseResponse> ParseCloseResponse(const Message& message);

struct ReadRequest {
  uint8_t padding = 0;  // where the client wants the data: offset from the header
  uint8_t flags = 0;    // 1 unbuffered, 2 compressed
  uint32_t length = 0;
  uint64_t offset = 0;
  FileId file_id;
  uint32_t minimum_count = 0;
  uint32_t channel = 0;
  uint32_t remaining_bytes = 0;
  std::span<const uint8_t> channel_info;  // RDMA descriptors
};
Result<ReadRequest> ParseReadRequest(const Message& message);

struct ReadResponse {
  uint8_t data_offset = 0;  // from the header
  uint32_t data_length = 0;
  uint32_t data_remaining = 0;
  std::span<const uint8_t> data;
};
Result<ReadResponse> ParseReadResponse(const Message& message);

struct WriteRequest {
  uint16_t data_offset = 0;
  uint32_t length = 0;
  uint64_t offset = 0;
  FileId file_id;
  uint32_t channel = 0;
  uint32_t remaining_bytes = 0;
  uint32_t flags = 0;
  std::span<const uint8_t> data;  // empty when the data comes over RDMA
};
Result<WriteRequest> ParseWriteRequest(const Message& message);
struct WriteResponse {
  uint32_t count = 0;
  uint32_t remaining = 0;
};
Result<WriteResponse> ParseWriteResponse(const Message& message);

Result<FileId> ParseFlushRequest(const Message& message);

struct LockRequest {
  uint16_t lock_count = 0;  // at least 1, all inside the message
  uint32_t lock_sequence = 0;
  FileId file_id;
};
Result<LockRequest> ParseLockRequest(const Message& message);

namespace info_type {
inline constexpr uint8_t kFile = 1;
inline constexpr uint8_t kFilesystem = 2;
inline constexpr uint8_t kSecurity = 3;
inline constexpr uint8_t kQuota = 4;
}  // namespace info_type
namespace file_info_class {
inline constexpr uint8_t kBasic = 4;
inline constexpr uint8_t kRename = 10;
inline constexpr uint8_t kDisposition = 13;
inline constexpr uint8_t kAllocation = 19;
inline constexpr uint8_t kEndOfFile = 20;
}  // namespace file_info_class
struct SetInfoRequest {
  uint8_t info_type = 0;
  uint8_t file_info_class = 0;
  uint32_t additional_information = 0;
  FileId file_id;
  std::span<const uint8_t> buffer;
  // The file's size changes (EndOfFile or Allocation information): cached data is stale.
  bool changes_size() const {
    return info_type == info_type::kFile &&
           (file_info_class == file_info_class::kEndOfFile || file_info_class == file_info_class::kAllocation);
  }
  // The new end of file, for kEndOfFile with its 8-byte buffer.
  std::optional<uint64_t> new_end_of_file() const;
};
Result<SetInfoRequest> ParseSetInfoRequest(const Message& message);

// OPLOCK_BREAK notification (server), acknowledgment (client) and response (server):
// an oplock break (StructureSize 24) or a lease break (44 notification, 36 ack/response).
struct OplockBreak {
  bool lease = false;
  uint8_t oplock_level = 0;  // oplock break
  FileId file_id;            // oplock break
  std::array<uint8_t, 16> lease_key{};  // lease break
  uint32_t flags = 0;                   // lease break (notification: 1 = ack required)
  uint32_t current_lease_state = 0;     // notification; ack/response: the LeaseState
  uint32_t new_lease_state = 0;         // notification
  uint16_t new_epoch = 0;               // notification
};
Result<OplockBreak> ParseOplockBreak(const Message& message);

// The bodies with nothing in them: CANCEL, ECHO, LOGOFF, TREE_DISCONNECT (both ways)
// and the FLUSH and LOCK responses (StructureSize 4); the SET_INFO response (2).
Result<bool> ParseEmptyBody(const Message& message);

}  // namespace wanopt::protocols::smb2
