#include "wanopt/status/model.h"
#include "wanopt/wccp/agent.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <tuple>

#include "wanopt/config/config.h"
#include "util/endpoint.h"
#include "wanopt/daemon/daemon.h"

namespace wanopt::status {

using boost::asio::ip::tcp;

// ---- Escaping: every string that came off the network goes through one of these ----

std::string HtmlEscape(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && !(keep_newlines && c == '\n')) out += "&#xfffd;";
        else out += c;
    }
  }
  return out;
}

std::string PromLabel(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// Query values are shown back in the page and used as filters: decode, never trust.
std::string UrlDecode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') out += ' ';
    else if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
             std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}


std::map<std::string, std::string> ParseQuery(std::string_view target) {
  std::map<std::string, std::string> query;
  size_t q = target.find('?');
  if (q == std::string_view::npos) return query;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    size_t eq = pair.find('=');
    query[UrlDecode(pair.substr(0, eq))] = eq == std::string_view::npos ? "" : UrlDecode(pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return query;
}

// ---- Formatting ----

std::string FormatEndpoint(const tcp::endpoint& e) {
  if (e.port() == 0 && e.address().is_unspecified()) return "";
  return wanopt::FormatEndpoint(e);
}

std::string Iso8601(Clock::time_point t) {
  std::time_t secs = Clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string Bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return text;
}

std::string Percent(double p) {
  char text[16];
  std::snprintf(text, sizeof text, "%.1f%%", p);
  return text;
}

std::string Age(Clock::time_point since, Clock::time_point now) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(now - since).count();
  char text[32];
  if (s < 60) std::snprintf(text, sizeof text, "%llds", static_cast<long long>(s));
  else if (s < 3600) std::snprintf(text, sizeof text, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else if (s < 86400) std::snprintf(text, sizeof text, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  else std::snprintf(text, sizeof text, "%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s / 3600 % 24));
  return text;
}

std::string PolicyText(const std::optional<Policy>& p) { return p ? std::string(1, PolicyLetter(*p)) : "-"; }

std::string PolicyQuad(const PolicyView& p) {
  return std::string(1, PolicyLetter(p.ours)) + "/" + PolicyText(p.peer) + "/" + PolicyText(p.negotiated) + "/" +
         PolicyText(p.applied);
}

std::string LzLevelText(int level, int peak) {
  if (!level) return "-";
  return std::to_string(level) + (peak > level ? " (peak " + std::to_string(peak) + ")" : "");
}

double Reduction(uint64_t lan, uint64_t wan) {
  return lan && wan ? 100.0 * (1.0 - static_cast<double>(wan) / static_cast<double>(lan)) : 0.0;
}

// ---- The model every view renders from: one consistent read of every box ----

Model Read(const std::vector<const Daemon*>& boxes, const std::deque<HistorySample>& history) {
  Model m;
  m.now = Clock::now();
  for (const Daemon* box : boxes) {
    m.boxes.push_back(box);
    const Counters& c = box->counters();
    m.lan += c.lan_in + c.lan_out;
    m.wan += c.wan_in + c.wan_out;
    m.active += c.sessions_active;
    m.opened += c.sessions_opened;
    m.pass_through += c.pass_through;
    m.resets += c.resets;
    m.protocol_errors += c.protocol_errors;
    m.refused_peers += c.refused_peers;
    m.discovery_probes += c.discovery_probes;
    m.probe_syns_resent_with_option += c.probe_syns_resent_with_option;
    m.probe_syns_resent_without_option += c.probe_syns_resent_without_option;
    for (auto& s : box->table().Connections()) m.connections.push_back(std::move(s));
    for (auto& p : box->table().Peers()) m.peers.emplace_back(box->config().name, std::move(p));
    if (const wccp::Agent* agent = box->wccp()) {
      Model::WccpBox w{box->config().name, agent->status()};
      if (const wccp::GreReceiver* gre = agent->gre()) {
        w.gre = true;
        w.tun = gre->tun();
        w.gre_packets = gre->counters().packets;
        w.gre_bytes = gre->counters().bytes;
        w.gre_refused = gre->counters().refused;
        w.gre_dropped = gre->counters().dropped;
        w.returned_gre = gre->counters().returned_gre;
        w.returned_routed = gre->counters().returned_routed;
      }
      m.wccp.push_back(std::move(w));
    }
  }
  for (const auto& c : m.connections) {
    AppSummary& a = m.applications[c.application];
    ++a.connections;
    if (!c.ended) ++a.active;
    a.lan += c.lan_bytes();
    a.wan += c.wan_bytes();
  }
  m.history.assign(history.begin(), history.end());
  m.history.push_back({m.now, m.lan, m.wan});
  return m;
}

// ---- Connections: filter and sort (the page and the text view share them) ----

View ViewFrom(const std::map<std::string, std::string>& q) {
  View v;
  if (auto it = q.find("filter"); it != q.end()) v.filter = it->second.substr(0, 200);
  if (auto it = q.find("sort"); it != q.end()) v.sort = it->second;
  if (auto it = q.find("order"); it != q.end()) v.descending = it->second == "desc";
  if (auto it = q.find("show"); it != q.end()) v.open_only = it->second == "open";
  return v;
}

bool Matches(const ConnectionSnapshot& c, const View& v) {
  if (v.open_only && c.ended) return false;
  if (v.filter.empty()) return true;
  std::string haystack = FormatEndpoint(c.client) + " " + FormatEndpoint(c.server) + " " + c.peer_id + " " +
                         c.peer_address + " " + c.application + " " + StateName(c.state) + " " + c.box + " " + c.side;
  for (const auto& n : c.notes) haystack += " " + n;
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
    return s;
  };
  return lower(haystack).find(lower(v.filter)) != std::string::npos;
}

std::vector<const ConnectionSnapshot*> Select(const Model& m, const View& v) {
  std::vector<const ConnectionSnapshot*> rows;
  for (const auto& c : m.connections) {
    if (Matches(c, v)) rows.push_back(&c);
  }
  auto key = [&](const ConnectionSnapshot* c) -> std::tuple<double, std::string> {
    if (v.sort == "age") return {-std::chrono::duration<double>(c->started.time_since_epoch()).count(), ""};
    if (v.sort == "lan") return {static_cast<double>(c->lan_bytes()), ""};
    if (v.sort == "wan") return {static_cast<double>(c->wan_bytes()), ""};
    if (v.sort == "reduction") return {c->reduction(), ""};
    if (v.sort == "client") return {0, FormatEndpoint(c->client)};
    if (v.sort == "server") return {0, FormatEndpoint(c->server)};
    if (v.sort == "application") return {0, c->application};
    if (v.sort == "state") return {0, StateName(c->state)};
    if (v.sort == "peer") return {0, c->peer_id};
    return {static_cast<double>(c->id), c->box};
  };
  std::stable_sort(rows.begin(), rows.end(), [&](auto* a, auto* b) { return v.descending ? key(b) < key(a) : key(a) < key(b); });
  return rows;
}

std::string Pad(std::string s, size_t width) {
  if (s.size() > width) s = s.substr(0, width - 1) + "~";
  s.resize(width, ' ');
  return s;
}

// ---- The datastore of each box that has one ----

std::vector<StoreView> Stores(const Model& m) {
  std::vector<StoreView> stores;
  for (const Daemon* b : m.boxes) {
    if (!b->store()) continue;
    const DreConfig& dre = b->config().dre;
    stores.push_back({b->config().name, b->store()->stats(), dre.max_bytes, dre.read_cache_bytes});
  }
  return stores;
}

// ---- What each box is ----

namespace {

bool Relays(const InpathRule& rule) {
  return rule.action == InpathAction::kAutoDiscover || rule.action == InpathAction::kFixedTarget;
}

}  // namespace

BoxFacts FactsOf(const Config& c) {
  BoxFacts f;
  std::vector<std::string> parts;
  if (c.datacenter) {
    f.roles.push_back("datacenter");
    parts.push_back("datacenter");
  }
  if (!c.forwards.empty()) {
    f.roles.push_back("branch");
    parts.push_back("branch (" + std::to_string(c.forwards.size()) + " forward rule" + (c.forwards.size() == 1 ? "" : "s") +
                    ")");
  }
  if (c.intercept) {
    f.roles.push_back("interception");
    size_t n = c.intercept->rules.size();
    parts.push_back("interception (" + std::to_string(n) + " in-path rule" + (n == 1 ? "" : "s") + " + default, " +
                    (c.intercept->answer ? "answers probes" : "does not answer probes") + ")");
  }
  for (const auto& part : parts) f.role_text += (f.role_text.empty() ? "" : " + ") + part;
  if (f.role_text.empty()) f.role_text = "no role";

  using Mode = channel::PeeringSecurity::Mode;
  f.encryption_mode = c.peering.mode == Mode::kCertificate ? "certificates" : c.peering.mode == Mode::kPsk ? "psk" : "none";
  if (c.intercept) {
    for (const auto& rule : c.intercept->rules) {
      if (Relays(rule) && !rule.encryption) f.plaintext_rules.push_back(rule.name);
    }
    if (Relays(c.intercept->default_rule) && !c.intercept->default_rule.encryption) {
      f.plaintext_rules.push_back(c.intercept->default_rule.name);
    }
  }
  // What session and interceptor do: with [peering] every inner channel is TLS 1.3
  // (forward rules, the datacenter listener, in-path rules) except those of rules
  // with encryption = false; without it every inner channel is plaintext.
  if (c.peering.mode == Mode::kNone) {
    f.encryption_text = "none: inner channels are plaintext (no [peering] configured)";
  } else {
    f.encryption_text = std::string("TLS 1.3, peers authenticated by ") +
                        (c.peering.mode == Mode::kCertificate ? "certificates" : "a pre-shared key");
    if (!f.plaintext_rules.empty()) {
      f.encryption_text += "; plaintext for ";
      for (size_t i = 0; i < f.plaintext_rules.size(); ++i) f.encryption_text += (i ? ", " : "") + f.plaintext_rules[i];
      f.encryption_text += " (encryption = false)";
    }
  }
  return f;
}

PeerPlace PlaceOf(const Model& m, const std::string& box, const PeerSnapshot& peer) {
  PeerPlace place;
  // The latest connection of this box with this peer says how it was reached.
  const ConnectionSnapshot* latest = nullptr;
  for (const auto& c : m.connections) {
    if (c.box == box && c.peer_id == peer.device_id && c.peer_address == peer.address) latest = &c;
  }
  const Config* config = nullptr;
  for (const Daemon* b : m.boxes) {
    if (b->config().name == box) config = &b->config();
  }
  bool configured = false;
  if (config) {
    for (const auto& rule : config->forwards) configured |= FormatEndpoint(rule.peer) == peer.address;
    if (config->intercept) {
      for (const auto& rule : config->intercept->rules) configured |= rule.peer && FormatEndpoint(*rule.peer) == peer.address;
    }
  }
  if (latest && latest->side == "datacenter") {
    // The latest inner channel's source, ephemeral port included: where it came from,
    // not necessarily where the box can be reached (a NAT, a transparent source).
    place.address_kind = "source";
    place.text = "inner channels from " + peer.address + " (the latest one's source)";
  } else if (latest && !configured && FormatEndpoint(latest->server) == peer.address) {
    place.address_kind = "server";
    place.via_server = peer.address;
    place.text = "in-path, reached on the way to server " + peer.address + " (its own address is not known)";
  } else if (configured || latest) {
    place.address_kind = "peer";
    place.box_address = peer.address;
    place.text = peer.address;
    if (config && latest && !configured && latest->side == "branch") {
      // Found in-path: the box named its own address in its hello-ack.
      place.via_server = FormatEndpoint(latest->server);
      place.text = peer.address + " (in-path, on the way to server " + place.via_server + ")";
    }
  } else {
    place.address_kind = "unknown";
    place.text = peer.address + " (how it was reached is no longer known)";
  }
  return place;
}

}  // namespace wanopt::status
