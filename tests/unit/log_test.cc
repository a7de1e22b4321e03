// util/log: on a stderr that is a socket (journald's stream), a full socket drops
// records instead of holding up the thread that logs, and the next record that goes
// through says how many were dropped.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "util/log.h"

namespace {

// Everything readable on `fd` now.
std::string Drain(int fd) {
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) got.append(buf, static_cast<size_t>(n));
  return got;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("log: a journal socket that stops reading costs dropped records, counted, never a blocked thread") {
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  int small = 4096;
  ::setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  REQUIRE(::dup2(pair[0], STDERR_FILENO) == STDERR_FILENO);
  constexpr int kRecords = 2000;
  // Nobody reads: a blocking write would hang here (and ctest's timeout fail the test).
  for (int i = 0; i < kRecords; ++i) WANOPT_LOG(kWarn, "test") << "record " << i << " " << std::string(100, 'x');
  std::string before = Drain(pair[1]);
  WANOPT_LOG(kWarn, "test") << "after the stall";
  std::string after = Drain(pair[1]);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(pair[0]);
  ::close(pair[1]);

  size_t delivered = Count(before, " WARN test: record ");
  CHECK(delivered > 0);
  CHECK(delivered < kRecords);
  CHECK(Count(before, "\n") == delivered);  // whole lines only
  auto at = after.find("WARN test: (");
  REQUIRE(at != std::string::npos);
  size_t dropped = std::stoul(after.substr(at + 12));
  CHECK(after.find(" log records dropped: the journal did not keep up) after the stall\n") != std::string::npos);
  CHECK(delivered + dropped == kRecords);  // nothing lost without a count
}
