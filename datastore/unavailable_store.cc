// ChunkStore::Unavailable (chunk_store.h): no disk, no memory, nothing stored.
#include <sys/random.h>

#include <array>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "datastore/chunk_store.h"

namespace wanopt::datastore {
namespace {

class UnavailableStore final : public ChunkStore {
 public:
  explicit UnavailableStore(std::string reason) : reason_(std::move(reason)) {
    // A weak secret (getrandom failing) costs nothing here: nothing is ever stored
    // under these ids.
    for (size_t got = 0; got < secret_.size();) {
      ssize_t n = ::getrandom(secret_.data() + got, secret_.size() - got, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
  }

  ContentId IdOf(std::span<const uint8_t> chunk) const override {
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical,
                             XXH3_128bits_withSecret(chunk.data(), chunk.size(), secret_.data(), secret_.size()));
    ContentId id;
    std::memcpy(id.data(), canonical.digest, id.size());
    return id;
  }
  ContentId Put(std::span<const uint8_t> chunk) override {
    std::lock_guard lock(mu_);
    ++stats_.puts;
    ++stats_.write_errors;
    return IdOf(chunk);
  }
  std::optional<std::vector<uint8_t>> Get(const ContentId&) override {
    Miss();
    return std::nullopt;
  }
  bool GetInto(const ContentId&, Buffer&) override {
    Miss();
    return false;
  }
  bool Contains(const ContentId&) const override { return false; }
  bool Lasting(const ContentId&) const override { return false; }
  Stats stats() const override {
    std::lock_guard lock(mu_);
    return stats_;
  }
  bool healthy() const override { return false; }
  std::string degraded_reason() const override { return reason_; }
  void Flush() override {}

 private:
  void Miss() {
    std::lock_guard lock(mu_);
    ++stats_.misses;
  }

  const std::string reason_;
  std::array<uint8_t, 192> secret_{};
  mutable std::mutex mu_;
  Stats stats_{.degraded = true};
};

}  // namespace

std::unique_ptr<ChunkStore> ChunkStore::Unavailable(std::string reason) {
  return std::make_unique<UnavailableStore>(std::move(reason));
}

}  // namespace wanopt::datastore
