// dre_bench's workload data, all deterministic: a text corpus made of the text files
// found on this machine, and the MIME and small e-mail messages built from it.
// (Random bytes and the edited copy come from tests/bench/workloads.h.) Benchmarks only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tests/bench/workloads.h"

namespace wanopt::bench {

struct Corpus {
  Bytes bytes;  // distinct text files, concatenated in path order
  size_t files = 0, skipped_binary = 0, skipped_duplicate = 0, skipped_other = 0;
  std::vector<std::string> roots;
};

// The distinct plain-text files under /usr/share/doc, /usr/share/common-licenses and
// /usr/lib/python3* (there only *.py, *.txt and license/copyright files), in path order.
Corpus LoadCorpus();
// `size` bytes of text: the corpus from `offset`, repeated from its start when it is
// shorter. REQUIRES: the corpus is not empty.
Bytes TextOf(const Corpus& corpus, size_t size, size_t offset = 0);
// `count` messages with the same base64 attachment, each with its own headers and a
// body of a few KiB of text taken from the corpus at `body_offset` on.
std::vector<Bytes> MimeMessages(const Corpus& corpus, std::span<const uint8_t> attachment, size_t count,
                                size_t body_offset);
// `count` messages of 1..20 KiB: headers, then consecutive slices of the corpus from
// `offset` on.
std::vector<Bytes> SmallMessages(const Corpus& corpus, size_t count, uint64_t seed, size_t offset);
// The parts, one after another.
Bytes Concat(const std::vector<Bytes>& parts);

}  // namespace wanopt::bench
