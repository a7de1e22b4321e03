// The handshake half of the TLS pump (secure_pump.h): OpenSSL on the non-blocking TCP
// socket through a BIO of our own, the handshake and the confirmation byte, why a
// handshake failed, and the pipe handed to the session. The relay is
// secure_relay.cc.
#include "wanopt/channel/secure_channel.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "wanopt/channel/resumption.h"
#include "wanopt/channel/secure_pump.h"
#include "wanopt/channel/tls_internal.h"

namespace wanopt::channel {
namespace tls_internal {
namespace {

// ---- A BIO on the TCP socket that never raises SIGPIPE (OpenSSL's uses write()). ----

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

}  // namespace

void Pump::Start() {
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
  // The relay writes from the pipe's queue, which may move its bytes between a
  // write that had to wait and its repetition (secure_relay.cc).
  SSL_set_mode(ssl_, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  client_ ? SSL_set_connect_state(ssl_) : SSL_set_accept_state(ssl_);
  if (client_) OfferTicket();
  timer_.expires_after(timeout_);
  timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec && !self->relaying_) self->Fail(asio::error::timed_out, "handshake timed out");
  });
  Handshake();
}

void Pump::OfferTicket() {
  ResumptionCache* cache = context_.resumption();
  if (cache == nullptr || options_.resumption_key.empty()) return;
  ResumptionCache::Ticket ticket = cache->Find(options_.resumption_key, ResumptionCache::Clock::now());
  if (ticket.session == nullptr) return;
  // Refused only for a session that cannot be resumed: then the handshake is a full one.
  SSL_set_session(ssl_, ticket.session);
  SSL_SESSION_free(ticket.session);
  ERR_clear_error();
}

void Pump::KeepTicket() {
  ResumptionCache* cache = context_.resumption();
  if (!client_ || cache == nullptr || options_.resumption_key.empty() || SSL_session_reused(ssl_)) return;
  const SSL_SESSION* session = SSL_get0_session(ssl_);
  // No ticket came (a peer from before resumption): nothing to keep.
  if (session == nullptr || !SSL_SESSION_is_resumable(session)) return;
  cache->Keep(options_.resumption_key, session, ResumptionCache::Clock::now());
}

void Pump::ForgetTicket() {
  ResumptionCache* cache = context_.resumption();
  if (client_ && cache != nullptr && !options_.resumption_key.empty()) cache->Forget(options_.resumption_key);
}

void Pump::Handshake() {
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
  // The accepting side waits here for the peer's Finished, and sends its ticket once
  // that comes: a resumed session gets none, so that every ticket stands for a
  // certificate check no older than its lifetime (and issuing one was a third of a
  // resumed handshake's CPU).
  if (!client_ && SSL_session_reused(ssl_)) SSL_set_num_tickets(ssl_, 0);
  if (!WaitForTls(e, [](Pump& p) { p.Handshake(); })) FailHandshake(e);
}

void Pump::SendConfirmation() {
  ERR_clear_error();
  int r = SSL_write(ssl_, &kAccepted, 1);
  if (r == 1) {
    Succeed();
    return;
  }
  int e = SSL_get_error(ssl_, r);
  if (!WaitForTls(e, [](Pump& p) { p.SendConfirmation(); })) FailHandshake(e);
}

void Pump::ReadConfirmation() {
  ERR_clear_error();
  uint8_t byte = 0;
  int r = SSL_read(ssl_, &byte, 1);
  if (r == 1) {
    if (byte == kAccepted) {
      KeepTicket();
      Succeed();
    }
    else Fail(asio::error::invalid_argument, "peer is not a wanopt box (no confirmation after the handshake)",
              kAuthentication);
    return;
  }
  int e = SSL_get_error(ssl_, r);
  if (!WaitForTls(e, [](Pump& p) { p.ReadConfirmation(); })) FailHandshake(e);
}

void Pump::FailHandshake(int ssl_error) {
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

void Pump::Fail(error_code ec, std::string error, bool authentication) {
  if (ended_) return;
  ended_ = true;
  ForgetTicket();
  ERR_clear_error();
  timer_.cancel();
  error_code ignored;
  tcp_.close(ignored);
  SecureChannelResult result;
  result.ec = ec;
  result.error = std::move(error);
  result.authentication_failed = authentication;
  Done done = std::move(done_);
  done(std::move(result), PlainStream(tcp_.get_executor()));
}

void Pump::Succeed() {
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
    X509* peer = SSL_get0_peer_certificate(ssl_);
    result.resumed = SSL_session_reused(ssl_) == 1;
    // A resumed session checked the certificate when it began: it may have expired since.
    if (result.resumed && (peer == nullptr || X509_cmp_current_time(X509_get0_notAfter(peer)) <= 0)) {
      Fail(asio::ssl::error::unexpected_result, "peer certificate expired since its session was authenticated",
           kAuthentication);
      return;
    }
    result.peer_name = CommonName(peer);
  }
  pipe_ = std::make_shared<PlainPipe>(tcp_.get_executor());
  relaying_ = true;
  timer_.cancel();
  Done done = std::move(done_);
  Up();
  Down();
  done(std::move(result), PlainStream(pipe_));
}

}  // namespace tls_internal

namespace {

namespace asio = boost::asio;
using tls_internal::Pump;
using tls_internal::tcp;

}  // namespace

void StartSecureChannel(const SecureContext& context, tcp::socket tcp, bool client,
                        std::chrono::milliseconds handshake_timeout,
                        std::function<void(SecureChannelResult, PlainStream plain)> done,
                        SecureChannelOptions options) {
  auto executor = tcp.get_executor();
  auto pump = std::make_shared<Pump>(context, std::move(tcp), client, handshake_timeout, std::move(done),
                                     std::move(options));
  asio::post(executor, [pump] { pump->Start(); });
}

}  // namespace wanopt::channel
