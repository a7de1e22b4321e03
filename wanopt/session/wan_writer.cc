#include "wanopt/session/wan_writer.h"

#include <algorithm>


namespace wanopt {

namespace asio = boost::asio;
using channel::FrameHeader;
using channel::FrameType;

void WanWriter::EncodeHeader(Write& write, FrameType type, uint8_t flags, uint16_t stream,
                             std::span<const uint8_t> payload) {
  FrameHeader header{type, flags, stream, static_cast<uint32_t>(payload.size())};
  channel::EncodeFrameHeader(header, payload, write.header);
  write.has_header = true;
}

void WanWriter::QueueData(std::span<const uint8_t> data, After after) {
  if (!framed_) {
    Write write;
    write.borrowed = data;
    write.after = after;
    return Queue(std::move(write));
  }
  // A module may have grown the data past one frame.
  while (!data.empty()) {
    auto part = data.first(std::min(data.size(), channel::kMaxFramePayload));
    data = data.subspan(part.size());
    Write write;
    EncodeHeader(write, FrameType::kData, 0, 0, part);
    write.borrowed = part;
    write.after = data.empty() ? after : After::kNothing;
    Queue(std::move(write));
  }
}

void WanWriter::QueueDataCopy(std::span<const uint8_t> data) {
  while (!data.empty()) {
    size_t size = framed_ ? std::min(data.size(), channel::kMaxFramePayload) : data.size();
    Write write;
    write.owned.assign(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(size));
    data = data.subspan(size);
    if (framed_) EncodeHeader(write, FrameType::kData, 0, 0, write.owned);
    Queue(std::move(write));
  }
}

void WanWriter::QueueEncoded(std::unique_ptr<Buffer> payload, uint8_t flags, After after) {
  Write write;
  write.encoded = std::move(payload);
  EncodeHeader(write, FrameType::kDre, flags, 0, write.encoded->span());
  write.after = after;
  Queue(std::move(write));
}

void WanWriter::QueueControl(FrameType type, uint16_t stream, std::vector<uint8_t> payload) {
  Write write;
  write.owned = std::move(payload);
  EncodeHeader(write, type, 0, stream, write.owned);
  Queue(std::move(write));
}

void WanWriter::QueueUrgent(FrameType type, std::vector<uint8_t> payload) {
  Write write;
  write.owned = std::move(payload);
  EncodeHeader(write, type, 0, 0, write.owned);
  Queue(std::move(write), /*urgent=*/true);
}

void WanWriter::QueueHalfClose() {
  Write write;
  if (framed_) EncodeHeader(write, FrameType::kHalfClose, 0, 0, {});
  write.after = After::kHalfCloseSent;
  Queue(std::move(write));
}

void WanWriter::Queue(Write write, bool urgent) {
  if (urgent) queue_.insert(queue_.begin() + (writing_ ? 1 : 0), std::move(write));
  else queue_.push_back(std::move(write));
  if (!writing_) WriteNext();
}

void WanWriter::WriteNext() {
  if (stopped_ || queue_.empty()) {
    writing_ = false;
    return;
  }
  writing_ = true;
  const Write& write = queue_.front();
  asio::const_buffer payload = write.encoded         ? asio::buffer(write.encoded->data(), write.encoded->size())
                               : !write.owned.empty() ? asio::buffer(write.owned)
                                                      : asio::buffer(write.borrowed.data(), write.borrowed.size());
  std::array<asio::const_buffer, 2> buffers{
      asio::buffer(write.header.data(), write.has_header ? write.header.size() : 0), payload};
  stream_.AsyncWrite(buffers,
                     [this, owner = owner_.lock()](const boost::system::error_code& ec, size_t n) { OnWritten(ec, n); });
}

void WanWriter::OnWritten(const boost::system::error_code& ec, size_t n) {
  if (stopped_) return;
  if (ec) {
    writing_ = false;
    stopped_ = true;
    return events_.OnWanWriteFailed(ec);
  }
  After after = queue_.front().after;
  queue_.pop_front();
  writing_ = false;
  if (after == After::kHalfCloseSent && !framed_) stream_.ShutdownSend();
  events_.OnWanWritten(n, after);
  // The session may have queued (and so started) a write meanwhile, or stopped.
  if (!writing_) WriteNext();
}

}  // namespace wanopt
