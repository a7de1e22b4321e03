#include "wanopt/dre/codec.h"

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "wanopt/channel/frame.h"
#include "util/bytes.h"
#include "util/log.h"

namespace wanopt::dre {
namespace {

enum Op : uint8_t { kRaw = 0x01, kLiteral = 0x02, kRef = 0x03, kDelta = 0x04 };

// A block of instructions closes once it holds this much less the largest chunk:
// with one more instruction (at most a maximum-size chunk) and zstd's worst case it
// still fits in one frame. Large blocks keep framing overhead on incompressible data
// under 0.1%.
constexpr size_t kBlockBudget = 120 * 1024;
// RAW instructions are cut to this size.
constexpr size_t kMaxRawOp = 32 * 1024;
// A frame's instructions never decompress to more than this.
constexpr size_t kMaxInstructions = 256 * 1024;

void PutVarint(Buffer& out, uint64_t v) {
  uint8_t bytes[10];
  size_t n = 0;
  do {
    bytes[n] = static_cast<uint8_t>(v & 0x7f);
    v >>= 7;
    if (v) bytes[n] |= 0x80;
    ++n;
  } while (v);
  out.Append({bytes, n});
}

bool GetVarint(std::span<const uint8_t> in, size_t* pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= in.size()) return false;
    uint8_t b = in[(*pos)++];
    *v |= uint64_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// A quick look before paying for zstd at the configured level on a whole block:
// level 1 on a 4 KiB sample from its middle. Incompressible data (random,
// encrypted, already compressed) is the common case where LZ only costs time.
bool LooksIncompressible(std::span<const uint8_t> block) {
  constexpr size_t kSample = 4096;
  if (block.size() < 4 * kSample) return false;
  auto sample = block.subspan(block.size() / 2 - kSample / 2, kSample);
  uint8_t out[ZSTD_COMPRESSBOUND(kSample)];
  // Level 1, not a negative one: those skip entropy coding, which is all that
  // base64 (a mail attachment) compresses by.
  size_t n = ZSTD_compress(out, sizeof out, sample.data(), sample.size(), 1);
  return !ZSTD_isError(n) && n * 100 > kSample * 97;
}

}  // namespace

// ---- zstd, one streaming context per direction, created on first use ----

struct Encoder::Lz {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  bool reset_next = true;  // the first compressed frame starts the stream
  explicit Lz(int level) {
    if (!cctx) throw std::bad_alloc();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    // A 1 MiB window: a connection's context costs a few MiB at most, not the tens
    // the default window for high levels would take.
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 20);
  }
  ~Lz() { ZSTD_freeCCtx(cctx); }
};

struct Decoder::Lz {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  Lz() {
    if (!dctx) throw std::bad_alloc();
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 20);
  }
  ~Lz() { ZSTD_freeDCtx(dctx); }
};

// zstd with a known chunk as the dictionary, one-shot per chunk.
struct Encoder::Delta {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx* plain = ZSTD_createCCtx();  // the same bytes without a dictionary, to compare
  Buffer out;
  Buffer scratch;
  ~Delta() {
    ZSTD_freeCCtx(cctx);
    ZSTD_freeCCtx(plain);
  }
};

struct Decoder::Delta {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~Delta() { ZSTD_freeDCtx(dctx); }
};

struct Encoder::Block {
  Buffer instructions;
  XXH3_state_t check;
  bool lz_end = false;  // the empty frame that ends the zstd stream (ReleaseIdle)
  Block() { XXH3_64bits_reset(&check); }
};

// ---- Encoder ----

Encoder::Encoder(const CodecOptions& options, std::shared_ptr<PeerState> peer, datastore::ChunkStore* store)
    : options_(options),
      peer_(std::move(peer)),
      store_(store),
      chunker_(options.chunker),
      block_target_(kBlockBudget - std::max(options.chunker.max_size, kMaxRawOp)) {}

Encoder::~Encoder() = default;

void Encoder::EmitOp(uint8_t op, std::span<const uint8_t> bytes, std::span<const uint8_t> decoded) {
  if (!current_) current_ = std::make_unique<Block>();
  Buffer& out = current_->instructions;
  out.Append({&op, 1});
  if (op == kRef) out.Append(bytes);  // the fingerprint; the length follows
  PutVarint(out, op == kRef ? decoded.size() : bytes.size());
  if (op != kRef) out.Append(bytes);
  XXH3_64bits_update(&current_->check, decoded.data(), decoded.size());
  if (out.size() >= block_target_) CloseBlock();
}

void Encoder::CloseBlock() {
  if (current_ && !current_->instructions.empty()) blocks_.push_back(std::move(current_));
  current_.reset();
}

void Encoder::EmitChunk(std::span<const uint8_t> chunk) {
  // The first pending_sent_ bytes already went out as RAW: the peer has them too.
  std::span<const uint8_t> rest = chunk.subspan(pending_sent_);
  Fingerprint fingerprint = FingerprintOf(chunk, peer_->key());
  if (previous_) peer_->SetNext(*previous_, fingerprint);
  previous_ = fingerprint;
  std::optional<Fingerprint> base = cursor_;
  auto known = references_ ? peer_->Find(fingerprint) : std::nullopt;
  if (known && store_->Contains(*known)) {
    auto fp = FingerprintBytes(fingerprint);
    EmitOp(kRef, fp, rest);
    ++stats_.chunks_hit;
    cursor_ = peer_->Next(fingerprint);
    return;
  }
  // New bytes: as a delta against the chunk this one probably replaced, if that is
  // smaller, else as they are.
  bool delta = references_ && base && *base != fingerprint && rest.size() >= 64 && EmitDelta(*base, rest);
  if (!delta) EmitOp(kLiteral, rest, rest);
  cursor_ = delta ? peer_->Next(*base) : std::nullopt;
  // Both boxes store a chunk when it first crosses: from now on either can name it.
  peer_->Learn(fingerprint, store_->Put(chunk));
  ++stats_.chunks_missed;
}

bool Encoder::EmitDelta(const Fingerprint& base, std::span<const uint8_t> rest) {
  auto id = peer_->Find(base);
  if (!id) return false;
  auto base_bytes = store_->Get(*id);
  if (!base_bytes) return false;
  if (!delta_) {
    delta_ = std::make_unique<Delta>();
    if (!delta_->cctx) return false;
    ZSTD_CCtx_setParameter(delta_->cctx, ZSTD_c_compressionLevel, 3);
  }
  size_t bound = ZSTD_compressBound(rest.size());
  delta_->out.Clear();
  delta_->out.Reserve(bound);
  ZSTD_CCtx_refPrefix(delta_->cctx, base_bytes->data(), base_bytes->size());
  size_t n = ZSTD_compress2(delta_->cctx, delta_->out.data(), bound, rest.data(), rest.size());
  // Worth it only when the base really helps: clearly less than what the same bytes
  // compress to alone (roughly what the literal costs after LZ). A chunk that is a
  // version of the base passes easily (an edit costs tens of bytes); compressible
  // bytes next to an unrelated base do not, and then the literal, compressed with
  // the stream's history, is the better choice.
  bool worth = !ZSTD_isError(n) && n * 2 <= rest.size();
  if (worth) {
    delta_->scratch.Clear();
    delta_->scratch.Reserve(bound);
    size_t alone = ZSTD_compressCCtx(delta_->plain, delta_->scratch.data(), bound, rest.data(), rest.size(), 1);
    worth = !ZSTD_isError(alone) && n * 4 <= alone * 3;
  }
  if (!worth) {
    ZSTD_CCtx_reset(delta_->cctx, ZSTD_reset_session_only);
    return false;
  }
  delta_->out.Commit(n);
  if (!current_) current_ = std::make_unique<Block>();
  Buffer& out = current_->instructions;
  const uint8_t op = kDelta;
  out.Append({&op, 1});
  out.Append(FingerprintBytes(base));
  PutVarint(out, rest.size());
  PutVarint(out, n);
  out.Append(delta_->out.span());
  XXH3_64bits_update(&current_->check, rest.data(), rest.size());
  ++stats_.chunks_delta;
  if (out.size() >= block_target_) CloseBlock();
  return true;
}

void Encoder::Append(std::span<const uint8_t> data) {
  if (!options_.dre) {
    while (!data.empty()) {
      auto piece = data.first(std::min(data.size(), kMaxRawOp));
      EmitOp(kRaw, piece, piece);
      data = data.subspan(piece.size());
    }
    return;
  }
  // Chunk straight from `data` while no chunk is pending: no copy for whole chunks.
  while (pending_.empty() && !data.empty()) {
    size_t n = chunker_.NextBoundary(data, false);
    if (n == 0) break;
    EmitChunk(data.first(n));
    data = data.subspan(n);
  }
  if (data.empty()) return;
  pending_.Append(data);
  for (;;) {
    size_t n = chunker_.NextBoundary(pending_.span(), false);
    if (n == 0) break;
    EmitChunk(pending_.span().first(n));
    pending_.Consume(n);
    pending_sent_ = 0;
  }
}

void Encoder::Flush() {
  if (options_.dre && pending_.size() > pending_sent_) {
    // The LAN side paused mid-chunk: send what we have, keep it as the chunk's start.
    auto tail = pending_.span().subspan(pending_sent_);
    while (!tail.empty()) {
      auto piece = tail.first(std::min(tail.size(), kMaxRawOp));
      EmitOp(kRaw, piece, piece);
      tail = tail.subspan(piece.size());
    }
    pending_sent_ = pending_.size();
  }
  CloseBlock();
}

void Encoder::TakePayload(Buffer& payload, uint8_t* flags) {
  std::unique_ptr<Block> block = std::move(blocks_.front());
  blocks_.pop_front();
  payload.Clear();
  uint8_t check[8];
  bytes::PutBe64(check, XXH3_64bits_digest(&block->check));
  payload.Append(check);
  *flags = 0;
  if (block->lz_end) {
    *flags = kFlagLzEnd;  // no instructions: the check is that of no bytes
    return;
  }
  std::span<const uint8_t> in = block->instructions.span();
  stats_.lz_in += in.size();
  if (options_.lz && LooksIncompressible(in)) {
    // Random or already compressed bytes: send them as they are without feeding the
    // stream, so neither side's zstd history changes and nothing needs a reset.
    payload.Append(in);
    stats_.lz_out += in.size();
    return;
  }
  if (options_.lz) {
    if (!lz_) lz_ = std::make_unique<Lz>(options_.lz_level);
    size_t bound = ZSTD_compressBound(in.size());
    payload.Reserve(8 + bound);
    ZSTD_inBuffer zin{in.data(), in.size(), 0};
    ZSTD_outBuffer zout{payload.data() + 8, bound, 0};
    size_t left = ZSTD_compressStream2(lz_->cctx, &zout, &zin, ZSTD_e_flush);
    if (!ZSTD_isError(left) && left == 0 && zout.pos < in.size()) {
      payload.Commit(zout.pos);
      *flags = kFlagCompressed | (lz_->reset_next ? kFlagLzReset : 0);
      lz_->reset_next = false;
      peer_holds_lz_ = true;
      stats_.lz_out += zout.pos;
      return;
    }
    // Did not compress (or failed): send the instructions as they are, and restart
    // the zstd stream on both sides, since the decoder never saw these bytes.
    ZSTD_CCtx_reset(lz_->cctx, ZSTD_reset_session_only);
    lz_->reset_next = true;
  }
  payload.Append(in);
  stats_.lz_out += in.size();
}

bool Encoder::ReleaseIdle(bool end_stream) {
  bool waiting = !blocks_.empty() || (current_ && !current_->instructions.empty()) || pending_.size() > pending_sent_;
  if (waiting) return false;
  // A new context starts a new stream: its first compressed frame carries kFlagLzReset.
  lz_.reset();
  delta_.reset();
  current_.reset();
  pending_.ShrinkToFit();
  if (!end_stream || !peer_holds_lz_) return false;
  peer_holds_lz_ = false;
  auto end = std::make_unique<Block>();
  end->lz_end = true;
  blocks_.push_back(std::move(end));
  return true;
}

size_t Encoder::HeldBytes() const {
  size_t held = pending_.capacity();
  if (lz_) held += sizeof(Lz) + ZSTD_sizeof_CCtx(lz_->cctx);
  if (delta_) {
    held += sizeof(Delta) + ZSTD_sizeof_CCtx(delta_->cctx) + ZSTD_sizeof_CCtx(delta_->plain) +
            delta_->out.capacity() + delta_->scratch.capacity();
  }
  if (current_) held += sizeof(Block) + current_->instructions.capacity();
  for (const auto& block : blocks_) held += sizeof(Block) + block->instructions.capacity();
  return held;
}

std::optional<std::vector<uint8_t>> Encoder::Repair(const Fingerprint& fingerprint) {
  ++stats_.nacks;
  auto id = peer_->FindForRepair(fingerprint);
  peer_->Forget(fingerprint);
  if (!id || !store_) return std::nullopt;
  auto chunk = store_->Get(*id);
  if (!chunk || FingerprintOf(*chunk, peer_->key()) != fingerprint) return std::nullopt;
  // The peer stores the repaired chunk: it knows it again.
  peer_->Learn(fingerprint, *id);
  return chunk;
}

// ---- Decoder ----

Decoder::Decoder(const CodecOptions& options, std::shared_ptr<PeerState> peer, datastore::ChunkStore* store)
    : options_(options), peer_(std::move(peer)), store_(store) {}

Decoder::~Decoder() = default;

Decoder::Status Decoder::Decode(uint8_t flags, std::span<const uint8_t> payload, Buffer& out) {
  if (payload.size() < 8) {
    error_ = "dre frame shorter than its check";
    return Status::kCorrupt;
  }
  expected_check_ = bytes::GetBe64(payload.data());
  std::span<const uint8_t> body = payload.subspan(8);
  instructions_.Clear();
  position_ = 0;
  frame_output_.Clear();
  missing_.clear();
  if (flags & kFlagCompressed) {
    if (!options_.lz) {
      error_ = "compressed dre frame, but LZ was not negotiated";
      return Status::kCorrupt;
    }
    if (!(flags & kFlagLzReset) && !lz_) {
      // The history this frame refers to is gone (or never was): refuse it rather
      // than let zstd guess.
      error_ = "compressed dre frame continues a zstd stream that was not started or has ended";
      return Status::kCorrupt;
    }
    if (!lz_) lz_ = std::make_unique<Lz>();
    if (flags & kFlagLzReset) ZSTD_DCtx_reset(lz_->dctx, ZSTD_reset_session_only);
    ZSTD_inBuffer zin{body.data(), body.size(), 0};
    // Until the input is consumed and the context has nothing more to give (a full
    // output buffer may leave decoded bytes inside it).
    bool output_full = true;
    while (zin.pos < zin.size || output_full) {
      instructions_.Reserve(instructions_.size() + 64 * 1024);
      auto tail = instructions_.WritableTail();
      ZSTD_outBuffer zout{tail.data(), tail.size(), 0};
      size_t r = ZSTD_decompressStream(lz_->dctx, &zout, &zin);
      if (ZSTD_isError(r)) {
        error_ = std::string("zstd: ") + ZSTD_getErrorName(r);
        return Status::kCorrupt;
      }
      instructions_.Commit(zout.pos);
      if (instructions_.size() > kMaxInstructions) {
        error_ = "dre frame decompresses to more than 256 KiB";
        return Status::kCorrupt;
      }
      output_full = zout.pos == zout.size;
    }
  } else {
    if (lz_ && (flags & kFlagLzReset)) ZSTD_DCtx_reset(lz_->dctx, ZSTD_reset_session_only);
    instructions_.Append(body);
  }
  if (flags & kFlagLzEnd) {
    // The peer's stream ended (its connection went idle): free the history; the next
    // compressed frame must restart the stream.
    lz_.reset();
  }
  stats_.lz_out += body.size();
  stats_.lz_in += instructions_.size();
  return Run(out);
}

void Decoder::ReleaseIdle() {
  if (position_ < instructions_.size()) return;  // a frame waits for repairs
  delta_.reset();
  instructions_.Clear();
  instructions_.ShrinkToFit();
  position_ = 0;
  frame_output_.Clear();
  frame_output_.ShrinkToFit();
  prefix_.ShrinkToFit();
  missing_.clear();
  missing_.shrink_to_fit();
}

size_t Decoder::HeldBytes() const {
  size_t held = prefix_.capacity() + instructions_.capacity() + frame_output_.capacity() +
                missing_.capacity() * sizeof(Fingerprint);
  for (const auto& [fingerprint, chunk] : repairs_) held += chunk.capacity();
  if (lz_) held += sizeof(Lz) + ZSTD_sizeof_DCtx(lz_->dctx);
  if (delta_) held += sizeof(Delta) + ZSTD_sizeof_DCtx(delta_->dctx);
  return held;
}

Decoder::Status Decoder::Resume(Buffer& out) {
  missing_.clear();
  return Run(out);
}

bool Decoder::AddRepair(const Fingerprint& fingerprint, std::span<const uint8_t> chunk) {
  if (FingerprintOf(chunk, peer_->key()) != fingerprint) return false;
  repairs_[fingerprint].assign(chunk.begin(), chunk.end());
  if (store_) peer_->Learn(fingerprint, store_->Put(chunk));
  return true;
}

bool Decoder::Resolve(const Fingerprint& fingerprint, Buffer& chunk) {
  chunk.Clear();
  if (auto it = repairs_.find(fingerprint); it != repairs_.end()) {
    chunk.Append(it->second);
    repairs_.erase(it);
    return true;
  }
  if (!store_) return false;
  auto id = peer_->Find(fingerprint);
  if (!id || !store_->GetInto(*id, chunk)) return false;
  // The store verified its own id; this checks the peering's name for the bytes too.
  Fingerprint actual = FingerprintOf(chunk.span(), peer_->key());
  if (actual != fingerprint) {
    auto want = FingerprintBytes(fingerprint);
    auto got = FingerprintBytes(actual);
    char text[80];
    std::snprintf(text, sizeof text, "%016llx%016llx != %016llx%016llx",
                  static_cast<unsigned long long>(fingerprint.hi), static_cast<unsigned long long>(fingerprint.lo),
                  static_cast<unsigned long long>(actual.hi), static_cast<unsigned long long>(actual.lo));
    WANOPT_LOG(kWarn, "dre") << "stored chunk does not match its reference (" << text << "): asking the peer again";
    (void)want;
    (void)got;
    peer_->Forget(fingerprint);
    return false;
  }
  return true;
}

// prefix_ now holds a whole new chunk: store it and remember the peering's name for it.
void Decoder::StoreChunk() {
  Fingerprint fingerprint = FingerprintOf(prefix_.span(), peer_->key());
  peer_->Learn(fingerprint, store_->Put(prefix_.span()));
  prefix_.Clear();
  ++stats_.chunks_missed;
}

Decoder::Status Decoder::Run(Buffer& out) {
  std::span<const uint8_t> in = instructions_.span();
  Buffer chunk;
  while (position_ < in.size()) {
    size_t pos = position_;
    uint8_t op = in[pos++];
    if (op == kRaw || op == kLiteral) {
      uint64_t n = 0;
      if (!GetVarint(in, &pos, &n) || n > in.size() - pos) {
        error_ = "truncated instruction";
        return Status::kCorrupt;
      }
      auto bytes = in.subspan(pos, n);
      frame_output_.Append(bytes);
      if (options_.dre && !unchunked_) {
        if (op == kRaw) {
          prefix_.Append(bytes);
          if (prefix_.size() > kMaxChunkSizeLimit) {
            // A DRE encoder ends a chunk well before this: the peer encodes without
            // DRE (it applies L: its datastore is off or degraded, or this is what
            // the peering applied last time). Its RAW is plain bytes from now on.
            unchunked_ = true;
            prefix_.Clear();
          }
        } else {
          prefix_.Append(bytes);
          StoreChunk();
        }
      }
      // Without DRE a LITERAL is just bytes: the peer may send its first bytes that
      // way before it knows whether this box stores chunks.
      position_ = pos + n;
      continue;
    }
    if (op == kRef) {
      if (!options_.dre || unchunked_ || in.size() - pos < 16) {
        error_ = options_.dre && !unchunked_ ? "truncated reference" : "reference without DRE";
        return Status::kCorrupt;
      }
      Fingerprint fingerprint = FingerprintFromBytes(std::span<const uint8_t, 16>(in.data() + pos, 16));
      pos += 16;
      uint64_t n = 0;
      if (!GetVarint(in, &pos, &n)) {
        error_ = "truncated reference";
        return Status::kCorrupt;
      }
      if (!Resolve(fingerprint, chunk)) {
        // Stop here; the caller asks the peer for the bytes and calls Resume().
        missing_.push_back(fingerprint);
        ++stats_.nacks;
        return Status::kMissing;
      }
      // Not prefix_.size() + n: a 64-bit n from the peer could wrap the sum.
      if (chunk.size() < prefix_.size() || chunk.size() - prefix_.size() != n ||
          !std::equal(prefix_.data(), prefix_.data() + prefix_.size(), chunk.data())) {
        error_ = "referenced chunk does not continue the bytes already received";
        return Status::kCorrupt;
      }
      frame_output_.Append(chunk.span().subspan(prefix_.size()));
      prefix_.Clear();
      ++stats_.chunks_hit;
      position_ = pos;
      continue;
    }
    if (op == kDelta) {
      if (!options_.dre || unchunked_ || in.size() - pos < 16) {
        error_ = options_.dre && !unchunked_ ? "truncated delta" : "delta without DRE";
        return Status::kCorrupt;
      }
      Fingerprint base = FingerprintFromBytes(std::span<const uint8_t, 16>(in.data() + pos, 16));
      pos += 16;
      uint64_t n = 0, m = 0;
      // n is bounded on its own first: added to the prefix, a 64-bit n could wrap.
      if (!GetVarint(in, &pos, &n) || !GetVarint(in, &pos, &m) || m > in.size() - pos ||
          n > kMaxChunkSizeLimit || prefix_.size() + n > kMaxChunkSizeLimit) {
        error_ = "truncated or oversized delta";
        return Status::kCorrupt;
      }
      if (!Resolve(base, chunk)) {
        missing_.push_back(base);
        ++stats_.nacks;
        return Status::kMissing;
      }
      if (!delta_) delta_ = std::make_unique<Delta>();
      size_t start = prefix_.size();
      prefix_.Reserve(start + n);
      ZSTD_DCtx_refPrefix(delta_->dctx, chunk.data(), chunk.size());
      size_t got = ZSTD_decompressDCtx(delta_->dctx, prefix_.data() + start, n, in.data() + pos, m);
      if (ZSTD_isError(got) || got != n) {
        ZSTD_DCtx_reset(delta_->dctx, ZSTD_reset_session_only);
        error_ = "delta does not decode";
        return Status::kCorrupt;
      }
      prefix_.Commit(n);
      frame_output_.Append(prefix_.span().subspan(start));
      StoreChunk();
      ++stats_.chunks_delta;
      position_ = pos + m;
      continue;
    }
    error_ = "unknown instruction " + std::to_string(op);
    return Status::kCorrupt;
  }
  uint64_t actual = XXH3_64bits(frame_output_.data(), frame_output_.size());
  if (actual != expected_check_) {
    char text[64];
    std::snprintf(text, sizeof text, "%016llx, expected %016llx", static_cast<unsigned long long>(actual),
                  static_cast<unsigned long long>(expected_check_));
    error_ = std::string("reconstructed bytes fail their check: ") + text;
    return Status::kCorrupt;
  }
  out.Append(frame_output_.span());
  frame_output_.Clear();
  return Status::kDone;
}

}  // namespace wanopt::dre
