#include "wanopt/channel/plain_stream.h"

#include <boost/asio/post.hpp>

#include "util/close_with_reset.h"
#include "wanopt/channel/plain_pipe.h"

namespace wanopt::channel {

namespace asio = boost::asio;
using boost::system::error_code;

PlainStream::PlainStream(std::shared_ptr<tls_internal::PlainPipe> pipe)
    : tcp_(pipe->executor()), pipe_(std::move(pipe)) {}

PlainStream::PlainStream(PlainStream&& other) noexcept
    : tcp_(std::move(other.tcp_)), pipe_(std::move(other.pipe_)) {}

PlainStream& PlainStream::operator=(PlainStream&& other) noexcept {
  if (this == &other) return *this;
  if (pipe_) pipe_->SessionClose();
  tcp_ = std::move(other.tcp_);
  pipe_ = std::move(other.pipe_);
  return *this;
}

PlainStream::~PlainStream() {
  if (pipe_) pipe_->SessionClose();
}

bool PlainStream::is_open() const { return pipe_ ? pipe_->session_open() : tcp_.is_open(); }

size_t PlainStream::ReadSome(asio::mutable_buffer into, error_code& ec) {
  if (pipe_) return pipe_->SessionRead(into, ec);
  return tcp_.read_some(into, ec);
}

size_t PlainStream::WriteSome(std::span<const asio::const_buffer> from, error_code& ec) {
  if (pipe_) return pipe_->SessionWrite(from, ec);
  return tcp_.write_some(from, ec);
}

void PlainStream::WaitReadable(WaitHandler handler) {
  if (pipe_) return pipe_->SessionWaitReadable(std::move(handler));
  tcp_.async_wait(asio::ip::tcp::socket::wait_read, std::move(handler));
}

// A write through the pump that had to wait for room: what is left, and for whom.
struct PlainStream::PumpWrite {
  std::shared_ptr<tls_internal::PlainPipe> pipe;
  std::array<asio::const_buffer, 2> from;
  size_t written = 0;
  WriteHandler handler;
};

void PlainStream::AsyncWrite(std::array<asio::const_buffer, 2> from, WriteHandler handler) {
  if (!pipe_) return asio::async_write(tcp_, from, std::move(handler));
  ContinueWrite(std::make_shared<PumpWrite>(PumpWrite{pipe_, from, 0, std::move(handler)}));
}

void PlainStream::ContinueWrite(const std::shared_ptr<PumpWrite>& write) {
  auto finish = [write](error_code ec) {
    asio::post(write->pipe->executor(), [write, ec] { write->handler(ec, write->written); });
  };
  for (;;) {
    std::array<asio::const_buffer, 2> left = write->from;
    size_t skip = write->written;
    for (auto& b : left) {
      size_t cut = std::min(skip, b.size());
      b += cut;
      skip -= cut;
    }
    if (left[0].size() + left[1].size() == 0) return finish({});
    error_code ec;
    size_t n = write->pipe->SessionWrite(left, ec);
    if (ec == asio::error::would_block) {
      write->pipe->SessionWaitWritable([write](error_code ec) {
        if (ec) return write->handler(ec, write->written);  // already posted
        ContinueWrite(write);
      });
      return;
    }
    if (ec) return finish(ec);
    write->written += n;
  }
}

void PlainStream::ShutdownSend() {
  if (pipe_) return pipe_->SessionShutdownSend();
  error_code ignored;
  tcp_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

void PlainStream::Close() {
  if (pipe_) return pipe_->SessionClose();
  error_code ignored;
  tcp_.close(ignored);
}

void PlainStream::CloseWithReset() {
  if (pipe_) return pipe_->SessionClose();
  wanopt::CloseWithReset(tcp_);
}

}  // namespace wanopt::channel
