// The TLS context of a box's [peering]: certificates from the CA, or a pre-shared key
// handed to OpenSSL as a TLS 1.3 external PSK session.
#include "wanopt/channel/secure_channel.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "wanopt/channel/resumption.h"
#include "wanopt/channel/tls_internal.h"

namespace wanopt::channel {

namespace tls_internal {

// The last OpenSSL error on this thread, by its reason; empties the thread's queue.
std::string TakeOpenSslError() {
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  const char* reason = ERR_reason_error_string(code);
  return reason ? reason : "OpenSSL error " + std::to_string(code);
}

std::string CommonName(X509* cert) {
  if (cert == nullptr) return "";
  X509_NAME* name = X509_get_subject_name(cert);
  int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) {
    char line[256];
    return X509_NAME_oneline(name, line, sizeof line) ? line : "";
  }
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index)));
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

}  // namespace tls_internal

namespace {

using tls_internal::CommonName;
using tls_internal::TakeOpenSslError;

// TLS_AES_128_GCM_SHA256, by its IANA code.
constexpr unsigned char kPskCipher[] = {0x13, 0x01};
constexpr unsigned char kPskSessionContext[] = "wanopt-psk";
// A server that verifies its peers resumes only sessions made under its own context.
constexpr unsigned char kCertificateSessionContext[] = "wanopt-peering";
// The accepting side's session cache: one session per peer box that authenticated in
// the last ResumptionCache::kLifetime, a few KiB each; past it the least recently
// used go, and their boxes authenticate in full again.
constexpr long kAcceptedSessions = 4096;

// "what path: reason" when the file cannot be opened, so the error names it even
// when OpenSSL's own message would not.
bool CheckReadable(const char* what, const std::string& path, std::string* error) {
  if (path.empty()) {
    *error = std::string(what) + " is not set";
    return false;
  }
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) {
    *error = std::string(what) + " " + path + ": " + std::strerror(errno);
    return false;
  }
  std::fclose(file);
  return true;
}

// ---- PSK: TLS 1.3 external PSKs are handed to OpenSSL as sessions. ----

const SecureContext& ContextOf(SSL* ssl) {
  return *static_cast<const SecureContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

SSL_SESSION* NewPskSession(SSL* ssl, const SecureContext& context) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskCipher);
  SSL_SESSION* session = SSL_SESSION_new();
  if (cipher == nullptr || session == nullptr ||
      !SSL_SESSION_set1_master_key(session, context.psk().data(), context.psk().size()) ||
      !SSL_SESSION_set_cipher(session, cipher) || !SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION) ||
      !SSL_SESSION_set1_id_context(session, kPskSessionContext, sizeof kPskSessionContext - 1)) {
    SSL_SESSION_free(session);
    return nullptr;
  }
  return session;
}

// Client: offer our identity. OpenSSL owns the returned session.
int UsePsk(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* id_length, SSL_SESSION** session) {
  const SecureContext& context = ContextOf(ssl);
  *session = nullptr;
  *id = nullptr;
  *id_length = 0;
  // After a HelloRetryRequest OpenSSL asks again with the hash it settled on.
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskCipher);
  if (cipher == nullptr || (md != nullptr && md != SSL_CIPHER_get_handshake_digest(cipher))) return 1;
  *session = NewPskSession(ssl, context);
  if (*session == nullptr) return 0;
  *id = reinterpret_cast<const unsigned char*>(context.psk_identity().data());
  *id_length = context.psk_identity().size();
  return 1;
}

// Server: an unknown identity gets no session, so the handshake fails (the server has
// no certificate to fall back on).
int FindPsk(SSL* ssl, const unsigned char* identity, size_t identity_length, SSL_SESSION** session) {
  const SecureContext& context = ContextOf(ssl);
  *session = nullptr;
  const std::string& ours = context.psk_identity();
  if (identity_length != ours.size() || std::memcmp(identity, ours.data(), ours.size()) != 0) return 1;
  *session = NewPskSession(ssl, context);
  return *session != nullptr ? 1 : 0;
}

}  // namespace

SecureContext::~SecureContext() { SSL_CTX_free(ctx_); }

std::unique_ptr<SecureContext> SecureContext::Create(const PeeringSecurity& security, std::string* error) {
  using Mode = PeeringSecurity::Mode;
  ERR_clear_error();
  if (security.mode == Mode::kNone) {
    *error = "peering security is off: there is no TLS context to create";
    return nullptr;
  }
  std::unique_ptr<SecureContext> context(new SecureContext);
  context->mode_ = security.mode;
  SSL_CTX* ctx = context->ctx_ = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) {
    *error = "TLS: " + TakeOpenSslError();
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // Tickets only with certificates (set below): a PSK handshake has no certificate
  // work to save.
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // An idle channel holds no OpenSSL buffers; a busy one reads records in one recv.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_app_data(ctx, context.get());

  if (security.mode == Mode::kCertificate) {
    const std::string& ca = security.ca_file;
    const std::string& cert = security.cert_file;
    const std::string& key = security.key_file;
    if (!CheckReadable("CA file", ca, error) || !CheckReadable("certificate file", cert, error) ||
        !CheckReadable("key file", key, error)) {
      return nullptr;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
      *error = "CA file " + ca + ": no usable CA certificate (" + TakeOpenSslError() + ")";
      return nullptr;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
      *error = "certificate file " + cert + ": no usable certificate (" + TakeOpenSslError() + ")";
      return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
      unsigned long code = ERR_peek_last_error();
      if (ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH) {
        ERR_clear_error();
        *error = "key file " + key + " does not match certificate file " + cert;
      } else {
        *error = "key file " + key + ": no usable private key (" + TakeOpenSslError() + ")";
      }
      return nullptr;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      *error = "key file " + key + " does not match certificate file " + cert;
      return nullptr;
    }
    // Our own certificate must pass the check the peer will make (same CA on both
    // boxes): say so at startup rather than in every peer's log.
    X509* own = SSL_CTX_get0_certificate(ctx);
    STACK_OF(X509)* chain = nullptr;
    SSL_CTX_get0_chain_certs(ctx, &chain);
    X509_STORE_CTX* check = X509_STORE_CTX_new();
    int verified = check && X509_STORE_CTX_init(check, SSL_CTX_get_cert_store(ctx), own, chain) == 1
                       ? X509_verify_cert(check)
                       : -1;
    int verify_error = check ? X509_STORE_CTX_get_error(check) : X509_V_ERR_OUT_OF_MEM;
    X509_STORE_CTX_free(check);
    ERR_clear_error();
    if (verified != 1) {
      *error = "certificate file " + cert + ": not valid under CA file " + ca + " (" +
               X509_verify_cert_error_string(verify_error) + ")";
      return nullptr;
    }
    context->local_name_ = CommonName(own);
    // Both roles demand the other's certificate; the CA vouches for boxes, not for
    // names, so there is no hostname check.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // Every inner channel is a new TCP connection, and a full handshake with
    // certificates was most of a new optimized connection's CPU. The accepting side
    // issues a ticket per full handshake and keeps the session in its own cache (a
    // stateful ticket: decoding a stateless one, the peer's certificate with it, cost
    // a third of a resumed handshake); the opening side keeps the newest ticket per
    // peer (resumption.h says for how long). One ticket serves many connections at
    // once: there is no early data, so nothing to replay.
    context->resumption_ = std::make_unique<tls_internal::ResumptionCache>();
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_ANTI_REPLAY);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, static_cast<long>(tls_internal::ResumptionCache::kLifetime.count()));
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, kAcceptedSessions);
    SSL_CTX_set_session_id_context(ctx, kCertificateSessionContext, sizeof kCertificateSessionContext - 1);
  } else {
    if (security.psk_identity.empty()) {
      *error = "PSK identity is empty";
      return nullptr;
    }
    if (security.psk.size() < kMinPskBytes || security.psk.size() > kMaxPskBytes) {
      *error = "PSK is " + std::to_string(security.psk.size()) + " bytes: it must be " + std::to_string(kMinPskBytes) +
               " to " + std::to_string(kMaxPskBytes);
      return nullptr;
    }
    context->psk_identity_ = context->local_name_ = security.psk_identity;
    context->psk_ = security.psk;
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") != 1) {
      *error = "TLS: " + TakeOpenSslError();
      return nullptr;
    }
    SSL_CTX_set_psk_use_session_callback(ctx, UsePsk);
    SSL_CTX_set_psk_find_session_callback(ctx, FindPsk);
    // A client whose server does not take the PSK gets a certificate it cannot
    // verify (no CA is loaded), so the handshake fails rather than go unauthenticated.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    // OpenSSL takes a PSK for a resumed session, and a server that verifies peers
    // refuses to resume without a session id context (NewPskSession sets the same).
    SSL_CTX_set_session_id_context(ctx, kPskSessionContext, sizeof kPskSessionContext - 1);
  }
  return context;
}

}  // namespace wanopt::channel
