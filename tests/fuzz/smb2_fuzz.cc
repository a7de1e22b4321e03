// libFuzzer target for protocols/smb2 (smb2.h, messages.h): frame splitting (direct
// TCP and NetBIOS), protocol classification, the transform header, compound chains,
// every body parser, create-context chains, UTF-16, and the READ request builder
// and header patches. The input is one direction of a TCP stream (the seeds are the
// captured streams in protocols/smb2/tests/fixtures), and also, whole, one message.
//
// Besides "no crash, no sanitizer report", it checks the promises the glue relies on:
// the splitter never claims more bytes than it was given and agrees with itself one
// byte short; a chain's messages tile the frame; every span a parser returns lies
// inside its message; a READ request rebuilt from what the parser read parses back
// to the same fields; a patch changes its field and nothing else.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "protocols/smb2/messages.h"
#include "protocols/smb2/smb2.h"

using namespace wanopt::protocols::smb2;

namespace {

#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) std::abort(); \
  } while (0)

void Inside(std::span<const uint8_t> inner, std::span<const uint8_t> outer) {
  FUZZ_CHECK(inner.empty() ||
             (inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size()));
}

void CheckContexts(const std::vector<CreateContext>& contexts, std::span<const uint8_t> outer) {
  for (const CreateContext& c : contexts) {
    Inside(c.data, outer);
    Inside({reinterpret_cast<const uint8_t*>(c.name.data()), c.name.size()}, outer);
    FUZZ_CHECK(!c.name.empty());
  }
}

void CheckReadRoundTrip(const Message& m, const ReadRequest& r) {
  ReadRequestParams p;
  p.message_id = m.header.message_id;
  p.credit_charge = m.header.credit_charge;
  p.credit_request = m.header.credit;
  p.header_flags = m.header.flags;
  p.session_id = m.header.session_id;
  p.tree_id = m.header.tree_id;
  p.file_id = r.file_id;
  p.offset = r.offset;
  p.length = r.length;
  p.minimum_count = r.minimum_count;
  p.read_flags = r.flags;
  p.padding = r.padding;
  std::vector<uint8_t> built = WriteReadRequest(p);
  auto again = ParseMessage(built);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->header.message_id == p.message_id && again->header.credit == p.credit_request &&
             again->header.credit_charge == p.credit_charge && again->header.session_id == p.session_id);
  FUZZ_CHECK(!again->header.is_signed() && !again->header.is_response() && !again->header.is_async());
  if (!m.header.is_async()) FUZZ_CHECK(again->header.tree_id == p.tree_id);
  auto read = ParseReadRequest(*again);
  FUZZ_CHECK(read.ok());
  FUZZ_CHECK(read->file_id == r.file_id && read->offset == r.offset && read->length == r.length &&
             read->minimum_count == r.minimum_count && read->flags == r.flags && read->padding == r.padding);
}

void CheckPatches(const Message& m) {
  std::vector<uint8_t> copy(m.bytes.begin(), m.bytes.end());
  const uint64_t id = ~m.header.message_id;
  FUZZ_CHECK(PatchMessageId(copy, id));
  FUZZ_CHECK(PatchCredit(copy, static_cast<uint16_t>(m.header.credit + 1)));
  FUZZ_CHECK(PatchCreditCharge(copy, static_cast<uint16_t>(m.header.credit_charge ^ 0xFF)));
  auto h = ParseHeader(copy);
  FUZZ_CHECK(h.ok());
  FUZZ_CHECK(h->message_id == id && h->credit == static_cast<uint16_t>(m.header.credit + 1) &&
             h->credit_charge == static_cast<uint16_t>(m.header.credit_charge ^ 0xFF));
  FUZZ_CHECK(h->command == m.header.command && h->flags == m.header.flags && h->status == m.header.status &&
             h->session_id == m.header.session_id && h->next_command == m.header.next_command);
  FUZZ_CHECK(std::equal(copy.begin() + kHeaderSize, copy.end(), m.bytes.begin() + kHeaderSize));
}

// Every parser that applies to the message.
void ParseBodies(const Message& m) {
  const auto& b = m.bytes;
  const bool response = m.header.is_response();
  if (response && IsErrorResponse(m)) {
    auto e = ParseErrorResponse(m);
    if (e) Inside(e->data, b);
  }
  switch (m.header.command) {
    case Command::kNegotiate:
      if (auto r = ParseNegotiateRequest(m)) {
        for (const auto& c : r->contexts) Inside(c.data, b);
        FUZZ_CHECK(!r->dialects.empty());
      }
      if (auto r = ParseNegotiateResponse(m)) {
        Inside(r->security_buffer, b);
        for (const auto& c : r->contexts) Inside(c.data, b);
        (void)DialectName(r->dialect);
      }
      break;
    case Command::kSessionSetup:
      if (auto r = ParseSessionSetupRequest(m)) Inside(r->security_buffer, b);
      if (auto r = ParseSessionSetupResponse(m)) Inside(r->security_buffer, b);
      break;
    case Command::kTreeConnect:
      (void)ParseTreeConnectRequest(m);
      (void)ParseTreeConnectResponse(m);
      break;
    case Command::kCreate:
      if (auto r = ParseCreateRequest(m)) CheckContexts(r->contexts, b);
      if (auto r = ParseCreateResponse(m)) CheckContexts(r->contexts, b);
      break;
    case Command::kClose:
      (void)ParseCloseRequest(m);
      (void)ParseCloseResponse(m);
      break;
    case Command::kRead:
      if (auto r = ParseReadRequest(m)) {
        Inside(r->channel_info, b);
        CheckReadRoundTrip(m, *r);
      }
      if (auto r = ParseReadResponse(m)) {
        Inside(r->data, b);
        FUZZ_CHECK(r->data.size() == r->data_length);
        FUZZ_CHECK(r->data.empty() || r->data.data() >= b.data() + kHeaderSize + 16);
      }
      break;
    case Command::kWrite:
      if (auto r = ParseWriteRequest(m)) {
        Inside(r->data, b);
        FUZZ_CHECK(r->data.size() == r->length);
      }
      (void)ParseWriteResponse(m);
      break;
    case Command::kFlush:
      (void)ParseFlushRequest(m);
      break;
    case Command::kLock:
      if (auto r = ParseLockRequest(m)) FUZZ_CHECK(r->lock_count > 0);
      break;
    case Command::kSetInfo:
      if (auto r = ParseSetInfoRequest(m)) {
        Inside(r->buffer, b);
        (void)r->new_end_of_file();
      }
      break;
    case Command::kOplockBreak:
      (void)ParseOplockBreak(m);
      break;
    default:
      break;
  }
  (void)ParseEmptyBody(m);
  (void)CommandName(m.header.command);
  (void)StatusName(m.header.status);
}

void ParsePayload(std::span<const uint8_t> payload) {
  auto protocol = Classify(payload);
  if (!protocol) return;
  (void)ProtocolName(*protocol);
  if (*protocol == Protocol::kTransform) {
    if (auto t = ParseTransformHeader(payload)) FUZZ_CHECK(t->original_message_size <= payload.size());
    return;
  }
  if (*protocol != Protocol::kSmb2) return;
  auto messages = SplitCompound(payload);
  if (!messages) return;
  FUZZ_CHECK(!messages->empty() && messages->size() <= kMaxCompound);
  size_t expected_offset = 0;
  for (const Message& m : *messages) {
    // The chain tiles the frame: each message starts where the previous one ended.
    FUZZ_CHECK(m.offset == expected_offset && m.offset % 8 == 0);
    FUZZ_CHECK(m.bytes.data() == payload.data() + m.offset && m.bytes.size() >= kHeaderSize);
    expected_offset += m.bytes.size();
    ParseBodies(m);
    CheckPatches(m);
  }
  FUZZ_CHECK(expected_offset == payload.size());
}

void WalkStream(std::span<const uint8_t> stream, const FrameLimits& limits) {
  size_t pos = 0;
  while (pos < stream.size()) {
    auto rest = stream.subspan(pos);
    FrameSplit split = SplitFrame(rest, limits);
    if (split.kind == FrameSplit::kMalformed) return;
    if (split.kind == FrameSplit::kNeedMore) {
      FUZZ_CHECK(split.needed > rest.size());
      return;
    }
    const size_t length = split.bytes.size();
    FUZZ_CHECK(length >= kFramePrefixSize && length <= rest.size() && split.bytes.data() == rest.data());
    FUZZ_CHECK(split.payload.size() + kFramePrefixSize == length && split.payload.size() <= limits.max_length);
    // The splitter agrees with itself: one byte short of the frame is "need more".
    FrameSplit shorter = SplitFrame(rest.first(length - 1), limits);
    FUZZ_CHECK(shorter.kind == FrameSplit::kNeedMore && shorter.needed <= length);
    if (split.type == FrameType::kMessage) ParsePayload(split.payload);
    pos += length;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> input(data, size);
  WalkStream(input, {});
  WalkStream(input, {.max_length = 4096, .netbios_session = true});
  // The whole input as one frame's payload, and as a create-context chain and a name.
  ParsePayload(input);
  if (auto contexts = ParseCreateContexts(input)) CheckContexts(*contexts, input);
  if (auto text = Utf16ToUtf8(input)) FUZZ_CHECK(text->size() <= size / 2 * 3);
  // The builder from arbitrary fields.
  if (size >= 40) {
    ReadRequest r;
    std::memcpy(&r.offset, data, 8);
    std::memcpy(&r.length, data + 8, 4);
    std::memcpy(&r.file_id.persistent, data + 12, 8);
    std::memcpy(&r.file_id.volatile_id, data + 20, 8);
    std::memcpy(&r.minimum_count, data + 28, 4);
    r.flags = data[32];
    r.padding = data[33];
    Header h;
    std::memcpy(&h.message_id, data + 34, 6);
    h.credit_charge = CreditChargeFor(r.length);
    // 1 per 64 KiB started; a u32 length past 0xFFFF * 64 KiB saturates the u16.
    FUZZ_CHECK(h.credit_charge >= 1 && (uint64_t{h.credit_charge} * 65536 >= r.length || h.credit_charge == 0xFFFF));
    FUZZ_CHECK(r.length == 0 || uint64_t{h.credit_charge - 1u} * 65536 < r.length);
    Message m{h, 0, {}};
    CheckReadRoundTrip(m, r);
  }
  return 0;
}
