// The repair protocol: a decoder that meets chunks it lacks stalls and asks for
// them (nack); what arrives meanwhile waits in order and is replayed once the
// repairs are in. The encoder's side answers nacks with the chunks (repair).
#include "wanopt/session/session_impl.h"

namespace wanopt::session_internal {

bool Session::AfterDecode(dre::Decoder::Status status, Buffer& out) {
  UpdateCodecStats();
  switch (status) {
    case dre::Decoder::Status::kDone:
      if (&out != &module_output_) EmitDown(out.span());
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
      WANOPT_LOG(kWarn, RoleName()) << "connection " << id_ << ": DRE from " << FormatEndpoint(wan_endpoint()) << ": "
                                    << decoder_->error() << ": resetting, nothing of it delivered";
      record_->AddNote("DRE: " + decoder_->error());
      Fail(ResetReason::kIntegrity);
      return false;
  }
  return false;
}

// The peer could not resolve references this box sent: send the chunks' bytes.
bool Session::HandleNack(std::span<const uint8_t> payload) {
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
bool Session::HandleRepair(std::span<const uint8_t> payload) {
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
  Buffer& out = DecodeTarget();
  if (!AfterDecode(decoder_->Resume(out), out)) return false;
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

}  // namespace wanopt::session_internal
