// Traffic and event counters of one daemon, updated by every session.
//
// LAN bytes are those exchanged with clients and servers, WAN bytes those on inner
// channels (framing included); reduction = 1 - WAN / LAN. Relaxed atomics: they are
// read for reports, never for synchronisation.
#pragma once

#include <atomic>
#include <cstdint>

namespace wanopt {

struct Counters {
  std::atomic<uint64_t> lan_in{0};   // read from clients/servers
  std::atomic<uint64_t> lan_out{0};  // written to clients/servers
  std::atomic<uint64_t> wan_in{0};   // read from inner channels
  std::atomic<uint64_t> wan_out{0};  // written to inner channels
  std::atomic<uint64_t> sessions_opened{0};
  std::atomic<uint64_t> sessions_active{0};
  std::atomic<uint64_t> pass_through{0};     // relayed unoptimized (no peer reachable)
  std::atomic<uint64_t> resets{0};           // sessions that ended in a reset
  std::atomic<uint64_t> protocol_errors{0};  // malformed inner-channel input
  std::atomic<uint64_t> codec_bytes_released{0};  // codec memory idle connections gave back
  std::atomic<uint64_t> refused_peers{0};    // plaintext inner channels from outside plaintext_peers
  // TLS inner channels up: full handshakes (certificates checked, or the PSK) and
  // sessions resumed from a ticket.
  std::atomic<uint64_t> tls_full{0};
  std::atomic<uint64_t> tls_resumed{0};
  // Auto-discovery (the interceptor): probes started, and their SYNs sent again
  // unanswered, with option 0x21 (a SYN lost on the WAN, or a server that drops
  // options) and without it (the try for a server that may drop options).
  std::atomic<uint64_t> discovery_probes{0};
  std::atomic<uint64_t> probe_syns_resent_with_option{0};
  std::atomic<uint64_t> probe_syns_resent_without_option{0};
};

}  // namespace wanopt
