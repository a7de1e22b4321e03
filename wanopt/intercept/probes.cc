// The discovery probes: opened towards the server with option 0x21 on their SYN,
// their SYN-ACKs read for an answer, their timeouts (asymmetric routing), and what
// their outcome decides.
#include "wanopt/intercept/interceptor_impl.h"
#include "wanopt/intercept/probe_timing.h"

#include "util/socket_options.h"

namespace wanopt::intercept {

// probe_timing.h has the rules; these supply what this box measured.
Clock::duration Interceptor::Impl::AsymmetryTimeout(const address& server) const {
  std::optional<Clock::duration> rtt;
  if (auto it = server_rtt_.find(server); it != server_rtt_.end()) rtt = it->second;
  else if (last_server_rtt_.count()) rtt = last_server_rtt_;
  return AsymmetryWait(rtt, config_timeout() / 2);
}

Clock::duration Interceptor::Impl::ProbeTimeout(const Held& h) const {
  return ProbeWait(h.transparent, !h.upstream, AsymmetryTimeout(h.key.server), config_timeout(), h.syns_with_option);
}

// The kernel's smoothed RTT of a connected probe: what AsymmetryTimeout scales by.
void Interceptor::Impl::RecordServerRtt(const address& server, tcp::socket& probe) {
  ::tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(probe.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || info.tcpi_rtt == 0) return;
  Clock::duration rtt = std::chrono::microseconds(info.tcpi_rtt);
  if (server_rtt_.size() > 4096) server_rtt_.clear();  // a bound, not a cache policy
  server_rtt_[server] = rtt;
  last_server_rtt_ = rtt;
}

void Interceptor::Impl::StartProbe(std::unique_ptr<Held> held) {
  Decide(held->key, Verdict::kHeld, config_timeout() + std::chrono::seconds(5)).sequence = held->sequence;
  ++env_.counters.discovery_probes;
  held->syns_with_option = SynsWithOption(!held->upstream, option_droppers_.Suspected(held->key.server, Clock::now()),
                                          AsymmetryTimeout(held->key.server), config_timeout());
  tcp::socket probe(loop_);
  error_code ec;
  tcp family = held->key.server.is_v6() ? tcp::v6() : tcp::v4();
  probe.open(family, ec);
  int fd = probe.native_handle();
  if (int error = ec ? 0 : SetSocketMark(fd, kMarkProbe)) ec = error_code(error, boost::system::system_category());
  if (!ec && !held->upstream) TuneInnerSocket(probe, env_.config);  // it may become the inner channel
  tcp::endpoint local(family, 0);
  // The client's address is the probe's source only in the server's family (an
  // upstream box's option could name one of the other).
  if (held->transparent && held->client_address().is_v6() != held->key.server.is_v6()) held->transparent = false;
  if (int error = !ec && held->transparent ? SetTransparent(fd, family == tcp::v6()) : 0) {
    WANOPT_LOG(kWarn, "intercept") << "IP_TRANSPARENT: " << std::strerror(error) << ": probing from this box's address";
    held->transparent = false;
  }
  if (!ec && held->transparent) local = tcp::endpoint(held->client_address(), 0);
  if (!ec) LeavePortToConnect(fd);  // best effort: without it the bind picks, as before
  if (!ec) probe.bind(local, ec);
  if (ec) {
    WANOPT_LOG(kWarn, "intercept") << "probe socket: " << ec.message() << ": passing the connection through";
    return Release(*held, Verdict::kBypass);
  }
  if (!held->target_port) held->target_port = held->key.server_port;
  held->probe = std::move(probe);
  held->timer = std::make_unique<asio::steady_timer>(loop_);
  Held* h = held.get();
  FlowKey key = held->key;
  held_[key] = std::move(held);
  auto self = shared_from_this();
  h->started = Clock::now();
  if (h->first_started == Clock::time_point{}) h->first_started = h->started;
  h->timer->expires_after(ProbeTimeout(*h));
  h->timer->async_wait([self, key](error_code ec) {
    if (ec) return;
    if (auto it = self->held_.find(key); it != self->held_.end() && it->second->probe) it->second->probe->cancel();
  });
  tcp::endpoint server(key.server, h->target_port);
  h->probe->async_connect(server, [self, key](error_code ec) { self->OnProbeConnected(key, ec); });
  // The connect has chosen the source port and sent the SYN by now (a non-blocking
  // connect starts at once); the queue hands the SYN to OnProbeSyn on this thread,
  // after this returns. A probe from this box's own address is keyed by port alone
  // (the connect may pick a source address the key could not know beforehand).
  tcp::endpoint bound = h->probe->local_endpoint(ec);
  address bound_address = h->transparent ? bound.address() : address();
  h->probe_key = ProbeKey{bound_address, bound.port(), key.server, h->target_port};
  probes_[h->probe_key] = h;
}

// Our probe's SYN on its way out: add the offer to the first transmissions only
// (SynsWithOption).
void Interceptor::Impl::OnProbeSyn(const QueuedPacket& p, const TcpSegment& s) {
  auto it = probes_.find(ProbeKey{address(), s.source_port, s.destination, s.destination_port});
  if (it == probes_.end()) it = probes_.find(ProbeKey{s.source, s.source_port, s.destination, s.destination_port});
  if (it == probes_.end() || p.mark != kMarkProbe) return queue_->Accept(p.id);
  Held& h = *it->second;
  ++h.syns_seen;
  if (h.offer && h.syns_seen <= h.syns_with_option) {
    if (auto with_option = AddOption(p.bytes, *h.offer)) {
      if (h.syns_seen > 1) ++env_.counters.probe_syns_resent_with_option;
      return queue_->Accept(p.id, std::nullopt, *with_option);
    }
    WANOPT_LOG(kInfo, "intercept") << "no room for option 0x21 in the SYN to " << FormatEndpoint(h.key.server, h.key.server_port)
                                   << ": probing without it";
    h.offer.reset();
  } else if (h.offer) {
    // No answer to the SYNs with the option: some servers and firewalls drop SYNs
    // carrying options they do not know. This retransmission goes without.
    ++env_.counters.probe_syns_resent_without_option;
  }
  queue_->Accept(p.id);
}

// A SYN-ACK arriving for one of our probes: did a box answer?
void Interceptor::Impl::OnProbeSynAck(uint32_t id, const TcpSegment& s) {
  auto it = probes_.find(ProbeKey{address(), s.destination_port, s.source, s.source_port});
  if (it == probes_.end()) it = probes_.find(ProbeKey{s.destination, s.destination_port, s.source, s.source_port});
  if (it != probes_.end()) {
    Held& h = *it->second;
    h.synack_seen = true;
    // An answer proves the option got through, even if a retransmission without
    // it went out meanwhile (a datacenter box may hold our SYN for a while).
    if (s.option && s.option->answer && h.offer) h.answer = s.option;
  }
  queue_->Accept(id);
}

// Our listener's SYN-ACK: carries the answer when this box answers a probe.
void Interceptor::Impl::OnOurSynAck(const QueuedPacket& p, const TcpSegment& s) {
  FlowKey key{s.destination, s.source, s.destination_port, s.source_port};
  auto it = decisions_.find(key);
  if (it == decisions_.end() || !it->second.answer) return queue_->Accept(p.id);
  if (auto with_option = AddOption(p.bytes, *it->second.answer)) return queue_->Accept(p.id, std::nullopt, *with_option);
  queue_->Accept(p.id);
}

void Interceptor::Impl::OnProbeConnected(FlowKey key, error_code ec) {
  auto it = held_.find(key);
  if (it == held_.end() || stopped_) return;
  std::unique_ptr<Held> held = std::move(it->second);
  held_.erase(it);
  probes_.erase(held->probe_key);
  held->timer->cancel();
  Held& h = *held;
  tcp::endpoint server(key.server, key.server_port);
  if (ec) {
    if (h.transparent && (ec == asio::error::operation_aborted || ec == asio::error::timed_out) && !h.synack_seen) {
      // Connecting with the client's address got no answer: the server's replies
      // may not come back through this box. Try once more from our own address.
      WANOPT_LOG(kInfo, "intercept") << "no answer from " << FormatEndpoint(server) << " to the client's address "
                                     << h.client_address() << ": retrying from this box's address";
      auto retry = std::make_unique<Held>();
      retry->packet_id = h.packet_id;
      retry->sequence = h.sequence;
      retry->key = key;
      retry->rule = h.rule;
      retry->upstream = h.upstream;
      retry->target_port = h.target_port;
      retry->offer = h.offer;
      retry->transparent = false;
      retry->early_timeout = Clock::now() - h.started;
      retry->first_started = h.started;
      return StartProbe(std::move(retry));
    }
    std::string what = ec == asio::error::operation_aborted ? "no answer" : ec.message();
    WANOPT_LOG(kInfo, "intercept") << FormatEndpoint(key.client, key.client_port) << " -> " << FormatEndpoint(server) << ": "
                                   << what << ": the SYN goes on to the server";
    return Release(h, Verdict::kBypass);
  }
  bool asymmetric = h.retry_from_box();
  if (h.probe) RecordServerRtt(key.server, *h.probe);
  // The SYN carrying the option was answered: whatever lost one before, the server
  // does not drop options.
  // (An answer proves it too, whichever SYN it came on.)
  if (h.offer && (!h.retried_without_option() || h.answer)) option_droppers_.Cleared(key.server);
  std::optional<uint16_t> redirected;
  if (h.target_port != key.server_port) redirected = h.target_port;
  // Only an answer to our own address faster than the wait the client's went
  // unanswered for counts: then that answer went round this box, or the SYN from
  // the client's address was lost; a server that was merely slow counts for nothing.
  // The same seen twice in a row is asymmetric routing, and remembered (TwiceInARow).
  auto now = Clock::now();
  bool answered_faster = asymmetric && now - h.started < h.early_timeout;
  bool remembered = answered_faster && asymmetric_.Saw(key.server, h.first_started, now);
  if (h.transparent) asymmetric_.Cleared(key.server);  // the client's address was answered
  std::string asymmetry;
  if (asymmetric) {
    auto waited = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(h.early_timeout).count());
    if (remembered) {
      asymmetry = "asymmetric routing: the server's replies to the client's address do not come back through this "
                  "box (no answer in " + waited + " ms, twice in a row), so it connects from its own address "
                  "(remembered for " + Minutes(config_.peer_memory) + ")";
    } else if (answered_faster) {
      asymmetry = "no answer to the client's address in " + waited + " ms, a faster one to this box's: asymmetric "
                  "routing, or a lost SYN (remembered if it happens again): connected from this box's address";
    } else {
      asymmetry = "no answer to the client's address in " + waited +
                  " ms: connected from this box's address (the server was slow: not remembered)";
    }
  }
  Decision& d = Decide(key, Verdict::kIntercept, std::chrono::seconds(30));
  d.sequence = h.sequence;
  d.rule = h.rule;
  d.target_port = redirected;
  d.probe = std::move(h.probe);
  d.from_client = h.transparent;
  d.client = tcp::endpoint(h.client_address(), key.client_port);
  if (h.upstream) {
    if (h.answer) {
      // A box further along answered the branch's offer: pass its answer back.
      d.kind = Kind::kMiddle;
      d.answer = h.answer;
      d.answer->relayed = true;
      d.reason = "middle box: " + channel::FormatDeviceId(h.upstream->device_id) + " and " +
                 channel::FormatDeviceId(h.answer->device_id) + " optimize this connection";
    } else {
      d.kind = Kind::kDatacenter;
      DiscoveryOption answer;
      answer.answer = true;
      answer.device_id = env_.config.device_id;
      answer.policy = Intersect(h.rule->policy, env_.capability());
      answer.plaintext = h.upstream->plaintext && !h.rule->encryption;
      d.plaintext = answer.plaintext;
      d.answer = answer;
      d.peer = *h.upstream;
      if (asymmetric) {
        d.reason = asymmetry;
      } else if (h.retried_without_option()) {
        d.reason = "server " + key.server.to_string() + " answered only the SYN without option 0x21: " +
                   (option_droppers_.Saw(key.server, h.first_started, now)
                        ? "twice in a row, probed without it from now on (remembered for " +
                              Minutes(config_.option_drop_memory) + ")"
                        : "a lost SYN, or a server that drops options (remembered if it happens again)");
      }
    }
  } else if (h.answer) {
    d.kind = Kind::kOptimize;
    d.peer = *h.answer;
    d.plaintext = h.answer->plaintext && h.offer && h.offer->plaintext;
    learned_[key.server] = Learned{h.answer->device_id, Clock::now()};
    d.note = asymmetry;
  } else {
    d.kind = Kind::kPassThrough;
    d.reason = NoAnswerReason(h, key);
    d.note = asymmetry;
  }
  Release(h, Verdict::kIntercept);
}

}  // namespace wanopt::intercept
