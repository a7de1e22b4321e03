// What each peering has in common: the fingerprint key the two boxes agreed on, and
// which chunks both of them know, named on the wire.
//
// A chunk is named two ways. In this box's chunk store it has a ContentId, keyed with
// a secret only this box knows. On the wire it has a Fingerprint, keyed with the
// peering's key (fingerprint.h). A PeerState maps the second to the first for every
// chunk that crossed the peering in either direction: the encoder asks "does the
// peer know this chunk?", the decoder "which stored chunk does this reference name?".
// The chunk store itself is shared by every peering.
//
// Persistence: each peering lives in one file under the datastore directory
// (peers/<name>.idx): its seed, the peer's store instance, then one fixed-size
// record per learned or forgotten chunk, appended. A torn last record (kill -9) is
// ignored when the file is read back; the file is rewritten compactly when it has
// grown to twice what it holds. A peering unused for kIdlePeeringAge loses its file
// (ForgetIdleFiles): a branch replaced or renumbered would otherwise leave one
// behind for ever, tens of MB each. Should it come back, it starts afresh, as a
// peer that lost its state does (a new seed: nothing known).
//
// Bounded by the chunk store: a chunk the store evicted is no use to name, so each
// time a peering's map has doubled (from 64Ki entries up) a pass drops the entries
// whose chunk the store no longer holds (a forget record each in the file). The pass
// is spread over the Learns that follow, a slice of the table each: done at once, it
// held the peering's lock for 0.4 s at 2Mi names (one store lookup a name), and
// every session of the peering with it. Without the bound the map grew with every
// chunk that ever crossed (a 30-minute soak: +400 MiB per box). The guesses of
// which chunk follows which (Next) go the same way, at most 1Mi of them.
//
// Thread-safe: the sessions of one peering share its PeerState.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "datastore/chunk_store.h"
#include "util/flat_hash_map.h"
#include "wanopt/channel/policy.h"
#include "wanopt/dre/fingerprint.h"

namespace wanopt::dre {

using Seed = std::array<uint8_t, kFingerprintSeedSize>;

class PeerState {
 public:
  // The key both boxes derive from the peering's seed.
  const FingerprintKey& key() const { return *key_; }
  const Seed& seed() const { return seed_; }

  std::optional<datastore::ContentId> Find(const Fingerprint& fingerprint) const;
  // As Find, but also among the chunks forgotten when the peer's store instance last
  // changed: a NACK for a reference sent just before we learned of the change must
  // still be answered with the chunk's bytes.
  std::optional<datastore::ContentId> FindForRepair(const Fingerprint& fingerprint) const;
  // Which chunk followed `fingerprint` the last time it crossed: the encoder's guess
  // for the chunk a changed chunk is a version of. Memory only, bounded (see the top).
  std::optional<Fingerprint> Next(const Fingerprint& fingerprint) const;
  void SetNext(const Fingerprint& fingerprint, const Fingerprint& next);
  void Learn(const Fingerprint& fingerprint, const datastore::ContentId& id);
  void Forget(const Fingerprint& fingerprint);
  size_t size() const;
  // What its maps take: the names, those kept for repairs, the guesses.
  size_t memory_bytes() const;

  // The peer's chunk store instance as last seen (0: unknown). A different one means
  // the peer's store was wiped or replaced: everything it knew is gone.
  uint64_t peer_instance() const;
  // Records the peer's instance; when it changed, forgets every chunk. Returns true
  // when it changed.
  bool SetPeerInstance(uint64_t instance);
  // A new seed from the peer (it lost its state): new key, nothing known. Nothing
  // happens when `seed` is the one it has.
  void Rekey(const Seed& seed);

  // The policy the last connection of this peering applied (nullopt: none yet). The
  // opening side encodes with it from the first byte instead of waiting a round trip
  // for the peer's answer. Kept in the peer file, so it survives a restart.
  std::optional<Policy> last_applied() const {
    int p = last_applied_.load();
    return p < 0 ? std::nullopt : std::optional<Policy>(static_cast<Policy>(p));
  }
  void set_last_applied(std::optional<Policy> p);

 private:
  friend class PeerTable;
  PeerState(std::string path, const Seed& seed, const datastore::ChunkStore* store);
  // Appends a record to the peer file (nothing without one).
  void AppendLocked(uint8_t kind, const uint8_t* a, size_t alen);
  void AppendLearnLocked(const Fingerprint& fingerprint, const datastore::ContentId& id);
  void AppendForgetLocked(const Fingerprint& fingerprint);
  void RewriteLocked();
  // One slice of the pass that drops the entries whose chunk the store no longer
  // holds (see the top); starts a pass when the map has doubled.
  void PruneStepLocked();

  const std::string path_;
  mutable std::mutex mu_;
  Seed seed_;
  std::unique_ptr<FingerprintKey> key_;
  uint64_t peer_instance_ = 0;
  FlatHashMap<Fingerprint, datastore::ContentId> index_;
  FlatHashMap<Fingerprint, datastore::ContentId> retired_;  // index_ before the last instance change
  FlatHashMap<Fingerprint, Fingerprint> next_;
  std::atomic<int> last_applied_{-1};
  std::FILE* log_ = nullptr;
  size_t records_ = 0;
  const datastore::ChunkStore* const store_;  // null: not bounded (tests, no store)
  size_t prune_at_;                           // index_ size that starts a prune pass
  bool pruning_ = false;                      // a pass is under way: prune_cursor_ is in index_
  size_t prune_cursor_ = 0;
  size_t prune_capacity_ = 0;                 // index_.capacity() when the pass (re)started
  size_t pruned_ = 0;                         // names the pass dropped so far
  std::chrono::steady_clock::time_point prune_started_;
  size_t next_prune_at_;                      // next_ size that drops guesses about unnamed chunks
};

// A peering's file not used for this long is deleted (see the top).
inline constexpr std::chrono::hours kIdlePeeringAge{24 * 90};

class PeerTable {
 public:
  // `directory`: where peer files live (created if missing). Empty: memory only.
  // `store` (outlives the table; may be null) bounds what each peering keeps.
  explicit PeerTable(std::string directory, const datastore::ChunkStore* store = nullptr);
  ~PeerTable();

  // The peering named `name` (a device id or a peer address). When it is new, a
  // random seed is drawn (the opening side) or `seed` is taken (the accepting side).
  // When `seed` differs from the known one, the peering is rekeyed.
  std::shared_ptr<PeerState> Get(const std::string& name, const std::optional<Seed>& seed);

  // Deletes the files of peerings last used more than `max_age` ago (used: loaded
  // by a Get, in this run or an earlier one); the files of peerings loaded in this
  // run are marked used now instead. Returns how many it deleted. The daemon calls
  // it at start and once a day.
  size_t ForgetIdleFiles(std::chrono::seconds max_age = kIdlePeeringAge);

  // What every peering loaded in this run takes in memory (PeerState::memory_bytes).
  size_t memory_bytes() const;

 private:
  // A peering, read from its file by the first Get (the others wait for that one).
  struct Entry {
    std::once_flag loaded;
    std::shared_ptr<PeerState> peer;
  };
  // Reads the peering's file (or starts it) and opens it for appending.
  std::shared_ptr<PeerState> Load(const std::string& name, const std::optional<Seed>& seed) const;

  const std::string directory_;
  const datastore::ChunkStore* const store_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> peers_;  // guarded by mu_; an Entry's peer by its once_flag
  std::vector<std::shared_ptr<PeerState>> loaded_;       // guarded by mu_: each peer once loaded
};

}  // namespace wanopt::dre
