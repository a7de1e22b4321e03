// The module chain of one connection: the modules a rule enables, in order.
//
// Owned by the connection's session. The session feeds every chunk of LAN-side
// bytes through Process() and hands module frames from the inner channel to
// DeliverPeerMessage(). A module that throws, or holds more than kMaxHeldBytes
// waiting for a whole message, is detached from this connection (logged once) and
// its bytes flow on untouched: a module can never stall or break a connection.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "protocols/module.h"

namespace wanopt::protocols {

class ModuleChain {
 public:
  // What the chain needs from its connection.
  class Host {
   public:
    virtual ~Host() = default;
    virtual const ConnectionInfo& connection() const = 0;
    virtual bool SendModuleMessage(uint16_t slot, std::span<const uint8_t> message) = 0;
    virtual void SetApplication(std::string_view name) = 0;
    virtual void AddNote(std::string_view note) = 0;
    // The box-wide part of the module `name` on this box, or null.
    virtual BoxModule* BoxModuleFor(std::string_view /*name*/) { return nullptr; }
  };

  static constexpr size_t kMaxHeldBytes = 1 << 20;
  static constexpr size_t kMaxPeerMessage = 64 * 1024;

  // Instantiates the named modules; slot i is names[i]. Names the registry does not
  // know are skipped (the config is validated against the registry beforehand).
  // `host` must outlive the chain.
  ModuleChain(Host& host, const std::vector<std::string>& names);
  ~ModuleChain();

  bool empty() const { return entries_.empty(); }
  // Slots whose twin runs on the peer (bit i: slot i). Default: none.
  void SetPeerSlots(uint32_t mask) { peer_slots_ = mask; }

  void Start();
  // Runs `data` through the chain; on return `data` holds what goes on (maybe empty).
  void Process(Direction direction, Buffer& data, bool end_stream);
  void DeliverPeerMessage(uint16_t slot, std::span<const uint8_t> message);
  // Calls OnClose once on every module; later calls do nothing.
  void Close();

 private:
  struct Entry;
  class Context;
  bool RunOne(Entry& entry, Direction direction, Buffer& data, bool end_stream);
  void Detach(Entry& entry, std::string_view why);

  Host& host_;
  std::vector<std::unique_ptr<Entry>> entries_;
  uint32_t peer_slots_ = 0;
  bool closed_ = false;
};

}  // namespace wanopt::protocols
