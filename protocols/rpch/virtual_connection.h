// The rpch module's box-wide part: RPC over HTTP v2 virtual connections, each made
// of an IN channel and an OUT channel (two TCP connections, two HTTP requests) and,
// after recycling, of their successors; the session affinity and admission control
// of the connections that carry them.
//
// Both boxes pair channels on their own, from the cookies in the RTS PDUs they see
// (CONN/A1 on the OUT channel, CONN/B1 on the IN channel, IN_R1/A1, OUT_R1/A3 and
// their R2 forms when a channel is recycled); the twins need not talk.
//
// What a virtual connection guarantees (the seeds' "both channels or neither"):
//  - a channel whose connection is reset or fails, and that no successor replaced,
//    takes the virtual connection's other live channels down with it (reset): a
//    client is never left with an IN channel whose OUT channel is gone;
//  - a channel that finds no live channel of the other kind within the pairing
//    timeout is reset (its partner went another way: passed through, or through
//    another peer pair);
//  - OnNewFlow keeps every connection of one client to one RPC proxy on the same
//    path (session affinity), so admission control never splits a virtual
//    connection.
//
// Threading: thread-safe (connections run on several event loops). A
// VirtualConnection keeps ResetHandles, never a ModuleContext.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "protocols/common/affinity/affinity.h"
#include "protocols/common/dcerpc/dcerpc.h"
#include "protocols/group.h"
#include "protocols/module.h"

namespace wanopt::protocols::rpch {

using dcerpc::Uuid;

enum class ChannelType : uint8_t { kIn, kOut };
std::string_view ChannelName(ChannelType type);  // "IN", "OUT"

class VirtualConnection {
 public:
  explicit VirtualConnection(const Uuid& cookie) : cookie_(cookie) {}
  const Uuid& cookie() const { return cookie_; }

  // A channel announced itself on connection `connection`. `predecessor`: the cookie
  // of the channel it replaces (recycling), which is then no longer needed.
  void Join(uint64_t connection, ChannelType type, const Uuid& channel, std::optional<Uuid> predecessor,
            ModuleContext::ResetHandle reset);

  // The channel on `connection` ended. `clean`: its connection closed in order (both
  // directions ended). Returns the resets to call (outside any lock) when the
  // virtual connection lost that channel for good, with *why set for their notes.
  std::vector<ModuleContext::ResetHandle> Leave(uint64_t connection, bool clean, std::string* why);

  // Whether a channel of the other kind joined this virtual connection on this box
  // since `connection`'s channel did (live or already ended: a short session may be
  // over before the pairing timeout).
  bool Paired(uint64_t connection) const;

  // What the IN channel learned from its binds: the application for the status
  // page ("MAPI-OA", ...) and the interfaces bound.
  void SetBinding(std::string application, std::set<std::string> interfaces);

  struct Snapshot {
    uint64_t version = 0;       // changes whenever anything below does
    std::string application;    // empty until a bind was seen
    std::string channels;       // "IN #3, OUT #4; bound: EMSMDB; recycled 1x (IN #1 -> #3)"
    uint32_t recycles = 0;
  };
  Snapshot snapshot() const;
  // The status page's note: "virtual connection {..}: " and the snapshot's channels.
  std::string Describe(const Snapshot& s) const {
    return "virtual connection " + cookie_.ToString() + ": " + s.channels;
  }

 private:
  struct Channel {
    uint64_t connection = 0;
    ChannelType type = ChannelType::kIn;
    Uuid cookie;
    bool live = true;
    bool replaced = false;
    ModuleContext::ResetHandle reset;
  };
  std::string ChannelsLocked() const;

  const Uuid cookie_;
  mutable std::mutex mu_;
  std::vector<Channel> channels_;  // bounded: see Join
  std::vector<std::string> recycles_;  // "IN #1 -> #3", the last few
  uint32_t recycle_count_ = 0;
  std::string application_;
  std::set<std::string> interfaces_;
  uint64_t version_ = 0;
};

struct RpchSettings {
  std::set<uint16_t> ports{80, 443};      // RPC proxies: affinity, admission, the HTTPS note
  size_t admission_channels = 10000;      // at this many channels, new sessions pass through
  std::chrono::milliseconds pairing_timeout{30000};
  std::chrono::seconds affinity_ttl{600};
};
// Parses [modules.rpch]; nullopt and *error ("key: problem") on a bad setting.
std::optional<RpchSettings> ParseRpchSettings(const ModuleSettings& settings, std::string* error);

class RpchBox final : public BoxModule {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RpchBox(RpchSettings settings) : settings_(std::move(settings)) {}
  const RpchSettings& settings() const { return settings_; }

  FlowAdvice OnNewFlow(const boost::asio::ip::tcp::endpoint& client,
                       const boost::asio::ip::tcp::endpoint& server) override;
  std::vector<std::pair<std::string, uint64_t>> Gauges() const override;
  // "virtual_connections": each live one's cookie, application, channels (IN and OUT
  // connection ids, interfaces bound, recycles as the status page's note says) and
  // recycle count; at most 4096.
  std::vector<ModuleTable> Tables() const override;

  std::shared_ptr<VirtualConnection> Join(const Uuid& cookie) {
    return virtual_connections_.Join(cookie, [&] { return std::make_unique<VirtualConnection>(cookie); });
  }

  // Counters the connections keep.
  std::atomic<uint64_t> channels{0};        // RPC over HTTP channels alive (admission counts them)
  std::atomic<uint64_t> mapi_http{0};       // MAPI over HTTP connections alive
  std::atomic<uint64_t> recycles{0};        // channels that replaced another, since start
  std::atomic<uint64_t> partner_resets{0};  // channels reset because their partner was
  std::atomic<uint64_t> pairing_resets{0};  // channels reset for finding no partner

 private:
  const RpchSettings settings_;
  Groups<Uuid, VirtualConnection> virtual_connections_;
  mutable std::mutex mu_;
  AffinityTable sessions_;  // (client, server), guarded by mu_
};

}  // namespace wanopt::protocols::rpch
