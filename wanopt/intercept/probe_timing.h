// How long a discovery probe may go unanswered: the timing rules of auto-discovery
// as pure functions (the interceptor supplies what it measured), so that they can
// be tested without a kernel queue. Why these numbers: README.md, "The hard cases",
// and deploy/README.md, "What the routers need".
#pragma once

#include <algorithm>
#include <chrono>
#include <optional>

namespace wanopt::intercept {

using ProbeClock = std::chrono::steady_clock;

// A probe from the client's address that gets no answer this long suggests the
// replies to the client go round this box (asymmetric routing): four round trips
// to that server as measured before (`rtt`: that server's, else any server's),
// 0.1 s at least, 0.5 s before any is known; never more than `limit` (half the
// connect timeout).
inline ProbeClock::duration AsymmetryWait(std::optional<ProbeClock::duration> rtt, ProbeClock::duration limit) {
  ProbeClock::duration wait = rtt ? std::max<ProbeClock::duration>(4 * *rtt, std::chrono::milliseconds(100))
                                  : std::chrono::milliseconds(500);
  return std::min(wait, limit);
}

// How long a probe may go unanswered before the box gives up on it:
//  - from the box's own address: `connect_timeout`, then the client's SYN goes on;
//  - from the client's address, further along the path (a datacenter or middle
//    box): `asymmetry_wait`, then it retries from its own address;
//  - from the client's address at the branch: twice that plus 1 s, since a
//    datacenter box may hold the SYN while it connects to the server itself (one
//    wait of its own and a retry), and a server that drops SYNs with options
//    answers only the first retransmission (at 1 s, without the option), which
//    still proves the replies come back through this box; at most half the
//    connect timeout.
inline ProbeClock::duration ProbeWait(bool from_client_address, bool at_branch, ProbeClock::duration asymmetry_wait,
                                      ProbeClock::duration connect_timeout) {
  if (!from_client_address) return connect_timeout;
  if (!at_branch) return asymmetry_wait;
  return std::min<ProbeClock::duration>(std::chrono::seconds(1) + 2 * asymmetry_wait, connect_timeout / 2);
}

}  // namespace wanopt::intercept
