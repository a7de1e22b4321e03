// The DRE chunk store: what both boxes remember of the bytes they have seen.
//
// INTERFACE ONLY. The RocksDB-backed implementation arrives with the DRE issue;
// this header fixes the contract the DRE codec will be written against.
//
// A ChunkStore maps a 128-bit fingerprint (keyed XXH3-128 of the chunk's bytes) to
// the chunk's bytes. It knows nothing of connections, peers or directions: one
// store serves every peer and both directions. It is bounded by a configured size
// and evicts oldest-first. Every method is thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace wanopt::datastore {

using Fingerprint = std::array<uint8_t, 16>;

class ChunkStore {
 public:
  virtual ~ChunkStore() = default;

  // Stores `chunk` under `fingerprint` (no-op when present). May evict older chunks
  // to stay within the size bound.
  virtual void Put(const Fingerprint& fingerprint, std::span<const uint8_t> chunk) = 0;

  // The chunk's bytes, or nullopt when unknown, evicted, or when the stored bytes no
  // longer match their fingerprint (then the entry is dropped: a corrupted chunk is
  // never served).
  virtual std::optional<std::vector<uint8_t>> Get(const Fingerprint& fingerprint) = 0;

  virtual bool Contains(const Fingerprint& fingerprint) = 0;
};

}  // namespace wanopt::datastore
