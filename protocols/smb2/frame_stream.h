// One direction of an SMB2 connection (direct TCP: a 4-byte length before each
// frame), walked frame by frame for a module that passes most bytes on as they come
// and acts on a few frames. The owner sees the head of each frame (the whole frame
// when it is small), may patch it in place, and passes, drops or takes the frame.
// Bytes are never reordered: what the owner inserts goes out between two frames.
//
// A 1 MiB READ answer is not held back to be looked at: its head is, the rest
// streams. The headers of the later messages of a large compound frame are shown
// to the owner as they pass, so that it can patch them too (MessageIds).
//
// NetBIOS session frames (port 139: session request and response, keepalive) pass
// as they are without the owner seeing them.
//
// When the stream breaks the framing (a first byte that is not 0, a length of 0 or
// over smb2::kMaxFrameLength, a compound chain that leaves its frame), the owner is
// told once and from then on every byte passes unchanged.
//
// Not thread-safe: one per direction of one connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "util/buffer.h"

namespace wanopt::protocols::smb2 {

class FrameStream {
 public:
  enum class Verdict : uint8_t {
    kPass,  // the frame goes on (with the owner's patches)
    kDrop,  // the frame goes nowhere
    kTake,  // the frame goes to Owner::OnTaken, whole, and nowhere else
  };
  // Frames up to this size are shown whole; larger ones by their first kHeadBytes.
  static constexpr size_t kWholeFrame = 64 * 1024;
  // Prefix, header and the fixed part of any body the module reads (CREATE's
  // response is the longest, 88 bytes).
  static constexpr size_t kHeadBytes = 4 + 64 + 128;

  struct Head {
    std::span<uint8_t> bytes;  // the frame's first bytes, prefix included; patchable
    uint32_t length = 0;       // the frame's payload length (after the prefix)
    bool whole = false;        // `bytes` is the whole frame
  };

  class Owner {
   public:
    virtual ~Owner() = default;
    // Once per frame, when its head is here.
    virtual Verdict OnFrame(Head head) = 0;
    // The 64-byte header of each later message of a compound frame that was not
    // shown whole, as it passes (not for dropped or taken frames); patchable.
    virtual void OnLaterHeader(std::span<uint8_t> header) = 0;
    // The whole frame, prefix included, of a frame the owner took.
    virtual void OnTaken(std::vector<uint8_t> frame) = 0;
    // The framing broke (`reason` is a static string); every byte passes from now on.
    virtual void OnMalformed(std::string_view reason) = 0;
  };

  // Walks `in` (the direction's next bytes) and appends to `out` what passes, with
  // the inserted bytes at frame boundaries. Owner calls happen during Push.
  void Push(std::span<const uint8_t> in, Owner& owner, Buffer& out);

  // The direction ended: what is held of an unfinished frame goes out as it came
  // (a frame being taken is dropped with it), then the inserts.
  void Finish(Buffer& out);
  // Gives up the inserted bytes waiting for a boundary (to emit them elsewhere).
  std::vector<uint8_t> TakeInserts() { return std::exchange(inserts_, {}); }

  // `bytes` go out at the next frame boundary, in the order inserted: in this Push's
  // `out` when called from an Owner call, else at the next Push (or use at_boundary()
  // and emit them directly, which is the same place).
  void Insert(std::span<const uint8_t> bytes);

  // No frame is partly passed (nothing is waiting for the rest of a frame).
  bool at_boundary() const { return state_ == State::kPrefix && assembled_.empty(); }
  // The framing broke: bytes pass unchanged.
  bool raw() const { return state_ == State::kRaw; }
  // Bytes this stream holds: a head being assembled, a frame being taken, inserts.
  size_t buffered() const { return assembled_.size() + taken_.size() + inserts_.size(); }

 private:
  enum class State : uint8_t { kPrefix, kHead, kBody, kRaw };
  void StartFrame(Owner& owner, Buffer& out);
  void BodyBytes(std::span<const uint8_t> in, size_t n, Owner& owner, Buffer& out);
  void EndFrame(Owner& owner, Buffer& out);
  void Break(std::string_view reason, Owner& owner, Buffer& out);
  void FlushInserts(Buffer& out);

  State state_ = State::kPrefix;
  std::vector<uint8_t> assembled_;  // the prefix, then the head, being assembled
  uint32_t length_ = 0;             // payload length of the current frame
  size_t head_target_ = 0;          // bytes of payload in the head
  uint64_t position_ = 0;           // payload bytes of the current frame seen so far
  Verdict verdict_ = Verdict::kPass;
  uint64_t next_header_ = 0;        // payload offset of the next compound header (0: none)
  std::vector<uint8_t> header_;     // a later compound header being assembled
  std::vector<uint8_t> taken_;      // the frame being taken
  std::vector<uint8_t> inserts_;    // waiting for a boundary
};

}  // namespace wanopt::protocols::smb2
