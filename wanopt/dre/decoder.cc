// The DRE/LZ decoder (codec.h): frames checked, instructions resolved against the
// chunk store, repairs awaited, every byte verified before it leaves.
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

// ---- zstd, one streaming context per direction, created on first use ----

struct Decoder::Lz {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  Lz() {
    if (!dctx) throw std::bad_alloc();
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, kLzWideWindowLog);
  }
  ~Lz() { ZSTD_freeDCtx(dctx); }
};

struct Decoder::Delta {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~Delta() { ZSTD_freeDCtx(dctx); }
};

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
  chunk_.Clear();
  chunk_.ShrinkToFit();
  prefix_.ShrinkToFit();
  missing_.clear();
  missing_.shrink_to_fit();
}

size_t Decoder::HeldBytes() const {
  size_t held = prefix_.capacity() + instructions_.capacity() + frame_output_.capacity() + chunk_.capacity() +
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

bool Decoder::Resolve(const Fingerprint& fingerprint, Buffer& into) {
  if (auto it = repairs_.find(fingerprint); it != repairs_.end()) {
    into.Append(it->second);
    repairs_.erase(it);
    return true;
  }
  if (!store_) return false;
  auto id = peer_->Find(fingerprint);
  size_t before = into.size();
  if (!id || !store_->GetInto(*id, into)) return false;
  // The store verified its own id; this checks the peering's name for the bytes too.
  Fingerprint actual = FingerprintOf(into.span().subspan(before), peer_->key());
  if (actual != fingerprint) {
    into.Truncate(before);
    char text[80];
    std::snprintf(text, sizeof text, "%016llx%016llx != %016llx%016llx",
                  static_cast<unsigned long long>(fingerprint.hi), static_cast<unsigned long long>(fingerprint.lo),
                  static_cast<unsigned long long>(actual.hi), static_cast<unsigned long long>(actual.lo));
    WANOPT_LOG(kWarn, "dre") << "stored chunk does not match its reference (" << text << "): asking the peer again";
    peer_->Forget(fingerprint);
    return false;
  }
  return true;
}

// Stops the frame at a reference this box cannot resolve: the caller asks the peer
// for the bytes and calls Resume(), which starts again at this instruction.
Decoder::Status Decoder::Missing(const Fingerprint& fingerprint) {
  missing_.push_back(fingerprint);
  ++stats_.nacks;
  return Status::kMissing;
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
  for (;;) {
    // Checked as the output grows, not only at the end: that is what bounds it.
    if (frame_output_.size() > kMaxFrameOutput) {
      error_ = "dre frame decodes to more than 8 MiB";
      return Status::kCorrupt;
    }
    if (position_ >= in.size()) break;
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
      if (prefix_.empty()) {
        // A whole chunk, the common case: straight into the output, no copy between.
        size_t start = frame_output_.size();
        if (!Resolve(fingerprint, frame_output_)) return Missing(fingerprint);
        if (frame_output_.size() - start != n) {
          error_ = "referenced chunk does not continue the bytes already received";
          return Status::kCorrupt;
        }
        ++stats_.chunks_hit;
        position_ = pos;
        continue;
      }
      chunk_.Clear();
      if (!Resolve(fingerprint, chunk_)) return Missing(fingerprint);
      // Not prefix_.size() + n: a 64-bit n from the peer could wrap the sum.
      if (chunk_.size() < prefix_.size() || chunk_.size() - prefix_.size() != n ||
          !std::equal(prefix_.data(), prefix_.data() + prefix_.size(), chunk_.data())) {
        error_ = "referenced chunk does not continue the bytes already received";
        return Status::kCorrupt;
      }
      frame_output_.Append(chunk_.span().subspan(prefix_.size()));
      prefix_.Clear();
      ++stats_.chunks_hit;
      position_ = pos;
      continue;
    }
    if (op == kPrefix) {
      // The next n bytes of the chunk being received, from a known chunk that begins
      // with everything received of it so far (the encoder's EmitPredictedPrefix).
      if (!options_.dre || unchunked_ || in.size() - pos < 16) {
        error_ = options_.dre && !unchunked_ ? "truncated prefix" : "prefix without DRE";
        return Status::kCorrupt;
      }
      Fingerprint fingerprint = FingerprintFromBytes(std::span<const uint8_t, 16>(in.data() + pos, 16));
      pos += 16;
      uint64_t n = 0;
      if (!GetVarint(in, &pos, &n)) {
        error_ = "truncated prefix";
        return Status::kCorrupt;
      }
      chunk_.Clear();
      if (!Resolve(fingerprint, chunk_)) return Missing(fingerprint);
      if (chunk_.size() <= prefix_.size() || chunk_.size() - prefix_.size() < n || n == 0 ||
          !std::equal(prefix_.data(), prefix_.data() + prefix_.size(), chunk_.data())) {
        error_ = "prefix chunk does not continue the bytes already received";
        return Status::kCorrupt;
      }
      auto bytes = chunk_.span().subspan(prefix_.size(), n);
      frame_output_.Append(bytes);
      prefix_.Append(bytes);
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
      chunk_.Clear();
      if (!Resolve(base, chunk_)) return Missing(base);
      if (!delta_) delta_ = std::make_unique<Delta>();
      size_t start = prefix_.size();
      prefix_.Reserve(start + n);
      ZSTD_DCtx_refPrefix(delta_->dctx, chunk_.data(), chunk_.size());
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
  // Moved rather than copied when `out` has nothing and no more room (the next frame
  // then reuses its storage); else copied, and a larger buffer stays the caller's.
  if (out.empty() && out.capacity() <= frame_output_.capacity()) out.Swap(frame_output_);
  else out.Append(frame_output_.span());
  frame_output_.Clear();
  return Status::kDone;
}

}  // namespace wanopt::dre
