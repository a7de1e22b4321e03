// One netlink queue (NFQUEUE): the packets the interception rules queue to the
// daemon, and the verdicts it gives them, on one Asio event loop.
//
// A packet stays in the kernel until it gets a verdict, so a verdict may come long
// after the packet did (discovery holds a client's SYN while it probes the path).
// The rules queue with --queue-bypass and the queue fails open when full: without
// this daemon, or with a flooded queue, packets pass as if the box were a router.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <boost/asio/io_context.hpp>

namespace wanopt::intercept {

// Netfilter hooks, as the kernel numbers them.
enum class Hook : uint8_t { kPreRouting = 0, kLocalIn = 1, kForward = 2, kLocalOut = 3, kPostRouting = 4 };

struct QueuedPacket {
  uint32_t id = 0;  // what a verdict names
  Hook hook = Hook::kPreRouting;
  uint32_t mark = 0;
  std::span<const uint8_t> bytes;  // the IP packet; valid only during the callback
};

class NetlinkQueue {
 public:
  using Handler = std::function<void(const QueuedPacket&)>;

  // Binds queue `number` and reads it on `loop`; every packet goes to `handler`,
  // on that loop's thread. nullptr and *error (one line) when the queue cannot be
  // bound (not root, another process holds it).
  static std::unique_ptr<NetlinkQueue> Open(boost::asio::io_context& loop, uint16_t number, Handler handler,
                                            std::string* error);
  virtual ~NetlinkQueue() = default;

  // Verdicts. Call on the loop's thread, once per packet id.
  // Accept lets the packet go on, with `mark` set if given, and with its bytes
  // replaced by `replacement` if non-empty.
  virtual void Accept(uint32_t id, std::optional<uint32_t> mark = std::nullopt,
                      std::span<const uint8_t> replacement = {}) = 0;
  virtual void Drop(uint32_t id) = 0;

  // Stops reading; packets not yet given a verdict are accepted unchanged.
  virtual void Close() = 0;
};

}  // namespace wanopt::intercept
