// What a box knows about its connections and peers, for the status page, the API,
// the metrics and `wanopt show`.
//
// Each session owns a ConnectionRecord and updates it as it goes (counters are
// atomics, written on the data path; the rest changes a few times per connection
// under the record's mutex). The table keeps records of live connections and, for
// `closed_window`, of closed ones, so that a connection that just failed can still
// be looked at. Readers take snapshots: plain copies, never live references.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "wanopt/channel/policy.h"

namespace wanopt {

using SystemTime = std::chrono::system_clock::time_point;

enum class ConnectionState {
  kConnecting,   // waiting for the peer or the server
  kOptimized,    // relayed over an inner channel
  kPassThrough,  // relayed directly, unoptimized (the reason is in the notes)
  kClosed,       // ended normally
  kReset,        // ended with a reset or failure (the reason is in the notes)
};
const char* StateName(ConnectionState state);

struct PolicyView {
  Policy ours = Policy::kTcpOnly;
  std::optional<Policy> peer;        // unknown until the peer answered
  std::optional<Policy> negotiated;
  std::optional<Policy> applied;
};

// A plain copy of one record.
struct ConnectionSnapshot {
  uint64_t id = 0;
  std::string box;   // the daemon's name
  std::string side;  // "branch" or "datacenter"
  boost::asio::ip::tcp::endpoint client;
  boost::asio::ip::tcp::endpoint server;
  std::string peer_id;       // device id, "" when none
  std::string peer_address;  // "" when none
  std::string application = "TCP";
  PolicyView policy;
  uint64_t lan_in = 0, lan_out = 0, wan_in = 0, wan_out = 0;
  uint64_t chunks_hit = 0, chunks_missed = 0, nacks = 0;
  int lz_level = 0, lz_level_peak = 0;  // zstd level of what this box sends: now, highest; 0: no LZ
  ConnectionState state = ConnectionState::kConnecting;
  SystemTime started;
  std::optional<SystemTime> ended;
  std::vector<std::string> notes;

  uint64_t lan_bytes() const { return lan_in + lan_out; }
  uint64_t wan_bytes() const { return wan_in + wan_out; }
  // 1 - WAN/LAN in percent; 0 for a connection that has not moved bytes or passes through.
  double reduction() const;
};

class ConnectionRecord {
 public:
  ConnectionRecord(uint64_t id, std::string box, std::string side, Policy ours);

  std::atomic<uint64_t> lan_in{0}, lan_out{0}, wan_in{0}, wan_out{0};
  std::atomic<uint64_t> chunks_hit{0}, chunks_missed{0}, nacks{0};  // DRE, both directions
  std::atomic<int> lz_level{0}, lz_level_peak{0};  // the up direction's zstd level now / highest; 0: no LZ

  void SetEndpoints(const boost::asio::ip::tcp::endpoint& client, const boost::asio::ip::tcp::endpoint& server);
  void SetPeer(const std::string& device_id, const std::string& address);
  void SetPolicies(Policy peer, Policy negotiated, Policy applied);
  void SetApplication(std::string_view name);
  void AddNote(std::string_view note);  // at most 16 kept, each cut at 200 bytes
  // Replaces the note that starts with `key`, or adds `note` as AddNote does.
  void SetNote(std::string_view key, std::string_view note);
  void SetState(ConnectionState state);
  // Marks the end; the state becomes kClosed unless it is already kReset.
  void End(bool reset);

  ConnectionSnapshot Snapshot() const;
  bool ended() const;
  std::optional<SystemTime> ended_at() const;
  uint64_t id() const { return id_; }

 private:
  const uint64_t id_;
  mutable std::mutex mu_;
  ConnectionSnapshot data_;  // counters in it are filled in by Snapshot()
};

struct PeerSnapshot {
  std::string device_id;
  std::string address;
  SystemTime last_seen;
  uint64_t connections = 0;  // since start
  uint64_t active = 0;
};

class ConnectionTable {
 public:
  // Closed connections stay visible this long (and at most `max_closed` of them).
  // Reading the table (Connections) prunes it, and so does Add each time the table
  // has doubled since the last prune: with nobody reading the status page (it is off
  // by default) it holds at most about twice the live plus max_closed records.
  explicit ConnectionTable(std::chrono::seconds closed_window = std::chrono::seconds(300), size_t max_closed = 10000);

  std::shared_ptr<ConnectionRecord> Add(std::string box, std::string side, Policy ours);
  // A session saw a peer (hello or hello-ack): counts it in the peers list.
  void PeerSeen(const std::string& device_id, const std::string& address, bool new_connection);
  void PeerConnectionEnded(const std::string& device_id);

  // Live and recently closed connections, oldest first. Prunes expired ones.
  std::vector<ConnectionSnapshot> Connections();
  std::vector<PeerSnapshot> Peers() const;

  // Bytes of connections no longer in the table, by application and by peer: the
  // metrics add them to the live ones so that counters never go backwards.
  struct Totals {
    uint64_t connections = 0, lan_bytes = 0, wan_bytes = 0;
  };
  std::map<std::string, Totals> PrunedByApplication() const;
  std::map<std::string, Totals> PrunedByPeer() const;

 private:
  void Prune(SystemTime now);

  const std::chrono::seconds closed_window_;
  const size_t max_closed_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<ConnectionRecord>> records_;
  std::map<std::string, PeerSnapshot> peers_;
  std::map<std::string, Totals> pruned_by_application_;
  std::map<std::string, Totals> pruned_by_peer_;
  uint64_t next_id_ = 0;
  size_t prune_at_;  // records_ size at which Add prunes
};

}  // namespace wanopt
