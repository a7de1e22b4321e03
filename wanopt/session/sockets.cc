// Socket options and addresses for a session's sockets.
#include "wanopt/session/session_impl.h"

#include "util/socket_options.h"
#include "wanopt/intercept/marks.h"

namespace wanopt::session_internal {

channel::HelloStatus StatusFor(const error_code& ec) {
  if (ec == asio::error::connection_refused) return channel::HelloStatus::kRefused;
  if (ec == asio::error::timed_out || ec == asio::error::operation_aborted) {
    return channel::HelloStatus::kTimeout;
  }
  return channel::HelloStatus::kUnreachable;
}

// This box's own address towards `peer` (the source it would use to reach it), for
// the hello-ack: what the branch should call this box. Unspecified if unroutable.
boost::asio::ip::address OwnAddressTowards(const boost::asio::ip::address& peer) {
  // A UDP socket's connect sends no packet: it only asks the routing table.
  tcp::endpoint target(peer, 9);
  int fd = ::socket(peer.is_v4() ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  tcp::endpoint local;
  socklen_t len = static_cast<socklen_t>(local.capacity());
  bool ok = ::connect(fd, target.data(), static_cast<socklen_t>(target.size())) == 0 &&
            ::getsockname(fd, local.data(), &len) == 0;
  ::close(fd);
  if (!ok) return {};
  local.resize(len);
  return local.address();
}

// A relayed client or server connection lingers 0 s until the session ends cleanly
// (ClearAbortiveClose): if the box stops or dies mid-connection, the kernel closes
// the socket with a reset, so the far end never takes a cut stream for a complete
// one. The option is set on the descriptor directly: Asio clears a linger it set itself
// when it destroys the socket (so that a destructor never blocks), which would turn
// a daemon's stop into a clean FIN again.
void SetAbortiveClose(tcp::socket& socket, bool on) {
  if (!socket.is_open()) return;
  ::linger option{on ? 1 : 0, 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_LINGER, &option, sizeof option);
}

void TuneLanSocket(tcp::socket& socket) {
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  SetAbortiveClose(socket, true);
}

// Connects from `source`, not one of this box's addresses (IP_TRANSPARENT): the
// server sees the client. Only where a probe from that address was answered, which
// proves the replies come back through the box. Failing that, the box's own address.
void BindTransparent(tcp::socket& socket, const boost::asio::ip::address& source) {
  int fd = socket.native_handle();
  // Marked as the daemon's own: the rules deliver the server's replies to it.
  if (SetTransparent(fd, source.is_v6()) == 0 && SetSocketMark(fd, intercept::kMarkTransparent) == 0) {
    LeavePortToConnect(fd);
    error_code ec;
    socket.bind(tcp::endpoint(source, 0), ec);
  }
}

// The session ended cleanly: close with the usual FIN and let the kernel finish
// sending what is queued.
void ClearAbortiveClose(tcp::socket& socket) { SetAbortiveClose(socket, false); }

}  // namespace wanopt::session_internal

namespace wanopt {

using session_internal::error_code;
using session_internal::tcp;

// Socket options for every inner channel: small control frames must not wait for
// Nagle; a peer that stops acknowledging is given up after the dead-peer time; the
// configured congestion control (BBR by default: it keeps a long fat WAN full
// despite random loss); buffers of twice the WAN's bandwidth-delay product when the
// config gives it (else the kernel's autotuning).
void TuneInnerSocket(tcp::socket& socket, const Config& config) {
  int fd = socket.native_handle();
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  unsigned timeout_ms = static_cast<unsigned>(config.timeouts.dead_peer.count());
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof timeout_ms);
  const std::string& cc = config.wan.congestion;
  if (!cc.empty() && ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc.data(), static_cast<socklen_t>(cc.size())) != 0) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
      WANOPT_LOG(kWarn, "wan") << "congestion control " << cc << " unavailable (" << std::strerror(errno)
                               << "): inner channels use the kernel's default";
    }
  }
  if (uint64_t bytes = config.wan.buffer_bytes()) {
    int size = static_cast<int>(std::min<uint64_t>(bytes, 1u << 30));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
}

}  // namespace wanopt
