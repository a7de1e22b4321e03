// HttpStream (protocols/rpch/http_stream.h): RPC over HTTP's requests and answers
// walked message by message, the same at every split of the bytes.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "protocols/rpch/http_stream.h"

using namespace wanopt::protocols;
using namespace wanopt::protocols::rpch;

namespace {

struct Recorder final : HttpStream::Sink {
  void OnHead(const http::Head& head) override {
    events.push_back("head " + (head.request ? head.method + " " + head.target : std::to_string(head.status)));
  }
  void OnBody(std::span<const uint8_t> content) override {
    if (events.empty() || events.back().rfind("body ", 0) != 0) events.push_back("body ");
    events.back().append(content.begin(), content.end());
  }
  void OnMessageEnd() override { events.push_back("end"); }
  std::vector<std::string> events;
};

std::span<const uint8_t> Span(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// Feeds `text` `step` bytes at a time; the events, or "error: ..." last.
std::vector<std::string> Walk(bool requests, const std::string& text, size_t step, bool end = false,
                              std::vector<std::string> methods = {}) {
  HttpStream stream(requests);
  for (auto& m : methods) stream.PushRequestMethod(m);
  Recorder r;
  bool ok = true;
  for (size_t at = 0; at < text.size() && ok; at += step) ok = stream.Feed(Span(text).subspan(at, std::min(step, text.size() - at)), r);
  if (ok && end) ok = stream.End(r);
  if (!ok) r.events.push_back("error: " + std::string(stream.error()));
  return r.events;
}

}  // namespace

TEST_CASE("rpch http stream: an RPC_IN_DATA head and its streamed body, at every split") {
  std::string text =
      "RPC_IN_DATA /rpc/rpcproxy.dll?exch:6001 HTTP/1.1\r\nHost: exch\r\nContent-Length: 1073741824\r\n"
      "Expect: 100-continue\r\n\r\nBODYBYTES";
  for (size_t step : {1, 2, 7, 64, 4096}) {
    auto events = Walk(true, text, step);
    REQUIRE(events.size() == 2);
    CHECK(events[0] == "head RPC_IN_DATA /rpc/rpcproxy.dll?exch:6001");
    CHECK(events[1] == "body BODYBYTES");
  }
}

TEST_CASE("rpch http stream: 100 Continue answers nothing, a 401 and its retry, HEAD and pipelining") {
  std::string answers =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\ndenied"
      "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"  // answers a HEAD: no body
      "HTTP/1.1 200 Success\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
  // The 401's body is 5 bytes ("denie"): the 'd' left over starts the next head, which
  // is no head: a body that lies about its length ends the walk.
  for (size_t step : {1, 3, 1000}) {
    auto events = Walk(false, answers, step, false, {"RPC_IN_DATA", "HEAD", "RPC_OUT_DATA"});
    REQUIRE(events.size() >= 2);
    CHECK(events.back().rfind("error: response head", 0) == 0);
  }
  std::string good =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\ndenied"
      "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
      "HTTP/1.1 200 Success\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
  for (size_t step : {1, 3, 1000}) {
    auto events = Walk(false, good, step, true, {"RPC_IN_DATA", "HEAD", "RPC_OUT_DATA"});
    std::vector<std::string> want = {"head 100", "end", "head 401", "body denied", "end", "head 200", "end",
                                     "head 200", "body abcde", "end"};
    CHECK(events == want);
  }
}

TEST_CASE("rpch http stream: a body until close, and streams cut short") {
  auto events = Walk(false, "HTTP/1.0 200 OK\r\n\r\nstreamed", 4, true);
  CHECK(events == std::vector<std::string>{"head 200", "body streamed", "end"});
  events = Walk(true, "RPC_OUT_DATA /rpc/rpcproxy.dll?a:1 HTTP/1.1\r\nContent-Length: 76\r\n\r\nshort", 5, true);
  CHECK(events.back() == "error: the stream ended inside a body");
  events = Walk(true, "RPC_OUT_DATA /rpc/rpcproxy.dll?a:1 HTTP/1.1\r\nContent-Le", 5, true);
  CHECK(events.back() == "error: the stream ended inside a head");
}

TEST_CASE("rpch http stream: hostile heads and bodies end the walk, never overrun") {
  // Absurd and contradictory lengths, a broken chunk size, a bare LF, an endless head.
  CHECK(Walk(true, "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 3).back().rfind("error: request framing", 0) == 0);
  CHECK(Walk(true, "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 3).back().rfind("error: request framing", 0) == 0);
  CHECK(Walk(true, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 1).back().rfind("error: chunked body", 0) == 0);
  CHECK(Walk(true, "GET / HTTP/1.1\nHost: x\r\n\r\n", 1).back().rfind("error: request head", 0) == 0);
  std::string endless = "GET / HTTP/1.1\r\nX: " + std::string(20000, 'a');
  CHECK(Walk(true, endless, 997).back().rfind("error: ", 0) == 0);
  // After an error nothing more is looked at.
  HttpStream stream(true);
  Recorder r;
  CHECK_FALSE(stream.Feed(Span("\x16\x03\x01 not http"), r));
  CHECK_FALSE(stream.Feed(Span("GET / HTTP/1.1\r\n\r\n"), r));
  CHECK(r.events.empty());
}

TEST_CASE("rpch http stream: a 101 or a CONNECT tunnel turns the rest opaque") {
  auto events = Walk(false, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n\x00\x01garbage", 2, true, {"GET"});
  CHECK(events == std::vector<std::string>{"head 101"});
  events = Walk(false, "HTTP/1.1 200 Connection established\r\n\r\nTLS...", 2, true, {"CONNECT"});
  CHECK(events == std::vector<std::string>{"head 200"});
}
