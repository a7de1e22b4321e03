#include "wanopt/session/session.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "datastore/chunk_store.h"
#include "protocols/chain.h"
#include "protocols/registry.h"
#include "wanopt/dre/codec.h"
#include "wanopt/dre/peer_table.h"
#include "wanopt/channel/frame.h"
#include "wanopt/channel/hello.h"
#include "wanopt/channel/repair.h"
#include "wanopt/channel/secure_channel.h"
#include "wanopt/session/buffer_pool.h"
#include "wanopt/session/negotiation.h"
#include "wanopt/session/secure_start.h"
#include "wanopt/session/wan_writer.h"
#include "util/close_with_reset.h"
#include "util/endpoint.h"
#include "util/log.h"

namespace wanopt {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using channel::FrameHeader;
using channel::FrameType;
using channel::ResetReason;
using protocols::Direction;
using Clock = std::chrono::steady_clock;

enum class Role { kBranch, kDatacenter };

std::string Format(const tcp::endpoint& endpoint) { return FormatEndpoint(endpoint); }

channel::HelloStatus StatusFor(const error_code& ec) {
  if (ec == asio::error::connection_refused) return channel::HelloStatus::kRefused;
  if (ec == asio::error::timed_out || ec == asio::error::operation_aborted) {
    return channel::HelloStatus::kTimeout;
  }
  return channel::HelloStatus::kUnreachable;
}

// This box's own address towards `peer` (the source it would use to reach it), for
// the hello-ack: what the branch should call this box. Unspecified if unroutable.
boost::asio::ip::address OwnAddressTowards(const boost::asio::ip::address& peer) {
  // A UDP socket's connect sends no packet: it only asks the routing table.
  tcp::endpoint target(peer, 9);
  int fd = ::socket(peer.is_v4() ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  tcp::endpoint local;
  socklen_t len = static_cast<socklen_t>(local.capacity());
  bool ok = ::connect(fd, target.data(), static_cast<socklen_t>(target.size())) == 0 &&
            ::getsockname(fd, local.data(), &len) == 0;
  ::close(fd);
  if (!ok) return {};
  local.resize(len);
  return local.address();
}

// A relayed client or server connection lingers 0 s until the session ends cleanly
// (ClearAbortiveClose): if the box stops or dies mid-connection, the kernel closes
// the socket with a reset, so the far end never takes a cut stream for a complete
// one. The option is set on the descriptor directly: Asio clears a linger it set itself
// when it destroys the socket (so that a destructor never blocks), which would turn
// a daemon's stop into a clean FIN again.
void SetAbortiveClose(tcp::socket& socket, bool on) {
  if (!socket.is_open()) return;
  ::linger option{on ? 1 : 0, 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_LINGER, &option, sizeof option);
}

void TuneLanSocket(tcp::socket& socket) {
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  SetAbortiveClose(socket, true);
}

// Connects from `source`, not one of this box's addresses (IP_TRANSPARENT): the
// server sees the client. Only where a probe from that address was answered, which
// proves the replies come back through the box. Failing that, the box's own address.
void BindTransparent(tcp::socket& socket, const boost::asio::ip::address& source) {
  int one = 1;
  error_code ec;
  if (::setsockopt(socket.native_handle(), SOL_IP, IP_TRANSPARENT, &one, sizeof one) == 0) {
    socket.bind(tcp::endpoint(source, 0), ec);
  }
}

// The session ended cleanly: close with the usual FIN and let the kernel finish
// sending what is queued.
void ClearAbortiveClose(tcp::socket& socket) { SetAbortiveClose(socket, false); }

class Session final : public std::enable_shared_from_this<Session>,
                      public protocols::ModuleChain::Host,
                      public WanWriter::Events {
 public:
  Session(SessionEnvironment& env, Role role, tcp::socket lan_or_inner)
      : env_(env),
        role_(role),
        id_(++env.next_session_id),
        lan_(lan_or_inner.get_executor()),
        wan_(lan_or_inner.get_executor()),
        connect_timer_(lan_or_inner.get_executor()),
        tick_timer_(lan_or_inner.get_executor()) {
    // The accepted socket is the LAN side on a branch and the WAN side on a datacenter.
    (role == Role::kBranch ? lan_ : wan_) = std::move(lan_or_inner);
    info_.id = id_;
    info_.side = role == Role::kBranch ? protocols::Side::kBranch : protocols::Side::kDatacenter;
    ++env_.counters.sessions_opened;
    ++env_.counters.sessions_active;
    record_ = env_.table.Add(env_.config.name, role == Role::kBranch ? "branch" : "datacenter", env_.config.policy);
  }

  ~Session() override {
    ReleaseRelayBuffer(std::move(up_buffer_));
    ReleaseRelayBuffer(std::move(down_buffer_));
    --env_.counters.sessions_active;
  }

  // ---- Branch: connect to the peer (or the server), then relay. ----

  void StartBranch(BranchPlan plan) {
    wan_writer_.Start(weak_from_this());
    plan_ = std::move(plan);
    error_code ec;
    info_.client = lan_.remote_endpoint(ec);
    info_.server = plan_.destination;
    record_->SetEndpoints(info_.client, info_.server);
    TuneLanSocket(lan_);
    modules_ = std::make_unique<protocols::ModuleChain>(*this, plan_.modules);
    // Until the peer's HelloAck says otherwise, assume its twins run every module.
    modules_->SetPeerSlots((1u << plan_.modules.size()) - 1);
    for (const auto& note : plan_.notes) record_->AddNote(note);
    if (plan_.connected) {
      // Interception: discovery already opened the WAN side.
      wan_ = std::move(*plan_.connected);
      plan_.connected.reset();
      if (plan_.connected_is_inner) {
        OnPeerConnected({});
      } else {
        PassThroughOverConnected(plan_.pass_through_reason.empty() ? "no peer on the path" : plan_.pass_through_reason);
      }
      return;
    }
    if (plan_.peer) {
      Connect(wan_, *plan_.peer, env_.config.timeouts.peer_connect,
              [self = shared_from_this()](error_code ec) { self->OnPeerReached(ec); });
    } else {
      ConnectDirect(plan_.pass_through_reason.empty() ? "no peer for this connection" : plan_.pass_through_reason);
    }
  }

  // A configured peer answered the TCP connect: secure the channel (with [peering]),
  // then the handshake.
  void OnPeerReached(error_code ec) {
    if (closed_) return;
    if (ec || !env_.security) {
      if (!ec) record_->AddNote("inner channel unencrypted (no [peering] configured)");
      return OnPeerConnected(ec);
    }
    SecureInnerChannel(env_, std::move(wan_), ChannelSide::kOpening, "peer " + Format(*plan_.peer), {},
                       [self = shared_from_this()](SecureOutcome outcome, tcp::socket plain) {
                         if (self->closed_) return;
                         if (!outcome.ok) {
                           // Like an unreachable peer: this box never sends a client's
                           // bytes to a box it could not authenticate.
                           self->wan_ = tcp::socket(self->lan_.get_executor());
                           return self->OnPeerConnected(asio::error::access_denied, outcome.text);
                         }
                         self->record_->AddNote(outcome.text);
                         self->wan_ = std::move(plain);
                         self->OnPeerConnected({});
                       });
  }

  void OnPeerConnected(error_code ec, const std::string& failure = "") {
    if (closed_) return;
    if (ec) {
      std::string what = failure.empty() ? "unreachable (" + ec.message() + ")" : failure;
      if (plan_.peer_down == PeerDownAction::kReset) {
        WANOPT_LOG(kWarn, "branch") << "connection " << id_ << " " << Format(info_.client) << " -> "
                                    << Format(info_.server) << ": peer " << Format(*plan_.peer) << " " << what
                                    << ": resetting the client (peer_down = reset)";
        Abort("peer " + Format(*plan_.peer) + " " + what + ": client reset (peer_down = reset)");
        return;
      }
      ConnectDirect("peer " + Format(*plan_.peer) + " " + what);
      return;
    }
    TuneInnerSocket(wan_, env_.config);
    wan_remote_ = *plan_.peer;
    record_->SetPeer(plan_.peer_id, Format(wan_remote_));
    SetFramed(true);
    awaiting_handshake_ = true;
    channel::Hello hello;
    hello.device_id = env_.config.device_id;
    // Offer only what this box can do: DRE needs a chunk store.
    hello.offered = Intersect(plan_.policy, env_.capability());
    if (std::string trouble = env_.store_trouble(); HasDre(plan_.policy) && !trouble.empty()) record_->AddNote(trouble);
    if (HasDre(hello.offered)) {
      peer_state_ = env_.peers->Get(plan_.peering_key.empty() ? "peer " + Format(*plan_.peer) : plan_.peering_key,
                                    std::nullopt);
      hello.dre_seed = peer_state_->seed();
      hello.store_instance = env_.store_instance;
    }
    hello.destination = plan_.destination;
    hello.source = info_.client;
    // An intercepted channel may come from the client's address (a transparent
    // probe): tell the datacenter where this box is.
    if (plan_.connected_is_inner) {
      if (auto own = OwnAddressTowards(plan_.peer->address()); !own.is_unspecified()) hello.opener = own;
    }
    hello.modules = plan_.modules;
    wan_writer_.QueueControl(FrameType::kHello, 0, channel::EncodeHello(hello));
    // Client bytes follow the hello at once: discovery of the server's answer costs
    // no round trip. The datacenter reads them only after it reached the server.
    // They are encoded as the peering's last connection applied, if there was one.
    // A new peering's first bytes go as literals (any peer decodes them, one that
    // stores chunks learns them): references wait for the peer's answer.
    if (peer_state_) {
      if (auto last = peer_state_->last_applied()) {
        StartEncoder(Intersect(*last, hello.offered));
      } else {
        StartEncoder(hello.offered);
        if (encoder_) encoder_->set_references(false);
      }
      encoded_before_ack_ = encoder_ != nullptr;
    }
    StartRelay();
  }

  // Marks this connection pass-through, for `reason`.
  void BecomePassThrough(const std::string& reason) {
    WANOPT_LOG(kInfo, "branch") << "connection " << id_ << " " << Format(info_.client) << " -> "
                                << Format(info_.server) << ": pass-through: " << reason;
    ++env_.counters.pass_through;
    record_->SetState(ConnectionState::kPassThrough);
    record_->SetPeer("", "");
    record_->AddNote("pass-through: " + reason);
    SetFramed(false);
    modules_->SetPeerSlots(0);
  }

  // Interception found no peer: the probe connection is the server connection.
  void PassThroughOverConnected(const std::string& reason) {
    BecomePassThrough(reason);
    TuneLanSocket(wan_);
    wan_remote_ = plan_.destination;
    StartRelay();
  }

  void ConnectDirect(const std::string& reason) {
    BecomePassThrough(reason);
    error_code ignored;
    wan_.close(ignored);
    wan_.open(plan_.destination.protocol(), ignored);
    SetAbortiveClose(wan_, true);  // as TuneLanSocket will: the server must never see a clean cut
    if (plan_.source) BindTransparent(wan_, *plan_.source);
    Connect(wan_, plan_.destination, env_.config.timeouts.connect,
            [self = shared_from_this()](error_code ec) {
              if (self->closed_) return;
              if (ec) {
                // What the client would have seen without us, as closely as an
                // already-accepted connection allows: a reset.
                WANOPT_LOG(kInfo, "branch") << "connection " << self->id_ << ": server "
                                            << Format(self->info_.server) << ": " << ec.message();
                self->Abort("server " + Format(self->info_.server) + ": " + ec.message());
                return;
              }
              TuneLanSocket(self->wan_);
              self->wan_remote_ = self->plan_.destination;
              self->StartRelay();
            });
  }

  // ---- Datacenter: read the hello, connect to the server, answer, relay. ----

  void StartDatacenter(DatacenterPlan plan) {
    wan_writer_.Start(weak_from_this());
    error_code ec;
    peer_endpoint_ = wan_remote_ = plan.peer_endpoint ? *plan.peer_endpoint : wan_.remote_endpoint(ec);
    for (const auto& note : plan.notes) record_->AddNote(note);
    if (plan.server) {
      lan_ = std::move(*plan.server);
      server_connected_ = true;
    }
    TuneInnerSocket(wan_, env_.config);
    wan_.non_blocking(true, ec);
    SetFramed(true);
    awaiting_handshake_ = true;
    StartTicks();
    // The hello must arrive within the handshake deadline, however it trickles in:
    // a peer that holds a half-sent hello holds a descriptor and a buffer.
    uint32_t generation = ++connect_generation_;
    connect_timer_.expires_after(env_.config.timeouts.handshake);
    connect_timer_.async_wait([self = shared_from_this(), generation](error_code ec) {
      if (ec || self->closed_ || generation != self->connect_generation_) return;
      WANOPT_LOG(kInfo, "datacenter") << "connection " << self->id_ << " from " << Format(self->wan_endpoint())
                                      << ": no hello within " << self->env_.config.timeouts.handshake.count()
                                      << " ms: closed";
      self->record_->AddNote("no hello within the handshake deadline");
      self->Abort("");
    });
    DownWaitReadable();
  }

  void OnHello(const channel::Hello& hello) {
    ++connect_generation_;  // the hello arrived: the handshake deadline is met
    connect_timer_.cancel();
    // An intercepted channel comes from wherever the branch's probe did, the
    // client's address included: name the branch where it says it is.
    if (hello.opener && server_connected_) peer_endpoint_ = tcp::endpoint(*hello.opener, 0);
    // The client's own address when the branch knows it, else the branch's.
    info_.client = hello.source.port() ? hello.source : peer_endpoint_;
    info_.server = hello.destination;
    peer_id_ = hello.device_id;
    record_->SetEndpoints(info_.client, info_.server);
    record_->SetPeer(channel::FormatDeviceId(peer_id_), Format(peer_endpoint_));
    env_.table.PeerSeen(channel::FormatDeviceId(peer_id_), Format(peer_endpoint_), true);
    peer_counted_ = true;
    HelloAnswer answer = AnswerHello(hello, AcceptorFactsNow());
    // Module names came off the network: the status page escapes them.
    for (const auto& note : answer.notes) record_->AddNote(note);
    modules_ = std::make_unique<protocols::ModuleChain>(*this, answer.runnable);
    modules_->SetPeerSlots(answer.ack.accepted_modules);
    ack_ = answer.ack;
    // Only an intercepted channel was opened to the server's address: otherwise the
    // branch already knows where this box is (and ignores the field).
    if (auto own = server_connected_ ? OwnAddressTowards(peer_endpoint_.address()) : boost::asio::ip::address();
        !own.is_unspecified()) {
      ack_.acceptor = tcp::endpoint(own, env_.config.datacenter ? env_.config.datacenter->listen.port() : 0);
    }
    if (env_.store && hello.dre_seed) {
      // The peering is named by the branch's device id; its seed comes from the branch.
      peer_state_ = env_.peers->Get(channel::FormatDeviceId(peer_id_), hello.dre_seed);
      if (peer_state_->SetPeerInstance(hello.store_instance)) {
        record_->AddNote("peer's datastore is new: chunks it had are sent again");
      }
    }
    // The branch may encode before it has our answer (with what the peering applied
    // last time): decode whatever this box can, whatever this connection negotiates.
    if (hello.offered != Policy::kTcpOnly) StartDecoder();
    StartEncoder(ack_.applied);
    record_->SetPolicies(hello.offered, ack_.negotiated, ack_.applied);
    if (ack_.status == channel::HelloStatus::kRejected) {
      WANOPT_LOG(kWarn, "datacenter") << "connection " << id_ << " from peer " << channel::FormatDeviceId(peer_id_)
                                      << " " << Format(peer_endpoint_) << ": " << answer.rejection;
      return AnswerAndDrain(channel::HelloStatus::kRejected, answer.rejection, /*resume=*/false);
    }
    ConnectWanToServer(hello.destination);
  }

  // What this box brings to a hello now: its store's state may change between two.
  AcceptorFacts AcceptorFactsNow() const {
    AcceptorFacts facts;
    facts.device_id = env_.config.device_id;
    facts.configured = env_.config.policy;
    facts.capability = env_.capability();
    facts.has_store = env_.store != nullptr;
    facts.store_trouble = env_.store_trouble();
    facts.store_instance = env_.store_instance;
    // The modules this box runs for its peers: [datacenter] modules, or every one.
    if (env_.config.datacenter) {
      facts.modules = env_.config.datacenter->modules;
      facts.serves = [datacenter = &*env_.config.datacenter](const boost::asio::ip::address& destination) {
        return datacenter->Serves(destination);
      };
    } else {
      for (const auto& info : protocols::Registry::Global().modules()) facts.modules.push_back(info.name);
    }
    return facts;
  }

  void ConnectWanToServer(const tcp::endpoint& server) {
    if (server_connected_) {
      // Interception connected to the server before answering the branch's SYN.
      error_code ec;
      tcp::endpoint connected = lan_.remote_endpoint(ec);
      if (ec || connected != server) {
        ProtocolError("hello names " + Format(server) + ", but this inner channel was opened for " +
                      Format(connected));
        return;
      }
      // As if the connect had just completed: after the caller has consumed the hello.
      asio::post(lan_.get_executor(), [self = shared_from_this()] { self->OnServerConnected({}); });
      return;
    }
    // The datacenter's WAN side is the inner channel, its LAN side the server: the
    // server connection goes into lan_.
    // Abortive from the start: a box that stops before the connect completes must
    // not leave the server a clean, empty connection.
    error_code opened;
    lan_.open(server.protocol(), opened);
    SetAbortiveClose(lan_, true);
    Connect(lan_, server, env_.config.timeouts.connect,
            [self = shared_from_this()](error_code ec) { self->OnServerConnected(ec); });
  }

  void OnServerConnected(error_code ec) {
    if (closed_) return;
    if (ec) {
      WANOPT_LOG(kInfo, "datacenter") << "connection " << id_ << " from peer "
                                      << channel::FormatDeviceId(peer_id_) << " " << Format(peer_endpoint_)
                                      << ": server " << Format(info_.server) << ": " << ec.message();
      return AnswerAndDrain(StatusFor(ec), "server " + Format(info_.server) + ": " + ec.message(), /*resume=*/true);
    }
    TuneLanSocket(lan_);
    wan_writer_.QueueControl(FrameType::kHelloAck, 0, channel::EncodeHelloAck(ack_));
    record_->SetState(ConnectionState::kOptimized);
    StartRelay();
    DownResume();
  }

  // The hello-ack says why this box does not serve the connection; then the box
  // waits for the branch to hang up (reading and discarding), so that its close
  // cannot overtake the answer; dead-peer time bounds the wait. `resume`: the down
  // direction was waiting for this answer (else the caller is reading frames).
  void AnswerAndDrain(channel::HelloStatus status, const std::string& note, bool resume) {
    ack_.status = status;
    record_->AddNote(note);  // before the answer: the branch may act on it at once
    wan_writer_.QueueControl(FrameType::kHelloAck, 0, channel::EncodeHelloAck(ack_));
    reset_ = true;
    draining_ = true;
    if (resume) DownResume();
  }

  // ---- Both roles. ----

  void StartRelay() {
    // Reads are tried directly and must return would_block instead of waiting.
    error_code ignored;
    lan_.non_blocking(true, ignored);
    wan_.non_blocking(true, ignored);
    modules_->Start();
    UpWaitReadable();
    if (role_ == Role::kBranch) DownWaitReadable();
    if (framed_ && role_ == Role::kBranch) StartTicks();
  }

 private:
  void SetFramed(bool framed) {
    framed_ = framed;
    wan_writer_.set_framed(framed);
  }

  static bool HasDre(Policy p) { return static_cast<uint8_t>(p) & static_cast<uint8_t>(Policy::kDre); }
  static bool HasLz(Policy p) { return static_cast<uint8_t>(p) & static_cast<uint8_t>(Policy::kLz); }

  // The encoder follows the policy; the decoder accepts anything this box can
  // decode (it only checks), so that either side may start encoding first.
  void StartEncoder(Policy policy) {
    if (policy == Policy::kTcpOnly || encoder_) return;
    dre::CodecOptions options;
    options.dre = HasDre(policy) && env_.store != nullptr && peer_state_ != nullptr;
    options.lz = HasLz(policy);
    options.lz_level = env_.config.dre.lz_level;
    options.chunker = env_.config.dre.chunker;
    encoder_ = std::make_unique<dre::Encoder>(options, peer_state_, env_.store);
    encoder_policy_ = policy;
  }

  void StartDecoder() {
    if (decoder_) return;
    dre::CodecOptions options;
    options.dre = env_.store != nullptr && peer_state_ != nullptr;
    options.lz = true;
    decoder_ = std::make_unique<dre::Decoder>(options, peer_state_, env_.store);
  }

  // ---- Counting, for the daemon's totals and this connection's record ----
  void CountLanIn(size_t n) {
    env_.counters.lan_in.fetch_add(n, std::memory_order_relaxed);
    record_->lan_in.fetch_add(n, std::memory_order_relaxed);
  }
  void CountLanOut(size_t n) {
    env_.counters.lan_out.fetch_add(n, std::memory_order_relaxed);
    record_->lan_out.fetch_add(n, std::memory_order_relaxed);
  }
  void CountWanIn(size_t n) {
    env_.counters.wan_in.fetch_add(n, std::memory_order_relaxed);
    record_->wan_in.fetch_add(n, std::memory_order_relaxed);
  }
  void CountWanOut(size_t n) {
    env_.counters.wan_out.fetch_add(n, std::memory_order_relaxed);
    record_->wan_out.fetch_add(n, std::memory_order_relaxed);
  }

  // ---- ModuleChain::Host ----
  const protocols::ConnectionInfo& connection() const override { return info_; }
  bool SendModuleMessage(uint16_t slot, std::span<const uint8_t> message) override {
    if (!framed_ || up_ended_ || closed_) return false;
    wan_writer_.QueueControl(FrameType::kModule, slot, {message.begin(), message.end()});
    return true;
  }
  void SetApplication(std::string_view name) override { record_->SetApplication(name); }
  void AddNote(std::string_view note) override { record_->AddNote(note); }
  protocols::BoxModule* BoxModuleFor(std::string_view name) override {
    return env_.box_modules ? env_.box_modules->Find(name) : nullptr;
  }

  Direction UpDirection() const {
    return role_ == Role::kBranch ? Direction::kClientToServer : Direction::kServerToClient;
  }
  Direction DownDirection() const {
    return role_ == Role::kBranch ? Direction::kServerToClient : Direction::kClientToServer;
  }

  // Connects `socket` (lan_ or wan_) within `timeout`; a connect cut by the timeout
  // completes with timed_out.
  template <class Handler>
  void Connect(tcp::socket& socket, const tcp::endpoint& target, std::chrono::milliseconds timeout, Handler handler) {
    // The generation keeps a timer that fires as (or after) the connect completes from
    // cancelling what follows it: the socket may by then be waiting to read, or have
    // been handed to the TLS layer.
    uint32_t generation = ++connect_generation_;
    connect_timer_.expires_after(timeout);
    connect_timer_.async_wait([self = shared_from_this(), &socket, generation](error_code ec) {
      error_code ignored;
      if (!ec && generation == self->connect_generation_) socket.cancel(ignored);
    });
    socket.async_connect(target, [self = shared_from_this(), handler = std::move(handler)](error_code ec) {
      ++self->connect_generation_;
      self->connect_timer_.cancel();
      if (ec == asio::error::operation_aborted && !self->closed_) ec = asio::error::timed_out;
      handler(ec);
    });
  }

  // ---- Up: LAN -> modules -> WAN ----

  void UpWaitReadable() {
    lan_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
      if (self->closed_) return;
      // Only Close() cancels this wait on purpose: anything else is a failure, never
      // a direction that silently stops.
      if (ec) return self->FailLan(ec);
      self->UpRead();
    });
  }

  // Reads what the LAN socket has and sends it on; resumes when the send completes
  // (OnWanWritten), so at most one buffer of this direction is ever in flight.
  void UpRead() {
    if (closed_) return;
    if (encoder_ && encoder_->HasPayload()) {
      SendEncoded();
      return;
    }
    if (!up_buffer_) up_buffer_ = AcquireRelayBuffer();
    Buffer& buffer = *up_buffer_;
    for (;;) {
      buffer.Clear();
      auto tail = buffer.WritableTail().first(channel::kMaxFramePayload);
      error_code ec;
      size_t n = lan_.read_some(asio::buffer(tail.data(), tail.size()), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        if (encoder_) {
          // The LAN side paused: what it sent must reach the server now, even mid-chunk.
          encoder_->Flush();
          if (encoder_->HasPayload()) {
            SendEncoded();
            return;
          }
        }
        // Idle: give the buffer back; an idle connection holds none.
        ReleaseRelayBuffer(std::move(up_buffer_));
        UpWaitReadable();
        return;
      }
      if (ec == asio::error::eof) {
        UpEnd();
        return;
      }
      if (ec) {
        FailLan(ec);
        return;
      }
      buffer.Commit(n);
      CountLanIn(n);
      if (!modules_->empty()) modules_->Process(UpDirection(), buffer, false);
      if (buffer.empty()) continue;  // a module is holding the bytes until it has more
      if (encoder_) {
        // Keep reading until a block of instructions fills or the LAN side pauses:
        // redundant data encodes to a few bytes per chunk.
        encoder_->Append(buffer.span());
        if (encoder_->HasPayload()) {
          SendEncoded();
          return;
        }
        continue;
      }
      wan_writer_.QueueData(buffer.span(), WanWriter::After::kResumeUp);
      return;
    }
  }

  // Sends one encoded frame; the up direction resumes when it is written.
  void SendEncoded() {
    QueueEncoded(WanWriter::After::kResumeUp);
    UpdateCodecStats();
  }

  void QueueEncoded(WanWriter::After after) {
    auto payload = std::make_unique<Buffer>();
    uint8_t flags = 0;
    encoder_->TakePayload(*payload, &flags);
    wan_writer_.QueueEncoded(std::move(payload), flags, after);
  }

  // The LAN side sent FIN: let the modules flush, then half-close towards the peer.
  void UpEnd() {
    ReleaseRelayBuffer(std::move(up_buffer_));
    Buffer tail;
    modules_->Process(UpDirection(), tail, true);
    up_ended_ = true;  // modules could still message their twins just above
    if (encoder_) {
      if (!tail.empty()) encoder_->Append(tail.span());
      encoder_->Flush();
      while (encoder_->HasPayload()) QueueEncoded(WanWriter::After::kNothing);
      UpdateCodecStats();
    } else if (!tail.empty()) {
      owned_tail_.push_back(std::vector<uint8_t>(tail.data(), tail.data() + tail.size()));
      wan_writer_.QueueData(owned_tail_.back(), WanWriter::After::kNothing);
    }
    wan_writer_.QueueHalfClose();
  }

  // ---- WanWriter::Events ----

  void OnWanWritten(size_t n, WanWriter::After after) override {
    if (closed_) return;
    // The WAN socket carries WAN bytes whether it is an inner channel or, passing
    // through, the server connection itself: unreduced bytes still cross the WAN.
    CountWanOut(n);
    last_wan_tx_ = Clock::now();
    switch (after) {
      case WanWriter::After::kNothing: break;
      case WanWriter::After::kResumeUp: UpRead(); break;
      case WanWriter::After::kHalfCloseSent:
        up_finished_ = true;
        owned_tail_.clear();
        MaybeFinish();
        break;
    }
  }

  void OnWanWriteFailed(const error_code& ec) override {
    if (!closed_) FailWan("write", ec);
  }

  // ---- Down: WAN -> check frames -> modules -> LAN ----

  void DownWaitReadable() {
    down_waiting_ = true;
    wan_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
      self->down_waiting_ = false;
      if (self->closed_) return;
      if (ec) return self->FailWan("wait", ec);
      self->DownRead();
    });
  }

  void DownRead() {
    for (;;) {
      if (closed_) return;
      if (!down_buffer_) down_buffer_ = AcquireRelayBuffer();
      auto tail = down_buffer_->WritableTail();
      error_code ec;
      size_t n = wan_.read_some(asio::buffer(tail.data(), tail.size()), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        if (down_buffer_->empty()) ReleaseRelayBuffer(std::move(down_buffer_));
        DownWaitReadable();
        return;
      }
      if (ec == asio::error::eof) {
        DownEnd();
        return;
      }
      if (ec) {
        FailWan("read", ec);
        return;
      }
      down_buffer_->Commit(n);
      CountWanIn(n);
      last_wan_rx_ = Clock::now();
      if (!(framed_ ? ProcessFrames() : ProcessRaw())) return;
    }
  }

  // Continues a down direction that waited for something else (the server connect).
  void DownResume() {
    if (closed_) return;
    if (!down_buffer_ || ProcessFrames()) DownRead();
  }

  // Pass-through: bytes go to the LAN as they came. Returns true to keep reading.
  bool ProcessRaw() {
    if (!modules_->empty()) modules_->Process(DownDirection(), *down_buffer_, false);
    if (down_buffer_->empty()) return true;
    lan_write_.clear();
    lan_write_.push_back(asio::buffer(down_buffer_->data(), down_buffer_->size()));
    down_consumed_ = down_buffer_->size();
    WriteLan();
    return false;
  }

  // Decodes every whole frame in down_buffer_. Returns true when the caller should
  // read more, false when an asynchronous step (LAN write, server connect) or the
  // end of the session took over.
  bool ProcessFrames() {
    lan_write_.clear();
    module_output_.Clear();
    half_close_pending_ = false;
    size_t consumed = 0;
    for (;;) {
      std::span<const uint8_t> input = down_buffer_->span().subspan(consumed);
      channel::DecodedFrame frame;
      channel::DecodeStatus status = channel::DecodeFrame(input, &frame);
      if (status == channel::DecodeStatus::kNeedMore) break;
      if (status != channel::DecodeStatus::kFrame) {
        ProtocolError(std::string(channel::DecodeStatusName(status)));
        return false;
      }
      consumed += frame.size;
      if (draining_) continue;
      if (awaiting_handshake_) {
        if (!HandleHandshake(frame)) return false;
        if (role_ == Role::kDatacenter && !draining_) {
          // Everything after the hello waits until the server answered.
          down_buffer_->Consume(consumed);
          return false;
        }
        continue;
      }
      if (!HandleFrame(frame, input.first(frame.size))) return false;
    }
    if (!module_output_.empty()) lan_write_.push_back(asio::buffer(module_output_.data(), module_output_.size()));
    down_consumed_ = consumed;
    lan_shutdown_after_write_ = half_close_pending_;
    if (!lan_write_.empty()) {
      WriteLan();
      return false;
    }
    return FinishBatch();
  }

  // Frames that must keep their place in the stream: while the decoder waits for a
  // repair, they wait behind it.
  static bool InStreamOrder(FrameType type) {
    return type == FrameType::kData || type == FrameType::kDre || type == FrameType::kHalfClose ||
           type == FrameType::kModule;
  }

  // Handles one frame after the handshake. Returns false when the session ended or
  // an asynchronous step took over.
  bool HandleFrame(const channel::DecodedFrame& frame, std::span<const uint8_t> raw_frame) {
    if (stalled_ && InStreamOrder(frame.header.type)) {
      stalled_frames_.Append(raw_frame);
      if (stalled_frames_.size() > kMaxStalledBytes) {
        WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": more than " << (kMaxStalledBytes >> 20)
                                      << " MiB arrived while waiting for a repair: resetting";
        Fail(ResetReason::kIntegrity);
        return false;
      }
      return true;
    }
    switch (frame.header.type) {
      case FrameType::kData:
        if (peer_finished_) {
          ProtocolError("data after half-close");
          return false;
        }
        EmitDown(frame.payload);
        return true;
      case FrameType::kDre: {
        if (!decoder_) {
          ProtocolError("dre frame, but no DRE or LZ was negotiated");
          return false;
        }
        if (peer_finished_) {
          ProtocolError("data after half-close");
          return false;
        }
        decoded_.Clear();
        auto status = decoder_->Decode(frame.header.flags, frame.payload, decoded_);
        return AfterDecode(status);
      }
      case FrameType::kHalfClose:
        if (peer_finished_) {
          ProtocolError("second half-close");
          return false;
        }
        peer_finished_ = true;
        half_close_pending_ = true;
        if (!modules_->empty()) {
          Buffer tail;
          modules_->Process(DownDirection(), tail, true);
          module_output_.Append(tail.span());
        }
        return true;
      case FrameType::kReset: {
        auto reason = frame.payload.empty() ? ResetReason::kLanReset : static_cast<ResetReason>(frame.payload[0]);
        WANOPT_LOG(kInfo, RoleName()) << "connection " << id_ << ": peer reset (" << channel::ResetReasonName(reason)
                                      << ")";
        Abort("peer reset (" + std::string(channel::ResetReasonName(reason)) + ")");
        return false;
      }
      case FrameType::kKeepalive:
        return true;
      case FrameType::kModule:
        modules_->DeliverPeerMessage(frame.header.stream, frame.payload);
        return !closed_;
      case FrameType::kNack:
        return HandleNack(frame.payload);
      case FrameType::kRepair:
        return HandleRepair(frame.payload);
      case FrameType::kHello:
      case FrameType::kHelloAck:
        ProtocolError("handshake frame after the handshake");
        return false;
    }
    return true;
  }

  bool AfterDecode(dre::Decoder::Status status) {
    UpdateCodecStats();
    switch (status) {
      case dre::Decoder::Status::kDone:
        EmitDown(decoded_.span());
        return true;
      case dre::Decoder::Status::kMissing: {
        // Ask the peer for the chunks; everything after waits in order behind them.
        std::vector<channel::WireFingerprint> missing;
        for (const auto& fingerprint : decoder_->missing()) missing.push_back(dre::FingerprintBytes(fingerprint));
        awaited_repairs_ = missing.size();
        stalled_ = true;
        record_->AddNote("NACK: references the datastore could not resolve were re-sent");
        wan_writer_.QueueUrgent(FrameType::kNack, channel::EncodeNack(missing));
        return true;
      }
      case dre::Decoder::Status::kCorrupt:
        WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": DRE from " << Format(wan_endpoint()) << ": "
                                      << decoder_->error() << ": resetting, nothing of it delivered";
        record_->AddNote("DRE: " + decoder_->error());
        Fail(ResetReason::kIntegrity);
        return false;
    }
    return false;
  }

  // The peer could not resolve references this box sent: send the chunks' bytes.
  bool HandleNack(std::span<const uint8_t> payload) {
    auto missing = channel::DecodeNack(payload);
    if (!encoder_ || !missing) {
      ProtocolError("unexpected or malformed nack");
      return false;
    }
    for (const channel::WireFingerprint& wire : *missing) {
      auto chunk = encoder_->Repair(dre::FingerprintFromBytes(wire));
      if (!chunk) {
        WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": peer lacks a chunk this box no longer has "
                                      << "either: resetting";
        record_->AddNote("NACK for a chunk no longer stored here: reset");
        Fail(ResetReason::kIntegrity);
        return false;
      }
      wan_writer_.QueueUrgent(FrameType::kRepair, channel::EncodeRepair(wire, *chunk));
    }
    UpdateCodecStats();
    return true;
  }

  // The bytes of a chunk we asked for: resume decoding, then what waited behind it.
  bool HandleRepair(std::span<const uint8_t> payload) {
    auto repair = channel::DecodeRepair(payload);
    if (!decoder_ || !stalled_ || !repair) {
      ProtocolError("unexpected or malformed repair");
      return false;
    }
    if (!decoder_->AddRepair(dre::FingerprintFromBytes(repair->fingerprint), repair->chunk)) {
      ProtocolError("repaired chunk does not match its fingerprint");
      return false;
    }
    if (--awaited_repairs_ > 0) return true;
    stalled_ = false;
    decoded_.Clear();
    if (!AfterDecode(decoder_->Resume(decoded_))) return false;
    if (stalled_) return true;  // another reference of the same frame is missing
    // Replay what waited, in order; it may stall again.
    Buffer replay;
    replay.Swap(stalled_frames_);
    size_t at = 0;
    while (at < replay.size()) {
      channel::DecodedFrame frame;
      channel::DecodeFrame(replay.span().subspan(at), &frame);  // checked when it first arrived
      std::span<const uint8_t> raw = replay.span().subspan(at, frame.size);
      at += frame.size;
      if (!HandleFrame(frame, raw)) return false;
    }
    return true;
  }

  // Bytes for the LAN socket, in order. Zero-copy (a view into down_buffer_) when no
  // module and no codec touches them; otherwise copied into module_output_.
  void EmitDown(std::span<const uint8_t> bytes) {
    if (modules_->empty() && !decoder_) {
      lan_write_.push_back(asio::buffer(bytes.data(), bytes.size()));
      return;
    }
    if (modules_->empty()) {
      module_output_.Append(bytes);
      return;
    }
    Buffer data;
    data.Append(bytes);
    modules_->Process(DownDirection(), data, false);
    module_output_.Append(data.span());
  }

  void UpdateCodecStats() {
    uint64_t hit = 0, missed = 0, nacks = 0;
    for (const dre::CodecStats* s : {encoder_ ? &encoder_->stats() : nullptr, decoder_ ? &decoder_->stats() : nullptr}) {
      if (!s) continue;
      hit += s->chunks_hit;
      missed += s->chunks_missed;
      nacks += s->nacks;
    }
    record_->chunks_hit = hit;
    record_->chunks_missed = missed;
    record_->nacks = nacks;
  }

  bool HandleHandshake(const channel::DecodedFrame& frame) {
    std::string error;
    awaiting_handshake_ = false;
    if (role_ == Role::kDatacenter) {
      if (frame.header.type != FrameType::kHello) {
        ProtocolError("first frame is not a hello");
        return false;
      }
      auto hello = channel::DecodeHello(frame.payload, &error);
      if (!hello && SpeaksOtherVersion(frame.payload)) {
        // A newer (or older) peer: say which version we speak instead of a bare reset.
        WANOPT_LOG(kWarn, "datacenter") << "connection " << id_ << ": peer " << Format(peer_endpoint_)
                                        << " speaks inner-channel version " << int{frame.payload[4]}
                                        << ", this box version " << int{channel::kProtocolVersion};
        ack_.status = channel::HelloStatus::kVersionUnsupported;
        ack_.device_id = env_.config.device_id;
        wan_writer_.QueueControl(FrameType::kHelloAck, 0, channel::EncodeHelloAck(ack_));
        draining_ = true;
        return true;
      }
      if (!hello) {
        ProtocolError("bad hello: " + error);
        return false;
      }
      OnHello(*hello);
      return true;
    }
    if (frame.header.type != FrameType::kHelloAck) {
      ProtocolError("first frame is not a hello-ack");
      return false;
    }
    auto ack = channel::DecodeHelloAck(frame.payload, &error);
    if (!ack) {
      ProtocolError("bad hello-ack: " + error);
      return false;
    }
    peer_id_ = ack->device_id;
    ack_ = *ack;
    AckVerdict verdict = CheckHelloAck(*ack, peer_state_ != nullptr);
    if (verdict.outcome == AckVerdict::Outcome::kServerFailed) {
      WANOPT_LOG(kInfo, "branch") << "connection " << id_ << " " << Format(info_.client) << " -> "
                                  << Format(info_.server) << ": server "
                                  << channel::HelloStatusName(ack->status) << " (seen by peer "
                                  << channel::FormatDeviceId(peer_id_) << ")";
      Abort("server " + Format(info_.server) + " " + std::string(channel::HelloStatusName(ack->status)) +
            " (seen by peer " + channel::FormatDeviceId(peer_id_) + ")");
      return false;
    }
    modules_->SetPeerSlots(ack->accepted_modules);
    // Intercepted, the inner channel was opened to the server's address: name the box
    // by its own address instead (the server stays in the connection's record).
    bool in_path = wan_remote_ == plan_.destination;
    if (in_path && ack->acceptor) peer_address_ = Format(*ack->acceptor);
    else peer_address_ = Format(wan_remote_);
    record_->SetPeer(channel::FormatDeviceId(peer_id_), peer_address_);
    record_->SetPolicies(ack->offered, ack->negotiated, ack->applied);
    record_->SetState(ConnectionState::kOptimized);
    for (const auto& note : verdict.notes) record_->AddNote(note);
    if (verdict.outcome == AckVerdict::Outcome::kProtocolError) {
      ProtocolError(verdict.error);
      return false;
    }
    if (peer_state_ && HasDre(ack->applied) && peer_state_->SetPeerInstance(ack->store_instance)) {
      record_->AddNote("peer's datastore is new: chunks it had are sent again");
    }
    // Bytes sent before this answer were encoded as the peering applied last time, or
    // for a new peering as literals with the offered policy; the encoder keeps its
    // policy for the connection, and references start now if DRE applies.
    if (peer_state_) peer_state_->set_last_applied(ack->applied);
    if (encoder_ && encoder_policy_ != ack->applied) {
      record_->AddNote(std::string("encoded as ") + PolicyLetter(encoder_policy_) + " before the answer, " +
                       PolicyLetter(ack->applied) + " applied now");
    }
    if (encoder_ && HasDre(ack->applied)) encoder_->set_references(true);
    StartEncoder(ack->applied);
    StartDecoder();
    env_.table.PeerSeen(channel::FormatDeviceId(peer_id_), peer_address_, true);
    peer_counted_ = true;
    WANOPT_LOG(kDebug, "branch") << "connection " << id_ << ": optimized by peer "
                                 << channel::FormatDeviceId(peer_id_) << ", policy applied "
                                 << PolicyLetter(ack->applied);
    return true;
  }

  static bool SpeaksOtherVersion(std::span<const uint8_t> hello) {
    return hello.size() > channel::kHelloMagic.size() &&
           std::equal(channel::kHelloMagic.begin(), channel::kHelloMagic.end(), hello.begin()) &&
           hello[channel::kHelloMagic.size()] != channel::kProtocolVersion;
  }

  void WriteLan() {
    asio::async_write(lan_, lan_write_, [self = shared_from_this()](error_code ec, size_t n) {
      if (self->closed_) return;
      if (ec) {
        self->FailLan(ec);
        return;
      }
      self->CountLanOut(n);
      if (!self->FinishBatch()) return;
      // More whole frames may already be buffered.
      if (!self->framed_ || self->ProcessFrames()) self->DownRead();
    });
  }

  // The bytes of the frames just processed are out (or there were none): drop them
  // and pass a half-close on. Returns true when the down direction goes on.
  bool FinishBatch() {
    if (down_buffer_) down_buffer_->Consume(down_consumed_);
    down_consumed_ = 0;
    lan_write_.clear();
    module_output_.Clear();
    if (lan_shutdown_after_write_) {
      lan_shutdown_after_write_ = false;
      error_code ignored;
      lan_.shutdown(tcp::socket::shutdown_send, ignored);
      down_finished_ = true;
      MaybeFinish();
      // Pass-through: the server's FIN ends this direction. Framed: keep reading the
      // inner channel for resets and module messages until the session ends.
      if (closed_ || !framed_) return false;
    }
    return true;
  }

  // The WAN side closed its TCP connection.
  void DownEnd() {
    if (!framed_) {
      // Pass-through: a FIN from the server is a FIN to the client, after whatever
      // the modules still held.
      lan_write_.clear();
      module_output_.Clear();
      modules_->Process(DownDirection(), module_output_, true);
      down_consumed_ = 0;
      lan_shutdown_after_write_ = true;
      if (module_output_.empty()) {
        FinishBatch();
        return;
      }
      lan_write_.push_back(asio::buffer(module_output_.data(), module_output_.size()));
      WriteLan();
      return;
    }
    // Both half-closes crossed: the peer closing is the normal end. Our half-close
    // may be written without its completion having run yet (the peer could only
    // close after reading it), so "queued" is enough here.
    if (draining_ || (up_ended_ && down_finished_)) {
      Close();
      return;
    }
    if (awaiting_handshake_ && role_ == Role::kDatacenter && (!down_buffer_ || down_buffer_->empty())) {
      // Connected and left without a byte: a port scan or a health check, not a failure.
      WANOPT_LOG(kDebug, "datacenter") << "connection " << id_ << " from " << Format(wan_endpoint())
                                       << " closed before its hello";
      Close();
      return;
    }
    // The peer went away without finishing both directions: the relayed connection
    // cannot be completed correctly, so it is reset rather than cut short silently.
    WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": inner channel closed by peer "
                                  << Format(wan_endpoint()) << " mid-connection: resetting";
    Abort("inner channel closed by peer mid-connection");
  }

  // ---- Keepalive and dead-peer detection (inner channels only) ----

  void StartTicks() {
    last_wan_rx_ = last_wan_tx_ = Clock::now();
    ScheduleTick();
  }

  void ScheduleTick() {
    tick_timer_.expires_after(env_.config.timeouts.keepalive);
    tick_timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec && !self->closed_) self->OnTick();
    });
  }

  void OnTick() {
    ReleaseIfIdle();  // first: a keepalive queued below would be a write in flight
    auto now = Clock::now();
    const auto& t = env_.config.timeouts;
    if (!up_ended_ && !wan_writer_.writing() && now - last_wan_tx_ >= t.keepalive && !awaiting_handshake_) {
      wan_writer_.QueueControl(FrameType::kKeepalive, 0, {});
    }
    // Silence only counts while we are waiting for the peer and it still owes us
    // frames: not while our LAN side is slow to take what it sent.
    if (down_waiting_ && !peer_finished_ && now - last_wan_rx_ >= t.dead_peer) {
      WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": peer " << Format(wan_endpoint())
                                    << " silent for " << t.dead_peer.count() << " ms: resetting";
      Fail(ResetReason::kTimeout);
      return;
    }
    ScheduleTick();
  }

  // An idle connection holds no codec contexts (their memory dwarfs the connection's):
  // after a keepalive interval in which no LAN byte moved and nothing was in flight,
  // the codecs free what the next byte rebuilds (dre/codec.h), and so do the buffers
  // decoding grew.
  void ReleaseIfIdle() {
    uint64_t lan = record_->lan_in.load(std::memory_order_relaxed) + record_->lan_out.load(std::memory_order_relaxed);
    bool idle = lan == lan_bytes_at_tick_ && !wan_writer_.writing() && lan_write_.empty() && !stalled_;
    lan_bytes_at_tick_ = lan;
    if (!idle) return;
    auto held = [this] { return (encoder_ ? encoder_->HeldBytes() : 0) + (decoder_ ? decoder_->HeldBytes() : 0); };
    size_t before = held();
    if (decoder_) decoder_->ReleaseIdle();
    // The frame that ends the LZ stream is a dre frame: none may follow our half-close.
    if (encoder_ && encoder_->ReleaseIdle(!up_ended_ && !awaiting_handshake_)) QueueEncoded(WanWriter::After::kNothing);
    if (size_t after = held(); after < before) env_.counters.codec_bytes_released += before - after;
    if (decoded_.empty()) decoded_.ShrinkToFit();
    if (module_output_.empty()) module_output_.ShrinkToFit();
  }

  // ---- Endings ----

  const char* RoleName() const { return role_ == Role::kBranch ? "branch" : "datacenter"; }

  // The WAN side's address, remembered at connect/accept: after a failure the socket
  // can no longer tell.
  const tcp::endpoint& wan_endpoint() const { return wan_remote_; }

  void MaybeFinish() {
    if (up_finished_ && down_finished_) {
      // Framed: both half-closes crossed, nothing more can come. Pass-through: both FINs.
      Close();
    }
  }

  void ProtocolError(const std::string& what) {
    WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": inner channel from "
                                  << Format(wan_endpoint()) << ": protocol error: " << what
                                  << ": dropping this connection";
    ++env_.counters.protocol_errors;
    record_->AddNote("protocol error: " + what);
    Fail(ResetReason::kProtocolError);
  }

  void FailLan(const error_code& ec) {
    bool reset = ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
    WANOPT_LOG(kDebug, RoleName()) << "connection " << id_ << ": LAN side: " << ec.message();
    Fail(reset ? ResetReason::kLanReset : ResetReason::kLanError);
  }

  void FailWan(const char* what, const error_code& ec) {
    WANOPT_LOG(kInfo, RoleName()) << "connection " << id_ << ": " << (framed_ ? "inner channel" : "server")
                                  << " " << what << ": " << ec.message() << ": resetting";
    Abort(std::string(framed_ ? "inner channel " : "server ") + what + ": " + ec.message());
  }

  // Resets the connection on both sides: the LAN side gets a TCP reset, the peer a
  // reset frame (best effort: if the channel is congested it gets a TCP reset).
  void Fail(ResetReason reason) {
    if (closed_) return;
    reset_ = true;
    record_->AddNote("reset: " + std::string(channel::ResetReasonName(reason)));
    if (framed_ && wan_.is_open() && !wan_writer_.writing()) {
      std::vector<uint8_t> payload{static_cast<uint8_t>(reason)};
      std::array<uint8_t, channel::kFrameHeaderSize> header{};
      channel::EncodeFrameHeader({FrameType::kReset, 0, 0, 1}, payload, header);
      std::array<asio::const_buffer, 2> frame{asio::buffer(header), asio::buffer(payload)};
      error_code ec;
      wan_.non_blocking(true, ec);
      size_t n = wan_.write_some(frame, ec);
      if (!ec && n == header.size() + payload.size()) {
        CloseWithReset(lan_);
        Close();
        return;
      }
    }
    Abort("");
  }

  // Hard stop: TCP resets on both sockets. `why` goes to the status page's notes.
  void Abort(const std::string& why) {
    reset_ = true;
    if (!why.empty()) record_->AddNote(why);
    CloseWithReset(lan_);
    CloseWithReset(wan_);
    Close();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    wan_writer_.Stop();
    error_code ignored;
    connect_timer_.cancel();
    tick_timer_.cancel();
    if (!reset_) {
      ClearAbortiveClose(lan_);
      if (!framed_) ClearAbortiveClose(wan_);
    }
    lan_.close(ignored);
    wan_.close(ignored);
    if (modules_) modules_->Close();
    // A connection that died before the peer answered, after we encoded on a guess:
    // guess no more until a connection completes its handshake.
    if (encoded_before_ack_ && awaiting_handshake_ && peer_state_) peer_state_->set_last_applied(std::nullopt);
    // Every ending passes here once: count it by how it ended.
    if (reset_) ++env_.counters.resets;
    record_->End(reset_);
    if (peer_counted_) env_.table.PeerConnectionEnded(channel::FormatDeviceId(peer_id_));
    WANOPT_LOG(kDebug, RoleName()) << "connection " << id_ << " closed";
  }

  SessionEnvironment& env_;
  const Role role_;
  const uint64_t id_;
  protocols::ConnectionInfo info_;
  BranchPlan plan_;
  tcp::socket lan_;
  tcp::socket wan_;
  WanWriter wan_writer_{wan_, *this};
  asio::steady_timer connect_timer_;
  asio::steady_timer tick_timer_;
  std::unique_ptr<protocols::ModuleChain> modules_;

  bool framed_ = false;              // WAN side is an inner channel (else: the server itself)
  bool awaiting_handshake_ = false;  // the next frame must be the hello / hello-ack
  bool draining_ = false;            // datacenter: answered "not served" (server unreachable,
                                     // destination rejected, version), waiting for the branch to hang up
  bool closed_ = false;
  bool server_connected_ = false;    // datacenter: lan_ came connected (interception)

  // Up direction.
  std::unique_ptr<Buffer> up_buffer_;
  std::deque<std::vector<uint8_t>> owned_tail_;  // module output at end of stream
  bool up_ended_ = false;     // the LAN side sent FIN; our half-close is queued
  bool up_finished_ = false;  // ... and on the wire
  uint32_t connect_generation_ = 0;

  // DRE and LZ (null for T).
  std::shared_ptr<dre::PeerState> peer_state_;
  std::unique_ptr<dre::Encoder> encoder_;
  std::unique_ptr<dre::Decoder> decoder_;
  Policy encoder_policy_ = Policy::kTcpOnly;
  bool encoded_before_ack_ = false;  // branch: encoding started before the peer answered
  Buffer decoded_;
  bool stalled_ = false;        // the decoder waits for repairs of chunks it lacked
  size_t awaited_repairs_ = 0;
  Buffer stalled_frames_;       // frames that arrived meanwhile, in order
  static constexpr size_t kMaxStalledBytes = size_t{64} << 20;

  // Down direction.
  bool half_close_pending_ = false;
  std::unique_ptr<Buffer> down_buffer_;
  std::vector<asio::const_buffer> lan_write_;
  Buffer module_output_;
  size_t down_consumed_ = 0;
  bool lan_shutdown_after_write_ = false;
  bool down_waiting_ = false;
  bool peer_finished_ = false;  // the peer's half-close arrived
  bool down_finished_ = false;  // ... and was passed on to the LAN socket

  Clock::time_point last_wan_rx_{};
  Clock::time_point last_wan_tx_{};
  uint64_t lan_bytes_at_tick_ = 0;  // LAN bytes both ways at the last tick: idle when unchanged

  // What the status page shows.
  std::shared_ptr<ConnectionRecord> record_;
  bool reset_ = false;         // the connection ends in a reset, not a close
  bool peer_counted_ = false;  // counted in the table's peers list
  tcp::endpoint peer_endpoint_;
  tcp::endpoint wan_remote_;
  std::string peer_address_;  // branch: where the peer box is, as the status page names it
  channel::DeviceId peer_id_{};
  channel::HelloAck ack_;
};

}  // namespace

// Socket options for every inner channel: small control frames must not wait for
// Nagle; a peer that stops acknowledging is given up after the dead-peer time; the
// configured congestion control (BBR by default: it keeps a long fat WAN full
// despite random loss); buffers of twice the WAN's bandwidth-delay product when the
// config gives it (else the kernel's autotuning).
void TuneInnerSocket(tcp::socket& socket, const Config& config) {
  int fd = socket.native_handle();
  int domain = 0;
  socklen_t length = sizeof domain;
  // An encrypted channel's session holds a socketpair end; the TLS pump's TCP
  // socket was tuned before its handshake.
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 && domain == AF_UNIX) return;
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  unsigned timeout_ms = static_cast<unsigned>(config.timeouts.dead_peer.count());
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof timeout_ms);
  const std::string& cc = config.wan.congestion;
  if (!cc.empty() && ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc.data(), static_cast<socklen_t>(cc.size())) != 0) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
      WANOPT_LOG(kWarn, "wan") << "congestion control " << cc << " unavailable (" << std::strerror(errno)
                               << "): inner channels use the kernel's default";
    }
  }
  if (uint64_t bytes = config.wan.buffer_bytes()) {
    int size = static_cast<int>(std::min<uint64_t>(bytes, 1u << 30));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
}

void StartBranchSession(SessionEnvironment& env, tcp::socket client, BranchPlan plan) {
  auto session = std::make_shared<Session>(env, Role::kBranch, std::move(client));
  session->StartBranch(std::move(plan));
}

void StartDatacenterSession(SessionEnvironment& env, tcp::socket inner, DatacenterPlan plan) {
  auto session = std::make_shared<Session>(env, Role::kDatacenter, std::move(inner));
  session->StartDatacenter(std::move(plan));
}

}  // namespace wanopt
