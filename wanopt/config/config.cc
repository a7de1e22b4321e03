#include "wanopt/config/config.h"

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <charconv>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "protocols/registry.h"

namespace wanopt {
namespace {

using boost::asio::ip::tcp;

// Thrown inside the parser only; ParseConfig turns it into the one-line error.
struct ConfigError {
  uint32_t line;
  std::string key;
  std::string problem;
};

// Walks one TOML table, remembering which keys were read so that the rest can be
// reported as unknown (a typo must never be silently ignored).
class TableReader {
 public:
  TableReader(const toml::table& table, std::string path) : table_(table), path_(std::move(path)) {}

  std::string Key(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  const toml::node* Get(std::string_view key) {
    seen_.insert(std::string(key));
    return table_.get(key);
  }

  [[noreturn]] void Fail(std::string_view key, const toml::node* node, std::string problem) const {
    uint32_t line = node ? node->source().begin.line : table_.source().begin.line;
    throw ConfigError{line, Key(key), std::move(problem)};
  }

  std::optional<std::string> String(std::string_view key) {
    const toml::node* node = Get(key);
    if (!node) return std::nullopt;
    if (!node->is_string()) Fail(key, node, "must be a string");
    return node->as_string()->get();
  }

  std::optional<int64_t> Integer(std::string_view key, int64_t min, int64_t max) {
    const toml::node* node = Get(key);
    if (!node) return std::nullopt;
    if (!node->is_integer()) Fail(key, node, "must be an integer");
    int64_t value = node->as_integer()->get();
    if (value < min || value > max) {
      Fail(key, node, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    return value;
  }

  std::optional<tcp::endpoint> Endpoint(std::string_view key, std::optional<uint16_t> default_port) {
    auto text = String(key);
    if (!text) return std::nullopt;
    auto endpoint = ParseEndpoint(*text, default_port);
    if (!endpoint) {
      Fail(key, Get(key), "'" + *text + "' is not an address:port (like 192.0.2.1:80 or [2001:db8::1]:80)");
    }
    return endpoint;
  }

  tcp::endpoint RequiredEndpoint(std::string_view key, std::optional<uint16_t> default_port) {
    auto endpoint = Endpoint(key, default_port);
    if (!endpoint) Fail(key, nullptr, "is required");
    return *endpoint;
  }

  std::optional<Policy> PolicyKey(std::string_view key) {
    auto text = String(key);
    if (!text) return std::nullopt;
    auto policy = text->size() == 1 ? PolicyFromLetter((*text)[0]) : std::nullopt;
    if (!policy) Fail(key, Get(key), "'" + *text + "' is not a policy (F, D, L or T)");
    return policy;
  }

  std::optional<std::vector<std::string>> Modules(std::string_view key) {
    const toml::node* node = Get(key);
    if (!node) return std::nullopt;
    if (!node->is_array()) Fail(key, node, "must be an array of module names");
    std::vector<std::string> names;
    for (const toml::node& item : *node->as_array()) {
      if (!item.is_string()) Fail(key, &item, "must be an array of module names");
      std::string name = item.as_string()->get();
      if (!protocols::Registry::Global().Find(name)) {
        std::string known;
        for (const auto& each : protocols::Registry::Global().Names()) known += (known.empty() ? "" : ", ") + each;
        Fail(key, &item, "unknown module '" + name + "' (known: " + known + ")");
      }
      for (const auto& previous : names) {
        if (previous == name) Fail(key, &item, "module '" + name + "' listed twice");
      }
      names.push_back(std::move(name));
    }
    if (names.size() > channel::kMaxModules) {
      Fail(key, node, "at most " + std::to_string(channel::kMaxModules) + " modules");
    }
    return names;
  }

  // An array of IPv4 subnets ("198.18.1.0/24"; a bare address is a /32).
  std::optional<std::vector<Subnet>> Subnets(std::string_view key) {
    const toml::node* node = Get(key);
    if (!node) return std::nullopt;
    if (!node->is_array()) Fail(key, node, "must be an array of IPv4 subnets (like [\"198.18.1.0/24\"])");
    std::vector<Subnet> subnets;
    for (const toml::node& item : *node->as_array()) {
      auto subnet = item.is_string() ? ParseSubnet(item.as_string()->get()) : std::nullopt;
      if (!subnet) Fail(key, &item, "must be an array of IPv4 subnets (like [\"198.18.1.0/24\"])");
      subnets.push_back(*subnet);
    }
    return subnets;
  }

  std::optional<std::chrono::milliseconds> Millis(std::string_view key, int64_t min, int64_t max) {
    auto value = Integer(key, min, max);
    if (!value) return std::nullopt;
    return std::chrono::milliseconds(*value);
  }

  const toml::table* SubTable(std::string_view key) {
    const toml::node* node = Get(key);
    if (!node) return nullptr;
    if (!node->is_table()) Fail(key, node, "must be a table");
    return node->as_table();
  }

  // Call when every known key was read.
  void RejectUnknownKeys() const {
    for (auto&& [key, node] : table_) {
      if (!seen_.count(std::string(key.str()))) {
        throw ConfigError{key.source().begin.line, Key(key.str()), "unknown key"};
      }
    }
  }

 private:
  const toml::table& table_;
  std::string path_;
  std::set<std::string> seen_;
};

void ReadBox(TableReader& r, Config& config) {
  if (auto name = r.String("name")) config.name = *name;
  if (auto id = r.String("device_id")) {
    auto parsed = channel::ParseDeviceId(*id);
    if (!parsed) r.Fail("device_id", r.Get("device_id"), "'" + *id + "' is not 6 hex bytes like 02:00:5e:00:00:01");
    config.device_id = *parsed;
  }
  if (auto policy = r.PolicyKey("policy")) config.policy = *policy;
  if (auto threads = r.Integer("threads", 0, 256)) config.threads = static_cast<unsigned>(*threads);
  if (auto level = r.String("log_level")) {
    if (*level == "debug") config.log_level = log::Level::kDebug;
    else if (*level == "info") config.log_level = log::Level::kInfo;
    else if (*level == "warn") config.log_level = log::Level::kWarn;
    else if (*level == "error") config.log_level = log::Level::kError;
    else r.Fail("log_level", r.Get("log_level"), "'" + *level + "' is not one of debug, info, warn, error");
  }
  r.RejectUnknownKeys();
}

void ReadTimeouts(TableReader& r, Timeouts& t) {
  if (auto v = r.Millis("connect_ms", 1, 600'000)) t.connect = *v;
  if (auto v = r.Millis("peer_connect_ms", 1, 600'000)) t.peer_connect = *v;
  if (auto v = r.Millis("handshake_ms", 1, 600'000)) t.handshake = *v;
  if (auto v = r.Millis("keepalive_ms", 10, 3'600'000)) t.keepalive = *v;
  if (auto v = r.Millis("dead_peer_ms", 30, 36'000'000)) t.dead_peer = *v;
  if (t.dead_peer <= t.keepalive) {
    r.Fail("dead_peer_ms", r.Get("dead_peer_ms"), "must be longer than keepalive_ms");
  }
  r.RejectUnknownKeys();
}

void ReadDatacenter(TableReader& r, Config& config) {
  DatacenterConfig dc;
  dc.listen = r.RequiredEndpoint("listen", kDefaultPeerPort);
  if (auto modules = r.Modules("modules")) {
    dc.modules = *modules;
  } else {
    dc.modules = protocols::Registry::Global().Names();
  }
  if (auto subnets = r.Subnets("plaintext_peers")) dc.plaintext_peers = *subnets;
  if (auto subnets = r.Subnets("serves")) dc.serves = *subnets;
  r.RejectUnknownKeys();
  config.datacenter = std::move(dc);
}

// The first path from `path` up to the root that exists, when it is not a directory
// (so `path` can be neither used nor created as one); nullopt otherwise.
std::optional<std::string> NotADirectory(const std::string& path) {
  for (std::filesystem::path p(path); !p.empty(); p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) return std::nullopt;
      return p.string();
    }
    if (p == p.parent_path()) break;
  }
  return std::nullopt;
}

void ReadDre(TableReader& r, Config& config) {
  DreConfig& dre = config.dre;
  if (auto path = r.String("datastore")) {
    dre.datastore = *path;
    // What the start would find: the directory cannot be made under a regular file.
    if (auto blocker = NotADirectory(*path)) {
      r.Fail("datastore", r.Get("datastore"),
             "'" + *path + "' cannot be a directory: '" + *blocker + "' is a file, not a directory");
    }
  }
  if (auto mb = r.Integer("max_size_mb", 16, 16 * 1024 * 1024)) dre.max_bytes = static_cast<uint64_t>(*mb) << 20;
  if (auto level = r.Integer("lz_level", 1, 19)) dre.lz_level = static_cast<int>(*level);
  if (const toml::node* sync = r.Get("sync_writes")) {
    if (!sync->is_boolean()) r.Fail("sync_writes", sync, "must be true or false");
    dre.sync_writes = sync->as_boolean()->get();
  }
  if (auto avg = r.Integer("chunk_avg", 256, 128 * 1024)) {
    dre.chunker.avg_size = static_cast<size_t>(*avg);
    dre.chunker.min_size = dre.chunker.avg_size / 4;
    dre.chunker.max_size = dre.chunker.avg_size * 8;
  }
  if (auto min = r.Integer("chunk_min", 64, 128 * 1024)) dre.chunker.min_size = static_cast<size_t>(*min);
  if (auto max = r.Integer("chunk_max", 128, 96 * 1024)) dre.chunker.max_size = static_cast<size_t>(*max);
  // A chunk must fit one frame with its instruction header.
  if (dre.chunker.max_size > 96 * 1024) dre.chunker.max_size = 96 * 1024;
  std::string problem = dre::ValidateChunkerOptions(dre.chunker);
  if (!problem.empty()) r.Fail("chunk_avg", r.Get("chunk_avg"), problem);
  r.RejectUnknownKeys();
}

void ReadWan(TableReader& r, Config& config) {
  if (auto cc = r.String("congestion")) {
    bool known = cc->empty() || *cc == "bbr" || *cc == "cubic" || *cc == "reno";
    if (!known) r.Fail("congestion", r.Get("congestion"), "'" + *cc + "' is not bbr, cubic, reno or \"\" (kernel default)");
    config.wan.congestion = *cc;
  }
  if (auto bw = r.Integer("bandwidth_mbit", 1, 400'000)) config.wan.bandwidth_mbit = static_cast<uint64_t>(*bw);
  if (auto rtt = r.Integer("rtt_ms", 1, 10'000)) config.wan.rtt_ms = static_cast<uint64_t>(*rtt);
  if ((config.wan.bandwidth_mbit == 0) != (config.wan.rtt_ms == 0)) {
    r.Fail(config.wan.rtt_ms ? "bandwidth_mbit" : "rtt_ms", nullptr, "set bandwidth_mbit and rtt_ms together");
  }
  r.RejectUnknownKeys();
}

void ReadStatus(TableReader& r, Config& config) {
  StatusConfig status;
  status.listen = r.RequiredEndpoint("listen", 7880);
  if (auto token = r.String("token")) status.token = *token;
  if (auto window = r.Integer("closed_window_s", 0, 86400)) status.closed_window = std::chrono::seconds(*window);
  // Addresses, peers and file names are on that page: off the box only with a token.
  if (!status.listen.address().is_loopback() && status.token.size() < 16) {
    r.Fail("token", r.Get("token"),
           "a token of at least 16 characters is required when listen is not a loopback address");
  }
  r.RejectUnknownKeys();
  config.status = std::move(status);
}

ForwardRule ReadForward(TableReader& r, const Config& config) {
  ForwardRule rule;
  rule.listen = r.RequiredEndpoint("listen", std::nullopt);
  rule.destination = r.RequiredEndpoint("destination", std::nullopt);
  rule.peer = r.RequiredEndpoint("peer", kDefaultPeerPort);
  rule.policy = r.PolicyKey("policy").value_or(config.policy);
  if (auto action = r.String("peer_down")) {
    if (*action == "pass-through") rule.peer_down = PeerDownAction::kPassThrough;
    else if (*action == "reset") rule.peer_down = PeerDownAction::kReset;
    else r.Fail("peer_down", r.Get("peer_down"), "'" + *action + "' is not pass-through or reset");
  }
  if (auto modules = r.Modules("modules")) rule.modules = *modules;
  r.RejectUnknownKeys();
  return rule;
}

bool Boolean(TableReader& r, std::string_view key, bool fallback) {
  const toml::node* node = r.Get(key);
  if (!node) return fallback;
  if (!node->is_boolean()) r.Fail(key, node, "must be true or false");
  return node->as_boolean()->get();
}

Subnet SubnetKey(TableReader& r, std::string_view key) {
  auto text = r.String(key);
  if (!text) return {};
  auto subnet = ParseSubnet(*text);
  if (!subnet) r.Fail(key, r.Get(key), "'" + *text + "' is not an IPv4 subnet (like 198.18.1.0/24)");
  return *subnet;
}

// In-path rules run every registered module unless they say otherwise (each module
// acts only on the connections it recognizes).
InpathRule ReadInpathRule(TableReader& r, const Config& config) {
  InpathRule rule;
  rule.policy = config.policy;
  rule.modules = protocols::Registry::Global().Names();
  rule.source = SubnetKey(r, "source");
  rule.destination = SubnetKey(r, "destination");
  if (auto ports = r.String("ports")) {
    unsigned lo = 0, hi = 0;
    char dash = 0;
    std::istringstream in(*ports);
    bool ok = static_cast<bool>(in >> lo);
    if (ok && in >> dash) ok = dash == '-' && static_cast<bool>(in >> hi) && in.peek() == EOF;
    else hi = lo;
    if (!ok || lo == 0 || hi > 65535 || lo > hi) {
      r.Fail("ports", r.Get("ports"), "'" + *ports + "' is not a port or a range like 1024-65535");
    }
    rule.port_min = static_cast<uint16_t>(lo);
    rule.port_max = static_cast<uint16_t>(hi);
  }
  if (auto action = r.String("action")) {
    if (*action == "auto-discover") rule.action = InpathAction::kAutoDiscover;
    else if (*action == "fixed-target") rule.action = InpathAction::kFixedTarget;
    else if (*action == "pass-through") rule.action = InpathAction::kPassThrough;
    else if (*action == "deny") rule.action = InpathAction::kDeny;
    else r.Fail("action", r.Get("action"), "'" + *action + "' is not auto-discover, fixed-target, pass-through or deny");
  }
  rule.peer = r.Endpoint("peer", kDefaultPeerPort);
  if (rule.action == InpathAction::kFixedTarget && !rule.peer) r.Fail("peer", nullptr, "is required with action = \"fixed-target\"");
  if (rule.action != InpathAction::kFixedTarget && rule.peer) r.Fail("peer", r.Get("peer"), "only goes with action = \"fixed-target\"");
  if (auto policy = r.PolicyKey("policy")) rule.policy = *policy;
  if (auto modules = r.Modules("modules")) rule.modules = *modules;
  rule.encryption = Boolean(r, "encryption", true);
  if (auto source = r.String("server_source")) {
    if (*source == "client") rule.server_source = ServerSource::kClient;
    else if (*source == "box") rule.server_source = ServerSource::kBox;
    else r.Fail("server_source", r.Get("server_source"), "'" + *source + "' is not client or box");
  }
  r.RejectUnknownKeys();
  return rule;
}

void ReadIntercept(TableReader& r, Config& config) {
  InterceptConfig intercept;
  if (auto queue = r.Integer("queue", 0, 65535)) intercept.queue = static_cast<uint16_t>(*queue);
  if (auto port = r.Integer("listen_port", 1, 65535)) intercept.listen_port = static_cast<uint16_t>(*port);
  intercept.answer = Boolean(r, "answer", true);
  if (auto s = r.Integer("option_drop_memory_s", 1, 7 * 86400)) intercept.option_drop_memory = std::chrono::seconds(*s);
  if (auto s = r.Integer("peer_memory_s", 1, 7 * 86400)) intercept.peer_memory = std::chrono::seconds(*s);
  intercept.default_rule.name = "default (auto-discover)";
  intercept.default_rule.policy = config.policy;
  intercept.default_rule.modules = protocols::Registry::Global().Names();
  if (const toml::node* rules = r.Get("rule")) {
    if (!rules->is_array_of_tables()) r.Fail("rule", rules, "must be an array of tables ([[intercept.rule]])");
    size_t index = 0;
    for (const toml::node& item : *rules->as_array()) {
      std::string name = "intercept.rule[" + std::to_string(index++) + "]";
      TableReader rr(*item.as_table(), name);
      InpathRule rule = ReadInpathRule(rr, config);
      rule.name = name;
      intercept.rules.push_back(std::move(rule));
    }
  }
  r.RejectUnknownKeys();
  config.intercept = std::move(intercept);
}

std::string ReadFileKey(TableReader& r, std::string_view key) {
  auto path = r.String(key);
  if (!path) return {};
  if (::access(path->c_str(), R_OK) != 0) r.Fail(key, r.Get(key), "cannot read '" + *path + "': " + std::strerror(errno));
  return *path;
}

void ReadPeering(TableReader& r, Config& config) {
  channel::PeeringSecurity& p = config.peering;
  p.ca_file = ReadFileKey(r, "ca");
  p.cert_file = ReadFileKey(r, "certificate");
  p.key_file = ReadFileKey(r, "key");
  if (auto identity = r.String("psk_identity")) p.psk_identity = *identity;
  if (auto psk = r.String("psk")) {
    if (psk->size() % 2 || psk->size() < 32) r.Fail("psk", r.Get("psk"), "must be at least 16 bytes written as hex (32+ hex digits)");
    for (size_t i = 0; i < psk->size(); i += 2) {
      unsigned byte = 0;
      auto [end, ec] = std::from_chars(psk->data() + i, psk->data() + i + 2, byte, 16);
      if (ec != std::errc() || end != psk->data() + i + 2) r.Fail("psk", r.Get("psk"), "must be hex digits");
      p.psk.push_back(static_cast<uint8_t>(byte));
    }
  }
  bool certificates = !p.ca_file.empty() || !p.cert_file.empty() || !p.key_file.empty();
  bool psk = !p.psk.empty() || !p.psk_identity.empty();
  if (certificates && psk) r.Fail("psk", r.Get("psk"), "use certificates (ca, certificate, key) or a pre-shared key, not both");
  if (certificates) {
    if (p.ca_file.empty()) r.Fail("ca", nullptr, "is required with certificate and key");
    if (p.cert_file.empty()) r.Fail("certificate", nullptr, "is required with ca and key");
    if (p.key_file.empty()) r.Fail("key", nullptr, "is required with ca and certificate");
    p.mode = channel::PeeringSecurity::Mode::kCertificate;
  } else if (psk) {
    if (p.psk.empty()) r.Fail("psk", nullptr, "is required with psk_identity");
    if (p.psk_identity.empty()) r.Fail("psk_identity", nullptr, "is required with psk");
    p.mode = channel::PeeringSecurity::Mode::kPsk;
  } else {
    r.Fail("ca", nullptr, "[peering] needs ca, certificate and key, or psk_identity and psk");
  }
  r.RejectUnknownKeys();
}

// A module configured in [modules.NAME] that no rule runs does nothing: almost
// always a rule's `modules` list that forgot it.
void WarnAboutIdleModules(TableReader& top, Config& config) {
  auto runs = [](const std::vector<std::string>& list, const std::string& name) {
    return std::find(list.begin(), list.end(), name) != list.end();
  };
  for (const auto& [name, settings] : config.module_settings) {
    bool enabled = config.datacenter && runs(config.datacenter->modules, name);
    for (const auto& rule : config.forwards) enabled |= runs(rule.modules, name);
    if (config.intercept) {
      // Rules after one that matches everything (and the default) are never reached.
      bool reachable = true;
      for (const auto& rule : config.intercept->rules) {
        enabled |= reachable && runs(rule.modules, name);
        if (rule.MatchesEverything()) reachable = false;
      }
      enabled |= reachable && runs(config.intercept->default_rule.modules, name);
    }
    if (enabled) continue;
    const toml::node* node = top.SubTable("modules")->get(name);
    config.warnings.push_back(std::to_string(node->source().begin.line) + ": modules." + name +
                              ": configured, but no rule runs it (add \"" + name +
                              "\" to a rule's modules, or [datacenter] modules)");
  }
}

void ReadModuleSettings(TableReader& r, const toml::table& table, Config& config) {
  for (auto&& [key, node] : table) {
    std::string name(key.str());
    r.Get(name);
    const protocols::ModuleInfo* info = protocols::Registry::Global().Find(name);
    if (!info) r.Fail(name, &node, "no module '" + name + "'");
    if (!info->create_box) r.Fail(name, &node, "module '" + name + "' has no settings");
    if (!node.is_table()) r.Fail(name, &node, "must be a table ([modules." + name + "])");
    protocols::ModuleSettings settings;
    for (auto&& [k, v] : *node.as_table()) {
      std::string text;
      if (v.is_string()) text = v.as_string()->get();
      else if (v.is_integer()) text = std::to_string(v.as_integer()->get());
      else if (v.is_boolean()) text = v.as_boolean()->get() ? "true" : "false";
      else if (v.is_array()) {
        for (const toml::node& item : *v.as_array()) {
          if (!item.is_string()) {
            throw ConfigError{item.source().begin.line, "modules." + name + "." + std::string(k.str()),
                              "must be an array of strings"};
          }
          text += (text.empty() ? "" : ",") + item.as_string()->get();
        }
      } else {
        throw ConfigError{v.source().begin.line, "modules." + name + "." + std::string(k.str()),
                          "must be a string, a number, true/false or an array of strings"};
      }
      settings[std::string(k.str())] = text;
    }
    // The module checks its own settings: its error names the key.
    std::string error;
    if (!info->create_box(settings, &error)) {
      throw ConfigError{node.source().begin.line, "modules." + name, error};
    }
    config.module_settings[name] = std::move(settings);
  }
}

// True when listeners on `a` and `b` cannot both bind: the same port, and the same
// address or a wildcard covering the other (an IPv6 wildcard covers IPv4 too).
bool SameListenAddress(const tcp::endpoint& a, const tcp::endpoint& b) {
  if (a.port() != b.port() || a.port() == 0) return false;
  if (a.address() == b.address()) return true;
  if (a.address().is_v4() == b.address().is_v4()) return a.address().is_unspecified() || b.address().is_unspecified();
  const tcp::endpoint& v6 = a.address().is_v6() ? a : b;
  return v6.address().is_unspecified();
}

// Every address the box listens on, from the datacenter, the forward rules, the
// status server and the transparent listener: no two may be the same, or the start
// would fail on the second (`run --check` finds it too).
void CheckListenAddresses(const toml::table& root, const Config& config) {
  struct Listen {
    std::string key;
    tcp::endpoint at;
    uint32_t line;
  };
  // The key's line; its table's when the key is a default (intercept.listen_port).
  auto line_of = [&](const std::string& path) -> uint32_t {
    if (const toml::node* node = root.at_path(path).node()) return node->source().begin.line;
    if (const toml::node* table = root.at_path(path.substr(0, path.rfind('.'))).node()) return table->source().begin.line;
    return 1;
  };
  std::vector<Listen> listens;
  if (config.datacenter) listens.push_back({"datacenter.listen", config.datacenter->listen, line_of("datacenter.listen")});
  if (config.status) listens.push_back({"status.listen", config.status->listen, line_of("status.listen")});
  for (const auto& rule : config.forwards) {
    // Forward rules are read in file order; their names index the array.
    std::string index = rule.name.substr(rule.name.find('['));
    listens.push_back({rule.name + ".listen", rule.listen, line_of("branch.forward" + index + ".listen")});
  }
  if (config.intercept) {
    listens.push_back({"intercept.listen_port", tcp::endpoint(tcp::v4(), config.intercept->listen_port),
                       line_of("intercept.listen_port")});
  }
  std::stable_sort(listens.begin(), listens.end(), [](const Listen& a, const Listen& b) { return a.line < b.line; });
  for (size_t i = 0; i < listens.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (!SameListenAddress(listens[i].at, listens[j].at)) continue;
      std::ostringstream at;
      at << listens[j].at;
      throw ConfigError{listens[i].line, listens[i].key,
                        "same listen address as " + listens[j].key + " (" + at.str() + "): the second cannot bind"};
    }
  }
}

Config Read(const toml::table& root) {
  Config config;
  config.device_id = DefaultDeviceId();
  TableReader top(root, "");
  if (const toml::table* box = top.SubTable("box")) {
    TableReader r(*box, "box");
    ReadBox(r, config);
  }
  if (const toml::table* timeouts = top.SubTable("timeouts")) {
    TableReader r(*timeouts, "timeouts");
    ReadTimeouts(r, config.timeouts);
  }
  if (const toml::table* wan = top.SubTable("wan")) {
    TableReader r(*wan, "wan");
    ReadWan(r, config);
  }
  if (const toml::table* dre = top.SubTable("dre")) {
    TableReader r(*dre, "dre");
    ReadDre(r, config);
  }
  if (const toml::table* status = top.SubTable("status")) {
    TableReader r(*status, "status");
    ReadStatus(r, config);
  }
  if (const toml::table* dc = top.SubTable("datacenter")) {
    TableReader r(*dc, "datacenter");
    ReadDatacenter(r, config);
  }
  if (const toml::table* modules = top.SubTable("modules")) {
    TableReader r(*modules, "modules");
    ReadModuleSettings(r, *modules, config);
  }
  if (const toml::table* peering = top.SubTable("peering")) {
    TableReader r(*peering, "peering");
    ReadPeering(r, config);
  }
  if (config.datacenter && config.peering.mode == channel::PeeringSecurity::Mode::kNone &&
      !config.datacenter->listen.address().is_loopback() && config.datacenter->plaintext_peers.empty()) {
    // An unauthenticated listener on the network would connect anyone to anything.
    throw ConfigError{top.SubTable("datacenter")->source().begin.line, "datacenter.listen",
                      "a listener off loopback needs [peering] (authenticated peers), or "
                      "datacenter.plaintext_peers naming the subnets allowed to peer in plaintext"};
  }
  if (const toml::table* intercept = top.SubTable("intercept")) {
    TableReader r(*intercept, "intercept");
    ReadIntercept(r, config);
    if (config.peering.mode == channel::PeeringSecurity::Mode::kNone) {
      // Inner channels are encrypted unless a rule says otherwise, for the lab only.
      auto needs = [](const InpathRule& rule) {
        return rule.encryption && rule.action != InpathAction::kPassThrough && rule.action != InpathAction::kDeny;
      };
      // Rules after one that matches everything (and the default) are never reached.
      bool any = false, reachable = true;
      for (const auto& rule : config.intercept->rules) {
        any |= reachable && needs(rule);
        if (rule.MatchesEverything()) reachable = false;
      }
      any |= reachable && needs(config.intercept->default_rule);
      if (any) {
        throw ConfigError{intercept->source().begin.line, "intercept",
                          "inner channels are encrypted: configure [peering] (ca, certificate, key or psk), "
                          "or set encryption = false on every rule (lab measurements only)"};
      }
    }
  }
  if (const toml::table* branch = top.SubTable("branch")) {
    TableReader b(*branch, "branch");
    if (const toml::node* forwards = b.Get("forward")) {
      if (!forwards->is_array_of_tables()) b.Fail("forward", forwards, "must be an array of tables ([[branch.forward]])");
      size_t index = 0;
      for (const toml::node& item : *forwards->as_array()) {
        std::string name = "branch.forward[" + std::to_string(index++) + "]";
        TableReader r(*item.as_table(), name);
        ForwardRule rule = ReadForward(r, config);
        rule.name = name;
        for (const auto& other : config.forwards) {
          if (other.listen == rule.listen) r.Fail("listen", r.Get("listen"), "same address as " + other.name);
        }
        config.forwards.push_back(std::move(rule));
      }
    }
    b.RejectUnknownKeys();
  }
  top.RejectUnknownKeys();
  WarnAboutIdleModules(top, config);
  CheckListenAddresses(root, config);
  if (!config.datacenter && config.forwards.empty() && !config.intercept) {
    throw ConfigError{1, "datacenter/branch/intercept",
                      "none of [datacenter], [[branch.forward]], [intercept] is configured: the box would do nothing"};
  }
  return config;
}

}  // namespace

bool DatacenterConfig::AllowsPlaintextFrom(const boost::asio::ip::address& address) const {
  // A listener on loopback is reachable from this host only: the operator's lab.
  if (listen.address().is_loopback()) return true;
  if (!address.is_v4()) return false;
  uint32_t a = address.to_v4().to_uint();
  return std::any_of(plaintext_peers.begin(), plaintext_peers.end(), [a](const Subnet& s) { return s.Contains(a); });
}

bool DatacenterConfig::Serves(const boost::asio::ip::address& destination) const {
  if (serves.empty()) return true;
  if (!destination.is_v4()) return false;
  uint32_t a = destination.to_v4().to_uint();
  return std::any_of(serves.begin(), serves.end(), [a](const Subnet& s) { return s.Contains(a); });
}

std::optional<Subnet> ParseSubnet(std::string_view text) {
  std::string_view address_text = text;
  unsigned prefix = 32;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    address_text = text.substr(0, slash);
    std::string_view p = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || ec != std::errc() || end != p.data() + p.size() || prefix > 32) return std::nullopt;
  }
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address_v4(std::string(address_text), ec);
  if (ec) return std::nullopt;
  Subnet subnet;
  subnet.prefix = static_cast<uint8_t>(prefix);
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  subnet.address = address.to_uint() & mask;
  return subnet;
}

std::optional<tcp::endpoint> ParseEndpoint(std::string_view text, std::optional<uint16_t> default_port) {
  std::string_view host = text;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port_text = rest.substr(1);
      if (port_text.empty()) return std::nullopt;
    }
  } else if (size_t colon = text.rfind(':'); colon != std::string_view::npos) {
    if (text.find(':') != colon) return std::nullopt;  // bare IPv6 needs brackets
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (port_text.empty()) return std::nullopt;
  }
  uint16_t port = 0;
  if (!port_text.empty()) {
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size()) return std::nullopt;
  } else if (default_port) {
    port = *default_port;
  } else {
    return std::nullopt;
  }
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(std::string(host), ec);
  if (ec) return std::nullopt;
  return tcp::endpoint(address, port);
}

channel::DeviceId DefaultDeviceId() {
  std::string seed;
  std::ifstream machine_id("/etc/machine-id");
  std::getline(machine_id, seed);
  if (seed.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    seed = host;
  }
  uint64_t h = XXH3_64bits(seed.data(), seed.size());
  channel::DeviceId id;
  for (int i = 0; i < 6; ++i) id[i] = static_cast<uint8_t>(h >> (8 * i));
  id[0] = static_cast<uint8_t>((id[0] & 0xfc) | 0x02);  // locally administered, unicast
  return id;
}

std::optional<Config> ParseConfig(std::string_view text, std::string_view source_name, std::string* error) {
  try {
    toml::table root = toml::parse(text, source_name);
    Config config = Read(root);
    for (auto& w : config.warnings) w = std::string(source_name) + ":" + w;
    return config;
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << source_name << ":" << e.source().begin.line << ": TOML syntax: " << e.description();
    *error = out.str();
  } catch (const ConfigError& e) {
    *error = std::string(source_name) + ":" + std::to_string(e.line) + ": " + e.key + ": " + e.problem;
  }
  return std::nullopt;
}

std::optional<Config> LoadConfigFile(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), path, error);
}

}  // namespace wanopt
