// The socket options of a transparent proxy's sockets, on a raw descriptor. Each
// returns 0 or the errno of the failed setsockopt.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>

namespace wanopt {

// Lets `fd` bind to an address that is not this host's (IP_TRANSPARENT, or
// IPV6_TRANSPARENT when `v6`): a listener that takes TPROXYed connections, a
// connection made from a client's address.
inline int SetTransparent(int fd, bool v6) {
  int one = 1;
  int r = v6 ? ::setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one)
             : ::setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
  return r == 0 ? 0 : errno;
}

// Marks what `fd` sends (SO_MARK); netfilter rules match the mark, and read it off
// the socket for the packets it receives.
inline int SetSocketMark(int fd, uint32_t mark) {
  return ::setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) == 0 ? 0 : errno;
}

// Leaves the source port of a later bind to port 0 to the connect, which needs it
// unique only for the four addresses and ports (IP_BIND_ADDRESS_NO_PORT, IPv6
// sockets too). A bind to port 0 picks one that no socket of the address holds,
// TIME_WAIT ones included, scanning for it: once a client's address had some 27,000
// probes in TIME_WAIT (half the port range, as bind prefers even ports), each probe
// cost the box 4 ms of CPU and new connections fell from 2,700/s to 130/s.
inline int LeavePortToConnect(int fd) {
  int one = 1;
  return ::setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) == 0 ? 0 : errno;
}

}  // namespace wanopt
