// The zstd parameters of a DRE/LZ stream at a given level.
//
// The window: 1 MiB (kLzWindowLog) is what every wanopt decoder takes, and what a
// connection compresses with at the configured level. A decoder that says so in its
// hello or hello-ack (wanopt/docs/inner-channel.md) takes up to 8 MiB
// (kLzWideWindowLog); a sender uses that window at the levels it raised a connection
// to because the WAN is the bottleneck (lz_governor.h): text repeats phrases further
// apart than 1 MiB, and zstd -9's ratio needs its 8 MiB window. Long-range repeats
// beyond that are DRE's job, not zstd's.
//
// Each level's hash and search tables are sized for its window (zstd's own defaults
// for an input of the window's size), which keeps a level-19 context at a fraction of
// what zstd's defaults for level 19 would hold, for the same ratio.
#pragma once

#include <cstdint>

struct ZSTD_CCtx_s;  // zstd.h's ZSTD_CCtx: callers that hold one include zstd.h

namespace wanopt::dre {

inline constexpr int kLzWindowLog = 20;
inline constexpr int kLzWideWindowLog = 23;

// Sets `cctx`'s compression parameters. REQUIRES: `cctx` is at the start of a stream
// (new, or reset); 1 <= level <= 19; kLzWindowLog <= window_log <= kLzWideWindowLog.
void ApplyLzLevel(ZSTD_CCtx_s* cctx, int level, int window_log);
// What a streaming context with those parameters holds.
uint64_t LzContextBytes(int level, int window_log);

}  // namespace wanopt::dre
