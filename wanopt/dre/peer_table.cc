#include "wanopt/dre/peer_table.h"

#include <sys/random.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <vector>

#include "util/bytes.h"
#include "util/log.h"

namespace wanopt::dre {
namespace {

// File layout: "WOPEER01" seed(32) then records of kRecordSize bytes:
// kind(1) fingerprint(16) content id(16). Kinds: 1 learn, 2 forget, 3 peer instance
// (8 bytes in the fingerprint field), 4 forget everything, 5 last applied policy (one
// byte, 0xff for none).
constexpr char kMagic[8] = {'W', 'O', 'P', 'E', 'E', 'R', '0', '1'};
constexpr size_t kRecordSize = 33;
enum : uint8_t { kLearn = 1, kForget = 2, kInstance = 3, kForgetAll = 4, kApplied = 5 };

std::string SafeName(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '_';
  return out;
}

}  // namespace

// The smallest map a prune pass runs on: below it a peering's whole map is a few MiB.
constexpr size_t kPruneFloor = 64 << 10;
// Slots of the map a Learn looks at while a pass is under way: a few hundred store
// lookups, some tens of microseconds. A pass over a map of N names takes about
// N / 256 Learns (the map is 3/8 to 3/4 full), which is what it grows meanwhile.
constexpr size_t kPruneSlice = 512;

PeerState::PeerState(std::string path, const Seed& seed, const datastore::ChunkStore* store)
    : path_(std::move(path)),
      seed_(seed),
      key_(std::make_unique<FingerprintKey>(seed)),
      store_(store),
      prune_at_(kPruneFloor),
      next_prune_at_(kPruneFloor) {}

std::optional<datastore::ContentId> PeerState::Find(const Fingerprint& fingerprint) const {
  std::lock_guard lock(mu_);
  const datastore::ContentId* id = index_.find(fingerprint);
  if (!id) return std::nullopt;
  return *id;
}

std::optional<datastore::ContentId> PeerState::FindForRepair(const Fingerprint& fingerprint) const {
  std::lock_guard lock(mu_);
  if (const datastore::ContentId* id = index_.find(fingerprint)) return *id;
  if (const datastore::ContentId* id = retired_.find(fingerprint)) return *id;
  return std::nullopt;
}

std::optional<Fingerprint> PeerState::Next(const Fingerprint& fingerprint) const {
  std::lock_guard lock(mu_);
  const Fingerprint* next = next_.find(fingerprint);
  if (!next) return std::nullopt;
  return *next;
}

void PeerState::SetNext(const Fingerprint& fingerprint, const Fingerprint& next) {
  std::lock_guard lock(mu_);
  // A guess, not knowledge. Guesses about chunks no longer named are useless: each
  // time the map doubles (from 64Ki) they go; past a hard bound it starts over.
  if (next_.size() >= next_prune_at_) {
    next_.Prune([this](const Fingerprint& named, const Fingerprint&) { return index_.contains(named); });
    next_prune_at_ = std::max(kPruneFloor, 2 * next_.size());
  }
  if (next_.size() >= (size_t{1} << 20)) next_.clear();
  next_.insert_or_assign(fingerprint, next);
}

void PeerState::AppendLocked(uint8_t kind, const uint8_t* a, size_t alen) {
  if (!log_) return;
  uint8_t record[kRecordSize] = {};
  record[0] = kind;
  std::memcpy(record + 1, a, std::min(alen, kRecordSize - 1));
  std::fwrite(record, 1, kRecordSize, log_);
  if (++records_ > 2 * index_.size() + 100000) RewriteLocked();
}

void PeerState::AppendLearnLocked(const Fingerprint& fingerprint, const datastore::ContentId& id) {
  uint8_t payload[32];
  auto fp = FingerprintBytes(fingerprint);
  std::memcpy(payload, fp.data(), 16);
  std::memcpy(payload + 16, id.data(), 16);
  AppendLocked(kLearn, payload, 32);
}

void PeerState::AppendForgetLocked(const Fingerprint& fingerprint) {
  auto fp = FingerprintBytes(fingerprint);
  AppendLocked(kForget, fp.data(), 16);
}

void PeerState::Learn(const Fingerprint& fingerprint, const datastore::ContentId& id) {
  std::lock_guard lock(mu_);
  index_.insert_or_assign(fingerprint, id);
  AppendLearnLocked(fingerprint, id);
  if (store_ && (pruning_ || index_.size() >= prune_at_)) PruneStepLocked();
}

void PeerState::Forget(const Fingerprint& fingerprint) {
  std::lock_guard lock(mu_);
  if (!index_.erase(fingerprint)) return;
  AppendForgetLocked(fingerprint);
}

size_t PeerState::memory_bytes() const {
  std::lock_guard lock(mu_);
  return index_.memory_bytes() + retired_.memory_bytes() + next_.memory_bytes();
}

size_t PeerTable::memory_bytes() const {
  std::vector<std::shared_ptr<PeerState>> loaded;
  {
    // Copied, so that a peering busy rewriting its file holds up this reading
    // only, not every new session's Get.
    std::lock_guard lock(mu_);
    loaded = loaded_;
  }
  size_t bytes = 0;
  for (const auto& peer : loaded) bytes += peer->memory_bytes();
  return bytes;
}

size_t PeerState::size() const {
  std::lock_guard lock(mu_);
  return index_.size();
}

uint64_t PeerState::peer_instance() const {
  std::lock_guard lock(mu_);
  return peer_instance_;
}

bool PeerState::SetPeerInstance(uint64_t instance) {
  std::lock_guard lock(mu_);
  if (instance == peer_instance_) return false;
  bool changed = peer_instance_ != 0;
  peer_instance_ = instance;
  if (changed) {
    retired_ = std::move(index_);
    index_.clear();
  }
  uint8_t payload[8];
  bytes::PutBe64(payload, instance);
  AppendLocked(changed ? kForgetAll : kInstance, payload, 8);
  if (changed) AppendLocked(kInstance, payload, 8);
  return changed;
}

void PeerState::set_last_applied(std::optional<Policy> p) {
  int value = p ? static_cast<int>(*p) : -1;
  if (last_applied_.exchange(value) == value) return;
  std::lock_guard lock(mu_);
  uint8_t payload = p ? static_cast<uint8_t>(*p) : 0xff;
  AppendLocked(kApplied, &payload, 1);
  if (log_) std::fflush(log_);  // rare, and what the next start encodes with
}

void PeerState::Rekey(const Seed& seed) {
  std::lock_guard lock(mu_);
  if (seed == seed_) return;  // two sessions brought the same new seed: the first rekeyed
  seed_ = seed;
  key_ = std::make_unique<FingerprintKey>(seed);
  index_.clear();
  retired_.clear();
  peer_instance_ = 0;
  RewriteLocked();
}

void PeerState::PruneStepLocked() {
  if (!pruning_) {
    pruning_ = true;
    prune_cursor_ = pruned_ = 0;
    prune_capacity_ = index_.capacity();
    prune_started_ = std::chrono::steady_clock::now();
  }
  if (index_.capacity() != prune_capacity_) {  // grew: reordered, start over
    prune_cursor_ = 0;
    prune_capacity_ = index_.capacity();
  }
  Fingerprint dropped[kPruneSlice];
  size_t n = 0;
  bool done = index_.PruneSlice(&prune_cursor_, kPruneSlice, [&](const Fingerprint& fingerprint,
                                                                  const datastore::ContentId& id) {
    if (store_->Contains(id)) return true;
    dropped[n++] = fingerprint;
    return false;
  });
  // Logged once out of the table (a record may rewrite the file from it).
  for (size_t i = 0; i < n; ++i) AppendForgetLocked(dropped[i]);
  pruned_ += n;
  if (!done) return;
  pruning_ = false;
  // The slices erase in place: give back what a pass that dropped most names left
  // empty (one rehash, seldom: only when under an eighth of the slots are used).
  if (index_.capacity() > 8 * index_.size()) index_.shrink_to_fit();
  // Names kept only to answer repairs after the peer's store changed: rarely any.
  retired_.Prune([this](const Fingerprint&, const datastore::ContentId& id) { return store_->Contains(id); });
  prune_at_ = std::max(kPruneFloor, 2 * index_.size());
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - prune_started_)
                .count();
  WANOPT_LOG(kDebug, "dre") << path_ << ": dropped " << pruned_ << " names of chunks the store evicted, "
                            << index_.size() << " left, in a pass over " << ms << " ms";
}

void PeerState::RewriteLocked() {
  if (path_.empty()) return;
  if (log_) std::fclose(log_);
  std::string temp = path_ + ".tmp";
  std::FILE* out = std::fopen(temp.c_str(), "wb");
  if (!out) {
    WANOPT_LOG(kWarn, "dre") << "cannot write " << temp << ": " << std::strerror(errno) << " (peer state not kept)";
    log_ = nullptr;
    return;
  }
  std::fwrite(kMagic, 1, sizeof kMagic, out);
  std::fwrite(seed_.data(), 1, seed_.size(), out);
  log_ = out;
  records_ = 0;
  uint8_t payload[32];
  bytes::PutBe64(payload, peer_instance_);
  AppendLocked(kInstance, payload, 8);
  payload[0] = last_applied_ < 0 ? 0xff : static_cast<uint8_t>(last_applied_.load());
  AppendLocked(kApplied, payload, 1);
  index_.ForEach([&](const Fingerprint& fingerprint, const datastore::ContentId& id) {
    AppendLearnLocked(fingerprint, id);
  });
  std::fflush(out);
  std::rename(temp.c_str(), path_.c_str());
}

PeerTable::PeerTable(std::string directory, const datastore::ChunkStore* store)
    : directory_(std::move(directory)), store_(store) {
  if (!directory_.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(directory_, ec);
  }
}

PeerTable::~PeerTable() {
  for (auto& [name, entry] : peers_) {
    if (!entry->peer) continue;
    std::lock_guard lock(entry->peer->mu_);
    if (entry->peer->log_) std::fclose(entry->peer->log_);
    entry->peer->log_ = nullptr;
  }
}

std::shared_ptr<PeerState> PeerTable::Get(const std::string& name, const std::optional<Seed>& seed) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard lock(mu_);
    std::shared_ptr<Entry>& slot = peers_[name];
    if (!slot) slot = std::make_shared<Entry>();
    entry = slot;
  }
  // Read outside the table's lock: a peering with a large file (66 MB for 2Mi names
  // takes a few hundred ms) holds up only its own sessions, not every peering's.
  bool loaded_now = false;
  std::call_once(entry->loaded, [&] {
    entry->peer = Load(name, seed);
    loaded_now = true;
    std::lock_guard lock(mu_);
    loaded_.push_back(entry->peer);
  });
  if (!loaded_now && seed) entry->peer->Rekey(*seed);
  return entry->peer;
}

size_t PeerTable::ForgetIdleFiles(std::chrono::seconds max_age) {
  if (directory_.empty()) return 0;
  // Held throughout: a Get that starts meanwhile waits, so a file is never deleted
  // while its peering is being read from it (a few ms, once a day).
  std::lock_guard lock(mu_);
  std::set<std::string> loaded;
  for (const auto& [name, entry] : peers_) loaded.insert(SafeName(name) + ".idx");
  const auto now = std::filesystem::file_time_type::clock::now();
  size_t deleted = 0;
  std::error_code ec;
  for (const auto& file : std::filesystem::directory_iterator(directory_, ec)) {
    std::string name = file.path().filename().string();
    if (!name.ends_with(".idx")) continue;
    std::error_code file_ec;
    if (loaded.count(name)) {
      // In use in this run: its file may not have changed (redundant traffic only
      // learns nothing), so its use is written down here.
      std::filesystem::last_write_time(file.path(), now, file_ec);
      continue;
    }
    auto written = std::filesystem::last_write_time(file.path(), file_ec);
    if (file_ec || now - written < max_age) continue;
    auto days = std::chrono::duration_cast<std::chrono::hours>(now - written).count() / 24;
    if (std::filesystem::remove(file.path(), file_ec)) {
      ++deleted;
      WANOPT_LOG(kInfo, "dre") << "peering file " << file.path().string() << " unused for " << days
                               << " days: deleted (the peering starts afresh if it comes back)";
    } else {
      // Kept, and tried again at the next sweep; the others still go.
      WANOPT_LOG(kWarn, "dre") << "peering file " << file.path().string() << " unused for " << days
                               << " days: cannot delete it: " << file_ec.message();
    }
  }
  return deleted;
}

std::shared_ptr<PeerState> PeerTable::Load(const std::string& name, const std::optional<Seed>& seed) const {
  std::string path = directory_.empty() ? "" : directory_ + "/" + SafeName(name) + ".idx";
  // Read back what this box knew of the peering.
  std::shared_ptr<PeerState> peer;
  size_t records = 0;
  bool whole_records = false;
  if (!path.empty()) {
    if (std::FILE* in = std::fopen(path.c_str(), "rb")) {
      char magic[8];
      Seed stored{};
      if (std::fread(magic, 1, 8, in) == 8 && std::memcmp(magic, kMagic, 8) == 0 &&
          std::fread(stored.data(), 1, stored.size(), in) == stored.size()) {
        peer.reset(new PeerState(path, stored, store_));
        // A rewritten file lists the entries in table order: reserve, or they pile up
        // in one probe run while the table grows (flat_hash_map.h).
        std::error_code ec;
        if (uintmax_t bytes = std::filesystem::file_size(path, ec); !ec) peer->index_.reserve(bytes / kRecordSize);
        // Read in blocks of whole records.
        std::vector<uint8_t> block(kRecordSize * 4096);
        size_t got;
        while ((got = std::fread(block.data(), 1, block.size(), in)) > 0) {
          whole_records = got % kRecordSize == 0;  // a torn last record: kill -9 mid-append
          for (size_t at = 0; at + kRecordSize <= got; at += kRecordSize, ++records) {
            const uint8_t* record = block.data() + at;
            auto fp = FingerprintFromBytes(std::span<const uint8_t, 16>(record + 1, 16));
            switch (record[0]) {
              case kLearn: {
                datastore::ContentId id;
                std::memcpy(id.data(), record + 17, 16);
                peer->index_.insert_or_assign(fp, id);
                break;
              }
              case kForget: peer->index_.erase(fp); break;
              case kInstance: peer->peer_instance_ = bytes::GetBe64(record + 1); break;
              case kForgetAll: peer->index_.clear(); break;
              case kApplied: peer->last_applied_ = record[1] > 3 ? -1 : record[1]; break;
            }
          }
          if (got < block.size()) break;
        }
        if (records == 0) whole_records = true;
      }
      std::fclose(in);
      // Used now (ForgetIdleFiles goes by this), even if nothing is appended.
      std::error_code ec;
      std::filesystem::last_write_time(path, std::filesystem::file_time_type::clock::now(), ec);
    }
  }
  bool append = false;
  if (!peer) {
    Seed fresh{};
    if (seed) {
      fresh = *seed;
    } else if (getrandom(fresh.data(), fresh.size(), 0) != static_cast<ssize_t>(fresh.size())) {
      WANOPT_LOG(kError, "dre") << "getrandom failed: " << std::strerror(errno);
    }
    peer.reset(new PeerState(path, fresh, store_));
  } else if (seed && *seed != peer->seed()) {
    peer->seed_ = *seed;
    peer->key_ = std::make_unique<FingerprintKey>(*seed);
    peer->index_.clear();
    peer->peer_instance_ = 0;
  } else {
    // Appended to as it is, unless it is worth compacting or ends in a torn record.
    append = whole_records && records <= 2 * peer->index_.size() + 100000;
  }
  std::lock_guard plock(peer->mu_);
  peer->index_.shrink_to_fit();  // reserved for every record in the file, forgets included
  if (append) peer->log_ = std::fopen(path.c_str(), "ab");
  if (peer->log_) {
    peer->records_ = records;
  } else {
    peer->RewriteLocked();  // compact (or start), and open the log for appending
  }
  return peer;
}

}  // namespace wanopt::dre
