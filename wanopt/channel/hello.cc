#include "wanopt/channel/hello.h"

#include <cstdio>
#include <cstring>

#include "util/bytes.h"

namespace wanopt::channel {
namespace {

// Reads fields from a payload; every read is bounds-checked and a short read
// poisons the reader, so decoders check ok() once at the end of a group of reads.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }
  uint8_t U8() { return Take(1) ? in_[pos_ - 1] : 0; }
  uint16_t U16() { return Take(2) ? bytes::GetBe16(&in_[pos_ - 2]) : 0; }
  uint32_t U32() { return Take(4) ? bytes::GetBe32(&in_[pos_ - 4]) : 0; }
  std::span<const uint8_t> Bytes(size_t n) {
    return Take(n) ? in_.subspan(pos_ - n, n) : std::span<const uint8_t>{};
  }

 private:
  bool Take(size_t n) {
    if (!ok_ || in_.size() - pos_ < n) return ok_ = false;
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// resize + memcpy rather than insert(): GCC 12 warns falsely on the latter at -O3.
void Append(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  size_t at = out.size();
  out.resize(at + bytes.size());
  std::memcpy(out.data() + at, bytes.data(), bytes.size());
}
void Append(std::vector<uint8_t>& out, std::string_view text) {
  Append(out, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}
void AppendBe16(std::vector<uint8_t>& out, uint16_t v) {
  uint8_t b[2];
  bytes::PutBe16(b, v);
  Append(out, b);
}
void AppendBe32(std::vector<uint8_t>& out, uint32_t v) {
  uint8_t b[4];
  bytes::PutBe32(b, v);
  Append(out, b);
}
// family (4 or 6), reserved, port, address.
void AppendEndpoint(std::vector<uint8_t>& out, const boost::asio::ip::tcp::endpoint& endpoint) {
  const auto& address = endpoint.address();
  out.push_back(address.is_v4() ? 4 : 6);
  out.push_back(0);
  AppendBe16(out, endpoint.port());
  if (address.is_v4()) Append(out, address.to_v4().to_bytes());
  else Append(out, address.to_v6().to_bytes());
}

// Reads what AppendEndpoint wrote; family 0 (allowed when `optional`) is "none".
bool ReadEndpoint(Reader& r, bool optional, boost::asio::ip::tcp::endpoint* endpoint, std::string* error) {
  uint8_t family = r.U8();
  r.U8();  // reserved
  uint16_t port = r.U16();
  if (!r.ok()) return false;
  if (family == 0 && optional) {
    *endpoint = {};
    return true;
  }
  boost::asio::ip::address address;
  if (family == 4) {
    boost::asio::ip::address_v4::bytes_type b{};
    auto raw = r.Bytes(b.size());
    if (r.ok()) std::memcpy(b.data(), raw.data(), b.size());
    address = boost::asio::ip::address_v4(b);
  } else if (family == 6) {
    boost::asio::ip::address_v6::bytes_type b{};
    auto raw = r.Bytes(b.size());
    if (r.ok()) std::memcpy(b.data(), raw.data(), b.size());
    address = boost::asio::ip::address_v6(b);
  } else {
    *error = "hello address family " + std::to_string(family) + " is neither 4 nor 6";
    return false;
  }
  *endpoint = {address, port};
  return r.ok();
}

void AppendMagic(std::vector<uint8_t>& out) {
  Append(out, kHelloMagic);
}

bool CheckMagic(Reader& r, std::string* error) {
  auto magic = r.Bytes(kHelloMagic.size());
  if (!r.ok() || std::memcmp(magic.data(), kHelloMagic.data(), kHelloMagic.size()) != 0) {
    *error = "bad magic (not a wanopt peer)";
    return false;
  }
  return true;
}

std::optional<Policy> ReadPolicy(Reader& r, std::string* error, const char* what) {
  auto policy = PolicyFromLetter(static_cast<char>(r.U8()));
  if (!policy) *error = std::string("invalid policy letter in ") + what;
  return policy;
}

}  // namespace

std::string FormatDeviceId(const DeviceId& id) {
  char text[18];
  std::snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", id[0], id[1], id[2], id[3],
                id[4], id[5]);
  return text;
}

std::optional<DeviceId> ParseDeviceId(std::string_view text) {
  DeviceId id{};
  if (text.size() != 17) return std::nullopt;
  for (size_t i = 0; i < 6; ++i) {
    if (i > 0 && text[i * 3 - 1] != ':') return std::nullopt;
    unsigned value = 0;
    for (char c : text.substr(i * 3, 2)) {
      value <<= 4;
      if (c >= '0' && c <= '9') value |= c - '0';
      else if (c >= 'a' && c <= 'f') value |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') value |= c - 'A' + 10;
      else return std::nullopt;
    }
    id[i] = static_cast<uint8_t>(value);
  }
  return id;
}

std::string_view HelloStatusName(HelloStatus status) {
  switch (status) {
    case HelloStatus::kOk: return "ok";
    case HelloStatus::kRefused: return "refused";
    case HelloStatus::kUnreachable: return "unreachable";
    case HelloStatus::kTimeout: return "timeout";
    case HelloStatus::kVersionUnsupported: return "version-unsupported";
    case HelloStatus::kRejected: return "rejected";
  }
  return "unknown";
}

std::vector<uint8_t> EncodeHello(const Hello& hello) {
  std::vector<uint8_t> out;
  AppendMagic(out);
  out.push_back(hello.version);
  out.push_back(static_cast<uint8_t>(PolicyLetter(hello.offered)));
  Append(out, hello.device_id);
  AppendEndpoint(out, hello.destination);
  if (hello.source.port() == 0) {
    Append(out, std::array<uint8_t, 4>{0, 0, 0, 0});  // family 0: no source
  } else {
    AppendEndpoint(out, hello.source);
  }
  out.push_back(static_cast<uint8_t>(hello.modules.size()));
  for (const auto& name : hello.modules) {
    out.push_back(static_cast<uint8_t>(name.size()));
    Append(out, std::string_view(name));
  }
  out.push_back(hello.dre_seed ? 1 : 0);
  if (hello.dre_seed) {
    Append(out, *hello.dre_seed);
    uint8_t instance[8];
    bytes::PutBe64(instance, hello.store_instance);
    Append(out, instance);
  }
  if (hello.opener) {
    AppendEndpoint(out, boost::asio::ip::tcp::endpoint(*hello.opener, 0));
  } else if (hello.lz_window_log) {
    Append(out, std::array<uint8_t, 4>{0, 0, 0, 0});  // family 0: no opener
  }
  if (hello.lz_window_log) out.push_back(hello.lz_window_log);
  return out;
}

std::optional<Hello> DecodeHello(std::span<const uint8_t> payload, std::string* error) {
  Reader r(payload);
  if (!CheckMagic(r, error)) return std::nullopt;
  Hello hello;
  hello.version = r.U8();
  if (r.ok() && hello.version != kProtocolVersion) {
    *error = "unsupported protocol version " + std::to_string(hello.version);
    return std::nullopt;
  }
  auto offered = ReadPolicy(r, error, "hello");
  auto id = r.Bytes(6);
  if (!r.ok()) {
    *error = "hello truncated";
    return std::nullopt;
  }
  if (!offered) return std::nullopt;
  hello.offered = *offered;
  std::memcpy(hello.device_id.data(), id.data(), 6);
  if (!ReadEndpoint(r, false, &hello.destination, error) || !ReadEndpoint(r, true, &hello.source, error)) {
    if (error->empty()) *error = "hello truncated";
    return std::nullopt;
  }
  size_t count = r.U8();
  if (r.ok() && count > kMaxModules) {
    *error = "hello lists " + std::to_string(count) + " modules, more than " +
             std::to_string(kMaxModules);
    return std::nullopt;
  }
  for (size_t i = 0; r.ok() && i < count; ++i) {
    size_t length = r.U8();
    auto name = r.Bytes(length);
    if (r.ok() && (length == 0 || length > kMaxModuleNameLength)) {
      *error = "hello module name length " + std::to_string(length) + " out of range";
      return std::nullopt;
    }
    hello.modules.emplace_back(name.begin(), name.end());
  }
  if (!r.ok()) {
    *error = "hello truncated";
    return std::nullopt;
  }
  uint8_t dre = r.U8();
  if (!r.ok()) {
    *error = "hello truncated";
    return std::nullopt;
  }
  if (dre == 1) {
    auto seed = r.Bytes(32);
    uint32_t hi = r.U32(), lo = r.U32();
    if (!r.ok()) {
      *error = "hello truncated in its DRE section";
      return std::nullopt;
    }
    std::array<uint8_t, 32> s;
    std::memcpy(s.data(), seed.data(), 32);
    hello.dre_seed = s;
    hello.store_instance = uint64_t{hi} << 32 | lo;
  }
  if (!r.at_end()) {
    boost::asio::ip::tcp::endpoint opener;
    if (!ReadEndpoint(r, true, &opener, error) || !r.ok()) {
      if (error->empty()) *error = "hello truncated in its opener address";
      return std::nullopt;
    }
    if (!opener.address().is_unspecified()) hello.opener = opener.address();
  }
  if (!r.at_end()) hello.lz_window_log = r.U8();
  return hello;
}

std::vector<uint8_t> EncodeHelloAck(const HelloAck& ack) {
  std::vector<uint8_t> out;
  AppendMagic(out);
  out.push_back(ack.version);
  out.push_back(static_cast<uint8_t>(ack.status));
  out.push_back(static_cast<uint8_t>(PolicyLetter(ack.offered)));
  out.push_back(static_cast<uint8_t>(PolicyLetter(ack.negotiated)));
  out.push_back(static_cast<uint8_t>(PolicyLetter(ack.applied)));
  out.push_back(ack.lz_window_log);
  Append(out, ack.device_id);
  AppendBe32(out, ack.accepted_modules);
  AppendBe32(out, static_cast<uint32_t>(ack.store_instance >> 32));
  AppendBe32(out, static_cast<uint32_t>(ack.store_instance));
  if (ack.acceptor) AppendEndpoint(out, *ack.acceptor);
  return out;
}

std::optional<HelloAck> DecodeHelloAck(std::span<const uint8_t> payload, std::string* error) {
  Reader r(payload);
  if (!CheckMagic(r, error)) return std::nullopt;
  HelloAck ack;
  ack.version = r.U8();
  uint8_t status = r.U8();
  auto offered = ReadPolicy(r, error, "hello-ack");
  auto negotiated = ReadPolicy(r, error, "hello-ack");
  auto applied = ReadPolicy(r, error, "hello-ack");
  ack.lz_window_log = r.U8();
  auto id = r.Bytes(6);
  ack.accepted_modules = r.U32();
  if (!r.ok()) {
    *error = "hello-ack truncated";
    return std::nullopt;
  }
  uint32_t hi = r.U32(), lo = r.U32();
  if (r.ok()) ack.store_instance = uint64_t{hi} << 32 | lo;
  if (r.ok() && !r.at_end()) {
    boost::asio::ip::tcp::endpoint acceptor;
    if (!ReadEndpoint(r, true, &acceptor, error) || !r.ok()) {
      if (error->empty()) *error = "hello-ack truncated";
      return std::nullopt;
    }
    if (!acceptor.address().is_unspecified()) ack.acceptor = acceptor;
  }
  if (!offered || !negotiated || !applied) return std::nullopt;
  if (status > static_cast<uint8_t>(HelloStatus::kRejected)) {
    *error = "hello-ack status " + std::to_string(status) + " unknown";
    return std::nullopt;
  }
  ack.status = static_cast<HelloStatus>(status);
  ack.offered = *offered;
  ack.negotiated = *negotiated;
  ack.applied = *applied;
  std::memcpy(ack.device_id.data(), id.data(), 6);
  return ack;
}

}  // namespace wanopt::channel
