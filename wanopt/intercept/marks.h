// Packet and socket marks: the contract between the daemon and the rules of
// deploy/intercept. Nothing else.
#ifndef WANOPT_INTERCEPT_MARKS_H_
#define WANOPT_INTERCEPT_MARKS_H_

#include <cstdint>

namespace wanopt::intercept {

// Verdicts on a held SYN (packet marks).
inline constexpr uint32_t kMarkLocal = 0x1;         // policy routing delivers it locally
inline constexpr uint32_t kMarkIntercept = 0x2100;  // held SYN -> TPROXY to our listener
inline constexpr uint32_t kMarkBypass = 0x2200;     // held SYN -> routed on, untouched
inline constexpr uint32_t kMarkDeny = 0x2300;       // held SYN -> answered with a reset

// Marks of the daemon's own transparent sockets, all within 0x2400-0x27ff: by them
// (read off the socket) the rules know a live socket of the daemon's. A socket in
// TIME_WAIT, or still in its handshake, has no mark to read: the rules deliver to it
// only while conntrack says its connection was intercepted here, not once a client
// reused the 4-tuple for a connection this box only routes.
inline constexpr uint32_t kMarkProbe = 0x2400;        // our probe sockets: SYNs get the option
inline constexpr uint32_t kMarkListener = 0x2500;     // the listener (and what it accepts): SYN-ACKs get the answer
inline constexpr uint32_t kMarkTransparent = 0x2600;  // any other socket bound to a client's address
inline constexpr uint32_t kMarkOwnMask = 0xfc00;      // deploy/intercept: --mark 0x2400/0xfc00
static_assert((kMarkListener & kMarkOwnMask) == kMarkProbe && (kMarkTransparent & kMarkOwnMask) == kMarkProbe &&
              (kMarkIntercept & kMarkOwnMask) != kMarkProbe, "the rules take 0x2400/0xfc00 for the daemon's sockets");

}  // namespace wanopt::intercept

#endif  // WANOPT_INTERCEPT_MARKS_H_
