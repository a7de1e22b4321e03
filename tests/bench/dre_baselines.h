// dre_bench's baselines, what wanopt's figures are compared with: zstd -3 (libzstd)
// on the same bytes, and a two-hop socat chain for the random workload's throughput.
// Benchmarks only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tests/bench/dre_report.h"
#include "tests/bench/workloads.h"

namespace wanopt::bench {

struct ZstdResult {
  uint64_t in = 0, out = 0;
  double seconds = 0;
  double reduction() const { return in ? 100.0 * (1.0 - double(out) / double(in)) : 0; }
  double mbps() const { return seconds > 0 ? in / seconds / 1e6 : 0; }
};

// zstd -3 of `data` in one ZSTD_compress call, timed. Throws on a zstd error.
ZstdResult Zstd(std::span<const uint8_t> data);
// zstd -3 the way the codec's LZ runs (wanopt/dre/encoder.cc): one stream, a 1 MiB
// window (windowLog 20), flushed after every block of about 88 KiB. Attributes a gap
// between the codec and plain zstd -3 to these settings.
ZstdResult ZstdLikeCodec(std::span<const uint8_t> data);
// zstd -3 of each message alone, summed.
ZstdResult ZstdEach(const std::vector<Bytes>& messages);
Json ZstdJson(const ZstdResult& z);

// A loopback TCP port that was free a moment ago.
uint16_t FreePort();
// Whether 127.0.0.1:port accepts a connection now.
bool CanConnect(uint16_t port);
// Starts `socat TCP-LISTEN:listen,... TCP:127.0.0.1:to` with no descriptors of ours.
// The caller kills and reaps the returned process.
pid_t StartSocat(const std::string& socat, uint16_t listen, uint16_t to);

}  // namespace wanopt::bench
