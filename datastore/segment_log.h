// The bytes of a ChunkStore's chunks on disk: append-only segment files. Internal
// to datastore/.
//
// A segment is a file `dir`/NNNNNNNNNNNNNNNN.seg (its number, 16 hex digits) that
// holds chunks back to back and nothing else. Where a chunk is - segment, offset,
// size - and which id it has are in the store's RocksDB index; every read is
// verified against that id by the store, so bytes that are not what the index says
// (a torn write, a damaged block, bytes never written back before a power loss)
// are caught there, never served.
//
// One writer appends, always to the newest segment. Each Open starts a new segment
// (the last one of a previous run may end in a torn write), and so does an append
// that would take the current one past segment_bytes (a chunk larger than that
// goes alone into one). The store evicts its oldest chunks first, so segments are
// released whole, oldest first, once every chunk in them is evicted: no compaction,
// no byte ever rewritten.
//
// Thread-safety: every method may be called from any thread; Append and Sync take
// turns, and NoteIndexed and DropUnindexed are for Open, before anything else. A
// segment released while a Read is in it stays readable for that Read (the file is
// unlinked, its descriptor lives until the Read is done).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace wanopt::datastore {

class SegmentLog {
 public:
  // Where a chunk's bytes are.
  struct Location {
    uint64_t segment = 0;
    uint32_t offset = 0;
  };
  // A chunk to append: its bytes and its sequence number in the store (what
  // ReleaseBelow goes by). Sequence numbers increase from one append to the next.
  struct Record {
    uint64_t seq;
    std::span<const uint8_t> bytes;
  };

  SegmentLog() = default;
  SegmentLog(const SegmentLog&) = delete;
  SegmentLog& operator=(const SegmentLog&) = delete;
  ~SegmentLog();

  // Creates `dir` if missing and lists the segments in it (opened for reading).
  // Nothing is written until the first Append. false with *why on failure.
  bool Open(const std::string& dir, uint64_t segment_bytes, std::string* why);

  // Appends `records` in order and sets where[i] for each. Returns 0, or the errno
  // of the write that failed: then some of the bytes may be on disk, but no Location
  // of this call may be used (the store writes no index entry for them).
  // REQUIRES: every record is at most 4 GiB - 1; where has records.size() slots.
  int Append(std::span<const Record> records, Location* where);

  // Makes every byte appended so far durable (fdatasync of the segments appended
  // to since the last Sync, and of the directory if a segment was created). Returns
  // 0 or an errno.
  int Sync();

  // Reads `size` bytes at `at` into `out`. Returns 0, ENOENT if the segment is gone
  // (released, or its file was lost), ENODATA if the file ends before them, or the
  // errno of the read.
  int Read(Location at, uint32_t size, uint8_t* out) const;
  // The same for bytes that follow each other in one segment from `at` on, into
  // `outs` in order (chunks appended one after another): one system call for all.
  // REQUIRES: outs.size() <= kMaxReadParts.
  static constexpr size_t kMaxReadParts = 256;
  int Read(Location at, std::span<const std::span<uint8_t>> outs) const;

  // While the store opens: notes that the index has a chunk of `size` bytes at `at`
  // with sequence number `seq`, if the segment files hold those bytes; returns
  // whether they do (if not, the entry must go: a segment lost, or cut short).
  bool NoteIndexed(Location at, uint32_t size, uint64_t seq);
  // While the store opens, after NoteIndexed for every index entry: deletes the
  // segments the index has no chunk in (written before a crash, their entries lost
  // or all evicted). Returns how many it deleted.
  size_t DropUnindexed();

  // Deletes the segments whose chunks all have sequence numbers below `cursor` (the
  // store evicted them), but never the one being appended to. REQUIRES: the index
  // entries below `cursor` are deleted durably (else a crash would bring back
  // entries whose bytes are gone: still a miss, never wrong bytes).
  void ReleaseBelow(uint64_t cursor);

  // The bytes in segment files now (chunks evicted but not yet released included).
  uint64_t disk_bytes() const;

  // For tests (datastore/testing.h): every Read fails with `error` until called
  // with 0.
  void FailReads(int error) { fail_reads_.store(error, std::memory_order_relaxed); }

 private:
  struct Segment;
  std::shared_ptr<Segment> Find(uint64_t number) const;
  std::string FileName(uint64_t number) const;
  // Starts segment next_number_ and makes it current_. Returns 0 or an errno.
  int StartSegment();

  std::string dir_;
  uint64_t segment_bytes_ = 0;
  mutable std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<Segment>> segments_;  // guarded by mu_
  // Append and Sync, one at a time. Lock order: append_mu_, then mu_.
  std::mutex append_mu_;
  std::shared_ptr<Segment> current_;  // guarded by append_mu_ (and set under mu_ too)
  std::vector<std::shared_ptr<Segment>> unsynced_;  // appended to since the last Sync
  bool dir_unsynced_ = false;
  uint64_t next_number_ = 1;
  std::atomic<int> fail_reads_{0};
};

}  // namespace wanopt::datastore
