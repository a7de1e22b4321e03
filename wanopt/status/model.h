// What the status surfaces render from (internal to wanopt/status): one consistent
// read of every box (the Model), the escaping every string from the network goes
// through, the formatting the views share, and the connection filter and sort.
//
// The renderers (render.h) take a Model and never touch a Daemon's live state
// except through the Daemon's thread-safe readers.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "datastore/chunk_store.h"
#include "wanopt/session/connection_table.h"
#include "wanopt/wccp/service_group.h"
#include "util/url.h"

namespace wanopt {
class Daemon;
struct Config;
}

namespace wanopt::status {

using Clock = std::chrono::system_clock;

// ---- Escaping ----
// Control characters other than tab become U+FFFD; `keep_newlines` keeps '\n' too,
// for text shown as it is in a <pre> block (our own multi-line views).
std::string HtmlEscape(std::string_view text, bool keep_newlines = false);
std::string PromLabel(std::string_view text);
std::string UrlDecode(std::string_view text);
std::map<std::string, std::string> ParseQuery(std::string_view target);

// ---- Formatting ----
std::string FormatEndpoint(const boost::asio::ip::tcp::endpoint& e);
std::string Iso8601(Clock::time_point t);
std::string Bytes(uint64_t n);
std::string Percent(double p);
// "42s", "3m07s", "2h05m", "3d04h": how long from `since` to `now`.
std::string Age(Clock::time_point since, Clock::time_point now);
std::string PolicyText(const std::optional<Policy>& p);
std::string PolicyQuad(const PolicyView& p);
// "12 (peak 15)", "3", or "-" without LZ: the zstd level of what a box sends.
std::string LzLevelText(int level, int peak);
double Reduction(uint64_t lan, uint64_t wan);
std::string Pad(std::string s, size_t width);

// ---- The model ----

struct HistorySample {
  Clock::time_point at;
  uint64_t lan_bytes = 0;
  uint64_t wan_bytes = 0;
};

struct AppSummary {
  uint64_t connections = 0, active = 0, lan = 0, wan = 0;
};

struct Model {
  Clock::time_point now;
  std::vector<const Daemon*> boxes;
  std::vector<ConnectionSnapshot> connections;
  std::vector<std::pair<std::string, PeerSnapshot>> peers;  // box name, peer
  std::map<std::string, AppSummary> applications;           // live and recent connections
  uint64_t lan = 0, wan = 0, active = 0, opened = 0, pass_through = 0, resets = 0, protocol_errors = 0,
           refused_peers = 0;
  // Auto-discovery: probes, and their SYNs sent again with and without option 0x21.
  uint64_t discovery_probes = 0, probe_syns_resent_with_option = 0, probe_syns_resent_without_option = 0;
  std::vector<HistorySample> history;
  // Boxes running WCCP.
  struct WccpBox {
    std::string box;
    std::vector<wccp::ServiceGroup::Status> groups;
    bool gre = false;  // receiving GRE-redirected packets
    std::string tun;
    uint64_t gre_packets = 0, gre_bytes = 0, gre_refused = 0, gre_dropped = 0;
    uint64_t returned_gre = 0, returned_routed = 0;
  };
  std::vector<WccpBox> wccp;
};

Model Read(const std::vector<const Daemon*>& boxes, const std::deque<HistorySample>& history);

// ---- Connections: filter and sort (the page and the text view share them) ----

struct View {
  std::string filter;
  std::string sort = "id";
  bool descending = false;
  bool open_only = false;
};

View ViewFrom(const std::map<std::string, std::string>& q);
std::vector<const ConnectionSnapshot*> Select(const Model& m, const View& v);

// ---- The datastore of each box that has one ----

struct StoreView {
  std::string box;
  datastore::ChunkStore::Stats stats;
  uint64_t max_bytes = 0;
  uint64_t read_cache_max_bytes = 0;  // [dre] read_cache_mb
  double hit_rate() const {
    uint64_t lookups = stats.hits + stats.misses;
    return lookups ? 100.0 * static_cast<double>(stats.hits) / static_cast<double>(lookups) : 0.0;
  }
};

std::vector<StoreView> Stores(const Model& m);

// ---- What each box is: roles and inner-channel security, from its config ----

struct BoxFacts {
  std::vector<std::string> roles;  // of "datacenter", "branch", "interception"
  std::string role_text;           // "datacenter + branch (2 forward rules) + interception (...)"
  std::string encryption_mode;     // "certificates", "psk" or "none" ([peering])
  // In-path rules (and the default) whose inner channels go unencrypted.
  std::vector<std::string> plaintext_rules;
  std::string encryption_text;     // one line saying all of it
};
BoxFacts FactsOf(const Config& config);

// Where a peer in a box's peers list is, as far as that box can tell. A peer found
// in-path was reached at the address of the server the connection was for: that
// address is context, not the peer box's.
struct PeerPlace {
  std::string address_kind;  // "peer": the configured peer box; "server": in-path, on the
                             // way to that server; "source": the latest inner channel from
                             // the peer came from it; "unknown": no connection left to tell
  std::string box_address;   // the peer box's own address ("peer" only); "" when not known
  std::string via_server;    // "server" only: the server it was reached through
  std::string text;          // for the page and `wanopt show peers`
};
PeerPlace PlaceOf(const Model& m, const std::string& box, const PeerSnapshot& peer);

}  // namespace wanopt::status
