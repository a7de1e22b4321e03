#include "wanopt/intercept/interceptor.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <string_view>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "wanopt/channel/frame.h"
#include "wanopt/channel/secure_channel.h"
#include "wanopt/session/secure_start.h"
#include "wanopt/intercept/netlink_queue.h"
#include "wanopt/intercept/packet.h"
#include "util/close_with_reset.h"
#include "util/endpoint.h"
#include "util/log.h"
#include "util/accept_backoff.h"
#include "util/log_rate_limit.h"

namespace wanopt::intercept {

namespace asio = boost::asio;
using asio::ip::address_v4;
using asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

// A connection as its SYN names it: client (or upstream box) -> server.
struct FlowKey {
  uint32_t client = 0, server = 0;
  uint16_t client_port = 0, server_port = 0;
  auto operator<=>(const FlowKey&) const = default;
};

// A probe's SYN and SYN-ACK name it by its own port and the server.
struct ProbeKey {
  uint32_t local = 0;  // transparent probes of different clients may share a port
  uint16_t local_port = 0;
  uint32_t server = 0;
  uint16_t server_port = 0;
  auto operator<=>(const ProbeKey&) const = default;
};

std::string Format(const tcp::endpoint& e) { return FormatEndpoint(e); }
std::string Format(uint32_t a, uint16_t port) { return address_v4(a).to_string() + ":" + std::to_string(port); }

// Moves a socket to another event loop: the descriptor leaves its loop and joins
// the other; the connection itself is untouched.
tcp::socket MoveToLoop(tcp::socket& socket, asio::io_context& loop) {
  tcp::socket moved(loop);
  if (!socket.is_open()) return moved;
  error_code ec;
  int fd = socket.release(ec);  // deregistered from its loop, not closed
  if (!ec) moved.assign(tcp::v4(), fd, ec);
  return moved;
}

std::string Minutes(std::chrono::seconds s) {
  return s.count() % 60 == 0 ? std::to_string(s.count() / 60) + " min" : std::to_string(s.count()) + " s";
}

}  // namespace

class Interceptor::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(SessionEnvironment& env, const channel::SecureContext* security, asio::io_context& loop,
       std::function<asio::io_context&()> session_loop)
      : env_(env),
        config_(*env.config.intercept),
        security_(security),
        loop_(loop),
        session_loop_(std::move(session_loop)),
        acceptor_(loop),
        sweep_timer_(loop) {}

  bool Start(std::string* error) {
    error_code ec;
    tcp::endpoint at(tcp::v4(), config_.listen_port);
    acceptor_.open(tcp::v4(), ec);
    int one = 1;
    if (!ec && ::setsockopt(acceptor_.native_handle(), SOL_IP, IP_TRANSPARENT, &one, sizeof one) != 0) {
      ec = error_code(errno, boost::system::system_category());
    }
    uint32_t mark = kMarkListener;
    if (!ec && ::setsockopt(acceptor_.native_handle(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
      ec = error_code(errno, boost::system::system_category());
    }
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(at, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      *error = "intercept: transparent listener on port " + std::to_string(config_.listen_port) + ": " +
               ec.message() + " (needs root / CAP_NET_ADMIN)";
      acceptor_.close(ec);
      return false;
    }
    auto self = shared_from_this();
    queue_ = NetlinkQueue::Open(loop_, config_.queue, [self](const QueuedPacket& p) { self->OnPacket(p); }, error);
    if (!queue_) {
      *error = "intercept: " + *error;
      acceptor_.close(ec);
      return false;
    }
    WANOPT_LOG(kInfo, "intercept") << env_.config.name << ": intercepting: netlink queue " << config_.queue
                                   << ", transparent listener on port " << config_.listen_port << ", "
                                   << config_.rules.size() << " in-path rule(s), device id "
                                   << channel::FormatDeviceId(env_.config.device_id)
                                   << (config_.answer ? ", answers probes" : "");
    Accept();
    Sweep();
    return true;
  }

  void Stop() {
    stopped_ = true;
    error_code ignored;
    acceptor_.close(ignored);
    sweep_timer_.cancel();
    // The queue's handler holds this object: dropping the queue breaks the cycle.
    if (queue_) queue_->Close();
    queue_.reset();
    for (auto& [key, held] : held_) {
      if (held->probe) held->probe->close(ignored);
    }
    held_.clear();
    probes_.clear();
    decisions_.clear();
  }

  tcp::endpoint listen_endpoint() const {
    error_code ec;
    return acceptor_.local_endpoint(ec);
  }

 private:
  // What the box decided for a connection, until the client's handshake completes
  // at the listener (and a while after, for retransmitted SYNs).
  enum class Verdict { kHeld, kIntercept, kBypass, kDeny };
  enum class Kind {
    kOptimize,     // branch: the probe is the inner channel
    kPassThrough,  // branch: the probe is the server connection
    kMiddle,       // a further box answered: relay unchanged
    kDatacenter,   // we answer: the probe is the server connection
    kFixedTarget,  // rule: through a configured peer
    kRelayDirect,  // a module's redirect that cannot be optimized: the box relays it
  };
  // Bounds the SYNs held at once (each holds a probe socket): beyond it, new
  // connections pass through rather than exhaust the box's descriptors.
  static constexpr size_t kMaxHeld = 4096;
  struct Decision {
    Verdict verdict = Verdict::kHeld;
    Kind kind = Kind::kPassThrough;
    Clock::time_point expires;
    const InpathRule* rule = nullptr;
    std::optional<tcp::socket> probe;       // until the listener takes it
    std::optional<DiscoveryOption> answer;  // the option our SYN-ACK carries (datacenter, middle)
    DiscoveryOption peer;                   // kOptimize: who answered
    bool plaintext = false;
    std::string reason;                     // pass-through reason, or a note
    std::string note;                       // branch: how the probe got through (asymmetric routing)
    bool from_client = false;               // the probe connected from the client's address
    tcp::endpoint client;                   // the real client (datacenter: from the option)
    std::optional<uint16_t> target_port;    // a module redirected the connection to this port
    uint32_t sequence = 0;                  // the SYN's: a new SYN on the same 4-tuple is a new connection
  };

  // A SYN held while its probe is out.
  struct Held {
    uint32_t packet_id = 0;
    uint32_t sequence = 0;
    FlowKey key;
    uint16_t target_port = 0;                 // where the probe goes (a module may redirect)
    const InpathRule* rule = nullptr;
    std::optional<DiscoveryOption> upstream;  // the option the SYN carried (we are not the branch)
    std::optional<DiscoveryOption> offer;     // what our probe's SYN carries (none: server dropped options)
    std::optional<tcp::socket> probe;
    ProbeKey probe_key;
    int syns_seen = 0;                        // our probe's SYN and its retransmissions
    bool retried_without_option = false;
    bool synack_seen = false;
    std::optional<DiscoveryOption> answer;    // a box answered in the SYN-ACK
    bool transparent = false;                 // the probe uses the client's address
    Clock::duration early_timeout{};          // a retry from our address after a give-up this quick
    // The client's address: the SYN's source at a branch, the option's further on.
    uint32_t client_address() const { return upstream && upstream->client ? upstream->client->to_uint() : key.client; }
    Clock::time_point started;
    std::unique_ptr<asio::steady_timer> timer;
  };

  // How long a probe from the client's address may go unanswered before the box
  // suspects asymmetric routing (the server's replies go round it) and retries from
  // its own address: a few round trips to that server as measured before, else to
  // any server, else half a second; never more than the old half connect time.
  Clock::duration AsymmetryTimeout(uint32_t server) const {
    std::optional<Clock::duration> rtt;
    if (auto it = server_rtt_.find(server); it != server_rtt_.end()) rtt = it->second;
    else if (last_server_rtt_.count()) rtt = last_server_rtt_;
    Clock::duration limit = config_timeout() / 2;
    Clock::duration wait = rtt ? std::max<Clock::duration>(4 * *rtt, std::chrono::milliseconds(100))
                               : std::chrono::milliseconds(500);
    return std::min(wait, limit);
  }

  // How long a probe from the client's address may go unanswered before the box
  // retries from its own. Further along, AsymmetryTimeout. A branch waits longer:
  // a datacenter box may hold its SYN while connecting to the server itself (one
  // AsymmetryTimeout of its own, and a retry), and a server that drops SYNs with
  // options answers only the first retransmission (at 1 s, without the option),
  // which still proves the replies come back through this box.
  Clock::duration ProbeTimeout(const Held& h) const {
    if (!h.transparent) return config_timeout();
    if (h.upstream) return AsymmetryTimeout(h.key.server);
    Clock::duration wait = std::chrono::seconds(1) + 2 * AsymmetryTimeout(h.key.server);
    return std::min<Clock::duration>(wait, config_timeout() / 2);
  }

  // The kernel's smoothed RTT of a connected probe: what AsymmetryTimeout scales by.
  void RecordServerRtt(uint32_t server, tcp::socket& probe) {
    ::tcp_info info{};
    socklen_t len = sizeof info;
    if (::getsockopt(probe.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || info.tcpi_rtt == 0) return;
    Clock::duration rtt = std::chrono::microseconds(info.tcpi_rtt);
    if (server_rtt_.size() > 4096) server_rtt_.clear();  // a bound, not a cache policy
    server_rtt_[server] = rtt;
    last_server_rtt_ = rtt;
  }

  // ---- Packets ----

  void OnPacket(const QueuedPacket& p) {
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
  void OnSyn(uint32_t id, const TcpSegment& s) {
    FlowKey key{s.source.to_uint(), s.destination.to_uint(), s.source_port, s.destination_port};
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
        WANOPT_LOG(kInfo, "intercept") << Format(key.client, key.client_port) << " -> "
                                       << Format(key.server, key.server_port) << ": denied by " << rule.name;
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
      tcp::endpoint client(address_v4(key.client), key.client_port), server(address_v4(key.server), key.server_port);
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
    if (auto it = option_droppers_.find(key.server); it != option_droppers_.end() && it->second > Clock::now()) {
      return pass("server " + address_v4(key.server).to_string() + " drops SYNs carrying TCP options (remembered for " +
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
    offer.client = address_v4(key.client);
    held->offer = offer;
    // The probe becomes the server connection when no box answers: from the client's
    // address, the server sees no difference from a connection without the box.
    held->transparent = rule.server_source == ServerSource::kClient && !asymmetric_.count(key.server);
    if (target_port) held->target_port = *target_port;
    StartProbe(std::move(held));
  }

  // A SYN with another box's offer: answer it (datacenter), or relay it on (middle).
  void OnProbeFromUpstream(uint32_t id, const FlowKey& key, const TcpSegment& s) {
    const DiscoveryOption& upstream = *s.option;
    uint32_t client = upstream.client ? upstream.client->to_uint() : key.client;
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
    if (auto it = option_droppers_.find(key.server); it != option_droppers_.end() && it->second > Clock::now()) {
      held->offer.reset();
    }
    held->transparent = rule.server_source == ServerSource::kClient && upstream.client &&
                        !asymmetric_.count(key.server);
    StartProbe(std::move(held));
  }

  void StartProbe(std::unique_ptr<Held> held) {
    Decide(held->key, Verdict::kHeld, config_timeout() + std::chrono::seconds(5)).sequence = held->sequence;
    tcp::socket probe(loop_);
    error_code ec;
    probe.open(tcp::v4(), ec);
    int fd = probe.native_handle();
    uint32_t mark = kMarkProbe;
    if (!ec && ::setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
      ec = error_code(errno, boost::system::system_category());
    }
    if (!ec && !held->upstream) TuneInnerSocket(probe, env_.config);  // it may become the inner channel
    tcp::endpoint local(tcp::v4(), 0);
    int one = 1;
    if (!ec && held->transparent && ::setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) != 0) {
      WANOPT_LOG(kWarn, "intercept") << "IP_TRANSPARENT: " << std::strerror(errno) << ": probing from this box's address";
      held->transparent = false;
    }
    if (!ec && held->transparent) local = tcp::endpoint(address_v4(held->client_address()), 0);
    if (!ec) probe.bind(local, ec);
    if (ec) {
      WANOPT_LOG(kWarn, "intercept") << "probe socket: " << ec.message() << ": passing the connection through";
      return Release(*held, Verdict::kBypass);
    }
    if (!held->target_port) held->target_port = held->key.server_port;
    tcp::endpoint bound = probe.local_endpoint(ec);
    // Bound to 0.0.0.0 until the connect picks a source: key such probes by port.
    uint32_t bound_address = held->transparent ? bound.address().to_v4().to_uint() : 0;
    held->probe_key = ProbeKey{bound_address, bound.port(), held->key.server, held->target_port};
    held->probe = std::move(probe);
    held->timer = std::make_unique<asio::steady_timer>(loop_);
    Held* h = held.get();
    FlowKey key = held->key;
    probes_[h->probe_key] = h;
    held_[key] = std::move(held);
    auto self = shared_from_this();
    h->started = Clock::now();
    h->timer->expires_after(ProbeTimeout(*h));
    h->timer->async_wait([self, key](error_code ec) {
      if (ec) return;
      if (auto it = self->held_.find(key); it != self->held_.end() && it->second->probe) it->second->probe->cancel();
    });
    tcp::endpoint server(address_v4(key.server), h->target_port);
    h->probe->async_connect(server, [self, key](error_code ec) { self->OnProbeConnected(key, ec); });
  }

  // Our probe's SYN on its way out: add the offer to the first transmission only.
  void OnProbeSyn(const QueuedPacket& p, const TcpSegment& s) {
    auto it = probes_.find(ProbeKey{0, s.source_port, s.destination.to_uint(), s.destination_port});
    if (it == probes_.end()) it = probes_.find(ProbeKey{s.source.to_uint(), s.source_port, s.destination.to_uint(), s.destination_port});
    if (it == probes_.end() || p.mark != kMarkProbe) return queue_->Accept(p.id);
    Held& h = *it->second;
    ++h.syns_seen;
    if (h.offer && h.syns_seen == 1) {
      if (auto with_option = AddOption(p.bytes, *h.offer)) return queue_->Accept(p.id, std::nullopt, *with_option);
      WANOPT_LOG(kInfo, "intercept") << "no room for option 0x21 in the SYN to " << Format(h.key.server, h.key.server_port)
                                     << ": probing without it";
      h.offer.reset();
    } else if (h.offer) {
      // No answer to the SYN with the option: some servers and firewalls drop SYNs
      // carrying options they do not know. The retransmission goes without.
      h.retried_without_option = true;
    }
    queue_->Accept(p.id);
  }

  // A SYN-ACK arriving for one of our probes: did a box answer?
  void OnProbeSynAck(uint32_t id, const TcpSegment& s) {
    auto it = probes_.find(ProbeKey{0, s.destination_port, s.source.to_uint(), s.source_port});
    if (it == probes_.end()) it = probes_.find(ProbeKey{s.destination.to_uint(), s.destination_port, s.source.to_uint(), s.source_port});
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
  void OnOurSynAck(const QueuedPacket& p, const TcpSegment& s) {
    FlowKey key{s.destination.to_uint(), s.source.to_uint(), s.destination_port, s.source_port};
    auto it = decisions_.find(key);
    if (it == decisions_.end() || !it->second.answer) return queue_->Accept(p.id);
    if (auto with_option = AddOption(p.bytes, *it->second.answer)) return queue_->Accept(p.id, std::nullopt, *with_option);
    queue_->Accept(p.id);
  }

  // ---- Probe outcomes ----

  void OnProbeConnected(FlowKey key, error_code ec) {
    auto it = held_.find(key);
    if (it == held_.end() || stopped_) return;
    std::unique_ptr<Held> held = std::move(it->second);
    held_.erase(it);
    probes_.erase(held->probe_key);
    held->timer->cancel();
    Held& h = *held;
    tcp::endpoint server(address_v4(key.server), key.server_port);
    if (ec) {
      if (h.transparent && (ec == asio::error::operation_aborted || ec == asio::error::timed_out) && !h.synack_seen) {
        // Connecting with the client's address got no answer: the server's replies
        // may not come back through this box. Try once more from our own address.
        WANOPT_LOG(kInfo, "intercept") << "no answer from " << Format(server) << " to the client's address "
                                       << address_v4(h.client_address()) << ": retrying from this box's address";
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
        retry_from_box_.insert(key);
        return StartProbe(std::move(retry));
      }
      std::string what = ec == asio::error::operation_aborted ? "no answer" : ec.message();
      WANOPT_LOG(kInfo, "intercept") << Format(key.client, key.client_port) << " -> " << Format(server) << ": "
                                     << what << ": the SYN goes on to the server";
      retry_from_box_.erase(key);
      return Release(h, Verdict::kBypass);
    }
    bool asymmetric = retry_from_box_.erase(key) > 0;
    if (h.probe) RecordServerRtt(key.server, *h.probe);
    std::optional<uint16_t> redirected;
    if (h.target_port != key.server_port) redirected = h.target_port;
    // Remembered only when the server answered our own address faster than it was
    // given to answer the client's: then that answer went round this box. A server
    // that was merely slow is not held against the next connection.
    bool confirmed = asymmetric && Clock::now() - h.started < h.early_timeout;
    if (confirmed) asymmetric_[key.server] = Clock::now() + config_.peer_memory;
    std::string asymmetry;
    if (asymmetric) {
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(h.early_timeout).count();
      asymmetry = confirmed ? "asymmetric routing: the server's replies to the client's address do not come back "
                              "through this box (no answer in " + std::to_string(waited) +
                                  " ms), so it connects from its own address (remembered for " +
                                  Minutes(config_.peer_memory) + ")"
                            : "no answer to the client's address in " + std::to_string(waited) +
                                  " ms: connected from this box's address (the server was slow: not remembered)";
    }
    Decision& d = Decide(key, Verdict::kIntercept, std::chrono::seconds(30));
    d.sequence = h.sequence;
    d.rule = h.rule;
    d.target_port = redirected;
    d.probe = std::move(h.probe);
    d.from_client = h.transparent;
    d.client = tcp::endpoint(address_v4(h.upstream && h.upstream->client ? h.upstream->client->to_uint() : key.client),
                             key.client_port);
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
        } else if (h.retried_without_option) {
          option_droppers_[key.server] = Clock::now() + config_.option_drop_memory;
          d.reason = "server " + address_v4(key.server).to_string() +
                     " answered only the SYN without option 0x21: probed without it (remembered for " +
                     Minutes(config_.option_drop_memory) + ")";
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

  std::string NoAnswerReason(const Held& h, const FlowKey& key) {
    if (!h.offer) return "no room for option 0x21 in the SYN";
    if (h.retried_without_option) {
      option_droppers_[key.server] = Clock::now() + config_.option_drop_memory;
      return "server " + address_v4(key.server).to_string() +
             " did not answer the SYN carrying option 0x21, only the retransmission without it: "
             "remembered for " + Minutes(config_.option_drop_memory);
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

  // ---- Verdicts ----

  Decision& Decide(const FlowKey& key, Verdict verdict, std::chrono::seconds keep) {
    Decision& d = decisions_[key];
    d.verdict = verdict;
    d.expires = Clock::now() + keep;
    d.sequence = current_sequence_;
    return d;
  }

  void Release(Held& h, Verdict verdict) {
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
  void Bypass(uint32_t id, const FlowKey& key, const std::string& reason, bool record) {
    Decide(key, Verdict::kBypass, std::chrono::seconds(60));
    queue_->Accept(id, kMarkBypass);
    if (!record) return;
    WANOPT_LOG(kInfo, "intercept") << Format(key.client, key.client_port) << " -> "
                                   << Format(key.server, key.server_port) << ": pass-through (not proxied): " << reason;
    // Listed on the page like any connection, so counted with them too (its bytes
    // never cross the box's sockets: it has none).
    ++env_.counters.sessions_opened;
    ++env_.counters.pass_through;
    auto r = env_.table.Add(env_.config.name, "branch", env_.config.policy);
    r->SetEndpoints(tcp::endpoint(address_v4(key.client), key.client_port),
                    tcp::endpoint(address_v4(key.server), key.server_port));
    r->SetState(ConnectionState::kPassThrough);
    r->AddNote("pass-through (routed, not proxied): " + reason);
    r->End(false);
  }

  // ---- The listener: the client's (or upstream box's) handshake completed ----

  void Accept() {
    acceptor_.async_accept(loop_, [self = shared_from_this()](error_code ec, tcp::socket socket) {
      if (self->stopped_ || ec == asio::error::operation_aborted) return;
      if (!ec) {
        self->accept_backoff_.Succeeded();
        self->OnAccepted(std::move(socket));
        self->Accept();
        return;
      }
      // Out of descriptors: try again later instead of spinning.
      auto retry = self->accept_backoff_.Failed();
      if (retry.log) {
        WANOPT_LOG(kWarn, "intercept") << "transparent listener: accept: " << ec.message() << "; retrying in "
                                       << retry.delay.count() << " ms" << log::Suppressed(retry.suppressed);
      }
      auto timer = std::make_shared<asio::steady_timer>(self->loop_, retry.delay);
      timer->async_wait([self, timer](error_code) {
        if (!self->stopped_) self->Accept();
      });
    });
  }

  void OnAccepted(tcp::socket socket) {
    error_code ec;
    tcp::endpoint remote = socket.remote_endpoint(ec);
    tcp::endpoint local = socket.local_endpoint(ec);  // the original destination (TPROXY)
    if (ec || !remote.address().is_v4() || !local.address().is_v4()) return CloseWithReset(socket);
    FlowKey key{remote.address().to_v4().to_uint(), local.address().to_v4().to_uint(), remote.port(), local.port()};
    auto it = decisions_.find(key);
    bool needs_probe = it != decisions_.end() && it->second.kind != Kind::kFixedTarget &&
                       it->second.kind != Kind::kRelayDirect;
    if (it == decisions_.end() || it->second.verdict != Verdict::kIntercept || (needs_probe && !it->second.probe)) {
      WANOPT_LOG(kInfo, "intercept") << "connection " << Format(remote) << " -> " << Format(local)
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
    DiscoveryOption peer = d.peer;
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
          plan.notes.push_back(rule.name + ": fixed-target peer " + Format(*rule.peer));
          return StartBranchSession(self->env_, std::move(*lan), std::move(plan));
        }
      }
    });
  }

  static BranchPlan PlanFor(const InpathRule& rule, const tcp::endpoint& destination) {
    BranchPlan plan;
    plan.destination = destination;
    plan.policy = rule.policy;
    plan.modules = rule.modules;
    return plan;
  }

  // Branch, on the session's loop: secure the probe, then the session.
  void StartOptimized(tcp::socket client, tcp::socket inner, const InpathRule& rule, BranchPlan plan,
                      const DiscoveryOption& peer, bool plaintext, FlowKey key) {
    error_code ec;
    plan.peer = inner.remote_endpoint(ec);
    plan.peer_id = channel::FormatDeviceId(peer.device_id);
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
    options.optimistic = RecentlyConfirmed(peer.device_id);
    options.on_late_failure = [self, id = peer.device_id, key](const std::string& why) {
      WANOPT_LOG(kWarn, "intercept") << "peer " << channel::FormatDeviceId(id) << " refused this box after all ("
                                     << why << "): that connection is cut; the next ones wait for its confirmation";
      self->Confirmed(id, false);
    };
    bool optimistic = options.optimistic;
    std::string peer_name = "peer " + plan.peer_id;
    SecureInnerChannel(
        env_, std::move(inner), ChannelSide::kOpening, peer_name, std::move(options),
        [self, lan, plan = std::make_shared<BranchPlan>(std::move(plan)), key, optimistic, peer_name,
         id = peer.device_id](SecureOutcome outcome, tcp::socket plain) mutable {
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
  void StartAnswered(asio::io_context& loop, tcp::socket inner, tcp::socket server, const DiscoveryOption& peer,
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

  void StartAnsweredChannel(tcp::socket inner, tcp::socket server, const DiscoveryOption& peer, bool plaintext,
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
    std::string branch = channel::FormatDeviceId(peer.device_id) + " " + Format(*plan.peer_endpoint);
    StartSecuredDatacenterSession(env_, std::move(inner), std::move(plan), branch);
  }

  // ---- Helpers ----

  // Peers whose TLS confirmation this box had lately (any loop's thread).
  bool RecentlyConfirmed(const channel::DeviceId& id) {
    std::lock_guard lock(confirmed_mu_);
    auto it = confirmed_.find(id);
    return it != confirmed_.end() && Clock::now() - it->second < config_.peer_memory;
  }
  void Confirmed(const channel::DeviceId& id, bool yes) {
    std::lock_guard lock(confirmed_mu_);
    if (yes) confirmed_[id] = Clock::now();
    else confirmed_.erase(id);
  }

  const InpathRule& Match(uint32_t client, uint32_t server, uint16_t port) const {
    for (const InpathRule& rule : config_.rules) {
      if (rule.Matches(client, server, port)) return rule;
    }
    return config_.default_rule;
  }

  std::chrono::seconds config_timeout() const {
    return std::chrono::duration_cast<std::chrono::seconds>(env_.config.timeouts.connect) + std::chrono::seconds(1);
  }

  // Forgets decisions whose time is up, closing probes nobody came for.
  void Sweep() {
    sweep_timer_.expires_after(std::chrono::seconds(5));
    sweep_timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->stopped_) return;
      auto now = Clock::now();
      for (auto it = self->decisions_.begin(); it != self->decisions_.end();) {
        if (it->second.expires < now && it->second.verdict != Verdict::kHeld) {
          if (it->second.probe) CloseWithReset(*it->second.probe);
          it = self->decisions_.erase(it);
        } else {
          ++it;
        }
      }
      std::erase_if(self->option_droppers_, [now](const auto& e) { return e.second < now; });
      std::erase_if(self->unauthenticated_, [now](const auto& e) { return e.second.until < now; });
      std::erase_if(self->asymmetric_, [now](const auto& e) { return e.second < now; });
      std::erase_if(self->learned_, [&](const auto& e) { return now - e.second.at > self->config_.peer_memory; });
      self->Sweep();
    });
  }

  struct Learned {
    channel::DeviceId device_id{};
    Clock::time_point at;
  };
  struct Unauthenticated {
    Clock::time_point until;
    std::string reason;
  };

  SessionEnvironment& env_;
  const InterceptConfig& config_;
  const channel::SecureContext* security_;
  asio::io_context& loop_;
  std::function<asio::io_context&()> session_loop_;
  tcp::acceptor acceptor_;
  asio::steady_timer sweep_timer_;
  std::unique_ptr<NetlinkQueue> queue_;
  bool stopped_ = false;
  uint32_t current_sequence_ = 0;  // of the SYN being decided

  std::map<FlowKey, Decision> decisions_;
  std::map<FlowKey, std::unique_ptr<Held>> held_;
  std::map<ProbeKey, Held*> probes_;
  std::set<FlowKey> retry_from_box_;
  // What the box learned about servers, each with its expiry.
  std::map<uint32_t, Learned> learned_;                  // a peer answered for this server
  std::map<uint32_t, Clock::time_point> option_droppers_;  // drops SYNs with options
  std::map<uint32_t, Unauthenticated> unauthenticated_;  // a box on the path failed authentication
  std::map<uint32_t, Clock::time_point> asymmetric_;     // replies to clients bypass this box
  std::map<uint32_t, Clock::duration> server_rtt_;       // measured by connected probes
  AcceptBackoff accept_backoff_;                          // the transparent listener's
  Clock::duration last_server_rtt_{};
  std::mutex confirmed_mu_;
  std::map<channel::DeviceId, Clock::time_point> confirmed_;  // peers that confirmed our TLS
};

Interceptor::Interceptor(SessionEnvironment& env, const channel::SecureContext* security, asio::io_context& loop,
                         std::function<asio::io_context&()> session_loop)
    : impl_(std::make_shared<Impl>(env, security, loop, std::move(session_loop))) {}

Interceptor::~Interceptor() = default;

bool Interceptor::Start(std::string* error) { return impl_->Start(error); }
void Interceptor::Stop() { impl_->Stop(); }
tcp::endpoint Interceptor::listen_endpoint() const { return impl_->listen_endpoint(); }

}  // namespace wanopt::intercept
