// What the box does with each SYN the kernel queues: hold it and probe (a branch),
// answer or relay a probe (further along), or let it pass; and the verdicts that
// release held SYNs.
#include "wanopt/intercept/interceptor_impl.h"

namespace wanopt::intercept {

void Interceptor::Impl::OnPacket(const QueuedPacket& p) {
  auto segment = ParseSegment(p.bytes);
  if (!segment) {
    queue_->Accept(p.id);
    return;
  }
  if (p.hook == Hook::kPreRouting && segment->syn && !segment->ack) return OnSyn(p.id, *segment);
  if (p.hook == Hook::kLocalOut && segment->syn && !segment->ack) return OnProbeSyn(p, *segment);
  if (p.hook == Hook::kLocalOut && segment->syn && segment->ack) return OnOurSynAck(p, *segment);
  if (p.hook == Hook::kLocalIn && segment->syn && segment->ack) return OnProbeSynAck(p.id, *segment);
  queue_->Accept(p.id);
}

// A new connection crossing the box (client's SYN, or an upstream box's probe).
void Interceptor::Impl::OnSyn(uint32_t id, const TcpSegment& s) {
  FlowKey key{s.source, s.destination, s.source_port, s.destination_port};
  // The box's own loopback traffic (its status page, say) is never a WAN connection.
  if (s.source.is_loopback() || s.destination.is_loopback()) return queue_->Accept(id, kMarkBypass);
  uint32_t sequence = s.sequence;
  current_sequence_ = sequence;
  if (auto it = decisions_.find(key); it != decisions_.end() && it->second.verdict != Verdict::kHeld &&
                                      it->second.sequence != sequence && !it->second.probe) {
    decisions_.erase(it);  // the client reused its port: a new connection
  }
  if (auto it = decisions_.find(key); it != decisions_.end()) {
    // A retransmitted SYN: the same answer as the first (or nothing while held).
    switch (it->second.verdict) {
      case Verdict::kHeld: queue_->Drop(id); return;
      case Verdict::kIntercept: queue_->Accept(id, kMarkIntercept); return;
      case Verdict::kBypass: queue_->Accept(id, kMarkBypass); return;
      case Verdict::kDeny: queue_->Accept(id, kMarkDeny); return;
    }
  }
  if (s.option && !s.option->answer) return OnProbeFromUpstream(id, key, s);
  if (s.option) return Bypass(id, key, "a SYN carrying an answer", false);
  const InpathRule& rule = Match(key.client, key.server, key.server_port);
  switch (rule.action) {
    case InpathAction::kPassThrough: return Bypass(id, key, rule.name + ": pass-through", true);
    case InpathAction::kDeny: {
      Decision& d = Decide(key, Verdict::kDeny, std::chrono::seconds(60));
      d.rule = &rule;
      WANOPT_LOG(kInfo, "intercept") << FormatEndpoint(key.client, key.client_port) << " -> "
                                     << FormatEndpoint(key.server, key.server_port) << ": denied by " << rule.name;
      queue_->Accept(id, kMarkDeny);
      return;
    }
    case InpathAction::kFixedTarget:
    case InpathAction::kAutoDiscover: break;
  }
  // The modules' box-wide parts may steer it (a port they handed out, a session
  // they keep together).
  std::optional<uint16_t> target_port;
  if (env_.box_modules) {
    tcp::endpoint client(key.client, key.client_port), server(key.server, key.server_port);
    for (const auto& [name, box] : env_.box_modules->parts()) {
      // The rule's modules decide for the box-wide part as for the connection's.
      if (std::find(rule.modules.begin(), rule.modules.end(), name) == rule.modules.end()) continue;
      protocols::FlowAdvice advice = box->OnNewFlow(client, server);
      if (advice.pass_through) return Bypass(id, key, name + ": " + advice.reason, true);
      if (advice.port) target_port = advice.port;
    }
  }
  if (rule.action == InpathAction::kFixedTarget) {
    Decision& d = Decide(key, Verdict::kIntercept, std::chrono::seconds(30));
    d.kind = Kind::kFixedTarget;
    d.rule = &rule;
    d.target_port = target_port;
    queue_->Accept(id, kMarkIntercept);
    return;
  }
  // Servers known to drop SYNs with options, and paths with a box that failed
  // authentication, are left alone for a while.
  // A connection a module redirected cannot simply be routed on (nothing listens
  // at the port the client asked for): the box relays it itself.
  auto pass = [&](const std::string& reason) {
    if (!target_port) return Bypass(id, key, reason, true);
    Decision& d = Decide(key, Verdict::kIntercept, std::chrono::seconds(30));
    d.kind = Kind::kRelayDirect;
    d.rule = &rule;
    d.target_port = target_port;
    d.reason = reason;
    d.sequence = sequence;
    queue_->Accept(id, kMarkIntercept);
  };
  if (option_droppers_.Remembered(key.server, Clock::now())) {
    return pass("server " + key.server.to_string() + " drops SYNs carrying TCP options (remembered for " +
                Minutes(config_.option_drop_memory) + ")");
  }
  if (auto it = unauthenticated_.find(key.server); it != unauthenticated_.end() && it->second.until > Clock::now()) {
    return pass(it->second.reason);
  }
  bool plaintext = !rule.encryption;
  if (!plaintext && !security_) return pass("no [peering] credentials on this box to secure an inner channel");
  if (held_.size() >= kMaxHeld) return pass("too many connections being set up at once");
  auto held = std::make_unique<Held>();
  held->packet_id = id;
  held->sequence = current_sequence_;
  held->key = key;
  held->rule = &rule;
  DiscoveryOption offer;
  offer.policy = Intersect(rule.policy, env_.capability());
  offer.device_id = env_.config.device_id;
  offer.plaintext = plaintext;
  offer.client = key.client;
  held->offer = offer;
  // The probe becomes the server connection when no box answers: from the client's
  // address, the server sees no difference from a connection without the box.
  held->transparent = rule.server_source == ServerSource::kClient && !asymmetric_.Remembered(key.server, Clock::now());
  if (target_port) held->target_port = *target_port;
  StartProbe(std::move(held));
}

// A SYN with another box's offer: answer it (datacenter), or relay it on (middle).
void Interceptor::Impl::OnProbeFromUpstream(uint32_t id, const FlowKey& key, const TcpSegment& s) {
  const DiscoveryOption& upstream = *s.option;
  address client = upstream.client ? *upstream.client : key.client;
  if (!config_.answer) return Bypass(id, key, "", false);
  const InpathRule& rule = Match(client, key.server, key.server_port);
  if (rule.action == InpathAction::kPassThrough || rule.action == InpathAction::kDeny) {
    // A datacenter does not refuse what a branch probes: it just does not answer.
    return Bypass(id, key, "", false);
  }
  // Answer only what this box can secure: TLS needs [peering] credentials.
  if (!(upstream.plaintext && !rule.encryption) && !security_) return Bypass(id, key, "", false);
  if (held_.size() >= kMaxHeld) return Bypass(id, key, "", false);
  auto held = std::make_unique<Held>();
  held->packet_id = id;
  held->sequence = current_sequence_;
  held->key = key;
  held->rule = &rule;
  held->upstream = upstream;
  // The probe onwards carries the branch's offer unchanged, so that a box further
  // along answers the branch, not us.
  held->offer = upstream;
  // A server known to drop SYNs with options is probed without: no box beyond it
  // could answer anyway.
  if (option_droppers_.Remembered(key.server, Clock::now())) held->offer.reset();
  held->transparent = rule.server_source == ServerSource::kClient && upstream.client &&
                      !asymmetric_.Remembered(key.server, Clock::now());
  StartProbe(std::move(held));
}

std::string Interceptor::Impl::NoAnswerReason(const Held& h, const FlowKey& key) {
  if (!h.offer) return "no room for option 0x21 in the SYN";
  if (h.retried_without_option()) {
    std::string what = "server " + key.server.to_string() + " did not answer " +
                       (h.syns_with_option > 1 ? "the two SYNs" : "the SYN") +
                       " carrying option 0x21, only the retransmission without it";
    if (!option_droppers_.Saw(key.server, h.first_started, Clock::now())) return what + ": a lost SYN, or a server that drops options (remembered if it happens again)";
    return what + ", twice in a row: remembered for " + Minutes(config_.option_drop_memory);
  }
  auto it = learned_.find(key.server);
  if (it != learned_.end() && Clock::now() - it->second.at < config_.peer_memory) {
    std::string peer = channel::FormatDeviceId(it->second.device_id);
    auto ago = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - it->second.at).count();
    learned_.erase(it);  // it stopped answering: forget it
    return "option stripped on the path, or peer gone: peer " + peer + " answered for this server " +
           std::to_string(ago) + " s ago, not now";
  }
  return "no peer on the path";
}

Interceptor::Impl::Decision& Interceptor::Impl::Decide(const FlowKey& key, Verdict verdict, std::chrono::seconds keep) {
  Decision& d = decisions_[key];
  d.verdict = verdict;
  d.expires = Clock::now() + keep;
  d.sequence = current_sequence_;
  return d;
}

void Interceptor::Impl::Release(Held& h, Verdict verdict) {
  Decision& d = decisions_[h.key];
  d.verdict = verdict;
  d.sequence = h.sequence;
  if (verdict == Verdict::kBypass) {
    d.expires = Clock::now() + std::chrono::seconds(60);  // the client's retransmissions go the same way
    error_code ignored;
    if (h.probe) h.probe->close(ignored);
  }
  queue_->Accept(h.packet_id, verdict == Verdict::kIntercept ? kMarkIntercept : kMarkBypass);
}

// Lets the SYN go on untouched; `reason` non-empty: show it on the status page.
void Interceptor::Impl::Bypass(uint32_t id, const FlowKey& key, const std::string& reason, bool record) {
  Decide(key, Verdict::kBypass, std::chrono::seconds(60));
  queue_->Accept(id, kMarkBypass);
  if (!record) return;
  WANOPT_LOG(kInfo, "intercept") << FormatEndpoint(key.client, key.client_port) << " -> "
                                 << FormatEndpoint(key.server, key.server_port) << ": pass-through (not proxied): " << reason;
  // Listed on the page like any connection, so counted with them too (its bytes
  // never cross the box's sockets: it has none).
  ++env_.counters.sessions_opened;
  ++env_.counters.pass_through;
  auto r = env_.table.Add(env_.config.name, "branch", env_.config.policy);
  r->SetEndpoints(tcp::endpoint(key.client, key.client_port), tcp::endpoint(key.server, key.server_port));
  r->SetState(ConnectionState::kPassThrough);
  r->AddNote("pass-through (routed, not proxied): " + reason);
  r->End(false);
}

}  // namespace wanopt::intercept
