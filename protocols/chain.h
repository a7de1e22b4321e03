// The module chain of one connection: the modules a rule enables, in order.
//
// Owned by the connection's session. The session feeds every chunk of LAN-side
// bytes through Process() and hands module frames from the inner channel to
// DeliverPeerMessage(). A module that throws, or holds more than kMaxHeldBytes
// waiting for a whole message, is detached from this connection (logged once) and
// its bytes flow on untouched: a module can never stall or break a connection.
//
// v2 (module.h): bytes that modules emit, hold and release, and their timers. Each
// module has, per direction, a queue of its output not yet passed on (held bytes and
// what waits behind them). Whatever leaves the last module of a direction during
// Process(direction) is part of what Process returns; what leaves it at any other
// time (a timer, a peer message, a release, an answer to the client emitted while
// processing the other direction) goes to Host::ModuleOutput. Bytes are never
// dropped except when the connection closes: a detached module's queues go on in
// order. Memory per module and direction is bounded by kMaxHeldBytes (its held queue
// and its kStopIteration bytes) and kMaxEmitBytes (emitted, not yet reported written).
//
// Threading: one connection's thread, like the modules. Not reentrant: a Host
// method must not call back into the chain (post the call instead).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

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
    // Replaces the note that starts with `key` (or adds it): a figure kept current.
    virtual void SetNote(std::string_view /*key*/, std::string_view note) { AddNote(note); }
    // The box-wide part of the module `name` on this box, or null.
    virtual BoxModule* BoxModuleFor(std::string_view /*name*/) { return nullptr; }
    // ModuleContext::reset_handle() for every module of the connection.
    virtual ModuleContext::ResetHandle ResetHandle() { return {}; }

    // ---- v2; the defaults are a host without it (modules' Emit, Hold and
    // StartTimer then refuse) ----
    // Whether ModuleOutput(direction) may be called now: the host relays and the
    // direction's output is open (not shut down, not closing).
    virtual bool AcceptsModuleOutput(Direction /*direction*/) const { return false; }
    // Bytes that left the chain in `direction` outside Process(direction). The host
    // sends them like the bytes Process returns (on an optimized connection through
    // the codec and the inner channel), after everything Process returned or
    // ModuleOutput gave before for that direction, and starts writing if it was idle.
    // `bytes` is valid during the call only. Called only while
    // AcceptsModuleOutput(direction), and possibly from within Process(other
    // direction): must not call into the chain.
    virtual void ModuleOutput(Direction /*direction*/, std::span<const uint8_t> /*bytes*/) {}
    // The executor of the connection's thread, for modules' timers; nullopt: none.
    // Its io_context must outlive the chain.
    virtual std::optional<boost::asio::any_io_executor> ModuleExecutor() { return std::nullopt; }
  };

  // Per module and direction: the bound on its queue (held bytes and what waits
  // behind them) and, separately, on its kStopIteration bytes.
  static constexpr size_t kMaxHeldBytes = 1 << 20;
  // Per module and direction: bytes emitted since the host last called
  // OutputDrained(direction). One answer to a 1 MiB READ (SMB2's common largest
  // serial read, protocols/smb2) with its headers fits in one Emit.
  static constexpr size_t kMaxEmitBytes = (1 << 20) + (64 << 10);
  // Per module: timers pending at once.
  static constexpr size_t kMaxTimers = 64;
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
  // The host has written out everything it got for `direction` (Process results
  // and ModuleOutput): emit budgets for it start again, and modules refused for the
  // budget get OnOutputDrained. The host calls it when its output queue for the
  // direction empties (a write completed with nothing behind it), at least once
  // after every ModuleOutput; extra calls are harmless. REQUIRES: not from within a
  // Host method (post it).
  void OutputDrained(Direction direction);
  // Calls OnClose once on every module and cancels their timers; later calls do
  // nothing. Bytes still queued are dropped with the connection.
  void Close();

  // Bytes the modules hold or queue now, both directions (for the status page).
  size_t queued_bytes() const;

 private:
  struct Entry;
  struct Timer;
  class Context;
  class OutQueue;

  Entry& At(Direction direction, size_t position);
  void RunOne(Entry& entry, Direction direction, Buffer& data, bool end_stream);
  // Moves bytes along `direction` as far as they go, with `input` entering at the
  // front (may be null). True when a module was called or bytes left the chain.
  bool Pass(Direction direction, Buffer* input);
  // Passes in both directions until nothing moves. `input` enters `direction`.
  void Pump(Direction direction = Direction::kClientToServer, Buffer* input = nullptr);
  void Sink(Direction direction, Buffer& bytes);
  void Detach(Entry& entry, std::string_view why);
  void NotifyDrained(Direction direction);
  // A call into one module from outside a Pump (peer message, timer, drain), then
  // a Pump for what it emitted or released.
  template <class Call>
  void CallModule(Entry& entry, Call call);

  bool Emit(Entry& entry, Direction direction, std::span<const uint8_t> bytes);
  bool Hold(Entry& entry, Direction direction, std::span<const uint8_t> bytes);
  void Release(Entry& entry, Direction direction, size_t n);
  uint64_t StartTimer(Entry& entry, std::chrono::milliseconds delay, std::function<void()> fire);
  bool CancelTimer(Entry& entry, uint64_t id);
  void FireTimer(uint64_t id);
  void CancelTimers(const Entry* entry);  // null: every module's
  // After Emit/Release from outside any chain call: pump now.
  void PumpIfIdle();

  Host& host_;
  std::vector<std::unique_ptr<Entry>> entries_;
  uint32_t peer_slots_ = 0;
  bool closed_ = false;
  bool pumping_ = false;
  bool in_call_ = false;             // a module call made outside a Pump is running
  bool ending_[2] = {false, false};  // end_stream entered the direction
  bool drained_[2] = {false, false};  // OutputDrained arrived during a pump
  Buffer* process_out_[2] = {nullptr, nullptr};  // Process(direction)'s result, while it runs
  Buffer pending_[2];  // output outside Process for a host that does not take it
  std::map<uint64_t, std::unique_ptr<Timer>> timers_;
  uint64_t next_timer_id_ = 0;
  // Timer handlers hold it weakly: one that runs after the chain died does nothing.
  std::shared_ptr<char> alive_ = std::make_shared<char>();
};

}  // namespace wanopt::protocols
