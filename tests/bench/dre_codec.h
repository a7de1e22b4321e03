// dre_bench's socket-free view of the codec (wanopt/dre/codec.h) with real chunk
// stores: the wire bytes of the codec alone, for comparison with a pair's figures.
// The codec microbenchmarks (encode/decode speeds, DreBench::RunMicro) live in
// dre_codec.cc beside it. Benchmarks only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tests/bench/dre_report.h"
#include "tests/bench/workloads.h"

namespace wanopt::bench {

// Wire bytes (payloads + 16-byte frame headers) of the codec alone, no sockets: each
// payload encoded in turn on one fresh box, in 128 KiB reads, flushed only at its end.
// The encoder learns what it sends, so later payloads name earlier chunks. Separates
// what the codec does from what the session (pauses, the first round trip) adds.
struct AloneStats {
  uint64_t chunks_hit = 0, chunks_missed = 0, chunks_delta = 0;
};
// Per payload, when given: the encoder's chunk counts. Throws when a store cannot open.
std::vector<uint64_t> CodecAloneWire(const std::vector<const Bytes*>& payloads, std::vector<AloneStats>* stats = nullptr);

// The "codec alone" part of a reduction cell, and its JSON.
std::string AloneCell(uint64_t wire, uint64_t bytes);
Json AloneJson(uint64_t wire, uint64_t bytes, const AloneStats& st);

}  // namespace wanopt::bench
