// bytecount module: process-wide totals, for tests and the module's own log lines.
#pragma once

#include <atomic>
#include <cstdint>

namespace wanopt::protocols::bytecount {

struct Totals {
  uint64_t bytes = 0;          // bytes seen by every instance on this process, both directions
  uint64_t agreements = 0;     // directions whose byte count matched the twin's
  uint64_t disagreements = 0;  // directions whose count did not match, or bad messages
};

namespace internal {
// Counted by bytecount.cc. Inline (defined here, not there) so that a copy of the
// folder, whose .cc still includes this header, links next to the original before
// its namespace is renamed: both then count into these.
inline std::atomic<uint64_t> g_bytes{0};
inline std::atomic<uint64_t> g_agreements{0};
inline std::atomic<uint64_t> g_disagreements{0};
}  // namespace internal

inline Totals ReadTotals() {
  return {internal::g_bytes.load(), internal::g_agreements.load(), internal::g_disagreements.load()};
}

}  // namespace wanopt::protocols::bytecount
