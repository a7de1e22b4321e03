// Private to wanopt/intercept/: the interceptor's implementation, its state and
// its decisions. Its member functions live in files named by their job:
//   interceptor.cc     start, stop, the sweep of what the box remembers
//   syn_decisions.cc   each queued SYN: hold and probe, answer, relay, or let pass
//   probes.cc          the discovery probes, their answers and timeouts
//   listener.cc        the transparent listener: decided connections become sessions
// Threading: every member runs on the interceptor's loop (`loop_`), but those that
// start sessions, which run on the session's loop (the comments say which).
#pragma once

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

#include <boost/asio/post.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>

#include "wanopt/channel/frame.h"
#include "wanopt/channel/secure_channel.h"
#include "wanopt/session/secure_start.h"
#include "wanopt/intercept/netlink_queue.h"
#include "wanopt/intercept/packet.h"
#include "wanopt/intercept/twice_in_a_row.h"
#include "util/close_with_reset.h"
#include "util/endpoint.h"
#include "util/log.h"
#include "util/accept_backoff.h"
#include "util/log_rate_limit.h"

namespace wanopt::intercept {

namespace asio = boost::asio;
using asio::ip::address;
using asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

// A connection as its SYN names it: client (or upstream box) -> server.
struct FlowKey {
  address client, server;
  uint16_t client_port = 0, server_port = 0;
  std::strong_ordering operator<=>(const FlowKey&) const = default;  // from address's == and <
};

// A probe's SYN and SYN-ACK name it by its own port and the server.
struct ProbeKey {
  address local;  // transparent probes of different clients may share a port; else unspecified
  uint16_t local_port = 0;
  address server;
  uint16_t server_port = 0;
  std::strong_ordering operator<=>(const ProbeKey&) const = default;
};


// Moves a socket to another event loop: the descriptor leaves its loop and joins
// the other; the connection itself is untouched.
inline tcp::socket MoveToLoop(tcp::socket& socket, asio::io_context& loop) {
  tcp::socket moved(loop);
  if (!socket.is_open()) return moved;
  error_code ec;
  tcp protocol = socket.local_endpoint(ec).protocol();
  if (ec) protocol = tcp::v4();
  int fd = socket.release(ec);  // deregistered from its loop, not closed
  if (!ec) moved.assign(protocol, fd, ec);
  return moved;
}

inline std::string Minutes(std::chrono::seconds s) {
  return s.count() % 60 == 0 ? std::to_string(s.count() / 60) + " min" : std::to_string(s.count()) + " s";
}


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
        acceptor6_(loop),
        sweep_timer_(loop) {}

  bool Start(std::string* error);
  void Stop();

  // tests/unit/syn_decisions_test.cc decides SYNs without root: no listener, its own
  // queue, and a look at what the box remembers.
  friend struct SynDecisionsTest;

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
    int syns_with_option = 1;                 // how many of them carry the offer (SynsWithOption)
    bool synack_seen = false;
    std::optional<DiscoveryOption> answer;    // a box answered in the SYN-ACK
    bool transparent = false;                 // the probe uses the client's address
    // A retry from our address: how long the client's address went unanswered before
    // (zero: this probe is no such retry).
    Clock::duration early_timeout{};
    bool retry_from_box() const { return early_timeout > Clock::duration::zero(); }
    // The client's address: the SYN's source at a branch, the option's further on.
    address client_address() const { return upstream && upstream->client ? *upstream->client : key.client; }
    // A SYN went out without the offer after those that carried it went unanswered.
    bool retried_without_option() const { return offer && syns_seen > syns_with_option; }
    Clock::time_point started;
    Clock::time_point first_started;  // of this SYN's first probe (a retry's predecessor), for TwiceInARow
    std::unique_ptr<asio::steady_timer> timer;
  };

  Clock::duration AsymmetryTimeout(const address& server) const;
  Clock::duration ProbeTimeout(const Held& h) const;
  void RecordServerRtt(const address& server, tcp::socket& probe);

  // ---- Packets ----

  void OnPacket(const QueuedPacket& p);
  void OnSyn(uint32_t id, const TcpSegment& s);
  void OnProbeFromUpstream(uint32_t id, const FlowKey& key, const TcpSegment& s);
  void StartProbe(std::unique_ptr<Held> held);
  void OnProbeSyn(const QueuedPacket& p, const TcpSegment& s);
  void OnProbeSynAck(uint32_t id, const TcpSegment& s);
  void OnOurSynAck(const QueuedPacket& p, const TcpSegment& s);

  // ---- Probe outcomes ----

  void OnProbeConnected(FlowKey key, error_code ec);
  std::string NoAnswerReason(const Held& h, const FlowKey& key);

  // ---- Verdicts ----

  Decision& Decide(const FlowKey& key, Verdict verdict, std::chrono::seconds keep);
  void Release(Held& h, Verdict verdict);
  void Bypass(uint32_t id, const FlowKey& key, const std::string& reason, bool record);

  // ---- The listener: the client's (or upstream box's) handshake completed ----

  void Accept(tcp::acceptor& acceptor);
  void OnAccepted(tcp::socket socket);
  static BranchPlan PlanFor(const InpathRule& rule, const tcp::endpoint& destination);

  void StartOptimized(tcp::socket client, tcp::socket inner, const InpathRule& rule, BranchPlan plan,
                      const channel::DeviceId& peer, bool plaintext, FlowKey key);

  void StartAnswered(asio::io_context& loop, tcp::socket inner, tcp::socket server, const channel::DeviceId& peer,
                     bool plaintext, const std::string& reason, const tcp::endpoint& client);

  void StartAnsweredChannel(tcp::socket inner, tcp::socket server, const channel::DeviceId& peer, bool plaintext,
                            const std::string& reason);

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

  const InpathRule& Match(const address& client, const address& server, uint16_t port) const {
    for (const InpathRule& rule : config_.rules) {
      if (rule.Matches(client, server, port)) return rule;
    }
    return config_.default_rule;
  }

  std::chrono::seconds config_timeout() const {
    return std::chrono::duration_cast<std::chrono::seconds>(env_.config.timeouts.connect) + std::chrono::seconds(1);
  }

  void Sweep();

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
  tcp::acceptor acceptor_;   // the transparent listener, IPv4
  tcp::acceptor acceptor6_;  // ... and IPv6 (closed on a host without it)
  asio::steady_timer sweep_timer_;
  std::unique_ptr<NetlinkQueue> queue_;
  bool stopped_ = false;
  uint32_t current_sequence_ = 0;  // of the SYN being decided

  std::map<FlowKey, Decision> decisions_;
  std::map<FlowKey, std::unique_ptr<Held>> held_;
  std::map<ProbeKey, Held*> probes_;
  // What the box learned about servers, each with its expiry.
  std::map<address, Learned> learned_;                  // a peer answered for this server
  // Answered only the SYN without option 0x21 (or a SYN carrying it was lost).
  TwiceInARow option_droppers_{config_.option_drop_memory};
  std::map<address, Unauthenticated> unauthenticated_;  // a box on the path failed authentication
  // Answered this box's address but not the client's: replies to clients bypass
  // this box (or a SYN from the client's address was lost).
  TwiceInARow asymmetric_{config_.peer_memory};
  std::map<address, Clock::duration> server_rtt_;       // measured by connected probes
  AcceptBackoff accept_backoff_;                          // the transparent listener's
  Clock::duration last_server_rtt_{};
  std::mutex confirmed_mu_;
  std::map<channel::DeviceId, Clock::time_point> confirmed_;  // peers that confirmed our TLS
};

}  // namespace wanopt::intercept
