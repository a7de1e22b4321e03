// The SMB2 parser (protocols/smb2/smb2.h) against hostile input: every truncation
// of every captured frame, lengths and offsets that point outside, NextCommand
// chains that loop, go backwards or leave the frame, frame lengths out of bounds,
// wrong StructureSizes, and random damage to real messages. Each must be an error
// (or "need more"), never a read outside the input (the ASan build runs these).
#include <doctest/doctest.h>

#include <random>

#include "protocols/smb2/messages.h"
#include "protocols/smb2/tests/smb2_test_util.h"

using namespace wanopt::protocols::smb2;
using namespace wanopt::protocols::smb2::testing;

namespace {

// Everything the parser offers, on one payload; returns how many messages parsed.
size_t ParseAll(std::span<const uint8_t> payload) {
  auto protocol = Classify(payload);
  if (!protocol) return 0;
  if (*protocol == Protocol::kTransform) (void)ParseTransformHeader(payload);
  if (*protocol != Protocol::kSmb2) return 0;
  auto messages = SplitCompound(payload);
  if (!messages) return 0;
  size_t parsed = 0;
  for (const Message& m : *messages) {
    CHECK(InsideOf(m.bytes, payload));
    CHECK(m.bytes.size() >= kHeaderSize);
    parsed += ParseBody(m).reason.empty();
  }
  return parsed;
}

Bytes Frame(const Bytes& payload) {
  Bytes out(kFramePrefixSize);
  WriteFramePrefix(out.data(), static_cast<uint32_t>(payload.size()));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

template <typename R>
bool Malformed(const R& result) {
  return !result && result.error().kind == Error::kMalformed;
}

}  // namespace

TEST_CASE("smb2: every truncation of every captured frame is need-more or an error") {
  size_t frames = 0, truncations = 0;
  for (const char* name : kStreams) {
    CAPTURE(name);
    const Bytes stream = Fixture(name);
    for (auto payload : Frames(stream)) {
      ++frames;
      const Bytes framed = Frame(Bytes(payload.begin(), payload.end()));
      // The large WRITEs: every byte of the headers, then every 97th.
      for (size_t cut = 0; cut < framed.size(); cut += cut < 512 ? 1 : 97) {
        ++truncations;
        FrameSplit split = SplitFrame(std::span<const uint8_t>(framed).first(cut));
        REQUIRE(split.kind == FrameSplit::kNeedMore);
        CHECK(split.needed > cut);
        CHECK(split.needed <= framed.size());
        // The cut payload as if it were a whole one: no read outside it. A header
        // cut short never parses.
        auto part = payload.first(cut < kFramePrefixSize ? 0 : cut - kFramePrefixSize);
        Bytes copy(part.begin(), part.end());  // exact-size heap copy: ASan sees overreads
        ParseAll(copy);
        if (copy.size() < kHeaderSize) CHECK(!ParseMessage(copy));
      }
    }
  }
  CHECK(frames == 207);  // the frames extract.py lists
  CHECK(truncations > 30000);
}

TEST_CASE("smb2: frame prefixes out of bounds") {
  const uint8_t not_zero[] = {0x01};
  CHECK(SplitFrame(not_zero).kind == FrameSplit::kMalformed);  // after one byte
  const uint8_t keepalive[] = {0x85, 0, 0, 0};
  CHECK(SplitFrame(keepalive).kind == FrameSplit::kMalformed);  // direct TCP: no NetBIOS
  FrameSplit nb = SplitFrame(keepalive, {.netbios_session = true});
  REQUIRE(nb.kind == FrameSplit::kFrame);
  CHECK(nb.type == FrameType::kKeepalive);
  CHECK(nb.payload.empty());
  const uint8_t session_request[] = {0x81, 0, 0, 2, 0x20, 0x20};
  nb = SplitFrame(session_request, {.netbios_session = true});
  REQUIRE(nb.kind == FrameSplit::kFrame);
  CHECK(nb.type == FrameType::kSessionRequest);
  CHECK(nb.bytes.size() == 6);
  const uint8_t positive[] = {0x82, 0, 0, 0};
  CHECK(SplitFrame(positive, {.netbios_session = true}).type == FrameType::kPositiveResponse);
  const uint8_t unknown_nbss[] = {0x84, 0, 0, 0};
  CHECK(SplitFrame(unknown_nbss, {.netbios_session = true}).kind == FrameSplit::kMalformed);

  const uint8_t empty[] = {0, 0, 0, 0};
  CHECK(SplitFrame(empty).kind == FrameSplit::kMalformed);
  const uint8_t huge[] = {0, 0xFF, 0xFF, 0xFF};  // 16 MiB - 1: fits the default limit
  FrameSplit s = SplitFrame(huge);
  CHECK(s.kind == FrameSplit::kNeedMore);
  CHECK(s.needed == 4 + 0xFFFFFF);
  CHECK(SplitFrame(huge, {.max_length = 8 * 1024 * 1024 + 1024}).kind == FrameSplit::kMalformed);
  const uint8_t two[] = {0, 0, 0, 2, 0xFE, 'S'};
  s = SplitFrame(std::span<const uint8_t>(two).first(3));
  CHECK(s.kind == FrameSplit::kNeedMore);
  CHECK(s.needed == 4);
  s = SplitFrame(two);
  REQUIRE(s.kind == FrameSplit::kFrame);
  CHECK(!Classify(s.payload));  // two bytes are not a protocol id
  const uint8_t other[] = {0xFE, 'S', 'M', 'C'};
  CHECK(!Classify(other));
  const uint8_t smb0[] = {0xFB, 'S', 'M', 'B'};
  CHECK(!Classify(smb0));
}

TEST_CASE("smb2: NextCommand chains that loop, misalign, go backwards or leave the frame") {
  const Bytes close = Writer().U16(24).U16(0).U32(0).U64(1).U64(2).b;
  auto chain = [&](uint32_t next, size_t extra) {
    Bytes first = MakeMessage(Command::kClose, false, close, 0, next);
    first.resize(first.size() + extra);
    Bytes second = MakeMessage(Command::kClose, false, close);
    first.insert(first.end(), second.begin(), second.end());
    return first;
  };
  const uint32_t length = kHeaderSize + 24;  // 88: a multiple of 8
  auto ok = SplitCompound(chain(length, 0));
  REQUIRE(ok);
  CHECK(ok->size() == 2);
  CHECK(ok->at(1).offset == length);
  CHECK(Malformed(SplitCompound(chain(length + 4, 4))));     // misaligned
  CHECK(Malformed(SplitCompound(chain(8, 0))));              // inside its own header
  CHECK(Malformed(SplitCompound(chain(0xFFFFFFF8, 0))));     // far past the end
  CHECK(Malformed(SplitCompound(chain(length + 64, 0))));    // the next header cut short
  // "Backwards": every NextCommand is forward from its own header, so a loop must
  // be a chain without end, which the frame's size and kMaxCompound stop.
  Bytes endless;
  for (size_t i = 0; i < kMaxCompound + 1; ++i) {
    Bytes m = MakeMessage(Command::kClose, false, close, 0, length);
    endless.insert(endless.end(), m.begin(), m.end());
  }
  CHECK(Malformed(SplitCompound(endless)));  // the last one points past the frame
  Bytes last = MakeMessage(Command::kClose, false, close);
  endless.insert(endless.end(), last.begin(), last.end());
  auto too_long = SplitCompound(endless);
  CHECK(Malformed(too_long));
  CHECK(Malformed(ParseMessage(chain(length, 0))));  // one message only: NextCommand 0
}

TEST_CASE("smb2: offsets and lengths that point outside the message") {
  // READ response: DataOffset into the header, past the end, DataLength past the end.
  auto read_response = [](uint8_t offset, uint32_t length, size_t data) {
    Bytes body = Writer().U16(17).U8(offset).U8(0).U32(length).U32(0).U32(0).Zeros(data).b;
    return MakeMessage(Command::kRead, true, body);
  };
  auto parse_read = [](const Bytes& b) { return ParseReadResponse(*ParseMessage(b)); };
  CHECK(parse_read(read_response(0x50, 16, 16)));
  CHECK(Malformed(parse_read(read_response(0x50, 17, 16))));
  CHECK(Malformed(parse_read(read_response(0x10, 16, 16))));  // the header
  CHECK(Malformed(parse_read(read_response(0xFF, 1, 16))));
  CHECK(Malformed(parse_read(read_response(0x50, 0xFFFFFFFF, 16))));
  CHECK(parse_read(read_response(0xFF, 0, 0)));  // nothing read: the offset is moot

  // WRITE request: data past the end.
  Bytes write = Writer().U16(49).U16(0x70).U32(100).U64(0).U64(1).U64(2).U32(0).U32(0).U16(0).U16(0).U32(0)
                    .Zeros(99).b;
  CHECK(Malformed(ParseWriteRequest(*ParseMessage(MakeMessage(Command::kWrite, false, write)))));
  write.push_back(0);
  CHECK(ParseWriteRequest(*ParseMessage(MakeMessage(Command::kWrite, false, write))));

  // CREATE request: name past the end, an odd name, contexts past the end or looping.
  auto create = [](uint16_t name_offset, uint16_t name_length, uint32_t ctx_offset, uint32_t ctx_length,
                   const Bytes& tail) {
    Bytes body = Writer().U16(57).U8(0).U8(0).U32(2).Zeros(16).U32(0x80).U32(0).U32(7).U32(1).U32(0)
                     .U16(name_offset).U16(name_length).U32(ctx_offset).U32(ctx_length).Append(tail).b;
    return MakeMessage(Command::kCreate, false, body);
  };
  auto parse_create = [](const Bytes& b) { return ParseCreateRequest(*ParseMessage(b)); };
  const Bytes name = Writer().U16('a').U16('b').Zeros(4).b;  // "ab", padded to 8
  CHECK(parse_create(create(120, 4, 0, 0, name)));
  CHECK(Malformed(parse_create(create(120, 10, 0, 0, name))));
  CHECK(Malformed(parse_create(create(120, 3, 0, 0, name))));  // odd UTF-16
  CHECK(Malformed(parse_create(create(60, 4, 0, 0, name))));   // inside the header
  // One context "RqLs" with 4 bytes of data, then the same with Next pointing to itself
  // (0 is "last", so a loop must be Next < 16), misaligned, past the chain.
  auto context = [](uint32_t next, uint16_t name_offset, uint16_t data_offset, uint32_t data_length) {
    return Writer().U32(next).U16(name_offset).U16(4).U16(0).U16(data_offset).U32(data_length)
        .U8('R').U8('q').U8('L').U8('s').Zeros(4).U32(0xAABBCCDD).Zeros(4).b;
  };
  Bytes tail = name;
  const Bytes lease_context = context(0, 16, 24, 4);
  tail.insert(tail.end(), lease_context.begin(), lease_context.end());
  auto good = parse_create(create(120, 4, 128, 32, tail));
  REQUIRE(good);
  CHECK(good->lease_requested);
  CHECK(good->name == "ab");
  auto with = [&](const Bytes& ctx, uint32_t length) {
    Bytes t = name;
    t.insert(t.end(), ctx.begin(), ctx.end());
    return parse_create(create(120, 4, 128, length, t));
  };
  CHECK(Malformed(with(context(8, 16, 24, 4), 32)));    // Next inside its own header
  CHECK(Malformed(with(context(20, 16, 24, 4), 32)));   // misaligned
  CHECK(Malformed(with(context(40, 16, 24, 4), 32)));   // past the chain
  CHECK(Malformed(with(context(0, 16, 24, 40), 32)));   // data past the element
  CHECK(Malformed(with(context(0, 4, 24, 4), 32)));     // name inside the context header
  CHECK(Malformed(with(context(0, 16, 24, 4), 40)));    // chain past the message
  CHECK(Malformed(with(context(0, 16, 24, 4), 16)));    // chain cut inside the context
  CHECK(Malformed(parse_create(create(120, 4, 124, 32, tail))));  // chain misaligned

  // NEGOTIATE request: more dialects than bytes; 3.1.1 contexts past the end.
  Bytes negotiate = Writer().U16(36).U16(1000).U16(1).U16(0).U32(0).Zeros(16).U32(0).U16(0).U16(0).U16(0x311).b;
  CHECK(Malformed(ParseNegotiateRequest(*ParseMessage(MakeMessage(Command::kNegotiate, false, negotiate)))));
  negotiate = Writer().U16(36).U16(1).U16(1).U16(0).U32(0).Zeros(16).U32(104).U16(3).U16(0).U16(0x311).Zeros(2)
                  .U16(1).U16(4).U32(0).U32(0).b;
  CHECK(Malformed(ParseNegotiateRequest(*ParseMessage(MakeMessage(Command::kNegotiate, false, negotiate)))));
  negotiate = Writer().U16(36).U16(0).U16(1).U16(0).U32(0).Zeros(16).U32(0).U16(0).U16(0).b;
  CHECK(Malformed(ParseNegotiateRequest(*ParseMessage(MakeMessage(Command::kNegotiate, false, negotiate)))));

  // SESSION_SETUP response: security buffer past the end.
  Bytes setup = Writer().U16(9).U16(0).U16(72).U16(9).Zeros(8).b;
  CHECK(Malformed(ParseSessionSetupResponse(*ParseMessage(MakeMessage(Command::kSessionSetup, true, setup)))));
  // TREE_CONNECT request: path past the end.
  Bytes tree = Writer().U16(9).U16(0).U16(72).U16(0xFFFF).U16('x').b;
  CHECK(Malformed(ParseTreeConnectRequest(*ParseMessage(MakeMessage(Command::kTreeConnect, false, tree)))));
  // LOCK: more locks than bytes, none at all.
  Bytes lock = Writer().U16(48).U16(3).U32(0).U64(1).U64(2).Zeros(48).b;
  CHECK(Malformed(ParseLockRequest(*ParseMessage(MakeMessage(Command::kLock, false, lock)))));
  lock = Writer().U16(48).U16(0).U32(0).U64(1).U64(2).Zeros(24).b;
  CHECK(Malformed(ParseLockRequest(*ParseMessage(MakeMessage(Command::kLock, false, lock)))));
  lock = Writer().U16(48).U16(2).U32(0).U64(1).U64(2).Zeros(48).b;
  CHECK(ParseLockRequest(*ParseMessage(MakeMessage(Command::kLock, false, lock))));
  // SET_INFO: buffer past the end; an end-of-file change read from a good one.
  Bytes set_info = Writer().U16(33).U8(1).U8(20).U32(9).U16(96).U16(0).U32(0).U64(1).U64(2).U64(12345).b;
  CHECK(Malformed(ParseSetInfoRequest(*ParseMessage(MakeMessage(Command::kSetInfo, false, set_info)))));
  set_info = Writer().U16(33).U8(1).U8(20).U32(8).U16(96).U16(0).U32(0).U64(1).U64(2).U64(12345).b;
  const Bytes set_info_message = MakeMessage(Command::kSetInfo, false, set_info);  // the spans point into it
  auto truncate = ParseSetInfoRequest(*ParseMessage(set_info_message));
  REQUIRE(truncate);
  CHECK(truncate->changes_size());
  CHECK(truncate->new_end_of_file() == 12345u);
  // An error response whose ByteCount runs past the end.
  Bytes error = Writer().U16(9).U8(0).U8(0).U32(100).Zeros(8).b;
  CHECK(Malformed(ParseErrorResponse(*ParseMessage(MakeMessage(Command::kRead, true, error, status::kEndOfFile)))));
  // A transform header claiming more than the frame holds.
  Bytes transform = Writer().U8(0xFD).U8('S').U8('M').U8('B').Zeros(32).U32(100).U16(0).U16(1).U64(9).Zeros(99).b;
  CHECK(Malformed(ParseTransformHeader(transform)));
  transform.push_back(0);
  CHECK(ParseTransformHeader(transform));
}

TEST_CASE("smb2: wrong StructureSizes, commands and directions") {
  Bytes read = Writer().U16(48).Zeros(47).b;
  CHECK(Malformed(ParseReadRequest(*ParseMessage(MakeMessage(Command::kRead, false, read)))));
  read = Writer().U16(49).Zeros(45).b;  // a byte short of the fixed part
  CHECK(Malformed(ParseReadRequest(*ParseMessage(MakeMessage(Command::kRead, false, read)))));
  read = Writer().U16(49).Zeros(47).b;
  const Bytes read_message = MakeMessage(Command::kRead, false, read);
  Message m = *ParseMessage(read_message);
  CHECK(ParseReadRequest(m));
  CHECK(ParseWriteRequest(m).error().kind == Error::kUnsupported);
  CHECK(ParseReadResponse(m).error().kind == Error::kUnsupported);
  CHECK(ParseEmptyBody(m).error().kind == Error::kUnsupported);
  CHECK(Malformed(ParseMessage(Bytes(kHeaderSize, 0))));
  Bytes header_only = MakeMessage(Command::kRead, false, {});
  CHECK(Malformed(ParseReadRequest(*ParseMessage(header_only))));
  header_only[kStructureSizeOffset] = 65;
  CHECK(Malformed(ParseMessage(header_only)));
  header_only[kStructureSizeOffset] = 64;
  header_only[kCommandOffset] = 0x13;
  CHECK(Malformed(ParseMessage(header_only)));
  // OPLOCK_BREAK: 44 only from the server; 36 either way; anything else is malformed.
  Bytes lease = Writer().U16(44).Zeros(42).b;
  CHECK(Malformed(ParseOplockBreak(*ParseMessage(MakeMessage(Command::kOplockBreak, false, lease)))));
  auto notification = ParseOplockBreak(*ParseMessage(MakeMessage(Command::kOplockBreak, true, lease)));
  REQUIRE(notification);
  CHECK(notification->lease);
  Bytes ack = Writer().U16(36).Zeros(34).b;
  CHECK(ParseOplockBreak(*ParseMessage(MakeMessage(Command::kOplockBreak, false, ack))));
  Bytes oplock = Writer().U16(24).U8(oplock::kLevelII).Zeros(5).U64(3).U64(4).b;
  auto oplock_break = ParseOplockBreak(*ParseMessage(MakeMessage(Command::kOplockBreak, true, oplock)));
  REQUIRE(oplock_break);
  CHECK(!oplock_break->lease);
  CHECK(oplock_break->file_id == FileId{3, 4});
  Bytes odd = Writer().U16(30).Zeros(28).b;
  CHECK(Malformed(ParseOplockBreak(*ParseMessage(MakeMessage(Command::kOplockBreak, true, odd)))));
  // An error status with the command's own body size is read as that body.
  Bytes eof = Writer().U16(9).U8(0).U8(0).U32(0).U8(0).b;
  const Bytes eof_bytes = MakeMessage(Command::kRead, true, eof, status::kEndOfFile);
  Message eof_message = *ParseMessage(eof_bytes);
  CHECK(IsErrorResponse(eof_message));
  CHECK(ParseReadResponse(eof_message).error().kind == Error::kUnsupported);
  CHECK(ParseErrorResponse(eof_message));
}

TEST_CASE("smb2: randomly damaged captured messages") {
  std::mt19937 random(20261202);
  size_t runs = 0, parsed = 0;
  for (const char* name : kStreams) {
    const Bytes stream = Fixture(name);
    for (auto payload : Frames(stream)) {
      if (payload.size() > 4096) continue;  // the big WRITEs add nothing here
      for (int i = 0; i < 40; ++i) {
        Bytes copy(payload.begin(), payload.end());
        const int damage = 1 + static_cast<int>(random() % 4);
        for (int d = 0; d < damage; ++d) {
          size_t at = random() % copy.size();
          // Mostly in the headers and fixed parts, where the lengths are.
          if (random() % 2) at %= std::min<size_t>(copy.size(), 128);
          copy[at] = static_cast<uint8_t>(random() % 3 == 0 ? 0xFF : random());
        }
        if (random() % 4 == 0) copy.resize(random() % (copy.size() + 1));
        parsed += ParseAll(copy);
        ++runs;
      }
    }
  }
  CHECK(runs > 5000);
  CHECK(parsed > 0);  // some damage is harmless: the check runs real parses
}
