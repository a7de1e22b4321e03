// The pump drives OpenSSL itself, on the non-blocking TCP socket, rather than through
// asio::ssl::stream: the stream's async_shutdown sends close_notify and then reads
// the socket until the peer's arrives, racing the relay's own read, so a session's
// half-close could not be passed on while the other direction still flows. Driving
// it directly also saves the stream's extra copy through its BIO pair.
#include "wanopt/channel/secure_channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "wanopt/channel/tls_internal.h"

namespace wanopt::channel {
namespace {


namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using Done = std::function<void(SecureChannelResult, tcp::socket)>;

constexpr size_t kUpBufferSize = 64 * 1024;
// SSL_read returns at most one record's plaintext: a larger buffer would sit unused.
constexpr size_t kDownBufferSize = 16 * 1024;
// Buffers a direction relays before it yields its event loop to other connections.
constexpr int kRelayBudget = 16;
// The socketpair's kernel buffers: enough that the hop adds no round trips' worth of
// stalls at WAN speeds, small enough to stay a bounded queue.
constexpr int kSocketPairBuffer = 1 << 20;
// What the accepting side sends once it has accepted the opening side (see the header).
constexpr uint8_t kAccepted = 0x57;

using tls_internal::CommonName;
using tls_internal::TakeOpenSslError;

// ---- A BIO on the TCP socket that never raises SIGPIPE (OpenSSL's uses write()). ----

struct SocketBioState {
  int fd = -1;
  int last_errno = 0;  // of the last failed send/recv, for SSL_ERROR_SYSCALL
};

SocketBioState* StateOf(BIO* bio) { return static_cast<SocketBioState*>(BIO_get_data(bio)); }

int BioWrite(BIO* bio, const char* data, int length) {
  BIO_clear_retry_flags(bio);
  SocketBioState* state = StateOf(bio);
  ssize_t n = ::send(state->fd, data, static_cast<size_t>(length), MSG_NOSIGNAL);
  if (n >= 0) return static_cast<int>(n);
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(bio);
  else state->last_errno = errno;
  return -1;
}

int BioRead(BIO* bio, char* data, int length) {
  BIO_clear_retry_flags(bio);
  SocketBioState* state = StateOf(bio);
  ssize_t n = ::recv(state->fd, data, static_cast<size_t>(length), 0);
  if (n >= 0) return static_cast<int>(n);  // 0: EOF
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_read(bio);
  else state->last_errno = errno;
  return -1;
}

long BioControl(BIO*, int command, long, void*) {
  // Writes go straight to the socket: there is never anything to flush.
  return command == BIO_CTRL_FLUSH ? 1 : 0;
}

BIO* NewSocketBio(SocketBioState* state) {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wanopt socket");
    BIO_meth_set_write(m, BioWrite);
    BIO_meth_set_read(m, BioRead);
    BIO_meth_set_ctrl(m, BioControl);
    return m;
  }();
  BIO* bio = BIO_new(method);
  if (bio == nullptr) return nullptr;
  BIO_set_data(bio, state);
  BIO_set_init(bio, 1);
  return bio;
}

// Both socketpair buffers ~1 MiB: SO_*BUFFORCE when privileged, else what
// net.core.{w,r}mem_max allow.
void SizeSocketPairBuffers(int fd) {
  int size = kSocketPairBuffer;
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
}

// True once the session closed its end (rather than only shutting down sending):
// the kernel then reports a hangup on ours.
bool SessionEndClosed(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) != 0;
}

bool IsVerifyChainError(long verify_result) {
  switch (verify_result) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return true;
    default:
      return false;
  }
}

bool IsCertificateAlert(int alert) {
  switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_ACCESS_DENIED:
    case SSL_AD_CERTIFICATE_REQUIRED:
      return true;
    default:
      return false;
  }
}

class Pump final : public std::enable_shared_from_this<Pump> {
 public:
  Pump(const SecureContext& context, tcp::socket tcp, bool client, std::chrono::milliseconds timeout, Done done,
       SecureChannelOptions options)
      : context_(context),
        tcp_(std::move(tcp)),
        plain_(tcp_.get_executor()),
        timer_(tcp_.get_executor()),
        client_(client),
        timeout_(timeout),
        done_(std::move(done)),
        options_(std::move(options)) {}

  ~Pump() { SSL_free(ssl_); }

  void Start() {
    ERR_clear_error();
    error_code ec;
    if (!tcp_.is_open()) {
      Fail(asio::error::bad_descriptor, "TCP socket not open");
      return;
    }
    tcp_.native_non_blocking(true, ec);
    if (ec) {
      Fail(ec, "TCP socket: " + ec.message());
      return;
    }
    ssl_ = SSL_new(context_.native_handle());
    bio_.fd = tcp_.native_handle();
    BIO* bio = ssl_ ? NewSocketBio(&bio_) : nullptr;
    if (bio == nullptr) {
      Fail(asio::error::no_memory, "TLS: " + TakeOpenSslError());
      return;
    }
    SSL_set_bio(ssl_, bio, bio);
    client_ ? SSL_set_connect_state(ssl_) : SSL_set_accept_state(ssl_);
    timer_.expires_after(timeout_);
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec && !self->relaying_) self->Fail(asio::error::timed_out, "handshake timed out");
    });
    Handshake();
  }

 private:
  enum class Socket { kTcp, kPlain };

  // Calls `next` once `socket` is ready for `what`, unless the pump ended meanwhile.
  template <typename Next>
  void WaitFor(Socket socket, tcp::socket::wait_type what, Next next) {
    auto handler = [self = shared_from_this(), next](error_code ec) {
      if (self->ended_) return;
      // Readiness errors show up again on the next read or write, with their reason.
      (void)ec;
      next(*self);
    };
    if (socket == Socket::kTcp) tcp_.async_wait(what, std::move(handler));
    else plain_.async_wait(what, std::move(handler));
  }

  // For an SSL call that asked to wait: true when it did (then `next` runs later).
  template <typename Next>
  bool WaitForTls(int ssl_error, Next next) {
    if (ssl_error == SSL_ERROR_WANT_READ) WaitFor(Socket::kTcp, tcp::socket::wait_read, next);
    else if (ssl_error == SSL_ERROR_WANT_WRITE) WaitFor(Socket::kTcp, tcp::socket::wait_write, next);
    else return false;
    return true;
  }

  // ---- Handshake, then the accepting side's confirmation byte. ----

  void Handshake() {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    if (r == 1) {
      if (!client_) return SendConfirmation();
      if (!options_.optimistic) return ReadConfirmation();
      // The confirmation will come first on the relay: checked there (Down).
      awaiting_confirmation_ = true;
      Succeed();
      return;
    }
    int e = SSL_get_error(ssl_, r);
    if (!WaitForTls(e, [](Pump& p) { p.Handshake(); })) FailHandshake(e);
  }

  void SendConfirmation() {
    ERR_clear_error();
    int r = SSL_write(ssl_, &kAccepted, 1);
    if (r == 1) {
      Succeed();
      return;
    }
    int e = SSL_get_error(ssl_, r);
    if (!WaitForTls(e, [](Pump& p) { p.SendConfirmation(); })) FailHandshake(e);
  }

  void ReadConfirmation() {
    ERR_clear_error();
    uint8_t byte = 0;
    int r = SSL_read(ssl_, &byte, 1);
    if (r == 1) {
      if (byte == kAccepted) Succeed();
      else Fail(asio::error::invalid_argument, "peer is not a wanopt box (no confirmation after the handshake)",
                kAuthentication);
      return;
    }
    int e = SSL_get_error(ssl_, r);
    if (!WaitForTls(e, [](Pump& p) { p.ReadConfirmation(); })) FailHandshake(e);
  }

  void FailHandshake(int ssl_error) {
    bool psk = context_.mode() == PeeringSecurity::Mode::kPsk;
    unsigned long code = ERR_peek_last_error();
    int reason = ERR_GET_REASON(code);
    std::string reason_text = TakeOpenSslError();
    if (ssl_error == SSL_ERROR_ZERO_RETURN) {
      Fail(asio::error::eof, "peer closed the TLS connection during the handshake");
    } else if (ssl_error == SSL_ERROR_SYSCALL && code == 0) {
      if (bio_.last_errno == 0) Fail(asio::error::eof, "connection closed by the peer during the TLS handshake");
      else Fail(error_code(bio_.last_errno, boost::system::system_category()),
                std::string("TLS handshake: ") + std::strerror(bio_.last_errno));
    } else if (ssl_error != SSL_ERROR_SSL && ssl_error != SSL_ERROR_SYSCALL) {
      Fail(asio::ssl::error::unexpected_result, "TLS handshake failed (SSL error " + std::to_string(ssl_error) + ")");
    } else {
      error_code ec(static_cast<int>(code), asio::error::get_ssl_category());
      if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        Fail(asio::error::eof, "connection closed by the peer during the TLS handshake");
      } else if (psk) {
        Fail(ec, "PSK mismatch or identity unknown (" + reason_text + ")", kAuthentication);
      } else if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long verify = SSL_get_verify_result(ssl_);
        Fail(ec,
             IsVerifyChainError(verify) ? "peer certificate not signed by the configured CA"
                                        : std::string("peer certificate rejected: ") + X509_verify_cert_error_string(verify),
             kAuthentication);
      } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        Fail(ec, "peer presented no certificate", kAuthentication);
      } else if (reason > SSL_AD_REASON_OFFSET && IsCertificateAlert(reason - SSL_AD_REASON_OFFSET)) {
        Fail(ec,
             std::string("peer rejected our certificate (") + SSL_alert_desc_string_long(reason - SSL_AD_REASON_OFFSET) +
                 ")",
             kAuthentication);
      } else {
        Fail(ec, "TLS handshake failed: " + reason_text);
      }
    }
  }

  // Before `done`: the TCP socket is closed without a reset, so a fatal alert OpenSSL
  // just wrote still reaches the peer and tells it why.
  static constexpr bool kAuthentication = true;

  void Fail(error_code ec, std::string error, bool authentication = false) {
    if (ended_) return;
    ended_ = true;
    ERR_clear_error();
    timer_.cancel();
    error_code ignored;
    tcp_.close(ignored);
    SecureChannelResult result;
    result.ec = ec;
    result.error = std::move(error);
    result.authentication_failed = authentication;
    Done done = std::move(done_);
    done(std::move(result), tcp::socket(tcp_.get_executor()));
  }

  void Succeed() {
    SecureChannelResult result;
    if (context_.mode() == PeeringSecurity::Mode::kPsk) {
      // Defence in depth: the only way through without a certificate is the PSK.
      if (!SSL_session_reused(ssl_)) {
        Fail(asio::ssl::error::unexpected_result, "PSK mismatch or identity unknown (the peer did not use it)",
             kAuthentication);
        return;
      }
      result.peer_name = context_.psk_identity();
    } else {
      result.peer_name = CommonName(SSL_get0_peer_certificate(ssl_));
    }
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      int error = errno;
      Fail(error_code(error, boost::system::system_category()), std::string("socketpair: ") + std::strerror(error));
      return;
    }
    SizeSocketPairBuffers(fds[0]);
    SizeSocketPairBuffers(fds[1]);
    tcp::socket session(tcp_.get_executor());
    error_code ec;
    // Asio does not check the family: the session reads and writes it like the TCP
    // socket it used to get.
    session.assign(tcp::v4(), fds[0], ec);
    if (!ec) plain_.assign(asio::local::stream_protocol(), fds[1], ec);
    if (!ec) plain_.non_blocking(true, ec);
    if (ec) {
      if (!session.is_open()) ::close(fds[0]);
      if (!plain_.is_open()) ::close(fds[1]);
      Fail(ec, "socketpair: " + ec.message());
      return;
    }
    relaying_ = true;
    timer_.cancel();
    Done done = std::move(done_);
    Up();
    Down();
    done(std::move(result), std::move(session));
  }

  // ---- Up: session -> TLS -> TCP. ----

  void Up() {
    for (int budget = kRelayBudget; budget > 0; --budget) {
      if (ended_) return;
      if (up_sent_ == up_length_) {
        if (!up_buffer_) up_buffer_ = std::make_unique<uint8_t[]>(kUpBufferSize);
        error_code ec;
        size_t n = plain_.read_some(asio::buffer(up_buffer_.get(), kUpBufferSize), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
          up_buffer_.reset();  // idle: hold no buffer
          up_sent_ = up_length_ = 0;
          WaitFor(Socket::kPlain, tcp::socket::wait_read, [](Pump& p) { p.Up(); });
          return;
        }
        if (ec == asio::error::eof) {
          up_buffer_.reset();
          up_sent_ = up_length_ = 0;
          session_closed_ = SessionEndClosed(plain_.native_handle());
          SendCloseNotify();
          return;
        }
        if (ec) {  // the session closed its end with bytes from us unread: it reset
          Abort();
          return;
        }
        up_sent_ = 0;
        up_length_ = n;
      }
      ERR_clear_error();
      // A write that had to wait is repeated with the same arguments, as OpenSSL requires.
      int r = SSL_write(ssl_, up_buffer_.get() + up_sent_, static_cast<int>(up_length_ - up_sent_));
      if (r > 0) {
        up_sent_ += static_cast<size_t>(r);
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
  void SendCloseNotify() {
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
    // Closed: nobody will read what the peer still sends. Shut down only: relay on.
    if (session_closed_ || down_ended_) Finish();
    else WatchForSessionClose();
  }

  // A session that shut down sending may close its end later while the peer stays
  // silent: nothing would wake the pump, so it waits for the hangup itself. Asio
  // completes an error wait on a hangup; anything else is checked and waited again.
  void WatchForSessionClose() {
    plain_.async_wait(tcp::socket::wait_error, [self = shared_from_this()](error_code ec) {
      if (self->ended_ || ec) return;
      if (SessionEndClosed(self->plain_.native_handle())) self->Finish();
      else self->WatchForSessionClose();
    });
  }

  // ---- Down: TCP -> TLS -> session. ----

  void Down() {
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
            error_code ignored;
            plain_.shutdown(tcp::socket::shutdown_send, ignored);
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
          down_written_ = 1;  // the confirmation is the pump's, not the session's
          if (down_length_ == 1) continue;
        }
      }
      error_code ec;
      size_t n = plain_.write_some(
          asio::buffer(down_buffer_.get() + down_written_, down_length_ - down_written_), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        WaitFor(Socket::kPlain, tcp::socket::wait_write, [](Pump& p) { p.Down(); });
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

  // ---- Ends. Closing both sockets completes every pending wait, and with the last
  // handler the last reference to the pump goes. ----

  void Finish() {
    ended_ = true;
    ERR_clear_error();
    error_code ignored;
    tcp_.close(ignored);
    plain_.close(ignored);
  }

  // The session gets EOF (or a reset, if it had written bytes the pump never read);
  // the peer gets a TCP reset, as it would from a box that crashed.
  void Abort() {
    ended_ = true;
    ERR_clear_error();
    error_code ignored;
    tcp_.set_option(asio::socket_base::linger(true, 0), ignored);
    tcp_.close(ignored);
    plain_.close(ignored);
  }

  void LateFailure(const std::string& why) {
    if (!options_.on_late_failure) return;
    auto report = std::move(options_.on_late_failure);
    options_.on_late_failure = nullptr;
    report(why);
  }

  const SecureContext& context_;
  tcp::socket tcp_;
  asio::local::stream_protocol::socket plain_;  // the pump's end of the socketpair
  asio::steady_timer timer_;
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

  std::unique_ptr<uint8_t[]> up_buffer_;
  size_t up_length_ = 0;
  size_t up_sent_ = 0;
  std::unique_ptr<uint8_t[]> down_buffer_;
  size_t down_length_ = 0;
  size_t down_written_ = 0;
};

}  // namespace

void StartSecureChannel(const SecureContext& context, tcp::socket tcp, bool client,
                        std::chrono::milliseconds handshake_timeout,
                        std::function<void(SecureChannelResult, tcp::socket plain)> done,
                        SecureChannelOptions options) {
  auto executor = tcp.get_executor();
  auto pump = std::make_shared<Pump>(context, std::move(tcp), client, handshake_timeout, std::move(done),
                                     std::move(options));
  asio::post(executor, [pump] { pump->Start(); });
}

}  // namespace wanopt::channel
