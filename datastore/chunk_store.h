// The DRE chunk store: the bytes this box has seen, named by their content, bounded
// in size, kept across restarts.
//
// A ChunkStore maps a ContentId to a chunk's bytes. It knows nothing of connections,
// peers or directions: one store serves every peer and both directions. Chunks live
// in segment files under `path`, indexed in a RocksDB database beside them; an
// in-memory index of every stored id answers Contains() with no disk I/O.
//
// Ids. The store computes ids itself: XXH3-128 of the chunk's bytes keyed with a
// 192-byte secret drawn from getrandom() when the store is first created and kept in
// `path`/SECRET. Nobody outside the box knows the secret, so nobody can craft two
// chunks with the same id to make the store hand out one for the other. For the same
// reason an id means something only to this store (across its restarts): another
// box, or this one after its directory was wiped, computes other ids for the same
// bytes. Ids are not wire names.
//
// Integrity. Get re-hashes every chunk it reads from disk. Bytes that do not
// match their id (a damaged disk block, a torn write) are dropped from the store,
// counted in corrupt_dropped, logged, and reported as a miss: a corrupted chunk is
// never served. Bytes served from memory (the write queue or the read cache, below)
// are not hashed again: they were checked when they entered memory, hashed by Put
// or re-hashed on their disk read, and memory is not a disk block.
//
// Memory. Besides the index, two bounded byte stores:
//  - the write queue (write_queue_bytes): Put hands its chunk to a writer thread and
//    returns; the writer stores queued chunks on disk in batches. Get, GetInto
//    and Contains see a queued chunk like any other. When the queue is full, Put
//    waits for the writer (backpressure): the callers then go at the disk's pace, as
//    they did when every Put wrote its chunk itself. The queue never grows past its
//    bound (but for one chunk bigger than the bound, which goes in alone) and never
//    drops a chunk.
//  - the read cache (cache_bytes): the chunks most recently stored or read, so that
//    a chunk named again within seconds (a file sent twice, an attachment in the
//    next mail) is served from memory. A chunk read from disk enters it on its
//    second read in a while (a one-off read pushes nothing out). A read from
//    disk that continues a run of reads in storage order also reads the next few
//    hundred KiB of chunks into the cache: a long repeat comes back in the order it
//    was stored, whatever its size.
// Neither changes what the store holds: an evicted chunk is gone from the queue and
// the cache as well, and its id is a miss everywhere at once.
//
// Eviction. The bytes of stored chunks stay within max_bytes: the chunks stored
// first are evicted first. Neither a Get hit nor a Put of a chunk already present
// refreshes a chunk's age, on purpose:
//  - hits stay read-only: no disk write and no index write on the hot path;
//  - both boxes of a link store a chunk when it first crosses (the sender when it
//    sends the bytes, the receiver when it receives them), so they age chunks in
//    the same order. Refreshing would age them apart (the sender refreshes on its
//    lookups, the receiver on its resolves), and the sender would more often name a
//    chunk the receiver has already dropped;
//  - a popular chunk that ages out costs one resend of its bytes, then it is new
//    again.
//
// Durability. Put leaves its chunk in the write queue, and the writer writes it
// about a millisecond later while it keeps up: its bytes appended to a segment
// file, its index entry through RocksDB's log. A chunk written survives a kill -9;
// every 16 MiB of chunks the writer syncs both, and a chunk synced survives a power
// loss too. Flush waits for the writer and syncs: every chunk Put before it
// survives both. With sync_writes, every Put does so for its own chunk. Closing the
// store (its destructor) writes the queue out and syncs, so a clean restart loses
// nothing. A kill -9 loses the chunks still queued, at most write_queue_bytes of
// the last ones stored; a power loss, also those written since the last sync (16
// MiB): a cache's loss, one resend each. Chunks are written in the order they were
// stored, so what survives a crash is everything stored before some point (but
// for a chunk whose index entry reached the disk before its bytes did: it fails
// verification on its first Get and is dropped). A lost chunk is a miss on the
// next Get, never wrong bytes (the peer that named it resends it:
// wanopt/dre/codec.h), and a crash never makes the store refuse to open. Deleting `path` while the store is closed gives an empty store
// on the next Open.
//
// Opening reads the ids back from the RocksDB index into the in-memory index: 0.5 s
// for 1M chunks, whatever their sizes (2-core VM, warm page cache), plus the replay
// of RocksDB's log after a crash (at most 64 MiB, 36 bytes a chunk). An index entry
// whose bytes are not in their segment (cut short by a crash, or the file lost) is
// forgotten then, and a segment with no indexed chunk deleted.
//
// A failing disk. The first write that fails (a full disk, a read-only remount,
// an I/O error; a segment append or sync, a Put's index batch, an eviction, or a
// flush or compaction in RocksDB's background) degrades the store for good, until
// it is reopened: it logs one error line, healthy() turns false with the reason,
// and from then on nothing is written to disk again (after a failed write, RocksDB
// 7.8 as Debian builds it asserts on the next write or sync of that file:
// rocksdb_hooks.h). A degraded store
// stores nothing (Put returns the id, Contains stays false, counted in
// write_errors) and evicts nothing; it still serves the chunks it holds. Its
// callers fall back to not using it (the daemon turns DRE off for new
// connections). Closing a degraded store writes nothing either: the chunks still
// queued are lost (a cache's loss, as on a crash). RocksDB logs
// into the journal, never into a file on the store's disk.
//
// Thread-safety: every method may be called from any number of threads at once. The
// store runs one thread of its own, the writer.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "util/buffer.h"

namespace wanopt::datastore {

// A chunk's name in this store: XXH3-128 (canonical, big-endian) of its bytes keyed
// with the store's secret.
using ContentId = std::array<uint8_t, 16>;

struct ChunkStoreOptions {
  // The store's directory; created, with its parents, if missing.
  std::string path;
  // Bound on the bytes of the chunks stored (kept uncompressed). The disk holds
  // that plus the segments of evicted chunks not yet released (up to an eighth of
  // max_bytes, at most 64 MiB a segment) and the index (about 40 bytes a chunk).
  uint64_t max_bytes = uint64_t{4} << 30;
  // RocksDB's block cache: the index's blocks, read by Get for a chunk on disk.
  uint64_t block_cache_bytes = uint64_t{64} << 20;
  // Makes every Put wait until its chunk is written and synced to disk: no chunk is
  // lost on a power loss or a kill -9, at the price of two syncs per batch the
  // writer writes (concurrent Puts share them) and of Put waiting for them.
  bool sync_writes = false;
  // Bound on the chunks Put but not yet written to disk (their sizes plus 128
  // bytes each); a Put that finds it full waits. Capped at max_bytes / 4, so that
  // evicting written chunks always suffices to keep within max_bytes.
  uint64_t write_queue_bytes = uint64_t{64} << 20;
  // Bound on the read cache (chunk sizes plus 128 bytes each); 0 turns it off.
  uint64_t cache_bytes = uint64_t{32} << 20;
};

class ChunkStore {
 public:
  struct Stats {
    uint64_t chunks = 0;           // stored now
    uint64_t bytes = 0;            // their total size: <= max_bytes, but for Puts in progress
    uint64_t puts = 0;             // Put calls
    uint64_t duplicates = 0;       // ... whose chunk was already stored
    uint64_t hits = 0;             // Get/GetInto calls that returned bytes
    uint64_t misses = 0;           // ... that did not (unknown, evicted or dropped)
    uint64_t evictions = 0;        // chunks evicted for space
    uint64_t corrupt_dropped = 0;  // chunks dropped because their bytes failed to verify
    uint64_t read_errors = 0;      // reads the disk failed (EIO...): a miss, the chunk kept
    uint64_t write_errors = 0;     // Puts that could not store their chunk (degraded included)
    bool degraded = false;         // !healthy()
    uint64_t index_memory_bytes = 0;  // the in-memory index: 32 to 60 bytes a chunk (24 KiB minimum)
    uint64_t memory_hits = 0;   // ... of the hits, those served from the read cache or the write queue
    uint64_t cache_bytes = 0;   // the read cache now: <= cache_bytes; not in index_memory_bytes
    uint64_t queued_bytes = 0;  // the write queue now: <= write_queue_bytes (or one chunk)
    uint64_t queue_waits = 0;   // Puts that waited for room in the write queue
    uint64_t disk_bytes = 0;    // the segment files: bytes, plus evicted chunks not yet released
    uint64_t index_db_memory_bytes = 0;  // RocksDB's memtables and block cache (the index's database)
  };

  // Opens the store in options.path, creating it if needed. On failure returns
  // nullptr and sets *error to one line naming the directory and the cause
  // ("datastore /var/lib/wanopt: cannot open: ..."): a path that is not a usable
  // directory, missing permissions, a store already open in another process, or a
  // database RocksDB finds corrupted. A corrupted store is left as it is, never
  // wiped: the operator decides (removing the directory starts an empty store).
  // *misconfigured (if given) tells a path that can never work (no path, or one
  // that is, or is under, something other than a directory) from a disk or
  // database that cannot be used now (full, read-only, I/O errors, corrupted, in
  // use).
  static std::unique_ptr<ChunkStore> Open(const ChunkStoreOptions& options, std::string* error,
                                          bool* misconfigured = nullptr);

  // A store that holds and stores nothing, degraded from the start for `reason`
  // (Open's error): what a box runs with when its store cannot be opened, so that a
  // peer's DRE stream still decodes (each reference a miss, re-sent on request).
  // Its ids use a secret drawn now: a new, empty store each time.
  static std::unique_ptr<ChunkStore> Unavailable(std::string reason);

  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;
  // Closes the store: writes out the queue, syncs, then closes RocksDB. Chunks
  // already stored stay on disk.
  virtual ~ChunkStore() = default;

  // The id `chunk` has in this store, stored or not. Only hashes.
  virtual ContentId IdOf(std::span<const uint8_t> chunk) const = 0;

  // Stores `chunk` unless it is already stored, evicting the oldest chunks as needed,
  // and returns its id. Once Put returns, Contains(id) is true and Get returns the
  // bytes until the chunk is evicted; the chunk may still be in the write queue
  // (see Durability). Waits while the write queue is full (and, with sync_writes,
  // until the chunk is synced). A chunk larger than max_bytes (or than 4 GiB) is not
  // stored. If the disk fails the write, the chunk is not stored either (counted in
  // write_errors and logged; from then on a miss), and the store degrades; a
  // degraded store stores nothing (Contains stays false): the store is a cache, so
  // Put does not fail.
  virtual ContentId Put(std::span<const uint8_t> chunk) = 0;

  // The bytes of chunk `id`, verified against `id`; nullopt if the chunk is unknown,
  // evicted, or failed to verify (then it is dropped from the store). Served from
  // the read cache or the write queue when there, else read from its segment.
  virtual std::optional<std::vector<uint8_t>> Get(const ContentId& id) = 0;
  // As Get, but appends the bytes to `out`, straight from the cache, the queue or
  // the bytes read from disk with no vector in between; returns false, leaving
  // `out` alone, where Get returns nullopt.
  virtual bool GetInto(const ContentId& id, Buffer& out) = 0;

  // Whether chunk `id` is stored (queued included, or being stored by a concurrent
  // Put). From memory only. A true answer can be followed by a Get miss if the chunk
  // is evicted in between, or fails to verify.
  virtual bool Contains(const ContentId& id) const = 0;

  // Whether chunk `id` is stored and will stay a while: not among the chunks next
  // in line for eviction that the next few seconds (kRepairWindow) will push out at
  // the rate chunks have been arriving, nor among the quarter of the store next in
  // line (while the store is within that of full). A box names a chunk to its peer
  // only if it can still send the bytes when the peer, which evicts in about the
  // same order, asks for them back: a chunk both evicted between the naming and the
  // asking cannot be repaired, and its connection is reset. A margin of a quarter
  // alone still let that happen in a 30-minute soak (10 of 127,306 transfers, a
  // 64 MiB store turning over in a few seconds). A store too small for the rate it
  // takes chunks at names nothing: reduction is lost, never a connection. From
  // memory only.
  virtual bool Lasting(const ContentId& id) const = 0;

  virtual Stats stats() const = 0;

  // False once the store degraded (see A failing disk): it stores nothing more.
  virtual bool healthy() const = 0;
  // Why it degraded, one line ("cannot write chunks: No space left on device");
  // "" while healthy.
  virtual std::string degraded_reason() const = 0;

  // Makes every chunk whose Put returned before this call survive a kill -9 and a
  // power loss: waits for the writer to write the queue out (and to release the
  // segments of chunks evicted before the call), then syncs the segments and
  // RocksDB's log (with sync_writes, nothing more: both are synced).
  // Costs two syncs per call: for shutdowns and tests, not per chunk. On a degraded
  // store, only waits for the writer.
  virtual void Flush() = 0;

 protected:
  ChunkStore() = default;
};

}  // namespace wanopt::datastore
