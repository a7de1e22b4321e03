// bytecount module: process-wide totals, for tests and the module's own log lines.
#pragma once

#include <cstdint>

namespace wanopt::protocols::bytecount {

struct Totals {
  uint64_t bytes = 0;          // bytes seen by every instance on this process, both directions
  uint64_t agreements = 0;     // directions whose byte count matched the twin's
  uint64_t disagreements = 0;  // directions whose count did not match, or bad messages
};
Totals ReadTotals();

}  // namespace wanopt::protocols::bytecount
