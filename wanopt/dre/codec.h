// The DRE and LZ codec of one direction of one connection.
//
// The encoder turns LAN bytes into the payloads of `dre` frames; the decoder turns
// them back. What goes on the wire (wanopt/docs/inner-channel.md, "DRE frames"):
//
//   frame payload = check (8 bytes: XXH3-64 of the bytes this frame decodes to)
//                   + instructions, zstd-compressed when that made them smaller
//   instruction   = RAW     0x01 varint(n) n bytes       bytes of a chunk not cut yet
//                 | LITERAL 0x02 varint(n) n bytes       the rest of a new chunk
//                 | REF     0x03 fingerprint(16) varint(n) a chunk both boxes know
//                 | DELTA   0x04 fingerprint(16) varint(n) varint(m) m bytes
//                          the rest of a new chunk (n bytes), zstd-compressed with the
//                          known chunk `fingerprint` as its dictionary
//
// DELTA is what makes an edited file cheap: a chunk with a small change is sent as
// its difference from the chunk it replaced. The encoder guesses that chunk from the
// stream's order: the chunk that followed the previous one the last time it crossed.
//
// Chunks are cut by content (chunker.h). When the LAN side pauses mid-chunk, the
// encoder flushes the bytes it has as RAW, so an interactive protocol never waits
// for a chunk to fill, and keeps them as the start of the chunk: the LITERAL or REF
// that completes the chunk covers only the rest. Chunk boundaries therefore never
// depend on how the stream was read, and a file sent twice is cut the same way twice.
//
// A REF the decoder cannot resolve (evicted, store wiped, new box) stops decoding:
// the caller sends the missing fingerprints back in a NACK, the encoder's box answers
// with the chunk's bytes (REPAIR), and decoding resumes where it stopped. A slower
// transfer, never a wrong byte: every resolved chunk is re-fingerprinted and must
// match its reference, and every frame's output must match its check.
//
// Policies: DRE off (L) sends RAW only; LZ off (D) never compresses. With both off
// (T) the codec is not used at all. A decoder with DRE on decodes an L stream too
// (a peer whose datastore degraded, or a branch encoding as its peering applied last
// time): more RAW than the largest chunk without a chunk's end tells it so.
//
// Idle connections: a zstd context costs hundreds of KiB of memory (the encoder's
// hash tables, the decoder's 1 MiB window), far more than the connection itself.
// ReleaseIdle() frees the contexts and scratch buffers of an idle direction; the
// next byte rebuilds them, and the zstd stream restarts (kFlagLzReset). The decoder
// frees its context only when the encoder said its stream ended (kFlagLzEnd, on an
// empty frame the encoder makes for that): after that frame a compressed frame that
// does not restart the stream is corrupt, never decoded against a history the
// decoder no longer has.
//
// Not thread-safe: one encoder and one decoder per direction per connection.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>
#include <string>
#include <vector>

#include "datastore/chunk_store.h"
#include "wanopt/dre/chunker.h"
#include "wanopt/dre/fingerprint.h"
#include "wanopt/dre/lz_params.h"
#include "wanopt/dre/peer_table.h"
#include "util/buffer.h"

namespace wanopt::dre {

// Frame header flags of `dre` frames.
inline constexpr uint8_t kFlagCompressed = 0x01;  // the instructions are zstd-compressed
inline constexpr uint8_t kFlagLzReset = 0x02;     // the zstd stream restarts with this frame
// The zstd stream ends after this frame: the next compressed frame carries kFlagLzReset,
// and the decoder may free its context now. Sent on an empty frame when the encoder
// released an idle stream (Encoder::ReleaseIdle).
inline constexpr uint8_t kFlagLzEnd = 0x04;

struct CodecOptions {
  bool dre = true;
  bool lz = true;
  int lz_level = 3;
  int lz_window_log = kLzWindowLog;  // at most what the peer's decoder takes (lz_params.h)
  ChunkerOptions chunker;
};

// Counters one direction of a connection adds up; the session copies them into its
// connection record.
struct CodecStats {
  uint64_t chunks_hit = 0;      // chunks sent or resolved as references
  uint64_t chunks_missed = 0;   // chunks sent or received as literals (or deltas)
  uint64_t chunks_delta = 0;    // ... of which as a delta against a known chunk
  uint64_t prefixes_hit = 0;    // encoder: paused mid-chunk, sent as a PREFIX of the predicted chunk
  uint64_t nacks = 0;           // references the peer could not resolve (encoder) / we could not (decoder)
  uint64_t lz_in = 0, lz_out = 0;  // instruction bytes before and after compression
};

class Encoder {
 public:
  // `peer` and `store` must outlive the encoder; `store` may be null when options.dre is false.
  Encoder(const CodecOptions& options, std::shared_ptr<PeerState> peer, datastore::ChunkStore* store);
  ~Encoder();

  // Adds LAN bytes. Whole chunks are encoded at once; the rest waits for more bytes
  // or a Flush().
  void Append(std::span<const uint8_t> data);
  // Encodes everything appended so far (the LAN side paused or ended).
  void Flush();
  // Whether a frame payload is ready: a block of instructions filled up, or Flush()
  // closed one.
  bool HasPayload() const { return !blocks_.empty(); }
  // Replaces `payload` with the next frame payload (check, then instructions,
  // compressed when that helps) and sets the frame flags. At most
  // channel::kMaxFramePayload bytes. REQUIRES: HasPayload().
  void TakePayload(Buffer& payload, uint8_t* flags);

  // The peer could not resolve `fingerprint`: returns the chunk's bytes for a REPAIR
  // (the peer knows the chunk again once it has them), or nullopt if this box no
  // longer has them either (then it forgets that the peer knows it).
  std::optional<std::vector<uint8_t>> Repair(const Fingerprint& fingerprint);

  // The connection is idle: frees the zstd contexts (LZ and delta) and scratch
  // buffers; the next Append() rebuilds what it needs, and the next compressed frame
  // restarts the zstd stream (kFlagLzReset). Keeps what the stream depends on: the
  // bytes of the chunk being built (already sent as RAW) and the chunk order.
  // Does nothing and returns false while bytes wait to be framed (HasPayload(), or
  // Append() without a Flush()).
  // With `end_stream`, when the peer's decoder may hold a zstd context for this
  // stream, also makes a payload ready and returns true: an empty frame flagged
  // kFlagLzEnd, which lets the peer free its context. The caller sends it like any
  // other payload; without `end_stream` (no frame may be sent now) a later call sends it.
  bool ReleaseIdle(bool end_stream);
  // Bytes this encoder holds on the heap (contexts, buffers, blocks), not counting
  // the object itself: what an idle connection costs (the daemon's
  // codec_bytes_released counter adds up what ReleaseIdle frees).
  size_t HeldBytes() const;
  // The zstd level (1..19) and window (lz_params.h: at most what the peer's decoder
  // takes) of the frames from now on. A change restarts the zstd stream (the next
  // compressed frame carries kFlagLzReset): call it seldom.
  void set_lz_level(int level, int window_log);
  int lz_level() const { return options_.lz_level; }
  int lz_window_log() const { return options_.lz_window_log; }
  // Whether new chunks may be sent as references (REF, DELTA) to chunks the peer
  // knows. Off: every chunk goes out as a LITERAL, which any peer decodes (one
  // without DRE just passes it on), and is still learned by both boxes that store.
  // A branch sends its first bytes to a new peer this way, before the peer's answer
  // says whether it runs DRE. On by default.
  void set_references(bool on) { references_ = on; }

  const CodecStats& stats() const { return stats_; }

 private:
  void EmitChunk(std::span<const uint8_t> chunk);
  bool EmitDelta(const Fingerprint& base, std::span<const uint8_t> rest);
  bool EmitPredictedPrefix(std::span<const uint8_t> tail);
  void EmitOp(uint8_t op, std::span<const uint8_t> bytes, std::span<const uint8_t> decoded);
  // After an instruction was added to current_: `decoded` (what it decodes to) joins
  // the block's check and size, and the block closes once it is full either way.
  void Account(std::span<const uint8_t> decoded);
  void CloseBlock();

  CodecOptions options_;
  std::shared_ptr<PeerState> peer_;
  datastore::ChunkStore* store_;
  Chunker chunker_;
  const size_t block_target_;
  Buffer pending_;          // the chunk being built
  size_t pending_sent_ = 0;  // ... of which this many bytes went out as RAW
  std::optional<Fingerprint> previous_;  // the last chunk encoded
  std::optional<Fingerprint> cursor_;    // the chunk expected next, from the last time
  struct Delta;
  std::unique_ptr<Delta> delta_;
  struct Block;
  std::unique_ptr<Block> current_;           // instructions being added
  std::deque<std::unique_ptr<Block>> blocks_;  // closed, waiting to be framed
  struct Lz;
  std::unique_ptr<Lz> lz_;
  bool peer_holds_lz_ = false;  // a compressed frame went out since the stream last ended
  bool references_ = true;
  CodecStats stats_;
};

class Decoder {
 public:
  enum class Status {
    kDone,       // the frame is decoded; its bytes were appended to `out`
    kMissing,    // references could not be resolved: missing() lists them; call Resume()
    kCorrupt,    // the frame cannot be decoded or fails a check: reset the connection
  };

  Decoder(const CodecOptions& options, std::shared_ptr<PeerState> peer, datastore::ChunkStore* store);
  ~Decoder();

  // Decodes one `dre` frame, appending its bytes to `out`.
  Status Decode(uint8_t flags, std::span<const uint8_t> payload, Buffer& out);
  // After kMissing, once repairs arrived: continues the same frame.
  Status Resume(Buffer& out);
  const std::vector<Fingerprint>& missing() const { return missing_; }
  // The bytes of a chunk the peer re-sent. Returns false when they do not match
  // the fingerprint (then they are ignored).
  bool AddRepair(const Fingerprint& fingerprint, std::span<const uint8_t> chunk);

  // The connection is idle: frees the delta context and the scratch buffers, which
  // the next frame rebuilds. Keeps the RAW bytes of the chunk being built, and the
  // LZ context, which holds the stream's history: that one is freed when a frame
  // flagged kFlagLzEnd says the stream ended. Does nothing while a frame waits for
  // repairs (kMissing).
  void ReleaseIdle();
  // Bytes this decoder holds on the heap (contexts, buffers), not counting the object.
  size_t HeldBytes() const;

  // One line for the log when a decode failed.
  const std::string& error() const { return error_; }
  const CodecStats& stats() const { return stats_; }

 private:
  Status Run(Buffer& out);
  // Appends the chunk `fingerprint` names to `into` (a repair, else the store's
  // bytes, checked against the fingerprint). False, `into` unchanged, when neither has it.
  bool Resolve(const Fingerprint& fingerprint, Buffer& into);
  Status Missing(const Fingerprint& fingerprint);
  void StoreChunk();

  CodecOptions options_;
  std::shared_ptr<PeerState> peer_;
  datastore::ChunkStore* store_;
  Buffer prefix_;        // RAW bytes since the last chunk boundary
  // RAW ran past the largest chunk: the peer's encoder has DRE off (L), whatever
  // this connection negotiated; RAW and LITERAL are plain bytes, REF and DELTA errors.
  bool unchunked_ = false;
  Buffer instructions_;  // the frame being decoded
  size_t position_ = 0;  // ... up to here
  uint64_t expected_check_ = 0;
  Buffer frame_output_;  // what this frame decoded to so far
  Buffer chunk_;         // a referenced chunk that continues RAW bytes, or a delta's base
  std::vector<Fingerprint> missing_;
  std::unordered_map<Fingerprint, std::vector<uint8_t>> repairs_;
  std::string error_;
  // Exists while a zstd stream started (kFlagLzReset) and has not ended
  // (kFlagLzEnd): only then may a compressed frame continue it.
  struct Lz;
  std::unique_ptr<Lz> lz_;
  struct Delta;
  std::unique_ptr<Delta> delta_;
  CodecStats stats_;
};

}  // namespace wanopt::dre
