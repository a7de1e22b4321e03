// Bytes protocol modules emit outside the relayed flow (module interface v2,
// protocols/module.h): an answer to the client, a request of a module's own to the
// server, held bytes released by a timer. They go out exactly like relayed bytes
// of their direction, after everything already on its way: up through the encoder
// and the WAN writer, down through the LAN socket's single write in flight.
#include "wanopt/session/session_impl.h"

namespace wanopt::session_internal {

// A twin's message goes after every byte the modules passed on before it (module.h:
// "in order with the data"): what the encoder holds is framed first.
bool Session::SendModuleMessage(uint16_t slot, std::span<const uint8_t> message) {
  if (!framed_ || up_phase_ != UpPhase::kRelaying || closed_) return false;
  if (encoder_) {
    encoder_->Flush();
    while (encoder_->HasPayload()) QueueEncoded(WanWriter::After::kNothing);
    UpdateCodecStats();
  }
  wan_writer_.QueueControl(FrameType::kModule, slot, {message.begin(), message.end()});
  return true;
}

bool Session::AcceptsModuleOutput(Direction direction) const {
  if (closed_ || !relaying_ || !modules_) return false;
  if (direction == UpDirection()) return up_phase_ == UpPhase::kRelaying;
  return down_phase_ == DownPhase::kRelaying && !draining_;
}

void Session::ModuleOutput(Direction direction, std::span<const uint8_t> bytes) {
  if (bytes.empty() || !AcceptsModuleOutput(direction)) return;
  if (direction == UpDirection()) {
    if (encoder_) {
      // After what the encoder holds, and now: a module's bytes do not wait for the
      // next LAN read to flush them.
      encoder_->Append(bytes);
      encoder_->Flush();
      while (encoder_->HasPayload()) QueueEncoded(WanWriter::After::kNothing);
      UpdateCodecStats();
    } else {
      wan_writer_.QueueDataCopy(bytes);
    }
    return;
  }
  if (in_down_batch_) {
    // A peer message answered while frames are being processed: with the batch.
    module_output_.Append(bytes);
    return;
  }
  down_pending_.Append(bytes);
  // The down direction is waiting for the WAN side (or for a repair): write now,
  // without continuing it when done (its wait is still pending).
  if (!lan_writing_) WritePendingDown(/*continue_down=*/false);
}

// Any thread: the reset is posted to the connection's own thread, and does nothing
// once the session is gone or closed.
protocols::ModuleContext::ResetHandle Session::ResetHandle() {
  return [weak = weak_from_this(), executor = lan_.get_executor()](std::string why) {
    asio::post(executor, [weak, why = std::move(why)] {
      if (auto self = weak.lock()) self->ResetForModule(why);
    });
  };
}

void Session::ResetForModule(const std::string& why) {
  if (closed_) return;
  WANOPT_LOG(kInfo, RoleName()) << "connection " << id_ << ": reset by a module: " << why;
  record_->AddNote(why);
  Fail(ResetReason::kModule);
}

// Writes down_pending_ as a batch of its own; `continue_down`: its completion then
// continues the down direction (the batch before it would have).
void Session::WritePendingDown(bool continue_down) {
  lan_write_.clear();
  module_output_.Clear();
  module_output_.Swap(down_pending_);
  down_consumed_ = 0;
  lan_write_.push_back(asio::buffer(module_output_.data(), module_output_.size()));
  continue_after_lan_write_ = continue_down;
  WriteLan();
}

}  // namespace wanopt::session_internal
