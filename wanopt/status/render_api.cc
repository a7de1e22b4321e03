#include <sstream>

#include "datastore/chunk_store.h"
#include "wanopt/daemon/daemon.h"
#include "wanopt/status/model.h"
#include "wanopt/status/render.h"
#include "util/json.h"
#include "util/process_memory.h"
#include "wanopt/dre/peer_table.h"

namespace wanopt::status {
namespace {

// What each box's DRE state holds in memory, by part: the one list /metrics prints
// (wanopt_memory_bytes) and `show summary` adds up.
struct MemoryPart {
  std::string box;
  const char* part;
  uint64_t bytes;
};
std::vector<MemoryPart> DreMemoryParts(const Model& m) {
  std::vector<MemoryPart> parts;
  for (const auto& s : Stores(m)) {
    parts.push_back({s.box, "read_cache", s.stats.cache_bytes});
    parts.push_back({s.box, "chunk_index", s.stats.index_memory_bytes});
    parts.push_back({s.box, "index_db", s.stats.index_db_memory_bytes});
    parts.push_back({s.box, "write_queue", s.stats.queued_bytes});
  }
  for (const Daemon* b : m.boxes) {
    if (b->peers()) parts.push_back({b->config().name, "peerings", b->peers()->memory_bytes()});
  }
  return parts;
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
    w.Field("disk_bytes", s.stats.disk_bytes);  // segment files: evicted chunks stay until their segment goes
    w.Field("chunks", s.stats.chunks);
    w.Field("hits", s.stats.hits);
    w.Field("misses", s.stats.misses);
    w.Field("hit_rate", s.hit_rate());
    w.Field("memory_hits", s.stats.memory_hits);  // hits served from memory (the read cache, the write queue)
    w.Field("read_cache_bytes", s.stats.cache_bytes);
    w.Field("read_cache_max_bytes", s.read_cache_max_bytes);  // [dre] read_cache_mb
    w.Field("evictions", s.stats.evictions);
    w.Field("corrupt_dropped", s.stats.corrupt_dropped);
    w.Field("read_errors", s.stats.read_errors);  // the disk failed a read: a miss, the chunk kept
    w.Field("degraded", s.stats.degraded);  // a write failed: storing stopped, DRE off for new connections
    w.Field("write_errors", s.stats.write_errors);
    w.Field("index_bytes_per_chunk", s.stats.chunks ? s.stats.index_memory_bytes / s.stats.chunks : 0);
    w.Field("index_memory_bytes", s.stats.index_memory_bytes);
    w.Field("index_db_memory_bytes", s.stats.index_db_memory_bytes);  // RocksDB's memtables and block cache
    w.EndObject();
  }
  w.EndArray();
}

}  // namespace

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

std::string DatastoreJson(const Model& m) {
  json::Writer w;
  w.BeginObject();
  w.Key("datastore");
  WriteStores(w, m);
  w.EndObject();
  return w.str();
}

// ---- JSON ----

// Every box's encryption in one line: "NAME: ...; NAME: ..." (just the line for one box).
std::string EncryptionLine(const Model& m) {
  std::string line;
  for (const Daemon* box : m.boxes) {
    std::string text = FactsOf(box->config()).encryption_text;
    line += (line.empty() ? "" : "; ") + (m.boxes.size() == 1 ? text : box->config().name + ": " + text);
  }
  return line;
}

namespace {

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
  w.Field("lz_level", c.lz_level);
  w.Field("lz_level_peak", c.lz_level_peak);
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

}  // namespace

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
    PeerPlace place = PlaceOf(m, box, p);
    w.Field("address_kind", place.address_kind);
    w.Key("box_address");
    if (place.box_address.empty()) w.Null();
    else w.Value(place.box_address);
    w.Key("via_server");
    if (place.via_server.empty()) w.Null();
    else w.Value(place.via_server);
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
    w.Field("uptime_seconds", std::chrono::duration_cast<std::chrono::seconds>(m.now - box->started_at()).count());
    BoxFacts facts = FactsOf(box->config());
    w.Key("roles");
    w.BeginArray();
    for (const auto& role : facts.roles) w.Value(role);
    w.EndArray();
    w.Field("role", facts.role_text);
    w.Key("interception");
    if (const auto& i = box->config().intercept) {
      w.BeginObject();
      w.Field("rules", i->rules.size());
      w.Field("answering_probes", i->answer);
      w.Field("listen_port", i->listen_port);
      w.Field("queue", i->queue);
      w.EndObject();
    } else {
      w.Null();
    }
    w.Key("inner_channel_encryption");
    w.BeginObject();
    w.Field("mode", facts.encryption_mode);
    w.Key("plaintext_rules");
    w.BeginArray();
    for (const auto& rule : facts.plaintext_rules) w.Value(rule);
    w.EndArray();
    w.Field("summary", facts.encryption_text);
    w.EndObject();
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
  w.Field("refused_peers", m.refused_peers);  // plaintext inner channels from outside plaintext_peers
  w.Field("discovery_probes", m.discovery_probes);
  w.Field("probe_syns_resent_with_option", m.probe_syns_resent_with_option);
  w.Field("probe_syns_resent_without_option", m.probe_syns_resent_without_option);
  w.EndObject();
  // The process (every box in it): util/process_memory.h says how to read these.
  ProcessMemory memory = ReadProcessMemory();
  w.Key("memory");
  w.BeginObject();
  w.Field("resident_bytes", memory.resident_bytes);
  // null: not known under this allocator (util/process_memory.h).
  for (auto [key, bytes] : {std::pair{"heap_in_use_bytes", memory.heap_in_use_bytes},
                            std::pair{"heap_free_bytes", memory.heap_free_bytes}}) {
    w.Key(key);
    if (memory.heap_known) w.Value(bytes);
    else w.Null();
  }
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
  // Kept for readers of the old field: each box's own line (boxes[].inner_channel_encryption
  // has the detail).
  w.Field("inner_channel_encryption", EncryptionLine(m));
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
      << Pad("POLICY", 9) << Pad("ZSTD", 14) << Pad("LAN", 11) << Pad("WAN", 11) << Pad("RED", 8) << Pad("AGE", 8) << Pad("STATE", 13)
      << "NOTES\n";
  for (const auto* c : Select(m, v)) {
    std::string notes;
    for (const auto& n : c->notes) notes += (notes.empty() ? "" : "; ") + n;
    out << Pad(std::to_string(c->id), 6) << Pad(c->side, 11) << Pad(FormatEndpoint(c->client), 23)
        << Pad(FormatEndpoint(c->server), 23) << Pad(c->peer_id.empty() ? "-" : c->peer_id, 18) << Pad(c->application, 8)
        << Pad(PolicyQuad(c->policy), 9) << Pad(LzLevelText(c->lz_level, c->lz_level_peak), 14) << Pad(Bytes(c->lan_bytes()), 11) << Pad(Bytes(c->wan_bytes()), 11)
        << Pad(Percent(c->reduction()), 8) << Pad(Age(c->started, m.now), 8) << Pad(StateName(c->state), 13) << notes
        << "\n";
  }
  return out.str();
}

std::string PeersText(const Model& m) {
  std::ostringstream out;
  out << Pad("BOX", 20) << Pad("PEER ID", 19) << Pad("ADDRESS", 24) << Pad("LAST SEEN", 22) << Pad("CONNECTIONS", 13)
      << Pad("ACTIVE", 8) << "WHERE\n";
  for (const auto& [box, p] : m.peers) {
    out << Pad(box, 20) << Pad(p.device_id, 19) << Pad(p.address, 24) << Pad(Iso8601(p.last_seen), 22)
        << Pad(std::to_string(p.connections), 13) << Pad(std::to_string(p.active), 8) << PlaceOf(m, box, p).text << "\n";
  }
  return out.str();
}

std::string SummaryText(const Model& m) {
  std::ostringstream out;
  for (const Daemon* box : m.boxes) {
    out << "box " << box->config().name << " (" << channel::FormatDeviceId(box->config().device_id)
        << "): " << FactsOf(box->config()).role_text << ", up " << Age(box->started_at(), m.now) << "\n"
        << "  inner channels: " << FactsOf(box->config()).encryption_text << "\n";
  }
  out << "connections: " << m.active << " active, " << m.opened << " since start; pass-through " << m.pass_through
      << ", resets " << m.resets << ", protocol errors " << m.protocol_errors << "\n";
  out << "LAN " << Bytes(m.lan) << ", WAN " << Bytes(m.wan) << ", reduction " << Percent(Reduction(m.lan, m.wan)) << "\n";
  // The heap's DRE share: what each box's datastore and peerings hold (as /metrics'
  // wanopt_memory_bytes), summed over the boxes of this process.
  uint64_t dre_state = 0;
  for (const MemoryPart& p : DreMemoryParts(m)) dre_state += p.bytes;
  ProcessMemory memory = ReadProcessMemory();
  out << "memory: resident " << Bytes(memory.resident_bytes);
  if (memory.heap_known) {
    out << "; heap in use " << Bytes(memory.heap_in_use_bytes) << " (DRE state " << Bytes(dre_state)
        << "), freed and held by the allocator up to " << Bytes(memory.heap_free_bytes) << "\n";
  } else {
    out << "; DRE state " << Bytes(dre_state) << " (no heap figures from this allocator)\n";
  }
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
  family("wanopt_tls_handshakes_total", "counter",
         "TLS inner channels up: kind full (certificates checked, or the PSK) or resumed (from a ticket).");
  for (const Daemon* b : m.boxes) {
    out << "wanopt_tls_handshakes_total{box=\"" << PromLabel(b->config().name) << "\",kind=\"full\"} " << b->counters().tls_full << "\n";
    out << "wanopt_tls_handshakes_total{box=\"" << PromLabel(b->config().name) << "\",kind=\"resumed\"} " << b->counters().tls_resumed << "\n";
  }
  family("wanopt_refused_peers_total", "counter", "Plaintext inner channels refused: not from [datacenter] plaintext_peers.");
  for (const Daemon* b : m.boxes)
    out << "wanopt_refused_peers_total{box=\"" << PromLabel(b->config().name) << "\"} " << b->counters().refused_peers << "\n";
  family("wanopt_discovery_probes_total", "counter",
         "Auto-discovery probes: connections to a server that carry or pass on option 0x21.");
  for (const Daemon* b : m.boxes)
    out << "wanopt_discovery_probes_total{box=\"" << PromLabel(b->config().name) << "\"} " << b->counters().discovery_probes << "\n";
  family("wanopt_discovery_syn_retransmissions_total", "counter",
         "Probe SYNs sent again unanswered: with option 0x21 (a SYN lost on the WAN, or a server that drops options), "
         "or without it (the try for a server that may drop options).");
  for (const Daemon* b : m.boxes) {
    out << "wanopt_discovery_syn_retransmissions_total{box=\"" << PromLabel(b->config().name) << "\",option=\"with\"} "
        << b->counters().probe_syns_resent_with_option << "\n";
    out << "wanopt_discovery_syn_retransmissions_total{box=\"" << PromLabel(b->config().name) << "\",option=\"without\"} "
        << b->counters().probe_syns_resent_without_option << "\n";
  }

  ProcessMemory memory = ReadProcessMemory();
  family("wanopt_process_resident_bytes", "gauge", "Resident memory of the process (every box in it).");
  out << "wanopt_process_resident_bytes " << memory.resident_bytes << "\n";
  family("wanopt_process_heap_bytes", "gauge",
         "The heap: in_use by the program, or free (held in the allocator's free lists; an upper bound, as "
         "some of their pages may already be handed back).");
  if (memory.heap_known) {  // else no samples: not known under this allocator
    out << "wanopt_process_heap_bytes{state=\"in_use\"} " << memory.heap_in_use_bytes << "\n";
    out << "wanopt_process_heap_bytes{state=\"free\"} " << memory.heap_free_bytes << "\n";
  }

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
  family("wanopt_datastore_disk_bytes", "gauge", "Bytes of the DRE datastore's segment files (evicted chunks included until their segment is released).");
  for (const auto& s : stores) out << "wanopt_datastore_disk_bytes{box=\"" << PromLabel(s.box) << "\"} " << s.stats.disk_bytes << "\n";
  family("wanopt_datastore_read_errors_total", "counter", "Datastore reads the disk failed (each a miss; the chunk is kept).");
  for (const auto& s : stores) out << "wanopt_datastore_read_errors_total{box=\"" << PromLabel(s.box) << "\"} " << s.stats.read_errors << "\n";
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
  family("wanopt_memory_bytes", "gauge",
         "What the box's DRE state holds in memory, by part: the datastore's read_cache, chunk_index, index_db "
         "(RocksDB's memtables and block cache) and write_queue, and the peerings' chunk names and guesses.");
  for (const MemoryPart& p : DreMemoryParts(m))
    out << "wanopt_memory_bytes{box=\"" << PromLabel(p.box) << "\",part=\"" << p.part << "\"} " << p.bytes << "\n";
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
  family("wanopt_module_gauge", "gauge", "Figures of the protocol modules' box-wide parts (e.g. smb2 kept_bytes).");
  for (const Daemon* b : m.boxes) {
    for (const auto& part : b->box_modules().parts()) {
      for (const auto& [name, value] : part.box->Gauges()) {
        out << "wanopt_module_gauge{box=\"" << PromLabel(b->config().name) << "\",module=\"" << PromLabel(part.name)
            << "\",name=\"" << PromLabel(name) << "\"} " << value << "\n";
      }
    }
  }
  family("wanopt_peer_connections_active", "gauge", "Connections with each peer now.");
  for (const auto& [box, p] : m.peers)
    out << "wanopt_peer_connections_active{box=\"" << PromLabel(box) << "\",peer=\"" << PromLabel(p.device_id) << "\"} " << p.active << "\n";
  family("wanopt_peer_last_seen_seconds", "gauge", "Unix time each peer was last heard from.");
  for (const auto& [box, p] : m.peers)
    out << "wanopt_peer_last_seen_seconds{box=\"" << PromLabel(box) << "\",peer=\"" << PromLabel(p.device_id) << "\"} "
        << std::chrono::duration_cast<std::chrono::seconds>(p.last_seen.time_since_epoch()).count() << "\n";
  return out.str();
}


}  // namespace wanopt::status
