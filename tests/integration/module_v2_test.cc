// Module interface v2 through the real pair (protocols/v2test): a module answers the
// client itself, originates requests to the server and consumes their answers,
// holds bytes behind a timer, and shares state across one client's connections;
// every byte the client and the server see is checked.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/pair.h"
#include "util/sha256.h"

using namespace wanopt;
using namespace wanopt::testing;

namespace {

// The echo origin wants an 8-byte transfer id first: one line the modules pass.
constexpr std::string_view kId = "v2test1\n";

struct Client {
  int fd = -1;
  explicit Client(Pair& pair) : fd(ConnectTo(pair.entry())) { REQUIRE(fd >= 0); }
  ~Client() {
    if (fd >= 0) ::close(fd);
  }
  // Sends `request` and returns exactly `expected.size()` bytes of what comes back.
  std::string Exchange(std::string_view request, std::string_view expected) {
    REQUIRE(SendAll(fd, request));
    return ReadExactly(fd, expected.size());
  }
};

}  // namespace

TEST_CASE("module v2 in the pair: answers, originated requests, held bytes and a shared group, byte for byte") {
  Pair pair({.modules = {"v2test"}});
  Client c(pair);
  CHECK(c.Exchange(kId, kId) == kId);
  // (a) Answered by the branch box: the server never sees the line.
  CHECK(c.Exchange("LOCAL one\n", "ANSWER one\n") == "ANSWER one\n");
  // (b) The datacenter box sends a request of its own after the line and consumes
  // the answer: the client gets only the echo of its line, and the next one.
  CHECK(c.Exchange("ORIGINATE two\n", "ORIGINATE two\n") == "ORIGINATE two\n");
  CHECK(c.Exchange("plain\n", "plain\n") == "plain\n");
  // (c, d) Held for 50 ms by a timer; what follows waits behind it, in order.
  CHECK(c.Exchange("HOLD three\nafter\n", "HOLD three\nafter\n") == "HOLD three\nafter\n");
  // (e) Two connections of this client share a group.
  {
    Client second(pair);
    CHECK(second.Exchange(kId, kId) == kId);
    CHECK(c.Exchange("COUNT\n", "COUNT 2\n") == "COUNT 2\n");
  }
  // The group forgets the second connection once it has closed.
  std::string count;
  CHECK(WaitFor([&] { return (count = c.Exchange("COUNT\n", "COUNT 1\n")) == "COUNT 1\n"; }, std::chrono::seconds(10)));
  CHECK(count == "COUNT 1\n");
  // The server received exactly the client's lines but those answered locally, plus
  // the datacenter's own request.
  ::shutdown(c.fd, SHUT_WR);
  std::string error;
  std::string rest = ReadAll(c.fd, 5000, &error);
  CHECK(error.empty());
  CHECK(rest.empty());
  std::string expected_at_server = std::string(kId) + "ORIGINATE two\nSECRET two\nplain\nHOLD three\nafter\n";
  uint64_t id = 0;
  for (char ch : kId) id = id << 8 | static_cast<uint8_t>(ch);
  CHECK(WaitFor([&] { return !pair.origin.ReceivedDigest(id).empty(); }, std::chrono::seconds(10)));
  CHECK(pair.origin.ReceivedDigest(id) ==
        Sha256Hex({reinterpret_cast<const uint8_t*>(expected_at_server.data()), expected_at_server.size()}));
  CHECK(WaitFor([&] { return Noted(*pair.datacenter, "v2test: consumed 1 answers to its own requests"); },
                std::chrono::seconds(10)));
}

TEST_CASE("module v2 in the pair: thousands of local answers interleaved with relayed lines keep each stream's order") {
  Pair pair({.modules = {"v2test"}});
  Client c(pair);
  CHECK(c.Exchange(kId, kId) == kId);
  std::string request, answers, echoes;
  for (int i = 0; i < 5000; ++i) {
    request += "LOCAL " + std::to_string(i) + "\n";
    answers += "ANSWER " + std::to_string(i) + "\n";
    request += "data " + std::to_string(i) + "\n";
    echoes += "data " + std::to_string(i) + "\n";
  }
  REQUIRE(SendAll(c.fd, request));
  ::shutdown(c.fd, SHUT_WR);
  std::string error;
  std::string got = ReadAll(c.fd, 10000, &error);
  CHECK(error.empty());
  // The two streams interleave as timing has it; each keeps its own order.
  std::string got_answers, got_echoes;
  for (size_t at = 0; at < got.size();) {
    size_t nl = got.find('\n', at);
    REQUIRE(nl != std::string::npos);
    std::string line = got.substr(at, nl + 1 - at);
    (line.rfind("ANSWER ", 0) == 0 ? got_answers : got_echoes) += line;
    at = nl + 1;
  }
  CHECK(got_answers == answers);
  CHECK(got_echoes == echoes);
}
