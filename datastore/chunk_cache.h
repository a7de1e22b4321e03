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
// Each entry is charged its size plus kEntryOverhead (the list and hash nodes and the
// shared block), so small chunks cannot make it hold more memory than its bound.
//
// Not thread-safe: ChunkStore keeps one per index shard, under the shard's lock.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <unordered_map>

#include "datastore/chunk_store.h"

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

class ChunkCache {
 public:
  static constexpr uint64_t kEntryOverhead = 128;

  explicit ChunkCache(uint64_t capacity = 0) : capacity_(capacity) { head_.prev = head_.next = &head_; }
  ChunkCache(const ChunkCache&) = delete;
  ChunkCache& operator=(const ChunkCache&) = delete;

  void set_capacity(uint64_t capacity) {
    capacity_ = capacity;
    Shrink(capacity_);
  }

  // The bytes of `id`, made the most recently used; nullptr if not cached. Valid
  // until the next call that changes the cache.
  const Blob* Lookup(const ContentId& id) {
    auto it = map_.find(id);
    if (it == map_.end()) return nullptr;
    Node* node = &it->second;
    Unlink(node);
    LinkFront(node);
    return &node->blob;
  }
  bool Contains(const ContentId& id) const { return map_.count(id) != 0; }

  // Caches `blob` as the bytes of `id` (replacing what was there), evicting the least
  // recently used entries to make room. A chunk bigger than a quarter of the capacity
  // is not cached: it would push out many others for one hit.
  void Insert(const ContentId& id, Blob blob) {
    uint64_t charge = blob.size + kEntryOverhead;
    if (charge > capacity_ / 4) return;
    Erase(id);
    Shrink(capacity_ - charge);
    // unordered_map nodes do not move on rehash: the list links stay valid.
    Node* node = &map_.try_emplace(id).first->second;
    node->id = id;
    node->blob = std::move(blob);
    LinkFront(node);
    charged_ += charge;
  }

  void Erase(const ContentId& id) {
    auto it = map_.find(id);
    if (it == map_.end()) return;
    charged_ -= it->second.blob.size + kEntryOverhead;
    Unlink(&it->second);
    map_.erase(it);
  }

  uint64_t charged() const { return charged_; }
  size_t size() const { return map_.size(); }

 private:
  // One allocation an entry: the map's node is also the LRU list's.
  struct Node {
    Node* prev = nullptr;  // more recently used
    Node* next = nullptr;  // less recently used
    ContentId id{};
    Blob blob;
  };

  static void Unlink(Node* node) {
    node->prev->next = node->next;
    node->next->prev = node->prev;
  }
  void LinkFront(Node* node) {
    node->prev = &head_;
    node->next = head_.next;
    head_.next->prev = node;
    head_.next = node;
  }
  void Shrink(uint64_t to) {
    while (charged_ > to && head_.prev != &head_) {
      ContentId victim = head_.prev->id;
      Erase(victim);
    }
  }

  uint64_t capacity_;
  uint64_t charged_ = 0;
  Node head_;  // the list's ends: head_.next most recently used, head_.prev least
  std::unordered_map<ContentId, Node, IdHash> map_;
};

}  // namespace wanopt::datastore
