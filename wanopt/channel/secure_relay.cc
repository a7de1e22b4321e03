// The relay half of the TLS pump (secure_pump.h): once the handshake succeeded, the
// session's plain bytes go up through TLS to the TCP connection and the peer's come
// down, each direction with its own buffer and a budget per turn of the event loop;
// close_notify carries a half-close, and the ends close the TCP socket and the pipe.
#include <boost/asio/post.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "wanopt/channel/secure_pump.h"
#include "wanopt/channel/tls_internal.h"

namespace wanopt::channel::tls_internal {
namespace {

// What one SSL_write takes from the pipe at most.
constexpr size_t kUpWriteSize = 64 * 1024;
// SSL_read returns at most one record's plaintext: a larger buffer would sit unused.
constexpr size_t kDownBufferSize = 16 * 1024;
// Buffers a direction relays before it yields its event loop to other connections.
constexpr int kRelayBudget = 16;

}  // namespace

// ---- Up: session -> TLS -> TCP. ----

void Pump::Up() {
  for (int budget = kRelayBudget; budget > 0; --budget) {
    if (ended_) return;
    error_code ec;
    // Encrypted straight from the pipe, consumed once OpenSSL took it. A write that
    // had to wait is repeated from the same bytes, as OpenSSL requires: they are
    // still the first in the pipe (which may have moved them: the SSL accepts a
    // moving buffer), and at least as many, as only this consumes them.
    std::span<const uint8_t> bytes = pipe_->PumpPeek(kUpWriteSize, ec);
    if (ec == asio::error::would_block) {
      WaitFor(Waitable::kPipe, tcp::socket::wait_read, [](Pump& p) { p.Up(); });
      return;
    }
    if (ec == asio::error::eof) {
      session_closed_ = pipe_->session_closed();
      SendCloseNotify();
      return;
    }
    if (ec) {  // the session closed its end with bytes from us unread: it reset
      Abort();
      return;
    }
    ERR_clear_error();
    int r = SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()));
    if (r > 0) {
      pipe_->PumpConsume(static_cast<size_t>(r));
      continue;
    }
    int e = SSL_get_error(ssl_, r);
    if (!WaitForTls(e, [](Pump& p) { p.Up(); })) Abort();
    return;
  }
  asio::post(tcp_.get_executor(), [self = shared_from_this()] {
    if (!self->ended_) self->Up();
  });
}

// The session shut down sending or closed its end, after everything it wrote was
// sent: close_notify, then a FIN.
void Pump::SendCloseNotify() {
  ERR_clear_error();
  int r = SSL_shutdown(ssl_);  // 0: sent; 1: sent, and the peer's had come already
  if (r < 0) {
    int e = SSL_get_error(ssl_, r);
    if (!WaitForTls(e, [](Pump& p) { p.SendCloseNotify(); })) Abort();
    return;
  }
  error_code ignored;
  tcp_.shutdown(tcp::socket::shutdown_send, ignored);
  up_ended_ = true;
  if (down_ended_) Finish();
  else if (session_closed_) AwaitPeerCloseNotify();
  else WatchForSessionClose();  // shut down only: relay on
}

// A session that shut down sending may close its end later while the peer stays
// silent: nothing would wake the pump, so it waits for that itself.
void Pump::WatchForSessionClose() {
  pipe_->PumpWaitSessionClosed([self = shared_from_this()](error_code) {
    if (self->ended_) return;
    self->session_closed_ = true;
    self->AwaitPeerCloseNotify();
  });
}

// Closing the TCP socket now would make our kernel answer the peer's close_notify
// with a reset; a reset lost on the way leaves the peer's socket resending its FIN
// for minutes, and on a box that routes what no socket of its own takes, that FIN
// reaches whatever else uses the 4-tuple. So Down keeps reading: the peer's
// close_notify finishes the channel; data the closed session can no longer take
// aborts it (Down's write fails); a peer silent for the timeout gets the reset.
void Pump::AwaitPeerCloseNotify() {
  timer_.expires_after(timeout_);
  timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec && !self->ended_) self->Finish();
  });
}

// ---- Down: TCP -> TLS -> session. ----

void Pump::Down() {
  for (int budget = kRelayBudget; budget > 0; --budget) {
    if (ended_) return;
    if (down_written_ == down_length_) {
      if (!down_buffer_) down_buffer_ = std::make_unique<uint8_t[]>(kDownBufferSize);
      ERR_clear_error();
      int r = SSL_read(ssl_, down_buffer_.get(), static_cast<int>(kDownBufferSize));
      if (r <= 0) {
        int e = SSL_get_error(ssl_, r);
        down_buffer_.reset();
        down_written_ = down_length_ = 0;
        if (WaitForTls(e, [](Pump& p) { p.Down(); })) return;
        if (awaiting_confirmation_) {
          // The peer refused us after all (optimistic mode): the session's bytes
          // went nowhere; it is cut, and the caller learns why.
          std::string why = TakeOpenSslError();
          LateFailure(why.empty() ? "the peer closed the channel without confirming it" : why);
          Abort();
          return;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {  // close_notify: an orderly end
          ERR_clear_error();
          down_ended_ = true;
          pipe_->PumpShutdownSend();
          if (up_ended_) Finish();
          return;
        }
        Abort();  // EOF without close_notify, a TCP error or a TLS error
        return;
      }
      down_written_ = 0;
      down_length_ = static_cast<size_t>(r);
      if (awaiting_confirmation_) {
        if (down_buffer_[0] != kAccepted) {
          LateFailure("peer is not a wanopt box (no confirmation after the handshake)");
          Abort();
          return;
        }
        awaiting_confirmation_ = false;
        KeepTicket();
        down_written_ = 1;  // the confirmation is the pump's, not the session's
        if (down_length_ == 1) continue;
      }
    }
    error_code ec;
    size_t n = pipe_->PumpWrite(down_buffer_.get() + down_written_, down_length_ - down_written_, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      WaitFor(Waitable::kPipe, tcp::socket::wait_write, [](Pump& p) { p.Down(); });
      return;
    }
    if (ec) {  // the session closed its end while we still had bytes for it
      Abort();
      return;
    }
    down_written_ += n;
  }
  asio::post(tcp_.get_executor(), [self = shared_from_this()] {
    if (!self->ended_) self->Down();
  });
}

// ---- Ends. Closing the TCP socket completes its pending waits, closing the pump's
// end of the pipe drops the pipe's, and with the last handler the last reference to
// the pump goes. ----

void Pump::Finish() {
  ended_ = true;
  ERR_clear_error();
  error_code ignored;
  timer_.cancel();
  tcp_.close(ignored);
  if (pipe_) pipe_->PumpClose(/*abort=*/false);
}

// The session's next read is a reset; the peer gets a TCP reset, as it would from a
// box that crashed.
void Pump::Abort() {
  ended_ = true;
  ERR_clear_error();
  error_code ignored;
  timer_.cancel();
  tcp_.set_option(asio::socket_base::linger(true, 0), ignored);
  tcp_.close(ignored);
  if (pipe_) pipe_->PumpClose(/*abort=*/true);
}

void Pump::LateFailure(const std::string& why) {
  ForgetTicket();
  if (!options_.on_late_failure) return;
  auto report = std::move(options_.on_late_failure);
  options_.on_late_failure = nullptr;
  report(why);
}

}  // namespace wanopt::channel::tls_internal
