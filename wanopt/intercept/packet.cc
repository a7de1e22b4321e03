#include "wanopt/intercept/packet.h"

#include <array>
#include <cstring>

namespace wanopt::intercept {
namespace {

constexpr uint8_t kFlagPolicyMask = 0x03;
constexpr uint8_t kFlagAnswer = 0x04;
constexpr uint8_t kFlagClientV4 = 0x08;
constexpr uint8_t kFlagPlaintext = 0x10;
constexpr uint8_t kFlagRelayed = 0x20;
constexpr size_t kOptionBaseLength = 11;  // kind, length, magic, version, flags, id
constexpr size_t kMaxTcpHeader = 60;

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

// RFC 1071 ones' complement sum, folded.
uint32_t Sum(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (; n > 1; p += 2, n -= 2) sum += Get16(p);
  if (n) sum += static_cast<uint32_t>(p[0]) << 8;
  return sum;
}
uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

struct Layout {
  size_t ip_header = 0;   // IP header length
  size_t total = 0;       // IP total length (<= packet size)
  size_t tcp_header = 0;  // TCP header length, options included
};

std::optional<Layout> Locate(std::span<const uint8_t> p) {
  if (p.size() < 20 || (p[0] >> 4) != 4) return std::nullopt;
  Layout l;
  l.ip_header = static_cast<size_t>(p[0] & 0x0f) * 4;
  l.total = Get16(&p[2]);
  if (l.ip_header < 20 || l.total < l.ip_header || l.total > p.size()) return std::nullopt;
  if (p[9] != 6) return std::nullopt;                          // not TCP
  if ((Get16(&p[6]) & 0x3fff) != 0) return std::nullopt;       // a fragment (MF or offset)
  if (l.total < l.ip_header + 20) return std::nullopt;
  l.tcp_header = static_cast<size_t>(p[l.ip_header + 12] >> 4) * 4;
  if (l.tcp_header < 20 || l.ip_header + l.tcp_header > l.total) return std::nullopt;
  return l;
}

// o = the whole option: kind, length, payload. False when it is not ours.
bool DecodeOption(std::span<const uint8_t> o, DiscoveryOption& option) {
  if (o.size() < kOptionBaseLength || o[2] != kOptionMagic || o[3] != kOptionVersion) return false;
  uint8_t flags = o[4];
  if ((flags & kFlagClientV4) && o.size() < kOptionBaseLength + 4) return false;
  option.policy = static_cast<Policy>(flags & kFlagPolicyMask);
  option.answer = flags & kFlagAnswer;
  option.plaintext = flags & kFlagPlaintext;
  option.relayed = flags & kFlagRelayed;
  for (size_t i = 0; i < option.device_id.size(); ++i) option.device_id[i] = o[5 + i];
  option.client.reset();
  if (flags & kFlagClientV4) {
    option.client.emplace(boost::asio::ip::address_v4::bytes_type{o[11], o[12], o[13], o[14]});
  }
  return true;
}

}  // namespace

std::vector<uint8_t> EncodeOption(const DiscoveryOption& option) {
  uint8_t flags = static_cast<uint8_t>(option.policy) & kFlagPolicyMask;
  if (option.answer) flags |= kFlagAnswer;
  if (option.plaintext) flags |= kFlagPlaintext;
  if (option.relayed) flags |= kFlagRelayed;
  if (option.client) flags |= kFlagClientV4;
  size_t length = kOptionBaseLength + (option.client ? 4 : 0);
  std::array<uint8_t, 16> bytes{};
  bytes.fill(1);  // NOP padding after the option
  bytes[0] = kOptionKind;
  bytes[1] = static_cast<uint8_t>(length);
  bytes[2] = kOptionMagic;
  bytes[3] = kOptionVersion;
  bytes[4] = flags;
  for (size_t i = 0; i < option.device_id.size(); ++i) bytes[5 + i] = option.device_id[i];
  if (option.client) {
    auto address = option.client->to_bytes();
    for (size_t i = 0; i < 4; ++i) bytes[11 + i] = address[i];
  }
  size_t padded = (length + 3) / 4 * 4;
  return std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(padded));
}

std::optional<TcpSegment> ParseSegment(std::span<const uint8_t> p) {
  auto layout = Locate(p);
  if (!layout) return std::nullopt;
  const uint8_t* ip = p.data();
  const uint8_t* tcp = ip + layout->ip_header;
  TcpSegment s;
  s.source = boost::asio::ip::address_v4({ip[12], ip[13], ip[14], ip[15]});
  s.destination = boost::asio::ip::address_v4({ip[16], ip[17], ip[18], ip[19]});
  s.source_port = Get16(tcp);
  s.destination_port = Get16(tcp + 2);
  s.sequence = uint32_t{Get16(tcp + 4)} << 16 | Get16(tcp + 6);
  uint8_t flags = tcp[13];
  s.fin = flags & 0x01;
  s.syn = flags & 0x02;
  s.rst = flags & 0x04;
  s.ack = flags & 0x10;
  // Walk the options; a malformed list ends the walk (the kernel would do the same).
  size_t i = 20;
  while (i < layout->tcp_header) {
    uint8_t kind = tcp[i];
    if (kind == 0) break;  // end of list
    if (kind == 1) {       // NOP
      ++i;
      continue;
    }
    if (i + 1 >= layout->tcp_header) break;
    size_t length = tcp[i + 1];
    if (length < 2 || i + length > layout->tcp_header) break;
    if (kind == kOptionKind) {
      DiscoveryOption option;
      if (DecodeOption({tcp + i, length}, option)) s.option.emplace(option);
      else s.foreign_option = true;
    }
    i += length;
  }
  return s;
}

std::optional<std::vector<uint8_t>> AddOption(std::span<const uint8_t> p, const DiscoveryOption& option) {
  auto layout = Locate(p);
  if (!layout) return std::nullopt;
  auto existing = ParseSegment(p);
  if (!existing || existing->option || existing->foreign_option) return std::nullopt;
  std::vector<uint8_t> bytes = EncodeOption(option);
  // The existing options may end with an end-of-list and padding: options after
  // EOL would be ignored, so find where the real list ends.
  const uint8_t* tcp = p.data() + layout->ip_header;
  size_t end = 20;
  while (end < layout->tcp_header) {
    uint8_t kind = tcp[end];
    if (kind == 0) break;
    if (kind == 1) {
      ++end;
      continue;
    }
    // A malformed list (a length that is too short or runs past the header) is not
    // ours to extend: leave such a packet alone.
    if (end + 1 >= layout->tcp_header || tcp[end + 1] < 2 || end + tcp[end + 1] > layout->tcp_header) {
      return std::nullopt;
    }
    end += tcp[end + 1];
  }
  size_t new_header = end + bytes.size();
  while (new_header % 4) {
    bytes.push_back(0);  // pad with end-of-list
    ++new_header;
  }
  if (new_header > kMaxTcpHeader) return std::nullopt;
  size_t payload = layout->total - layout->ip_header - layout->tcp_header;
  std::vector<uint8_t> out;
  out.reserve(layout->ip_header + new_header + payload);
  out.insert(out.end(), p.begin(), p.begin() + static_cast<ptrdiff_t>(layout->ip_header + end));
  out.insert(out.end(), bytes.begin(), bytes.end());
  out.insert(out.end(), p.begin() + static_cast<ptrdiff_t>(layout->ip_header + layout->tcp_header),
             p.begin() + static_cast<ptrdiff_t>(layout->total));
  uint8_t* ip = out.data();
  uint8_t* t = ip + layout->ip_header;
  Put16(ip + 2, static_cast<uint16_t>(out.size()));
  t[12] = static_cast<uint8_t>((new_header / 4) << 4 | (t[12] & 0x0f));
  // IP header checksum.
  Put16(ip + 10, 0);
  Put16(ip + 10, Fold(Sum(ip, layout->ip_header)));
  // TCP checksum over the pseudo-header and the whole segment.
  size_t segment = out.size() - layout->ip_header;
  Put16(t + 16, 0);
  uint32_t sum = Sum(ip + 12, 8);  // source and destination addresses
  sum += 6;                        // protocol
  sum += static_cast<uint32_t>(segment);
  Put16(t + 16, Fold(Sum(t, segment, sum)));
  return out;
}

}  // namespace wanopt::intercept
