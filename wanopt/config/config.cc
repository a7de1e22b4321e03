#include "wanopt/config/config.h"

#include <unistd.h>
#include <xxhash.h>

#include <charconv>
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
        for (const auto& info : protocols::Registry::Global().modules()) {
          known += (known.empty() ? "" : ", ") + info.name;
        }
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
    for (const auto& info : protocols::Registry::Global().modules()) dc.modules.push_back(info.name);
  }
  r.RejectUnknownKeys();
  config.datacenter = std::move(dc);
}

void ReadDre(TableReader& r, Config& config) {
  DreConfig& dre = config.dre;
  if (auto path = r.String("datastore")) dre.datastore = *path;
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
  if (!config.datacenter && config.forwards.empty()) {
    throw ConfigError{1, "datacenter/branch", "neither [datacenter] nor [[branch.forward]] is configured: the box would do nothing"};
  }
  return config;
}

}  // namespace

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
    return Read(root);
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
