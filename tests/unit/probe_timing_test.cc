// Auto-discovery's timing rules (wanopt/intercept/probe_timing.h).
#include <doctest/doctest.h>

#include "wanopt/intercept/probe_timing.h"

using namespace wanopt::intercept;
using std::chrono::milliseconds;
using std::chrono::seconds;

TEST_CASE("asymmetry wait: four measured round trips, 0.1 s at least, 0.5 s before any is known, capped") {
  CHECK(AsymmetryWait(std::nullopt, seconds(5)) == milliseconds(500));
  CHECK(AsymmetryWait(milliseconds(40), seconds(5)) == milliseconds(160));
  CHECK(AsymmetryWait(milliseconds(1), seconds(5)) == milliseconds(100));
  CHECK(AsymmetryWait(seconds(3), seconds(5)) == seconds(5));
  CHECK(AsymmetryWait(std::nullopt, milliseconds(200)) == milliseconds(200));
}

TEST_CASE("probe wait: the connect timeout from the box's address, the asymmetry wait further along, "
          "twice that plus the first SYN retransmission at the branch, at most half the connect timeout") {
  CHECK(ProbeWait(false, true, milliseconds(500), seconds(11)) == seconds(11));
  CHECK(ProbeWait(false, false, milliseconds(500), seconds(11)) == seconds(11));
  CHECK(ProbeWait(true, false, milliseconds(160), seconds(11)) == milliseconds(160));
  // A branch's first probe before any round trip is known: 2 s, past the SYN's
  // retransmission at 1 s (an option-dropping server answers only that one).
  CHECK(ProbeWait(true, true, milliseconds(500), seconds(11)) == seconds(2));
  CHECK(ProbeWait(true, true, milliseconds(100), seconds(11)) == milliseconds(1200));
  CHECK(ProbeWait(true, true, milliseconds(500), seconds(3)) == milliseconds(1500));
}
