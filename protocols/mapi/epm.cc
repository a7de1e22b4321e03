#include "protocols/mapi/epm.h"

#include <algorithm>

#include "protocols/common/dcerpc/reader.h"

namespace wanopt::protocols::epm {

using internal::Get16;
using internal::Get32;
using internal::Reader;

namespace {

// Reads a 19-byte UUID floor LHS (0x0d, UUID, major) and its 2-byte RHS (minor);
// both little-endian, as every integer of the tower encoding.
SyntaxId UuidFloor(const uint8_t* lhs, const uint8_t* rhs) {
  SyntaxId s;
  s.uuid = Uuid::Read(lhs + 1, true);
  s.major = Get16(lhs + 17, true);
  s.minor = Get16(rhs, true);
  return s;
}

bool IsUuidFloor(const Floor& f) { return f.protocol == floor_protocol::kUuid; }

// A twr_t embedded in an NDR stub: conformance, tower_length, octets. `r` is at
// the tower (alignment is done here).
Result<Tower> ReadNdrTower(Reader& r, std::span<const uint8_t> stub) {
  r.Align(4);
  uint32_t conformance = r.U32();
  uint32_t length = r.U32();
  if (!r.ok()) return Malformed("tower header beyond the stub");
  if (conformance != length) return Malformed("tower conformance differs from tower_length");
  if (length > r.remaining()) return Malformed("tower_length beyond the stub");
  size_t offset = r.pos();
  r.Skip(length);
  return ParseTower(stub.subspan(offset, length), offset);
}

}  // namespace

Result<Tower> ParseTower(std::span<const uint8_t> octets, size_t offset) {
  Reader r(octets, 0, /*little_endian=*/true);
  Tower t;
  t.offset = offset;
  t.length = static_cast<uint32_t>(octets.size());
  uint16_t floor_count = r.U16();
  if (!r.ok()) return Malformed("tower shorter than its floor count");
  if (floor_count == 0) return Malformed("tower without floors");
  // A floor takes at least 5 bytes (two lengths and a protocol byte).
  if (size_t{floor_count} * 5 > r.remaining()) return Malformed("tower floor count beyond the tower");
  if (floor_count > kMaxFloors) return Unsupported("tower with too many floors");
  t.floors.reserve(floor_count);
  for (int i = 0; i < floor_count; ++i) {
    Floor f;
    f.lhs_length = r.U16();
    f.lhs_offset = r.pos();
    auto lhs = r.Bytes(f.lhs_length);
    f.rhs_length = r.U16();
    f.rhs_offset = r.pos();
    r.Skip(f.rhs_length);
    if (!r.ok()) return Malformed("tower floor beyond the tower");
    if (f.lhs_length == 0) return Malformed("tower floor without a protocol identifier");
    f.protocol = lhs[0];
    f.lhs_offset += offset;
    f.rhs_offset += offset;
    t.floors.push_back(f);
  }
  if (r.remaining() != 0) return Malformed("bytes after the last tower floor");

  auto at = [&](size_t stub_offset) { return octets.data() + (stub_offset - offset); };
  for (size_t i = 0; i < 2 && i < t.floors.size(); ++i) {
    const Floor& f = t.floors[i];
    if (!IsUuidFloor(f)) continue;
    if (f.lhs_length != 19 || f.rhs_length != 2) return Malformed("UUID tower floor of the wrong size");
    (i == 0 ? t.interface : t.transfer_syntax) = UuidFloor(at(f.lhs_offset), at(f.rhs_offset));
  }
  for (const Floor& f : t.floors) {
    if (f.protocol == floor_protocol::kTcp && !t.tcp_port) {
      if (f.lhs_length != 1 || f.rhs_length != 2) return Malformed("TCP tower floor of the wrong size");
      t.tcp_port = Get16(at(f.rhs_offset), /*little_endian=*/false);
      t.tcp_port_offset = f.rhs_offset;
    } else if (f.protocol == floor_protocol::kIp && !t.ipv4) {
      if (f.lhs_length != 1 || f.rhs_length != 4) return Malformed("IP tower floor of the wrong size");
      t.ipv4 = Get32(at(f.rhs_offset), /*little_endian=*/false);
    }
  }
  return t;
}

Result<MapRequest> ParseMapRequest(std::span<const uint8_t> stub, bool little_endian) {
  Reader r(stub, 0, little_endian);
  MapRequest q;
  if (r.U32() != 0) q.object = r.ReadUuid();
  uint32_t tower_ref = r.U32();
  if (!r.ok()) return Malformed("ept_map request shorter than its pointers");
  if (tower_ref != 0) {
    auto tower = ReadNdrTower(r, stub);
    if (!tower) return tower.error();
    q.map_tower = std::move(*tower);
  }
  r.Align(4);
  auto handle = r.Bytes(20);
  q.max_towers = r.U32();
  if (!r.ok()) return Malformed("ept_map request shorter than its handle and max_towers");
  std::copy(handle.begin(), handle.end(), q.entry_handle.begin());
  return q;
}

Result<MapResponse> ParseMapResponse(std::span<const uint8_t> stub, bool little_endian) {
  Reader r(stub, 0, little_endian);
  MapResponse s;
  auto handle = r.Bytes(20);
  s.num_towers = r.U32();
  s.max_count = r.U32();
  uint32_t array_offset = r.U32();
  uint32_t actual_count = r.U32();
  if (!r.ok()) return Malformed("ept_map response shorter than its tower array header");
  std::copy(handle.begin(), handle.end(), s.entry_handle.begin());
  if (array_offset != 0) return Unsupported("tower array with a non-zero offset");
  if (actual_count != s.num_towers) return Malformed("tower array length differs from num_towers");
  if (actual_count > s.max_count) return Malformed("tower array longer than its maximum");
  if (size_t{actual_count} * 4 > r.remaining()) return Malformed("num_towers beyond the stub");
  if (actual_count > kMaxTowers) return Unsupported("more towers than the parser takes");

  std::vector<uint32_t> referents(actual_count);
  for (auto& ref : referents) ref = r.U32();
  // Full pointers: a referent id seen before points to the same tower, whose bytes
  // are on the wire once, at its first appearance.
  std::vector<std::pair<uint32_t, size_t>> seen;  // referent id -> index in s.towers
  s.towers.reserve(actual_count);
  for (uint32_t ref : referents) {
    if (ref == 0) continue;
    auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& p) { return p.first == ref; });
    if (it != seen.end()) {
      s.towers.push_back(s.towers[it->second]);
      continue;
    }
    auto tower = ReadNdrTower(r, stub);
    if (!tower) return tower.error();
    seen.emplace_back(ref, s.towers.size());
    s.towers.push_back(std::move(*tower));
  }
  r.Align(4);
  s.status = r.U32();
  if (!r.ok()) return Malformed("ept_map response ends before its status");
  return s;
}

std::vector<Endpoint> ListEndpoints(const MapResponse& response) {
  std::vector<Endpoint> out;
  for (const Tower& t : response.towers) {
    if (!t.interface || !t.tcp_port) continue;
    out.push_back({*t.interface, t.ipv4, *t.tcp_port});
  }
  return out;
}

Result<std::vector<PortRewrite>> RewriteMapResponsePorts(std::span<uint8_t> stub, bool little_endian,
                                                         std::span<const PortRemap> remaps) {
  auto response = ParseMapResponse(stub, little_endian);
  if (!response) return response.error();
  std::vector<PortRewrite> done;
  std::vector<size_t> written;  // port offsets, so a repeated full pointer is rewritten once
  for (const Tower& t : response->towers) {
    if (!t.interface || !t.tcp_port) continue;
    auto remap = std::find_if(remaps.begin(), remaps.end(),
                              [&](const PortRemap& m) { return m.interface == t.interface->uuid; });
    if (remap == remaps.end() || remap->new_port == *t.tcp_port) continue;
    if (std::find(written.begin(), written.end(), t.tcp_port_offset) != written.end()) continue;
    written.push_back(t.tcp_port_offset);
    done.push_back({*t.interface, t.ipv4, *t.tcp_port, remap->new_port, t.tcp_port_offset});
  }
  // Parsing succeeded and every offset came from it: now write.
  for (const PortRewrite& w : done) {
    stub[w.stub_offset] = static_cast<uint8_t>(w.new_port >> 8);
    stub[w.stub_offset + 1] = static_cast<uint8_t>(w.new_port);
  }
  return done;
}

Result<std::vector<PortRewrite>> RewriteMapResponsePdus(std::span<uint8_t> pdus, std::span<const PortRemap> remaps,
                                                        const Limits& limits) {
  if (pdus.empty()) return Malformed("no PDU to rewrite");
  StubAssembler call;
  size_t pos = 0;
  while (pos < pdus.size()) {
    Split split = SplitPdu(pdus.subspan(pos), limits);
    if (split.kind == Split::kNeedMore) return Malformed("the held bytes end inside a PDU");
    if (split.kind == Split::kMalformed) return split.error;
    if (split.pdu.header.ptype != PType::kResponse) return Malformed("not a response PDU");
    auto complete = call.Add(split.pdu, pos);
    if (!complete) return complete.error();
    pos += split.pdu.bytes.size();
    if (*complete && pos != pdus.size()) return Malformed("bytes after the last fragment of the call");
  }
  if (!call.complete()) return Malformed("the call's last fragment is missing");
  if (call.protected_by_auth()) return Unsupported("response protected by packet, integrity or privacy auth");
  auto stub = call.mutable_stub();
  auto done = RewriteMapResponsePorts(stub, call.little_endian(), remaps);
  if (!done) return done.error();
  for (const PortRewrite& w : *done) {
    for (size_t k = 0; k < 2; ++k) pdus[call.StreamOffset(w.stub_offset + k)] = stub[w.stub_offset + k];
  }
  return done;
}

}  // namespace wanopt::protocols::epm
