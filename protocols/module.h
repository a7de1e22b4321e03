// The protocol-module interface: how EPM, RPC-over-HTTP, SMB and friends plug into
// a connection without the daemon core knowing any of them.
//
// A module instance lives for one connection on one box. On an optimized connection
// both boxes run an instance of the same module (its "twin"); the twins may talk to
// each other with SendToPeer()/OnPeerMessage(), carried in order with the data on
// the inner channel.
//
// Data flows through modules as it crosses the box, in both directions:
//   branch:     client socket -> modules -> inner channel    (client-to-server)
//               inner channel -> modules -> client socket    (server-to-client)
//   datacenter: inner channel -> modules -> server socket    (client-to-server)
//               server socket -> modules -> inner channel    (server-to-client)
// Client-to-server data visits the modules in configured order, server-to-client
// data in reverse order (like Envoy's read and write filters).
//
// Threading: every call for one connection comes from the same thread, never
// concurrently. A module must not block and must bound its own memory.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <boost/asio/ip/tcp.hpp>

#include "util/buffer.h"

namespace wanopt::protocols {

enum class Side { kBranch, kDatacenter };
enum class Direction { kClientToServer, kServerToClient };

enum class FilterStatus {
  // Pass `data` (possibly rewritten) on to the next module and then the socket.
  kContinue,
  // Not enough bytes to decide yet (half a PDU): the chain keeps `data` and calls
  // again with the next bytes appended. Later modules see nothing of it until the
  // module returns kContinue. Not allowed with end_stream (treated as kContinue).
  kStopIteration,
};

struct ConnectionInfo {
  uint64_t id = 0;
  Side side = Side::kBranch;
  boost::asio::ip::tcp::endpoint client;
  boost::asio::ip::tcp::endpoint server;
};

// A module's settings from the config ([modules.NAME]): key -> value as text
// (numbers and booleans as written, arrays of strings joined with ',').
using ModuleSettings = std::map<std::string, std::string>;

// What the box-wide part of a module says about a new intercepted connection,
// before the box sets it up (see BoxModule::OnNewFlow).
struct FlowAdvice {
  bool pass_through = false;        // leave the connection alone (routed, not proxied)
  std::string reason;               // why, for the status page
  std::optional<uint16_t> port;     // set up the connection to this server port instead
};

// The box-wide part of a module: one per daemon, shared by every connection's
// instance (which reaches it with ModuleContext::box()). It holds what outlives a
// connection (bindings learned from one connection, used by the next) and may steer
// new connections before they exist, like a listener filter. Thread-safe: called
// from every event loop of the daemon.
class BoxModule {
 public:
  virtual ~BoxModule() = default;
  // A new connection from `client` to `server` that interception is about to set
  // up. Called for every module with a box part, in registry order; the first
  // advice that passes through wins, a port change applies.
  virtual FlowAdvice OnNewFlow(const boost::asio::ip::tcp::endpoint& client,
                               const boost::asio::ip::tcp::endpoint& server) = 0;
};

// What a module may ask of its connection. Owned by the connection; valid from
// OnNewConnection until OnClose returns.
class ModuleContext {
 public:
  virtual ~ModuleContext() = default;
  virtual const ConnectionInfo& connection() const = 0;
  // Queues `message` (at most 64 KiB) for this module's twin on the peer box.
  // Returns false when there is no twin: pass-through connection, or the peer does
  // not run this module.
  virtual bool SendToPeer(std::span<const uint8_t> message) = 0;
  // Names the application for the status page ("EPM", "MAPI", "SMB", ...).
  virtual void SetApplication(std::string_view name) = 0;
  // Adds a one-line note for the status page ("SMB signed: read-ahead off").
  virtual void AddNote(std::string_view note) = 0;
  // This module's box-wide part on this box, or null (a module without one, or a
  // test host).
  virtual BoxModule* box() { return nullptr; }
};

class Module {
 public:
  virtual ~Module() = default;
  virtual void OnNewConnection(ModuleContext& context) = 0;
  // `data` holds the next bytes of `direction` (possibly empty when end_stream is
  // true: the sender half-closed). The module may rewrite, grow or shrink it.
  virtual FilterStatus OnData(Direction direction, Buffer& data, bool end_stream) = 0;
  // A message from the twin on the peer box.
  virtual void OnPeerMessage(std::span<const uint8_t> /*message*/) {}
  // The connection ended (closed, reset or failed). No call follows.
  virtual void OnClose() {}
};

}  // namespace wanopt::protocols
