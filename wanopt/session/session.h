// One relayed TCP connection on one box: the LAN socket (client or server), the
// WAN socket (an inner channel to the peer box, or the server itself when the
// connection passes through), and the module chain between them.
//
// The data path, per direction:
//   LAN -> WAN ("up"):   read LAN socket -> module chain -> frame -> inner channel
//   WAN -> LAN ("down"): inner channel -> check frames -> module chain -> LAN socket
// A branch session's LAN socket is the client's; a datacenter session's is the
// server's. Either way the code below is the same.
//
// Memory is bounded: each direction holds at most one relay buffer (128 KiB) and
// only while bytes are moving; a direction reads again only when its last write
// has completed, so a slow receiver slows the sender through TCP flow control.
//
// A session lives on one event-loop thread; every callback runs there. It keeps
// itself alive (shared_ptr captured by its pending operations) until both sides
// (the LAN socket, the WAN side's PlainStream) are closed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "protocols/registry.h"
#include "wanopt/channel/plain_stream.h"
#include "wanopt/channel/policy.h"
#include "wanopt/config/config.h"
#include "wanopt/session/connection_table.h"
#include "wanopt/session/counters.h"

namespace wanopt {

namespace datastore {
class ChunkStore;
}
namespace dre {
class LzMemoryBudget;
class PeerTable;
}
namespace channel {
class SecureContext;
}

// Everything sessions share with their daemon. Outlives every session.
struct SessionEnvironment {
  const Config& config;
  Counters& counters;
  ConnectionTable& table;
  std::atomic<uint64_t>& next_session_id;
  // DRE: the chunk store (null without [dre] datastore) and what each peering knows.
  datastore::ChunkStore* store = nullptr;
  dre::PeerTable* peers = nullptr;
  uint64_t store_instance = 0;  // identifies this store's contents; changes when wiped
  // What zstd levels above [dre] lz_level may hold, box-wide; null: never adapt.
  dre::LzMemoryBudget* lz_budget = nullptr;
  // What this box's config lets it apply: Config::dre.capability(). Set once at start;
  // what a connection can have now is capability().
  Policy configured_capability = Policy::kLz;
  // [peering]: explicit inner channels (forward rules, the datacenter listener) are
  // TLS when set; null: plaintext, and the status page says so.
  const channel::SecureContext* security = nullptr;
  // The box-wide parts of the protocol modules ([modules.NAME]); null in tests.
  const protocols::BoxModules* box_modules = nullptr;

  // What this box can apply to a connection that starts now (offered in discovery
  // and in hellos, applied in hello-acks): configured_capability, and at most L
  // while the store is degraded (it stores nothing more).
  Policy capability() const;
  // "datastore degraded: <why>: DRE off" when the store failed to open or has
  // degraded, for the notes of connections that would have used it; "" when it
  // works, or none is configured.
  std::string store_trouble() const;
};

// What a branch does with one client connection: built from a forward rule, or by
// the interceptor from an in-path rule and what auto-discovery found.
struct BranchPlan {
  boost::asio::ip::tcp::endpoint destination;                // where the client wanted to go
  std::optional<boost::asio::ip::tcp::endpoint> peer;        // datacenter proxy; none: pass through
  Policy policy = Policy::kFull;
  PeerDownAction peer_down = PeerDownAction::kPassThrough;
  std::vector<std::string> modules;
  // Interception: the connection the box already opened for this client (the
  // discovery probe), owned by the session's loop. With `connected_is_inner` it is
  // the inner channel to the peer that answered (already through TLS when
  // encrypted), and `peer` its remote address; otherwise it is the server itself
  // and the session relays unoptimized.
  std::optional<channel::PlainStream> connected;
  bool connected_is_inner = false;
  std::string peering_key;          // names the DRE peering; "" = by the peer's address
  std::string peer_id;              // the peer's device id, for the status page
  std::string pass_through_reason;  // why this connection is not optimized ("" = no peer)
  // Where a connection straight to the server comes from when the box opens one
  // itself (the peer failed): the client's address where the discovery probe from
  // it was answered (so the replies pass the box). None: this box's own address.
  std::optional<boost::asio::ip::address> source;
  std::vector<std::string> notes;   // for the status page, e.g. how the channel is secured
};

// What a datacenter does with one inner channel.
struct DatacenterPlan {
  // Interception: the server connection the box opened before answering the
  // branch's SYN; the hello must name the same server. None: connect to the
  // hello's destination.
  std::optional<boost::asio::ip::tcp::socket> server;
  // The inner channel's remote address when the socket cannot tell (a TLS pump).
  std::optional<boost::asio::ip::tcp::endpoint> peer_endpoint;
  std::vector<std::string> notes;
};

// Socket options for every inner channel, set before its first byte (before TLS):
// no Nagle, the dead-peer time as TCP_USER_TIMEOUT, [wan] congestion control and
// buffers. Whoever connects or accepts an inner channel calls it (SecureInnerChannel
// does, before TLS); a session never does: its WAN socket may be a TLS channel's
// plaintext end.
void TuneInnerSocket(boost::asio::ip::tcp::socket& socket, const Config& config);

// Takes over `client`, an accepted client connection, and relays it as `plan` says.
// REQUIRES: `client` belongs to the io_context whose thread will run the session.
void StartBranchSession(SessionEnvironment& env, boost::asio::ip::tcp::socket client, BranchPlan plan);

// Takes over `inner`, an accepted inner channel, and serves it as a datacenter proxy.
// REQUIRES: `inner` and `plan.server` belong to the io_context whose thread runs the session.
void StartDatacenterSession(SessionEnvironment& env, channel::PlainStream inner, DatacenterPlan plan = {});

}  // namespace wanopt
