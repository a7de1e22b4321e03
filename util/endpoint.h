// How every log line, note and status surface writes a TCP endpoint: 198.18.2.10:80,
// [2001:db8::10]:80; and an address as a parsed packet names it.
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

// An address and a port (what packet parsing gives).
inline std::string FormatEndpoint(const boost::asio::ip::address& address, uint16_t port) {
  return FormatEndpoint(boost::asio::ip::tcp::endpoint(address, port));
}

// The address without its IPv6 scope (interface): a socket's link-local address
// carries one, the same address parsed from a packet does not. What flows are keyed
// by, so that both find the same entry.
inline boost::asio::ip::address Unscoped(boost::asio::ip::address address) {
  if (address.is_v6()) {
    boost::asio::ip::address_v6 v6 = address.to_v6();
    v6.scope_id(0);
    address = v6;
  }
  return address;
}

}  // namespace wanopt
