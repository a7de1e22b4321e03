#include "protocols/rpch/http_stream.h"

#include <algorithm>

namespace wanopt::protocols::rpch {

void HttpStream::PushRequestMethod(std::string method) {
  // Bounded: a client pipelining thousands of requests the server never answers is
  // not one the module needs to follow.
  if (methods_.size() >= 64) {
    Fail("more than 64 requests awaiting their answer");
    return;
  }
  methods_.push_back(std::move(method));
}

bool HttpStream::Fail(std::string why) {
  if (state_ != State::kFailed) error_ = std::move(why);
  state_ = State::kFailed;
  head_.clear();
  head_.shrink_to_fit();
  return false;
}

bool HttpStream::Feed(std::span<const uint8_t> bytes, Sink& sink) {
  while (!bytes.empty()) {
    switch (state_) {
      case State::kFailed:
        return false;
      case State::kTunnel:
        return true;
      case State::kHead:
        bytes = bytes.subspan(FeedHead(bytes, sink));
        break;
      case State::kUntilClose:
        sink.OnBody(bytes);
        return true;
      case State::kLength: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, bytes.size()));
        remaining_ -= n;
        sink.OnBody(bytes.first(n));
        bytes = bytes.subspan(n);
        if (remaining_ == 0) EndMessage(sink);
        break;
      }
      case State::kChunked: {
        pieces_.clear();
        auto fed = chunks_.Feed(bytes, pieces_);
        // The data before an error is handed on first: what the sink sees must not
        // depend on how the stream was split.
        for (const auto& piece : pieces_) {
          if (piece.data) sink.OnBody(bytes.subspan(piece.offset, piece.length));
        }
        if (!fed.error.empty()) return Fail("chunked body: " + std::string(fed.error));
        bytes = bytes.subspan(fed.consumed);
        if (fed.done) EndMessage(sink);
        break;
      }
    }
  }
  return state_ != State::kFailed;
}

size_t HttpStream::FeedHead(std::span<const uint8_t> bytes, Sink& sink) {
  size_t before = head_.size();
  size_t take = std::min(bytes.size(), limits_.max_head - before);
  head_.insert(head_.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(take));
  http::HeadParse parsed = http::ParseHead(head_, requests_, limits_);
  if (parsed.kind == http::HeadParse::kMalformed) {
    Fail(std::string(requests_ ? "request" : "response") + " head: " + std::string(parsed.error));
    return bytes.size();
  }
  if (parsed.kind == http::HeadParse::kNeedMore) {
    if (head_.size() >= limits_.max_head) {
      Fail("head longer than " + std::to_string(limits_.max_head) + " bytes");
      return bytes.size();
    }
    return take;
  }
  size_t used = parsed.head.length - before;
  head_.clear();
  StartBody(parsed.head, sink);
  return used;
}

void HttpStream::StartBody(const http::Head& head, Sink& sink) {
  std::string method;
  if (!requests_) {
    if (head.status >= 100 && head.status < 200 && head.status != 101) {
      sink.OnHead(head);  // interim: answers nothing, has no body
      sink.OnMessageEnd();
      return;
    }
    if (!methods_.empty()) {
      method = std::move(methods_.front());
      methods_.pop_front();
    }
  }
  http::Framing framing = http::BodyFraming(head, method);
  if (framing.kind == http::Framing::kMalformed) {
    Fail(std::string(requests_ ? "request" : "response") + " framing: " + std::string(framing.error));
    return;
  }
  sink.OnHead(head);
  bool tunnel = !requests_ && (head.status == 101 || (http::EqualsIgnoreCase(method, "CONNECT") && head.status / 100 == 2));
  if (tunnel) {
    ++messages_;
    state_ = State::kTunnel;
    return;
  }
  switch (framing.kind) {
    case http::Framing::kLength:
      if (framing.length == 0) return EndMessage(sink);
      remaining_ = framing.length;
      state_ = State::kLength;
      return;
    case http::Framing::kChunked:
      chunks_ = http::ChunkWalker{};
      state_ = State::kChunked;
      return;
    case http::Framing::kUntilClose:
      state_ = State::kUntilClose;
      return;
    default:
      return EndMessage(sink);
  }
}

void HttpStream::EndMessage(Sink& sink) {
  ++messages_;
  state_ = State::kHead;
  sink.OnMessageEnd();
}

bool HttpStream::End(Sink& sink) {
  switch (state_) {
    case State::kFailed:
      return false;
    case State::kTunnel:
      return true;
    case State::kUntilClose:
      EndMessage(sink);
      return true;
    case State::kHead:
      if (head_.empty()) return true;
      return Fail("the stream ended inside a head");
    default:
      return Fail("the stream ended inside a body");
  }
}

}  // namespace wanopt::protocols::rpch
