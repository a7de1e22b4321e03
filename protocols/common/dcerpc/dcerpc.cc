#include "protocols/common/dcerpc/dcerpc.h"

#include <algorithm>

#include "protocols/common/dcerpc/reader.h"
#include "util/hex.h"

namespace wanopt::protocols::dcerpc {

using internal::Get16;
using internal::Get32;
using internal::Put16;
using internal::Put32;
using internal::Reader;

Uuid Uuid::Read(const uint8_t* p, bool little_endian) {
  Uuid u;
  Put32(u.bytes.data(), Get32(p, little_endian), false);
  Put16(u.bytes.data() + 4, Get16(p + 4, little_endian), false);
  Put16(u.bytes.data() + 6, Get16(p + 6, little_endian), false);
  std::copy(p + 8, p + 16, u.bytes.begin() + 8);
  return u;
}

void Uuid::Write(uint8_t* p, bool little_endian) const {
  Put32(p, Get32(bytes.data(), false), little_endian);
  Put16(p + 4, Get16(bytes.data() + 4, false), little_endian);
  Put16(p + 6, Get16(bytes.data() + 6, false), little_endian);
  std::copy(bytes.begin() + 8, bytes.end(), p + 8);
}

std::string Uuid::ToString() const {
  // 8-4-4-4-12 hex digits, the bytes in the order they are stored.
  std::span<const uint8_t> all(bytes);
  return HexLower(all.first(4)) + '-' + HexLower(all.subspan(4, 2)) + '-' + HexLower(all.subspan(6, 2)) + '-' +
         HexLower(all.subspan(8, 2)) + '-' + HexLower(all.subspan(10));
}

bool Uuid::IsNil() const {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

std::string_view InterfaceName(const Uuid& uuid) {
  if (uuid == uuids::kEmsmdb) return "EMSMDB";
  if (uuid == uuids::kAsyncEmsmdb) return "AsyncEMSMDB";
  if (uuid == uuids::kNspi) return "NSPI";
  if (uuid == uuids::kRfr) return "RFR";
  if (uuid == uuids::kEpm) return "EPM";
  // A few Windows interfaces people meet next to Exchange, for readable notes.
  static constexpr std::pair<Uuid, std::string_view> kOthers[] = {
      {*Uuid::Parse("12345778-1234-abcd-ef00-0123456789ac"), "SAMR"},
      {*Uuid::Parse("12345778-1234-abcd-ef00-0123456789ab"), "LSARPC"},
      {*Uuid::Parse("12345678-1234-abcd-ef00-01234567cffb"), "NETLOGON"},
      {*Uuid::Parse("e3514235-4b06-11d1-ab04-00c04fc2dcd2"), "DRSUAPI"},
      {*Uuid::Parse("afa8bd80-7d8a-11c9-bef4-08002b102989"), "MGMT"},
  };
  for (const auto& [known, name] : kOthers) {
    if (known == uuid) return name;
  }
  return {};
}

std::string_view PTypeName(PType ptype) {
  switch (ptype) {
    case PType::kRequest: return "request";
    case PType::kResponse: return "response";
    case PType::kFault: return "fault";
    case PType::kBind: return "bind";
    case PType::kBindAck: return "bind_ack";
    case PType::kBindNak: return "bind_nak";
    case PType::kAlterContext: return "alter_context";
    case PType::kAlterContextResp: return "alter_context_resp";
    case PType::kAuth3: return "auth3";
    case PType::kShutdown: return "shutdown";
    case PType::kCoCancel: return "co_cancel";
    case PType::kOrphaned: return "orphaned";
    case PType::kRts: return "rts";
  }
  return "unknown";
}

namespace {

bool KnownPType(uint8_t ptype, const Limits& limits) {
  switch (ptype) {
    case 0: case 2: case 3: case 11: case 12: case 13: case 14: case 15: case 16: case 17:
    case 18: case 19:
      return true;
    case 20:
      return limits.allow_rts;
    default:
      return false;  // 1, 4..10: connectionless only; anything else: not DCE/RPC
  }
}

// The smallest body (bytes after the header, before any auth trailer) each ptype has.
size_t MinBody(PType ptype) {
  switch (ptype) {
    case PType::kRequest:
    case PType::kResponse: return 8;
    case PType::kFault: return 12;
    case PType::kBind:
    case PType::kAlterContext: return 12;
    case PType::kBindAck:
    case PType::kAlterContextResp: return 10;
    case PType::kBindNak: return 2;
    case PType::kRts: return 4;
    default: return 0;
  }
}

// Checks whatever of the 16-byte header `bytes` already holds. Returns an Error as
// soon as the bytes present are enough to prove the stream is not DCE/RPC CO.
std::optional<Error> CheckHeaderPrefix(std::span<const uint8_t> bytes, const Limits& limits) {
  size_t n = bytes.size();
  if (n >= 1 && bytes[0] != 5) return Malformed("rpc_vers is not 5");
  if (n >= 2 && bytes[1] > 1) return Malformed("rpc_vers_minor is not 0 or 1");
  if (n >= 3 && !KnownPType(bytes[2], limits)) return Malformed("unknown or connectionless PDU type");
  if (n >= 5 && (bytes[4] >> 4) > 1) return Malformed("drep integer representation is neither big nor little endian");
  if (n < 10) return std::nullopt;
  bool le = (bytes[4] >> 4) == 1;
  auto ptype = static_cast<PType>(bytes[2]);
  uint16_t frag_length = Get16(bytes.data() + 8, le);
  if (frag_length < kHeaderSize + MinBody(ptype)) {
    return Malformed(frag_length < kHeaderSize ? "frag_length smaller than the header"
                                               : "frag_length too small for the PDU type");
  }
  if (frag_length > limits.max_frag) return Malformed("frag_length above the limit");
  if (n < 12) return std::nullopt;
  uint16_t auth_length = Get16(bytes.data() + 10, le);
  if (auth_length > 0 && size_t{frag_length} < kHeaderSize + kSecTrailerSize + auth_length)
    return Malformed("auth_length does not fit in frag_length");
  if (size_t{frag_length} < kHeaderSize + MinBody(ptype) + (auth_length ? kSecTrailerSize + auth_length : 0))
    return Malformed("frag_length too small for the PDU type");
  return std::nullopt;
}

}  // namespace

Result<Pdu> ParsePdu(std::span<const uint8_t> bytes, const Limits& limits) {
  if (bytes.size() < kHeaderSize) return Malformed("shorter than the 16-byte header");
  if (auto error = CheckHeaderPrefix(bytes, limits)) return *error;
  Pdu pdu;
  Header& h = pdu.header;
  h.version = bytes[0];
  h.version_minor = bytes[1];
  h.ptype = static_cast<PType>(bytes[2]);
  h.flags = bytes[3];
  std::copy(bytes.begin() + 4, bytes.begin() + 8, h.drep.begin());
  bool le = h.little_endian();
  h.frag_length = Get16(bytes.data() + 8, le);
  h.auth_length = Get16(bytes.data() + 10, le);
  h.call_id = Get32(bytes.data() + 12, le);
  if (h.frag_length != bytes.size()) return Malformed("frag_length does not match the PDU size");
  pdu.bytes = bytes;
  pdu.body_end = bytes.size();
  if (h.auth_length > 0) {
    // CheckHeaderPrefix proved frag_length >= 16 + body minimum + 8 + auth_length.
    SecTrailer t;
    t.offset = bytes.size() - h.auth_length - kSecTrailerSize;
    const uint8_t* p = bytes.data() + t.offset;
    t.auth_type = p[0];
    if (p[1] > static_cast<uint8_t>(AuthLevel::kPrivacy)) return Malformed("unknown auth_level");
    t.auth_level = static_cast<AuthLevel>(p[1]);
    t.auth_pad_length = p[2];
    t.auth_context_id = Get32(p + 4, le);
    if (t.auth_pad_length > t.offset - kHeaderSize - MinBody(h.ptype))
      return Malformed("auth_pad_length reaches into the PDU header");
    pdu.body_end = t.offset - t.auth_pad_length;
    pdu.auth = t;
  }
  return pdu;
}

Split SplitPdu(std::span<const uint8_t> stream, const Limits& limits) {
  Split split;
  if (auto error = CheckHeaderPrefix(stream.first(std::min(stream.size(), kHeaderSize)), limits)) {
    split.kind = Split::kMalformed;
    split.error = *error;
    return split;
  }
  if (stream.size() < kHeaderSize) {
    split.needed = kHeaderSize;
    return split;
  }
  bool le = (stream[4] >> 4) == 1;
  size_t frag_length = Get16(stream.data() + 8, le);
  if (stream.size() < frag_length) {
    split.needed = frag_length;
    return split;
  }
  auto pdu = ParsePdu(stream.first(frag_length), limits);
  if (!pdu) {
    split.kind = Split::kMalformed;
    split.error = pdu.error();
    return split;
  }
  split.kind = Split::kPdu;
  split.pdu = *pdu;
  split.needed = 0;
  return split;
}

namespace {

// A reader over the PDU body: from the end of the header to body_end, with
// offsets (and alignment) counted from the start of the PDU.
Reader BodyReader(const Pdu& pdu) { return Reader(pdu.bytes.first(pdu.body_end), kHeaderSize, pdu.little_endian()); }

// p_syntax_id_t: if_uuid, then if_version as one u32 in drep order whose low 16
// bits are the major version (so big-endian PDUs carry the minor version first).
SyntaxId ReadSyntax(Reader& r) {
  SyntaxId s;
  s.uuid = r.ReadUuid();
  uint32_t version = r.U32();
  s.major = static_cast<uint16_t>(version);
  s.minor = static_cast<uint16_t>(version >> 16);
  return s;
}

}  // namespace

Result<Request> ParseRequest(const Pdu& pdu) {
  if (pdu.header.ptype != PType::kRequest) return Malformed("not a request");
  Reader r = BodyReader(pdu);
  Request q;
  q.alloc_hint = r.U32();
  q.context_id = r.U16();
  q.opnum = r.U16();
  if (pdu.header.flags & pfc::kObjectUuid) q.object = r.ReadUuid();
  if (!r.ok()) return Malformed("request shorter than its fixed fields");
  q.stub_offset = r.pos();
  q.stub = pdu.bytes.subspan(r.pos(), pdu.body_end - r.pos());
  return q;
}

Result<Response> ParseResponse(const Pdu& pdu) {
  if (pdu.header.ptype != PType::kResponse) return Malformed("not a response");
  Reader r = BodyReader(pdu);
  Response s;
  s.alloc_hint = r.U32();
  s.context_id = r.U16();
  s.cancel_count = r.U8();
  r.Skip(1);
  if (!r.ok()) return Malformed("response shorter than its fixed fields");
  s.stub_offset = r.pos();
  s.stub = pdu.bytes.subspan(r.pos(), pdu.body_end - r.pos());
  return s;
}

Result<Fault> ParseFault(const Pdu& pdu) {
  if (pdu.header.ptype != PType::kFault) return Malformed("not a fault");
  Reader r = BodyReader(pdu);
  Fault f;
  f.alloc_hint = r.U32();
  f.context_id = r.U16();
  f.cancel_count = r.U8();
  r.Skip(1);
  f.status = r.U32();
  if (!r.ok()) return Malformed("fault shorter than its fixed fields");
  return f;
}

Result<Bind> ParseBind(const Pdu& pdu) {
  if (pdu.header.ptype != PType::kBind && pdu.header.ptype != PType::kAlterContext)
    return Malformed("not a bind or alter_context");
  Reader r = BodyReader(pdu);
  Bind b;
  b.max_xmit_frag = r.U16();
  b.max_recv_frag = r.U16();
  b.assoc_group_id = r.U32();
  uint8_t n_contexts = r.U8();
  r.Skip(3);
  if (!r.ok()) return Malformed("bind shorter than its fixed fields");
  // Each context takes at least 24 bytes: checked before reserving.
  if (size_t{n_contexts} * 24 > r.remaining()) return Malformed("bind context count beyond the PDU");
  b.contexts.reserve(n_contexts);
  for (int i = 0; i < n_contexts; ++i) {
    PresentationContext c;
    c.context_id = r.U16();
    uint8_t n_syntaxes = r.U8();
    r.Skip(1);
    c.abstract_syntax = ReadSyntax(r);
    if (!r.ok() || size_t{n_syntaxes} * 20 > r.remaining())
      return Malformed("bind transfer syntaxes beyond the PDU");
    c.transfer_syntaxes.reserve(n_syntaxes);
    for (int j = 0; j < n_syntaxes; ++j) c.transfer_syntaxes.push_back(ReadSyntax(r));
    if (!r.ok()) return Malformed("bind transfer syntaxes beyond the PDU");
    b.contexts.push_back(std::move(c));
  }
  return b;
}

Result<BindAck> ParseBindAck(const Pdu& pdu) {
  if (pdu.header.ptype != PType::kBindAck && pdu.header.ptype != PType::kAlterContextResp)
    return Malformed("not a bind_ack or alter_context_resp");
  Reader r = BodyReader(pdu);
  BindAck a;
  a.max_xmit_frag = r.U16();
  a.max_recv_frag = r.U16();
  a.assoc_group_id = r.U32();
  uint16_t addr_length = r.U16();
  auto addr = r.Bytes(addr_length);
  if (!r.ok()) return Malformed("bind_ack secondary address beyond the PDU");
  a.secondary_address.assign(addr.begin(), addr.end());
  while (!a.secondary_address.empty() && a.secondary_address.back() == '\0') a.secondary_address.pop_back();
  r.Align(4);
  uint8_t n_results = r.U8();
  r.Skip(3);
  if (!r.ok()) return Malformed("bind_ack shorter than its result list");
  if (size_t{n_results} * 24 > r.remaining()) return Malformed("bind_ack result count beyond the PDU");
  a.results.reserve(n_results);
  for (int i = 0; i < n_results; ++i) {
    ContextResult c;
    c.result = r.U16();
    c.reason = r.U16();
    c.transfer_syntax = ReadSyntax(r);
    a.results.push_back(c);
  }
  if (!r.ok()) return Malformed("bind_ack results beyond the PDU");
  return a;
}

Result<uint16_t> ParseBindNakReason(const Pdu& pdu) {
  if (pdu.header.ptype != PType::kBindNak) return Malformed("not a bind_nak");
  Reader r = BodyReader(pdu);
  uint16_t reason = r.U16();
  if (!r.ok()) return Malformed("bind_nak shorter than its reason");
  return reason;
}

// ---------------------------------------------------------------------------------

Result<bool> StubAssembler::Add(const Pdu& pdu, size_t stream_offset) {
  if (complete_) return Malformed("fragment after the last fragment of the call");
  std::span<const uint8_t> stub;
  size_t stub_offset = 0;
  uint16_t opnum = 0;
  uint16_t context_id = 0;
  if (pdu.header.ptype == PType::kRequest) {
    auto q = ParseRequest(pdu);
    if (!q) return q.error();
    stub = q->stub;
    stub_offset = q->stub_offset;
    opnum = q->opnum;
    context_id = q->context_id;
  } else if (pdu.header.ptype == PType::kResponse) {
    auto s = ParseResponse(pdu);
    if (!s) return s.error();
    stub = s->stub;
    stub_offset = s->stub_offset;
    context_id = s->context_id;
  } else {
    return Malformed("fragment of a call is neither request nor response");
  }
  if (!started_) {
    if (!pdu.header.first_frag()) return Malformed("first fragment of a call without FIRST_FRAG");
    started_ = true;
    call_id_ = pdu.header.call_id;
    ptype_ = pdu.header.ptype;
    little_endian_ = pdu.little_endian();
    opnum_ = opnum;
    context_id_ = context_id;
  } else {
    if (pdu.header.first_frag()) return Malformed("FIRST_FRAG in the middle of a call");
    if (pdu.header.call_id != call_id_ || pdu.header.ptype != ptype_)
      return Malformed("fragment of another call in the middle of a call");
    if (pdu.little_endian() != little_endian_) return Malformed("fragments of one call in different byte orders");
    if (opnum != opnum_ || context_id != context_id_)
      return Malformed("fragments of one call with different opnum or context");
  }
  if (stub.size() > max_stub_ - stub_.size()) return Unsupported("call stub larger than the reassembly limit");
  if (!stub.empty()) {
    pieces_.push_back({stub_.size(), stream_offset + stub_offset});
    stub_.insert(stub_.end(), stub.begin(), stub.end());
  }
  ++fragments_;
  protected_ = protected_ || pdu.protected_by_auth();
  complete_ = pdu.header.last_frag();
  return complete_;
}

void StubAssembler::Reset() {
  stub_.clear();
  pieces_.clear();
  fragments_ = 0;
  started_ = complete_ = protected_ = false;
}

size_t StubAssembler::StreamOffset(size_t stub_offset) const {
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), stub_offset,
                             [](size_t offset, const Piece& p) { return offset < p.stub_begin; });
  // pieces_ is non-empty and starts at 0 whenever the stub is (REQUIRES) non-empty.
  --it;
  return it->stream_begin + (stub_offset - it->stub_begin);
}

// ---------------------------------------------------------------------------------

Status ContextTable::OnBind(const Bind& bind, AuthLevel auth_level) {
  if (entries_.size() + pending_.size() + bind.contexts.size() > kMaxContexts)
    return Unsupported("more presentation contexts than the table holds");
  for (const auto& c : bind.contexts) {
    Entry e;
    e.context_id = c.context_id;
    e.abstract_syntax = c.abstract_syntax;
    pending_.push_back(e);
  }
  auth_level_ = std::max(auth_level_, auth_level);
  return Done{};
}

Status ContextTable::OnBindAck(const BindAck& ack) {
  if (ack.results.size() != pending_.size()) {
    pending_.clear();
    return Malformed("bind_ack answers a different number of contexts than the bind offered");
  }
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (ack.results[i].result != ContextResult::kAcceptance) continue;
    Entry e = pending_[i];
    e.accepted = true;
    e.transfer_syntax = ack.results[i].transfer_syntax;
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const Entry& x) { return x.context_id == e.context_id; });
    if (it != entries_.end()) *it = e;
    else entries_.push_back(e);
  }
  pending_.clear();
  if (ack.max_recv_frag) c2s_max_frag_ = ack.max_recv_frag;
  if (ack.max_xmit_frag) s2c_max_frag_ = ack.max_xmit_frag;
  return Done{};
}

const ContextTable::Entry* ContextTable::Find(uint16_t context_id) const {
  for (const auto& e : entries_)
    if (e.context_id == context_id) return &e;
  return nullptr;
}

}  // namespace wanopt::protocols::dcerpc
