// libFuzzer target for what the rpch module parses: RTS PDUs (protocols/common/dcerpc/
// rts.h) and HTTP/1.x heads, body framing and the chunked walker (protocols/common/
// http/http.h). The input is read three ways: as a stream of DCE/RPC PDUs (RTS
// allowed), as an HTTP request or response head and the body after it, and whole as a
// chunked body, and as one direction of a connection through the module's
// HttpStream with the PduWalker on its bodies, whole and in pieces. Seeds: seeds/rpch (make_rpch_seeds.cc, from the builders).
//
// Besides "no crash, no sanitizer report", it checks the promises the module relies on:
// a parsed RTS PDU rebuilds to the same flags, commands and length; Classify names only
// PDUs whose cookies can be read; a head is need-more one byte short of its length; the
// chunk walker's pieces lie inside what it was given, in order, never overlapping, and
// cover exactly what it consumed, with its data count matching the data pieces; the
// HttpStream finds the same heads, body bytes and PDUs however the stream is split.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "protocols/common/dcerpc/rts.h"
#include "protocols/common/dcerpc/pdu_walker.h"
#include "protocols/common/http/http.h"
#include "protocols/rpch/http_stream.h"

namespace {

#define FUZZ_CHECK(cond)         \
  do {                           \
    if (!(cond)) std::abort();   \
  } while (0)

namespace dcerpc = wanopt::protocols::dcerpc;
namespace http = wanopt::protocols::http;

void CheckRts(std::span<const uint8_t> stream) {
  size_t pos = 0;
  while (pos < stream.size()) {
    auto split = dcerpc::SplitPdu(stream.subspan(pos), {.allow_rts = true});
    if (split.kind != dcerpc::Split::kPdu) return;
    const auto& pdu = split.pdu;
    auto rts = dcerpc::ParseRts(pdu);
    if (rts) {
      FUZZ_CHECK(rts->length == pdu.bytes.size());
      FUZZ_CHECK(rts->commands.size() <= dcerpc::kMaxRtsCommands);
      for (const auto& c : rts->commands) FUZZ_CHECK(c.offset >= dcerpc::kRtsHeaderSize && c.offset < rts->length);
      auto kind = dcerpc::Classify(*rts);
      (void)dcerpc::Cookies(*rts, kind);
      (void)dcerpc::RtsKindName(kind);
      auto rebuilt = dcerpc::BuildRts(rts->flags, rts->commands);
      FUZZ_CHECK(rebuilt.size() == rts->length);
      auto again = dcerpc::ParseRts(rebuilt);
      FUZZ_CHECK(again.ok());
      FUZZ_CHECK(again->flags == rts->flags && again->commands == rts->commands);
      FUZZ_CHECK(dcerpc::Classify(*again) == kind);
    }
    pos += pdu.bytes.size();
  }
}

// Walks `body` in feeds whose sizes come from `steps`, checking every piece.
void WalkChunked(std::span<const uint8_t> body, std::span<const uint8_t> steps) {
  http::ChunkWalker walker;
  size_t pos = 0, step = 0;
  uint64_t data = 0;
  while (pos < body.size()) {
    size_t n = steps.empty() ? body.size() : size_t{steps[step++ % steps.size()]} + 1;
    auto part = body.subspan(pos, std::min(n, body.size() - pos));
    std::vector<http::ChunkWalker::Piece> pieces;
    auto fed = walker.Feed(part, pieces);
    FUZZ_CHECK(fed.consumed <= part.size());
    size_t covered = 0;
    for (const auto& p : pieces) {
      FUZZ_CHECK(p.offset == covered && p.length > 0);
      FUZZ_CHECK(p.offset + p.length <= part.size());
      covered += p.length;
      if (p.data) data += p.length;
    }
    FUZZ_CHECK(covered == fed.consumed);
    FUZZ_CHECK(walker.data_bytes() == data);
    if (!fed.error.empty() || fed.done) {
      FUZZ_CHECK(fed.done == walker.done());
      std::vector<http::ChunkWalker::Piece> more;
      FUZZ_CHECK(walker.Feed(part, more).consumed == 0 && more.empty());
      return;
    }
    FUZZ_CHECK(fed.consumed == part.size());
    pos += part.size();
  }
}

void CheckHttp(std::span<const uint8_t> input, bool request) {
  auto parsed = http::ParseHead(input, request);
  if (parsed.kind != http::HeadParse::kHead) return;
  const auto& head = parsed.head;
  FUZZ_CHECK(head.length <= input.size() && head.length >= 4);
  FUZZ_CHECK(head.fields.size() <= 100 && head.length <= 16 * 1024);
  FUZZ_CHECK(http::ParseHead(input.first(head.length), request).kind == http::HeadParse::kHead);
  FUZZ_CHECK(http::ParseHead(input.first(head.length - 1), request).kind == http::HeadParse::kNeedMore);
  for (const auto& f : head.fields) FUZZ_CHECK(head.Find(f.name) != nullptr);
  (void)http::AsRpcOverHttp(head);
  (void)http::AsMapiOverHttp(head);
  auto framing = http::BodyFraming(head, request ? "" : "RPC_OUT_DATA");
  FUZZ_CHECK(framing.length <= http::kMaxContentLength);
  auto body = input.subspan(head.length);
  if (framing.kind == http::Framing::kChunked) WalkChunked(body, input.first(std::min<size_t>(8, input.size())));
  if (framing.kind == http::Framing::kLength) CheckRts(body.first(std::min<uint64_t>(framing.length, body.size())));
}

// What the rpch module sees of one direction: heads, body bytes, PDUs in bodies.
struct StreamRecord final : wanopt::protocols::rpch::HttpStream::Sink {
  void OnHead(const http::Head& head) override {
    ++heads;
    walker = dcerpc::PduWalker({65535, true});
    FUZZ_CHECK(head.length > 0);
  }
  void OnBody(std::span<const uint8_t> content) override {
    body += content.size();
    if (pdus_ok) pdus_ok = walker.Feed(content, [](dcerpc::PType) { return true; }, [&](const dcerpc::Pdu& p) {
      ++pdus;
      if (p.header.ptype == dcerpc::PType::kRts) (void)dcerpc::ParseRts(p);
    });
  }
  void OnMessageEnd() override { ++ends; }
  uint64_t heads = 0, ends = 0, body = 0, pdus = 0;
  bool pdus_ok = true;
  dcerpc::PduWalker walker{{65535, true}};
};

void CheckStream(std::span<const uint8_t> input, std::span<const uint8_t> steps, bool requests) {
  auto walk = [&](bool split, StreamRecord& record) {
    wanopt::protocols::rpch::HttpStream stream(requests);
    for (int i = 0; i < 4 && !requests; ++i) stream.PushRequestMethod(i == 1 ? "HEAD" : "RPC_OUT_DATA");
    size_t pos = 0, step = 0;
    bool ok = true;
    while (pos < input.size() && ok) {
      size_t n = split && !steps.empty() ? size_t{steps[step++ % steps.size()]} + 1 : input.size();
      auto part = input.subspan(pos, std::min(n, input.size() - pos));
      ok = stream.Feed(part, record);
      pos += part.size();
    }
    if (ok) ok = stream.End(record);
    FUZZ_CHECK(record.body <= input.size());
    return ok;
  };
  StreamRecord whole, pieces;
  bool a = walk(false, whole), b = walk(true, pieces);
  FUZZ_CHECK(a == b);
  FUZZ_CHECK(whole.heads == pieces.heads && whole.ends == pieces.ends && whole.body == pieces.body);
  FUZZ_CHECK(whole.pdus == pieces.pdus);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> input(data, size);
  CheckRts(input);
  CheckHttp(input, true);
  CheckHttp(input, false);
  WalkChunked(input, {});
  WalkChunked(input, input.first(std::min<size_t>(4, size)));
  CheckStream(input, input.first(std::min<size_t>(6, size)), true);
  CheckStream(input, input.first(std::min<size_t>(6, size)), false);
  return 0;
}
