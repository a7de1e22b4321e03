// The transparent listener: a held connection's handshake completed; it becomes a
// session as the decision says (optimized, pass-through, answered, relayed).
#include "wanopt/intercept/interceptor_impl.h"

namespace wanopt::intercept {

void Interceptor::Impl::Accept(tcp::acceptor& acceptor) {
  acceptor.async_accept(loop_, [self = shared_from_this(), &acceptor](error_code ec, tcp::socket socket) {
    if (self->stopped_ || ec == asio::error::operation_aborted) return;
    if (!ec) {
      self->accept_backoff_.Succeeded();
      self->OnAccepted(std::move(socket));
      self->Accept(acceptor);
      return;
    }
    // Out of descriptors: try again later instead of spinning.
    auto retry = self->accept_backoff_.Failed();
    if (retry.log) {
      WANOPT_LOG(kWarn, "intercept") << "transparent listener: accept: " << ec.message() << "; retrying in "
                                     << retry.delay.count() << " ms" << log::Suppressed(retry.suppressed);
    }
    auto timer = std::make_shared<asio::steady_timer>(self->loop_, retry.delay);
    timer->async_wait([self, timer, &acceptor](error_code) {
      if (!self->stopped_) self->Accept(acceptor);
    });
  });
}

void Interceptor::Impl::OnAccepted(tcp::socket socket) {
  error_code ec;
  tcp::endpoint remote = socket.remote_endpoint(ec);
  tcp::endpoint local = socket.local_endpoint(ec);  // the original destination (TPROXY)
  if (ec) return CloseWithReset(socket);
  // A link-local address comes with its interface; the SYN's, parsed, without.
  FlowKey key{Unscoped(remote.address()), Unscoped(local.address()), remote.port(), local.port()};
  auto it = decisions_.find(key);
  bool needs_probe = it != decisions_.end() && it->second.kind != Kind::kFixedTarget &&
                     it->second.kind != Kind::kRelayDirect;
  if (it == decisions_.end() || it->second.verdict != Verdict::kIntercept || (needs_probe && !it->second.probe)) {
    WANOPT_LOG(kInfo, "intercept") << "connection " << FormatEndpoint(remote) << " -> " << FormatEndpoint(local)
                                   << " reached the listener without a decision: reset";
    return CloseWithReset(socket);
  }
  Decision& d = it->second;
  d.expires = Clock::now() + std::chrono::seconds(60);  // still answers retransmitted SYNs
  asio::io_context& target = session_loop_();
  tcp::socket lan = MoveToLoop(socket, target);
  std::optional<tcp::socket> probe;
  if (d.probe) probe = MoveToLoop(*d.probe, target);
  d.probe.reset();
  const InpathRule& rule = *d.rule;
  Kind kind = d.kind;
  channel::DeviceId peer = d.peer.device_id;  // who answered (kOptimize) or offered (kDatacenter)
  bool plaintext = d.plaintext;
  std::string reason = d.reason;
  std::string note = d.note;
  bool from_client = d.from_client;
  tcp::endpoint client = d.client;
  if (d.target_port) local.port(*d.target_port);  // where the connection really goes
  auto self = shared_from_this();
  asio::post(target, [self, &target, lan = std::make_shared<tcp::socket>(std::move(lan)),
                      probe = std::make_shared<std::optional<tcp::socket>>(std::move(probe)), &rule, kind, peer,
                      plaintext, reason, note, from_client, client, local, key]() mutable {
    switch (kind) {
      case Kind::kOptimize: {
        BranchPlan plan = PlanFor(rule, local);
        if (!note.empty()) plan.notes.push_back(note);
        if (from_client) plan.source = client.address();
        return self->StartOptimized(std::move(*lan), std::move(**probe), rule, std::move(plan), peer, plaintext, key);
      }
      case Kind::kPassThrough:
      case Kind::kMiddle: {
        BranchPlan plan = PlanFor(rule, local);
        plan.connected = std::move(**probe);
        plan.pass_through_reason = reason;
        if (!note.empty()) plan.notes.push_back(note);
        return StartBranchSession(self->env_, std::move(*lan), std::move(plan));
      }
      case Kind::kDatacenter: return self->StartAnswered(target, std::move(*lan), std::move(**probe), peer, plaintext, reason, client);
      case Kind::kRelayDirect: {
        BranchPlan plan = PlanFor(rule, local);
        plan.pass_through_reason = reason;
        return StartBranchSession(self->env_, std::move(*lan), std::move(plan));
      }
      case Kind::kFixedTarget: {
        BranchPlan plan = PlanFor(rule, local);
        plan.peer = rule.peer;
        plan.notes.push_back(rule.name + ": fixed-target peer " + FormatEndpoint(*rule.peer));
        return StartBranchSession(self->env_, std::move(*lan), std::move(plan));
      }
    }
  });
}

BranchPlan Interceptor::Impl::PlanFor(const InpathRule& rule, const tcp::endpoint& destination) {
  BranchPlan plan;
  plan.destination = destination;
  plan.policy = rule.policy;
  plan.modules = rule.modules;
  return plan;
}

// Branch, on the session's loop: secure the probe, then the session.
void Interceptor::Impl::StartOptimized(tcp::socket client, tcp::socket inner, const InpathRule& rule, BranchPlan plan,
                    const channel::DeviceId& peer, bool plaintext, FlowKey key) {
  error_code ec;
  plan.peer = inner.remote_endpoint(ec);
  plan.peer_id = channel::FormatDeviceId(peer);
  plan.peering_key = "id " + plan.peer_id;
  plan.connected_is_inner = true;
  if (plaintext) {
    plan.notes.push_back("inner channel unencrypted (" + rule.name + ": encryption = false, for lab measurements only)");
    plan.connected = std::move(inner);
    return StartBranchSession(env_, std::move(client), std::move(plan));
  }
  if (::send(inner.native_handle(), channel::kTlsPreamble.data(), channel::kTlsPreamble.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(channel::kTlsPreamble.size())) {
    plan.pass_through_reason = "inner channel to " + plan.peer_id + " failed before TLS";
    plan.connected_is_inner = false;
    plan.peer.reset();
    plan.peer_id.clear();
    return StartBranchSession(env_, std::move(client), std::move(plan));
  }
  auto self = shared_from_this();
  auto lan = std::make_shared<tcp::socket>(std::move(client));
  // A peer that confirmed us recently is trusted to again: no waiting for its
  // confirmation (one round trip less before the client's first byte). If it
  // refuses us after all, that one connection is cut and the next one waits.
  channel::SecureChannelOptions options;
  options.optimistic = RecentlyConfirmed(peer);
  options.on_late_failure = [self, id = peer, key](const std::string& why) {
    WANOPT_LOG(kWarn, "intercept") << "peer " << channel::FormatDeviceId(id) << " refused this box after all ("
                                   << why << "): that connection is cut; the next ones wait for its confirmation";
    self->Confirmed(id, false);
  };
  bool optimistic = options.optimistic;
  std::string peer_name = "peer " + plan.peer_id;
  SecureInnerChannel(
      env_, std::move(inner), ChannelSide::kOpening, peer_name, std::move(options),
      [self, lan, plan = std::make_shared<BranchPlan>(std::move(plan)), key, optimistic, peer_name,
       id = peer](SecureOutcome outcome, channel::PlainStream plain) mutable {
        if (outcome.ok && !optimistic) self->Confirmed(id, true);
        if (!outcome.ok) {
          std::string reason = peer_name + " " + outcome.text;
          // Only the peer's identity is worth remembering: a timeout or a local
          // shortage (descriptors, memory) says nothing about the next connection.
          if (outcome.authentication_failed) {
            asio::post(self->loop_, [self, key, reason] {
              self->unauthenticated_[key.server] =
                  Unauthenticated{Clock::now() + self->config_.peer_memory,
                                  reason + ": remembered for " + Minutes(self->config_.peer_memory)};
            });
          }
          plan->connected_is_inner = false;
          plan->peer.reset();
          plan->peer_id.clear();
          plan->pass_through_reason = reason;
          return StartBranchSession(self->env_, std::move(*lan), std::move(*plan));
        }
        plan->notes.push_back(outcome.text);
        plan->connected = std::move(plain);
        StartBranchSession(self->env_, std::move(*lan), std::move(*plan));
      });
}

// Datacenter, on the session's loop. The branch speaks first (a TLS ClientHello,
// or our hello frame) as soon as it has our answer. If what comes is neither, or
// nothing comes, our answer was lost on the way back (a middlebox stripped the
// option from the SYN-ACK): the branch is relaying its client's bytes, so we do
// the same towards the server instead of breaking the connection.
void Interceptor::Impl::StartAnswered(asio::io_context& loop, tcp::socket inner, tcp::socket server, const channel::DeviceId& peer,
                   bool plaintext, const std::string& reason, const tcp::endpoint& client) {
  auto self = shared_from_this();
  auto in = std::make_shared<tcp::socket>(std::move(inner));
  auto out = std::make_shared<tcp::socket>(std::move(server));
  auto timer = std::make_shared<asio::steady_timer>(loop, env_.config.timeouts.peer_connect);
  auto done = std::make_shared<bool>(false);
  timer->async_wait([in, done](error_code ec) {
    if (!ec && !*done) in->cancel();
  });
  in->async_wait(tcp::socket::wait_read, [self, in, out, timer, done, peer, plaintext, reason,
                                          client](error_code ec) {
    *done = true;
    timer->cancel();
    std::array<uint8_t, channel::kFrameHeaderSize + channel::kHelloMagic.size()> first{};
    ssize_t n = ec ? -1 : ::recv(in->native_handle(), first.data(), first.size(), MSG_PEEK | MSG_DONTWAIT);
    std::string_view seen(reinterpret_cast<const char*>(first.data()), n > 0 ? static_cast<size_t>(n) : 0);
    bool expected;
    if (n <= 0) {
      expected = false;
    } else if (plaintext) {
      // A frame header and the hello's magic; a shorter peek is given the benefit of the doubt.
      expected = static_cast<size_t>(n) < first.size() ||
                 seen.substr(channel::kFrameHeaderSize) == channel::kHelloMagic;
    } else {
      expected = seen.starts_with(channel::kTlsPreamble);
      if (expected) ::recv(in->native_handle(), first.data(), channel::kTlsPreamble.size(), MSG_DONTWAIT);  // consumed
    }
    if (n == 0) {  // the branch gave up already
      CloseWithReset(*in);
      CloseWithReset(*out);
      return;
    }
    if (!expected) {
      error_code ignored;
      // Relaying unauthenticated bytes from a client address an unauthenticated
      // option named would let anyone speak to the server as that client.
      tcp::endpoint from = out->local_endpoint(ignored);
      if (from.address() == client.address() && from.address() != in->remote_endpoint(ignored).address()) {
        WANOPT_LOG(kWarn, "intercept") << "probe from " << in->remote_endpoint(ignored)
                                       << " sent no handshake, and its server connection uses the client address "
                                       << client.address() << " its option named: reset, not relayed";
        CloseWithReset(*in);
        CloseWithReset(*out);
        return;
      }
      tcp::endpoint server = out->remote_endpoint(ignored);
      BranchPlan plan;
      plan.destination = server;
      plan.connected = std::move(*out);
      plan.pass_through_reason = std::string(n < 0 ? "the branch sent nothing" : "the branch sent no handshake") +
                                 " after this box answered its probe (answer stripped on the way back?): "
                                 "relayed unoptimized";
      return StartBranchSession(self->env_, std::move(*in), std::move(plan));
    }
    self->StartAnsweredChannel(std::move(*in), std::move(*out), peer, plaintext, reason);
  });
}

void Interceptor::Impl::StartAnsweredChannel(tcp::socket inner, tcp::socket server, const channel::DeviceId& peer, bool plaintext,
                          const std::string& reason) {
  DatacenterPlan plan;
  error_code ec;
  plan.peer_endpoint = inner.remote_endpoint(ec);
  if (!reason.empty()) plan.notes.push_back(reason);
  plan.server = std::move(server);
  if (plaintext) {
    TuneInnerSocket(inner, env_.config);
    plan.notes.push_back("inner channel unencrypted (the branch asked and a rule here allows it: lab measurements only)");
    return StartDatacenterSession(env_, std::move(inner), std::move(plan));
  }
  std::string branch = channel::FormatDeviceId(peer) + " " + FormatEndpoint(*plan.peer_endpoint);
  StartSecuredDatacenterSession(env_, std::move(inner), std::move(plan), branch);
}

}  // namespace wanopt::intercept
