// libFuzzer target: the DRE decoder (wanopt/dre/codec.h) fed by a hostile peer that
// holds valid credentials: it knows the peering's seed, so its references name real
// chunks, and the receiving box already knows the chunks of dre_fixture.h.
//
// Input: one options byte (bit 0: DRE, bit 1: LZ negotiated; bit 2: the box's peer
// state names a chunk its store serves wrong bytes for), then inner-channel frames
// as they cross the WAN. The frame check is not verified here (frame_fuzz covers
// it), so mutations reach the decoder; a length past the end takes what is left.
// `dre` frames go to Decoder::Decode; `repair` frames are handled as the session
// does (16-byte fingerprint, then the chunk: AddRepair, and Resume once every
// missing chunk arrived); `dre` frames that arrive while the decoder waits for a
// repair wait behind it, as in the session. Other frame types are skipped.
//
// Whatever the bytes: no crash, no leak, no undefined behaviour; a decode that
// reports kDone appended exactly bytes whose XXH3-64 is the frame's check, and one
// that does not appended nothing.
#include <xxhash.h>

#include <cstdint>
#include <cstdlib>
#include <deque>
#include <span>
#include <vector>

#include "tests/fuzz/dre_fixture.h"
#include "wanopt/channel/frame.h"
#include "wanopt/dre/codec.h"
#include "util/bytes.h"
#include "util/log.h"

using namespace wanopt;

namespace {

struct Frame {
  uint8_t type;
  uint8_t flags;
  std::span<const uint8_t> payload;
};

std::vector<Frame> SplitFrames(std::span<const uint8_t> in) {
  std::vector<Frame> frames;
  while (in.size() >= channel::kFrameHeaderSize) {
    size_t length = bytes::GetBe32(in.data() + 4);
    size_t take = std::min(length, in.size() - channel::kFrameHeaderSize);
    frames.push_back({in[0], in[1], in.subspan(channel::kFrameHeaderSize, take)});
    in = in.subspan(channel::kFrameHeaderSize + take);
  }
  return frames;
}

class Receiver {
 public:
  Receiver(const dre::CodecOptions& options, bool with_decoy)
      : box_(with_decoy), decoder_(options, box_.peer, &box_.store) {}

  // Returns false when the session would reset the connection.
  bool Handle(const Frame& frame) {
    if (frame.type == static_cast<uint8_t>(channel::FrameType::kDre)) {
      if (stalled_) {
        waiting_.push_back(frame);
        return true;
      }
      check_ = frame.payload.size() >= 8 ? bytes::GetBe64(frame.payload.data()) : 0;
      return After(decoder_.Decode(frame.flags, frame.payload, out_));
    }
    if (frame.type == static_cast<uint8_t>(channel::FrameType::kRepair)) {
      if (!stalled_ || frame.payload.size() < 16) return false;
      auto fingerprint = dre::FingerprintFromBytes(std::span<const uint8_t, 16>(frame.payload.data(), 16));
      if (!decoder_.AddRepair(fingerprint, frame.payload.subspan(16))) return false;
      if (--awaited_ > 0) return true;
      stalled_ = false;
      if (!After(decoder_.Resume(out_))) return false;
      while (!stalled_ && !waiting_.empty()) {
        Frame next = waiting_.front();
        waiting_.pop_front();
        if (!Handle(next)) return false;
      }
    }
    return true;
  }

 private:
  bool After(dre::Decoder::Status status) {
    size_t added = out_.size() - delivered_;
    if (status != dre::Decoder::Status::kDone) {
      if (added != 0) std::abort();  // bytes delivered from a frame that did not decode
    } else if (XXH3_64bits(out_.data() + delivered_, added) != check_) {
      std::abort();  // delivered bytes that fail the frame's check
    }
    delivered_ = out_.size();
    switch (status) {
      case dre::Decoder::Status::kDone:
        return true;
      case dre::Decoder::Status::kMissing:
        if (decoder_.missing().empty()) std::abort();
        awaited_ = decoder_.missing().size();
        stalled_ = true;
        return true;
      case dre::Decoder::Status::kCorrupt:
        if (decoder_.error().empty()) std::abort();
        return false;
    }
    return false;
  }

  fuzz::Box box_;
  dre::Decoder decoder_;
  Buffer out_;
  size_t delivered_ = 0;
  uint64_t check_ = 0;
  bool stalled_ = false;
  size_t awaited_ = 0;
  std::deque<Frame> waiting_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  log::SetLevel(log::Level::kError);  // the decoder warns on every mismatched chunk
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  dre::CodecOptions options;
  options.dre = data[0] & 1;
  options.lz = data[0] & 2;
  Receiver receiver(options, data[0] & 4);
  for (const Frame& frame : SplitFrames({data + 1, size - 1})) {
    if (!receiver.Handle(frame)) break;
  }
  return 0;
}
