// WCCPv2 message header, the component walk, and MD5 service security.
#include "wanopt/wccp/message.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "util/bytes.h"
#include "wanopt/wccp/codec.h"

namespace wanopt::wccp {
namespace {

using internal::Reader;
using internal::Writer;

// Appends one component: header, body, then its length patched in.
template <typename T, typename F>
void Put(Writer& w, uint16_t type, const std::optional<T>& v, F encode) {
  if (!v) return;
  w.U16(type);
  size_t length_at = w.size();
  w.U16(0);
  size_t start = w.size();
  encode(w, *v);
  w.PatchU16(length_at, static_cast<uint16_t>(std::min<size_t>(w.size() - start, 0xFFFF)));
}

// Decodes a body into `slot`, refusing a second copy of the same component.
template <typename T, typename F>
bool Take(std::optional<T>& slot, std::span<const uint8_t> body, F decode) {
  if (slot) return false;
  T value{};
  if (!decode(body, value)) return false;
  slot = std::move(value);
  return true;
}

// Where an MD5 digest lives in `wire`, if its message carries one; the security
// component may be anywhere in the message, so the walk finds it.
std::optional<size_t> DigestOffset(std::span<const uint8_t> wire) {
  auto message = Decode(wire);
  if (!message || !message->security || message->security->option != kSecurityMd5) return std::nullopt;
  size_t pos = kHeaderSize;
  while (pos + 4 <= wire.size()) {
    uint16_t type = bytes::GetBe16(&wire[pos]);
    uint16_t len = bytes::GetBe16(&wire[pos + 2]);
    if (type == component::kSecurityInfo) return pos + 8;  // after the header and the option
    pos += 4 + len;
  }
  return std::nullopt;
}

bool Digest(std::span<const uint8_t> wire, size_t digest_at, std::string_view password, uint8_t out[16]) {
  uint8_t key[8] = {};
  std::memcpy(key, password.data(), std::min<size_t>(password.size(), sizeof key));
  static const uint8_t zeros[16] = {};
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned len = 0;
  return ctx && EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr) == 1 &&
         EVP_DigestUpdate(ctx.get(), key, sizeof key) == 1 &&
         EVP_DigestUpdate(ctx.get(), wire.data(), digest_at) == 1 &&
         EVP_DigestUpdate(ctx.get(), zeros, 16) == 1 &&
         EVP_DigestUpdate(ctx.get(), wire.data() + digest_at + 16, wire.size() - digest_at - 16) == 1 &&
         EVP_DigestFinal_ex(ctx.get(), out, &len) == 1 && len == 16;
}

}  // namespace

std::optional<uint32_t> Capabilities::Get(uint16_t type) const {
  for (const auto& e : elements)
    if (e.type == type && e.value.size() == 4) return bytes::GetBe32(e.value.data());
  return std::nullopt;
}

void Capabilities::Set(uint16_t type, uint32_t value) {
  std::vector<uint8_t> v(4);
  bytes::PutBe32(v.data(), value);
  for (auto& e : elements)
    if (e.type == type) {
      e.value = std::move(v);
      return;
    }
  elements.push_back({type, std::move(v)});
}

std::optional<std::vector<uint8_t>> Encode(const Message& m) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.U32(static_cast<uint32_t>(m.type));
  w.U16(kVersion);
  w.U16(0);
  using namespace internal;
  Put(w, component::kSecurityInfo, m.security, EncodeSecurity);
  Put(w, component::kServiceInfo, m.service, EncodeService);
  Put(w, component::kRouterIdentity, m.router_identity, EncodeRouterIdentity);
  Put(w, component::kWebCacheIdentity, m.web_cache_identity, EncodeWebCacheIdentity);
  Put(w, component::kRouterView, m.router_view, EncodeRouterView);
  Put(w, component::kWebCacheView, m.web_cache_view, EncodeWebCacheView);
  Put(w, component::kAssignment, m.assignment, EncodeHashAssignment);
  Put(w, component::kQuery, m.query, EncodeQuery);
  Put(w, component::kAlternateAssignment, m.alternate_assignment, EncodeAlternateAssignment);
  Put(w, component::kCapabilities, m.capabilities, EncodeCapabilities);
  Put(w, component::kCommandExtension, m.commands, EncodeCommands);
  for (const auto& u : m.unknown) {
    if (u.body.size() > 0xFFFF) return std::nullopt;
    w.U16(u.type);
    w.U16(static_cast<uint16_t>(u.body.size()));
    w.Bytes(u.body);
  }
  if (out.size() - kHeaderSize > 0xFFFF) return std::nullopt;
  w.PatchU16(6, static_cast<uint16_t>(out.size() - kHeaderSize));
  return out;
}

Result<Message> Decode(std::span<const uint8_t> wire) {
  Reader r(wire);
  Message m;
  uint32_t type = r.U32();
  uint16_t version = r.U16();
  uint16_t length = r.U16();
  if (!r.ok()) return Error{"shorter than the WCCP header"};
  if (version != kVersion) return Error{"not WCCP version 2.0"};
  if (type < 10 || type > 13) return Error{"unknown WCCPv2 message type"};
  if (length != r.remaining()) return Error{"message length does not match the datagram"};
  m.type = static_cast<MessageType>(type);
  using namespace internal;
  while (r.remaining() > 0) {
    uint16_t ctype = r.U16();
    uint16_t clen = r.U16();
    auto body = r.Bytes(clen);
    if (!r.ok()) return Error{"component runs past the message"};
    bool good = true;
    switch (ctype) {
      case component::kSecurityInfo: good = Take(m.security, body, DecodeSecurity); break;
      case component::kServiceInfo: good = Take(m.service, body, DecodeService); break;
      case component::kRouterIdentity: good = Take(m.router_identity, body, DecodeRouterIdentity); break;
      case component::kWebCacheIdentity: good = Take(m.web_cache_identity, body, DecodeWebCacheIdentity); break;
      case component::kRouterView: good = Take(m.router_view, body, DecodeRouterView); break;
      case component::kWebCacheView: good = Take(m.web_cache_view, body, DecodeWebCacheView); break;
      case component::kAssignment: good = Take(m.assignment, body, DecodeHashAssignment); break;
      case component::kQuery: good = Take(m.query, body, DecodeQuery); break;
      case component::kAlternateAssignment:
        good = Take(m.alternate_assignment, body, DecodeAlternateAssignment);
        break;
      case component::kCapabilities: good = Take(m.capabilities, body, DecodeCapabilities); break;
      case component::kCommandExtension: good = Take(m.commands, body, DecodeCommands); break;
      default:
        if (m.unknown.size() >= 16) return Error{"too many unknown components"};
        m.unknown.push_back({ctype, std::vector<uint8_t>(body.begin(), body.end())});
    }
    if (!good) return Error{"malformed or repeated component"};
  }
  return m;
}

bool Sign(std::span<uint8_t> wire, std::string_view password) {
  auto at = DigestOffset(wire);
  if (!at) return false;
  uint8_t digest[16];
  if (!Digest(wire, *at, password, digest)) return false;
  std::memcpy(wire.data() + *at, digest, 16);
  return true;
}

bool Verify(std::span<const uint8_t> wire, std::string_view password) {
  auto at = DigestOffset(wire);
  if (!at) return false;
  uint8_t digest[16];
  if (!Digest(wire, *at, password, digest)) return false;
  return CRYPTO_memcmp(digest, wire.data() + *at, 16) == 0;
}

}  // namespace wanopt::wccp
