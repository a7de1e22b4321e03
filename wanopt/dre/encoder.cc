// The DRE/LZ encoder (codec.h): chunks, references, deltas, zstd blocks.
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
#include "wanopt/dre/codec_format.h"
#include "wanopt/dre/lz_params.h"

namespace wanopt::dre {

using namespace codec_format;

namespace {

// A quick look before paying for zstd at the configured level on a whole block:
// level 1 on a 4 KiB sample from its middle. Incompressible data (random,
// encrypted, already compressed) is the common case where LZ only costs time.
// Blocks shorter than this do not start a zstd stream (see TakePayload).
constexpr size_t kLzFirstBlockMin = 128;

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
  Lz(int level, int window_log) {
    if (!cctx) throw std::bad_alloc();
    ApplyLzLevel(cctx, level, window_log);
  }
  ~Lz() { ZSTD_freeCCtx(cctx); }
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

struct Encoder::Block {
  Buffer instructions;
  size_t decoded = 0;  // what the instructions decode to
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
  bool by_reference = op == kRef || op == kPrefix;
  if (by_reference) out.Append(bytes);  // the fingerprint; the length follows
  PutVarint(out, by_reference ? decoded.size() : bytes.size());
  if (!by_reference) out.Append(bytes);
  Account(decoded);
}

void Encoder::Account(std::span<const uint8_t> decoded) {
  XXH3_64bits_update(&current_->check, decoded.data(), decoded.size());
  current_->decoded += decoded.size();
  if (current_->instructions.size() >= block_target_ || current_->decoded >= kBlockDecodedBudget) CloseBlock();
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
  // Named only if this box can still send the bytes when the peer asks (Lasting).
  if (known && store_->Lasting(*known)) {
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
  if (!id || !store_->Lasting(*id)) return false;
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
  ++stats_.chunks_delta;
  Account(rest);
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
    if (EmitPredictedPrefix(tail)) tail = {};
    while (!tail.empty()) {
      auto piece = tail.first(std::min(tail.size(), kMaxRawOp));
      EmitOp(kRaw, piece, piece);
      tail = tail.subspan(piece.size());
    }
    pending_sent_ = pending_.size();
  }
  CloseBlock();
}

// A sender paced by its peer (RPC over HTTP's receive windows, SMB2 credits) pauses
// every few kilobytes, mid-chunk: sent as RAW, those bytes would cross whole again
// and again on a repeat. When the chunk that followed the last one last time
// (cursor_) begins with everything this chunk holds so far, the tail is sent as a
// PREFIX of it instead. Whatever chunk this one turns out to be, the bytes are right.
bool Encoder::EmitPredictedPrefix(std::span<const uint8_t> tail) {
  if (!references_ || !cursor_ || tail.empty()) return false;
  auto id = peer_->Find(*cursor_);
  if (!id || !store_->Lasting(*id)) return false;
  auto predicted = store_->Get(*id);
  if (!predicted || predicted->size() <= pending_.size() ||
      !std::equal(pending_.data(), pending_.data() + pending_.size(), predicted->data())) {
    return false;
  }
  auto fp = FingerprintBytes(*cursor_);
  EmitOp(kPrefix, fp, tail);
  ++stats_.prefixes_hit;
  return true;
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
  if (options_.lz && (LooksIncompressible(in) || (!lz_ && in.size() < kLzFirstBlockMin))) {
    // Random or already compressed bytes: send them as they are without feeding the
    // stream, so neither side's zstd history changes and nothing needs a reset. So
    // too a few bytes while no stream exists: a context costs ~2.6 MB to set up and
    // zero (a quarter of a short connection's CPU, intercept_scale_bench), and a
    // connection that only ever sends a greeting never needs one.
    payload.Append(in);
    stats_.lz_out += in.size();
    return;
  }
  if (options_.lz) {
    if (!lz_) lz_ = std::make_unique<Lz>(options_.lz_level, options_.lz_window_log);
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

void Encoder::set_lz_level(int level, int window_log) {
  if (level == options_.lz_level && window_log == options_.lz_window_log) return;
  options_.lz_level = level;
  options_.lz_window_log = window_log;
  if (!lz_) return;  // the next context is made with these
  // Parameters apply to a new stream only: restart it (the decoder resets too).
  ZSTD_CCtx_reset(lz_->cctx, ZSTD_reset_session_only);
  ApplyLzLevel(lz_->cctx, level, window_log);
  lz_->reset_next = true;
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
  // The name stays known while the chunk is read: another session of this peering
  // (another thread) may be answering a NACK for the same chunk at the same moment,
  // and forgetting it first, then learning it again, left it a moment when that
  // session found no name and reset its connection (a soak's "no longer has either").
  auto id = peer_->FindForRepair(fingerprint);
  std::optional<std::vector<uint8_t>> chunk;
  if (id && store_) chunk = store_->Get(*id);
  if (!chunk || FingerprintOf(*chunk, peer_->key()) != fingerprint) {
    peer_->Forget(fingerprint);
    return std::nullopt;
  }
  // The peer stores the repaired chunk: it knows it again.
  peer_->Learn(fingerprint, *id);
  return chunk;
}

}  // namespace wanopt::dre
