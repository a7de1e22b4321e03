// What a session reads and writes its WAN side through: the plain bytes of an inner
// channel, or of the server itself when passing through.
//
// Either a TCP socket of the session's own (a plaintext inner channel, the server)
// or the session's end of a TLS pump (secure_channel.h), which encrypts on its own
// TCP socket. A pump's end is in-process (plain_pipe.h): it takes no descriptor and
// no system call, and behaves as a non-blocking socket would, half-closes and resets
// included. The session uses one set of calls for both; what only a TCP socket has
// (connect, options, addresses) it asks of tcp(), before the channel is secured.
//
// Ownership: a PlainStream owns its socket or its end; destroying it closes it.
// Threading: the executor's thread only (like the socket it stands for).
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

namespace wanopt::channel {

namespace tls_internal {
class PlainPipe;
}

class PlainStream {
 public:
  using WaitHandler = std::function<void(boost::system::error_code)>;
  using WriteHandler = std::function<void(boost::system::error_code, size_t)>;

  // A closed TCP socket on `executor`.
  explicit PlainStream(const boost::asio::any_io_executor& executor) : tcp_(executor) {}
  // Takes over a TCP socket (implicit: wherever a socket was handed on, a stream is).
  PlainStream(boost::asio::ip::tcp::socket socket) : tcp_(std::move(socket)) {}  // NOLINT
  // For the TLS pump (secure_channel.cc): the session's end of `pipe`.
  explicit PlainStream(std::shared_ptr<tls_internal::PlainPipe> pipe);
  PlainStream(PlainStream&& other) noexcept;
  PlainStream& operator=(PlainStream&& other) noexcept;
  ~PlainStream();

  // True for a TLS pump's end. Then tcp() is a closed socket: tune the TCP
  // connection, and take its addresses, before securing it.
  bool through_pump() const { return pipe_ != nullptr; }
  boost::asio::ip::tcp::socket& tcp() { return tcp_; }
  const boost::asio::ip::tcp::socket& tcp() const { return tcp_; }
  boost::asio::any_io_executor get_executor() { return tcp_.get_executor(); }
  bool is_open() const;

  // Non-blocking: would_block when nothing can be read (written) now; eof after the
  // other side's half-close. REQUIRES for a TCP socket: it is non-blocking.
  size_t ReadSome(boost::asio::mutable_buffer into, boost::system::error_code& ec);
  size_t WriteSome(std::span<const boost::asio::const_buffer> from, boost::system::error_code& ec);
  // `handler` runs once a read would not block (or the stream failed), never from
  // inside this call; operation_aborted when the stream was closed meanwhile.
  void WaitReadable(WaitHandler handler);
  // Writes all of `from` (kept alive by the caller until `handler` runs, which is
  // never from inside this call), like asio::async_write.
  void AsyncWrite(std::array<boost::asio::const_buffer, 2> from, WriteHandler handler);
  // No more bytes from this side: the other side reads EOF after what was written.
  void ShutdownSend();
  // An orderly close: the other side reads what was written, then EOF. A pump's end
  // closed with bytes for it unread resets the channel.
  void Close();
  // A TCP socket: the other side gets a reset. A pump's end: as Close() (the peer box
  // learns the connection failed from the session's reset frame, or the hello's end).
  void CloseWithReset();

 private:
  struct PumpWrite;
  static void ContinueWrite(const std::shared_ptr<PumpWrite>& write);

  boost::asio::ip::tcp::socket tcp_;
  std::shared_ptr<tls_internal::PlainPipe> pipe_;
};

}  // namespace wanopt::channel
