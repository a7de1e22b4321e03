// RTS PDUs of RPC over HTTP v2 (protocols/common/dcerpc/rts.h): PDUs written byte by
// byte after MS-RPCH 2.2.4's layouts (independently of BuildRts), every PDU shape
// classified, cookies for pairing, builders round-tripping, and hostile input:
// every truncation, absurd counts and sizes, unknown commands.
#include <doctest/doctest.h>

#include <vector>

#include "protocols/common/dcerpc/rts.h"
#include "protocols/common/dcerpc/tests/pdu_builder.h"

using namespace wanopt::protocols::dcerpc;
using namespace wanopt::protocols::dcerpc::testing;

namespace {

const Uuid kVc = *Uuid::Parse("11111111-2222-3333-4444-555555555555");
const Uuid kIn = *Uuid::Parse("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
const Uuid kOut = *Uuid::Parse("01234567-89ab-cdef-0123-456789abcdef");
const Uuid kAssoc = *Uuid::Parse("fedcba98-7654-3210-fedc-ba9876543210");
const Uuid kNext = *Uuid::Parse("00000000-0000-0000-0000-000000000042");

// The RTS header as MS-RPCH 2.2.3.6.1 lays it out; frag_length patched by Done().
struct Hand {
  Writer w{true};
  explicit Hand(uint16_t flags, uint16_t count) {
    // Byte by byte: GCC 12 misreads an insert into the empty vector as an overflow.
    for (uint8_t b : {5, 0, 20, 3, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) w.U8(b);
    w.U16(flags);
    w.U16(count);
  }
  Hand& Cmd(uint32_t type, uint32_t value) { return w.U32(type), w.U32(value), *this; }
  Hand& CookieCmd(uint32_t type, const Uuid& u) { return w.U32(type), w.Id(u), *this; }
  Bytes Done() {
    w.b[8] = static_cast<uint8_t>(w.b.size());
    w.b[9] = static_cast<uint8_t>(w.b.size() >> 8);
    return w.b;
  }
};

RtsPdu MustParseRts(const Bytes& b) {
  auto r = ParseRts(b);
  REQUIRE_MESSAGE(r.ok(), r.error().reason);
  return *r;
}

}  // namespace

TEST_CASE("rts: CONN/A1 written by hand is 76 bytes, classified, and names its two cookies") {
  Bytes a1 = Hand(rts_flags::kNone, 4).Cmd(6, 1).CookieCmd(3, kVc).CookieCmd(3, kOut).Cmd(0, 65536).Done();
  CHECK(a1.size() == 76);  // what impacket sends on the OUT channel (shared/brief/peers.md)
  RtsPdu pdu = MustParseRts(a1);
  REQUIRE(pdu.commands.size() == 4);
  CHECK(pdu.commands[0].type == RtsCommandType::kVersion);
  CHECK(pdu.commands[3].value == 65536);
  CHECK(pdu.commands[1].offset == 28);
  CHECK(Classify(pdu) == RtsKind::kConnA1);
  CHECK(RtsKindName(RtsKind::kConnA1) == "CONN/A1");
  RtsCookies c = Cookies(pdu, RtsKind::kConnA1);
  CHECK(c.virtual_connection == kVc);
  CHECK(c.out_channel == kOut);
  CHECK(!c.in_channel);
  CHECK(c.virtual_connection->ToString() == "11111111-2222-3333-4444-555555555555");
  CHECK(!Cookies(pdu, RtsKind::kConnB1).virtual_connection);  // the wrong kind reads nothing
  CHECK(BuildConnA1(kVc, kOut, 65536) == a1);
}

TEST_CASE("rts: CONN/B1 written by hand is 104 bytes with VC, IN channel and association group") {
  Bytes b1 = Hand(rts_flags::kNone, 6)
                 .Cmd(6, 1).CookieCmd(3, kVc).CookieCmd(3, kIn).Cmd(4, 1073741824).Cmd(5, 300000)
                 .CookieCmd(12, kAssoc).Done();
  CHECK(b1.size() == 104);
  RtsPdu pdu = MustParseRts(b1);
  CHECK(Classify(pdu) == RtsKind::kConnB1);
  RtsCookies c = Cookies(pdu, RtsKind::kConnB1);
  CHECK(c.virtual_connection == kVc);
  CHECK(c.in_channel == kIn);
  CHECK(c.association_group == kAssoc);
  CHECK(BuildConnB1(kVc, kIn, kAssoc, 1073741824, 300000) == b1);
}

TEST_CASE("rts: CONN/A3, CONN/C2, ping and a flow-control ack written by hand") {
  Bytes a3 = Hand(rts_flags::kNone, 1).Cmd(2, 900000).Done();
  CHECK(a3.size() == 28);
  CHECK(Classify(MustParseRts(a3)) == RtsKind::kConnA3);
  CHECK(BuildConnA3(900000) == a3);

  Bytes c2 = Hand(rts_flags::kNone, 3).Cmd(6, 1).Cmd(0, 65536).Cmd(2, 120000).Done();
  CHECK(c2.size() == 44);
  CHECK(Classify(MustParseRts(c2)) == RtsKind::kConnC1C2);
  CHECK(BuildConnC2(65536, 120000) == c2);

  Bytes ping = Hand(rts_flags::kPing, 0).Done();
  CHECK(ping.size() == 20);
  CHECK(Classify(MustParseRts(ping)) == RtsKind::kPing);
  CHECK(BuildPing() == ping);

  Hand ack(rts_flags::kOtherCmd, 1);
  ack.w.U32(1);
  ack.w.U32(123456);
  ack.w.U32(65536);
  ack.w.Id(kIn);
  Bytes fca = ack.Done();
  CHECK(fca.size() == 48);  // 20 + the 28-byte FlowControlAck command
  RtsPdu pdu = MustParseRts(fca);
  CHECK(Classify(pdu) == RtsKind::kFlowControlAck);
  CHECK(pdu.commands[0].value == 123456);
  CHECK(pdu.commands[0].available_window == 65536);
  CHECK(Cookies(pdu, RtsKind::kFlowControlAck).ack_channel == kIn);
  CHECK(BuildFlowControlAck(123456, 65536, kIn) == fca);
}

TEST_CASE("rts: CONN/B2 carries a client address, IPv4 and IPv6, with 12 bytes of padding") {
  for (bool v6 : {false, true}) {
    CAPTURE(v6);
    Hand h(rts_flags::kInChannel, 7);
    h.Cmd(6, 1).CookieCmd(3, kVc).CookieCmd(3, kIn).Cmd(0, 65536).Cmd(2, 900000).CookieCmd(12, kAssoc);
    h.w.U32(11);
    h.w.U32(v6 ? 1 : 0);
    for (int i = 0; i < (v6 ? 16 : 4); ++i) h.w.U8(static_cast<uint8_t>(10 + i));
    for (int i = 0; i < 12; ++i) h.w.U8(0);
    RtsPdu pdu = MustParseRts(h.Done());
    CHECK(Classify(pdu) == RtsKind::kConnB2);
    CHECK(pdu.commands[6].value == (v6 ? 1u : 0u));
    CHECK(pdu.commands[6].address[0] == 10);
    CHECK(pdu.commands[6].address[3] == 13);
    CHECK(pdu.commands[6].address[15] == (v6 ? 25 : 0));
    RtsCookies c = Cookies(pdu, RtsKind::kConnB2);
    CHECK(c.in_channel == kIn);
    CHECK(c.association_group == kAssoc);
  }
}

TEST_CASE("rts: recycling PDUs name the predecessor and successor channels") {
  Bytes in_r1_a1 = Hand(rts_flags::kRecycleChannel, 4).Cmd(6, 1).CookieCmd(3, kVc).CookieCmd(3, kIn)
                       .CookieCmd(3, kNext).Done();
  RtsPdu pdu = MustParseRts(in_r1_a1);
  CHECK(Classify(pdu) == RtsKind::kInR1A1InR2A1);
  RtsCookies c = Cookies(pdu, Classify(pdu));
  CHECK(c.virtual_connection == kVc);
  CHECK(c.predecessor_channel == kIn);
  CHECK(c.successor_channel == kNext);

  Bytes out_r1_a3 = Hand(rts_flags::kRecycleChannel, 5).Cmd(6, 1).CookieCmd(3, kVc).CookieCmd(3, kOut)
                        .CookieCmd(3, kNext).Cmd(0, 65536).Done();
  pdu = MustParseRts(out_r1_a3);
  CHECK(Classify(pdu) == RtsKind::kOutRA3);
  CHECK(Cookies(pdu, RtsKind::kOutRA3).predecessor_channel == kOut);

  Bytes in_r1_a5 = Hand(rts_flags::kNone, 1).CookieCmd(3, kNext).Done();
  pdu = MustParseRts(in_r1_a5);
  CHECK(Classify(pdu) == RtsKind::kSuccessorCookie);
  CHECK(Cookies(pdu, RtsKind::kSuccessorCookie).successor_channel == kNext);

  Bytes out_r1_a7 = Hand(rts_flags::kOutChannel, 2).Cmd(13, 2).CookieCmd(3, kNext).Done();
  pdu = MustParseRts(out_r1_a7);
  CHECK(Classify(pdu) == RtsKind::kOutRA7A8);
  CHECK(pdu.commands[0].value == static_cast<uint32_t>(RtsDestination::kServer));
  CHECK(Cookies(pdu, RtsKind::kOutRA7A8).successor_channel == kNext);
}

TEST_CASE("rts: every MS-RPCH PDU shape is classified, and one flag more is kOther") {
  using T = RtsCommandType;
  auto cmd = [](T t) {
    switch (t) {
      case T::kCookie: return rts_cmd::Cookie(kVc);
      case T::kAssociationGroupId: return rts_cmd::AssociationGroupId(kAssoc);
      case T::kFlowControlAck: return rts_cmd::FlowControlAck(1, 2, kIn);
      case T::kPadding: return rts_cmd::Padding(8);
      case T::kClientAddress: return rts_cmd::ClientAddressV4({192, 0, 2, 1});
      case T::kEmpty: case T::kAnce: case T::kNegativeAnce: return RtsCommand{.type = t};
      default: return rts_cmd::Value(t, 7);
    }
  };
  struct Case {
    uint16_t flags;
    std::vector<T> types;
    RtsKind kind;
  };
  const T V = T::kVersion, C = T::kCookie, W = T::kReceiveWindowSize, O = T::kConnectionTimeout,
          L = T::kChannelLifetime, D = T::kDestination, A = T::kAnce;
  using namespace rts_flags;
  const Case cases[] = {
      {kNone, {V, C, C, W}, RtsKind::kConnA1},
      {kOutChannel, {V, C, C, L, W}, RtsKind::kConnA2},
      {kNone, {O}, RtsKind::kConnA3},
      {kNone, {V, C, C, L, T::kClientKeepalive, T::kAssociationGroupId}, RtsKind::kConnB1},
      {kInChannel, {V, C, C, W, O, T::kAssociationGroupId, T::kClientAddress}, RtsKind::kConnB2},
      {kNone, {W, V}, RtsKind::kConnB3},
      {kNone, {V, W, O}, RtsKind::kConnC1C2},
      {kRecycleChannel, {V, C, C, C}, RtsKind::kInR1A1InR2A1},
      {kInChannel | kRecycleChannel, {V, C, C, C, W, O}, RtsKind::kInR1A2},
      {kNone, {D, V, W, O}, RtsKind::kInR1A3A4},
      {kNone, {C}, RtsKind::kSuccessorCookie},
      {kNone, {T::kEmpty}, RtsKind::kInR1B1},
      {kNone, {W}, RtsKind::kInR1B2},
      {kNone, {D}, RtsKind::kInR2A3A4},
      {kRecycleChannel, {D}, RtsKind::kOutRA1A2},
      {kRecycleChannel, {V, C, C, C, W}, RtsKind::kOutRA3},
      {kRecycleChannel | kOutChannel, {V, C, C, C, L, W, O}, RtsKind::kOutR1A4},
      {kOutChannel, {D, V, O}, RtsKind::kOutR1A5A6},
      {kOutChannel, {D, C}, RtsKind::kOutRA7A8},
      {kNone, {A}, RtsKind::kAnce},
      {kNone, {D, A}, RtsKind::kOutR2A5A6},
      {kOutChannel, {D, C, V}, RtsKind::kOutR2A7},
      {kNone, {T::kNegativeAnce}, RtsKind::kOutR2B2},
      {kEof, {A}, RtsKind::kOutR2B3},
      {kPing, {T::kEmpty}, RtsKind::kOutR2C1},
      {kPing, {T::kPadding}, RtsKind::kOutR2C1},
      {kOtherCmd, {T::kClientKeepalive}, RtsKind::kKeepAlive},
      {kOtherCmd, {T::kPingTrafficSentNotify}, RtsKind::kPingTrafficSentNotify},
      {kEcho, {}, RtsKind::kEcho},
      {kPing, {}, RtsKind::kPing},
      {kOtherCmd, {T::kFlowControlAck}, RtsKind::kFlowControlAck},
      {kOtherCmd, {D, T::kFlowControlAck}, RtsKind::kFlowControlAckWithDestination},
  };
  for (const Case& k : cases) {
    std::vector<RtsCommand> commands;
    for (T t : k.types) commands.push_back(cmd(t));
    Bytes bytes = BuildRts(k.flags, commands);
    CAPTURE(RtsKindName(k.kind));
    RtsPdu pdu = MustParseRts(bytes);
    CHECK(pdu.flags == k.flags);
    CHECK(pdu.commands == commands);  // the builder round-trips
    CHECK(pdu.length == bytes.size());
    CHECK(Classify(pdu) == k.kind);
    (void)Cookies(pdu, k.kind);  // must not read past the commands
    CHECK(RtsKindName(k.kind) != "other");
    pdu.flags |= 0x80;  // a flag MS-RPCH does not define
    CHECK(Classify(pdu) == RtsKind::kOther);
  }
}

TEST_CASE("rts: truncated at every byte, or with frag_length cut at every byte, is an error, never a crash") {
  const Bytes pdus[] = {BuildConnA1(kVc, kOut), BuildConnB1(kVc, kIn, kAssoc), BuildConnA3(), BuildConnC2(),
                        BuildFlowControlAck(1, 2, kIn), BuildPing()};
  for (const Bytes& full : pdus) {
    for (size_t n = 0; n < full.size(); ++n) {
      CAPTURE(n);
      Bytes cut(full.begin(), full.begin() + static_cast<long>(n));
      CHECK(!ParseRts(cut).ok());
      if (n < kHeaderSize) continue;
      // A consistent header that says the PDU is n bytes long: the commands do not fit.
      cut[8] = static_cast<uint8_t>(n);
      cut[9] = 0;
      auto r = ParseRts(cut);
      CHECK(!r.ok());
    }
    CHECK(ParseRts(full).ok());
  }
}

TEST_CASE("rts: absurd counts and sizes, unknown commands, wrong byte order are refused") {
  auto reason = [](const Bytes& b) {
    auto r = ParseRts(b);
    return r.ok() ? std::string("ok") : std::string(r.error().reason);
  };
  CHECK(reason(Hand(0, 0xffff).Cmd(6, 1).Done()) == "RTS NumberOfCommands above the limit");
  CHECK(reason(Hand(0, 5).Cmd(6, 1).Done()) == "RTS NumberOfCommands beyond the PDU");
  CHECK(reason(Hand(0, 1).Cmd(8, 0xffffffff).Done()) == "RTS command beyond the PDU");  // Padding
  CHECK(reason(Hand(0, 1).Cmd(15, 0).Done()) == "unknown RTS command type");
  CHECK(reason(Hand(0, 1).Cmd(0xffffffff, 0).Done()) == "unknown RTS command type");
  CHECK(reason(Hand(0, 1).Cmd(11, 7).Done()) == "RTS ClientAddress of an unknown address type");
  CHECK(reason(Hand(0, 1).Cmd(11, 1).Done()) == "RTS command beyond the PDU");  // IPv6 without its bytes
  CHECK(reason(Hand(0, 1).Cmd(6, 1).Cmd(6, 1).Done()) == "bytes after the last RTS command");
  Hand padded(rts_flags::kPing, 1);
  padded.Cmd(8, 3);
  padded.w.U8(0), padded.w.U8(0), padded.w.U8(0);
  CHECK(reason(padded.Done()) == "ok");  // Padding's count need not keep 4-byte alignment

  Bytes be = BuildPing();
  be[4] = 0x00;  // big-endian drep: frag_length now reads as 0x1400
  be[8] = 0, be[9] = 20;
  CHECK(reason(be) == "RTS PDU not in little-endian byte order");
  Bytes auth = BuildConnA3();
  auth[10] = 1;  // auth_length without a trailer: the common parser refuses it first
  CHECK(!ParseRts(auth).ok());
  Bytes bind = BuildPdu(PType::kBind, 3, 1, Bytes(12, 0), true);
  CHECK(reason(bind) == "not an RTS PDU");
  // ParsePdu without allow_rts refuses PTYPE 20 altogether.
  CHECK(!ParsePdu(BuildPing()).ok());
}
