// HTTP/1.x heads, body framing and the chunked walker (protocols/common/http/http.h),
// on heads shaped like what Outlook Anywhere clients and RPC proxies send (impacket's
// and Samba's, shared/brief/peers.md "RPC over HTTP"), MAPI over HTTP requests, and
// hostile input: every split point, lying lengths, oversized heads, injected lines.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "protocols/common/http/http.h"

using namespace wanopt::protocols::http;

namespace {

std::span<const uint8_t> Bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

Head MustParse(std::string_view text, bool request = true) {
  HeadParse p = ParseHead(Bytes(text), request);
  REQUIRE_MESSAGE(p.kind == HeadParse::kHead, p.error);
  return p.head;
}

std::string_view ErrorOf(std::string_view text, bool request = true) {
  HeadParse p = ParseHead(Bytes(text), request);
  return p.kind == HeadParse::kMalformed ? p.error : std::string_view(p.kind == HeadParse::kHead ? "head" : "need more");
}

const std::string kInData =
    "RPC_IN_DATA /rpc/rpcproxy.dll?exchange.example.test:6001 HTTP/1.1\r\n"
    "Cache-Control: no-cache\r\n"
    "Connection: Keep-Alive\r\n"
    "Expect: 100-continue\r\n"
    "Accept: application/rpc\r\n"
    "User-Agent: MSRPC\r\n"
    "Host: proxy.example.test\r\n"
    "Content-Length: 1073741824\r\n"
    "Authorization: Basic dXNlcjpwYXNz\r\n"
    "\r\n";

}  // namespace

TEST_CASE("http: an RPC_IN_DATA head split at every byte is need-more until whole, then the IN channel") {
  const std::string stream = kInData + "\x05\x00\x14\x03";  // the body (CONN/B1) follows at once
  for (size_t n = 0; n < kInData.size(); ++n) {
    CAPTURE(n);
    CHECK(ParseHead(Bytes(std::string_view(stream).substr(0, n)), true).kind == HeadParse::kNeedMore);
  }
  Head head = MustParse(stream);
  CHECK(head.length == kInData.size());
  CHECK(head.method == "RPC_IN_DATA");
  CHECK(head.version_minor == 1);
  CHECK(head.fields.size() == 8);
  REQUIRE(head.Find("content-length"));
  CHECK(*head.Find("CONTENT-LENGTH") == "1073741824");
  CHECK(*head.Find("expect") == "100-continue");
  CHECK(head.Count("Host") == 1);
  Framing f = BodyFraming(head);
  CHECK(f.kind == Framing::kLength);
  CHECK(f.length == 1073741824);
  auto rpc = AsRpcOverHttp(head);
  REQUIRE(rpc);
  CHECK(rpc->in_channel);
  CHECK(rpc->path == "/rpc/rpcproxy.dll");
  CHECK(rpc->server == "exchange.example.test");
  CHECK(rpc->port == 6001);
  CHECK(!AsMapiOverHttp(head));
}

TEST_CASE("http: 401 with WWW-Authenticate, retry on the same connection, 100 Continue, OUT channel 200") {
  const std::string first = "RPC_IN_DATA /rpc/rpcproxy.dll?dc1:593 HTTP/1.1\r\nHost: dc1\r\nContent-Length: 0\r\n\r\n";
  Head req = MustParse(first);
  CHECK(BodyFraming(req).kind == Framing::kLength);
  CHECK(BodyFraming(req).length == 0);
  const std::string challenge =
      "HTTP/1.1 401 Unauthorized\r\nServer: Microsoft-IIS/10.0\r\nWWW-Authenticate: Negotiate\r\n"
      "WWW-Authenticate: NTLM\r\nWWW-Authenticate: Basic realm=\"proxy\"\r\nContent-Length: 58\r\n\r\n";
  Head resp = MustParse(challenge, false);
  CHECK(resp.status == 401);
  CHECK(resp.reason == "Unauthorized");
  CHECK(resp.Count("www-authenticate") == 3);
  CHECK(BodyFraming(resp, "RPC_IN_DATA").length == 58);
  CHECK(BodyFraming(resp, "HEAD").kind == Framing::kNone);

  Head cont = MustParse("HTTP/1.1 100 Continue\r\n\r\n", false);
  CHECK(cont.status == 100);
  CHECK(BodyFraming(cont).kind == Framing::kNone);

  Head out = MustParse("RPC_OUT_DATA /rpc/rpcproxy.dll?dc1:593 HTTP/1.0\r\nContent-Length: 76\r\n\r\n");
  auto rpc = AsRpcOverHttp(out);
  REQUIRE(rpc);
  CHECK(!rpc->in_channel);
  CHECK(out.version_minor == 0);
  const std::string ok = "HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n";
  Head out_resp = MustParse(ok, false);
  CHECK(BodyFraming(out_resp, "RPC_OUT_DATA").length == 1073741824);
  CHECK(BodyFraming(MustParse("HTTP/1.1 200\r\n\r\n", false)).kind == Framing::kUntilClose);
  CHECK(BodyFraming(MustParse("HTTP/1.1 204 No Content\r\n\r\n", false)).kind == Framing::kNone);
}

TEST_CASE("http: RPC over HTTP targets without a usable server:port keep the path and no server") {
  for (const char* target : {"/rpc/rpcproxy.dll", "/rpc/rpcproxy.dll?", "/rpc/rpcproxy.dll?srv", "/x?srv:0",
                             "/x?srv:65536", "/x?:593", "/x?srv:59a"}) {
    CAPTURE(target);
    Head h = MustParse(std::string("RPC_IN_DATA ") + target + " HTTP/1.1\r\n\r\n");
    auto rpc = AsRpcOverHttp(h);
    REQUIRE(rpc);
    CHECK(rpc->server.empty());
    CHECK(rpc->port == 0);
  }
  auto v6 = AsRpcOverHttp(MustParse("RPC_OUT_DATA /rpc/rpcproxy.dll?[fd00::1]:6004 HTTP/1.1\r\n\r\n"));
  CHECK(v6->server == "[fd00::1]");
  CHECK(v6->port == 6004);
  CHECK(!AsRpcOverHttp(MustParse("rpc_in_data /rpc/rpcproxy.dll?a:1 HTTP/1.1\r\n\r\n")));  // methods are case-sensitive
  CHECK(!AsRpcOverHttp(MustParse("GET /rpc/rpcproxy.dll?a:1 HTTP/1.1\r\n\r\n")));
}

TEST_CASE("http: MAPI over HTTP requests name their endpoint and request type") {
  Head h = MustParse(
      "POST /mapi/emsmdb/?MailboxId=0b1c@example.test HTTP/1.1\r\nContent-Type: application/mapi-http\r\n"
      "X-RequestType: Execute\r\nX-RequestId: {E2B0B5B3}:7\r\nX-ClientInfo: {2F9D}:12\r\n"
      "Transfer-Encoding: chunked\r\n\r\n");
  auto m = AsMapiOverHttp(h);
  REQUIRE(m);
  CHECK(m->emsmdb);
  CHECK(m->request_type == "Execute");
  CHECK(m->request_id == "{E2B0B5B3}:7");
  CHECK(m->client_info == "{2F9D}:12");
  CHECK(BodyFraming(h).kind == Framing::kChunked);
  auto nspi = AsMapiOverHttp(MustParse("POST /MAPI/NSPI HTTP/1.1\r\nX-RequestType: Bind\r\nContent-Length: 5\r\n\r\n"));
  REQUIRE(nspi);
  CHECK(!nspi->emsmdb);
  CHECK(!AsMapiOverHttp(MustParse("POST /mapi/emsmdb/ HTTP/1.1\r\n\r\n")));  // no X-RequestType
  CHECK(!AsMapiOverHttp(MustParse("GET /mapi/emsmdb/ HTTP/1.1\r\nX-RequestType: Connect\r\n\r\n")));
  CHECK(!AsMapiOverHttp(MustParse("POST /mapi/emsmdbx HTTP/1.1\r\nX-RequestType: Connect\r\n\r\n")));
}

TEST_CASE("http: header injection, obs-fold, bare CR or LF, bad tokens and versions are refused") {
  CHECK(ErrorOf("GET / HTTP/1.1\r\nA: b\rInjected: x\r\n\r\n") == "bare CR in the head");
  CHECK(ErrorOf("GET / HTTP/1.1\r\nA: b\nInjected: x\r\n\r\n") == "bare LF in the head");
  CHECK(ErrorOf("GET / HTTP/1.1\nHost: a\n\n") == "bare LF in the head");
  CHECK(ErrorOf("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n") == "obs-fold (a field line continued) refused");
  CHECK(ErrorOf("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n") == "control byte in the head");
  CHECK(ErrorOf(std::string("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", 26)) == "control byte in the head");
  CHECK(ErrorOf("GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n") ==
        "field name is not a token (or whitespace before the colon)");
  CHECK(ErrorOf("GET / HTTP/1.1\r\nNoColon\r\n\r\n") == "field line without a colon");
  CHECK(ErrorOf("GET / HTTP/2.0\r\n\r\n") == "not HTTP/1.0 or HTTP/1.1");
  CHECK(ErrorOf("GET /a b HTTP/1.1\r\n\r\n") == "not HTTP/1.0 or HTTP/1.1");
  CHECK(ErrorOf("G(T / HTTP/1.1\r\n\r\n") == "request method is not a token");
  CHECK(ErrorOf("\r\nGET / HTTP/1.1\r\n\r\n") == "empty line before the start line");
  CHECK(ErrorOf("HTTP/1.1 20 OK\r\n\r\n", false) == "status line without a three-digit status");
  CHECK(ErrorOf("HTTP/1.1 2000 OK\r\n\r\n", false) == "status code longer than three digits");
  CHECK(ErrorOf("HTTP/1.1 099 OK\r\n\r\n", false) == "status code below 100");
  // Garbage is refused at its first byte, not after 16 KiB.
  CHECK(ErrorOf("\x16\x03\x01") == "control byte in the head");  // a TLS ClientHello
}

TEST_CASE("http: oversized heads and too many fields are refused, exactly at the limits they pass") {
  std::string big = "GET / HTTP/1.1\r\nX: " + std::string(16 * 1024, 'a');
  CHECK(ErrorOf(big) == "head larger than the limit");
  std::string fits = "GET / HTTP/1.1\r\nX: ";
  fits += std::string(16 * 1024 - fits.size() - 4, 'a') + "\r\n\r\n";
  CHECK(fits.size() == 16 * 1024);
  CHECK(MustParse(fits).length == fits.size());
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 100; ++i) {
    many += 'F';
    many += std::to_string(i);
    many += ": v\r\n";
  }
  CHECK(MustParse(many + "\r\n").fields.size() == 100);
  CHECK(ErrorOf(many + "F100: v\r\n\r\n") == "more header fields than the limit");
}

TEST_CASE("http: body framing refuses lying, duplicate and conflicting lengths") {
  auto framing = [](std::string fields, bool request = true) {
    std::string head = (request ? "POST / HTTP/1.1\r\n" : "HTTP/1.1 200 OK\r\n") + fields + "\r\n";
    return BodyFraming(MustParse(head, request));
  };
  CHECK(framing("Content-Length: 5\r\nContent-Length: 5\r\n").length == 5);
  CHECK(framing("Content-Length: 5, 5\r\n").length == 5);
  CHECK(framing("Content-Length: 5\r\nContent-Length: 6\r\n").error == "Content-Length values disagree");
  CHECK(framing("Content-Length: 5, 6\r\n").error == "Content-Length values disagree");
  CHECK(framing("Content-Length: -1\r\n").error == "Content-Length is not a number");
  CHECK(framing("Content-Length: 0x10\r\n").error == "Content-Length is not a number");
  CHECK(framing("Content-Length: \r\n").error == "Content-Length is not a number");
  CHECK(framing("Content-Length: 99999999999999999999\r\n").error == "Content-Length is not a number");
  CHECK(framing("Content-Length: 9223372036854775807\r\n").error == "Content-Length above the limit");
  CHECK(framing("Content-Length: 4611686018427387904\r\n").length == kMaxContentLength);
  CHECK(framing("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n").error ==
        "both Transfer-Encoding and Content-Length");
  CHECK(framing("Transfer-Encoding: gzip, Chunked\r\n").kind == Framing::kChunked);
  CHECK(framing("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n").kind == Framing::kChunked);
  CHECK(framing("Transfer-Encoding: chunked, gzip\r\n").error == "request Transfer-Encoding not ending in chunked");
  CHECK(framing("Transfer-Encoding: chunked, gzip\r\n", false).kind == Framing::kUntilClose);
  CHECK(framing("Transfer-Encoding: chunked, chunked\r\n").error == "chunked applied more than once");
  CHECK(framing("Transfer-Encoding: ,\r\n").error == "empty Transfer-Encoding");
  CHECK(BodyFraming(MustParse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")).error ==
        "Transfer-Encoding in an HTTP/1.0 message");
  CHECK(framing("").kind == Framing::kNone);
}

namespace {

// Walks `body` fed in pieces of `step` bytes; returns the data bytes it reported, and
// checks the pieces tile the consumed bytes.
struct Walked {
  std::string data;
  size_t consumed = 0;
  bool done = false;
  std::string error;
};
Walked Walk(std::string_view body, size_t step) {
  ChunkWalker walker;
  Walked w;
  size_t pos = 0;
  while (pos < body.size() && !w.done && w.error.empty()) {
    auto part = Bytes(body.substr(pos, step));
    std::vector<ChunkWalker::Piece> pieces;
    auto fed = walker.Feed(part, pieces);
    size_t covered = 0;
    for (const auto& p : pieces) {
      REQUIRE(p.offset == covered);  // in order, no gaps, no overlaps
      covered += p.length;
      if (p.data) w.data.append(reinterpret_cast<const char*>(part.data()) + p.offset, p.length);
    }
    REQUIRE(covered == fed.consumed);
    w.consumed += fed.consumed;
    w.done = fed.done;
    w.error = fed.error;
    if (!fed.done && fed.error.empty()) REQUIRE(fed.consumed == part.size());
    pos += fed.consumed;
  }
  CHECK(w.data.size() == walker.data_bytes());
  return w;
}

}  // namespace

TEST_CASE("http: a chunked body split at every byte gives the same data, framing and end") {
  const std::string body =
      "5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";
  const std::string next = "POST / HTTP/1.1\r\n";  // a pipelined request follows
  for (size_t step = 1; step <= body.size() + next.size(); ++step) {
    CAPTURE(step);
    Walked w = Walk(body + next, step);
    CHECK(w.error.empty());
    CHECK(w.done);
    CHECK(w.consumed == body.size());
    CHECK(w.data == "helloabcdefghijklmnopqrstuvwxyz");
  }
  // Every split into two feeds.
  for (size_t cut = 0; cut <= body.size(); ++cut) {
    ChunkWalker walker;
    std::vector<ChunkWalker::Piece> pieces;
    auto a = walker.Feed(Bytes(std::string_view(body).substr(0, cut)), pieces);
    auto b = walker.Feed(Bytes(std::string_view(body).substr(cut)), pieces);
    CHECK(a.consumed + b.consumed == body.size());
    CHECK(walker.done());
    CHECK(walker.data_bytes() == 31);
  }
}

TEST_CASE("http: chunked bodies that lie or break the coding are refused") {
  auto error = [](std::string_view body) { return Walk(body, body.size()).error; };
  CHECK(error("5\r\nhelloX\r\n") == "chunk data longer than its size");
  CHECK(error("5\r\nhello\rX") == "chunk data not followed by CRLF");
  CHECK(error("g\r\n") == "chunk size is not hexadecimal");
  CHECK(error("-1\r\n") == "chunk size is not hexadecimal");
  CHECK(error("5\n") == "chunk size followed by something else than an extension or CRLF");
  CHECK(error("5\rX") == "bare CR in a chunk size line");
  CHECK(error("5 \r\n") == "whitespace after a chunk size without an extension");
  CHECK(Walk("5 ;ext\r\nhello\r\n0\r\n\r\n", 64).done);
  CHECK(error("5;a\x01\r\n") == "control byte in a chunk extension");
  CHECK(error("4000000000000000\r\n") == "chunk size above the limit");
  CHECK(Walk("3FFFFFFFFFFFFFFF\r\nabc", 64).error.empty());  // a huge chunk is data until it ends
  CHECK(error("0000000000000000000000000000000000000001\r\n").empty());  // leading zeros are fine
  CHECK(error(std::string(1100, '0')) == "chunk size line longer than the limit");
  CHECK(error("1;" + std::string(1100, 'e')) == "chunk size line longer than the limit");
  CHECK(error("0\r\n folded\r\n") == "obs-fold in a trailer");
  CHECK(error("0\r\nA: b\nC") == "control byte in a trailer");
  CHECK(error("0\r\nA: b\rC") == "bare CR in a trailer");
  CHECK(error("0\r\n\rX") == "bare CR at the end of a chunked body");
  CHECK(error("0\r\nA: " + std::string(17 * 1024, 'v')) == "chunked trailers longer than the limit");
  // After an error the walker consumes nothing more.
  ChunkWalker walker;
  std::vector<ChunkWalker::Piece> pieces;
  CHECK(!walker.Feed(Bytes("zz"), pieces).error.empty());
  auto again = walker.Feed(Bytes("0\r\n\r\n"), pieces);
  CHECK(again.consumed == 0);
  CHECK(!again.error.empty());
}
