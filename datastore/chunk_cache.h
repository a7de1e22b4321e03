// The ChunkStore's memory for chunk bytes: Blob, the immutable bytes of one chunk
// shared by the write-behind queue and the read cache, and ChunkCache, the read cache
// itself. Internal to datastore/.
//
// ChunkCache is a byte-bounded LRU of verified chunk bytes keyed by content id. What
// enters it has been checked against its id already (hashed by Put, or read from
// RocksDB and re-hashed), so a hit is served without hashing again. Its order is
// this box's alone and has nothing to do with eviction from the store (see
// chunk_store.h): a chunk evicted from the store is dropped from the cache too, and
// the store never consults the cache for an id its index no longer holds.
//
// Each entry is charged its size plus kEntryOverhead (its node, its slot in the id
// table and the shared block), so small chunks cannot make it hold more memory than
// its bound.
//
// Not thread-safe: ChunkStore keeps one per index shard, under the shard's lock.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "datastore/chunk_store.h"
#include "util/flat_hash_map.h"

namespace wanopt::datastore {

struct Blob {
  std::shared_ptr<const uint8_t[]> data;
  uint32_t size = 0;

  std::span<const uint8_t> span() const { return {data.get(), size}; }
  // REQUIRES: bytes.size() fits in 32 bits.
  static Blob Copy(std::span<const uint8_t> bytes) {
    Blob blob;
    auto data = std::make_shared_for_overwrite<uint8_t[]>(bytes.size());
    if (!bytes.empty()) std::memcpy(data.get(), bytes.data(), bytes.size());
    blob.data = std::move(data);
    blob.size = static_cast<uint32_t>(bytes.size());
    return blob;
  }
};

// Ids are keyed hashes nobody outside the box can steer: their first bytes are a
// good hash as they are.
struct IdHash {
  size_t operator()(const ContentId& id) const {
    uint64_t v;
    std::memcpy(&v, id.data(), sizeof v);
    return static_cast<size_t>(v);
  }
};

// Two 8-byte compares: std::array's == calls memcmp, a few percent of a busy box.
struct IdEqual {
  bool operator()(const ContentId& a, const ContentId& b) const {
    uint64_t a0, a1, b0, b1;
    std::memcpy(&a0, a.data(), 8);
    std::memcpy(&a1, a.data() + 8, 8);
    std::memcpy(&b0, b.data(), 8);
    std::memcpy(&b1, b.data() + 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
  }
};

class ChunkCache {
 public:
  // About what an entry costs beyond its bytes: its slot in the id table (at 3/8 to
  // 3/4 load), its node and the blob's shared block.
  static constexpr uint64_t kEntryOverhead = 128;

  explicit ChunkCache(uint64_t capacity = 0) : capacity_(capacity), nodes_(1) { Head() = {0, 0}; }
  ChunkCache(const ChunkCache&) = delete;
  ChunkCache& operator=(const ChunkCache&) = delete;

  void set_capacity(uint64_t capacity) {
    capacity_ = capacity;
    Shrink(capacity_);
  }

  // The bytes of `id`, made the most recently used; nullptr if not cached. Valid
  // until the next call that changes the cache.
  const Blob* Lookup(const ContentId& id) {
    const uint32_t* at = map_.find(id);
    if (at == nullptr) return nullptr;
    Unlink(*at);
    LinkFront(*at);
    return &nodes_[*at].blob;
  }
  bool Contains(const ContentId& id) const { return map_.contains(id); }

  // Caches `blob` as the bytes of `id` (replacing what was there), evicting the least
  // recently used entries to make room. A chunk bigger than a quarter of the capacity
  // is not cached: it would push out many others for one hit.
  void Insert(const ContentId& id, Blob blob) {
    uint64_t charge = blob.size + kEntryOverhead;
    if (charge > capacity_ / 4) return;
    Erase(id);
    Shrink(capacity_ - charge);
    uint32_t node = NewNode();
    nodes_[node].id = id;
    nodes_[node].blob = std::move(blob);
    map_.insert_or_assign(id, node);
    LinkFront(node);
    charged_ += charge;
  }

  void Erase(const ContentId& id) {
    const uint32_t* at = map_.find(id);
    if (at == nullptr) return;
    uint32_t node = *at;
    map_.erase(id);
    charged_ -= nodes_[node].blob.size + kEntryOverhead;
    Unlink(node);
    nodes_[node].blob = {};  // the bytes go now, not when the node is reused
    nodes_[node].next = free_;
    free_ = node;
    if (map_.empty()) Release();
  }

  uint64_t charged() const { return charged_; }
  size_t size() const { return map_.size(); }

 private:
  // Nodes live in one array and name each other by index: no allocation per entry
  // and no pointer to chase from the id table (an unordered_map's node per entry
  // and its bucket chains were half of what Put cost the store). Node 0 is the
  // list's ends: its next is the most recently used, its prev the least.
  struct Node {
    uint32_t prev = 0;  // more recently used
    uint32_t next = 0;  // less recently used; in the free list, the next free node
    ContentId id{};
    Blob blob;
  };

  Node& Head() { return nodes_[0]; }
  uint32_t NewNode() {
    if (free_ != 0) return std::exchange(free_, nodes_[free_].next);
    nodes_.emplace_back();
    return static_cast<uint32_t>(nodes_.size() - 1);
  }
  // Empty: the node array and the id table go back to their smallest (they hold the
  // most entries the cache ever had, otherwise).
  void Release() {
    nodes_.resize(1);
    nodes_.shrink_to_fit();
    Head() = {0, 0};
    free_ = 0;
    map_.clear();
  }
  void Unlink(uint32_t node) {
    nodes_[nodes_[node].prev].next = nodes_[node].next;
    nodes_[nodes_[node].next].prev = nodes_[node].prev;
  }
  void LinkFront(uint32_t node) {
    nodes_[node].prev = 0;
    nodes_[node].next = Head().next;
    nodes_[Head().next].prev = node;
    Head().next = node;
  }
  void Shrink(uint64_t to) {
    while (charged_ > to && Head().prev != 0) Erase(nodes_[Head().prev].id);
  }

  uint64_t capacity_;
  uint64_t charged_ = 0;
  std::vector<Node> nodes_;
  uint32_t free_ = 0;  // the first free node (0: none)
  FlatHashMap<ContentId, uint32_t, IdHash, IdEqual> map_;
};

}  // namespace wanopt::datastore
