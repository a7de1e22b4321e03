// Private to wanopt/session/: the Session class, one object per relayed connection
// (a client connection on a branch, an inner channel on a datacenter), its async
// chains and its state. Its member functions live in files named by their job:
//   session.cc            start, codecs, the endings (close, reset, protocol error)
//   branch_setup.cc       branch: the peer (connect, TLS, peer_down) or the server
//   datacenter_setup.cc   datacenter: the hello deadline, the server connection
//   handshake.cc          hello and hello-ack on the channel (decisions: negotiation.h)
//   relay_up.cc           LAN socket -> modules -> encoder -> WAN writer (wan_writer.h)
//   relay_down.cc         WAN socket -> frames -> decoder -> modules -> LAN socket
//   stall_and_repair.cc   a decoder lacking chunks: nack, repair, replay
//   keepalive.cc          keepalive, dead peer, idle release
//   sockets.cc            socket options and addresses
// The public entry points are in session.h. Threading: every member runs on the
// io_context of the session's sockets; the object lives as long as a pending
// operation holds shared_from_this().
#pragma once

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
#include "wanopt/dre/lz_governor.h"
#include "wanopt/dre/lz_params.h"
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

namespace wanopt::session_internal {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using channel::FrameHeader;
using channel::FrameType;
using channel::ResetReason;
using protocols::Direction;
using Clock = std::chrono::steady_clock;

enum class Role { kBranch, kDatacenter };

// Where each direction of a connection is. Up: LAN side -> WAN side; down: WAN
// side -> LAN side (the client's bytes go up on a branch, the server's on a
// datacenter). The session is done when both have ended and, on an inner channel,
// the peer said it decoded everything we sent ("finished", MaybeFinish).
enum class UpPhase {
  kRelaying,
  kEnding,  // the LAN side sent FIN: the modules flushed, our half-close is queued
  kEnded,   // ... and written
};
enum class DownPhase {
  kRelaying,
  kPeerFinished,  // the peer's half-close (or, passing through, the server's FIN) arrived:
                  // what came before it is being written to the LAN side
  kEnded,         // ... written, and the LAN socket shut down for sending
};


// sockets.cc
channel::HelloStatus StatusFor(const error_code& ec);
boost::asio::ip::address OwnAddressTowards(const boost::asio::ip::address& peer);
void SetAbortiveClose(tcp::socket& socket, bool on);
void TuneLanSocket(tcp::socket& socket);
void BindTransparent(tcp::socket& socket, const boost::asio::ip::address& source);
void ClearAbortiveClose(tcp::socket& socket);

class Session final : public std::enable_shared_from_this<Session>,
                      public protocols::ModuleChain::Host,
                      public WanWriter::Events {
 public:
  // The accepted side is the LAN side on a branch and the WAN side on a datacenter;
  // the other is a closed socket on the same executor.
  Session(SessionEnvironment& env, Role role, tcp::socket lan, channel::PlainStream wan)
      : env_(env),
        role_(role),
        id_(++env.next_session_id),
        lan_(std::move(lan)),
        wan_(std::move(wan)),
        connect_timer_(lan_.get_executor()),
        tick_timer_(lan_.get_executor()) {
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

  void StartBranch(BranchPlan plan);
  void OnPeerReached(error_code ec);
  void OnPeerConnected(error_code ec, const std::string& failure = "");
  void BecomePassThrough(const std::string& reason);
  void PassThroughOverConnected(const std::string& reason);
  void ConnectDirect(const std::string& reason);

  // ---- Datacenter: read the hello, connect to the server, answer, relay. ----

  void StartDatacenter(DatacenterPlan plan);
  void OnHello(const channel::Hello& hello);
  AcceptorFacts AcceptorFactsNow() const;
  void ConnectWanToServer(const tcp::endpoint& server);
  void OnServerConnected(error_code ec);
  void AnswerAndDrain(channel::HelloStatus status, const std::string& note, bool resume);

  // ---- Both roles. ----

  void StartRelay();

 private:
  void SetFramed(bool framed) {
    framed_ = framed;
    wan_writer_.set_framed(framed);
  }

  static bool HasDre(Policy p) { return static_cast<uint8_t>(p) & static_cast<uint8_t>(Policy::kDre); }
  static bool HasLz(Policy p) { return static_cast<uint8_t>(p) & static_cast<uint8_t>(Policy::kLz); }

  void StartEncoder(Policy policy);
  void StartDecoder();

  // ---- Counting, for the daemon's totals and this connection's record ----
  template <class BoxCounter, class RecordCounter>
  static void Count(BoxCounter& box, RecordCounter& record, size_t n) {
    box.fetch_add(n, std::memory_order_relaxed);
    record.fetch_add(n, std::memory_order_relaxed);
  }
  void CountLanIn(size_t n) { Count(env_.counters.lan_in, record_->lan_in, n); }
  void CountLanOut(size_t n) { Count(env_.counters.lan_out, record_->lan_out, n); }
  void CountWanIn(size_t n) { Count(env_.counters.wan_in, record_->wan_in, n); }
  void CountWanOut(size_t n) { Count(env_.counters.wan_out, record_->wan_out, n); }

  // ---- ModuleChain::Host ----
  const protocols::ConnectionInfo& connection() const override { return info_; }
  bool SendModuleMessage(uint16_t slot, std::span<const uint8_t> message) override;
  void SetApplication(std::string_view name) override { record_->SetApplication(name); }
  void AddNote(std::string_view note) override { record_->AddNote(note); }
  void SetNote(std::string_view key, std::string_view note) override { record_->SetNote(key, note); }
  protocols::BoxModule* BoxModuleFor(std::string_view name) override {
    return env_.box_modules ? env_.box_modules->Find(name) : nullptr;
  }
  // module_output.cc: bytes modules emit outside the relayed flow (interface v2).
  bool AcceptsModuleOutput(Direction direction) const override;
  void ModuleOutput(Direction direction, std::span<const uint8_t> bytes) override;
  std::optional<boost::asio::any_io_executor> ModuleExecutor() override { return lan_.get_executor(); }
  protocols::ModuleContext::ResetHandle ResetHandle() override;
  void ResetForModule(const std::string& why);
  void WritePendingDown(bool continue_down);

  Direction UpDirection() const {
    return role_ == Role::kBranch ? Direction::kClientToServer : Direction::kServerToClient;
  }
  Direction DownDirection() const {
    return role_ == Role::kBranch ? Direction::kServerToClient : Direction::kClientToServer;
  }

  // Connects `socket` (lan_ or wan_.tcp()) within `timeout`; a connect cut by the timeout
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

  void UpWaitReadable();
  void UpRead();
  void SendEncoded();
  void QueueEncoded(WanWriter::After after);
  void UpEnd();

  // ---- WanWriter::Events ----

  void OnWanWritten(size_t n, WanWriter::After after) override;
  void OnWanWriteFailed(const error_code& ec) override;

  // ---- Down: WAN -> check frames -> modules -> LAN ----

  void DownWaitReadable();
  void DownRead();
  void DownResume();
  bool ProcessRaw();
  bool ProcessFrames();
  static bool InStreamOrder(FrameType type);
  bool HandleFrame(const channel::DecodedFrame& frame, std::span<const uint8_t> raw_frame);
  // Where the decoder appends a frame's bytes: module_output_, or decoded_ (cleared)
  // when modules take them.
  Buffer& DecodeTarget();
  // `out`: the DecodeTarget() the decoder appended the frame's bytes to.
  bool AfterDecode(dre::Decoder::Status status, Buffer& out);
  bool HandleNack(std::span<const uint8_t> payload);
  bool HandleRepair(std::span<const uint8_t> payload);
  void EmitDown(std::span<const uint8_t> bytes);
  void UpdateCodecStats();
  void GovernLzLevel();
  void FollowLzGovernor();
  void SetPeerLzWindowLog(uint8_t window_log);
  bool HandleHandshake(const channel::DecodedFrame& frame);
  static bool SpeaksOtherVersion(std::span<const uint8_t> hello);
  void WriteLan();
  bool FinishBatch();
  void DownEnd();

  // ---- Keepalive and dead-peer detection (inner channels only) ----

  void StartTicks();
  void ScheduleTick();
  void OnTick();
  void ReleaseIfIdle();

  // ---- Endings ----

  const char* RoleName() const;

  // The WAN side's address, remembered at connect/accept: after a failure the socket
  // can no longer tell.
  const tcp::endpoint& wan_endpoint() const { return wan_remote_; }

  void MaybeFinish();
  void ProtocolError(const std::string& what);
  void FailLan(const error_code& ec);
  void FailWan(const char* what, const error_code& ec);
  void Fail(ResetReason reason);
  void Abort(const std::string& why);
  void Close();

  SessionEnvironment& env_;
  const Role role_;
  const uint64_t id_;
  protocols::ConnectionInfo info_;
  BranchPlan plan_;
  tcp::socket lan_;
  channel::PlainStream wan_;  // a TCP socket, or a TLS pump's end
  WanWriter wan_writer_{wan_, *this};
  asio::steady_timer connect_timer_;
  asio::steady_timer tick_timer_;
  std::unique_ptr<protocols::ModuleChain> modules_;

  bool framed_ = false;              // WAN side is an inner channel (else: the server itself)
  bool awaiting_handshake_ = false;  // the next frame must be the hello / hello-ack
  bool peer_finished_ = false;       // the peer decoded everything up to our half-close (kKeepaliveFinished)
  bool draining_ = false;            // datacenter: answered "not served" (server unreachable,
                                     // destination rejected, version), waiting for the branch to hang up
  bool closed_ = false;
  bool relaying_ = false;            // StartRelay ran: both directions are set up
  bool server_connected_ = false;    // datacenter: lan_ came connected (interception)

  // Up direction.
  std::unique_ptr<Buffer> up_buffer_;
  UpPhase up_phase_ = UpPhase::kRelaying;
  uint32_t connect_generation_ = 0;

  // DRE and LZ (null for T).
  std::shared_ptr<dre::PeerState> peer_state_;
  std::unique_ptr<dre::Encoder> encoder_;
  std::unique_ptr<dre::Decoder> decoder_;
  std::unique_ptr<dre::LzGovernor> lz_governor_;  // with an LZ encoder: its level
  Clock::time_point up_work_started_{};    // UpRead began: time spent encoding ...
  Clock::time_point encoded_queued_at_{};  // ... and waiting for the WAN write of a frame ({}: none)
  int peer_lz_window_log_ = dre::kLzWindowLog;  // the peer's decoder takes windows up to this
  Policy encoder_policy_ = Policy::kTcpOnly;
  bool encoded_before_ack_ = false;  // branch: encoding started before the peer answered
  Buffer decoded_;
  bool stalled_ = false;        // the decoder waits for repairs of chunks it lacked
  size_t awaited_repairs_ = 0;
  Buffer stalled_frames_;       // frames that arrived meanwhile, in order
  static constexpr size_t kMaxStalledBytes = size_t{64} << 20;

  // Down direction.
  std::unique_ptr<Buffer> down_buffer_;
  std::vector<asio::const_buffer> lan_write_;
  Buffer module_output_;
  static constexpr size_t kMaxDownBatch = size_t{1} << 20;  // module_output_ written once it holds this much
  size_t down_consumed_ = 0;
  bool down_waiting_ = false;
  DownPhase down_phase_ = DownPhase::kRelaying;
  bool in_down_batch_ = false;       // ProcessFrames runs: module output joins its batch
  bool lan_writing_ = false;         // a write to the LAN socket is in flight
  bool continue_after_lan_write_ = true;  // ... and its completion continues the down direction
  Buffer down_pending_;              // module output waiting for the LAN write in flight
  bool down_readable_ = false;       // the WAN side became readable during a module's LAN write

  Clock::time_point last_wan_rx_{};
  Clock::time_point both_ended_at_{};  // both directions ended here (waiting for "finished" since)
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

}  // namespace wanopt::session_internal
