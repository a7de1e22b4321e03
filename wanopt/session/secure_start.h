// The one way an inner channel is secured and its session started, whoever holds
// the socket: the daemon's [datacenter] listener, the interceptor (as branch, and as
// the datacenter that answered a probe), a branch session with a configured peer.
// The notes a connection's record gets and the log lines a failure writes are
// worded here, once.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <boost/asio/ip/tcp.hpp>

#include "wanopt/channel/secure_channel.h"
#include "wanopt/session/session.h"

namespace wanopt {

enum class ChannelSide {
  kOpening,    // the branch: it opened the inner channel, TLS client
  kAccepting,  // the datacenter: TLS server
};

struct SecureOutcome {
  bool ok = false;
  bool authentication_failed = false;  // the peer's identity failed (worth remembering)
  // ok: the note for the connection's record ("inner channel: TLS 1.3, peer
  // authenticated as 'dc'"); else the failure ("failed authentication (why)",
  // "TLS handshake failed (why)").
  std::string text;
};

// Tunes `inner` as an inner channel and runs the TLS handshake on it (mutual
// authentication per [peering]; the opening side within timeouts.peer_connect, the
// accepting side within timeouts.handshake). A failure is logged here, rate-limited,
// naming `peer` (a device id, an address); the opening side also keeps the peer's
// TLS session ticket under that name, unless options name another. `done` runs on `inner`'s executor with
// the plaintext stream (closed on failure).
// REQUIRES: env.security.
void SecureInnerChannel(SessionEnvironment& env, boost::asio::ip::tcp::socket inner, ChannelSide side,
                        const std::string& peer, channel::SecureChannelOptions options,
                        std::function<void(SecureOutcome, channel::PlainStream plain)> done);

// Accepting side: secures `inner`, then serves it as `plan` says (the TLS note
// added to plan.notes). On failure the channel is closed, plan.server (if any)
// reset, and `on_failure` (if set) runs.
// REQUIRES: env.security; `inner` and plan.server on the loop that will run the session.
void StartSecuredDatacenterSession(SessionEnvironment& env, boost::asio::ip::tcp::socket inner, DatacenterPlan plan,
                                   const std::string& peer, std::function<void()> on_failure = {});

}  // namespace wanopt
