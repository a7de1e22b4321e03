// A relayed connection's life: its start (session.h's entry points), its codecs, and
// its endings: a clean close, a reset on both sides, a protocol error.
#include "wanopt/session/session_impl.h"

namespace wanopt::session_internal {

void Session::StartRelay() {
  // Reads are tried directly and must return would_block instead of waiting.
  error_code ignored;
  lan_.non_blocking(true, ignored);
  wan_.tcp().non_blocking(true, ignored);
  relaying_ = true;
  modules_->Start();
  UpWaitReadable();
  if (role_ == Role::kBranch) DownWaitReadable();
  if (framed_ && role_ == Role::kBranch) StartTicks();
}

// The encoder follows the policy; the decoder accepts anything this box can
// decode (it only checks), so that either side may start encoding first.
void Session::StartEncoder(Policy policy) {
  if (policy == Policy::kTcpOnly || encoder_) return;
  dre::CodecOptions options;
  options.dre = HasDre(policy) && env_.store != nullptr && peer_state_ != nullptr;
  options.lz = HasLz(policy);
  options.lz_level = env_.config.dre.lz_level;
  options.chunker = env_.config.dre.chunker;
  encoder_ = std::make_unique<dre::Encoder>(options, peer_state_, env_.store);
  encoder_policy_ = policy;
  if (options.lz) {
    lz_governor_ = std::make_unique<dre::LzGovernor>(options.lz_level, env_.config.dre.lz_level_max, env_.lz_budget);
    lz_governor_->set_peer_window_log(peer_lz_window_log_);
    FollowLzGovernor();
  }
}

void Session::StartDecoder() {
  if (decoder_) return;
  dre::CodecOptions options;
  options.dre = env_.store != nullptr && peer_state_ != nullptr;
  options.lz = true;
  decoder_ = std::make_unique<dre::Decoder>(options, peer_state_, env_.store);
}

void Session::UpdateCodecStats() {
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

// After each encoded frame's write: the time since the previous decision went to
// encoding or to waiting for the WAN; the governor picks the level (lz_governor.h).
void Session::GovernLzLevel() {
  // Only an encoded frame's write says how long the WAN kept the encoder waiting.
  // The write that just completed may have been plain data queued before the
  // encoder started (the first bytes of a connection, sent before the peer's
  // answer): no wait to count. (Counting one from the clock's epoch once pinned
  // fast links at a raised level.)
  if (encoded_queued_at_ == Clock::time_point{}) return;
  Clock::time_point now = Clock::now();
  lz_governor_->AddWanWait(now - encoded_queued_at_);
  encoded_queued_at_ = {};
  int level = lz_governor_->Decide(now);
  if (level == encoder_->lz_level()) return;
  auto ms = [](Clock::duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  WANOPT_LOG(kDebug, RoleName()) << "connection " << id_ << ": zstd level " << encoder_->lz_level() << " -> "
                                 << level << " (window log " << lz_governor_->window_log() << "; decided on "
                                 << ms(lz_governor_->last_encoding()) << " ms encoding, "
                                 << ms(lz_governor_->last_waiting()) << " ms waiting for the WAN)";
  FollowLzGovernor();
}

// The encoder and the status record follow the governor's level.
void Session::FollowLzGovernor() {
  encoder_->set_lz_level(lz_governor_->level(), lz_governor_->window_log());
  record_->lz_level = lz_governor_->level();
  record_->lz_level_peak = lz_governor_->peak();
}

// From the peer's hello or hello-ack: 0 (an older box) means the 1 MiB every decoder takes.
void Session::SetPeerLzWindowLog(uint8_t window_log) {
  peer_lz_window_log_ = window_log ? window_log : dre::kLzWindowLog;
  if (lz_governor_) lz_governor_->set_peer_window_log(peer_lz_window_log_);
}

const char* Session::RoleName() const { return role_ == Role::kBranch ? "branch" : "datacenter"; }

void Session::MaybeFinish() {
  if (up_phase_ != UpPhase::kEnded || down_phase_ != DownPhase::kEnded) return;
  if (both_ended_at_ == Clock::time_point{}) both_ended_at_ = Clock::now();
  if (peer_finished_ || !framed_) {
    // Framed: both half-closes crossed and the peer decoded all we sent (it will
    // nack nothing more). Pass-through: both FINs.
    Close();
  }
}

void Session::ProtocolError(const std::string& what) {
  WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": inner channel from "
                                << FormatEndpoint(wan_endpoint()) << ": protocol error: " << what
                                << ": dropping this connection";
  ++env_.counters.protocol_errors;
  record_->AddNote("protocol error: " + what);
  Fail(ResetReason::kProtocolError);
}

void Session::FailLan(const error_code& ec) {
  bool reset = ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
  WANOPT_LOG(kDebug, RoleName()) << "connection " << id_ << ": LAN side: " << ec.message();
  Fail(reset ? ResetReason::kLanReset : ResetReason::kLanError);
}

void Session::FailWan(const char* what, const error_code& ec) {
  WANOPT_LOG(kInfo, RoleName()) << "connection " << id_ << ": " << (framed_ ? "inner channel" : "server")
                                << " " << what << ": " << ec.message() << ": resetting";
  Abort(std::string(framed_ ? "inner channel " : "server ") + what + ": " + ec.message());
}

// Resets the connection on both sides: the LAN side gets a TCP reset, the peer a
// reset frame (best effort: if the channel is congested it gets a TCP reset).
void Session::Fail(ResetReason reason) {
  if (closed_) return;
  reset_ = true;
  record_->AddNote("reset: " + std::string(channel::ResetReasonName(reason)));
  if (framed_ && wan_.is_open() && !wan_writer_.writing()) {
    std::vector<uint8_t> payload{static_cast<uint8_t>(reason)};
    std::array<uint8_t, channel::kFrameHeaderSize> header{};
    channel::EncodeFrameHeader({FrameType::kReset, 0, 0, 1}, payload, header);
    std::array<asio::const_buffer, 2> frame{asio::buffer(header), asio::buffer(payload)};
    error_code ec;
    wan_.tcp().non_blocking(true, ec);
    size_t n = wan_.WriteSome(frame, ec);
    if (!ec && n == header.size() + payload.size()) {
      CloseWithReset(lan_);
      Close();
      return;
    }
  }
  Abort("");
}

// Hard stop: TCP resets on both sockets. `why` goes to the status page's notes.
void Session::Abort(const std::string& why) {
  reset_ = true;
  if (!why.empty()) record_->AddNote(why);
  CloseWithReset(lan_);
  wan_.CloseWithReset();
  Close();
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  wan_writer_.Stop();
  error_code ignored;
  connect_timer_.cancel();
  tick_timer_.cancel();
  if (!reset_) {
    ClearAbortiveClose(lan_);
    if (!framed_) ClearAbortiveClose(wan_.tcp());
  }
  lan_.close(ignored);
  wan_.Close();
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

}  // namespace wanopt::session_internal

namespace wanopt {

using session_internal::Role;
using session_internal::Session;
using session_internal::tcp;

void StartBranchSession(SessionEnvironment& env, tcp::socket client, BranchPlan plan) {
  channel::PlainStream wan(client.get_executor());
  auto session = std::make_shared<Session>(env, Role::kBranch, std::move(client), std::move(wan));
  session->StartBranch(std::move(plan));
}

void StartDatacenterSession(SessionEnvironment& env, channel::PlainStream inner, DatacenterPlan plan) {
  tcp::socket lan(inner.get_executor());
  auto session = std::make_shared<Session>(env, Role::kDatacenter, std::move(lan), std::move(inner));
  session->StartDatacenter(std::move(plan));
}

}  // namespace wanopt
