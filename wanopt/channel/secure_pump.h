// Private to wanopt/channel/: the pump behind StartSecureChannel (secure_channel.h),
// one per inner channel. Its first half (secure_channel.cc) sets up OpenSSL on the
// TCP socket, runs the handshake and the confirmation byte, judges why a handshake
// failed, and hands the session its end of the plain pipe (plain_pipe.h); its second
// half (secure_relay.cc) relays bytes between that pipe and TLS in both directions
// and ends the channel.
//
// The pump drives OpenSSL itself, on the non-blocking TCP socket, rather than through
// asio::ssl::stream: the stream's async_shutdown sends close_notify and then reads
// the socket until the peer's arrives, racing the relay's own read, so a session's
// half-close could not be passed on while the other direction still flows. Driving
// it directly also saves the stream's extra copy through its BIO pair.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <openssl/ssl.h>

#include "wanopt/channel/plain_pipe.h"
#include "wanopt/channel/secure_channel.h"

namespace wanopt::channel::tls_internal {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using Done = std::function<void(SecureChannelResult, PlainStream)>;

// What the accepting side sends once it has accepted the opening side (see
// secure_channel.h).
constexpr uint8_t kAccepted = 0x57;

// The state of the BIO the pump puts on the TCP socket (secure_channel.cc).
struct SocketBioState {
  int fd = -1;
  int last_errno = 0;  // of the last failed send/recv, for SSL_ERROR_SYSCALL
};

// Owned by the handlers it has pending (shared_from_this): it lives until the last
// one ran (or the pipe dropped it) after its TCP socket and its end of the pipe closed.
class Pump final : public std::enable_shared_from_this<Pump> {
 public:
  Pump(const SecureContext& context, tcp::socket tcp, bool client, std::chrono::milliseconds timeout, Done done,
       SecureChannelOptions options)
      : context_(context),
        tcp_(std::move(tcp)),
        timer_(tcp_.get_executor()),
        client_(client),
        timeout_(timeout),
        done_(std::move(done)),
        options_(std::move(options)) {}

  ~Pump() {
    // However the channel ended, its session stays resumable (in the accepting box's
    // cache): OpenSSL drops one whose connection ended without close_notify, and a
    // reset relayed says nothing about the session's keys.
    if (ssl_ != nullptr) SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl_);
  }

  // Starts the handshake. REQUIRES: called once, on the TCP socket's executor.
  void Start();

 private:
  enum class Waitable { kTcp, kPipe };

  // Calls `next` once `on` (the TCP socket, or the session's pipe) is ready for
  // `what`, unless the pump ended meanwhile.
  template <typename Next>
  void WaitFor(Waitable on, tcp::socket::wait_type what, Next next) {
    auto handler = [self = shared_from_this(), next](error_code ec) {
      if (self->ended_) return;
      // Readiness errors show up again on the next read or write, with their reason.
      (void)ec;
      next(*self);
    };
    if (on == Waitable::kTcp) tcp_.async_wait(what, std::move(handler));
    else if (what == tcp::socket::wait_read) pipe_->PumpWaitReadable(std::move(handler));
    else pipe_->PumpWaitWritable(std::move(handler));
  }

  // For an SSL call that asked to wait: true when it did (then `next` runs later).
  template <typename Next>
  bool WaitForTls(int ssl_error, Next next) {
    if (ssl_error == SSL_ERROR_WANT_READ) WaitFor(Waitable::kTcp, tcp::socket::wait_read, next);
    else if (ssl_error == SSL_ERROR_WANT_WRITE) WaitFor(Waitable::kTcp, tcp::socket::wait_write, next);
    else return false;
    return true;
  }

  // secure_channel.cc: handshake, then the accepting side's confirmation byte.
  void Handshake();
  void SendConfirmation();
  void ReadConfirmation();
  void FailHandshake(int ssl_error);

  // Before `done`: the TCP socket is closed without a reset, so a fatal alert OpenSSL
  // just wrote still reaches the peer and tells it why.
  static constexpr bool kAuthentication = true;

  // Opening side with a resumption key: offers the peer's ticket, if one is held.
  void OfferTicket();
  // Opening side, on the peer's confirmation: the peer sends its ticket just before
  // it, so a full handshake's ticket has come; kept under the resumption key.
  void KeepTicket();
  // The channel failed: the peer's next handshake is a full one.
  void ForgetTicket();

  // Ends the channel before the session got it: `done` learns why.
  void Fail(error_code ec, std::string error, bool authentication = false);
  // The handshake is done: makes the pipe, starts the relay, calls `done`.
  void Succeed();

  // secure_relay.cc: Up (session -> TLS -> TCP), Down (TCP -> TLS -> session), ends.
  void Up();
  // The session shut down sending or closed its end, after everything it wrote was
  // sent: close_notify, then a FIN.
  void SendCloseNotify();
  // A session that shut down sending may close its end later while the peer stays
  // silent: nothing would wake the pump, so it waits for that itself.
  void WatchForSessionClose();
  // The session closed its end and our close_notify is sent: the TCP socket stays
  // open for the peer's, at most `timeout_` (secure_relay.cc says why).
  void AwaitPeerCloseNotify();
  void Down();
  // The ends. Closing the TCP socket completes its pending waits, closing the pump's
  // end of the pipe drops the pipe's, and with the last handler the last reference
  // to the pump goes. Finish: an orderly end.
  void Finish();
  // The session's next read is a reset; the peer gets a TCP reset, as it would from
  // a box that crashed.
  void Abort();
  // Optimistic mode: the peer refused the channel after the session got it.
  void LateFailure(const std::string& why);

  const SecureContext& context_;
  tcp::socket tcp_;
  std::shared_ptr<PlainPipe> pipe_;  // to the session, once relaying
  asio::steady_timer timer_;  // the handshake's timeout, then AwaitPeerCloseNotify's
  const bool client_;
  const std::chrono::milliseconds timeout_;
  Done done_;
  SecureChannelOptions options_;
  bool awaiting_confirmation_ = false;  // optimistic client: the first byte down is the confirmation
  SSL* ssl_ = nullptr;
  SocketBioState bio_;

  bool relaying_ = false;        // the handshake succeeded and `done` was called
  bool ended_ = false;           // sockets closed; pending handlers only return
  bool up_ended_ = false;        // close_notify sent
  bool down_ended_ = false;      // close_notify received
  bool session_closed_ = false;  // the session closed its end (not just shut down)

  std::unique_ptr<uint8_t[]> down_buffer_;
  size_t down_length_ = 0;
  size_t down_written_ = 0;
};

}  // namespace wanopt::channel::tls_internal
