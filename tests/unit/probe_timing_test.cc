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

TEST_CASE("the branch sends its offer on two SYNs where the probe's wait has room, on one where the server "
          "is suspected, a box further along on one") {
  CHECK(FirstSynWithoutOption(2) == seconds(3));
  CHECK(FirstSynWithoutOption(1) == seconds(1));
  // The default connect timeout (10 s, so 11 s): 3 s + 2 x 0.5 s fits in 5.5 s.
  CHECK(SynsWithOption(true, false, milliseconds(500), seconds(11)) == 2);
  CHECK(SynsWithOption(true, true, milliseconds(500), seconds(11)) == 1);
  CHECK(SynsWithOption(false, false, milliseconds(500), seconds(11)) == 1);
  CHECK(SynsWithOption(false, true, milliseconds(500), seconds(11)) == 1);
  // A long path (1.5 s asymmetry wait: 375 ms round trips), or a short connect
  // timeout: no room to wait for the second retransmission.
  CHECK(SynsWithOption(true, false, milliseconds(1250), seconds(11)) == 2);
  CHECK(SynsWithOption(true, false, milliseconds(1500), seconds(11)) == 1);
  CHECK(SynsWithOption(true, false, milliseconds(500), seconds(4)) == 1);
}

TEST_CASE("probe wait: the connect timeout from the box's address, the asymmetry wait further along, "
          "twice that past the first SYN without the option at the branch, at most half the connect timeout") {
  CHECK(ProbeWait(false, true, milliseconds(500), seconds(11), 2) == seconds(11));
  CHECK(ProbeWait(false, false, milliseconds(500), seconds(11), 1) == seconds(11));
  CHECK(ProbeWait(true, false, milliseconds(160), seconds(11), 1) == milliseconds(160));
  // A branch's first probe before any round trip is known: 4 s, past the second
  // retransmission at 3 s, the first without the option (an option-dropping
  // server answers only that one).
  CHECK(ProbeWait(true, true, milliseconds(500), seconds(11), 2) == seconds(4));
  CHECK(ProbeWait(true, true, milliseconds(100), seconds(11), 2) == milliseconds(3200));
  // A suspected server: past the first retransmission, which goes without.
  CHECK(ProbeWait(true, true, milliseconds(500), seconds(11), 1) == seconds(2));
  CHECK(ProbeWait(true, true, milliseconds(100), seconds(11), 1) == milliseconds(1200));
  CHECK(ProbeWait(true, true, milliseconds(500), seconds(3), 2) == milliseconds(1500));
}
