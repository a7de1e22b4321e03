// Private to wanopt/dre/: the instruction stream's encoding, shared by the encoder
// (encoder.cc) and the decoder (decoder.cc). Spec: wanopt/docs/inner-channel.md,
// "The DRE stream".
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "util/buffer.h"

namespace wanopt::dre::codec_format {

enum Op : uint8_t { kRaw = 0x01, kLiteral = 0x02, kRef = 0x03, kDelta = 0x04, kPrefix = 0x05 };

// A block of instructions closes once it holds this much less the largest chunk:
// with one more instruction (at most a maximum-size chunk) and zstd's worst case it
// still fits in one frame. Large blocks keep framing overhead on incompressible data
// under 0.1%.
constexpr size_t kBlockBudget = 120 * 1024;
// RAW instructions are cut to this size.
constexpr size_t kMaxRawOp = 32 * 1024;
// A frame's instructions never decompress to more than this.
constexpr size_t kMaxInstructions = 256 * 1024;
// A block closes once its instructions decode to this much: references are ~20
// bytes each, so without it a block of them would stand for tens of MiB, all of it
// held by the decoder (a frame is checked whole before any of it is delivered).
constexpr size_t kBlockDecodedBudget = 1024 * 1024;
// A frame decoding to more than this is refused (the sender's budget plus one
// instruction is far below it).
constexpr size_t kMaxFrameOutput = 8 * 1024 * 1024;

inline void PutVarint(Buffer& out, uint64_t v) {
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

inline bool GetVarint(std::span<const uint8_t> in, size_t* pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= in.size()) return false;
    uint8_t b = in[(*pos)++];
    *v |= uint64_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

}  // namespace wanopt::dre::codec_format
