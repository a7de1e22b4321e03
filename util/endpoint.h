// How every log line, note and status surface writes a TCP endpoint: 198.18.2.10:80,
// [2001:db8::10]:80.
#pragma once

#include <cstdint>
#include <string>

#include <boost/asio/ip/tcp.hpp>

namespace wanopt {

inline std::string FormatEndpoint(const boost::asio::ip::tcp::endpoint& endpoint) {
  const auto& address = endpoint.address();
  std::string text;
  if (address.is_v6()) text.append("[").append(address.to_string()).append("]");
  else text = address.to_string();
  return text.append(":").append(std::to_string(endpoint.port()));
}

// An IPv4 address as a host-order integer (what packet parsing gives), and a port.
inline std::string FormatEndpoint(uint32_t ipv4, uint16_t port) {
  return FormatEndpoint(boost::asio::ip::tcp::endpoint(boost::asio::ip::address_v4(ipv4), port));
}

}  // namespace wanopt
