// Private to wanopt/channel/: what the TLS context (secure_context.cc) and the TLS
// pump (secure_channel.cc, secure_relay.cc) share.
#pragma once

#include <string>

#include <openssl/x509.h>

namespace wanopt::channel::tls_internal {

// The last OpenSSL error on this thread, by its reason; empties the thread's queue.
std::string TakeOpenSslError();
// A certificate's subject CN ("" if none): how the status page names a peer.
std::string CommonName(X509* cert);

}  // namespace wanopt::channel::tls_internal
