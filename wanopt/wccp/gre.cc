// GRE encapsulation for WCCPv2 redirection (see gre.h).
#include "wanopt/wccp/gre.h"

#include "util/bytes.h"

namespace wanopt::wccp {
namespace {
constexpr uint16_t kChecksumBit = 0x8000, kRoutingBit = 0x4000, kKeyBit = 0x2000, kSeqBit = 0x1000;
constexpr uint8_t kDynamic = 0x01, kAltUsed = 0x02;
}  // namespace

Result<GrePacket> ParseGre(std::span<const uint8_t> p) {
  if (p.size() < 4) return Error{"shorter than a GRE header"};
  uint16_t flags = bytes::GetBe16(p.data());
  GrePacket out;
  out.protocol = bytes::GetBe16(p.data() + 2);
  if ((flags & 7) != 0) return Error{"GRE version is not 0"};
  if (flags & kRoutingBit) return Error{"GRE routing is not supported"};
  size_t pos = 4 + ((flags & kChecksumBit) ? 4 : 0) + ((flags & kKeyBit) ? 4 : 0) + ((flags & kSeqBit) ? 4 : 0);
  if (pos > p.size()) return Error{"GRE optional fields run past the packet"};
  if (out.protocol == kGreProtoWccp) {
    if (pos >= p.size()) return Error{"no WCCP redirect header"};
    if ((p[pos] >> 4) != 4) {
      if (p.size() - pos < 4) return Error{"short WCCP redirect header"};
      out.redirect = RedirectHeader{(p[pos] & kDynamic) != 0, (p[pos] & kAltUsed) != 0, p[pos + 1], p[pos + 2],
                                    p[pos + 3]};
      pos += 4;
    }
  } else if (out.protocol != kGreProtoIpv4) {
    return Error{"GRE protocol type is neither WCCP nor IPv4"};
  }
  auto ip = p.subspan(pos);
  if (ip.size() < 20 || (ip[0] >> 4) != 4) return Error{"inner packet is not IPv4"};
  size_t header = size_t{ip[0] & 0x0Fu} * 4;
  size_t total = bytes::GetBe16(ip.data() + 2);
  if (header < 20 || total < header || total > ip.size()) return Error{"inner IPv4 lengths do not fit"};
  out.inner = ip.first(total);
  return out;
}

std::vector<uint8_t> BuildGre(const std::optional<RedirectHeader>& redirect, std::span<const uint8_t> inner) {
  std::vector<uint8_t> out(redirect ? 8 : 4);
  bytes::PutBe16(out.data() + 2, redirect ? kGreProtoWccp : kGreProtoIpv4);
  if (redirect) {
    out[4] = static_cast<uint8_t>((redirect->dynamic ? kDynamic : 0) | (redirect->alternate_bucket_used ? kAltUsed : 0));
    out[5] = redirect->service_id;
    out[6] = redirect->alternate_bucket;
    out[7] = redirect->primary_bucket;
  }
  out.insert(out.end(), inner.begin(), inner.end());
  return out;
}

}  // namespace wanopt::wccp
