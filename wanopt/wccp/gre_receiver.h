// Where WCCPv2 GRE redirection meets interception. The router wraps each redirected
// packet in GRE (IP protocol 47, type 0x883E with the redirect header, or 0x0800)
// and sends it to this box. The receiver takes those packets from a raw socket,
// unwraps them (gre.h) and writes the inner IPv4 packet, addresses untouched, to a
// TUN device. The kernel then handles it as if the router had routed it here, so
// deploy/intercept's rules, discovery, pass-through and optimization apply
// unchanged. This works in user space because this kind of host may have no ip_gre
// module.
//
// Return: a packet that came in this way and that the box does not take (a SYN the
// interceptor bypasses, a packet of a flow it does not own) is forwarded by the
// kernel, and a policy rule (iif TUN, not TPROXY's mark 0x1 -> table 101: default
// dev TUN) sends it back into the TUN device. The receiver reads it there and
// returns it: wrapped in GRE to the router (set_return_router: the negotiated
// return method is GRE), or else sent out as it is, routed to the router (L2/IP
// return). The box's own packets (intercepted connections) never take that rule.
//
// Linux only; needs CAP_NET_RAW (the raw socket) and CAP_NET_ADMIN (the TUN device).
// Threading: runs on the io_context it is given; counters() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

namespace wanopt::wccp {

class GreReceiver {
 public:
  struct Counters {
    std::atomic<uint64_t> packets{0};     // inner packets handed to the kernel
    std::atomic<uint64_t> bytes{0};       // their bytes
    std::atomic<uint64_t> refused{0};     // GRE that does not parse (gre.h), or not IPv4 inside
    std::atomic<uint64_t> dropped{0};     // the TUN device did not take it (full, down)
    std::atomic<uint64_t> returned_gre{0};     // declined packets returned to the router in GRE
    std::atomic<uint64_t> returned_routed{0};  // ... sent back as they are (L2/IP return)
  };
  static constexpr int kReturnTable = 101;
  static constexpr int kReturnRulePriority = 32000;

  // `tun`: the TUN device's name ("wccp0"); `local`: this box's address (host order):
  // only GRE sent to it is taken.
  GreReceiver(boost::asio::io_context& io, std::string tun, uint32_t local);
  ~GreReceiver();
  // Creates the TUN device (up, reverse-path filter off) and opens the raw socket.
  bool Start(std::string* error);
  void Stop();
  const Counters& counters() const;
  const std::string& tun() const;
  // The router to return declined packets to in GRE; 0: return them routed. Any thread.
  void set_return_router(uint32_t router);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace wanopt::wccp
