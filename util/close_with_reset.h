// Closes a TCP socket so that the peer gets a reset, never a clean end: what a
// box does to a connection it cannot finish correctly.
#pragma once

#include <boost/asio/ip/tcp.hpp>

namespace wanopt {

inline void CloseWithReset(boost::asio::ip::tcp::socket& socket) {
  if (!socket.is_open()) return;
  boost::system::error_code ignored;
  socket.set_option(boost::asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

}  // namespace wanopt
