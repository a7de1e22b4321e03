// libFuzzer target for protocols/common/dcerpc and protocols/mapi/epm.h: the DCE/RPC
// splitter and PDU parsers, the bind/bind_ack context table, call reassembly, the
// ept_map parsers and the port rewriter. The input is one direction of a TCP stream
// (the seeds are the captured streams in protocols/mapi/tests/fixtures), and also,
// whole, a stub and a tower.
//
// Besides "no crash, no sanitizer report", it checks the promises the glue relies on:
// the splitter never claims more bytes than it was given and agrees with itself on
// every prefix; a rewrite changes exactly two bytes per reported port, reports ports
// that re-parse, and changes nothing when it fails.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "protocols/common/dcerpc/dcerpc.h"
#include "protocols/mapi/epm.h"

using namespace wanopt::protocols::epm;

namespace {

#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) std::abort(); \
  } while (0)

const PortRemap kRemaps[] = {{uuids::kEmsmdb, 7830}, {uuids::kNspi, 7840}};

size_t Differences(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

void CheckStubRewrite(std::span<const uint8_t> stub, bool le) {
  auto parsed = ParseMapResponse(stub, le);
  std::vector<uint8_t> copy(stub.begin(), stub.end());
  auto done = RewriteMapResponsePorts(copy, le, kRemaps);
  FUZZ_CHECK(parsed.ok() == done.ok());
  if (!done.ok()) {
    FUZZ_CHECK(std::equal(copy.begin(), copy.end(), stub.begin()));
    return;
  }
  (void)ListEndpoints(*parsed);
  FUZZ_CHECK(Differences(copy, std::vector<uint8_t>(stub.begin(), stub.end())) <= 2 * done->size());
  auto again = ParseMapResponse(copy, le);
  FUZZ_CHECK(again.ok());
  for (const PortRewrite& w : *done) {
    bool found = false;
    for (const Tower& t : again->towers)
      if (t.tcp_port_offset == w.stub_offset) found = found || t.tcp_port == w.new_port;
    FUZZ_CHECK(found);
  }
}

void CheckPduRewrite(std::span<const uint8_t> bytes) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  auto done = RewriteMapResponsePdus(copy, kRemaps);
  if (!done.ok()) {
    FUZZ_CHECK(std::equal(copy.begin(), copy.end(), bytes.begin()));
    return;
  }
  std::vector<uint8_t> original(bytes.begin(), bytes.end());
  FUZZ_CHECK(Differences(copy, original) <= 2 * done->size());
  auto twice = RewriteMapResponsePdus(copy, kRemaps);
  FUZZ_CHECK(twice.ok() && twice->empty());
}

// Walks the input as one direction of a connection, the way the glue will.
void WalkStream(std::span<const uint8_t> stream, const Limits& limits) {
  ContextTable contexts;
  StubAssembler call(64 * 1024);
  size_t call_start = 0;
  size_t pos = 0;
  while (pos < stream.size()) {
    auto rest = stream.subspan(pos);
    Split split = SplitPdu(rest, limits);
    if (split.kind == Split::kMalformed) return;
    if (split.kind == Split::kNeedMore) {
      FUZZ_CHECK(split.needed > rest.size());
      return;
    }
    const Pdu& pdu = split.pdu;
    const size_t length = pdu.bytes.size();
    FUZZ_CHECK(length >= kHeaderSize && length <= rest.size() && pdu.bytes.data() == rest.data());
    FUZZ_CHECK(pdu.body_end >= kHeaderSize && pdu.body_end <= length);
    // The splitter agrees with itself: one byte short of the PDU is "need more".
    FUZZ_CHECK(SplitPdu(rest.first(length - 1), limits).kind == Split::kNeedMore);

    switch (pdu.header.ptype) {
      case PType::kBind:
      case PType::kAlterContext: {
        auto bind = ParseBind(pdu);
        if (bind) (void)contexts.OnBind(*bind, pdu.auth_level());
        break;
      }
      case PType::kBindAck:
      case PType::kAlterContextResp: {
        auto ack = ParseBindAck(pdu);
        if (ack) (void)contexts.OnBindAck(*ack);
        break;
      }
      case PType::kBindNak:
        (void)ParseBindNakReason(pdu);
        contexts.OnBindNak();
        break;
      case PType::kFault:
        (void)ParseFault(pdu);
        break;
      case PType::kRequest:
      case PType::kResponse: {
        if (call.complete()) call.Reset();
        if (!call.fragments()) call_start = pos;
        auto added = call.Add(pdu, pos);
        if (!added) {
          call.Reset();
          break;
        }
        for (size_t i = 0; i < call.stub().size(); i += 97)
          FUZZ_CHECK(stream[call.StreamOffset(i)] == call.stub()[i]);
        if (!*added) break;
        if (call.ptype() == PType::kRequest) {
          (void)ParseMapRequest(call.stub(), call.little_endian());
        } else {
          CheckStubRewrite(call.stub(), call.little_endian());
          CheckPduRewrite(stream.subspan(call_start, pos + length - call_start));
        }
        break;
      }
      default:
        break;
    }
    if (contexts.client_to_server_max_frag()) (void)contexts.Find(0);
    pos += length;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> input(data, size);
  WalkStream(input, {});
  // A tight limit, as after a bind_ack negotiated small fragments.
  WalkStream(input, {.max_frag = 1024, .allow_rts = true});
  // The whole input as held response PDUs, as a stub in either byte order, as a tower.
  CheckPduRewrite(input);
  CheckStubRewrite(input, true);
  CheckStubRewrite(input, false);
  (void)ParseMapRequest(input, true);
  (void)ParseMapRequest(input, false);
  (void)ParseTower(input);
  return 0;
}
