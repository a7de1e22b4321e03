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
#include "wanopt/config/config_internal.h"

namespace wanopt {

using namespace config_internal;

namespace {

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
  if (config.intercept) {  // one transparent listener per family
    for (tcp family : {tcp::v4(), tcp::v6()}) {
      listens.push_back({"intercept.listen_port", tcp::endpoint(family, config.intercept->listen_port),
                         line_of("intercept.listen_port")});
    }
  }
  std::stable_sort(listens.begin(), listens.end(), [](const Listen& a, const Listen& b) { return a.line < b.line; });
  for (size_t i = 0; i < listens.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (listens[i].key == listens[j].key || !SameListenAddress(listens[i].at, listens[j].at)) continue;
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
  if (const toml::table* wccp = top.SubTable("wccp")) {
    TableReader r(*wccp, "wccp");
    ReadWccp(r, config);
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
  return std::any_of(plaintext_peers.begin(), plaintext_peers.end(),
                     [&address](const Subnet& s) { return s.Contains(address); });
}

bool DatacenterConfig::Serves(const boost::asio::ip::address& destination) const {
  if (serves.empty()) return true;
  return std::any_of(serves.begin(), serves.end(), [&destination](const Subnet& s) { return s.Contains(destination); });
}

namespace {

// An address's bytes: 4 for IPv4, 16 for IPv6, at the front of 16.
std::array<uint8_t, 16> Bytes(const boost::asio::ip::address& address) {
  std::array<uint8_t, 16> bytes{};
  if (address.is_v6()) return address.to_v6().to_bytes();
  auto v4 = address.to_v4().to_bytes();
  std::copy(v4.begin(), v4.end(), bytes.begin());
  return bytes;
}

// `bytes` with everything after the first `prefix` bits zero.
std::array<uint8_t, 16> Masked(std::array<uint8_t, 16> bytes, unsigned prefix) {
  for (unsigned i = 0; i < 16; ++i) {
    unsigned keep = prefix > i * 8 ? std::min(8u, prefix - i * 8) : 0;
    bytes[i] &= static_cast<uint8_t>(0xff00 >> keep);
  }
  return bytes;
}

}  // namespace

bool Subnet::Contains(const boost::asio::ip::address& address) const {
  if (prefix == 0) return true;
  return address.is_v6() == v6 && Masked(Bytes(address), prefix) == network;
}

std::optional<Subnet> ParseSubnet(std::string_view text) {
  std::string_view address_text = text;
  std::optional<unsigned> prefix;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    address_text = text.substr(0, slash);
    std::string_view p = text.substr(slash + 1);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
    if (p.empty() || ec != std::errc() || end != p.data() + p.size()) return std::nullopt;
    prefix = value;
  }
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(std::string(address_text), ec);
  if (ec) return std::nullopt;
  unsigned bits = address.is_v4() ? 32 : 128;
  if (prefix.value_or(bits) > bits) return std::nullopt;
  Subnet subnet;
  subnet.v6 = address.is_v6();
  subnet.prefix = static_cast<uint8_t>(prefix.value_or(bits));
  subnet.network = Masked(Bytes(address), subnet.prefix);
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
