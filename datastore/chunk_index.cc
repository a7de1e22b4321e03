#include "datastore/chunk_index.h"

#include <algorithm>
#include <cstring>

namespace wanopt::datastore {
namespace {

// 1.5 KiB when empty; the store keeps 16 of these.
constexpr size_t kMinCapacity = 64;

__extension__ using Uint128 = unsigned __int128;

struct Halves {
  uint64_t a, b;
};
Halves Split(const ContentId& id) {
  Halves h;
  std::memcpy(&h.a, id.data(), 8);
  std::memcpy(&h.b, id.data() + 8, 8);
  return h;
}

}  // namespace

ChunkIndex::ChunkIndex() { Rehash(kMinCapacity); }

// Multiply-shift maps the id's bits onto any capacity (not only powers of two),
// which is what lets the table grow by half instead of doubling.
size_t ChunkIndex::Home(uint64_t a) const {
  return static_cast<size_t>((Uint128{a} * capacity_) >> 64);
}

size_t ChunkIndex::Probe(uint64_t a, uint64_t b) const {
  size_t i = Home(a);
  while (slots_[i].seq != 0 && (slots_[i].a != a || slots_[i].b != b)) {
    if (++i == capacity_) i = 0;
  }
  return i;
}

uint64_t ChunkIndex::Find(const ContentId& id) const {
  auto [a, b] = Split(id);
  return slots_[Probe(a, b)].seq;
}

void ChunkIndex::Insert(const ContentId& id, uint64_t seq) {
  if ((size_ + 1) * 4 > capacity_ * 3) Rehash(capacity_ + capacity_ / 2);
  auto [a, b] = Split(id);
  slots_[Probe(a, b)] = {a, b, seq};
  ++size_;
}

bool ChunkIndex::Update(const ContentId& id, uint64_t expected, uint64_t seq) {
  auto [a, b] = Split(id);
  Slot& slot = slots_[Probe(a, b)];
  if (expected == 0 || slot.seq != expected) return false;
  slot.seq = seq;
  return true;
}

bool ChunkIndex::Erase(const ContentId& id, uint64_t seq) {
  auto [a, b] = Split(id);
  size_t hole = Probe(a, b);
  if (slots_[hole].seq == 0 || (slots_[hole].seq & ~kPending) != seq) return false;
  // Backward shift: pull later members of the probe run into the hole when their
  // home position allows it, so lookups never need tombstones.
  for (size_t j = hole;;) {
    if (++j == capacity_) j = 0;
    if (slots_[j].seq == 0) break;
    size_t home = Home(slots_[j].a);
    bool home_in_gap = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!home_in_gap) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = Slot{};
  --size_;
  if (capacity_ > kMinCapacity && size_ * 5 < capacity_ * 2) {
    Rehash(std::max(kMinCapacity, size_ * 5 / 3 + 1));
  }
  return true;
}

void ChunkIndex::Reserve(size_t n) {
  size_t wanted = n * 5 / 3 + 1;  // 3/5 full once the n entries are in
  if (wanted > capacity_) Rehash(wanted);
}

void ChunkIndex::Rehash(size_t capacity) {
  auto old = std::move(slots_);
  size_t old_capacity = capacity_;
  slots_ = std::make_unique<Slot[]>(capacity);
  capacity_ = capacity;
  for (size_t i = 0; i < old_capacity; ++i) {
    if (old[i].seq != 0) slots_[Probe(old[i].a, old[i].b)] = old[i];
  }
}

}  // namespace wanopt::datastore
