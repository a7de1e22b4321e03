#include "wanopt/session/connection_table.h"

#include <algorithm>

namespace wanopt {

const char* StateName(ConnectionState state) {
  switch (state) {
    case ConnectionState::kConnecting: return "connecting";
    case ConnectionState::kOptimized: return "optimized";
    case ConnectionState::kPassThrough: return "pass-through";
    case ConnectionState::kClosed: return "closed";
    case ConnectionState::kReset: return "reset";
  }
  return "?";
}

double ConnectionSnapshot::reduction() const {
  if (lan_bytes() == 0 || wan_bytes() == 0) return 0.0;
  return 100.0 * (1.0 - static_cast<double>(wan_bytes()) / static_cast<double>(lan_bytes()));
}

ConnectionRecord::ConnectionRecord(uint64_t id, std::string box, std::string side, Policy ours) : id_(id) {
  data_.id = id;
  data_.box = std::move(box);
  data_.side = std::move(side);
  data_.policy.ours = ours;
  data_.started = std::chrono::system_clock::now();
}

void ConnectionRecord::SetEndpoints(const boost::asio::ip::tcp::endpoint& client,
                                    const boost::asio::ip::tcp::endpoint& server) {
  std::lock_guard lock(mu_);
  data_.client = client;
  data_.server = server;
}

void ConnectionRecord::SetPeer(const std::string& device_id, const std::string& address) {
  std::lock_guard lock(mu_);
  data_.peer_id = device_id;
  data_.peer_address = address;
}

void ConnectionRecord::SetPolicies(Policy peer, Policy negotiated, Policy applied) {
  std::lock_guard lock(mu_);
  data_.policy.peer = peer;
  data_.policy.negotiated = negotiated;
  data_.policy.applied = applied;
}

void ConnectionRecord::SetApplication(std::string_view name) {
  std::lock_guard lock(mu_);
  data_.application = std::string(name.substr(0, 32));
}

void ConnectionRecord::AddNote(std::string_view note) {
  std::lock_guard lock(mu_);
  if (data_.notes.size() >= 16) return;
  std::string text(note.substr(0, 200));
  for (const auto& existing : data_.notes) {
    if (existing == text) return;
  }
  data_.notes.push_back(std::move(text));
}

void ConnectionRecord::SetNote(std::string_view key, std::string_view note) {
  {
    std::lock_guard lock(mu_);
    for (auto& existing : data_.notes) {
      if (existing.starts_with(key)) {
        existing = std::string(note.substr(0, 200));
        return;
      }
    }
  }
  AddNote(note);
}

void ConnectionRecord::SetState(ConnectionState state) {
  std::lock_guard lock(mu_);
  data_.state = state;
}

void ConnectionRecord::End(bool reset) {
  std::lock_guard lock(mu_);
  if (data_.ended) return;
  data_.ended = std::chrono::system_clock::now();
  if (reset) data_.state = ConnectionState::kReset;
  else if (data_.state != ConnectionState::kReset) data_.state = ConnectionState::kClosed;
}

ConnectionSnapshot ConnectionRecord::Snapshot() const {
  ConnectionSnapshot copy;
  {
    std::lock_guard lock(mu_);
    copy = data_;
  }
  copy.lan_in = lan_in.load(std::memory_order_relaxed);
  copy.lan_out = lan_out.load(std::memory_order_relaxed);
  copy.wan_in = wan_in.load(std::memory_order_relaxed);
  copy.wan_out = wan_out.load(std::memory_order_relaxed);
  copy.chunks_hit = chunks_hit.load(std::memory_order_relaxed);
  copy.chunks_missed = chunks_missed.load(std::memory_order_relaxed);
  copy.nacks = nacks.load(std::memory_order_relaxed);
  copy.lz_level = lz_level.load(std::memory_order_relaxed);
  copy.lz_level_peak = lz_level_peak.load(std::memory_order_relaxed);
  return copy;
}

bool ConnectionRecord::ended() const {
  std::lock_guard lock(mu_);
  return data_.ended.has_value();
}

std::optional<SystemTime> ConnectionRecord::ended_at() const {
  std::lock_guard lock(mu_);
  return data_.ended;
}

namespace {
// The smallest table Add prunes: the closed records it may keep, and room beside them.
size_t PruneFloor(size_t max_closed) { return 2 * max_closed + 1024; }
}  // namespace

ConnectionTable::ConnectionTable(std::chrono::seconds closed_window, size_t max_closed)
    : closed_window_(closed_window), max_closed_(max_closed), prune_at_(PruneFloor(max_closed)) {}

std::shared_ptr<ConnectionRecord> ConnectionTable::Add(std::string box, std::string side, Policy ours) {
  std::lock_guard lock(mu_);
  // A prune costs a pass over the table; at doublings it is a constant per Add.
  if (records_.size() >= prune_at_) {
    Prune(std::chrono::system_clock::now());
    prune_at_ = std::max(PruneFloor(max_closed_), 2 * records_.size());
  }
  auto record = std::make_shared<ConnectionRecord>(++next_id_, std::move(box), std::move(side), ours);
  records_.emplace(record->id(), record);
  return record;
}

void ConnectionTable::PeerSeen(const std::string& device_id, const std::string& address, bool new_connection) {
  std::lock_guard lock(mu_);
  PeerSnapshot& peer = peers_[device_id];
  peer.device_id = device_id;
  peer.address = address;
  peer.last_seen = std::chrono::system_clock::now();
  if (new_connection) {
    ++peer.connections;
    ++peer.active;
  }
}

void ConnectionTable::PeerConnectionEnded(const std::string& device_id) {
  std::lock_guard lock(mu_);
  auto it = peers_.find(device_id);
  if (it == peers_.end()) return;
  if (it->second.active > 0) --it->second.active;
  it->second.last_seen = std::chrono::system_clock::now();
}

void ConnectionTable::Prune(SystemTime now) {
  size_t closed = 0;
  for (const auto& [id, record] : records_) closed += record->ended() ? 1 : 0;
  for (auto it = records_.begin(); it != records_.end();) {
    auto ended = it->second->ended_at();
    bool expired = ended && (now - *ended > closed_window_ || closed > max_closed_);
    if (!expired) {
      ++it;
      continue;
    }
    ConnectionSnapshot s = it->second->Snapshot();
    for (auto* totals : {&pruned_by_application_[s.application], &pruned_by_peer_[s.peer_id]}) {
      ++totals->connections;
      totals->lan_bytes += s.lan_bytes();
      totals->wan_bytes += s.wan_bytes();
    }
    --closed;
    it = records_.erase(it);
  }
}

std::vector<ConnectionSnapshot> ConnectionTable::Connections() {
  std::vector<std::shared_ptr<ConnectionRecord>> records;
  {
    std::lock_guard lock(mu_);
    Prune(std::chrono::system_clock::now());
    records.reserve(records_.size());
    for (const auto& [id, record] : records_) records.push_back(record);
  }
  std::vector<ConnectionSnapshot> out;
  out.reserve(records.size());
  for (const auto& record : records) out.push_back(record->Snapshot());
  return out;
}

std::vector<PeerSnapshot> ConnectionTable::Peers() const {
  std::lock_guard lock(mu_);
  std::vector<PeerSnapshot> out;
  for (const auto& [id, peer] : peers_) out.push_back(peer);
  return out;
}

std::map<std::string, ConnectionTable::Totals> ConnectionTable::PrunedByApplication() const {
  std::lock_guard lock(mu_);
  return pruned_by_application_;
}

std::map<std::string, ConnectionTable::Totals> ConnectionTable::PrunedByPeer() const {
  std::lock_guard lock(mu_);
  return pruned_by_peer_;
}

}  // namespace wanopt
