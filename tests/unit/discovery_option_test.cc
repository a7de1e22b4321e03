// TCP option 0x21 and the packet surgery of wanopt/intercept/packet.h.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "wanopt/intercept/packet.h"

using namespace wanopt;
using namespace wanopt::intercept;
using boost::asio::ip::address_v4;

namespace {

uint32_t Sum16(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (; n > 1; p += 2, n -= 2) sum += static_cast<uint32_t>(p[0] << 8 | p[1]);
  if (n) sum += static_cast<uint32_t>(p[0]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

// Both checksums of an IPv4 TCP packet verify (the ones' complement sum is 0xffff).
bool ChecksumsValid(const std::vector<uint8_t>& p) {
  size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
  if (Sum16(p.data(), ihl) != 0xffff) return false;
  size_t segment = p.size() - ihl;
  uint32_t pseudo = Sum16(p.data() + 12, 8) + 6 + static_cast<uint32_t>(segment);
  return Sum16(p.data() + ihl, segment, pseudo) == 0xffff;
}

// A SYN as Linux sends it: MSS, SACK-permitted, timestamps, NOP, window scale (20
// option bytes), optionally with payload bytes and valid checksums.
std::vector<uint8_t> LinuxSyn(bool ack = false, std::vector<uint8_t> payload = {}, size_t extra_nops = 0) {
  std::vector<uint8_t> options = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7};
  options.insert(options.end(), extra_nops, 1);
  size_t tcp_len = 20 + options.size();
  size_t total = 20 + tcp_len + payload.size();
  std::vector<uint8_t> p = {0x45, 0, static_cast<uint8_t>(total >> 8), static_cast<uint8_t>(total), 0x12, 0x34, 0x40, 0,
                            64, 6, 0, 0, 198, 18, 1, 10, 198, 18, 2, 10};
  std::vector<uint8_t> tcp = {0xc3, 0x50, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, static_cast<uint8_t>((tcp_len / 4) << 4),
                              static_cast<uint8_t>(ack ? 0x12 : 0x02), 0xfa, 0xf0, 0, 0, 0, 0};
  p.insert(p.end(), tcp.begin(), tcp.end());
  p.insert(p.end(), options.begin(), options.end());
  p.insert(p.end(), payload.begin(), payload.end());
  // Checksums.
  uint16_t ip = static_cast<uint16_t>(~Sum16(p.data(), 20));
  p[10] = static_cast<uint8_t>(ip >> 8);
  p[11] = static_cast<uint8_t>(ip);
  uint32_t pseudo = Sum16(p.data() + 12, 8) + 6 + static_cast<uint32_t>(p.size() - 20);
  uint16_t t = static_cast<uint16_t>(~Sum16(p.data() + 20, p.size() - 20, pseudo));
  p[36] = static_cast<uint8_t>(t >> 8);
  p[37] = static_cast<uint8_t>(t);
  return p;
}

// The IPv6 checksum of a packet without extension headers verifies.
bool ChecksumsValid6(const std::vector<uint8_t>& p) {
  size_t segment = p.size() - 40;
  uint32_t pseudo = Sum16(p.data() + 8, 32) + 6 + static_cast<uint32_t>(segment);
  return Sum16(p.data() + 40, segment, pseudo) == 0xffff;
}

// A Linux SYN over IPv6 (the same 20 option bytes) from 2001:2:0:1::10 to
// 2001:2:0:2::10, after `extension` (extension headers, the first one's type in
// `first_header`).
std::vector<uint8_t> LinuxSyn6(bool ack = false, std::vector<uint8_t> extension = {}, uint8_t first_header = 6) {
  std::vector<uint8_t> options = {2, 4, 0x05, 0xa0, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7};
  size_t payload = extension.size() + 20 + options.size();
  std::vector<uint8_t> p = {0x60, 0, 0, 0, static_cast<uint8_t>(payload >> 8), static_cast<uint8_t>(payload),
                            first_header, 64};
  for (const char* a : {"2001:2:0:1::10", "2001:2:0:2::10"}) {
    auto bytes = boost::asio::ip::make_address_v6(a).to_bytes();
    p.insert(p.end(), bytes.begin(), bytes.end());
  }
  p.insert(p.end(), extension.begin(), extension.end());
  size_t tcp_at = p.size();
  std::vector<uint8_t> tcp = {0xc3, 0x50, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, static_cast<uint8_t>((40 / 4) << 4),
                              static_cast<uint8_t>(ack ? 0x12 : 0x02), 0xfa, 0xf0, 0, 0, 0, 0};
  p.insert(p.end(), tcp.begin(), tcp.end());
  p.insert(p.end(), options.begin(), options.end());
  uint32_t pseudo = Sum16(p.data() + 8, 32) + 6 + static_cast<uint32_t>(p.size() - tcp_at);
  uint16_t t = static_cast<uint16_t>(~Sum16(p.data() + tcp_at, p.size() - tcp_at, pseudo));
  p[tcp_at + 16] = static_cast<uint8_t>(t >> 8);
  p[tcp_at + 17] = static_cast<uint8_t>(t);
  return p;
}

DiscoveryOption Offer() {
  DiscoveryOption o;
  o.policy = Policy::kFull;
  o.device_id = {0x02, 0x00, 0x5e, 0x00, 0x00, 0x01};
  o.client = address_v4({198, 18, 1, 10});
  return o;
}

}  // namespace

TEST_CASE("discovery option: layout, 12 or 16 bytes with the trailing NOP") {
  DiscoveryOption answer;
  answer.policy = Policy::kLz;
  answer.answer = true;
  answer.relayed = true;
  answer.device_id = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> bytes = EncodeOption(answer);
  CHECK(bytes == std::vector<uint8_t>{0x21, 11, 0x57, 1, 0x01 | 0x04 | 0x20, 1, 2, 3, 4, 5, 6, 1});
  std::vector<uint8_t> offer = EncodeOption(Offer());
  REQUIRE(offer.size() == 16);
  CHECK(offer[1] == 15);
  CHECK(offer[4] == (0x03 | 0x08));
  CHECK(offer[11] == 198);
  CHECK(offer[14] == 10);
  CHECK(offer[15] == 1);
}

TEST_CASE("discovery option: added to a Linux SYN, both checksums right, read back") {
  auto syn = LinuxSyn();
  REQUIRE(ChecksumsValid(syn));
  auto parsed = ParseSegment(syn);
  REQUIRE(parsed);
  CHECK(parsed->syn);
  CHECK_FALSE(parsed->ack);
  CHECK_FALSE(parsed->option);
  CHECK(parsed->source_port == 0xc350);
  CHECK(parsed->destination_port == 80);

  auto with = AddOption(syn, Offer());
  REQUIRE(with);
  CHECK(with->size() == syn.size() + 16);
  CHECK(((*with)[32] >> 4) * 4 == 20 + 20 + 16);
  CHECK(ChecksumsValid(*with));
  auto back = ParseSegment(*with);
  REQUIRE(back);
  REQUIRE(back->option);
  CHECK(back->option->policy == Policy::kFull);
  CHECK(back->option->device_id == Offer().device_id);
  REQUIRE(back->option->client);
  CHECK(back->option->client->to_string() == "198.18.1.10");
  CHECK_FALSE(back->option->answer);
  // The SYN's own options are still there, in front of ours.
  CHECK(std::equal(syn.begin() + 40, syn.begin() + 60, with->begin() + 40));
  // Twice: refused (one discovery option per segment).
  CHECK_FALSE(AddOption(*with, Offer()));
  // No room in a SYN-ACK: 60 bytes of TCP header at most (20 + 32 option bytes + 16 > 60).
  auto crowded = LinuxSyn(/*ack=*/true, {}, 12);
  REQUIRE(ParseSegment(crowded));
  CHECK_FALSE(AddOption(crowded, Offer()));
  DiscoveryOption answer;  // 12 bytes still fit
  CHECK(AddOption(LinuxSyn(true, {}, 8), answer));
  // A SYN that crowded gives up its timestamps for the option (32 - 10 + 16 <= 40).
  auto made_room = AddOption(LinuxSyn(false, {}, 12), Offer());
  REQUIRE(made_room);
  CHECK(ChecksumsValid(*made_room));
  CHECK(((*made_room)[32] >> 4) * 4 == 60);
  CHECK(std::find(made_room->begin() + 40, made_room->begin() + 60, 8) == made_room->begin() + 60);  // no kind 8
  REQUIRE(ParseSegment(*made_room));
  CHECK(ParseSegment(*made_room)->option);
}

TEST_CASE("discovery option: payload after the options moves with them") {
  auto syn = LinuxSyn(true, {'h', 'e', 'l', 'l', 'o'});
  DiscoveryOption answer;
  answer.answer = true;
  answer.device_id = {9, 9, 9, 9, 9, 9};
  auto with = AddOption(syn, answer);
  REQUIRE(with);
  CHECK(ChecksumsValid(*with));
  CHECK(std::string(with->end() - 5, with->end()) == "hello");
  auto back = ParseSegment(*with);
  REQUIRE(back);
  CHECK(back->ack);
  REQUIRE(back->option);
  CHECK(back->option->answer);
}

TEST_CASE("discovery option: kind 33 from someone else is not ours") {
  auto syn = LinuxSyn();
  auto with = AddOption(syn, Offer());
  REQUIRE(with);
  (*with)[60 + 2] = 0x4f;  // another magic (OpenNOP uses kind 33 too)
  auto parsed = ParseSegment(*with);
  REQUIRE(parsed);
  CHECK_FALSE(parsed->option);
  CHECK(parsed->foreign_option);
  (*with)[60 + 2] = 0x57;
  (*with)[60 + 3] = 2;  // a version we do not speak
  parsed = ParseSegment(*with);
  REQUIRE(parsed);
  CHECK_FALSE(parsed->option);
  CHECK(parsed->foreign_option);
}

TEST_CASE("discovery option: malformed packets are refused, never read past the end") {
  auto syn = AddOption(LinuxSyn(), Offer());
  REQUIRE(syn);
  for (size_t n = 0; n < syn->size(); ++n) {
    std::vector<uint8_t> cut(syn->begin(), syn->begin() + static_cast<ptrdiff_t>(n));
    auto parsed = ParseSegment(cut);
    CHECK_FALSE(parsed);  // the IP total length no longer fits
  }
  std::vector<uint8_t> bad = *syn;
  bad[9] = 17;  // UDP
  CHECK_FALSE(ParseSegment(bad));
  bad = *syn;
  bad[6] = 0x20;  // more fragments
  CHECK_FALSE(ParseSegment(bad));
  bad = *syn;
  bad[32] = 0xf0;  // data offset 60, past the end of this segment
  CHECK_FALSE(ParseSegment(bad));
  bad = *syn;
  bad[61] = 40;  // our option claims 40 bytes: the walk stops, nothing is trusted
  auto parsed = ParseSegment(bad);
  REQUIRE(parsed);
  CHECK_FALSE(parsed->option);
  // Every single-byte value in the options region: parsing never crashes.
  for (size_t at = 40; at < syn->size(); ++at) {
    for (int v : {0, 1, 2, 3, 11, 15, 33, 255}) {
      bad = *syn;
      bad[at] = static_cast<uint8_t>(v);
      (void)ParseSegment(bad);
      (void)AddOption(bad, Offer());
    }
  }
}

TEST_CASE("discovery option: a packet whose options run past the TCP header is left alone") {
  // Found by the fuzzer: an option length pointing past the header made AddOption
  // copy from beyond the packet.
  auto syn = LinuxSyn();
  syn[40 + 7] = 30;  // the timestamps option (at 46) claims 30 bytes: past the 60-byte header
  CHECK_FALSE(AddOption(syn, Offer()));
  auto parsed = ParseSegment(syn);
  REQUIRE(parsed);  // still a TCP segment; its option walk just stops
  CHECK_FALSE(parsed->option);
}

TEST_CASE("discovery option: an IPv6 client address, 28 bytes with its NOP") {
  DiscoveryOption offer = Offer();
  offer.client = boost::asio::ip::make_address("2001:2:0:1::10");
  auto bytes = EncodeOption(offer);
  REQUIRE(bytes.size() == 28);
  CHECK(bytes[1] == 27);
  CHECK(bytes[4] == (0x03 | 0x40));
  CHECK(bytes[11] == 0x20);
  CHECK(bytes[26] == 0x10);
  CHECK(bytes[27] == 1);
  // Both client flags at once, or a length that is not the flags': not ours.
  auto syn = AddOption(LinuxSyn(), Offer());
  REQUIRE(syn);
  REQUIRE(ParseSegment(*syn)->option);
  for (uint8_t flags : {0x03 | 0x08 | 0x40, 0x03, 0x03 | 0x40}) {  // 15 bytes: only CLIENT_V4 alone is right
    auto changed = *syn;
    changed[40 + 20 + 4] = flags;
    auto parsed = ParseSegment(changed);
    REQUIRE(parsed);
    CHECK_FALSE(parsed->option);
    CHECK(parsed->foreign_option);
  }
}

TEST_CASE("discovery option: IPv6 SYNs, read and extended, the SYN's timestamps given up for a client address") {
  auto syn = LinuxSyn6();
  REQUIRE(ChecksumsValid6(syn));
  auto parsed = ParseSegment(syn);
  REQUIRE(parsed);
  CHECK(parsed->source.to_string() == "2001:2:0:1::10");
  CHECK(parsed->destination.to_string() == "2001:2:0:2::10");
  CHECK(parsed->destination_port == 80);
  CHECK(parsed->syn);

  DiscoveryOption offer = Offer();
  offer.client = boost::asio::ip::make_address("2001:2:0:1::10");
  auto with = AddOption(syn, offer);
  REQUIRE(with);
  CHECK(ChecksumsValid6(*with));
  CHECK(((*with)[40 + 12] >> 4) * 4 == 60);                          // 10 own option bytes + 28, padded
  CHECK((size_t{(*with)[4]} << 8 | (*with)[5]) == with->size() - 40);  // payload length
  auto back = ParseSegment(*with);
  REQUIRE(back);
  REQUIRE(back->option);
  REQUIRE(back->option->client);
  CHECK(back->option->client->to_string() == "2001:2:0:1::10");
  // MSS, SACK permitted, window scale kept; the timestamps gone.
  CHECK(std::vector<uint8_t>(with->begin() + 60, with->begin() + 70) ==
        std::vector<uint8_t>{2, 4, 0x05, 0xa0, 4, 2, 1, 3, 3, 7});
  CHECK((*with)[70] == 0x21);

  // Without a client address the option fits beside the timestamps: they stay.
  auto small = AddOption(syn, DiscoveryOption{});
  REQUIRE(small);
  CHECK(ChecksumsValid6(*small));
  CHECK(small->size() == syn.size() + 12);
  CHECK(std::equal(syn.begin() + 60, syn.end(), small->begin() + 60));
  // A SYN-ACK never loses its timestamps: an IPv6 client address does not fit there.
  CHECK_FALSE(AddOption(LinuxSyn6(/*ack=*/true), offer));
}

TEST_CASE("discovery option: IPv6 extension headers before TCP are walked, fragments refused") {
  // A destination-options header (8 bytes: next header TCP, length 0, PadN).
  std::vector<uint8_t> dest_options = {6, 0, 1, 4, 0, 0, 0, 0};
  auto syn = LinuxSyn6(false, dest_options, 60);
  auto parsed = ParseSegment(syn);
  REQUIRE(parsed);
  CHECK(parsed->destination_port == 80);
  auto with = AddOption(syn, DiscoveryOption{});
  REQUIRE(with);
  auto back = ParseSegment(*with);
  REQUIRE(back);
  CHECK(back->option);
  CHECK((size_t{(*with)[4]} << 8 | (*with)[5]) == with->size() - 40);
  // A fragment header: not a segment this box touches.
  std::vector<uint8_t> fragment = {6, 0, 0, 0, 0, 0, 0, 1};
  CHECK_FALSE(ParseSegment(LinuxSyn6(false, fragment, 44)));
  // A routing header: its destination field is not the server's. Refused too.
  std::vector<uint8_t> routing = {6, 0, 0, 0, 0, 0, 0, 0};
  CHECK_FALSE(ParseSegment(LinuxSyn6(false, routing, 43)));
  // An extension header whose length runs past the packet, and every cut: refused.
  auto bad = syn;
  bad[41] = 200;
  CHECK_FALSE(ParseSegment(bad));
  for (size_t n = 0; n < syn.size(); ++n) {
    CHECK_FALSE(ParseSegment(std::vector<uint8_t>(syn.begin(), syn.begin() + static_cast<ptrdiff_t>(n))));
  }
  // Every single-byte value anywhere: never a crash, never a read past the end.
  for (size_t at = 0; at < syn.size(); ++at) {
    for (int v : {0, 1, 6, 8, 43, 44, 60, 255}) {
      bad = syn;
      bad[at] = static_cast<uint8_t>(v);
      (void)ParseSegment(bad);
      (void)AddOption(bad, Offer());
    }
  }
}
