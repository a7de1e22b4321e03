// libFuzzer target: the packets netlink queue hands the interception agent
// (wanopt/intercept/packet.h). Whatever the bytes: no crash, no read past the end,
// and an option added to a packet is read back exactly, with both checksums right.
#include <cstdint>
#include <cstdlib>
#include <span>

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
  size_t ihl = static_cast<size_t>((*with)[0] & 0x0f) * 4;
  if (Sum16(with->data(), ihl) != 0xffff) std::abort();
  uint32_t pseudo = Sum16(with->data() + 12, 8) + 6 + static_cast<uint32_t>(with->size() - ihl);
  if (Sum16(with->data() + ihl, with->size() - ihl, pseudo) != 0xffff) std::abort();
  return 0;
}
