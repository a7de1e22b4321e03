// HttpStream: one direction of an HTTP/1.x connection, message by message, as its
// bytes pass a box. Heads are parsed (copied, at most Limits::max_head bytes); bodies
// are handed on as spans of the bytes fed, never copied or held, so a 1 GiB RPC over
// HTTP IN channel streams like any other. The rpch module runs one per direction and
// only observes: the bytes it feeds go on unchanged whatever the stream says.
//
// Requests: every message is a request (RFC 9112: its body is Content-Length or
// chunked, else none). Responses: each answers the oldest request method pushed with
// PushRequestMethod (a HEAD's answer has no body); 1xx interim responses (100
// Continue) answer nothing and have no body; a 101 or a 2xx to CONNECT turns the
// rest of the stream into opaque bytes (tunnel()).
//
// Any error (a head that does not parse, framing the RFC refuses, a chunked coding
// that breaks) ends the walk for good: error() says why and Feed returns false.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/common/http/http.h"

namespace wanopt::protocols::rpch {

class HttpStream {
 public:
  // What the stream finds, in stream order, during Feed and End.
  class Sink {
   public:
    virtual ~Sink() = default;
    virtual void OnHead(const http::Head& head) = 0;
    // The next content bytes of the message whose head came last (chunk data only,
    // without the chunked coding). Valid during the call.
    virtual void OnBody(std::span<const uint8_t> content) = 0;
    // The message (head and body) is complete.
    virtual void OnMessageEnd() = 0;
  };

  explicit HttpStream(bool requests, http::Limits limits = {}) : requests_(requests), limits_(limits) {}

  // Responses only: the next request's method, in the order requests were sent.
  void PushRequestMethod(std::string method);

  // Walks `bytes`, the next bytes of the direction. False once an error was found
  // (now or before); the rest of the stream is then not looked at.
  bool Feed(std::span<const uint8_t> bytes, Sink& sink);
  // The direction ended (FIN): a body delimited by the close ends here. False when
  // the stream was cut inside a head or a delimited body.
  bool End(Sink& sink);

  std::string_view error() const { return error_; }
  bool tunnel() const { return state_ == State::kTunnel; }
  // Between messages, with nothing of the next one seen.
  bool idle() const { return state_ == State::kHead && head_.empty(); }
  uint64_t messages() const { return messages_; }

 private:
  enum class State : uint8_t { kHead, kLength, kChunked, kUntilClose, kTunnel, kFailed };

  // Takes what it can of a head from `bytes`; the bytes after it are left.
  size_t FeedHead(std::span<const uint8_t> bytes, Sink& sink);
  void StartBody(const http::Head& head, Sink& sink);
  void EndMessage(Sink& sink);
  bool Fail(std::string why);

  const bool requests_;
  const http::Limits limits_;
  State state_ = State::kHead;
  std::vector<uint8_t> head_;
  uint64_t remaining_ = 0;  // kLength
  http::ChunkWalker chunks_;
  std::vector<http::ChunkWalker::Piece> pieces_;
  std::deque<std::string> methods_;
  std::string error_;
  uint64_t messages_ = 0;
};

}  // namespace wanopt::protocols::rpch
