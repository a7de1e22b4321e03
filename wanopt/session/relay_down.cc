// The down direction: WAN socket -> frames checked -> decoder -> modules -> LAN
// socket.
#include "wanopt/session/session_impl.h"

namespace wanopt::session_internal {

void Session::DownWaitReadable() {
  down_waiting_ = true;
  wan_.WaitReadable([self = shared_from_this()](error_code ec) {
    self->down_waiting_ = false;
    if (self->closed_) return;
    if (ec) return self->FailWan("wait", ec);
    // A module's bytes are being written to the LAN side: the batch buffers are
    // theirs until that write completes, which then reads on.
    if (self->lan_writing_) {
      self->down_readable_ = true;
      return;
    }
    self->DownRead();
  });
}

void Session::DownRead() {
  for (;;) {
    if (closed_) return;
    if (!down_buffer_) down_buffer_ = AcquireRelayBuffer();
    // The module chain may have swapped the buffer's storage for a smaller one.
    // (Only then: Reserve would also move a partial frame to the front each time.)
    if (down_buffer_->capacity() < kRelayBufferSize) down_buffer_->Reserve(kRelayBufferSize);
    auto tail = down_buffer_->WritableTail();
    error_code ec;
    size_t n = wan_.ReadSome(asio::buffer(tail.data(), tail.size()), ec);
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
void Session::DownResume() {
  if (closed_) return;
  if (!down_buffer_ || ProcessFrames()) DownRead();
}

// Pass-through: bytes go to the LAN as they came. Returns true to keep reading.
bool Session::ProcessRaw() {
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
bool Session::ProcessFrames() {
  // Module output that arrives meanwhile (a peer message answered) joins this batch.
  struct BatchScope {
    bool& flag;
    explicit BatchScope(bool& f) : flag(f) { flag = true; }
    ~BatchScope() { flag = false; }
  } scope(in_down_batch_);
  lan_write_.clear();
  module_output_.Clear();
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
    // A buffer of references can decode to tens of MiB: written a batch at a time,
    // the LAN write stays in cache and the connection's memory bounded. The frames
    // left are processed when this write completes.
    if (module_output_.size() >= kMaxDownBatch) break;
  }
  if (!module_output_.empty()) lan_write_.push_back(asio::buffer(module_output_.data(), module_output_.size()));
  down_consumed_ = consumed;
  if (!lan_write_.empty()) {
    WriteLan();
    return false;
  }
  return FinishBatch();
}

// Frames that must keep their place in the stream: while the decoder waits for a
// repair, they wait behind it.
bool Session::InStreamOrder(FrameType type) {
  return type == FrameType::kData || type == FrameType::kDre || type == FrameType::kHalfClose ||
         type == FrameType::kModule;
}

// Handles one frame after the handshake. Returns false when the session ended or
// an asynchronous step took over.
bool Session::HandleFrame(const channel::DecodedFrame& frame, std::span<const uint8_t> raw_frame) {
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
      if (down_phase_ != DownPhase::kRelaying) {
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
      if (down_phase_ != DownPhase::kRelaying) {
        ProtocolError("data after half-close");
        return false;
      }
      Buffer& out = DecodeTarget();
      auto status = decoder_->Decode(frame.header.flags, frame.payload, out);
      return AfterDecode(status, out);
    }
    case FrameType::kHalfClose:
      if (down_phase_ != DownPhase::kRelaying) {
        ProtocolError("second half-close");
        return false;
      }
      down_phase_ = DownPhase::kPeerFinished;
      // Everything the peer sent before its half-close is decoded (a stall replays
      // in order first): we will never nack it again, so it may close once its
      // side is done. Until it hears this it keeps the channel open to answer nacks.
      wan_writer_.QueueControl(FrameType::kKeepalive, 0, {channel::kKeepaliveFinished});
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
      if (frame.payload.size() == 1 && frame.payload[0] == channel::kKeepaliveFinished) {
        peer_finished_ = true;
        MaybeFinish();
        return !closed_;
      }
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

// Bytes for the LAN socket, in order. Zero-copy (a view into down_buffer_) when no
// module and no codec touches them; otherwise copied into module_output_.
// Without modules a frame decodes straight into this batch's LAN write (the decoder
// moves its output there when it is the batch's first, else copies it once); modules
// take each frame's bytes on their own, from decoded_.
Buffer& Session::DecodeTarget() {
  if (modules_->empty()) return module_output_;
  decoded_.Clear();
  return decoded_;
}

void Session::EmitDown(std::span<const uint8_t> bytes) {
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

void Session::WriteLan() {
  lan_writing_ = true;
  asio::async_write(lan_, lan_write_, [self = shared_from_this()](error_code ec, size_t n) {
    self->lan_writing_ = false;
    if (self->closed_) return;
    if (ec) {
      self->FailLan(ec);
      return;
    }
    self->CountLanOut(n);
    bool continue_down = self->continue_after_lan_write_;
    self->continue_after_lan_write_ = true;
    if (!self->FinishBatch()) return;
    // Module output that came while this write was in flight goes next; the down
    // direction goes on after it.
    if (!self->down_pending_.empty()) return self->WritePendingDown(continue_down);
    if (self->modules_ && !self->modules_->empty()) self->modules_->OutputDrained(self->DownDirection());
    if (self->closed_) return;
    if (!continue_down) {
      if (self->down_readable_) {
        self->down_readable_ = false;
        self->DownRead();
      }
      return;
    }
    // More whole frames may already be buffered.
    if (!self->framed_ || self->ProcessFrames()) self->DownRead();
  });
}

// The bytes of the frames just processed are out (or there were none): drop them
// and pass a half-close on. Returns true when the down direction goes on.
bool Session::FinishBatch() {
  if (down_buffer_) down_buffer_->Consume(down_consumed_);
  down_consumed_ = 0;
  lan_write_.clear();
  module_output_.Clear();
  if (down_phase_ == DownPhase::kPeerFinished) {
    error_code ignored;
    lan_.shutdown(tcp::socket::shutdown_send, ignored);
    down_phase_ = DownPhase::kEnded;
    MaybeFinish();
    // Pass-through: the server's FIN ends this direction. Framed: keep reading the
    // inner channel for resets and module messages until the session ends.
    if (closed_ || !framed_) return false;
  }
  return true;
}

// The WAN side closed its TCP connection.
void Session::DownEnd() {
  if (!framed_) {
    // Pass-through: a FIN from the server is a FIN to the client, after whatever
    // the modules still held.
    lan_write_.clear();
    module_output_.Clear();
    modules_->Process(DownDirection(), module_output_, true);
    down_consumed_ = 0;
    down_phase_ = DownPhase::kPeerFinished;
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
  if (draining_ || (up_phase_ != UpPhase::kRelaying && down_phase_ == DownPhase::kEnded)) {
    Close();
    return;
  }
  if (awaiting_handshake_ && role_ == Role::kDatacenter && (!down_buffer_ || down_buffer_->empty())) {
    // Connected and left without a byte: a port scan or a health check, not a failure.
    WANOPT_LOG(kDebug, "datacenter") << "connection " << id_ << " from " << FormatEndpoint(wan_endpoint())
                                     << " closed before its hello";
    Close();
    return;
  }
  // The peer went away without finishing both directions: the relayed connection
  // cannot be completed correctly, so it is reset rather than cut short silently.
  static constexpr const char* kUp[] = {"relaying", "ending", "ended"};
  static constexpr const char* kDown[] = {"relaying", "peer finished", "ended"};
  WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": inner channel closed by peer "
                                << FormatEndpoint(wan_endpoint()) << " mid-connection (up "
                                << kUp[static_cast<int>(up_phase_)] << ", down "
                                << kDown[static_cast<int>(down_phase_)] << (awaiting_handshake_ ? ", before the hello" : "")
                                << "): resetting";
  Abort("inner channel closed by peer mid-connection");
}

}  // namespace wanopt::session_internal
