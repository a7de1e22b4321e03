// Transparent interception and auto-discovery (WAAS style) on one box.
//
// The rules deploy/intercept installs send this box's new TCP connections to it:
// every SYN that crosses the box waits in netlink queue `[intercept] queue` until
// the Interceptor gives it a verdict, and the SYNs it lets through to the box go to
// a transparent listener (TPROXY). For each held SYN:
//
//   plain SYN (a client):   the first matching in-path rule decides. auto-discover:
//       open a probe connection towards the server from this box, with option 0x21
//       (our device id and offer) on its SYN, keeping the client's SYN held.
//         SYN-ACK with an answer  -> the probe is the inner channel (TLS, then the
//                                    session), the client's SYN goes to the listener
//         SYN-ACK without         -> pass-through over the same probe connection
//         refused / no answer     -> the client's SYN goes on to the server (BYPASS),
//                                    so the client sees exactly what the server does
//   SYN with our option (a branch, or a middle box passing a branch's probe on):
//       probe onwards with the same option. A further box answers -> this box is in
//       the middle: it relays bytes unchanged and passes that answer back (only the
//       outermost two boxes optimize). Nobody answers -> this box is the datacenter
//       end: it answers in its own SYN-ACK, and its probe is the server connection.
//
// Connecting to the server before answering keeps connection semantics: a closed
// port or a dead server looks the same through the boxes as without them. Holding
// the SYN costs no round trip: the client gets its SYN-ACK when the server's comes.
//
// Hard cases: a server that drops SYNs carrying options (the branch's probe sends
// the option on its first retransmission too, since a SYN lost on the WAN looks the
// same, then goes without; the second time in a row the server is remembered for
// option_drop_memory: one lost SYN is not enough), an option
// stripped on the way (pass-through; named so when a peer had answered for that
// server before), a peer that fails authentication (pass-through, remembered),
// replies that do not come back through the datacenter box when it connects with
// the client's address (retried from the box's own address; the second time in a
// row asymmetric routing, remembered for peer_memory: a lost SYN is not enough).
// Every pass-through gets a reason on the status page.
//
// Threading: all discovery state lives on `loop`'s thread. Sessions are started on
// the loops `session_loop` hands out.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "wanopt/intercept/marks.h"
#include "wanopt/session/session.h"

namespace wanopt::channel {
class SecureContext;
}

namespace wanopt::intercept {

class Interceptor {
 public:
  // `env.config.intercept` must be set. `security` is null when [peering] is not
  // configured (then only rules with encryption = false can optimize).
  Interceptor(SessionEnvironment& env, const channel::SecureContext* security, boost::asio::io_context& loop,
              std::function<boost::asio::io_context&()> session_loop);
  ~Interceptor();
  Interceptor(const Interceptor&) = delete;
  Interceptor& operator=(const Interceptor&) = delete;

  // Binds the netlink queue and the transparent listener. False with *error (one
  // line) when either fails; nothing is left bound.
  bool Start(std::string* error);
  // Stops: held SYNs are let through unchanged. Call on `loop`'s thread.
  void Stop();

  boost::asio::ip::tcp::endpoint listen_endpoint() const;

 private:
  friend struct SynDecisionsTest;  // tests/unit/syn_decisions_test.cc
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace wanopt::intercept
