// The SMB2 header, compound chains, error responses and the READ request builder
// (protocols/smb2/smb2.h).
#include "protocols/smb2/smb2.h"

#include "protocols/smb2/reader.h"

namespace wanopt::protocols::smb2 {

using internal::Get16;
using internal::Inside;
using internal::Put16;
using internal::Put32;
using internal::Put64;
using internal::Reader;

Result<Header> ParseHeader(std::span<const uint8_t> message) {
  if (message.size() < kHeaderSize) return Malformed("message shorter than the SMB2 header");
  if (message[0] != 0xFE || message[1] != 'S' || message[2] != 'M' || message[3] != 'B')
    return Malformed("not an SMB2 protocol id");
  Reader r(message, kStructureSizeOffset);
  if (r.U16() != kHeaderSize) return Malformed("SMB2 header StructureSize is not 64");
  Header h;
  h.credit_charge = r.U16();
  h.status = r.U32();
  const uint16_t command = r.U16();
  if (command > kLastCommand) return Malformed("unknown SMB2 command");
  h.command = static_cast<Command>(command);
  h.credit = r.U16();
  h.flags = r.U32();
  h.next_command = r.U32();
  h.message_id = r.U64();
  if (h.flags & flags::kAsync) {
    h.async_id = r.U64();
  } else {
    h.reserved = r.U32();
    h.tree_id = r.U32();
  }
  h.session_id = r.U64();
  r.Copy(h.signature);
  if (!r.ok()) return Malformed("SMB2 header truncated");  // cannot happen after the size check
  return h;
}

void WriteHeader(const Header& h, uint8_t* out) {
  out[0] = 0xFE;
  out[1] = 'S';
  out[2] = 'M';
  out[3] = 'B';
  Put16(out + kStructureSizeOffset, kHeaderSize);
  Put16(out + kCreditChargeOffset, h.credit_charge);
  Put32(out + kStatusOffset, h.status);
  Put16(out + kCommandOffset, static_cast<uint16_t>(h.command));
  Put16(out + kCreditOffset, h.credit);
  Put32(out + kFlagsOffset, h.flags);
  Put32(out + kNextCommandOffset, h.next_command);
  Put64(out + kMessageIdOffset, h.message_id);
  if (h.flags & flags::kAsync) {
    Put64(out + kAsyncIdOffset, h.async_id);
  } else {
    Put32(out + kReservedOffset, h.reserved);
    Put32(out + kTreeIdOffset, h.tree_id);
  }
  Put64(out + kSessionIdOffset, h.session_id);
  for (size_t i = 0; i < kSignatureSize; ++i) out[kSignatureOffset + i] = h.signature[i];
}

bool PatchMessageId(std::span<uint8_t> message, uint64_t message_id) {
  if (message.size() < kHeaderSize) return false;
  Put64(message.data() + kMessageIdOffset, message_id);
  return true;
}

bool PatchCredit(std::span<uint8_t> message, uint16_t credit) {
  if (message.size() < kHeaderSize) return false;
  Put16(message.data() + kCreditOffset, credit);
  return true;
}

bool PatchCreditCharge(std::span<uint8_t> message, uint16_t credit_charge) {
  if (message.size() < kHeaderSize) return false;
  Put16(message.data() + kCreditChargeOffset, credit_charge);
  return true;
}

uint16_t Message::structure_size() const {
  return bytes.size() >= kHeaderSize + 2 ? Get16(bytes.data() + kHeaderSize) : 0;
}

Result<std::vector<Message>> SplitCompound(std::span<const uint8_t> payload) {
  std::vector<Message> out;
  size_t offset = 0;
  for (;;) {
    if (out.size() == kMaxCompound) return Malformed("compound chain too long");
    auto rest = payload.subspan(offset);
    auto header = ParseHeader(rest);
    if (!header) return header.error();
    const uint32_t next = header->next_command;
    Message m{*header, offset, rest};
    if (next == 0) {
      out.push_back(m);
      return out;
    }
    if (next % 8) return Malformed("NextCommand not 8-byte aligned");
    if (next < kHeaderSize) return Malformed("NextCommand inside the header");
    if (!Inside(rest, next, kHeaderSize)) return Malformed("NextCommand past the frame");
    m.bytes = rest.first(next);
    out.push_back(m);
    offset += next;
  }
}

Result<Message> ParseMessage(std::span<const uint8_t> bytes) {
  auto header = ParseHeader(bytes);
  if (!header) return header.error();
  if (header->next_command != 0) return Malformed("NextCommand set on a single message");
  return Message{*header, 0, bytes};
}

bool IsErrorResponse(const Message& m) {
  const Header& h = m.header;
  if (!h.is_response() || h.status == status::kSuccess || m.structure_size() != 9) return false;
  // Failures answered with the command's own body, whose StructureSize is also 9.
  if (h.command == Command::kSessionSetup && h.status == status::kMoreProcessingRequired) return false;
  if (h.status == status::kBufferOverflow &&
      (h.command == Command::kQueryInfo || h.command == Command::kQueryDirectory ||
       h.command == Command::kChangeNotify))
    return false;
  return true;
}

Result<ErrorResponse> ParseErrorResponse(const Message& m) {
  if (!m.header.is_response()) return Unsupported("error body in a request");
  if (m.structure_size() != 9) return Malformed("error response StructureSize is not 9");
  Reader r(m.bytes, kHeaderSize + 2);
  ErrorResponse out;
  out.status = m.header.status;
  out.context_count = r.U8();
  r.Skip(1);
  out.byte_count = r.U32();
  if (!r.ok()) return Malformed("error response truncated");
  if (out.byte_count == 0) {
    // ErrorData is one pad byte then; some servers leave it out.
    out.data = m.bytes.subspan(r.pos(), m.bytes.size() > r.pos() ? 1 : 0);
    return out;
  }
  if (!Inside(m.bytes, r.pos(), out.byte_count)) return Malformed("error response ByteCount past the message");
  out.data = m.bytes.subspan(r.pos(), out.byte_count);
  return out;
}

std::vector<uint8_t> WriteReadRequest(const ReadRequestParams& p) {
  constexpr size_t kBodySize = 49;
  std::vector<uint8_t> out(kHeaderSize + kBodySize, 0);
  Header h;
  h.command = Command::kRead;
  h.credit_charge = p.credit_charge;
  h.credit = p.credit_request;
  // A request of our own: never a response, async, related or signed.
  h.flags = p.header_flags & ~(flags::kServerToRedir | flags::kAsync | flags::kRelatedOperations | flags::kSigned);
  h.message_id = p.message_id;
  h.tree_id = p.tree_id;
  h.session_id = p.session_id;
  WriteHeader(h, out.data());
  uint8_t* b = out.data() + kHeaderSize;
  Put16(b, kBodySize);
  b[2] = p.padding;
  b[3] = p.read_flags;
  Put32(b + 4, p.length);
  Put64(b + 8, p.offset);
  Put64(b + 16, p.file_id.persistent);
  Put64(b + 24, p.file_id.volatile_id);
  Put32(b + 32, p.minimum_count);
  // Channel, RemainingBytes, ReadChannelInfoOffset/Length: 0; one zero buffer byte.
  return out;
}

}  // namespace wanopt::protocols::smb2
