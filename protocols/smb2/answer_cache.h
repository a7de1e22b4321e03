// The branch half of SMB2 read-ahead: keeps the server's answers to the READs its
// datacenter twin predicted (twin.h: kPredicted), and answers the client's READ
// with the one predicted for its MessageId when the client's request is that READ
// byte for byte (but for the credits it asks). Anything else the client sends with
// a predicted MessageId goes on to the server, and every prediction from it on is
// abandoned: its answer, if it comes, is dropped. README.md says why.
//
// Not thread-safe: one per connection, on the connection's thread. The kept answers
// count against a budget shared by the box's connections (an atomic the caller owns).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "protocols/smb2/frame_stream.h"

namespace wanopt::protocols::smb2 {

struct AnswerFigures {
  uint64_t predicted = 0;     // predictions the datacenter announced
  uint64_t served = 0;        // client READs answered here
  uint64_t served_bytes = 0;  // the READ data in those answers
  uint64_t dropped = 0;       // answers to abandoned predictions
};

class AnswerCache {
 public:
  class Sink {
   public:
    virtual ~Sink() = default;
    // A whole answer frame (prefix included) for the client, between two frames of
    // the server-to-client direction.
    virtual void ToClient(std::span<const uint8_t> frame) = 0;
    virtual void ToTwin(std::span<const uint8_t> message) = 0;
  };

  // `box_kept` (may be null) counts the bytes every connection of the box keeps;
  // past `box_limit`, answers not yet asked for are not kept.
  AnswerCache(Sink& sink, std::atomic<uint64_t>* box_kept, uint64_t box_limit);
  ~AnswerCache();  // gives the kept bytes back to the box

  FrameStream::Verdict OnClientFrame(FrameStream::Head head);
  FrameStream::Verdict OnServerFrame(FrameStream::Head head);
  void OnTaken(std::vector<uint8_t> frame);
  void OnTwinMessage(std::span<const uint8_t> message);

  // The dialect the server chose, once seen (0 before).
  uint16_t dialect() const;
  uint64_t kept_bytes() const;
  const AnswerFigures& figures() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace wanopt::protocols::smb2
