// Bodies of the file-level commands: CLOSE, READ, WRITE, FLUSH, LOCK, SET_INFO,
// OPLOCK_BREAK, and the empty ones (protocols/smb2/smb2.h).
#include "protocols/smb2/messages.h"

#include "protocols/smb2/reader.h"

namespace wanopt::protocols::smb2 {

using internal::Buffer;
using internal::CheckBody;
using internal::Failed;
using internal::Get64;
using internal::Reader;

namespace {

FileId ReadFileId(Reader& r) {
  FileId id;
  id.persistent = r.U64();
  id.volatile_id = r.U64();
  return id;
}

}  // namespace

Result<CloseRequest> ParseCloseRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kClose, false, 24); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  CloseRequest out;
  out.flags = r.U16();
  r.Skip(4);
  out.file_id = ReadFileId(r);
  return out;
}

Result<CloseResponse> ParseCloseResponse(const Message& m) {
  if (Error e = CheckBody(m, Command::kClose, true, 60); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  CloseResponse out;
  out.flags = r.U16();
  r.Skip(4 + 32);  // Reserved, four times
  out.allocation_size = r.U64();
  out.end_of_file = r.U64();
  out.file_attributes = r.U32();
  return out;
}

Result<ReadRequest> ParseReadRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kRead, false, 49); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  ReadRequest out;
  out.padding = r.U8();
  out.flags = r.U8();
  out.length = r.U32();
  out.offset = r.U64();
  out.file_id = ReadFileId(r);
  out.minimum_count = r.U32();
  out.channel = r.U32();
  out.remaining_bytes = r.U32();
  const uint16_t info_offset = r.U16();
  const uint16_t info_length = r.U16();
  if (!Buffer(m, info_offset, info_length, kHeaderSize + 48, out.channel_info))
    return Malformed("READ channel info outside the message");
  return out;
}

Result<ReadResponse> ParseReadResponse(const Message& m) {
  if (Error e = CheckBody(m, Command::kRead, true, 17); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  ReadResponse out;
  out.data_offset = r.U8();
  r.Skip(1);
  out.data_length = r.U32();
  out.data_remaining = r.U32();
  if (!Buffer(m, out.data_offset, out.data_length, kHeaderSize + 16, out.data))
    return Malformed("READ data outside the message");
  return out;
}

Result<WriteRequest> ParseWriteRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kWrite, false, 49); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  WriteRequest out;
  out.data_offset = r.U16();
  out.length = r.U32();
  out.offset = r.U64();
  out.file_id = ReadFileId(r);
  out.channel = r.U32();
  out.remaining_bytes = r.U32();
  const uint16_t info_offset = r.U16();
  const uint16_t info_length = r.U16();
  out.flags = r.U32();
  std::span<const uint8_t> info;
  if (!Buffer(m, info_offset, info_length, kHeaderSize + 48, info))
    return Malformed("WRITE channel info outside the message");
  if (!Buffer(m, out.data_offset, out.length, kHeaderSize + 48, out.data))
    return Malformed("WRITE data outside the message");
  return out;
}

Result<WriteResponse> ParseWriteResponse(const Message& m) {
  if (Error e = CheckBody(m, Command::kWrite, true, 17); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 4);
  WriteResponse out;
  out.count = r.U32();
  out.remaining = r.U32();
  return out;
}

Result<FileId> ParseFlushRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kFlush, false, 24); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 8);
  return ReadFileId(r);
}

Result<LockRequest> ParseLockRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kLock, false, 48); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  LockRequest out;
  out.lock_count = r.U16();
  out.lock_sequence = r.U32();
  out.file_id = ReadFileId(r);
  constexpr size_t kLockSize = 24;  // Offset, Length, Flags, Reserved
  if (out.lock_count == 0) return Malformed("LOCK without locks");
  if ((m.bytes.size() - r.pos()) / kLockSize < out.lock_count) return Malformed("LOCK elements past the message");
  return out;
}

std::optional<uint64_t> SetInfoRequest::new_end_of_file() const {
  if (info_type != info_type::kFile || file_info_class != file_info_class::kEndOfFile || buffer.size() < 8)
    return std::nullopt;
  return Get64(buffer.data());
}

Result<SetInfoRequest> ParseSetInfoRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kSetInfo, false, 33); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  SetInfoRequest out;
  out.info_type = r.U8();
  out.file_info_class = r.U8();
  const uint32_t length = r.U32();
  const uint16_t offset = r.U16();
  r.Skip(2);
  out.additional_information = r.U32();
  out.file_id = ReadFileId(r);
  if (!Buffer(m, offset, length, kHeaderSize + 32, out.buffer)) return Malformed("SET_INFO buffer outside the message");
  return out;
}

Result<OplockBreak> ParseOplockBreak(const Message& m) {
  if (m.header.command != Command::kOplockBreak) return Unsupported("another command");
  if (m.header.is_response() && IsErrorResponse(m)) return Unsupported("an error response");
  const uint16_t size = m.structure_size();
  // 24: an oplock break either way; 44: a lease break notification (server only);
  // 36: a lease break acknowledgment or response.
  if (size != 24 && size != 36 && !(size == 44 && m.header.is_response()))
    return Malformed("unexpected OPLOCK_BREAK StructureSize");
  if (Error e = CheckBody(m, Command::kOplockBreak, m.header.is_response(), size); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  OplockBreak out;
  if (size == 24) {
    out.oplock_level = r.U8();
    r.Skip(5);
    out.file_id = ReadFileId(r);
    return out;
  }
  out.lease = true;
  if (size == 44) {
    out.new_epoch = r.U16();
    out.flags = r.U32();
    r.Copy(out.lease_key);
    out.current_lease_state = r.U32();
    out.new_lease_state = r.U32();
  } else {
    r.Skip(2);
    out.flags = r.U32();
    r.Copy(out.lease_key);
    out.current_lease_state = r.U32();
  }
  return out;
}

Result<bool> ParseEmptyBody(const Message& m) {
  uint16_t size = 4;
  switch (m.header.command) {
    case Command::kCancel:
    case Command::kEcho:
    case Command::kLogoff:
    case Command::kTreeDisconnect:
      break;
    case Command::kFlush:
    case Command::kLock:
      if (!m.header.is_response()) return Unsupported("a request with a body");
      break;
    case Command::kSetInfo:
      if (!m.header.is_response()) return Unsupported("a request with a body");
      size = 2;
      break;
    default:
      return Unsupported("not a command with an empty body");
  }
  if (Error e = CheckBody(m, m.header.command, m.header.is_response(), size); Failed(e)) return e;
  return true;
}

}  // namespace wanopt::protocols::smb2
