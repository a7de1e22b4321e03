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

// When the kernel sends a probe's first SYN without the option, after the first
// SYN: its retransmissions go at 1 s and 3 s (an initial RTO of 1 s, doubled).
inline ProbeClock::duration FirstSynWithoutOption(int syns_with_option) {
  return syns_with_option <= 1 ? std::chrono::seconds(1) : std::chrono::seconds(3);
}

// How many of a probe's SYNs carry the offer. A SYN lost on the WAN and a server
// (or a firewall before it) that drops SYNs carrying options look the same: no
// answer. Going without the option at the first retransmission serves the second
// and costs the first its optimization, for the connection's whole life. So the
// branch, whose offer crosses the WAN, sends it once more and drops it only at
// the second retransmission, when the probe's wait (ProbeWait) leaves room for
// that: not where the server is `suspected` (its last probe was answered only
// without the option), and not further along (a box's offer there only looks for
// boxes beyond it).
inline int SynsWithOption(bool at_branch, bool suspected, ProbeClock::duration asymmetry_wait,
                          ProbeClock::duration connect_timeout) {
  if (!at_branch || suspected) return 1;
  return FirstSynWithoutOption(2) + 2 * asymmetry_wait <= connect_timeout / 2 ? 2 : 1;
}

// How long a probe may go unanswered before the box gives up on it:
//  - from the box's own address: `connect_timeout`, then the client's SYN goes on;
//  - from the client's address, further along the path (a datacenter or middle
//    box): `asymmetry_wait`, then it retries from its own address;
//  - from the client's address at the branch: twice that past the first SYN
//    without the option (`syns_with_option`), since a datacenter box may hold the
//    SYN while it connects to the server itself (one wait of its own and a retry),
//    and a server that drops SYNs with options answers only that SYN, which still
//    proves the replies come back through this box; at most half the connect
//    timeout.
inline ProbeClock::duration ProbeWait(bool from_client_address, bool at_branch, ProbeClock::duration asymmetry_wait,
                                      ProbeClock::duration connect_timeout, int syns_with_option) {
  if (!from_client_address) return connect_timeout;
  if (!at_branch) return asymmetry_wait;
  return std::min<ProbeClock::duration>(FirstSynWithoutOption(syns_with_option) + 2 * asymmetry_wait,
                                        connect_timeout / 2);
}

}  // namespace wanopt::intercept
