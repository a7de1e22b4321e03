// Private to wanopt/channel/: the in-process link between a session's PlainStream
// (plain_stream.h) and its TLS pump (secure_pump.h). It replaced an AF_UNIX
// socketpair: the same byte stream each way, half-closes and resets, but no
// descriptors (a TLS channel costs its box one, its TCP socket, not three), no
// system calls and no copies through the kernel.
//
// Two bounded queues: up (session -> pump) and down (pump -> session), kQueueLimit
// each, which is the backpressure a socket buffer gave. A queue's storage exists
// only while it holds bytes, so an idle channel holds none.
//
// The rules are a socket's, each end seeing the other as a peer:
//   - a read returns queued bytes first; then EOF once the writer shut down, a reset
//     once the other end went away abruptly, else would_block;
//   - a write to an end that closed fails (broken_pipe), as does any write after the
//     writer shut down or closed its own end;
//   - the session closing its end with bytes from the pump unread is a reset for the
//     pump (a TCP socket closed with unread data resets);
//   - the pump ending abruptly discards what the session had not read: its next read
//     is a reset.
//
// Waiting: each end registers at most one handler per kind. A handler is never run
// from inside the call that makes it ready: it is posted to the executor, with
// operation_aborted when its own end closed. The pump's handlers are dropped
// unrun once it ended (PumpClose): it checks that itself. When the executor's
// io_context is destroyed, every pipe on it drops its handlers unrun, as the
// context destroys the waits pending on its sockets: a session and its pump that
// wait on each other hold each other (through their handlers) until then.
//
// Threading: both ends on one executor that runs one handler at a time.
// REQUIRES: a pipe does not outlive its executor's io_context.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>

#include "util/buffer.h"

namespace wanopt::channel::tls_internal {

class PipeRegistry;  // plain_pipe.cc

class PlainPipe {
 public:
  using Handler = std::function<void(boost::system::error_code)>;
  // A frame (channel::kMaxFrameSize) fits; under the daemon's mmap threshold, so a
  // queue's storage comes from the allocator's free lists.
  static constexpr size_t kQueueLimit = 128 * 1024;

  explicit PlainPipe(boost::asio::any_io_executor executor);
  ~PlainPipe();
  PlainPipe(const PlainPipe&) = delete;
  PlainPipe& operator=(const PlainPipe&) = delete;

  const boost::asio::any_io_executor& executor() const { return executor_; }

  // ---- The session's end ----
  size_t SessionRead(boost::asio::mutable_buffer into, boost::system::error_code& ec);
  size_t SessionWrite(std::span<const boost::asio::const_buffer> from, boost::system::error_code& ec);
  void SessionWaitReadable(Handler handler);
  void SessionWaitWritable(Handler handler);
  void SessionShutdownSend();
  // Closes the session's end: the pump reads what it wrote, then EOF (or a reset if
  // bytes for the session were left unread). Pending session handlers get
  // operation_aborted. Idempotent.
  void SessionClose();
  bool session_open() const { return !session_closed_; }

  // ---- The pump's end ----
  // The first queued up bytes, at most `max`, left queued (OpenSSL encrypts them in
  // place); valid until the next call on the pipe. None: a reset once the session
  // closed with bytes from the pump unread, EOF once it shut down, else would_block.
  std::span<const uint8_t> PumpPeek(size_t max, boost::system::error_code& ec);
  // Drops the first `n` up bytes: read. REQUIRES: n <= what is queued.
  void PumpConsume(size_t n);
  size_t PumpWrite(const uint8_t* from, size_t size, boost::system::error_code& ec);
  void PumpWaitReadable(Handler handler);
  void PumpWaitWritable(Handler handler);
  // Runs `handler` once the session closed its end (at once, posted, if it has).
  void PumpWaitSessionClosed(Handler handler);
  // The peer's close_notify: the session reads EOF after the bytes before it.
  void PumpShutdownSend();
  // The pump ended: in order (`abort` false: the session still reads what was
  // queued, then EOF) or abruptly. The pump's pending handlers are dropped.
  void PumpClose(bool abort);
  bool session_closed() const { return session_closed_; }

 private:
  friend class PipeRegistry;
  struct Queue {
    Buffer bytes;
    bool writer_done = false;  // shut down or closed: EOF after the bytes
    Handler readable;          // the reading end's waiter
    Handler writable;          // the writing end's waiter
  };

  // Posts `handler` (if set) with `ec`, leaving the slot empty.
  void Post(Handler& handler, boost::system::error_code ec = {});
  // Moves every handler out (the io_context's destruction: PipeRegistry).
  void TakeHandlers(std::vector<Handler>& into);

  // The rules both queues follow, the side that reads `queue` having gone abruptly
  // (`reset`) or at all (`reader_gone`) being the caller's to say.
  static size_t Room(const Queue& queue) {
    return queue.bytes.size() >= kQueueLimit ? 0 : kQueueLimit - queue.bytes.size();
  }
  // What a read of `queue` gets while it holds no bytes: a reset, EOF once its
  // writer is done, else would_block.
  static boost::system::error_code NothingToRead(const Queue& queue, bool reset);
  // A read would not block.
  static bool ReadReady(const Queue& queue, bool reset) { return !queue.bytes.empty() || queue.writer_done || reset; }
  // A write would not block.
  static bool WriteReady(const Queue& queue, bool reader_gone) {
    return Room(queue) > 0 || queue.writer_done || reader_gone;
  }
  // Appends what fits of `from`: broken_pipe once the writer is done or the reader
  // gone, would_block when full.
  static size_t Write(Queue& queue, bool reader_gone, std::span<const boost::asio::const_buffer> from,
                      boost::system::error_code& ec);
  // After the reader took `n` bytes: an empty queue gives its storage back.
  static void Taken(Queue& queue, size_t n);
  // Drops the queued bytes and their storage.
  static void Discard(Queue& queue) {
    queue.bytes.Clear();
    queue.bytes.ShrinkToFit();
  }

  boost::asio::any_io_executor executor_;
  PipeRegistry* registry_;  // the context's pipes
  Queue up_, down_;
  Handler session_closed_waiter_;
  bool session_closed_ = false;
  bool session_reset_pump_ = false;  // the session closed with down bytes unread
  bool pump_closed_ = false;
  bool pump_aborted_ = false;
};

}  // namespace wanopt::channel::tls_internal
