// The up direction: LAN socket -> modules -> encoder -> WAN writer, one buffer in
// flight at a time.
#include "wanopt/session/session_impl.h"

namespace wanopt::session_internal {

void Session::UpWaitReadable() {
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
void Session::UpRead() {
  if (closed_) return;
  if (lz_governor_) up_work_started_ = Clock::now();
  if (encoder_ && encoder_->HasPayload()) {
    SendEncoded();
    return;
  }
  if (!up_buffer_) up_buffer_ = AcquireRelayBuffer();
  Buffer& buffer = *up_buffer_;
  for (;;) {
    buffer.Clear();
    // The module chain may have swapped the buffer's storage for another (v2 queues).
    buffer.Reserve(channel::kMaxFramePayload);
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
      if (lz_governor_) lz_governor_->AddEncoding(Clock::now() - up_work_started_);
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
void Session::SendEncoded() {
  QueueEncoded(WanWriter::After::kResumeUp);  // compresses the frame (TakePayload)
  if (lz_governor_) {
    // Encoding ends here, zstd included; from here the frame waits for the WAN.
    encoded_queued_at_ = Clock::now();
    lz_governor_->AddEncoding(encoded_queued_at_ - up_work_started_);
  }
  UpdateCodecStats();
}

void Session::QueueEncoded(WanWriter::After after) {
  auto payload = std::make_unique<Buffer>();
  uint8_t flags = 0;
  encoder_->TakePayload(*payload, &flags);
  wan_writer_.QueueEncoded(std::move(payload), flags, after);
}

// The LAN side sent FIN: let the modules flush, then half-close towards the peer.
void Session::UpEnd() {
  ReleaseRelayBuffer(std::move(up_buffer_));
  Buffer tail;
  modules_->Process(UpDirection(), tail, true);
  up_phase_ = UpPhase::kEnding;  // modules could still message their twins just above
  if (encoder_) {
    if (!tail.empty()) encoder_->Append(tail.span());
    encoder_->Flush();
    while (encoder_->HasPayload()) QueueEncoded(WanWriter::After::kNothing);
    UpdateCodecStats();
  } else if (!tail.empty()) {
    wan_writer_.QueueDataCopy(tail.span());
  }
  wan_writer_.QueueHalfClose();
}

void Session::OnWanWritten(size_t n, WanWriter::After after) {
  if (closed_) return;
  // The WAN socket carries WAN bytes whether it is an inner channel or, passing
  // through, the server connection itself: unreduced bytes still cross the WAN.
  CountWanOut(n);
  last_wan_tx_ = Clock::now();
  switch (after) {
    case WanWriter::After::kNothing: break;
    case WanWriter::After::kResumeUp:
      if (lz_governor_) GovernLzLevel();
      UpRead();
      break;
    case WanWriter::After::kHalfCloseSent:
      up_phase_ = UpPhase::kEnded;
      MaybeFinish();
      break;
  }
  // Modules whose emitted bytes were refused wait for this.
  if (!closed_ && wan_writer_.idle() && modules_ && !modules_->empty()) modules_->OutputDrained(UpDirection());
}

void Session::OnWanWriteFailed(const error_code& ec) {
  if (!closed_) FailWan("write", ec);
}

}  // namespace wanopt::session_internal
