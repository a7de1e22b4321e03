#include <algorithm>
#include <sstream>

#include "wanopt/daemon/daemon.h"
#include "wanopt/status/model.h"
#include "wanopt/status/render.h"

namespace wanopt::status {
namespace {

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

}  // namespace

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
    << "<div>protocol errors <b>" << m.protocol_errors << "</b></div>";
  // Boxes that intercept: a probe SYN sent again with the option was lost on the WAN
  // or dropped by a server that drops options.
  if (m.discovery_probes > 0) {
    h << "<div title=\"auto-discovery probes, and their SYNs sent again unanswered: with option 0x21 (lost on the "
         "WAN, or a server that drops options), then without\">discovery probes <b>"
      << m.discovery_probes << "</b>, SYNs resent <b>" << m.probe_syns_resent_with_option << "</b> with option 0x21, <b>"
      << m.probe_syns_resent_without_option << "</b> without</div>";
  }
  h << "</section>";
  h << "<section class=\"row\"><div><h2>Throughput (LAN vs WAN), last hour</h2>" << Chart(m)
    << "<p class=\"legend\"><span class=\"lan\">&#9632;</span> LAN <span class=\"wan\">&#9632;</span> WAN</p></div>";
  h << "<div><h2>Applications</h2><table id=\"applications\"><tr><th>application</th><th>connections</th><th>active</th>"
       "<th>LAN</th><th>WAN</th><th>reduction</th></tr>";
  for (const auto& [name, a] : m.applications) {
    h << "<tr><td>" << HtmlEscape(name) << "</td><td>" << a.connections << "</td><td>" << a.active << "</td><td>"
      << Bytes(a.lan) << "</td><td>" << Bytes(a.wan) << "</td><td>" << Percent(Reduction(a.lan, a.wan)) << "</td></tr>";
  }
  h << "</table><h2>Peers</h2><table id=\"peers\"><tr><th>box</th><th>peer id</th><th>address</th><th>last seen</th>"
       "<th>connections</th><th>active</th><th>where</th></tr>";
  for (const auto& [box, p] : m.peers) {
    h << "<tr><td>" << HtmlEscape(box) << "</td><td>" << HtmlEscape(p.device_id) << "</td><td>" << HtmlEscape(p.address)
      << "</td><td>" << Age(p.last_seen, m.now) << " ago</td><td>" << p.connections << "</td><td>" << p.active << "</td><td>"
      << HtmlEscape(PlaceOf(m, box, p).text) << "</td></tr>";
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
  if (!m.wccp.empty()) {
    // The WCCP text view as it is: routers, views, the designated cache, the split.
    h << "<h2>WCCP</h2><pre id=\"wccp\">" << HtmlEscape(WccpText(m), /*keep_newlines=*/true) << "</pre>";
  }
  // What the protocol modules' box-wide parts hold (mapi's port bindings...).
  if (auto modules = ModulesOf(m.boxes); !modules.empty()) {
    h << "<h2>Modules</h2><pre id=\"modules\">" << HtmlEscape(ModulesText(modules, 50), /*keep_newlines=*/true)
      << "</pre>";
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
    << "<th title=\"zstd level of what this box sends: now (highest); it rises while the WAN is the bottleneck\">zstd</th>"
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
      << HtmlEscape(c->application) << "</td><td>" << HtmlEscape(PolicyQuad(c->policy)) << "</td><td>"
      << LzLevelText(c->lz_level, c->lz_level_peak) << "</td><td>" << Bytes(c->lan_in)
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

namespace {

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

}  // namespace

std::string Page(const Model& m, const View& v, const std::string& token) {
  std::ostringstream h;
  h << "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>wanopt status</title>"
    << "<meta name=\"viewport\" content=\"width=device-width\"><style>" << kStyle << "</style></head><body>";
  h << "<h1>wanopt</h1><div class=\"meta\">";
  for (const Daemon* b : m.boxes) {
    const Config& c = b->config();
    BoxFacts facts = FactsOf(c);
    h << "<div class=\"box\">box <b>" << HtmlEscape(c.name) << "</b> " << HtmlEscape(channel::FormatDeviceId(c.device_id))
      << " &middot; <span class=\"role\">" << HtmlEscape(facts.role_text) << "</span> &middot; offers "
      << PolicyLetter(c.policy) << " &middot; up " << Age(b->started_at(), m.now)
      << " &middot; inner channels: <span class=\"encryption\">" << HtmlEscape(facts.encryption_text) << "</span></div>";
  }
  h << "<div><span id=\"autorefresh\">reload to refresh</span> &middot; <a href=\"/api/connections\">JSON</a> &middot; "
       "<a href=\"/metrics\">metrics</a></div></div>";
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


}  // namespace wanopt::status
