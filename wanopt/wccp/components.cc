// WCCPv2 component bodies: one Decode/Encode pair per component (see message.h for
// the layouts' meaning and codec.h for the reader's failure rule).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "wanopt/wccp/codec.h"
#include "wanopt/wccp/message.h"

namespace wanopt::wccp::internal {
namespace {

RouterIdElement ReadRouterId(Reader& r) { return {r.U32(), r.U32()}; }
AssignmentKey ReadKey(Reader& r) { return {r.U32(), r.U32()}; }

bool ReadAddresses(Reader& r, size_t max, std::vector<uint32_t>& out) {
  uint32_t n = r.U32();
  if (!r.ok() || !r.Count(n, max, 4)) return false;
  out.resize(n);
  for (auto& a : out) a = r.U32();
  return r.ok();
}
void WriteAddresses(Writer& w, const std::vector<uint32_t>& v) {
  w.U32(static_cast<uint32_t>(v.size()));
  for (uint32_t a : v) w.U32(a);
}

bool ReadRouterAssignments(Reader& r, std::vector<RouterAssignment>& out) {
  uint32_t n = r.U32();
  if (!r.ok() || !r.Count(n, kMaxRouters, 12)) return false;
  out.resize(n);
  for (auto& a : out) a = {r.U32(), r.U32(), r.U32()};
  return r.ok();
}
void WriteRouterAssignments(Writer& w, const std::vector<RouterAssignment>& v) {
  w.U32(static_cast<uint32_t>(v.size()));
  for (const auto& a : v) {
    w.U32(a.ip);
    w.U32(a.receive_id);
    w.U32(a.change_number);
  }
}

// Mask/Value Set List: count, then per set a Mask Element (12 bytes), a value count
// and the Value Elements (16 bytes each).
bool ReadMaskValueSets(Reader& r, std::vector<MaskValueSet>& out) {
  uint32_t n = r.U32();
  if (!r.ok() || !r.Count(n, kMaxMaskSets, 16)) return false;
  out.resize(n);
  for (auto& set : out) {
    set.mask = {r.U32(), r.U32(), r.U16(), r.U16()};
    uint32_t values = r.U32();
    if (!r.ok() || !r.Count(values, kMaxValues, 16)) return false;
    set.values.resize(values);
    for (auto& v : set.values) v = {r.U32(), r.U32(), r.U16(), r.U16(), r.U32()};
  }
  return r.ok();
}
void WriteMaskValueSets(Writer& w, const std::vector<MaskValueSet>& sets) {
  w.U32(static_cast<uint32_t>(sets.size()));
  for (const auto& set : sets) {
    w.U32(set.mask.src_ip_mask);
    w.U32(set.mask.dst_ip_mask);
    w.U16(set.mask.src_port_mask);
    w.U16(set.mask.dst_port_mask);
    w.U32(static_cast<uint32_t>(set.values.size()));
    for (const auto& v : set.values) {
      w.U32(v.src_ip);
      w.U32(v.dst_ip);
      w.U16(v.src_port);
      w.U16(v.dst_port);
      w.U32(v.cache_ip);
    }
  }
}

// One Web-Cache Identity Element from the reader (it has no length of its own: its
// size follows from its flags and counts).
bool ReadIdentity(Reader& r, WebCacheIdentity& out) {
  out.ip = r.U32();
  out.hash_revision = r.U16();
  uint16_t flags = r.U16();
  if (!r.ok()) return false;
  if (flags & ~uint16_t{0x0007}) return false;  // reserved bits, and the version request (rev1) we do not speak
  out.historical = flags & 1;
  unsigned type = (flags >> 1) & 3;
  if (type == 3) return false;  // extended assignment data: not supported
  out.data_type = static_cast<WebCacheIdentity::DataType>(type);
  if (out.data_type == WebCacheIdentity::kHash) {
    auto bits = r.Bytes(32);
    if (!r.ok()) return false;
    std::copy(bits.begin(), bits.end(), out.bucket_bits.begin());
  } else if (out.data_type == WebCacheIdentity::kMask) {
    if (!ReadMaskValueSets(r, out.mask_sets)) return false;
  }
  if (out.data_type != WebCacheIdentity::kNone) {
    out.weight = r.U16();
    out.status = r.U16();
  }
  return r.ok();
}
void WriteIdentity(Writer& w, const WebCacheIdentity& v) {
  w.U32(v.ip);
  w.U16(v.hash_revision);
  w.U16(static_cast<uint16_t>((v.historical ? 1 : 0) | (v.data_type & 3) << 1));
  if (v.data_type == WebCacheIdentity::kHash) w.Bytes(v.bucket_bits);
  if (v.data_type == WebCacheIdentity::kMask) WriteMaskValueSets(w, v.mask_sets);
  if (v.data_type != WebCacheIdentity::kNone) {
    w.U16(v.weight);
    w.U16(v.status);
  }
}

bool ReadHashAssignment(Reader& r, HashAssignment& out) {
  out.key = ReadKey(r);
  if (!ReadRouterAssignments(r, out.routers) || !ReadAddresses(r, kMaxCaches, out.caches)) return false;
  auto buckets = r.Bytes(256);
  if (!r.ok()) return false;
  std::copy(buckets.begin(), buckets.end(), out.buckets.begin());
  return true;
}
void WriteHashAssignment(Writer& w, const HashAssignment& v) {
  w.U32(v.key.ip);
  w.U32(v.key.change_number);
  WriteRouterAssignments(w, v.routers);
  WriteAddresses(w, v.caches);
  w.Bytes(v.buckets);
}

// (type u16, length u16, value) elements up to the end of the body.
template <typename T>
bool ReadTypedList(std::span<const uint8_t> body, std::vector<T>& out, std::vector<uint8_t> T::*value) {
  Reader r(body);
  while (r.remaining() > 0) {
    T e;
    e.type = r.U16();
    uint16_t len = r.U16();
    auto bytes = r.Bytes(len);
    if (!r.ok() || out.size() >= 64) return false;
    (e.*value).assign(bytes.begin(), bytes.end());
    out.push_back(std::move(e));
  }
  return r.ok();
}
template <typename T>
void WriteTypedList(Writer& w, const std::vector<T>& list, const std::vector<uint8_t> T::*value) {
  for (const auto& e : list) {
    w.U16(e.type);
    w.U16(static_cast<uint16_t>((e.*value).size()));
    w.Bytes(e.*value);
  }
}

}  // namespace

bool DecodeSecurity(std::span<const uint8_t> body, SecurityInfo& out) {
  Reader r(body);
  out.option = r.U32();
  if (out.option == kSecurityMd5) {
    auto d = r.Bytes(16);
    if (r.ok()) std::copy(d.begin(), d.end(), out.digest.begin());
  } else if (out.option != kSecurityNone) {
    return false;
  }
  return r.done();
}
void EncodeSecurity(Writer& w, const SecurityInfo& v) {
  w.U32(v.option);
  if (v.option == kSecurityMd5) w.Bytes(v.digest);
}

bool DecodeService(std::span<const uint8_t> body, ServiceInfo& out) {
  Reader r(body);
  out.type = r.U8();
  out.id = r.U8();
  out.priority = r.U8();
  out.protocol = r.U8();
  out.flags = r.U32();
  for (auto& p : out.ports) p = r.U16();
  return r.done() && out.type <= ServiceInfo::kDynamic;
}
void EncodeService(Writer& w, const ServiceInfo& v) {
  w.U8(v.type);
  w.U8(v.id);
  w.U8(v.priority);
  w.U8(v.protocol);
  w.U32(v.flags);
  for (uint16_t p : v.ports) w.U16(p);
}

bool DecodeRouterIdentity(std::span<const uint8_t> body, RouterIdentity& out) {
  Reader r(body);
  out.router = ReadRouterId(r);
  out.sent_to = r.U32();
  return ReadAddresses(r, kMaxReceivedFrom, out.received_from) && r.done();
}
void EncodeRouterIdentity(Writer& w, const RouterIdentity& v) {
  w.U32(v.router.ip);
  w.U32(v.router.receive_id);
  w.U32(v.sent_to);
  WriteAddresses(w, v.received_from);
}

bool DecodeWebCacheIdentity(std::span<const uint8_t> body, WebCacheIdentity& out) {
  Reader r(body);
  return ReadIdentity(r, out) && r.done();
}
void EncodeWebCacheIdentity(Writer& w, const WebCacheIdentity& v) { WriteIdentity(w, v); }

bool DecodeRouterView(std::span<const uint8_t> body, RouterView& out) {
  Reader r(body);
  out.member_change_number = r.U32();
  out.key = ReadKey(r);
  if (!ReadAddresses(r, kMaxRouters, out.routers)) return false;
  uint32_t n = r.U32();
  if (!r.ok() || !r.Count(n, kMaxCaches, 8)) return false;
  out.caches.resize(n);
  for (auto& c : out.caches)
    if (!ReadIdentity(r, c)) return false;
  return r.done();
}
void EncodeRouterView(Writer& w, const RouterView& v) {
  w.U32(v.member_change_number);
  w.U32(v.key.ip);
  w.U32(v.key.change_number);
  WriteAddresses(w, v.routers);
  w.U32(static_cast<uint32_t>(v.caches.size()));
  for (const auto& c : v.caches) WriteIdentity(w, c);
}

bool DecodeWebCacheView(std::span<const uint8_t> body, WebCacheView& out) {
  Reader r(body);
  out.change_number = r.U32();
  uint32_t n = r.U32();
  if (!r.ok() || !r.Count(n, kMaxRouters, 8)) return false;
  out.routers.resize(n);
  for (auto& id : out.routers) id = ReadRouterId(r);
  return ReadAddresses(r, kMaxCaches, out.caches) && r.done();
}
void EncodeWebCacheView(Writer& w, const WebCacheView& v) {
  w.U32(v.change_number);
  w.U32(static_cast<uint32_t>(v.routers.size()));
  for (const auto& id : v.routers) {
    w.U32(id.ip);
    w.U32(id.receive_id);
  }
  WriteAddresses(w, v.caches);
}

bool DecodeHashAssignment(std::span<const uint8_t> body, HashAssignment& out) {
  Reader r(body);
  return ReadHashAssignment(r, out) && r.done();
}
void EncodeHashAssignment(Writer& w, const HashAssignment& v) { WriteHashAssignment(w, v); }

bool DecodeAlternateAssignment(std::span<const uint8_t> body, AlternateAssignment& out) {
  Reader r(body);
  out.type = r.U16();
  uint16_t len = r.U16();
  auto inner_bytes = r.Bytes(len);
  if (!r.done()) return false;  // the assignment fills the component
  Reader inner(inner_bytes);
  switch (out.type) {
    case AlternateAssignment::kHash:
      return ReadHashAssignment(inner, out.hash) && inner.done();
    case AlternateAssignment::kMask:
      out.mask.key = ReadKey(inner);
      return ReadRouterAssignments(inner, out.mask.routers) && ReadMaskValueSets(inner, out.mask.sets) &&
             inner.done();
    default:
      out.other.assign(inner_bytes.begin(), inner_bytes.end());
      return true;
  }
}
void EncodeAlternateAssignment(Writer& w, const AlternateAssignment& v) {
  w.U16(v.type);
  size_t length_at = w.size();
  w.U16(0);
  size_t start = w.size();
  if (v.type == AlternateAssignment::kHash) {
    WriteHashAssignment(w, v.hash);
  } else if (v.type == AlternateAssignment::kMask) {
    w.U32(v.mask.key.ip);
    w.U32(v.mask.key.change_number);
    WriteRouterAssignments(w, v.mask.routers);
    WriteMaskValueSets(w, v.mask.sets);
  } else {
    w.Bytes(v.other);
  }
  w.PatchU16(length_at, static_cast<uint16_t>(w.size() - start));
}

bool DecodeQuery(std::span<const uint8_t> body, QueryInfo& out) {
  Reader r(body);
  out.router = ReadRouterId(r);
  out.sent_to = r.U32();
  out.target = r.U32();
  return r.done();
}
void EncodeQuery(Writer& w, const QueryInfo& v) {
  w.U32(v.router.ip);
  w.U32(v.router.receive_id);
  w.U32(v.sent_to);
  w.U32(v.target);
}

bool DecodeCapabilities(std::span<const uint8_t> body, Capabilities& out) {
  return ReadTypedList(body, out.elements, &CapabilityElement::value);
}
void EncodeCapabilities(Writer& w, const Capabilities& v) { WriteTypedList(w, v.elements, &CapabilityElement::value); }

bool DecodeCommands(std::span<const uint8_t> body, std::vector<Command>& out) {
  return ReadTypedList(body, out, &Command::data);
}
void EncodeCommands(Writer& w, const std::vector<Command>& v) { WriteTypedList(w, v, &Command::data); }

}  // namespace wanopt::wccp::internal
