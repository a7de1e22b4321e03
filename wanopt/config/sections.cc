// The readers of the config's sections: [box], [timeouts], [datacenter], [dre], [wan],
// [status], [[branch.forward]], [intercept] and its rules, [peering], [modules.NAME].
#include "wanopt/config/config_internal.h"

namespace wanopt::config_internal {

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
  if (auto mb = r.Integer("read_cache_mb", 0, 1024 * 1024)) dre.read_cache_bytes = static_cast<uint64_t>(*mb) << 20;
  if (auto level = r.Integer("lz_level", 1, 19)) dre.lz_level = static_cast<int>(*level);
  if (auto level = r.Integer("lz_level_max", 1, 19)) {
    if (*level < dre.lz_level) {
      r.Fail("lz_level_max", r.Get("lz_level_max"),
             "must be at least lz_level (" + std::to_string(dre.lz_level) + "); equal to it turns adapting off");
    }
    dre.lz_level_max = static_cast<int>(*level);
  }
  if (auto mb = r.Integer("lz_adaptive_memory_mb", 0, 1024 * 1024)) dre.lz_adaptive_memory_bytes = static_cast<uint64_t>(*mb) << 20;
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

}  // namespace wanopt::config_internal
