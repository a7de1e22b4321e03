// The SMB2 parser (protocols/smb2/smb2.h) against real traffic: the streams of the
// Zeek captures in tests/fixtures (made by extract.py there), message by message
// against what tshark's dissector reads in them (fixtures/expected.txt), then the
// details the read-ahead glue will rely on; and the READ request builder.
#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <sstream>

#include "protocols/smb2/messages.h"
#include "protocols/smb2/tests/smb2_test_util.h"

using namespace wanopt::protocols::smb2;
using namespace wanopt::protocols::smb2::testing;

namespace {

std::string Hex(std::string_view bytes) {
  std::string out;
  char buf[3];
  for (unsigned char c : bytes) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

std::string Hex16(uint16_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%04x", v);
  return buf;
}

// The words extract.py writes for one message, from the parser's reading of it.
std::string Describe(const Message& m) {
  const Header& h = m.header;
  char buf[200];
  std::snprintf(buf, sizeof buf, "smb2 cmd=%u resp=%d mid=%llu", static_cast<unsigned>(h.command), h.is_response(),
                static_cast<unsigned long long>(h.message_id));
  std::string out = buf;
  if (h.is_response()) {
    std::snprintf(buf, sizeof buf, " status=0x%08x", h.status);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, " signed=%d async=%d charge=%u next=%u", h.is_signed(), h.is_async(),
                h.credit_charge, h.next_command);
  out += buf;
  const bool error = IsErrorResponse(m);
  switch (h.command) {
    case Command::kRead:
      if (!h.is_response()) {
        auto r = ParseReadRequest(m);
        REQUIRE(r);
        out += " rlen=" + std::to_string(r->length) + " roff=" + std::to_string(r->offset);
      } else if (h.status == status::kSuccess) {
        auto r = ParseReadResponse(m);
        REQUIRE(r);
        out += " dlen=" + std::to_string(r->data_length);
      }
      break;
    case Command::kWrite:
      if (!h.is_response()) {
        auto r = ParseWriteRequest(m);
        REQUIRE(r);
        out += " wlen=" + std::to_string(r->length) + " woff=" + std::to_string(r->offset);
      }
      break;
    case Command::kNegotiate:
      if (!h.is_response()) {
        auto r = ParseNegotiateRequest(m);
        REQUIRE(r);
        out += " dialects=";
        for (size_t i = 0; i < r->dialects.size(); ++i) {
          if (i) out += ',';
          out += Hex16(r->dialects[i]);
        }
      } else if (!error) {
        auto r = ParseNegotiateResponse(m);
        REQUIRE(r);
        out += " dialect=" + Hex16(r->dialect);
      }
      break;
    case Command::kTreeConnect:
      if (!h.is_response()) {
        auto r = ParseTreeConnectRequest(m);
        REQUIRE(r);
        out += " path=" + Hex(r->path);
      }
      break;
    case Command::kCreate:
      if (!h.is_response()) {
        auto r = ParseCreateRequest(m);
        REQUIRE(r);
        out += " name=" + Hex(r->name);
      }
      break;
    default:
      break;
  }
  return out;
}

// "FIXTURE FRAME words" for every message of a captured stream, every body parsed.
std::vector<std::string> DescribeStream(const std::string& name) {
  std::vector<std::string> out;
  const Bytes stream = Fixture(name);
  size_t frame_index = 0;
  for (auto payload : Frames(stream)) {
    const std::string prefix = name + " " + std::to_string(frame_index++) + " ";
    auto protocol = Classify(payload);
    REQUIRE_MESSAGE(protocol, prefix << protocol.error().reason);
    if (*protocol == Protocol::kSmb1) {
      out.push_back(prefix + "smb1");
      continue;
    }
    if (*protocol == Protocol::kTransform) {
      auto transform = ParseTransformHeader(payload);
      REQUIRE_MESSAGE(transform, prefix << transform.error().reason);
      CHECK(transform->original_message_size + kTransformHeaderSize == payload.size());
      out.push_back(prefix + "encrypted");
      continue;
    }
    REQUIRE(*protocol == Protocol::kSmb2);
    auto messages = SplitCompound(payload);
    REQUIRE_MESSAGE(messages, prefix << messages.error().reason);
    for (const Message& m : *messages) {
      Error e = ParseBody(m);
      CHECK_MESSAGE(e.reason.empty(), prefix << CommandName(m.header.command) << ": " << e.reason);
      out.push_back(prefix + Describe(m));
    }
  }
  return out;
}

std::map<std::string, std::vector<std::string>> Expected() {
  std::ifstream in(std::string(WANOPT_MODULE_FIXTURES) + "/expected.txt");
  REQUIRE(in.good());
  std::map<std::string, std::vector<std::string>> out;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out[line.substr(0, line.find(' '))].push_back(line);
  }
  return out;
}

// The messages of one stream's frame `index`.
std::vector<Message> MessagesOf(std::span<const uint8_t> payload) {
  auto messages = SplitCompound(payload);
  REQUIRE_MESSAGE(messages, messages.error().reason);
  return *messages;
}

}  // namespace

TEST_CASE("smb2: every captured message frames and parses as tshark reads it") {
  auto expected = Expected();
  size_t total = 0;
  for (const char* name : kStreams) {
    CAPTURE(name);
    auto got = DescribeStream(name);
    const auto& want = expected[name];
    CHECK(got.size() == want.size());
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) CHECK(got[i] == want[i]);
    total += got.size();
  }
  // 219 messages in the ten streams, as tshark counts them (extract.py).
  CHECK(total == 219);
}

TEST_CASE("smb2: READ requests and responses give the offsets, lengths and data tshark reports") {
  const Bytes c2s = Fixture("smb2readwrite.c2s.bin");
  const Bytes s2c = Fixture("smb2readwrite.s2c.bin");
  auto requests = Frames(c2s);
  auto responses = Frames(s2c);
  // CREATE (frame 0) then READ (frame 4) of the file it opened.
  auto created = ParseCreateResponse(MessagesOf(responses[0])[0]);
  REQUIRE(created);
  auto read = ParseReadRequest(MessagesOf(requests[4])[0]);
  REQUIRE(read);
  CHECK(read->length == 16);
  CHECK(read->offset == 0);
  CHECK(read->file_id == created->file_id);
  CHECK(read->padding == 0x50);
  CHECK(read->minimum_count == 0);
  CHECK(read->channel == 0);
  CHECK(read->channel_info.empty());
  auto data = ParseReadResponse(MessagesOf(responses[4])[0]);
  REQUIRE(data);
  CHECK(data->data_offset == 0x50);
  CHECK(data->data_length == 16);
  CHECK(data->data_remaining == 0);
  CHECK(std::string(data->data.begin(), data->data.end()) == std::string(16, 'A'));

  // smb2.pcap asks for 1024 bytes and gets the 92 the file has.
  const Bytes smb2_c2s = Fixture("smb2.c2s.bin");
  auto big_requests = Frames(smb2_c2s);
  const Bytes smb2_s2c = Fixture("smb2.s2c.bin");
  auto big_responses = Frames(smb2_s2c);
  auto read2 = ParseReadRequest(MessagesOf(big_requests[8])[0]);
  REQUIRE(read2);
  CHECK(read2->length == 1024);
  auto data2 = ParseReadResponse(MessagesOf(big_responses[8])[0]);
  REQUIRE(data2);
  CHECK(data2->data_length == 92);
  CHECK(data2->data.size() == 92);
  // The WRITEs of 64 KiB each: data inside, CreditCharge 0 on this 2.0.2 session.
  auto write = ParseWriteRequest(MessagesOf(big_requests[18])[0]);
  REQUIRE(write);
  CHECK(write->length == 65536);
  CHECK(write->offset == 65536);
  CHECK(write->data.size() == 65536);
  CHECK(write->data_offset == 0x70);
  auto written = ParseWriteResponse(MessagesOf(big_responses[17])[0]);
  REQUIRE(written);
  CHECK(written->count == 65536);
}

TEST_CASE("smb2: NEGOTIATE dialects, security modes and sizes") {
  // smb2.pcap: an SMB1 NEGOTIATE first, answered with SMB 2.0.2.
  const Bytes smb2_c2s = Fixture("smb2.c2s.bin");
  CHECK(*Classify(Frames(smb2_c2s)[0]) == Protocol::kSmb1);
  const Bytes smb2_s2c = Fixture("smb2.s2c.bin");
  auto n202 = ParseNegotiateResponse(MessagesOf(Frames(smb2_s2c)[0])[0]);
  REQUIRE(n202);
  CHECK(DialectName(n202->dialect) == "2.0.2");
  CHECK(n202->contexts.empty());
  CHECK(n202->max_read_size >= 65536);
  CHECK(!n202->security_buffer.empty());

  const Bytes c30 = Fixture("smb3.c2s.bin"), s30 = Fixture("smb3.s2c.bin");
  auto request30 = ParseNegotiateRequest(MessagesOf(Frames(c30)[0])[0]);
  REQUIRE(request30);
  CHECK(request30->dialects == std::vector<uint16_t>{dialect::kSmb30});
  CHECK(request30->contexts.empty());
  auto response30 = ParseNegotiateResponse(MessagesOf(Frames(s30)[0])[0]);
  REQUIRE(response30);
  CHECK(DialectName(response30->dialect) == "3.0");
  CHECK((response30->capabilities & capabilities::kEncryption));

  const Bytes c311 = Fixture("smb311.c2s.bin"), s311 = Fixture("smb311.s2c.bin");
  auto request311 = ParseNegotiateRequest(MessagesOf(Frames(c311)[0])[0]);
  REQUIRE(request311);
  CHECK(request311->dialects == std::vector<uint16_t>{dialect::kSmb311});
  REQUIRE(!request311->contexts.empty());
  CHECK(request311->contexts[0].type == 1);  // pre-authentication integrity
  auto response311 = ParseNegotiateResponse(MessagesOf(Frames(s311)[0])[0]);
  REQUIRE(response311);
  CHECK(DialectName(response311->dialect) == "3.1.1");
  REQUIRE(!response311->contexts.empty());
  bool preauth = false;
  for (const auto& c : response311->contexts) preauth = preauth || c.type == 1;
  CHECK(preauth);
  CHECK((response311->security_mode & security_mode::kSigningEnabled));
}

TEST_CASE("smb2: signing and encryption in the 3.x captures") {
  for (const char* name : {"smb311", "smb3"}) {
    CAPTURE(name);
    const Bytes c2s = Fixture(std::string(name) + ".c2s.bin"), s2c = Fixture(std::string(name) + ".s2c.bin");
    auto responses = Frames(s2c);
    // The final SESSION_SETUP response is signed (3.x always signs it) and says
    // whether the session encrypts.
    Message final_setup = MessagesOf(responses[2])[0];
    CHECK(final_setup.header.command == Command::kSessionSetup);
    CHECK(final_setup.header.status == status::kSuccess);
    CHECK(final_setup.header.is_signed());
    auto setup = ParseSessionSetupResponse(final_setup);
    REQUIRE(setup);
    // The first SESSION_SETUP response is MORE_PROCESSING_REQUIRED with its own body.
    Message first_setup = MessagesOf(responses[1])[0];
    CHECK(first_setup.header.status == status::kMoreProcessingRequired);
    CHECK(!IsErrorResponse(first_setup));
    CHECK(ParseSessionSetupResponse(first_setup));
    // Nothing before it is signed; what follows is encrypted for that session (smb3
    // also has signed TREE_CONNECTs to IPC$ in the clear).
    size_t signed_count = 0, encrypted = 0;
    for (auto stream : {std::span<const uint8_t>(c2s), std::span<const uint8_t>(s2c)}) {
      for (auto payload : Frames(stream)) {
        if (*Classify(payload) == Protocol::kTransform) {
          auto t = ParseTransformHeader(payload);
          REQUIRE(t);
          CHECK(t->session_id == final_setup.header.session_id);
          CHECK(t->flags == 1);
          ++encrypted;
          continue;
        }
        for (const Message& m : MessagesOf(payload)) signed_count += m.header.is_signed();
      }
    }
    if (std::string(name) == "smb311") {
      CHECK(signed_count == 1);
      CHECK(encrypted == 28);
    } else {
      CHECK(signed_count == 5);  // SESSION_SETUP response, two TREE_CONNECTs each way
      CHECK(encrypted == 44);
    }
  }
}

TEST_CASE("smb2: compound chains") {
  const Bytes c2s = Fixture("smb2-multiple-pdus.c2s.bin"), s2c = Fixture("smb2-multiple-pdus.s2c.bin");
  auto requests = MessagesOf(Frames(c2s)[0]);
  REQUIRE(requests.size() == 3);
  CHECK(requests[0].header.command == Command::kCreate);
  CHECK(requests[1].header.command == Command::kSetInfo);
  CHECK(requests[2].header.command == Command::kClose);
  CHECK(!requests[0].header.is_related());
  CHECK(requests[1].header.is_related());
  CHECK(requests[2].header.is_related());
  CHECK(requests[1].offset == 248);
  CHECK(requests[2].offset == 248 + 104);
  CHECK(requests[0].bytes.size() == 248);
  auto create = ParseCreateRequest(requests[0]);
  REQUIRE(create);
  CHECK(create->name == "testfile.txt");
  CHECK(create->lease_requested);
  CHECK(create->oplock_level == oplock::kLease);
  // Related operations name the previous CREATE's file with the all-ones FileId.
  auto set_info = ParseSetInfoRequest(requests[1]);
  REQUIRE(set_info);
  CHECK(set_info->file_id == FileId{~uint64_t{0}, ~uint64_t{0}});
  auto close = ParseCloseRequest(requests[2]);
  REQUIRE(close);

  auto responses = MessagesOf(Frames(s2c)[0]);
  REQUIRE(responses.size() == 3);
  auto created = ParseCreateResponse(responses[0]);
  REQUIRE(created);
  CHECK(created->lease_granted);
  CHECK(created->oplock_level == oplock::kLease);
  CHECK(ParseEmptyBody(responses[1]));
  auto closed = ParseCloseResponse(responses[2]);
  REQUIRE(closed);
}

TEST_CASE("smb2: STATUS_PENDING interim responses and error responses") {
  const Bytes s2c = Fixture("smb2readwrite.s2c.bin");
  auto frames = Frames(s2c);
  // CHANGE_NOTIFY: an interim response (ASYNC, STATUS_PENDING), later the final one.
  Message interim = MessagesOf(frames[8])[0];
  CHECK(interim.header.is_interim());
  CHECK(interim.header.async_id != 0);
  CHECK(IsErrorResponse(interim));
  auto body = ParseErrorResponse(interim);
  REQUIRE(body);
  CHECK(body->byte_count == 0);
  CHECK(body->data.size() == 1);
  Message final_notify = MessagesOf(frames[10])[0];
  CHECK(final_notify.header.async_id == interim.header.async_id);
  CHECK(final_notify.header.message_id == interim.header.message_id);
  CHECK(!final_notify.header.is_interim());
  // CREATE of a missing file: the error body, not a CREATE response.
  Message missing = MessagesOf(frames[12])[0];
  CHECK(StatusName(missing.header.status) == "STATUS_OBJECT_NAME_NOT_FOUND");
  CHECK(IsErrorResponse(missing));
  auto not_create = ParseCreateResponse(missing);
  REQUIRE(!not_create);
  CHECK(not_create.error().kind == Error::kUnsupported);
  CHECK(ParseErrorResponse(missing));
}

TEST_CASE("smb2: WriteReadRequest builds what the parser reads back") {
  ReadRequestParams p;
  p.message_id = 0x1122334455667788;
  p.credit_charge = CreditChargeFor(1024 * 1024);
  p.credit_request = 64;
  p.header_flags = flags::kSigned | flags::kServerToRedir | 0x20;  // only the priority bits survive
  p.session_id = 0x0000281cac000069;
  p.tree_id = 5;
  p.file_id = {0x0102030405060708, 0x1112131415161718};
  p.offset = 8 * 1024 * 1024;
  p.length = 1024 * 1024;
  p.minimum_count = 1;
  Bytes message = WriteReadRequest(p);
  CHECK(message.size() == 113);
  auto m = ParseMessage(message);
  REQUIRE(m);
  CHECK(m->header.command == Command::kRead);
  CHECK(m->header.message_id == p.message_id);
  CHECK(m->header.credit_charge == 16);
  CHECK(m->header.credit == 64);
  CHECK(m->header.flags == 0x20);
  CHECK(m->header.session_id == p.session_id);
  CHECK(m->header.tree_id == 5);
  auto read = ParseReadRequest(*m);
  REQUIRE(read);
  CHECK(read->file_id == p.file_id);
  CHECK(read->offset == p.offset);
  CHECK(read->length == p.length);
  CHECK(read->minimum_count == 1);
  CHECK(read->padding == 0x50);

  // Framed, it splits as one frame.
  Bytes framed(kFramePrefixSize);
  WriteFramePrefix(framed.data(), static_cast<uint32_t>(message.size()));
  framed.insert(framed.end(), message.begin(), message.end());
  FrameSplit split = SplitFrame(framed);
  REQUIRE(split.kind == FrameSplit::kFrame);
  CHECK(split.payload.size() == 113);

  // Patching changes those fields and nothing else.
  Bytes patched = message;
  CHECK(PatchMessageId(patched, 42));
  CHECK(PatchCredit(patched, 7));
  CHECK(PatchCreditCharge(patched, 3));
  auto again = ParseMessage(patched);
  REQUIRE(again);
  CHECK(again->header.message_id == 42);
  CHECK(again->header.credit == 7);
  CHECK(again->header.credit_charge == 3);
  size_t changed = 0;
  for (size_t i = 0; i < message.size(); ++i) changed += message[i] != patched[i];
  CHECK(changed <= 8 + 2 + 2);
  Bytes short_message(kHeaderSize - 1);
  CHECK(!PatchMessageId(short_message, 1));
  CHECK(!PatchCredit(short_message, 1));

  // A captured READ request rebuilt from its parsed fields is the same bytes.
  const Bytes readwrite_c2s = Fixture("smb2readwrite.c2s.bin");
  auto frames = Frames(readwrite_c2s);
  Message captured = MessagesOf(frames[4])[0];
  auto r = ParseReadRequest(captured);
  REQUIRE(r);
  ReadRequestParams q;
  q.message_id = captured.header.message_id;
  q.credit_charge = captured.header.credit_charge;
  q.credit_request = captured.header.credit;
  q.header_flags = captured.header.flags;
  q.session_id = captured.header.session_id;
  q.tree_id = captured.header.tree_id;
  q.file_id = r->file_id;
  q.offset = r->offset;
  q.length = r->length;
  q.minimum_count = r->minimum_count;
  q.read_flags = r->flags;
  q.padding = r->padding;
  Bytes rebuilt = WriteReadRequest(q);
  REQUIRE(rebuilt.size() <= captured.bytes.size());
  // Equal except the header's Reserved (ProcessId) and the trailing buffer byte.
  for (size_t i = 0; i < rebuilt.size() - 1; ++i) {
    if (i >= kReservedOffset && i < kReservedOffset + 4) continue;
    CHECK_MESSAGE(rebuilt[i] == captured.bytes[i], "byte " << i);
  }
}

TEST_CASE("smb2: names, credit charges and UTF-16") {
  CHECK(CreditChargeFor(0) == 1);
  CHECK(CreditChargeFor(1) == 1);
  CHECK(CreditChargeFor(65536) == 1);
  CHECK(CreditChargeFor(65537) == 2);
  CHECK(CreditChargeFor(8 * 1024 * 1024) == 128);
  CHECK(CreditChargeFor(~uint64_t{0}) == 0xFFFF);
  CHECK(DialectName(0x0202) == "2.0.2");
  CHECK(DialectName(0x0210) == "2.1");
  CHECK(DialectName(0x0300) == "3.0");
  CHECK(DialectName(0x0302) == "3.0.2");
  CHECK(DialectName(0x0311) == "3.1.1");
  CHECK(DialectName(0x0222).empty());
  CHECK(CommandName(Command::kRead) == "READ");
  CHECK(CommandName(Command::kOplockBreak) == "OPLOCK_BREAK");
  CHECK(StatusName(status::kEndOfFile) == "STATUS_END_OF_FILE");
  CHECK(StatusName(status::kPending) == "STATUS_PENDING");
  CHECK(StatusName(status::kAccessDenied) == "STATUS_ACCESS_DENIED");
  CHECK(StatusName(0x12345678).empty());
  CHECK(ProtocolName(Protocol::kTransform) == "encrypted");

  const uint8_t ascii[] = {'a', 0, 'b', 0};
  CHECK(*Utf16ToUtf8(ascii) == "ab");
  const uint8_t mixed[] = {0xe9, 0x00, 0xac, 0x20, 0x3d, 0xd8, 0x00, 0xde};  // é € 😀
  CHECK(*Utf16ToUtf8(mixed) == "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  const uint8_t lone[] = {0x3d, 0xd8, 'x', 0};  // an unpaired high surrogate
  CHECK(*Utf16ToUtf8(lone) == "\xef\xbf\xbdx");
  const uint8_t odd[] = {'a', 0, 'b'};
  CHECK(!Utf16ToUtf8(odd));
}
