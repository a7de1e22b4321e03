// Bodies of the session-level commands: NEGOTIATE, SESSION_SETUP, TREE_CONNECT and
// CREATE with its create contexts (protocols/smb2/smb2.h).
#include "protocols/smb2/messages.h"

#include "protocols/smb2/reader.h"

namespace wanopt::protocols::smb2 {

using internal::Buffer;
using internal::CheckBody;
using internal::Failed;
using internal::Get16;
using internal::Get32;
using internal::Inside;
using internal::Reader;

namespace {

// NEGOTIATE contexts (3.1.1): `count` of them from `offset` (from the header), each
// 8 bytes of header and its data, the next one 8-byte aligned.
Result<std::vector<NegotiateContext>> ReadNegotiateContexts(const Message& m, uint32_t offset, uint16_t count,
                                                             size_t fixed_end) {
  std::vector<NegotiateContext> out;
  if (count == 0) return out;
  if (offset < fixed_end || offset % 8) return Malformed("NegotiateContextOffset misplaced");
  uint64_t pos = offset;
  for (uint16_t i = 0; i < count; ++i) {
    pos = (pos + 7) & ~uint64_t{7};
    if (!Inside(m.bytes, pos, 8)) return Malformed("negotiate context past the message");
    const uint8_t* p = m.bytes.data() + pos;
    NegotiateContext c;
    c.type = Get16(p);
    const uint16_t length = Get16(p + 2);
    if (!Inside(m.bytes, pos + 8, length)) return Malformed("negotiate context data past the message");
    c.data = m.bytes.subspan(pos + 8, length);
    out.push_back(c);
    pos += 8 + length;
  }
  return out;
}

}  // namespace

Result<NegotiateRequest> ParseNegotiateRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kNegotiate, false, 36); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  NegotiateRequest out;
  const uint16_t dialect_count = r.U16();
  out.security_mode = r.U16();
  r.Skip(2);
  out.capabilities = r.U32();
  r.Copy(out.client_guid);
  const uint32_t context_offset = r.U32();
  const uint16_t context_count = r.U16();
  r.Skip(2);
  if (dialect_count == 0) return Malformed("NEGOTIATE offers no dialect");
  bool offers_311 = false;
  for (uint16_t i = 0; i < dialect_count && r.ok(); ++i) {
    out.dialects.push_back(r.U16());
    offers_311 = offers_311 || out.dialects.back() == dialect::kSmb311;
  }
  if (!r.ok()) return Malformed("NEGOTIATE dialects past the message");
  if (offers_311) {
    auto contexts = ReadNegotiateContexts(m, context_offset, context_count, r.pos());
    if (!contexts) return contexts.error();
    out.contexts = std::move(*contexts);
  }
  return out;
}

Result<NegotiateResponse> ParseNegotiateResponse(const Message& m) {
  if (Error e = CheckBody(m, Command::kNegotiate, true, 65); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  NegotiateResponse out;
  out.security_mode = r.U16();
  out.dialect = r.U16();
  const uint16_t context_count = r.U16();
  r.Copy(out.server_guid);
  out.capabilities = r.U32();
  out.max_transact_size = r.U32();
  out.max_read_size = r.U32();
  out.max_write_size = r.U32();
  r.Skip(16);  // SystemTime, ServerStartTime
  const uint16_t security_offset = r.U16();
  const uint16_t security_length = r.U16();
  const uint32_t context_offset = r.U32();
  const size_t fixed_end = kHeaderSize + 64;
  if (!Buffer(m, security_offset, security_length, fixed_end, out.security_buffer))
    return Malformed("NEGOTIATE security buffer outside the message");
  if (out.dialect == dialect::kSmb311) {
    auto contexts = ReadNegotiateContexts(m, context_offset, context_count, fixed_end);
    if (!contexts) return contexts.error();
    out.contexts = std::move(*contexts);
  }
  return out;
}

Result<SessionSetupRequest> ParseSessionSetupRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kSessionSetup, false, 25); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  SessionSetupRequest out;
  out.flags = r.U8();
  out.security_mode = r.U8();
  out.capabilities = r.U32();
  r.Skip(4);  // Channel
  const uint16_t offset = r.U16();
  const uint16_t length = r.U16();
  out.previous_session_id = r.U64();
  if (!Buffer(m, offset, length, kHeaderSize + 24, out.security_buffer))
    return Malformed("SESSION_SETUP security buffer outside the message");
  return out;
}

Result<SessionSetupResponse> ParseSessionSetupResponse(const Message& m) {
  if (Error e = CheckBody(m, Command::kSessionSetup, true, 9); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  SessionSetupResponse out;
  out.session_flags = r.U16();
  const uint16_t offset = r.U16();
  const uint16_t length = r.U16();
  if (!Buffer(m, offset, length, kHeaderSize + 8, out.security_buffer))
    return Malformed("SESSION_SETUP security buffer outside the message");
  return out;
}

Result<TreeConnectRequest> ParseTreeConnectRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kTreeConnect, false, 9); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  TreeConnectRequest out;
  out.flags = r.U16();
  const uint16_t offset = r.U16();
  const uint16_t length = r.U16();
  // 3.1.1 TREE_CONNECT_FLAG_EXTENSION_PRESENT: the path sits inside an extension.
  if (out.flags & 0x0004) return Unsupported("TREE_CONNECT with an extension");
  std::span<const uint8_t> path;
  if (!Buffer(m, offset, length, kHeaderSize + 8, path)) return Malformed("TREE_CONNECT path outside the message");
  auto utf8 = Utf16ToUtf8(path);
  if (!utf8) return utf8.error();
  out.path = std::move(*utf8);
  return out;
}

Result<TreeConnectResponse> ParseTreeConnectResponse(const Message& m) {
  if (Error e = CheckBody(m, Command::kTreeConnect, true, 16); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  TreeConnectResponse out;
  out.share_type = r.U8();
  r.Skip(1);
  out.share_flags = r.U32();
  out.capabilities = r.U32();
  out.maximal_access = r.U32();
  return out;
}

Result<std::vector<CreateContext>> ParseCreateContexts(std::span<const uint8_t> chain) {
  std::vector<CreateContext> out;
  size_t pos = 0;
  for (;;) {
    if (!Inside(chain, pos, 16)) return Malformed("create context header past its chain");
    const uint8_t* p = chain.data() + pos;
    const uint32_t next = Get32(p);
    const uint16_t name_offset = Get16(p + 4);
    const uint16_t name_length = Get16(p + 6);
    const uint16_t data_offset = Get16(p + 10);
    const uint32_t data_length = Get32(p + 12);
    std::span<const uint8_t> element = chain.subspan(pos);
    if (next != 0) {
      if (next % 8 || next < 16 || next > element.size()) return Malformed("create context Next misplaced");
      element = element.first(next);
    }
    if (name_length == 0 || name_offset < 16 || !Inside(element, name_offset, name_length))
      return Malformed("create context name outside its element");
    CreateContext c;
    c.name = std::string_view(reinterpret_cast<const char*>(element.data() + name_offset), name_length);
    if (data_length != 0) {
      if (data_offset < 16 || !Inside(element, data_offset, data_length))
        return Malformed("create context data outside its element");
      c.data = element.subspan(data_offset, data_length);
    }
    out.push_back(c);
    if (next == 0) return out;
    pos += next;
  }
}

namespace {

Result<std::vector<CreateContext>> ContextsAt(const Message& m, uint32_t offset, uint32_t length, size_t fixed_end,
                                              bool& lease) {
  std::span<const uint8_t> chain;
  if (!Buffer(m, offset, length, fixed_end, chain)) return Malformed("CREATE contexts outside the message");
  if (chain.empty()) return std::vector<CreateContext>{};
  if (offset % 8) return Malformed("CREATE contexts not 8-byte aligned");
  auto contexts = ParseCreateContexts(chain);
  if (!contexts) return contexts.error();
  for (const CreateContext& c : *contexts) lease = lease || c.name == "RqLs";
  return contexts;
}

}  // namespace

Result<CreateRequest> ParseCreateRequest(const Message& m) {
  if (Error e = CheckBody(m, Command::kCreate, false, 57); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  CreateRequest out;
  r.Skip(1);  // SecurityFlags
  out.oplock_level = r.U8();
  out.impersonation_level = r.U32();
  r.Skip(16);  // SmbCreateFlags, Reserved
  out.desired_access = r.U32();
  out.file_attributes = r.U32();
  out.share_access = r.U32();
  out.create_disposition = r.U32();
  out.create_options = r.U32();
  const uint16_t name_offset = r.U16();
  const uint16_t name_length = r.U16();
  const uint32_t contexts_offset = r.U32();
  const uint32_t contexts_length = r.U32();
  const size_t fixed_end = kHeaderSize + 56;
  std::span<const uint8_t> name;
  if (!Buffer(m, name_offset, name_length, fixed_end, name)) return Malformed("CREATE name outside the message");
  auto utf8 = Utf16ToUtf8(name);
  if (!utf8) return utf8.error();
  out.name = std::move(*utf8);
  auto contexts = ContextsAt(m, contexts_offset, contexts_length, fixed_end, out.lease_requested);
  if (!contexts) return contexts.error();
  out.contexts = std::move(*contexts);
  return out;
}

Result<CreateResponse> ParseCreateResponse(const Message& m) {
  if (Error e = CheckBody(m, Command::kCreate, true, 89); Failed(e)) return e;
  Reader r(m.bytes, kHeaderSize + 2);
  CreateResponse out;
  out.oplock_level = r.U8();
  out.flags = r.U8();
  out.create_action = r.U32();
  out.creation_time = r.U64();
  out.last_access_time = r.U64();
  out.last_write_time = r.U64();
  out.change_time = r.U64();
  out.allocation_size = r.U64();
  out.end_of_file = r.U64();
  out.file_attributes = r.U32();
  r.Skip(4);
  out.file_id.persistent = r.U64();
  out.file_id.volatile_id = r.U64();
  const uint32_t contexts_offset = r.U32();
  const uint32_t contexts_length = r.U32();
  auto contexts = ContextsAt(m, contexts_offset, contexts_length, kHeaderSize + 88, out.lease_granted);
  if (!contexts) return contexts.error();
  out.contexts = std::move(*contexts);
  return out;
}

}  // namespace wanopt::protocols::smb2
