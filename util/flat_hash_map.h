// A hash map for keys that are already uniform hashes (keyed fingerprints, content
// ids) and small trivially copyable values, held in one array: no allocation per
// entry, one cache line per lookup.
//
// What it is for: the per-chunk maps on the data path (what a peering knows), where
// std::unordered_map's node per entry cost a malloc and a free per chunk crossing,
// and its prime-modulo bucket a division per lookup. The datastore's in-memory index
// (datastore/chunk_index.h) is the same idea specialised to 24-byte slots, since it
// holds every stored chunk.
//
// Open addressing with linear probing and backward-shift deletion (no tombstones).
// `Hash` must spread keys over 64 bits by itself (std::hash<Fingerprint> returns 64
// bits of the fingerprint); the table takes the high bits by multiply-shift. `Equal`
// compares keys (std::array's == calls memcmp, which a 16-byte key need not). It
// grows by doubling past 3/4 full; Prune (and clear) give memory back.
//
// Iteration order is by home slot, so it is sorted by hash. That is a trap: keys fed
// in another table's order into a table that grows meanwhile land in the first part
// of it, one probe run as long as the table so far (a Prune that built its result
// that way took seconds at 130k entries). Whoever inserts in such an order calls
// reserve first. Pointers returned by find are valid until the next insertion or
// erasure.
// Not thread-safe.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace wanopt {

template <typename Key, typename Value, typename Hash = std::hash<Key>, typename Equal = std::equal_to<Key>>
class FlatHashMap {
  static_assert(std::is_trivially_copyable_v<Key> && std::is_trivially_copyable_v<Value>);

 public:
  FlatHashMap() = default;
  FlatHashMap(const FlatHashMap&) = delete;
  FlatHashMap& operator=(const FlatHashMap&) = delete;
  FlatHashMap(FlatHashMap&& other) noexcept { *this = std::move(other); }
  // Leaves `other` empty.
  FlatHashMap& operator=(FlatHashMap&& other) noexcept {
    slots_ = std::move(other.slots_);
    capacity_ = std::exchange(other.capacity_, 0);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Bytes of the table itself.
  size_t memory_bytes() const { return capacity_ * sizeof(Slot); }

  const Value* find(const Key& key) const {
    if (size_ == 0) return nullptr;
    const Slot& slot = slots_[Probe(key)];
    return slot.used ? &slot.value : nullptr;
  }
  Value* find(const Key& key) { return const_cast<Value*>(std::as_const(*this).find(key)); }
  bool contains(const Key& key) const { return find(key) != nullptr; }

  void insert_or_assign(const Key& key, const Value& value) {
    if ((size_ + 1) * 4 > capacity_ * 3) Rehash(capacity_ == 0 ? kMinCapacity : capacity_ * 2);
    Slot& slot = slots_[Probe(key)];
    if (!slot.used) ++size_;
    slot = {key, value, true};
  }

  // Sizes the table so that `n` entries fit without growing.
  void reserve(size_t n) {
    if (CapacityFor(n) > capacity_) Rehash(CapacityFor(n));
  }

  // Returns whether `key` was there.
  bool erase(const Key& key) {
    if (size_ == 0) return false;
    size_t slot = Probe(key);
    if (!slots_[slot].used) return false;
    EraseAt(slot);
    return true;
  }

  // Slots in the table: a pass of PruneSlice calls covers this many.
  size_t capacity() const { return capacity_; }

  // One step of a prune spread over many calls, so that no call holds its caller
  // long: looks at up to `slots` slots from *cursor on, erases the entries
  // `keep(key, value)` says to drop, and moves *cursor on. Returns true when the
  // step reached the end of the table (*cursor is then 0 again). Every entry there
  // at the start of a pass (*cursor == 0) is looked at, at least once, by the pass's
  // end, provided capacity() did not change meanwhile (growth reorders the table:
  // start the pass again) and nothing else was erased (an erasure behind the cursor
  // may pull an entry not yet looked at behind it: it waits for the next pass). The
  // table never shrinks here: shrink_to_fit does that.
  template <typename Keep>
  bool PruneSlice(size_t* cursor, size_t slots, Keep&& keep) {
    size_t i = *cursor;
    for (size_t end = std::min(capacity_, i + slots); i < end;) {
      if (slots_[i].used && !keep(slots_[i].key, slots_[i].value)) {
        EraseAt(i);  // a later entry may have moved into slot i: look at it again
        --end;       // (bounded: at most `slots` looks an erasure shortens)
      } else {
        ++i;
      }
    }
    bool done = i >= capacity_;  // not i == 0: erasures at slot 0 leave it there
    *cursor = done ? 0 : i;
    return done;
  }

  // Gives back the slots beyond what the entries need (3/8 to 3/4 full); one pass.
  void shrink_to_fit() {
    if (size_ == 0) {
      clear();
    } else if (CapacityFor(size_) < capacity_) {
      Rehash(CapacityFor(size_));
    }
  }

  // Keeps the entries `keep(key, value)` says to, in a table sized for them; returns
  // how many went. One whole pass of PruneSlice (`keep` may see an entry twice), then
  // shrink_to_fit.
  template <typename Keep>
  size_t Prune(Keep&& keep) {
    const size_t before = size_;
    size_t cursor = 0;
    while (!PruneSlice(&cursor, capacity_, keep)) {
    }
    shrink_to_fit();
    return before - size_;
  }

  void clear() { *this = FlatHashMap(); }

  template <typename F>
  void ForEach(F&& f) const {
    for (size_t i = 0; i < capacity_; ++i) {
      if (slots_[i].used) f(slots_[i].key, slots_[i].value);
    }
  }

 private:
  static constexpr size_t kMinCapacity = 16;
  struct Slot {
    Key key;
    Value value;
    bool used;
  };

  // The smallest capacity that holds `n` entries at most 3/4 full.
  static size_t CapacityFor(size_t n) {
    size_t capacity = kMinCapacity;
    while (n * 4 > capacity * 3) capacity *= 2;
    return capacity;
  }
  size_t Home(const Key& key) const {
    __extension__ using Uint128 = unsigned __int128;
    return static_cast<size_t>((Uint128{static_cast<uint64_t>(Hash{}(key))} * capacity_) >> 64);
  }
  // Empties slot `hole` (REQUIRES: used). Backward shift: entries after the hole that
  // may live in it move up, so that every entry stays reachable from its home slot
  // without tombstones.
  void EraseAt(size_t hole) {
    const size_t mask = capacity_ - 1;
    for (size_t j = (hole + 1) & mask; slots_[j].used; j = (j + 1) & mask) {
      size_t home = Home(slots_[j].key);
      // `home` is not cyclically within (hole, j]: the entry may move to the hole.
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole].used = false;
    --size_;
  }
  // The slot holding `key`, or the free slot where it would go. REQUIRES: capacity_ > 0.
  size_t Probe(const Key& key) const {
    const size_t mask = capacity_ - 1;
    size_t i = Home(key);
    while (slots_[i].used && !Equal{}(slots_[i].key, key)) i = (i + 1) & mask;
    return i;
  }
  void Rehash(size_t capacity) {
    auto old = std::move(slots_);
    size_t old_capacity = capacity_;
    slots_ = std::make_unique<Slot[]>(capacity);  // value-initialized: every used == false
    capacity_ = capacity;
    size_ = 0;
    for (size_t i = 0; i < old_capacity; ++i) {
      if (old[i].used) insert_or_assign(old[i].key, old[i].value);
    }
  }

  std::unique_ptr<Slot[]> slots_;
  size_t capacity_ = 0;  // 0 or a power of two
  size_t size_ = 0;
};

}  // namespace wanopt
