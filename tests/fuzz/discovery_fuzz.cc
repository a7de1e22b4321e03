// libFuzzer target: the packets netlink queue hands the interception agent
// (wanopt/intercept/packet.h). Whatever the bytes: no crash, no read past the end,
// and an option added to a packet (IPv4 or IPv6) is read back exactly, with its
// checksums right.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "wanopt/intercept/packet.h"

using namespace wanopt;
using namespace wanopt::intercept;

namespace {

uint32_t Sum16(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (; n > 1; p += 2, n -= 2) sum += static_cast<uint32_t>(p[0] << 8 | p[1]);
  if (n) sum += static_cast<uint32_t>(p[0]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> packet(data, size);
  auto parsed = ParseSegment(packet);
  DiscoveryOption offer;
  offer.policy = Policy::kFull;
  offer.device_id = {2, 0, 0, 0, 0, 1};
  offer.client = boost::asio::ip::address_v4(0xc612010a);
  auto with = AddOption(packet, offer);
  if (!with) return 0;
  if (!parsed) std::abort();  // added to something that does not parse
  auto back = ParseSegment(*with);
  if (!back || !back->option || back->option->device_id != offer.device_id || !back->option->client ||
      *back->option->client != *offer.client || back->source_port != parsed->source_port) {
    std::abort();
  }
  // The TCP checksum over its pseudo-header; for IPv4 the header checksum too. (The
  // packet parsed, so the IPv6 extension headers walked here are whole.)
  const std::vector<uint8_t>& w = *with;
  size_t tcp_at;
  uint32_t pseudo;
  if ((w[0] >> 4) == 6) {
    uint8_t next = w[6];
    tcp_at = 40;
    while (next != 6) {
      next = w[tcp_at];
      tcp_at += (size_t{w[tcp_at + 1]} + 1) * 8;
    }
    pseudo = Sum16(w.data() + 8, 32) + 6 + static_cast<uint32_t>(w.size() - tcp_at);
  } else {
    tcp_at = static_cast<size_t>(w[0] & 0x0f) * 4;
    if (Sum16(w.data(), tcp_at) != 0xffff) std::abort();
    pseudo = Sum16(w.data() + 12, 8) + 6 + static_cast<uint32_t>(w.size() - tcp_at);
  }
  if (Sum16(w.data() + tcp_at, w.size() - tcp_at, pseudo) != 0xffff) std::abort();
  return 0;
}
