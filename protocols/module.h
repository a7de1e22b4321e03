// The protocol-module interface: how EPM, RPC-over-HTTP, SMB and friends plug into
// a connection without the daemon core knowing any of them.
//
// A module instance lives for one connection on one box. On an optimized connection
// both boxes run an instance of the same module (its "twin"); the twins may talk to
// each other with SendToPeer()/OnPeerMessage(), carried in order with the data on
// the inner channel: a message arrives after every byte that left this box towards
// the peer before the call, and before the `data` of the OnData call it is sent
// from (that leaves when the call returns).
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
//
// Interface v2 (protocols/README.md says why it is shaped so): besides rewriting the
// bytes that pass, a module may Emit bytes of its own in either direction (answer
// the client itself, or ask the server something no client asked), Hold bytes and
// Release them later, and StartTimer. What it emits or holds sits at the module's
// position in the chain: it passes through the modules after it in that direction,
// then leaves through the host's output for that direction, in the order the module
// produced it. State shared by several connections lives in the module's BoxModule
// (protocols/group.h keeps per-client groups there).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// What a module's box-wide part holds, for operators (/api/modules, `wanopt show
// modules`): e.g. the mapi module's port bindings. Column names are [a-z0-9_] (JSON
// keys, text headings); a numeric column's cells are decimal integers (JSON numbers).
struct ModuleTable {
  struct Column {
    std::string name;
    bool numeric = false;
  };
  std::string name;  // [a-z0-9_]: "port_bindings"
  std::vector<Column> columns;
  std::vector<std::vector<std::string>> rows;  // each with one cell per column
};

// The box-wide part of a module: one per daemon, shared by every connection's
// instance (which reaches it with ModuleContext::box()). It holds what outlives a
// connection (bindings learned from one connection, used by the next) and may steer
// new connections before they exist, like a listener filter. Thread-safe: called
// from every event loop of the daemon. State shared by the live connections of one
// client, or of one virtual connection made of several TCP connections (RPC over
// HTTP's IN and OUT channels), is a group kept here: protocols/group.h.
class BoxModule {
 public:
  virtual ~BoxModule() = default;
  // A new connection from `client` to `server` that interception is about to set
  // up. Called for every module with a box part, in registry order; the first
  // advice that passes through wins, a port change applies.
  virtual FlowAdvice OnNewFlow(const boost::asio::ip::tcp::endpoint& client,
                               const boost::asio::ip::tcp::endpoint& server) = 0;
  // Figures of the box-wide part for /metrics, as (name, value) gauges: names of
  // [a-z0-9_] (wanopt_module_gauge{module, name}). Any thread.
  virtual std::vector<std::pair<std::string, uint64_t>> Gauges() const { return {}; }
  // Its state as tables (ModuleTable), at most a few thousand rows. Any thread.
  virtual std::vector<ModuleTable> Tables() const { return {}; }
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
  // Replaces this connection's note that starts with `key` with `note` (which should
  // start with `key` too), or adds it: a figure kept current ("read-ahead: ...").
  virtual void SetNote(std::string_view /*key*/, std::string_view note) { AddNote(note); }
  // This module's box-wide part on this box, or null (a module without one, or a
  // test host).
  virtual BoxModule* box() { return nullptr; }
  // A callable that resets this connection (TCP resets to client and server, on both
  // boxes), with `why` as its note. Unlike everything else here it may be called from
  // any thread and at any time, also after the connection ended (it then does
  // nothing): it is what a group (protocols/group.h) keeps to end the other
  // connections of a virtual connection that lost one. Empty: the host cannot.
  using ResetHandle = std::function<void(std::string why)>;
  virtual ResetHandle reset_handle() { return {}; }

  // ---- v2: bytes of the module's own, and timers ----
  // All of these are called on the connection's thread, from within a call the chain
  // makes into this module (OnNewConnection, OnData, OnPeerMessage, a timer,
  // OnOutputDrained); their effect on other modules happens after that call returns.
  // The defaults are what a host without v2 support offers: nothing.

  // Whether Emit and Hold can succeed in `direction` now: false when the host cannot
  // take bytes outside the flow of relayed bytes (then Emit and Hold return false,
  // they never drop bytes silently), after the direction ended (end_stream passed
  // this module), after OnClose, or once the module is detached.
  virtual bool CanEmit(Direction /*direction*/) const { return false; }

  // Inserts a copy of `bytes` at this module's position in `direction`: after every
  // byte this module passed on, emitted or held in that direction before, and, when
  // called from OnData for the same direction, before the `data` that call returns.
  // They then pass through the modules after this one and leave through the host's
  // output for `direction` (an answer to the client: kServerToClient; a request of
  // the module's own to the server: kClientToServer, whose answer the module then
  // takes out of the server-to-client `data` it sees, so that no client gets it).
  // Returns false, and queues nothing, when !CanEmit(direction) or when the bytes
  // would take this module's emitted-but-not-yet-written bytes in `direction` over
  // ModuleChain::kMaxEmitBytes, or its queue (see Hold) over kMaxHeldBytes +
  // kMaxEmitBytes. After a
  // refusal for the emit budget, OnOutputDrained(direction) follows once, when the
  // host has written that direction's output. REQUIRES: bytes.size() <= kMaxEmitBytes
  // (a larger Emit can never succeed).
  virtual bool Emit(Direction /*direction*/, std::span<const uint8_t> /*bytes*/) { return false; }

  // Queues a copy of `bytes` at this module's position in `direction` without passing
  // it on, until Release. Typical use in OnData: Hold(d, data.span()); data.Clear().
  // While bytes are held, whatever the module passes on or emits in that direction
  // waits behind them, so the direction keeps the module's order. Returns false,
  // and queues nothing, when !CanEmit(direction) or when the queue (held bytes and
  // what waits behind them) would pass ModuleChain::kMaxHeldBytes. A module whose
  // queue passes that bound through the `data` it passes on is detached. Held bytes
  // go on by themselves at the end of the direction (end_stream) and when the module
  // is detached; they are dropped when the connection closes.
  virtual bool Hold(Direction /*direction*/, std::span<const uint8_t> /*bytes*/) { return false; }
  // Bytes held in `direction` and not yet released.
  virtual size_t held(Direction /*direction*/) const { return 0; }
  // Lets the first min(n, held(direction)) held bytes go on, with what waited behind
  // them up to the next held byte.
  virtual void Release(Direction /*direction*/, size_t /*n*/) {}

  // Calls `fire` once, `delay` from now, on the connection's thread. Never after
  // OnClose, after CancelTimer(id), or once the module is detached (a `fire` that
  // throws detaches it). Returns the timer's id (never 0), or 0 when the host has no
  // timers or the module has ModuleChain::kMaxTimers pending.
  virtual uint64_t StartTimer(std::chrono::milliseconds /*delay*/, std::function<void()> /*fire*/) { return 0; }
  // True when the timer was pending: it will not fire. False for an id that already
  // fired, was cancelled, or is not this module's.
  virtual bool CancelTimer(uint64_t /*id*/) { return false; }
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
  // After ModuleContext::Emit(direction, ...) refused for the emit budget: the host
  // wrote out that direction's output, and Emit may succeed again. Once per refusal
  // (several refusals before the drain give one call).
  virtual void OnOutputDrained(Direction /*direction*/) {}
  // The connection ended (closed, reset or failed). No call follows, no timer fires.
  virtual void OnClose() {}
};

}  // namespace wanopt::protocols
