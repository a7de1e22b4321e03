// Mutual TLS 1.3 for inner channels, as a pump.
//
// Sessions read and write their inner channel as a non-blocking stream
// (plain_stream.h), and this kernel has no kTLS. So a pump owns the TCP socket and
// OpenSSL, and the session is given a PlainStream on an in-process pipe to it
// (plain_pipe.h: no descriptor, no system call):
//
//   session <-> [PlainStream | pipe] <-> pump: plain bytes <-> TLS records <-> TCP <-> peer box
//
// Both boxes must prove who they are: certificates signed by the CA the peering
// configures, or a pre-shared key both know. A failed proof fails on both boxes
// before either session sees a byte.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include "wanopt/channel/plain_stream.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace wanopt::channel {

namespace tls_internal {
class ResumptionCache;
}

// What [peering] in the config says (the config parser fills it; this file only
// consumes it).
struct PeeringSecurity {
  enum class Mode { kNone, kCertificate, kPsk };
  Mode mode = Mode::kNone;
  // kCertificate: PEM files. The peer must present a certificate signed by ca_file;
  // cert_file may carry intermediates after the box's own certificate.
  std::string ca_file, cert_file, key_file;
  // kPsk: a TLS 1.3 external PSK (TLS_AES_128_GCM_SHA256, with an ECDHE exchange so
  // a leaked key does not decrypt recorded traffic); both boxes use the same
  // identity and key.
  std::string psk_identity;
  std::vector<uint8_t> psk;  // kMinPskBytes to kMaxPskBytes
};

inline constexpr size_t kMinPskBytes = 16;
inline constexpr size_t kMaxPskBytes = 48;  // OpenSSL keeps an external PSK where a session key goes

// One per daemon: the loaded certificates or key. Immutable after Create; usable
// from every thread at once.
class SecureContext {
 public:
  // Loads and checks the files (own certificate signed by ca_file, key matching it)
  // or the key. On failure returns nullptr and sets *error to one line naming the
  // file and what is wrong with it. Mode kNone is an error: there is nothing to load.
  static std::unique_ptr<SecureContext> Create(const PeeringSecurity& security, std::string* error);

  ~SecureContext();
  SecureContext(const SecureContext&) = delete;
  SecureContext& operator=(const SecureContext&) = delete;

  PeeringSecurity::Mode mode() const { return mode_; }
  // Who this box is to its peers: its certificate's subject CN, or the PSK identity.
  const std::string& local_name() const { return local_name_; }
  const std::string& psk_identity() const { return psk_identity_; }
  const std::vector<uint8_t>& psk() const { return psk_; }

  // For the pump (secure_channel.cc); nothing else needs them.
  ssl_ctx_st* native_handle() const { return ctx_; }
  // Certificates only (nullptr with a PSK, whose handshakes are already cheap).
  tls_internal::ResumptionCache* resumption() const { return resumption_.get(); }

 private:
  SecureContext() = default;

  PeeringSecurity::Mode mode_ = PeeringSecurity::Mode::kNone;
  std::string local_name_;
  std::string psk_identity_;
  std::vector<uint8_t> psk_;
  ssl_ctx_st* ctx_ = nullptr;
  std::unique_ptr<tls_internal::ResumptionCache> resumption_;
};

struct SecureChannelResult {
  boost::system::error_code ec;  // set on failure: handshake failed, timed out, I/O error
  // One line for logs and the status page, e.g. "peer certificate not signed by the
  // configured CA", "PSK mismatch or identity unknown", "handshake timed out".
  std::string error;
  std::string peer_name;  // the peer's certificate subject CN, or the PSK identity
  // The failure was the peer's identity (certificate, PSK, not a wanopt box), not a
  // timeout, a lost connection or a local resource: only this is worth remembering.
  bool authentication_failed = false;
  // Certificates: the handshake resumed a session from a ticket (options.resumption_key)
  // instead of checking certificates again.
  bool resumed = false;
};

// Runs a TLS 1.3 handshake on `tcp` (client: this box opened the connection) with
// mutual authentication: with certificates both sides verify the other's against
// ca_file and a peer without one fails (no hostname check: the CA vouches for boxes,
// not names); with a PSK both must know it. With certificates the accepting side
// issues a TLS 1.3 session ticket, and an opening side that names its peer
// (options.resumption_key) resumes from the newest one it holds for that peer, for
// up to 10 minutes after the full handshake it descends from (resumption.h).
//
// After its handshake the accepting side sends one confirmation byte inside TLS, and
// the opening side reports success only once it has it: in TLS 1.3 the client
// finishes before the server has checked the client's certificate, so without it a
// client the server rejects would hand its session a channel that was never up.
// This costs the opening box one round trip before its first byte.
//
// `done(result, plain)` is called exactly once, on tcp's executor, never from inside
// this call, and within `handshake_timeout`. On success `plain` is the session's end
// of the pump (through_pump()), on the same executor, and the pump keeps itself
// alive, relaying both ways, until both directions have ended. `plain` has no TCP
// socket: tune `tcp`, and take the peer's address from it, before this call. On
// failure `plain` is closed and `tcp` has been closed.
//
// The pump, once running:
//   - relays bytes in order, with backpressure both ways: the pipe queues at most
//     128 KiB each way (none while idle); up, OpenSSL encrypts from the pipe's queue
//     (64 KiB at a time); down, the pump holds one record's buffer (16 KiB; none
//     while idle) and reads the next record only once it went into the pipe.
//   - the session shutting down sending (or closing) its end: the pump sends
//     close_notify and a FIN once everything before it is sent. If the session closed
//     its end, the pump then waits for the peer's close_notify, at most
//     `handshake_timeout`, and closes the TCP socket (closed at once, it would answer
//     the peer's close_notify with a reset); after a shutdown only, it keeps relaying
//     the other direction, until the peer's close_notify or the session closing its
//     end too.
//   - close_notify from the peer: the pump shuts down sending on the session's end
//     (the session reads EOF after the last byte) and keeps relaying the other way.
//   - anything else on the network side (EOF without close_notify, TCP error, TLS
//     error) cuts the session's end (its next read is a reset, its writes fail) and
//     resets the TCP connection; so does the session's end failing (closed with
//     bytes unread, or closed while the pump still had bytes for it), the way a TCP
//     socket closed with unread data resets.
//   - both directions ended: the TCP socket and the pump's end are closed and the
//     pump is destroyed. Once
//     the session has closed its end, the pump waits for the peer to take the bytes
//     it still holds (as the kernel does for a closed TCP socket; the caller's
//     TCP_USER_TIMEOUT bounds that) and for its close_notify (`handshake_timeout`
//     bounds that), no longer.
//
// The executor must run its handlers one at a time (an io_context run by one thread,
// or a strand), like everything else in a session.
// REQUIRES: `context` outlives every handshake started with it (a relaying pump no
// longer uses it).
// The opening side may skip waiting for the confirmation (one round trip) when it
// has reason to expect it, e.g. that peer confirmed recently: `done` is then called
// right after its handshake, the confirmation is checked when it arrives, and if it
// does not (the peer refused our certificate), the session's end is cut and
// `on_late_failure` says why. The accepting side ignores these options.
// Sent by the opening box before its TLS ClientHello on an auto-discovered channel
// (and consumed by the accepting box before its handshake): lets the datacenter
// tell our handshake from a client's own TLS relayed unoptimized, when its answer
// to the probe was stripped on the way back.
inline constexpr std::string_view kTlsPreamble = "WOPT-TLS";

struct SecureChannelOptions {
  bool optimistic = false;
  std::function<void(const std::string& why)> on_late_failure;
  // Opening side, certificates: who the peer is ("peer 02:00:00:00:0d:01"), to offer
  // its newest session ticket and keep the one it sends. Empty: a full handshake,
  // and no ticket kept. A handshake that fails forgets the peer's ticket.
  std::string resumption_key;
};

void StartSecureChannel(const SecureContext& context, boost::asio::ip::tcp::socket tcp, bool client,
                        std::chrono::milliseconds handshake_timeout,
                        std::function<void(SecureChannelResult, PlainStream plain)> done,
                        SecureChannelOptions options = {});

}  // namespace wanopt::channel
