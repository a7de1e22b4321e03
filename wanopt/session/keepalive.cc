// Keepalive, dead-peer detection and the idle release of codecs and buffers (inner
// channels only).
#include "wanopt/session/session_impl.h"

#include <algorithm>

namespace wanopt::session_internal {

void Session::StartTicks() {
  last_wan_rx_ = last_wan_tx_ = Clock::now();
  ScheduleTick();
}

void Session::ScheduleTick() {
  tick_timer_.expires_after(env_.config.timeouts.keepalive);
  tick_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec && !self->closed_) self->OnTick();
  });
}

void Session::OnTick() {
  ReleaseIfIdle();  // first: a keepalive queued below would be a write in flight
  auto now = Clock::now();
  const auto& t = env_.config.timeouts;
  // Keepalives while our LAN side has not ended, and also after that while we still
  // decode the peer's stream (it may wait for our "finished" to close: this tells
  // it we are alive). Older boxes accept a keepalive at any time.
  if ((up_phase_ == UpPhase::kRelaying || down_phase_ != DownPhase::kEnded) && !wan_writer_.writing() &&
      now - last_wan_tx_ >= t.keepalive && !awaiting_handshake_) {
    wan_writer_.QueueControl(FrameType::kKeepalive, 0, {});
  }
  // Silence only counts while we are waiting for the peer and it still owes us
  // frames: not while our LAN side is slow to take what it sent.
  if (down_waiting_ && down_phase_ == DownPhase::kRelaying && now - last_wan_rx_ >= t.dead_peer) {
    WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": peer " << FormatEndpoint(wan_endpoint())
                                  << " silent for " << t.dead_peer.count() << " ms: resetting";
    Fail(ResetReason::kTimeout);
    return;
  }
  // Both directions done here, waiting for the peer's "finished": a peer still
  // decoding sends keepalives (above), so dead_peer_ms of silence, counted from when
  // we started waiting, means it is gone; nothing of ours is still being written.
  if (up_phase_ == UpPhase::kEnded && down_phase_ == DownPhase::kEnded && wan_writer_.idle() &&
      now - std::max(last_wan_rx_, both_ended_at_) >= t.dead_peer) {
    WANOPT_LOG(kInfo, RoleName()) << "connection " << id_ << ": no word from peer " << FormatEndpoint(wan_endpoint())
                                  << " for " << t.dead_peer.count() << " ms after both directions ended: closing";
    Close();
    return;
  }
  ScheduleTick();
}

// An idle connection holds no codec contexts (their memory dwarfs the connection's):
// after a keepalive interval in which no LAN byte moved and nothing was in flight,
// the codecs free what the next byte rebuilds (dre/codec.h), and so do the buffers
// decoding grew.
void Session::ReleaseIfIdle() {
  uint64_t lan = record_->lan_in.load(std::memory_order_relaxed) + record_->lan_out.load(std::memory_order_relaxed);
  bool idle = lan == lan_bytes_at_tick_ && !wan_writer_.writing() && lan_write_.empty() && !stalled_;
  lan_bytes_at_tick_ = lan;
  if (!idle) return;
  auto held = [this] { return (encoder_ ? encoder_->HeldBytes() : 0) + (decoder_ ? decoder_->HeldBytes() : 0); };
  size_t before = held();
  if (decoder_) decoder_->ReleaseIdle();
  // The frame that ends the LZ stream is a dre frame: none may follow our half-close.
  if (lz_governor_) {
    // A new burst starts at the configured level and earns its way up again.
    lz_governor_->Reset();
    FollowLzGovernor();
  }
  if (encoder_ && encoder_->ReleaseIdle(up_phase_ == UpPhase::kRelaying && !awaiting_handshake_)) QueueEncoded(WanWriter::After::kNothing);
  if (size_t after = held(); after < before) env_.counters.codec_bytes_released += before - after;
  if (decoded_.empty()) decoded_.ShrinkToFit();
  if (module_output_.empty()) module_output_.ShrinkToFit();
}

}  // namespace wanopt::session_internal
