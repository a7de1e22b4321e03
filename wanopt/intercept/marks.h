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

// Marks of the daemon's own transparent sockets, all within 0x2400-0x27ff: the rules
// deliver a packet locally only to a live socket so marked (the mark is read off
// the socket), never to one in TIME_WAIT, whose 4-tuple a client may be reusing
// for a connection this box only routes.
inline constexpr uint32_t kMarkProbe = 0x2400;        // our probe sockets: SYNs get the option
inline constexpr uint32_t kMarkListener = 0x2500;     // the listener (and what it accepts): SYN-ACKs get the answer
inline constexpr uint32_t kMarkTransparent = 0x2600;  // any other socket bound to a client's address
inline constexpr uint32_t kMarkOwnMask = 0xfc00;      // kMarkProbe & kMarkOwnMask == every mark above

}  // namespace wanopt::intercept

#endif  // WANOPT_INTERCEPT_MARKS_H_
