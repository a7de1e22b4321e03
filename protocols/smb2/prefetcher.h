// The datacenter half of SMB2 read-ahead: watches one connection's requests (from
// the client, out of the inner channel) and answers (from the server), predicts the
// READs a serial reader will send next and sends them to the server itself, and
// keeps MessageIds consistent once a prediction fails. README.md says why.
//
// It sees each frame's head through FrameStream (the whole frame when small), may
// patch it (MessageIds, a CREATE's oplock level) and says whether the frame passes
// or is dropped. What it originates goes through its Sink.
//
// Not thread-safe: one per connection, on the connection's thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/smb2/frame_stream.h"
#include "protocols/smb2/smb2.h"

namespace wanopt::protocols::smb2 {

// Read-ahead's bounds, per connection.
struct ReadAheadLimits {
  uint32_t max_read = 1 << 20;            // READs larger than this are not predicted
  uint64_t max_ahead_per_file = 8 << 20;  // bytes predicted and not yet served, one file
  uint64_t max_ahead = 16 << 20;          // ... all files of the connection
  size_t first_depth = 2;                 // predictions after a file's first serial READ
};

// What a connection's read-ahead did, for the status page.
struct ReadAheadFigures {
  uint64_t predicted = 0;        // READs sent to the server ahead of the client
  uint64_t predicted_bytes = 0;  // bytes they asked for
  uint64_t served = 0;           // of them, answered to the client by the branch
  uint64_t served_bytes = 0;
  uint64_t abandoned = 0;        // not used: the client did something else
  uint64_t translated = 0;       // requests sent with a MessageId other than the client's
};

class Prefetcher {
 public:
  class Sink {
   public:
    virtual ~Sink() = default;
    // A whole frame (prefix included) for the server, after the frames so far.
    virtual void ToServer(std::span<const uint8_t> frame) = 0;
    // A message for the branch's twin (twin.h).
    virtual void ToTwin(std::span<const uint8_t> message) = 0;
    // A one-line note for the status page.
    virtual void Note(std::string_view note) = 0;
  };

  Prefetcher(Sink& sink, ReadAheadLimits limits = {});
  ~Prefetcher();

  FrameStream::Verdict OnClientFrame(FrameStream::Head head);
  void OnClientLaterHeader(std::span<uint8_t> header);
  FrameStream::Verdict OnServerFrame(FrameStream::Head head);
  void OnServerLaterHeader(std::span<uint8_t> header);
  void OnTwinMessage(std::span<const uint8_t> message);
  // A direction's framing broke: from now on nothing can be predicted or translated.
  void OnMalformed(std::string_view reason);

  // Turns read-ahead off for the connection (the branch has no twin, the config).
  void StepAside(std::string why);
  // Why read-ahead is off for the whole connection ("" while it may run).
  const std::string& stepped_aside() const;
  // The names of the first files opened (at most 8) and how many were opened.
  const std::vector<std::string>& opened() const;
  uint64_t opened_count() const;
  // "SMB2" or "SMB3" once the dialect is known, else "".
  std::string_view application() const;
  // The dialect the server chose (0 before).
  uint16_t dialect() const;
  const ReadAheadFigures& figures() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace wanopt::protocols::smb2
