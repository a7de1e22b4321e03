// Content-defined chunking for Data Redundancy Elimination (DRE).
//
// DRE replaces byte ranges the peer has already seen with short references. The
// ranges are chunks cut where the content says so, not at fixed offsets: an insertion
// near the start of a file shifts every later byte, so fixed-size blocks after it
// would all change, whereas content-defined cut points move with the bytes around
// them and the chunks after the edit repeat.
//
// The algorithm is FastCDC (Xia et al., USENIX ATC 2016; IEEE TPDS 2020):
//  - A gear hash rolls over the bytes: h = (h << 1) + G[byte], with G a table of 256
//    fixed pseudo-random 64-bit constants. Each shift pushes the oldest byte further
//    out, so h depends only on the last 64 bytes.
//  - A position ends a chunk when h has the mask's bits all zero. The mask bits are
//    the highest ones below bit 63, which mix in the most bytes.
//  - Normalized chunking (level 2): up to avg_size bytes the mask has log2(avg_size)+2
//    bits, after it log2(avg_size)-2. Sizes bunch around avg_size instead of spreading
//    geometrically, which makes fewer tiny and fewer maximum-size chunks.
//  - Cut-point skipping: no chunk is shorter than min_size, so the first
//    min_size - 64 bytes of a chunk are not hashed at all; the 64 bytes before
//    min_size are hashed only to fill the window.
//  - A chunk that reaches max_size without a cut point ends there.
//
// Because the window is always full when a position is tested, whether a position ends
// a chunk depends only on the 64 bytes ending there and on its distance from the
// chunk's start: after an edit, cuts resynchronize at the first cut point past the edit
// that both versions reach.
//
// Both boxes of a peering must cut identically, or chunks seen in one direction never
// match chunks in the other: the gear table, the masks and the options are part of the
// protocol. Changing any of them changes every chunk.
//
// Defaults: min 1 KiB, avg 4 KiB, max 32 KiB, from tests/bench/chunker_bench (results in
// tests/bench/results/chunker.md). Chunking speed does not decide: 3-4 GB/s at every avg
// from 2 to 16 KiB, 3.4 GB/s with fingerprints at 4 KiB (medians, one core of a shared
// AMD EPYC VM), far above the 1 GB/s the DRE pipeline needs on redundant data. Dedup
// after edits does: on 32 MiB of text with 1% of its bytes changed by scattered edits of
// tens of bytes, chunks already in v1 cover 55% of v2 at avg 2 KiB, 33% at 4 KiB, 13% at
// 8 KiB, 2% at 16 KiB (with 0.1% edited: 94%, 89%, 80%, 64%). Smaller chunks always dedup
// better, but each chunk costs a reference on the wire (~20 bytes: 0.4% of fully redundant
// data at 4 KiB), an entry in the chunk store's index (~230 million per TiB stored at
// 4 KiB) and an index lookup (~210,000 per second at 1 GB/s). 4 KiB keeps most of what
// 2 KiB finds at half its per-chunk cost. min = avg/4 and max = avg*8 follow FastCDC;
// min from avg/8 to avg/2, or normalization level 1 or 3, moved coverage by under 3
// points. A 32 KiB chunk fits an inner-channel frame with room to spare.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace wanopt::dre {

// Largest max_size accepted. A chunk is a unit of the chunk store and of the wire
// format; 256 KiB bounds what a decoder must hold to rebuild one.
inline constexpr size_t kMaxChunkSizeLimit = 256 * 1024;
// Smallest min_size accepted: the first position tested needs a full 64-byte window
// behind it. Chunks this small could not pay for their reference and index entry anyway.
inline constexpr size_t kMinChunkSizeLimit = 64;

struct ChunkerOptions {
  size_t min_size = 1024;
  size_t avg_size = 4 * 1024;  // a power of two
  size_t max_size = 32 * 1024;
};

// Empty when `options` are usable; otherwise one line naming the field and the
// problem, e.g. "chunker avg_size 3000 is not a power of two".
// Usable: kMinChunkSizeLimit <= min_size < avg_size < max_size <= kMaxChunkSizeLimit,
// avg_size a power of two.
std::string ValidateChunkerOptions(const ChunkerOptions& options);

// Finds chunk boundaries in a byte stream that arrives in pieces of any size.
//
// The caller keeps the bytes of the chunk being built (everything after the last
// boundary) and passes them on every call, with the newly arrived bytes appended:
//
//   size_t n;
//   while ((n = chunker.NextBoundary(pending, eof)) > 0) {
//     Emit(pending.first(n));
//     pending = pending.subspan(n);
//   }
//   // !eof: keep `pending`, append the next read, call again.
//
// The chunker remembers how far into the pending bytes it has already hashed, so every
// byte is hashed once however small the pieces are. The pending bytes never reach
// max_size, so that is all the caller must hold back between reads.
//
// Boundaries depend only on the content: the same bytes give the same chunks whether
// they came in one piece, in 128 KiB reads or one byte at a time, and a boundary never
// depends on bytes after it. The one exception is end_of_stream, which cuts the tail.
//
// Not thread-safe; one Chunker per stream direction. Holds no buffers (a few words of
// state) and may be copied.
class Chunker {
 public:
  // Throws std::invalid_argument with ValidateChunkerOptions' message when
  // the options are not usable.
  explicit Chunker(const ChunkerOptions& options = {});

  // The length of the first chunk of `data`: at least min_size and at most max_size,
  // except that with end_of_stream the rest of `data` (under max_size) is a chunk too.
  // 0 when `data` holds no complete chunk yet (more bytes needed), or when `data` is
  // empty. After a non-zero result the chunker starts a new chunk: the next call's
  // `data` must begin right after the returned length.
  //
  // end_of_stream: no more bytes follow (the stream ended, or the caller must flush
  // what it has, e.g. because the other side waits for an answer). A flush makes the
  // chunks after it depend on where it happened, until the next content-defined cut.
  //
  // REQUIRES: `data` begins at the current chunk's first byte and extends the bytes
  // passed in the previous call of this chunk (same bytes, possibly more).
  size_t NextBoundary(std::span<const uint8_t> data, bool end_of_stream);

  const ChunkerOptions& options() const { return options_; }

 private:
  ChunkerOptions options_;
  uint64_t mask_small_;  // more bits: a cut is less likely before avg_size
  uint64_t mask_large_;  // fewer bits: more likely after it
  size_t scanned_ = 0;   // bytes of the current chunk already hashed into hash_
  uint64_t hash_ = 0;
};

// The gear table G, exposed so tests can pin it: it is part of the protocol.
const std::array<uint64_t, 256>& GearTable();

}  // namespace wanopt::dre
