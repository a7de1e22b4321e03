#include "wanopt/status/status_server.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "datastore/chunk_store.h"
#include "wanopt/daemon/daemon.h"
#include "wanopt/util/json.h"
#include "wanopt/util/log.h"

namespace wanopt {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::system_clock;

// ---- Escaping: every string that came off the network goes through one of these ----

std::string HtmlEscape(std::string_view text) {
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
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t') out += "&#xfffd;";
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

std::string UrlEncode(std::string_view text) {
  std::string out;
  char hex[4];
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.') {
      out += static_cast<char>(c);
    } else {
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
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
  const auto& a = e.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(e.port());
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
  else std::snprintf(text, sizeof text, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  return text;
}

std::string PolicyText(const std::optional<Policy>& p) { return p ? std::string(1, PolicyLetter(*p)) : "-"; }

std::string PolicyQuad(const PolicyView& p) {
  return std::string(1, PolicyLetter(p.ours)) + "/" + PolicyText(p.peer) + "/" + PolicyText(p.negotiated) + "/" +
         PolicyText(p.applied);
}

double Reduction(uint64_t lan, uint64_t wan) {
  return lan && wan ? 100.0 * (1.0 - static_cast<double>(wan) / static_cast<double>(lan)) : 0.0;
}

// ---- The model every view renders from: one consistent read of every box ----

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
  uint64_t lan = 0, wan = 0, active = 0, opened = 0, pass_through = 0, resets = 0, protocol_errors = 0;
  std::vector<HistorySample> history;
};

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
    for (auto& s : box->table().Connections()) m.connections.push_back(std::move(s));
    for (auto& p : box->table().Peers()) m.peers.emplace_back(box->config().name, std::move(p));
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

struct View {
  std::string filter;
  std::string sort = "id";
  bool descending = false;
  bool open_only = false;
};

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

struct StoreView {
  std::string box;
  datastore::ChunkStore::Stats stats;
  uint64_t max_bytes = 0;
  double hit_rate() const {
    uint64_t lookups = stats.hits + stats.misses;
    return lookups ? 100.0 * static_cast<double>(stats.hits) / static_cast<double>(lookups) : 0.0;
  }
};

std::vector<StoreView> Stores(const Model& m) {
  std::vector<StoreView> stores;
  for (const Daemon* b : m.boxes) {
    if (!b->store()) continue;
    stores.push_back({b->config().name, b->store()->stats(), b->config().dre.max_bytes});
  }
  return stores;
}

void WriteStores(json::Writer& w, const Model& m) {
  auto stores = Stores(m);
  if (stores.empty()) {
    w.Null();
    return;
  }
  w.BeginArray();
  for (const auto& s : stores) {
    w.BeginObject();
    w.Field("box", s.box);
    w.Field("bytes", s.stats.bytes);
    w.Field("max_bytes", s.max_bytes);
    w.Field("chunks", s.stats.chunks);
    w.Field("hits", s.stats.hits);
    w.Field("misses", s.stats.misses);
    w.Field("hit_rate", s.hit_rate());
    w.Field("evictions", s.stats.evictions);
    w.Field("corrupt_dropped", s.stats.corrupt_dropped);
    w.Field("degraded", s.stats.degraded);  // a write failed: storing stopped, DRE off for new connections
    w.Field("write_errors", s.stats.write_errors);
    w.Field("index_bytes_per_chunk", s.stats.chunks ? s.stats.index_memory_bytes / s.stats.chunks : 0);
    w.EndObject();
  }
  w.EndArray();
}

std::string StoresText(const Model& m) {
  auto stores = Stores(m);
  if (stores.empty()) return "datastore: none (no [dre] datastore configured: DRE off, LZ only)\n";
  std::ostringstream out;
  out << Pad("BOX", 20) << Pad("SIZE", 22) << Pad("CHUNKS", 10) << Pad("HIT RATE", 10) << Pad("EVICTIONS", 11)
      << "CORRUPT DROPPED\n";
  for (const auto& s : stores) {
    out << Pad(s.box, 20) << Pad(Bytes(s.stats.bytes) + " / " + Bytes(s.max_bytes), 22)
        << Pad(std::to_string(s.stats.chunks), 10) << Pad(Percent(s.hit_rate()), 10)
        << Pad(std::to_string(s.stats.evictions), 11) << s.stats.corrupt_dropped << "\n";
  }
  return out.str();
}

// ---- JSON ----

void WriteConnection(json::Writer& w, const ConnectionSnapshot& c, Clock::time_point now) {
  w.BeginObject();
  w.Field("id", c.id);
  w.Field("box", c.box);
  w.Field("side", c.side);
  w.Field("client", FormatEndpoint(c.client));
  w.Field("server", FormatEndpoint(c.server));
  w.Field("peer", c.peer_id);
  w.Field("peer_address", c.peer_address);
  w.Field("application", c.application);
  w.Key("policy");
  w.BeginObject();
  w.Field("ours", std::string(1, PolicyLetter(c.policy.ours)));
  for (auto [name, p] : {std::pair{"peer", c.policy.peer}, {"negotiated", c.policy.negotiated}, {"applied", c.policy.applied}}) {
    w.Key(name);
    if (p) w.Value(std::string(1, PolicyLetter(*p)));
    else w.Null();
  }
  w.EndObject();
  w.Field("lan_in", c.lan_in);
  w.Field("lan_out", c.lan_out);
  w.Field("wan_in", c.wan_in);
  w.Field("wan_out", c.wan_out);
  w.Field("reduction", c.reduction());
  w.Field("chunks_hit", c.chunks_hit);
  w.Field("chunks_missed", c.chunks_missed);
  w.Field("nacks", c.nacks);
  w.Field("state", StateName(c.state));
  w.Field("started", Iso8601(c.started));
  w.Key("ended");
  if (c.ended) w.Value(Iso8601(*c.ended));
  else w.Null();
  w.Field("age_seconds", std::chrono::duration<double>(now - c.started).count());
  w.Key("notes");
  w.BeginArray();
  for (const auto& n : c.notes) w.Value(n);
  w.EndArray();
  w.EndObject();
}

std::string ConnectionsJson(const Model& m, const View& v) {
  json::Writer w;
  w.BeginObject();
  w.Key("connections");
  w.BeginArray();
  for (const auto* c : Select(m, v)) WriteConnection(w, *c, m.now);
  w.EndArray();
  w.EndObject();
  return w.str();
}

std::string PeersJson(const Model& m) {
  json::Writer w;
  w.BeginObject();
  w.Key("peers");
  w.BeginArray();
  for (const auto& [box, p] : m.peers) {
    w.BeginObject();
    w.Field("box", box);
    w.Field("id", p.device_id);
    w.Field("address", p.address);
    w.Field("last_seen", Iso8601(p.last_seen));
    w.Field("connections", p.connections);
    w.Field("active", p.active);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str();
}

std::string SummaryJson(const Model& m) {
  json::Writer w;
  w.BeginObject();
  w.Key("boxes");
  w.BeginArray();
  for (const Daemon* box : m.boxes) {
    w.BeginObject();
    w.Field("name", box->config().name);
    w.Field("device_id", channel::FormatDeviceId(box->config().device_id));
    w.Field("datacenter", box->config().datacenter.has_value());
    w.Field("branch_rules", box->config().forwards.size());
    w.Field("policy", std::string(1, PolicyLetter(box->config().policy)));
    w.Field("started", Iso8601(box->started_at()));
    w.EndObject();
  }
  w.EndArray();
  w.Key("totals");
  w.BeginObject();
  w.Field("connections_active", m.active);
  w.Field("connections_total", m.opened);
  w.Field("lan_bytes", m.lan);
  w.Field("wan_bytes", m.wan);
  w.Field("reduction", Reduction(m.lan, m.wan));
  w.Field("pass_through", m.pass_through);
  w.Field("resets", m.resets);
  w.Field("protocol_errors", m.protocol_errors);
  w.EndObject();
  w.Key("applications");
  w.BeginArray();
  for (const auto& [name, a] : m.applications) {
    w.BeginObject();
    w.Field("application", name);
    w.Field("connections", a.connections);
    w.Field("active", a.active);
    w.Field("lan_bytes", a.lan);
    w.Field("wan_bytes", a.wan);
    w.Field("reduction", Reduction(a.lan, a.wan));
    w.EndObject();
  }
  w.EndArray();
  w.Key("datastore");
  WriteStores(w, m);
  w.Field("inner_channel_encryption", "none (TLS arrives with auto-discovery)");
  w.Key("history");
  w.BeginArray();
  for (const auto& h : m.history) {
    w.BeginObject();
    w.Field("at", Iso8601(h.at));
    w.Field("lan_bytes", h.lan_bytes);
    w.Field("wan_bytes", h.wan_bytes);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str();
}

// ---- Text (for `wanopt show`) ----


std::string ConnectionsText(const Model& m, const View& v) {
  std::ostringstream out;
  out << Pad("ID", 6) << Pad("SIDE", 11) << Pad("CLIENT", 23) << Pad("SERVER", 23) << Pad("PEER", 18) << Pad("APP", 8)
      << Pad("POLICY", 9) << Pad("LAN", 11) << Pad("WAN", 11) << Pad("RED", 8) << Pad("AGE", 8) << Pad("STATE", 13)
      << "NOTES\n";
  for (const auto* c : Select(m, v)) {
    std::string notes;
    for (const auto& n : c->notes) notes += (notes.empty() ? "" : "; ") + n;
    out << Pad(std::to_string(c->id), 6) << Pad(c->side, 11) << Pad(FormatEndpoint(c->client), 23)
        << Pad(FormatEndpoint(c->server), 23) << Pad(c->peer_id.empty() ? "-" : c->peer_id, 18) << Pad(c->application, 8)
        << Pad(PolicyQuad(c->policy), 9) << Pad(Bytes(c->lan_bytes()), 11) << Pad(Bytes(c->wan_bytes()), 11)
        << Pad(Percent(c->reduction()), 8) << Pad(Age(c->started, m.now), 8) << Pad(StateName(c->state), 13) << notes
        << "\n";
  }
  return out.str();
}

std::string PeersText(const Model& m) {
  std::ostringstream out;
  out << Pad("BOX", 20) << Pad("PEER ID", 19) << Pad("ADDRESS", 24) << Pad("LAST SEEN", 22) << Pad("CONNECTIONS", 13)
      << "ACTIVE\n";
  for (const auto& [box, p] : m.peers) {
    out << Pad(box, 20) << Pad(p.device_id, 19) << Pad(p.address, 24) << Pad(Iso8601(p.last_seen), 22)
        << Pad(std::to_string(p.connections), 13) << p.active << "\n";
  }
  return out.str();
}

std::string SummaryText(const Model& m) {
  std::ostringstream out;
  for (const Daemon* box : m.boxes) {
    out << "box " << box->config().name << " (" << channel::FormatDeviceId(box->config().device_id) << "): "
        << (box->config().datacenter ? "datacenter" : "") << (box->config().datacenter && !box->config().forwards.empty() ? " + " : "")
        << (box->config().forwards.empty() ? "" : "branch") << ", up " << Age(box->started_at(), m.now) << "\n";
  }
  out << "connections: " << m.active << " active, " << m.opened << " since start; pass-through " << m.pass_through
      << ", resets " << m.resets << ", protocol errors " << m.protocol_errors << "\n";
  out << "LAN " << Bytes(m.lan) << ", WAN " << Bytes(m.wan) << ", reduction " << Percent(Reduction(m.lan, m.wan)) << "\n";
  out << StoresText(m);
  return out.str();
}

// ---- Prometheus ----

std::string Metrics(const Model& m) {
  std::ostringstream out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  family("wanopt_connections_active", "gauge", "Connections being relayed now.");
  for (const Daemon* b : m.boxes)
    out << "wanopt_connections_active{box=\"" << PromLabel(b->config().name) << "\"} " << b->counters().sessions_active << "\n";
  family("wanopt_connections_total", "counter", "Connections accepted since start.");
  for (const Daemon* b : m.boxes)
    out << "wanopt_connections_total{box=\"" << PromLabel(b->config().name) << "\"} " << b->counters().sessions_opened << "\n";
  family("wanopt_lan_bytes_total", "counter", "Bytes exchanged with clients and servers.");
  for (const Daemon* b : m.boxes) {
    out << "wanopt_lan_bytes_total{box=\"" << PromLabel(b->config().name) << "\",direction=\"in\"} " << b->counters().lan_in << "\n";
    out << "wanopt_lan_bytes_total{box=\"" << PromLabel(b->config().name) << "\",direction=\"out\"} " << b->counters().lan_out << "\n";
  }
  family("wanopt_wan_bytes_total", "counter", "Bytes on inner channels, framing included.");
  for (const Daemon* b : m.boxes) {
    out << "wanopt_wan_bytes_total{box=\"" << PromLabel(b->config().name) << "\",direction=\"in\"} " << b->counters().wan_in << "\n";
    out << "wanopt_wan_bytes_total{box=\"" << PromLabel(b->config().name) << "\",direction=\"out\"} " << b->counters().wan_out << "\n";
  }
  family("wanopt_pass_through_total", "counter", "Connections relayed unoptimized.");
  for (const Daemon* b : m.boxes)
    out << "wanopt_pass_through_total{box=\"" << PromLabel(b->config().name) << "\"} " << b->counters().pass_through << "\n";
  family("wanopt_resets_total", "counter", "Connections that ended in a reset.");
  for (const Daemon* b : m.boxes)
    out << "wanopt_resets_total{box=\"" << PromLabel(b->config().name) << "\"} " << b->counters().resets << "\n";
  family("wanopt_protocol_errors_total", "counter", "Malformed inner-channel input.");
  for (const Daemon* b : m.boxes)
    out << "wanopt_protocol_errors_total{box=\"" << PromLabel(b->config().name) << "\"} " << b->counters().protocol_errors << "\n";

  // Per application and per peer: connections gone from the table plus those in it,
  // so the counters never go backwards.
  struct Sum { uint64_t connections = 0, lan = 0, wan = 0; };
  std::map<std::pair<std::string, std::string>, Sum> by_app, by_peer;
  for (const Daemon* b : m.boxes) {
    for (const auto& [app, t] : b->table().PrunedByApplication()) {
      Sum& s = by_app[{b->config().name, app}];
      s.connections += t.connections, s.lan += t.lan_bytes, s.wan += t.wan_bytes;
    }
    for (const auto& [peer, t] : b->table().PrunedByPeer()) {
      if (peer.empty()) continue;
      Sum& s = by_peer[{b->config().name, peer}];
      s.connections += t.connections, s.lan += t.lan_bytes, s.wan += t.wan_bytes;
    }
  }
  for (const auto& c : m.connections) {
    Sum& a = by_app[{c.box, c.application}];
    a.connections += 1, a.lan += c.lan_bytes(), a.wan += c.wan_bytes();
    if (c.peer_id.empty()) continue;
    Sum& p = by_peer[{c.box, c.peer_id}];
    p.connections += 1, p.lan += c.lan_bytes(), p.wan += c.wan_bytes();
  }
  auto stores = Stores(m);
  family("wanopt_datastore_bytes", "gauge", "Bytes of chunks in the DRE datastore.");
  for (const auto& s : stores) out << "wanopt_datastore_bytes{box=\"" << PromLabel(s.box) << "\"} " << s.stats.bytes << "\n";
  family("wanopt_datastore_chunks", "gauge", "Chunks in the DRE datastore.");
  for (const auto& s : stores) out << "wanopt_datastore_chunks{box=\"" << PromLabel(s.box) << "\"} " << s.stats.chunks << "\n";
  family("wanopt_datastore_hits_total", "counter", "Datastore reads that found their chunk.");
  for (const auto& s : stores) out << "wanopt_datastore_hits_total{box=\"" << PromLabel(s.box) << "\"} " << s.stats.hits << "\n";
  family("wanopt_datastore_misses_total", "counter", "Datastore reads that did not.");
  for (const auto& s : stores) out << "wanopt_datastore_misses_total{box=\"" << PromLabel(s.box) << "\"} " << s.stats.misses << "\n";
  family("wanopt_datastore_degraded", "gauge", "1 once the DRE datastore failed to write: it stores nothing more.");
  for (const auto& s : stores) out << "wanopt_datastore_degraded{box=\"" << PromLabel(s.box) << "\"} " << (s.stats.degraded ? 1 : 0) << "\n";
  family("wanopt_datastore_evictions_total", "counter", "Chunks evicted for space.");
  for (const auto& s : stores) out << "wanopt_datastore_evictions_total{box=\"" << PromLabel(s.box) << "\"} " << s.stats.evictions << "\n";
  family("wanopt_application_connections_total", "counter", "Connections by application.");
  for (const auto& [k, s] : by_app)
    out << "wanopt_application_connections_total{box=\"" << PromLabel(k.first) << "\",application=\"" << PromLabel(k.second) << "\"} " << s.connections << "\n";
  family("wanopt_application_lan_bytes_total", "counter", "LAN bytes by application.");
  for (const auto& [k, s] : by_app)
    out << "wanopt_application_lan_bytes_total{box=\"" << PromLabel(k.first) << "\",application=\"" << PromLabel(k.second) << "\"} " << s.lan << "\n";
  family("wanopt_application_wan_bytes_total", "counter", "WAN bytes by application.");
  for (const auto& [k, s] : by_app)
    out << "wanopt_application_wan_bytes_total{box=\"" << PromLabel(k.first) << "\",application=\"" << PromLabel(k.second) << "\"} " << s.wan << "\n";
  family("wanopt_peer_connections_total", "counter", "Connections by peer box.");
  for (const auto& [k, s] : by_peer)
    out << "wanopt_peer_connections_total{box=\"" << PromLabel(k.first) << "\",peer=\"" << PromLabel(k.second) << "\"} " << s.connections << "\n";
  family("wanopt_peer_lan_bytes_total", "counter", "LAN bytes by peer box.");
  for (const auto& [k, s] : by_peer)
    out << "wanopt_peer_lan_bytes_total{box=\"" << PromLabel(k.first) << "\",peer=\"" << PromLabel(k.second) << "\"} " << s.lan << "\n";
  family("wanopt_peer_wan_bytes_total", "counter", "WAN bytes by peer box.");
  for (const auto& [k, s] : by_peer)
    out << "wanopt_peer_wan_bytes_total{box=\"" << PromLabel(k.first) << "\",peer=\"" << PromLabel(k.second) << "\"} " << s.wan << "\n";
  family("wanopt_peer_connections_active", "gauge", "Connections with each peer now.");
  for (const auto& [box, p] : m.peers)
    out << "wanopt_peer_connections_active{box=\"" << PromLabel(box) << "\",peer=\"" << PromLabel(p.device_id) << "\"} " << p.active << "\n";
  family("wanopt_peer_last_seen_seconds", "gauge", "Unix time each peer was last heard from.");
  for (const auto& [box, p] : m.peers)
    out << "wanopt_peer_last_seen_seconds{box=\"" << PromLabel(box) << "\",peer=\"" << PromLabel(p.device_id) << "\"} "
        << std::chrono::duration_cast<std::chrono::seconds>(p.last_seen.time_since_epoch()).count() << "\n";
  return out.str();
}

// ---- HTML ----

// LAN and WAN throughput over the last hour (or since start, when that is shorter)
// as an inline SVG: no script, no CDN.
std::string Chart(const Model& m) {
  constexpr int kWidth = 720, kHeight = 160;
  double span = 3600;
  if (!m.history.empty()) {
    span = std::clamp(std::chrono::duration<double>(m.now - m.history.front().at).count(), 10.0, 3600.0);
  }
  std::vector<std::pair<double, double>> rates;  // bytes/s per interval
  std::vector<double> times;
  for (size_t i = 1; i < m.history.size(); ++i) {
    double dt = std::chrono::duration<double>(m.history[i].at - m.history[i - 1].at).count();
    if (dt <= 0) continue;
    rates.emplace_back(static_cast<double>(m.history[i].lan_bytes - m.history[i - 1].lan_bytes) / dt,
                       static_cast<double>(m.history[i].wan_bytes - m.history[i - 1].wan_bytes) / dt);
    times.push_back(std::chrono::duration<double>(m.now - m.history[i].at).count());
  }
  double peak = 1;
  for (auto [lan, wan] : rates) peak = std::max({peak, lan, wan});
  auto points = [&](bool lan) {
    std::ostringstream p;
    for (size_t i = 0; i < rates.size(); ++i) {
      double x = kWidth - times[i] / span * kWidth;
      double v = lan ? rates[i].first : rates[i].second;
      double y = kHeight - v / peak * (kHeight - 10);
      p << (i ? " " : "") << static_cast<int>(x) << "," << static_cast<int>(y);
    }
    // A single interval still draws a visible segment.
    if (rates.size() == 1) p << " " << kWidth - 2 << "," << static_cast<int>(kHeight - (lan ? rates[0].first : rates[0].second) / peak * (kHeight - 10));
    return p.str();
  };
  std::ostringstream svg;
  svg << "<svg id=\"chart\" viewBox=\"0 0 " << kWidth << " " << kHeight + 20 << "\" width=\"" << kWidth << "\" height=\""
      << kHeight + 20 << "\" role=\"img\" aria-label=\"LAN and WAN throughput, last hour\">"
      << "<rect x=\"0\" y=\"0\" width=\"" << kWidth << "\" height=\"" << kHeight << "\" class=\"plot\"/>"
      << "<polyline class=\"lan\" points=\"" << points(true) << "\"/>"
      << "<polyline class=\"wan\" points=\"" << points(false) << "\"/>"
      << "<text x=\"4\" y=\"14\">peak " << Bytes(static_cast<uint64_t>(peak)) << "/s</text>"
      << "<text x=\"4\" y=\"" << kHeight + 15 << "\">-" << Age(m.now - std::chrono::seconds(static_cast<int64_t>(span)), m.now)
      << "</text><text x=\"" << kWidth - 30 << "\" y=\"" << kHeight + 15
      << "\">now</text></svg>";
  return svg.str();
}

std::string SortLink(const View& v, const std::string& column, const std::string& label, const std::string& token) {
  bool active = v.sort == column;
  std::string order = active && !v.descending ? "desc" : "asc";
  std::string href = "?sort=" + column + "&order=" + order + "&filter=" + UrlEncode(v.filter) +
                     (v.open_only ? "&show=open" : "") + (token.empty() ? "" : "&token=" + UrlEncode(token));
  return "<a href=\"" + HtmlEscape(href) + "\">" + HtmlEscape(label) + (active ? (v.descending ? " &#9660;" : " &#9650;") : "") + "</a>";
}

// The part of the page that refreshes: everything but the header and the form.
std::string Live(const Model& m, const View& v, const std::string& token) {
  std::ostringstream h;
  h << "<section class=\"totals\">"
    << "<div><b>" << m.active << "</b> active connections</div>"
    << "<div><b>" << m.opened << "</b> since start</div>"
    << "<div>LAN <b>" << Bytes(m.lan) << "</b></div>"
    << "<div>WAN <b>" << Bytes(m.wan) << "</b></div>"
    << "<div>reduction <b>" << Percent(Reduction(m.lan, m.wan)) << "</b></div>"
    << "<div>pass-through <b>" << m.pass_through << "</b></div>"
    << "<div>resets <b>" << m.resets << "</b></div>"
    << "<div>protocol errors <b>" << m.protocol_errors << "</b></div></section>";
  h << "<section class=\"row\"><div><h2>Throughput (LAN vs WAN), last hour</h2>" << Chart(m)
    << "<p class=\"legend\"><span class=\"lan\">&#9632;</span> LAN <span class=\"wan\">&#9632;</span> WAN</p></div>";
  h << "<div><h2>Applications</h2><table id=\"applications\"><tr><th>application</th><th>connections</th><th>active</th>"
       "<th>LAN</th><th>WAN</th><th>reduction</th></tr>";
  for (const auto& [name, a] : m.applications) {
    h << "<tr><td>" << HtmlEscape(name) << "</td><td>" << a.connections << "</td><td>" << a.active << "</td><td>"
      << Bytes(a.lan) << "</td><td>" << Bytes(a.wan) << "</td><td>" << Percent(Reduction(a.lan, a.wan)) << "</td></tr>";
  }
  h << "</table><h2>Peers</h2><table id=\"peers\"><tr><th>box</th><th>peer id</th><th>address</th><th>last seen</th>"
       "<th>connections</th><th>active</th></tr>";
  for (const auto& [box, p] : m.peers) {
    h << "<tr><td>" << HtmlEscape(box) << "</td><td>" << HtmlEscape(p.device_id) << "</td><td>" << HtmlEscape(p.address)
      << "</td><td>" << Age(p.last_seen, m.now) << " ago</td><td>" << p.connections << "</td><td>" << p.active << "</td></tr>";
  }
  h << "</table><h2>Datastore</h2>";
  auto stores = Stores(m);
  if (stores.empty()) {
    h << "<p id=\"datastore\">No datastore configured ([dre] datastore): DRE is off, LZ only.</p>";
  } else {
    h << "<table id=\"datastore\"><tr><th>box</th><th>size</th><th>chunks</th><th>hit rate</th><th>evictions</th>"
         "<th>corrupt dropped</th></tr>";
    for (const auto& s : stores) {
      h << "<tr><td>" << HtmlEscape(s.box) << "</td><td>" << Bytes(s.stats.bytes) << " of " << Bytes(s.max_bytes)
        << "</td><td>" << s.stats.chunks << "</td><td>" << Percent(s.hit_rate()) << "</td><td>" << s.stats.evictions
        << "</td><td>" << s.stats.corrupt_dropped << "</td></tr>";
    }
    h << "</table>";
  }
  h << "</div></section>";

  auto rows = Select(m, v);
  h << "<h2>Connections <small>(" << rows.size() << " shown of " << m.connections.size()
    << "; closed ones stay listed for a few minutes)</small></h2>";
  h << "<table id=\"connections\"><thead><tr>"
    << "<th>" << SortLink(v, "id", "id", token) << "</th><th>box</th>"
    << "<th>" << SortLink(v, "client", "client", token) << "</th>"
    << "<th>" << SortLink(v, "server", "server", token) << "</th>"
    << "<th>" << SortLink(v, "peer", "peer", token) << "</th>"
    << "<th>" << SortLink(v, "application", "application", token) << "</th>"
    << "<th title=\"ours / peer's / negotiated / applied\">policy</th>"
    << "<th>LAN in</th><th>LAN out</th><th>WAN in</th><th>WAN out</th>"
    << "<th title=\"DRE chunks sent or received as references / as new bytes; NACKs\">chunks hit/new</th>"
    << "<th>" << SortLink(v, "reduction", "reduction", token) << "</th>"
    << "<th>" << SortLink(v, "age", "age", token) << "</th>"
    << "<th>" << SortLink(v, "state", "state", token) << "</th><th>notes</th></tr></thead><tbody>";
  for (const auto* c : rows) {
    h << "<tr class=\"" << StateName(c->state) << "\"><td>" << c->id << "</td><td>" << HtmlEscape(c->box) << " ("
      << HtmlEscape(c->side) << ")</td><td>" << HtmlEscape(FormatEndpoint(c->client)) << "</td><td>"
      << HtmlEscape(FormatEndpoint(c->server)) << "</td><td>" << HtmlEscape(c->peer_id.empty() ? "-" : c->peer_id)
      << (c->peer_address.empty() ? "" : "<br><small>" + HtmlEscape(c->peer_address) + "</small>") << "</td><td>"
      << HtmlEscape(c->application) << "</td><td>" << HtmlEscape(PolicyQuad(c->policy)) << "</td><td>" << Bytes(c->lan_in)
      << "</td><td>" << Bytes(c->lan_out) << "</td><td>" << Bytes(c->wan_in) << "</td><td>" << Bytes(c->wan_out)
      << "</td><td>" << c->chunks_hit << "/" << c->chunks_missed
      << (c->nacks ? " (" + std::to_string(c->nacks) + " NACK)" : "") << "</td><td>" << Percent(c->reduction()) << "</td><td>" << Age(c->started, c->ended.value_or(m.now)) << "</td><td>"
      << StateName(c->state) << "</td><td>";
    for (const auto& n : c->notes) h << "<div class=\"note\">" << HtmlEscape(n) << "</div>";
    h << "</td></tr>";
  }
  h << "</tbody></table>";
  return h.str();
}

const char kStyle[] = R"(
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1b1f24;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:16px 0 6px}small{color:#57606a;font-weight:normal}
.meta{color:#57606a;margin-bottom:8px}
.totals{display:flex;flex-wrap:wrap;gap:8px}.totals div{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:6px 10px}
.row{display:flex;flex-wrap:wrap;gap:24px}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f3f6}th a{color:inherit}tr.reset td{background:#fff0f0}tr.pass-through td{background:#fff8e5}
tr.closed td{color:#57606a}.note{font-size:12px;color:#8a4600}
svg .plot{fill:#fff;stroke:#d0d7de}svg polyline{fill:none;stroke-width:2}svg .lan{stroke:#0969da;stroke-width:7;opacity:.4}svg .wan{stroke:#cf222e}
svg text{font-size:11px;fill:#57606a}.legend .lan{color:#0969da}.legend .wan{color:#cf222e}
form{margin:8px 0}
)";

// With JavaScript on, the live part is fetched again every 2 s as server-rendered
// (and so server-escaped) HTML: one renderer, no markup built from data in the browser.
const char kScript[] = R"(
(function(){
  var live=document.getElementById('live');
  function refresh(){
    var q=window.location.search;
    fetch('/live'+q,{cache:'no-store'}).then(function(r){return r.ok?r.text():null})
      .then(function(t){if(t!==null){live.innerHTML=t;}}).catch(function(){});
  }
  setInterval(refresh,2000);
  document.getElementById('autorefresh').textContent='refreshing every 2 s';
})();
)";

std::string Page(const Model& m, const View& v, const std::string& token) {
  std::ostringstream h;
  h << "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>wanopt status</title>"
    << "<meta name=\"viewport\" content=\"width=device-width\"><style>" << kStyle << "</style></head><body>";
  h << "<h1>wanopt</h1><div class=\"meta\">";
  for (const Daemon* b : m.boxes) {
    const Config& c = b->config();
    h << "<div>box <b>" << HtmlEscape(c.name) << "</b> " << HtmlEscape(channel::FormatDeviceId(c.device_id)) << " &middot; "
      << (c.datacenter ? "datacenter" : "") << (c.datacenter && !c.forwards.empty() ? " + " : "")
      << (c.forwards.empty() ? "" : "branch (" + std::to_string(c.forwards.size()) + " rules)") << " &middot; offers "
      << PolicyLetter(c.policy) << " &middot; up " << Age(b->started_at(), m.now) << "</div>";
  }
  h << "<div>inner channel encryption: none yet (TLS arrives with auto-discovery) &middot; <span id=\"autorefresh\">"
       "reload to refresh</span> &middot; <a href=\"/api/connections\">JSON</a> &middot; <a href=\"/metrics\">metrics</a></div></div>";
  h << "<form method=\"get\" action=\"/\"><input type=\"search\" name=\"filter\" placeholder=\"filter: address, peer, "
       "application, state, note\" size=\"48\" value=\""
    << HtmlEscape(v.filter) << "\"><input type=\"hidden\" name=\"sort\" value=\"" << HtmlEscape(v.sort)
    << "\"><input type=\"hidden\" name=\"order\" value=\"" << (v.descending ? "desc" : "asc") << "\">"
    << (token.empty() ? "" : "<input type=\"hidden\" name=\"token\" value=\"" + HtmlEscape(token) + "\">")
    << " <label><input type=\"checkbox\" name=\"show\" value=\"open\"" << (v.open_only ? " checked" : "")
    << "> open only</label> <button>apply</button></form>";
  h << "<div id=\"live\">" << Live(m, v, token) << "</div>";
  h << "<script>" << kScript << "</script></body></html>";
  return h.str();
}

// ---- HTTP ----

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  using Handler = std::function<http::response<http::string_body>(const http::request<http::string_body>&)>;
  HttpSession(tcp::socket socket, Handler& handler) : stream_(std::move(socket)), handler_(handler) {}

  void Start() { Read(); }

 private:
  void Read() {
    request_ = {};
    parser_.emplace();
    parser_->header_limit(16 * 1024);
    parser_->body_limit(16 * 1024);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return;
      self->request_ = self->parser_->release();
      self->response_ = self->handler_(self->request_);
      self->response_.keep_alive(self->request_.keep_alive());
      self->response_.prepare_payload();
      http::async_write(self->stream_, self->response_, [self](error_code ec, size_t) {
        if (ec || !self->response_.keep_alive()) {
          error_code ignored;
          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
          return;
        }
        self->Read();
      });
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  Handler& handler_;
};

}  // namespace

struct StatusServer::Impl {
  std::vector<const Daemon*> boxes;
  tcp::endpoint listen;
  std::string token;
  asio::io_context loop{1};
  tcp::acceptor acceptor{loop};
  asio::steady_timer sampler{loop};
  std::thread thread;
  std::mutex history_mu;
  std::deque<HistorySample> history;  // every 5 s, the last hour
  HttpSession::Handler handler;
  bool running = false;

  void Accept() {
    acceptor.async_accept([this](error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) std::make_shared<HttpSession>(std::move(socket), handler)->Start();
      Accept();
    });
  }

  void Sample() {
    HistorySample s{Clock::now(), 0, 0};
    for (const Daemon* b : boxes) {
      s.lan_bytes += b->counters().lan_in + b->counters().lan_out;
      s.wan_bytes += b->counters().wan_in + b->counters().wan_out;
    }
    {
      std::lock_guard lock(history_mu);
      history.push_back(s);
      while (history.size() > 720) history.pop_front();
    }
    sampler.expires_after(std::chrono::seconds(5));
    sampler.async_wait([this](error_code ec) {
      if (!ec) Sample();
    });
  }

  Model Snapshot() {
    std::lock_guard lock(history_mu);
    return Read(boxes, history);
  }

  bool Authorized(const http::request<http::string_body>& req, const std::map<std::string, std::string>& query) const {
    if (token.empty()) return true;
    auto it = query.find("token");
    if (it != query.end() && it->second == token) return true;
    auto auth = req.find(http::field::authorization);
    return auth != req.end() && auth->value() == "Bearer " + token;
  }

  http::response<http::string_body> Handle(const http::request<http::string_body>& req) {
    std::string target(req.target());
    auto query = ParseQuery(target);
    std::string path = target.substr(0, target.find('?'));
    auto reply = [&](http::status status, const char* type, std::string body) {
      http::response<http::string_body> res{status, req.version()};
      res.set(http::field::server, "wanopt");
      res.set(http::field::content_type, type);
      res.set(http::field::cache_control, "no-store");
      // The page is self-contained: no script, style or image from anywhere else.
      res.set("Content-Security-Policy",
              "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'");
      res.set("X-Content-Type-Options", "nosniff");
      res.body() = std::move(body);
      return res;
    };
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      auto res = reply(http::status::method_not_allowed, "text/plain", "read-only: GET only\n");
      res.set(http::field::allow, "GET, HEAD");
      return res;
    }
    if (!Authorized(req, query)) {
      auto res = reply(http::status::unauthorized, "text/plain", "this status server needs its access token\n");
      res.set(http::field::www_authenticate, "Bearer");
      return res;
    }
    bool text = query.count("format") && query.at("format") == "text";
    View view = ViewFrom(query);
    if (path == "/") return reply(http::status::ok, "text/html; charset=utf-8", Page(Snapshot(), view, token));
    if (path == "/live") return reply(http::status::ok, "text/html; charset=utf-8", Live(Snapshot(), view, token));
    if (path == "/api/connections") {
      Model m = Snapshot();
      return text ? reply(http::status::ok, "text/plain; charset=utf-8", ConnectionsText(m, view))
                  : reply(http::status::ok, "application/json", ConnectionsJson(m, view));
    }
    if (path == "/api/peers") {
      Model m = Snapshot();
      return text ? reply(http::status::ok, "text/plain; charset=utf-8", PeersText(m))
                  : reply(http::status::ok, "application/json", PeersJson(m));
    }
    if (path == "/api/summary") {
      Model m = Snapshot();
      return text ? reply(http::status::ok, "text/plain; charset=utf-8", SummaryText(m))
                  : reply(http::status::ok, "application/json", SummaryJson(m));
    }
    if (path == "/api/datastore") {
      Model m = Snapshot();
      if (text) return reply(http::status::ok, "text/plain; charset=utf-8", StoresText(m));
      json::Writer w;
      w.BeginObject();
      w.Key("datastore");
      WriteStores(w, m);
      w.EndObject();
      return reply(http::status::ok, "application/json", w.str());
    }
    if (path == "/metrics") return reply(http::status::ok, "text/plain; version=0.0.4", Metrics(Snapshot()));
    return reply(http::status::not_found, "text/plain", "not found\n");
  }
};

StatusServer::StatusServer(std::vector<const Daemon*> boxes, tcp::endpoint listen, std::string token)
    : impl_(std::make_unique<Impl>()) {
  impl_->boxes = std::move(boxes);
  impl_->listen = listen;
  impl_->token = std::move(token);
  impl_->handler = [impl = impl_.get()](const http::request<http::string_body>& req) { return impl->Handle(req); };
}

StatusServer::~StatusServer() { Stop(); }

bool StatusServer::Start(std::string* error) {
  error_code ec;
  impl_->acceptor.open(impl_->listen.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(impl_->listen, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "status: cannot listen on " + FormatEndpoint(impl_->listen) + ": " + ec.message();
    return false;
  }
  impl_->Sample();
  impl_->Accept();
  impl_->running = true;
  impl_->thread = std::thread([this] { impl_->loop.run(); });
  WANOPT_LOG(kInfo, "status") << "status page on " << url();
  return true;
}

void StatusServer::Stop() {
  if (!impl_->running) return;
  impl_->running = false;
  impl_->loop.stop();
  impl_->thread.join();
}

std::string StatusServer::url() const {
  error_code ec;
  tcp::endpoint at = impl_->acceptor.local_endpoint(ec);
  if (at.address().is_unspecified()) at.address(asio::ip::address_v4::loopback());
  return "http://" + FormatEndpoint(at) + "/" + (impl_->token.empty() ? "" : "?token=" + UrlEncode(impl_->token));
}

}  // namespace wanopt
