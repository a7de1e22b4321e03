// The daemon's configuration: what `wanopt run --config FILE` reads (TOML).
//
// One file can make a box a branch proxy ([[branch.forward]] rules), a datacenter
// proxy ([datacenter]), or both. deploy/examples/ has annotated examples; every key
// is documented in README.md.
//
// Loading validates everything up front: an unknown key, a wrong type, an address
// that does not parse or a module that does not exist fails with one line naming
// the file, line and key, and nothing is started.
#pragma once

#include <array>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "protocols/module.h"
#include "wanopt/channel/hello.h"
#include "wanopt/channel/policy.h"
#include "wanopt/channel/secure_channel.h"
#include "wanopt/wccp/service_group.h"
#include "wanopt/dre/chunker.h"
#include "util/log.h"

namespace wanopt {

// What a branch does with a new connection when its datacenter peer can't be reached.
enum class PeerDownAction {
  kPassThrough,  // connect straight to the destination and relay unoptimized
  kReset,        // reset the client connection at once (fail fast)
};

// Explicit port forward (like `ssh -L`): connections accepted on `listen` are
// optimized towards `destination` through the datacenter proxy at `peer`.
struct ForwardRule {
  std::string name;  // "branch.forward[0]": how logs and errors refer to the rule
  boost::asio::ip::tcp::endpoint listen;
  boost::asio::ip::tcp::endpoint destination;
  boost::asio::ip::tcp::endpoint peer;
  Policy policy = Policy::kFull;
  PeerDownAction peer_down = PeerDownAction::kPassThrough;
  std::vector<std::string> modules;  // default: none
};

// An IPv4 or IPv6 subnet, as rules match addresses: 198.18.1.0/24 matches IPv4
// addresses only, 2001:db8::/32 IPv6 only. A prefix of 0 in either family (and the
// default) matches every address of both: "0.0.0.0/0" kept meaning "everything"
// when IPv6 came.
struct Subnet {
  bool v6 = false;
  std::array<uint8_t, 16> network{};  // masked; IPv4 in the first 4 bytes
  uint8_t prefix = 0;                 // 0: every address
  bool Contains(const boost::asio::ip::address& address) const;
};

struct DatacenterConfig {
  boost::asio::ip::tcp::endpoint listen;  // inner channels arrive here (default port 7800)
  // Modules this box runs when a branch asks for them (default: every registered
  // one; the daemon registers every module but the TEST_ONLY ones, which only the
  // test binaries link: protocols/module.cmake).
  std::vector<std::string> modules;
  // Without [peering], the branches allowed to open plaintext inner channels. A
  // listener that is not on loopback accepts no plaintext peer unless named here:
  // otherwise anyone who reaches the port could have this box connect anywhere.
  std::vector<Subnet> plaintext_peers;
  // The server networks this box connects to for its peers (empty: any). A hello
  // naming another destination is answered "rejected" and reported.
  std::vector<Subnet> serves;
  // Whether `address` may open a plaintext inner channel here: any address when the
  // listener is on loopback, else only those in plaintext_peers.
  bool AllowsPlaintextFrom(const boost::asio::ip::address& address) const;
  // Whether this box connects to `destination` for its peers.
  bool Serves(const boost::asio::ip::address& destination) const;
};

// The status page and API (wanopt/status). Off unless configured.
struct StatusConfig {
  boost::asio::ip::tcp::endpoint listen;  // management address; loopback unless a token is set
  std::string token;                      // required on every request when set
  std::chrono::seconds closed_window{300};  // closed connections stay listed this long
};

// Data reduction. LZ needs nothing; DRE needs a chunk store, so a box without a
// `datastore` offers at most L whatever its policy says.
struct DreConfig {
  std::string datastore;                         // directory; "" = no DRE
  uint64_t max_bytes = uint64_t{4} << 30;        // chunk store bound
  // The store's read cache (datastore/chunk_store.h): a repeat that fits it is
  // decoded from memory, a longer one read back from the segment files; 0: off.
  uint64_t read_cache_bytes = uint64_t{32} << 20;
  bool sync_writes = false;
  int lz_level = 3;                              // zstd level, 1..19: what a fast WAN gets
  // A connection whose WAN is the bottleneck raises its level up to this
  // (dre/lz_governor.h); = lz_level: never. The contexts above lz_level share
  // lz_adaptive_memory_bytes box-wide.
  int lz_level_max = 19;
  uint64_t lz_adaptive_memory_bytes = uint64_t{256} << 20;
  dre::ChunkerOptions chunker;
  // What this box can apply: F with a store, L without.
  Policy capability() const { return datastore.empty() ? Policy::kLz : Policy::kFull; }
};

// The WAN the inner channels cross, for TCP tuning of their sockets.
struct WanConfig {
  std::string congestion = "bbr";  // TCP congestion control; "" = the kernel's default
  uint64_t bandwidth_mbit = 0;     // with rtt_ms: socket buffers of 2x the bandwidth-delay product
  uint64_t rtt_ms = 0;             // 0: leave buffers to the kernel's autotuning
  // Bytes each inner socket buffers each way; 0 when autotuned.
  uint64_t buffer_bytes() const {
    if (!bandwidth_mbit || !rtt_ms) return 0;
    return std::max<uint64_t>(2 * bandwidth_mbit * 1'000'000 / 8 * rtt_ms / 1000, 256 * 1024);
  }
};


// What an in-path rule does with the connections it matches (SteelHead's actions).
enum class InpathAction {
  kAutoDiscover,  // probe the path with option 0x21; optimize if a peer answers
  kFixedTarget,   // optimize through `peer`, which need not be on the path
  kPassThrough,   // leave the connection alone (routed as if the box were a router)
  kDeny,          // refuse it: the client gets a TCP reset
};

// Where a box's connections towards the server come from: a branch's discovery
// probe (the server connection when no peer answers), a datacenter's server connection.
enum class ServerSource {
  kClient,  // the client's address (full transparency; replies must route through this box)
  kBox,     // this box's own address
};

// One ordered interception rule; the first that matches a new connection decides.
struct InpathRule {
  std::string name;  // "intercept.rule[0]"
  Subnet source;     // the client
  Subnet destination;
  uint16_t port_min = 0, port_max = 65535;  // destination port range
  InpathAction action = InpathAction::kAutoDiscover;
  std::optional<boost::asio::ip::tcp::endpoint> peer;  // kFixedTarget
  Policy policy = Policy::kFull;
  std::vector<std::string> modules;  // default: every registered module (as DatacenterConfig)
  bool encryption = true;  // false only for lab measurements; the status page says so
  ServerSource server_source = ServerSource::kClient;
  bool MatchesEverything() const {
    return source.prefix == 0 && destination.prefix == 0 && port_min <= 1 && port_max == 65535;
  }
  bool Matches(const boost::asio::ip::address& client, const boost::asio::ip::address& server, uint16_t port) const {
    return source.Contains(client) && destination.Contains(server) && port >= port_min && port <= port_max;
  }
};

// Transparent interception and auto-discovery (Linux: TPROXY, netlink queue; the
// rules deploy/intercept installs). Off unless configured.
struct InterceptConfig {
  uint16_t queue = 7821;        // netlink queue the rules send SYNs and SYN-ACKs to
  uint16_t listen_port = 7801;  // the transparent listener TPROXY delivers to
  bool answer = true;           // answer SYNs carrying option 0x21 (datacenter role)
  std::chrono::seconds option_drop_memory{3600};  // servers that drop SYNs with options
  std::chrono::seconds peer_memory{3600};         // learned peer for a server address
  std::vector<InpathRule> rules;                  // none match: auto-discover, box policy
  InpathRule default_rule;                        // what applies when none match
};

// [wccp]: this box registers with WCCPv2 routers as a web cache (wanopt/wccp/).
// Off unless configured.
struct WccpConfig {
  uint32_t address = 0;            // this box's IPv4 address towards the routers (host order)
  std::vector<uint32_t> routers;   // unicast router addresses
  std::string password;            // MD5 service security ("" = none)
  uint32_t forwarding = wccp::capability::kGre | wccp::capability::kL2;
  uint32_t return_method = wccp::capability::kGre | wccp::capability::kL2;
  uint32_t assignment = wccp::capability::kHash;
  uint16_t weight = 0;
  std::chrono::milliseconds here_i_am_interval{10000};
  std::vector<wccp::ServiceInfo> services;  // default: WAAS's 61 and 62
  std::string tun = "wccp0";                // where GRE-redirected packets are handed to the kernel
};

struct Timeouts {
  std::chrono::milliseconds connect{10'000};      // to origin servers
  std::chrono::milliseconds peer_connect{3'000};  // to datacenter peers
  // An inner channel this box accepts: TLS, then the hello, each within this time.
  std::chrono::milliseconds handshake{5'000};
  std::chrono::milliseconds keepalive{15'000};    // idle inner channel sends a keepalive
  std::chrono::milliseconds dead_peer{45'000};    // silent inner channel is reset
};

struct Config {
  std::string name = "wanopt";  // for logs
  channel::DeviceId device_id{};
  Policy policy = Policy::kFull;  // what this box offers
  unsigned threads = 0;           // 0: one event loop per core
  log::Level log_level = log::Level::kInfo;
  Timeouts timeouts;
  std::optional<DatacenterConfig> datacenter;
  std::optional<StatusConfig> status;
  DreConfig dre;
  WanConfig wan;
  std::vector<ForwardRule> forwards;
  std::optional<InterceptConfig> intercept;
  std::optional<WccpConfig> wccp;
  // [peering]: how inner channels authenticate and encrypt (kNone: plaintext).
  channel::PeeringSecurity peering;
  // [modules.NAME]: settings of protocol modules with a box-wide part (validated by
  // the module when the config is read).
  std::map<std::string, protocols::ModuleSettings> module_settings;
  // What is valid but probably not meant, one line each ("<source>:<line>: <key>:
  // <problem>"): `run --check` prints them, `run` logs them at start.
  std::vector<std::string> warnings;
};

inline constexpr uint16_t kDefaultPeerPort = 7800;

// Parses and validates a config. On failure returns nullopt and sets *error to one
// line: "<source>:<line>: <key>: <problem>".
std::optional<Config> ParseConfig(std::string_view text, std::string_view source_name,
                                  std::string* error);
std::optional<Config> LoadConfigFile(const std::string& path, std::string* error);

// A device id for boxes whose config names none: derived from /etc/machine-id (or
// the host name), with the locally-administered bit set.
channel::DeviceId DefaultDeviceId();

// "198.18.1.0/24", "198.18.1.10" (a /32), "2001:db8::/32", "2001:db8::1" (a /128),
// "0.0.0.0/0" or "::/0" (every address).
std::optional<Subnet> ParseSubnet(std::string_view text);

// "1.2.3.4:80", "[::1]:80"; port required unless default_port is given.
std::optional<boost::asio::ip::tcp::endpoint> ParseEndpoint(std::string_view text,
                                                            std::optional<uint16_t> default_port);

}  // namespace wanopt
