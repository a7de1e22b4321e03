// The outer layers of protocols/smb2/smb2.h: frames, what a frame carries, the
// transform header, and the small helpers (names, credit charge, UTF-16).
#include "protocols/smb2/smb2.h"

#include <algorithm>

#include "protocols/smb2/reader.h"

namespace wanopt::protocols::smb2 {

using internal::Reader;

namespace {

bool NetbiosControlType(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kSessionRequest:
    case FrameType::kPositiveResponse:
    case FrameType::kNegativeResponse:
    case FrameType::kKeepalive:
      return true;
    case FrameType::kMessage:
      return false;
  }
  return false;
}

FrameSplit MalformedFrame(std::string_view reason) {
  FrameSplit out;
  out.kind = FrameSplit::kMalformed;
  out.error = Malformed(reason);
  return out;
}

}  // namespace

FrameSplit SplitFrame(std::span<const uint8_t> stream, const FrameLimits& limits) {
  FrameSplit out;
  if (stream.empty()) return out;
  const uint8_t type = stream[0];
  if (type != 0x00 && !(limits.netbios_session && NetbiosControlType(type))) {
    return MalformedFrame(limits.netbios_session ? "not a NetBIOS session service packet type"
                                                 : "frame does not start with a zero byte");
  }
  out.type = static_cast<FrameType>(type);
  if (stream.size() < kFramePrefixSize) return out;
  const uint32_t length = uint32_t{stream[1]} << 16 | uint32_t{stream[2]} << 8 | stream[3];
  if (length == 0 && out.type == FrameType::kMessage) return MalformedFrame("empty frame");
  if (length > limits.max_length) return MalformedFrame("frame longer than the limit");
  const size_t total = kFramePrefixSize + size_t{length};
  if (stream.size() < total) {
    out.needed = total;
    return out;
  }
  out.kind = FrameSplit::kFrame;
  out.bytes = stream.first(total);
  out.payload = stream.subspan(kFramePrefixSize, length);
  return out;
}

void WriteFramePrefix(uint8_t* out, uint32_t length) {
  out[0] = 0;
  out[1] = static_cast<uint8_t>(length >> 16);
  out[2] = static_cast<uint8_t>(length >> 8);
  out[3] = static_cast<uint8_t>(length);
}

std::string_view ProtocolName(Protocol protocol) {
  switch (protocol) {
    case Protocol::kSmb2: return "SMB2";
    case Protocol::kTransform: return "encrypted";
    case Protocol::kCompressed: return "compressed";
    case Protocol::kSmb1: return "SMB1";
  }
  return "unknown";
}

Result<Protocol> Classify(std::span<const uint8_t> payload) {
  if (payload.size() < 4) return Malformed("message shorter than a protocol id");
  if (payload[1] != 'S' || payload[2] != 'M' || payload[3] != 'B') return Malformed("not an SMB protocol id");
  switch (payload[0]) {
    case 0xFE: return Protocol::kSmb2;
    case 0xFD: return Protocol::kTransform;
    case 0xFC: return Protocol::kCompressed;
    case 0xFF: return Protocol::kSmb1;
    default: return Malformed("unknown SMB protocol id");
  }
}

Result<TransformHeader> ParseTransformHeader(std::span<const uint8_t> payload) {
  auto protocol = Classify(payload);
  if (!protocol) return protocol.error();
  if (*protocol != Protocol::kTransform) return Unsupported("not a transform header");
  // ProtocolId, Signature (16), Nonce (16), OriginalMessageSize, Reserved, Flags, SessionId.
  Reader r(payload, 36);
  TransformHeader out;
  out.original_message_size = r.U32();
  r.Skip(2);
  out.flags = r.U16();
  out.session_id = r.U64();
  if (!r.ok()) return Malformed("transform header truncated");
  if (out.original_message_size > payload.size() - kTransformHeaderSize)
    return Malformed("transform OriginalMessageSize past the frame");
  return out;
}

std::string_view CommandName(Command command) {
  switch (command) {
    case Command::kNegotiate: return "NEGOTIATE";
    case Command::kSessionSetup: return "SESSION_SETUP";
    case Command::kLogoff: return "LOGOFF";
    case Command::kTreeConnect: return "TREE_CONNECT";
    case Command::kTreeDisconnect: return "TREE_DISCONNECT";
    case Command::kCreate: return "CREATE";
    case Command::kClose: return "CLOSE";
    case Command::kFlush: return "FLUSH";
    case Command::kRead: return "READ";
    case Command::kWrite: return "WRITE";
    case Command::kLock: return "LOCK";
    case Command::kIoctl: return "IOCTL";
    case Command::kCancel: return "CANCEL";
    case Command::kEcho: return "ECHO";
    case Command::kQueryDirectory: return "QUERY_DIRECTORY";
    case Command::kChangeNotify: return "CHANGE_NOTIFY";
    case Command::kQueryInfo: return "QUERY_INFO";
    case Command::kSetInfo: return "SET_INFO";
    case Command::kOplockBreak: return "OPLOCK_BREAK";
  }
  return "unknown";
}

std::string_view StatusName(uint32_t value) {
  switch (value) {
    case status::kSuccess: return "STATUS_SUCCESS";
    case status::kPending: return "STATUS_PENDING";
    case status::kNotifyEnumDir: return "STATUS_NOTIFY_ENUM_DIR";
    case status::kBufferOverflow: return "STATUS_BUFFER_OVERFLOW";
    case status::kNoMoreFiles: return "STATUS_NO_MORE_FILES";
    case status::kEndOfFile: return "STATUS_END_OF_FILE";
    case status::kMoreProcessingRequired: return "STATUS_MORE_PROCESSING_REQUIRED";
    case status::kAccessDenied: return "STATUS_ACCESS_DENIED";
    case status::kObjectNameNotFound: return "STATUS_OBJECT_NAME_NOT_FOUND";
    case status::kObjectNameCollision: return "STATUS_OBJECT_NAME_COLLISION";
    case status::kLogonFailure: return "STATUS_LOGON_FAILURE";
    case status::kInsufficientResources: return "STATUS_INSUFFICIENT_RESOURCES";
    case status::kNotSupported: return "STATUS_NOT_SUPPORTED";
    case status::kCancelled: return "STATUS_CANCELLED";
    case status::kFileClosed: return "STATUS_FILE_CLOSED";
    case status::kUserSessionDeleted: return "STATUS_USER_SESSION_DELETED";
    case status::kNetworkSessionExpired: return "STATUS_NETWORK_SESSION_EXPIRED";
    default: return {};
  }
}

std::string_view DialectName(uint16_t value) {
  switch (value) {
    case dialect::kSmb202: return "2.0.2";
    case dialect::kSmb21: return "2.1";
    case dialect::kSmb30: return "3.0";
    case dialect::kSmb302: return "3.0.2";
    case dialect::kSmb311: return "3.1.1";
    case dialect::kWildcard: return "2.???";
    default: return {};
  }
}

uint16_t CreditChargeFor(uint64_t length) {
  if (length == 0) return 1;
  const uint64_t charge = (length - 1) / 65536 + 1;
  return static_cast<uint16_t>(std::min<uint64_t>(charge, 0xFFFF));
}

Result<std::string> Utf16ToUtf8(std::span<const uint8_t> utf16) {
  if (utf16.size() % 2) return Malformed("UTF-16 string of odd length");
  std::string out;
  out.reserve(utf16.size() / 2);
  auto unit = [&](size_t i) { return static_cast<uint32_t>(utf16[2 * i] | utf16[2 * i + 1] << 8); };
  const size_t units = utf16.size() / 2;
  for (size_t i = 0; i < units; ++i) {
    uint32_t c = unit(i);
    if (c >= 0xD800 && c <= 0xDBFF && i + 1 < units && unit(i + 1) >= 0xDC00 && unit(i + 1) <= 0xDFFF) {
      c = 0x10000 + ((c - 0xD800) << 10) + (unit(i + 1) - 0xDC00);
      ++i;
    } else if (c >= 0xD800 && c <= 0xDFFF) {
      c = 0xFFFD;  // unpaired surrogate
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | c >> 6);
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | c >> 12);
      out += static_cast<char>(0x80 | (c >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | c >> 18);
      out += static_cast<char>(0x80 | (c >> 12 & 0x3F));
      out += static_cast<char>(0x80 | (c >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

}  // namespace wanopt::protocols::smb2
