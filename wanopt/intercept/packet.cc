#include "wanopt/intercept/packet.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace wanopt::intercept {
namespace {

constexpr uint8_t kFlagPolicyMask = 0x03;
constexpr uint8_t kFlagAnswer = 0x04;
constexpr uint8_t kFlagClientV4 = 0x08;
constexpr uint8_t kFlagPlaintext = 0x10;
constexpr uint8_t kFlagRelayed = 0x20;
constexpr uint8_t kFlagClientV6 = 0x40;
constexpr size_t kOptionBaseLength = 11;  // kind, length, magic, version, flags, id
constexpr uint8_t kTimestamps = 8;        // TCP option kind
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
  bool v6 = false;
  size_t ip_header = 0;   // where TCP starts: the IP header, IPv6 extension headers included
  size_t total = 0;       // the packet's length by its IP header (<= packet size)
  size_t tcp_header = 0;  // TCP header length, options included
};

std::optional<Layout> Locate(std::span<const uint8_t> p) {
  if (p.empty()) return std::nullopt;
  Layout l;
  if ((p[0] >> 4) == 4) {
    if (p.size() < 20) return std::nullopt;
    l.ip_header = static_cast<size_t>(p[0] & 0x0f) * 4;
    l.total = Get16(&p[2]);
    if (l.ip_header < 20 || l.total < l.ip_header || l.total > p.size()) return std::nullopt;
    if (p[9] != 6) return std::nullopt;                     // not TCP
    if ((Get16(&p[6]) & 0x3fff) != 0) return std::nullopt;  // a fragment (MF or offset)
  } else if ((p[0] >> 4) == 6) {
    if (p.size() < 40) return std::nullopt;
    l.v6 = true;
    l.total = 40 + size_t{Get16(&p[4])};  // a jumbogram (payload length 0) is too short below
    if (l.total > p.size()) return std::nullopt;
    // Extension headers a SYN may carry before TCP; a fragment header, or any
    // other, ends the walk: not a segment this box touches. So does a routing
    // header: the destination field would not be the server (nor the address the
    // TCP checksum covers).
    uint8_t next = p[6];
    size_t at = 40;
    while (next != 6) {
      if (next != 0 && next != 60) return std::nullopt;  // hop-by-hop, destination options
      if (at + 8 > l.total) return std::nullopt;
      next = p[at];
      at += (size_t{p[at + 1]} + 1) * 8;
    }
    l.ip_header = at;
  } else {
    return std::nullopt;
  }
  if (l.total < l.ip_header + 20) return std::nullopt;
  l.tcp_header = static_cast<size_t>(p[l.ip_header + 12] >> 4) * 4;
  if (l.tcp_header < 20 || l.ip_header + l.tcp_header > l.total) return std::nullopt;
  return l;
}

// o = the whole option: kind, length, payload. False when it is not ours (another
// magic or version, both client flags, or a length that does not match the flags).
bool DecodeOption(std::span<const uint8_t> o, DiscoveryOption& option) {
  if (o.size() < kOptionBaseLength || o[2] != kOptionMagic || o[3] != kOptionVersion) return false;
  uint8_t flags = o[4];
  if ((flags & kFlagClientV4) && (flags & kFlagClientV6)) return false;
  size_t client_bytes = flags & kFlagClientV4 ? 4 : flags & kFlagClientV6 ? 16 : 0;
  if (o.size() != kOptionBaseLength + client_bytes) return false;
  option.policy = static_cast<Policy>(flags & kFlagPolicyMask);
  option.answer = flags & kFlagAnswer;
  option.plaintext = flags & kFlagPlaintext;
  option.relayed = flags & kFlagRelayed;
  for (size_t i = 0; i < option.device_id.size(); ++i) option.device_id[i] = o[5 + i];
  option.client.reset();
  if (client_bytes == 4) {
    option.client.emplace(boost::asio::ip::address_v4(boost::asio::ip::address_v4::bytes_type{o[11], o[12], o[13], o[14]}));
  } else if (client_bytes == 16) {
    boost::asio::ip::address_v6::bytes_type b{};
    std::memcpy(b.data(), &o[11], b.size());
    option.client.emplace(boost::asio::ip::address_v6(b));
  }
  return true;
}

}  // namespace

std::vector<uint8_t> EncodeOption(const DiscoveryOption& option) {
  uint8_t flags = static_cast<uint8_t>(option.policy) & kFlagPolicyMask;
  if (option.answer) flags |= kFlagAnswer;
  if (option.plaintext) flags |= kFlagPlaintext;
  if (option.relayed) flags |= kFlagRelayed;
  std::array<uint8_t, kOptionBaseLength + 16 + 1> bytes{};
  bytes.fill(1);  // NOP padding after the option
  bytes[0] = kOptionKind;
  bytes[2] = kOptionMagic;
  bytes[3] = kOptionVersion;
  std::copy(option.device_id.begin(), option.device_id.end(), bytes.begin() + 5);
  size_t length = kOptionBaseLength;
  if (option.client && option.client->is_v4()) {
    flags |= kFlagClientV4;
    auto address = option.client->to_v4().to_bytes();
    length = std::copy(address.begin(), address.end(), bytes.begin() + kOptionBaseLength) - bytes.begin();
  } else if (option.client) {
    flags |= kFlagClientV6;
    auto address = option.client->to_v6().to_bytes();
    length = std::copy(address.begin(), address.end(), bytes.begin() + kOptionBaseLength) - bytes.begin();
  }
  bytes[1] = static_cast<uint8_t>(length);
  bytes[4] = flags;
  size_t padded = (length + 3) / 4 * 4;
  return std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(padded));
}

std::optional<TcpSegment> ParseSegment(std::span<const uint8_t> p) {
  auto layout = Locate(p);
  if (!layout) return std::nullopt;
  const uint8_t* ip = p.data();
  const uint8_t* tcp = ip + layout->ip_header;
  TcpSegment s;
  if (layout->v6) {
    boost::asio::ip::address_v6::bytes_type source{}, destination{};
    std::memcpy(source.data(), ip + 8, 16);
    std::memcpy(destination.data(), ip + 24, 16);
    s.source = boost::asio::ip::address_v6(source);
    s.destination = boost::asio::ip::address_v6(destination);
  } else {
    s.source = boost::asio::ip::address_v4({ip[12], ip[13], ip[14], ip[15]});
    s.destination = boost::asio::ip::address_v4({ip[16], ip[17], ip[18], ip[19]});
  }
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
  std::vector<uint8_t> ours = EncodeOption(option);
  // The options the segment keeps, up to a possible end-of-list (options after it
  // would be ignored), with its timestamps too if they fit beside ours.
  const uint8_t* tcp = p.data() + layout->ip_header;
  std::vector<uint8_t> kept, without_timestamps;
  size_t at = 20;
  while (at < layout->tcp_header) {
    uint8_t kind = tcp[at];
    if (kind == 0) break;
    size_t length = 1;  // NOP
    if (kind != 1) {
      // A malformed list (a length that is too short or runs past the header) is
      // not ours to extend: leave such a packet alone.
      if (at + 1 >= layout->tcp_header || tcp[at + 1] < 2 || at + tcp[at + 1] > layout->tcp_header) {
        return std::nullopt;
      }
      length = tcp[at + 1];
    }
    kept.insert(kept.end(), tcp + at, tcp + at + length);
    if (kind != kTimestamps) without_timestamps.insert(without_timestamps.end(), tcp + at, tcp + at + length);
    at += length;
  }
  bool plain_syn = existing->syn && !existing->ack;
  if (20 + kept.size() + ours.size() > kMaxTcpHeader && plain_syn) kept = std::move(without_timestamps);
  kept.insert(kept.end(), ours.begin(), ours.end());
  while (kept.size() % 4) kept.push_back(0);  // pad with end-of-list
  size_t new_header = 20 + kept.size();
  if (new_header > kMaxTcpHeader) return std::nullopt;
  std::vector<uint8_t> out;
  out.reserve(layout->ip_header + new_header + (layout->total - layout->ip_header - layout->tcp_header));
  out.insert(out.end(), p.begin(), p.begin() + static_cast<ptrdiff_t>(layout->ip_header + 20));
  out.insert(out.end(), kept.begin(), kept.end());
  out.insert(out.end(), p.begin() + static_cast<ptrdiff_t>(layout->ip_header + layout->tcp_header),
             p.begin() + static_cast<ptrdiff_t>(layout->total));
  uint8_t* ip = out.data();
  uint8_t* t = ip + layout->ip_header;
  t[12] = static_cast<uint8_t>((new_header / 4) << 4 | (t[12] & 0x0f));
  size_t segment = out.size() - layout->ip_header;
  uint32_t sum = 6 + static_cast<uint32_t>(segment);  // pseudo-header: protocol and TCP length
  if (layout->v6) {
    Put16(ip + 4, static_cast<uint16_t>(out.size() - 40));  // payload length
    sum = Sum(ip + 8, 32, sum);                              // source and destination addresses
  } else {
    Put16(ip + 2, static_cast<uint16_t>(out.size()));
    Put16(ip + 10, 0);
    Put16(ip + 10, Fold(Sum(ip, layout->ip_header)));
    sum = Sum(ip + 12, 8, sum);
  }
  // TCP checksum over the pseudo-header and the whole segment.
  Put16(t + 16, 0);
  Put16(t + 16, Fold(Sum(t, segment, sum)));
  return out;
}

}  // namespace wanopt::intercept
