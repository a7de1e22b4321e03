// mapi: the Exchange MAPI/EPM module (Riverbed's "MAPI optimization", WAAS's MAPI
// accelerator). Glue between connections and the parsers in dcerpc.h and epm.h.
//
// On connections to TCP 135 it follows the endpoint mapper. On the branch box, in
// ept_map responses it rewrites the TCP port of the towers for EMSMDB (the MAPI
// store) to `mapi_port` and for NSPI (the address book) to `nspi_port` — plus any
// interface listed in `remap_interfaces`, to `mapi_port` — and remembers
// (server, proxy port) -> real port for `binding_ttl_s`. The client then connects
// to server:7830; the box-wide part (MapiBox) redirects that connection to the real
// port before interception sets it up, so the datacenter box connects to the real
// dynamic port and the client never learns it. The binding's server is the tower's
// IPv4 address where it names one (0.0.0.0: the address asked); over IPv6, the
// address the client asked the endpoint mapper at (a tower carries IPv4 only, and
// a client keeps the address it asked at, taking the port).
//
// Never a broken connection: a PDU that does not parse, a context bound with
// integrity or privacy, NDR64, anything unexpected makes the module stop touching
// that connection (its bytes pass unchanged) with one log line and a note.
//
// Settings ([modules.mapi]):
//   mode = "remap"            remap (default) | "no-remap" (static ports, load
//                             balancers: the client sees real ports, connections to
//                             them are still optimized) | "pass-through" (the
//                             endpoint mapper's connections are left alone)
//   mapi_port = 7830, nspi_port = 7840
//   remap_interfaces = []     more interface UUIDs to remap to mapi_port
//   binding_ttl_s = 7200      how long a remapped port stays valid
//   admission_connections = 10000
//                             at this many MAPI/EPM connections on the box, a new
//                             client's session passes through whole (admission
//                             control); sessions already optimized go on
//   state_file = "/var/lib/wanopt/mapi-bindings"
//                             where the live bindings are kept across restarts
//                             ("" = not kept); binding_store.h
//   fail_open_chain = "WANOPT_MAPI"
//                             the nat chain (deploy/intercept makes it, IPv4 and IPv6)
//                             the box fills with one DNAT rule per live binding,
//                             so a client told 7830 still reaches the server while
//                             the daemon is stopped ("" = none); binding_store.h
//
// Session affinity: every connection of one client to one server (its endpoint
// mapper and its MAPI connections) is either optimized or passed through, never a
// mix: the decision is taken at the session's first connection and kept.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "protocols/common/affinity/affinity.h"
#include "protocols/common/dcerpc/dcerpc.h"
#include "protocols/module.h"

namespace wanopt::protocols::epm {

// The endpoint mapper and MAPI are DCE/RPC: this module speaks in the types of the
// shared DCE/RPC layer (Result, Error, Uuid, Pdu, ContextTable...).
using namespace dcerpc;

struct MapiSettings {
  enum class Mode { kRemap, kNoRemap, kPassThrough };
  Mode mode = Mode::kRemap;
  uint16_t mapi_port = 7830;
  uint16_t nspi_port = 7840;
  std::vector<Uuid> remap_interfaces;
  std::chrono::seconds binding_ttl{7200};
  size_t admission_connections = 10000;
  // Empty here (a box built in code keeps nothing); ParseMapiSettings gives the
  // defaults above.
  std::string state_file;
  std::string fail_open_chain;
};

// Parses [modules.mapi]; nullopt and *error ("key: problem") on a bad setting.
std::optional<MapiSettings> ParseMapiSettings(const ModuleSettings& settings, std::string* error);

// The box-wide part: bindings handed out, session decisions, the connection count.
// Bindings are kept in settings().state_file and mirrored as kernel DNAT rules in
// settings().fail_open_chain. Both are touched only once the box is used (its
// first OnNewFlow, Bind or Load): the config check builds a box too.
class MapiBox final : public BoxModule {
 public:
  using Clock = std::chrono::steady_clock;
  explicit MapiBox(MapiSettings settings) : settings_(std::move(settings)) {}
  // Writes what was asked for before it returns (the last bindings kept).
  ~MapiBox() override;
  const MapiSettings& settings() const { return settings_; }

  FlowAdvice OnNewFlow(const boost::asio::ip::tcp::endpoint& client,
                       const boost::asio::ip::tcp::endpoint& server) override;
  // /metrics (wanopt_module_gauge{module="mapi"}): `connections`, the MAPI/EPM
  // connections admission control counts, against `admission_connections`, its
  // limit; `bindings`, the port bindings live now.
  std::vector<std::pair<std::string, uint64_t>> Gauges() const override;
  // "port_bindings": the live bindings (server, proxy_port, real_port, interface,
  // expires_in_s), by server and proxy port, at most kMaxSavedBindings. Reads the
  // state file first if nothing has (Load).
  std::vector<ModuleTable> Tables() const override;

  struct Binding {
    uint16_t real_port = 0;
    std::string interface;  // "EMSMDB", "NSPI", or the UUID
    Clock::time_point expires;
  };
  using Address = boost::asio::ip::address;
  // Records that clients are told `proxy_port` for `interface` on `server`, whose
  // real port is `real_port`. False when that proxy port on that server already
  // stands for another real port (then nothing changes).
  bool Bind(const Address& server, uint16_t proxy_port, uint16_t real_port, std::string interface);
  std::optional<Binding> Lookup(const Address& server, uint16_t proxy_port) const;
  // The binding whose real port this is, if any: (proxy port, binding).
  std::optional<std::pair<uint16_t, Binding>> FindByRealPort(const Address& server, uint16_t real_port) const;

  // Reads the state file once (later calls do nothing): its unexpired bindings are
  // added, and the kernel rules set to them. A file that does not parse is ignored
  // with one log line. Called by the first OnNewFlow or Bind; public for tests.
  void Load();

  // The state file and the kernel rules are written by a thread of the box's own
  // (started by the first write asked for), never by the caller: writing them runs
  // iptables-nft-restore, tens of ms, which would hold up every connection of the
  // interception thread or the session's loop that asked. Blocks until what was
  // asked before this call is written: for tests.
  void WaitPersisted();

  // MAPI/EPM connections alive on this box (admission control counts them).
  void ConnectionStarted() { ++connections_; }
  void ConnectionEnded() { --connections_; }

 private:
  // Asks the writer thread to Persist (starting it the first time); nothing when
  // neither a state file nor a chain is configured.
  void RequestPersist(bool force = false);
  void WriterLoop();
  using Key = std::pair<Address, uint16_t>;  // (server, proxy port)

  // Writes the state file and the kernel rules when the live bindings differ from
  // what was last written (a new binding, a changed port, one expired) or their
  // expiry moved on by a tenth of the TTL; what failed, again (the kernel rules at
  // most once a minute without a change). Takes persist_mu_, then mu_: call it
  // holding neither. Runs iptables-nft-restore (ip6tables-nft-restore too, once an
  // IPv6 server has a binding) and waits for it when the rules change.
  // The writer thread's.
  void Persist(bool force = false);

  const MapiSettings settings_;
  std::once_flag loaded_;
  std::mutex persist_mu_;                                        // one writer at a time
  std::map<Key, uint16_t> persisted_;                            // guarded by persist_mu_
  Clock::time_point persisted_at_{};                             // guarded by persist_mu_
  bool file_failed_ = false;                                     // guarded by persist_mu_
  // Per family (IPv4, IPv6): set while the last write of its rules failed, to when
  // it is tried again without a change. Guarded by persist_mu_.
  std::optional<Clock::time_point> rules_retry_at_[2];
  std::atomic<Clock::rep> next_expiry_{Clock::time_point::max().time_since_epoch().count()};
  // The writer thread and what it is asked: requests are numbered, `written_` is the
  // last one whose Persist has run.
  std::mutex writer_mu_;
  std::condition_variable writer_cv_;
  std::thread writer_;                          // guarded by writer_mu_
  uint64_t requested_ = 0, written_ = 0;        // guarded by writer_mu_
  bool force_ = false, stopping_ = false;       // guarded by writer_mu_
  mutable std::mutex mu_;
  std::map<Key, Binding> bindings_;
  AffinityTable sessions_;                                        // (client, server)
  std::atomic<size_t> connections_{0};
};

}  // namespace wanopt::protocols::epm
