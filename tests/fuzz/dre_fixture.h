// What the DRE decoder fuzzer and its seed generator (seeds/make_seeds.cc) share:
// the peering both "boxes" are in, the chunks both already know, and a chunk store
// in memory.
//
// The fuzzer plays a hostile peer that holds valid credentials: it knows the
// peering's seed (so it can name chunks by their real fingerprints), and the
// receiving box already knows a few chunks (so REF and DELTA instructions resolve).
// The generator encodes real traffic with the project's Encoder under exactly this
// state, so that its frames decode, and the fuzzer mutates them from there.
//
// The store is in memory, not RocksDB: the decoder sees only the ChunkStore
// interface, and a fresh store per input keeps every run deterministic and fast.
#pragma once

#include <xxhash.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "datastore/chunk_store.h"
#include "wanopt/dre/chunker.h"
#include "wanopt/dre/peer_table.h"

namespace wanopt::fuzz {

// The peering's seed: fixed, as both boxes of a real peering agree on one.
inline dre::Seed PeeringSeed() {
  dre::Seed seed{};
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(0xa5 ^ (i * 37));
  return seed;
}

// ChunkStore in memory: ids are XXH3-128 with a fixed seed (a real store keys them
// with its own secret; nothing here depends on which).
class MemoryStore final : public datastore::ChunkStore {
 public:
  datastore::ContentId IdOf(std::span<const uint8_t> chunk) const override {
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_withSeed(chunk.data(), chunk.size(), 0x5eed));
    datastore::ContentId id;
    std::memcpy(id.data(), canonical.digest, id.size());
    return id;
  }
  datastore::ContentId Put(std::span<const uint8_t> chunk) override {
    auto id = IdOf(chunk);
    ++stats_.puts;
    if (!chunks_.count(id)) chunks_[id] = std::make_shared<const std::vector<uint8_t>>(chunk.begin(), chunk.end());
    return id;
  }
  std::optional<std::vector<uint8_t>> Get(const datastore::ContentId& id) override {
    auto it = chunks_.find(id);
    if (it == chunks_.end()) return std::nullopt;
    return *it->second;
  }
  bool GetInto(const datastore::ContentId& id, Buffer& out) override {
    auto it = chunks_.find(id);
    if (it == chunks_.end()) return false;
    out.Append(*it->second);
    return true;
  }
  bool Contains(const datastore::ContentId& id) const override { return chunks_.count(id) != 0; }
  bool Lasting(const datastore::ContentId& id) const override { return Contains(id); }
  Stats stats() const override { return stats_; }
  bool healthy() const override { return true; }
  std::string degraded_reason() const override { return {}; }
  void Flush() override {}
  void CopyFrom(const MemoryStore& other) { chunks_ = other.chunks_; }
  // Stores `chunk` under `id` whatever its bytes: a store that serves wrong bytes.
  void PutUnder(const datastore::ContentId& id, std::span<const uint8_t> chunk) {
    chunks_[id] = std::make_shared<const std::vector<uint8_t>>(chunk.begin(), chunk.end());
  }

 private:
  std::map<datastore::ContentId, std::shared_ptr<const std::vector<uint8_t>>> chunks_;
  Stats stats_;
};

// About 40 KiB of text-like bytes, the same on every run: what crossed the peering
// before. Its chunks are what both boxes know.
inline const std::vector<uint8_t>& KnownText() {
  static const std::vector<uint8_t> text = [] {
    static const char* const kWords[] = {"wan", "optimization", "chunk", "store", "branch", "datacenter",
                                         "reference", "literal", "delta", "frame", "mail", "attachment",
                                         "server", "client", "report", "quarterly", "figures", "\n"};
    std::vector<uint8_t> out;
    uint32_t state = 12345;
    while (out.size() < 40 * 1024) {
      state = state * 1103515245 + 12345;
      const char* word = kWords[(state >> 16) % (sizeof kWords / sizeof kWords[0])];
      out.insert(out.end(), word, word + std::strlen(word));
      out.push_back(' ');
      if ((state >> 8) % 7 == 0) {
        std::string number = std::to_string(state % 100000);
        out.insert(out.end(), number.begin(), number.end());
        out.push_back(' ');
      }
    }
    return out;
  }();
  return text;
}

// KnownText() cut as the default chunker cuts it (the last piece ends the stream).
inline const std::vector<std::vector<uint8_t>>& KnownChunks() {
  static const std::vector<std::vector<uint8_t>> chunks = [] {
    std::vector<std::vector<uint8_t>> out;
    dre::Chunker chunker;
    std::span<const uint8_t> rest = KnownText();
    while (size_t n = chunker.NextBoundary(rest, true)) {
      out.emplace_back(rest.begin(), rest.begin() + static_cast<long>(n));
      rest = rest.subspan(n);
    }
    return out;
  }();
  return chunks;
}

// A chunk the receiving box's peer state names, but whose stored bytes are another
// chunk's (a damaged or mixed-up store): a REF to it must be re-asked, never used.
inline const std::vector<uint8_t>& DecoyChunk() {
  static const std::vector<uint8_t> decoy(3000, 'd');
  return decoy;
}

// One side of the peering: its peer state and chunk store, knowing KnownChunks(),
// and (with_decoy) the decoy mapped to the first known chunk's bytes. The hashing is
// done once per process; a Box is cheap to make for every input.
struct Box {
  dre::PeerTable table{""};  // memory only
  std::shared_ptr<dre::PeerState> peer = table.Get("fuzz-peer", PeeringSeed());
  MemoryStore store;

  explicit Box(bool with_decoy) {
    struct Known {
      dre::Fingerprint fingerprint;
      datastore::ContentId id;
    };
    static const MemoryStore* const prototype = [] {
      auto* s = new MemoryStore;
      for (const auto& chunk : KnownChunks()) s->Put(chunk);
      s->PutUnder(s->IdOf(DecoyChunk()), KnownChunks().front());
      return s;
    }();
    static const std::vector<Known> known = [this] {
      std::vector<Known> out;
      for (const auto& chunk : KnownChunks()) out.push_back({dre::FingerprintOf(chunk, peer->key()), store.IdOf(chunk)});
      out.push_back({dre::FingerprintOf(DecoyChunk(), peer->key()), store.IdOf(DecoyChunk())});
      return out;
    }();
    store.CopyFrom(*prototype);
    for (size_t i = 0; i + (with_decoy ? 0 : 1) < known.size(); ++i) peer->Learn(known[i].fingerprint, known[i].id);
  }
};

}  // namespace wanopt::fuzz
