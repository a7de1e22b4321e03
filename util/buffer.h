// A contiguous, growable byte buffer with cheap consumption from the front.
//
// The relay reads socket bytes straight into a Buffer and writes them out from it,
// so a byte is copied only by the kernel. Protocol modules receive the same Buffer
// and may rewrite it in place. Unlike std::vector, growing never zero-fills.
//
// Not thread-safe; owned by one connection at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <utility>

namespace wanopt {

class Buffer {
 public:
  explicit Buffer(size_t capacity = 0) { Reserve(capacity); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void Swap(Buffer& other) noexcept {
    std::swap(storage_, other.storage_);
    std::swap(capacity_, other.capacity_);
    std::swap(head_, other.head_);
    std::swap(size_, other.size_);
  }
  // Gives back the storage the readable bytes do not need (all of it when empty).
  void ShrinkToFit() {
    if (capacity_ == size_) return;
    Buffer fitted(size_);
    fitted.Append(span());
    Swap(fitted);
  }

  uint8_t* data() { return storage_.get() + head_; }
  const uint8_t* data() const { return storage_.get() + head_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t capacity() const { return capacity_; }
  std::span<uint8_t> span() { return {data(), size_}; }
  std::span<const uint8_t> span() const { return {data(), size_}; }

  // Room after the readable bytes, for a read() to fill; moves the bytes to the
  // front first if that frees space. Call Commit(n) after n bytes were written there.
  std::span<uint8_t> WritableTail() {
    if (head_ > 0 && head_ + size_ == capacity_) Compact();
    return {storage_.get() + head_ + size_, capacity_ - head_ - size_};
  }
  void Commit(size_t n) { size_ += n; }

  void Append(std::span<const uint8_t> bytes) {
    if (bytes.empty()) return;
    EnsureRoom(size_ + bytes.size());
    std::memcpy(data() + size_, bytes.data(), bytes.size());
    size_ += bytes.size();
  }
  // Drops the first n readable bytes. REQUIRES: n <= size().
  void Consume(size_t n) {
    head_ += n;
    size_ -= n;
    if (size_ == 0) head_ = 0;
  }
  void Clear() { head_ = size_ = 0; }
  // Keeps only the first n readable bytes. REQUIRES: n <= size().
  void Truncate(size_t n) { size_ = n; }
  // Replaces `length` bytes at `offset` with `with` (sizes may differ).
  // REQUIRES: offset + length <= size().
  void Replace(size_t offset, size_t length, std::span<const uint8_t> with);
  // Ensures room for at least n readable bytes without another allocation.
  void Reserve(size_t n) { EnsureRoom(n); }

 private:
  void Compact() {
    std::memmove(storage_.get(), data(), size_);
    head_ = 0;
  }
  void Grow(size_t needed);
  // Makes [head_, head_ + total) fit in the storage, compacting before growing.
  void EnsureRoom(size_t total) {
    if (capacity_ - head_ >= total) return;
    if (capacity_ >= total) Compact();
    else Grow(total);
  }

  std::unique_ptr<uint8_t[]> storage_;
  size_t capacity_ = 0;
  size_t head_ = 0;
  size_t size_ = 0;
};

inline void Buffer::Grow(size_t needed) {
  size_t capacity = capacity_ ? capacity_ : needed;
  while (capacity < needed) capacity *= 2;
  auto storage = std::make_unique_for_overwrite<uint8_t[]>(capacity);
  if (size_) std::memcpy(storage.get(), data(), size_);
  storage_ = std::move(storage);
  capacity_ = capacity;
  head_ = 0;
}

inline void Buffer::Replace(size_t offset, size_t length, std::span<const uint8_t> with) {
  if (with.size() == length) {
    if (length) std::memcpy(data() + offset, with.data(), length);
    return;
  }
  size_t tail = size_ - offset - length;
  if (with.size() > length) EnsureRoom(size_ - length + with.size());
  std::memmove(data() + offset + with.size(), data() + offset + length, tail);
  if (!with.empty()) std::memcpy(data() + offset, with.data(), with.size());
  size_ = size_ - length + with.size();
}

}  // namespace wanopt
