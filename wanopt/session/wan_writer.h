// The WAN side's writer of one session: what goes to the inner channel (frames) or,
// passing through, to the server itself (raw bytes), one write at a time in queue
// order, so that at most one buffer of the up direction is in flight.
//
// Urgent frames (nack, repair) go right after the write in flight: the peer's
// decoder is stalled until they arrive, and they must not wait behind data.
//
// Ownership: the writer owns the payloads it is given by value (control frames,
// encoded DRE/LZ payloads); data spans are borrowed, and the caller keeps their bytes
// unchanged until the write that carries them completes (OnWanWritten with its
// `after`). Threading: the session's loop only. Lifetime: every completion holds
// the `owner` given to Start, which owns the writer.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>


#include "util/buffer.h"
#include "wanopt/channel/frame.h"
#include "wanopt/channel/plain_stream.h"

namespace wanopt {

class WanWriter {
 public:
  // What a completed write means to the session, beyond its bytes.
  enum class After {
    kNothing,
    kResumeUp,       // the up direction's buffer is free again: read the LAN side
    kHalfCloseSent,  // the up direction's end went out (raw: the socket is shut down for send)
  };

  class Events {
   public:
    virtual ~Events() = default;
    // `n` bytes went out (frame headers included). Not called after Stop().
    virtual void OnWanWritten(size_t n, After after) = 0;
    // A write failed; nothing more is written.
    virtual void OnWanWriteFailed(const boost::system::error_code& ec) = 0;
  };

  // `stream` and `events` outlive the writer. `framed`: the stream is an inner
  // channel (frames); else raw bytes (pass-through) and only data may be queued.
  WanWriter(channel::PlainStream& stream, Events& events) : stream_(stream), events_(events) {}

  // REQUIRES: called once, before anything is queued; `owner` owns this writer.
  void Start(std::weak_ptr<void> owner) { owner_ = std::move(owner); }
  void set_framed(bool framed) { framed_ = framed; }

  // Data: in frames of at most kMaxFramePayload when framed; `after` goes with the last.
  void QueueData(std::span<const uint8_t> data, After after);
  // The same with a copy of `data` (the writer owns it).
  void QueueDataCopy(std::span<const uint8_t> data);
  // A DRE/LZ frame with `flags` (REQUIRES framed).
  void QueueEncoded(std::unique_ptr<Buffer> payload, uint8_t flags, After after);
  // A control frame (hello, hello-ack, module, keepalive, ...) (REQUIRES framed).
  void QueueControl(channel::FrameType type, uint16_t stream, std::vector<uint8_t> payload);
  // nack and repair: ahead of everything not yet being written (REQUIRES framed).
  void QueueUrgent(channel::FrameType type, std::vector<uint8_t> payload);
  // The up direction's end: a half-close frame, or (raw) a shutdown once everything
  // queued before it is written. Completes with After::kHalfCloseSent.
  void QueueHalfClose();

  bool writing() const { return writing_; }
  // Nothing queued or being written.
  bool idle() const { return queue_.empty(); }
  // No write is started after this; completions of one in flight are not reported.
  void Stop() { stopped_ = true; }

 private:
  struct Write {
    std::array<uint8_t, channel::kFrameHeaderSize> header{};
    bool has_header = false;
    std::vector<uint8_t> owned;          // control frame payloads, copied data
    std::unique_ptr<Buffer> encoded;     // a DRE/LZ frame payload
    std::span<const uint8_t> borrowed;   // data the caller keeps
    After after = After::kNothing;
  };

  static void EncodeHeader(Write& write, channel::FrameType type, uint8_t flags, uint16_t stream,
                           std::span<const uint8_t> payload);
  void Queue(Write write, bool urgent = false);
  void WriteNext();
  void OnWritten(const boost::system::error_code& ec, size_t n);

  channel::PlainStream& stream_;
  Events& events_;
  std::weak_ptr<void> owner_;
  std::deque<Write> queue_;
  bool framed_ = false;
  bool writing_ = false;
  bool stopped_ = false;
};

}  // namespace wanopt
