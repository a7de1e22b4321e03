// binding_store: what makes the mapi module's port remapping outlive its daemon.
//
// The branch tells clients server:7830 instead of the server's dynamic port and
// remembers (server, 7830) -> real port (MapiBox). Two things keep a client that
// was told 7830 working when that memory is gone:
//   - the state file: the live bindings, with their expiry as wall-clock time,
//     written atomically (temp file + rename) and reloaded at the next start;
//   - kernel DNAT rules, one per live binding, in a nat chain that deploy/intercept
//     creates in both families (WANOPT_MAPI, jumped to from PREROUTING; an IPv6
//     server's rules go to ip6tables, its destination written [SERVER]:REAL):
//       -d SERVER -p tcp --dport 7830 -m mark ! --mark 0x1
//       -m time --datestop EXPIRY -j DNAT --to-destination SERVER:REAL
//     An intercepted SYN leaves mangle PREROUTING with mark 0x1 (TPROXY) before nat
//     PREROUTING sees it, so the rule never touches a connection the daemon takes
//     (the daemon redirects those itself); a SYN the queue let through (daemon
//     stopped: --queue-bypass) or the daemon passed (mark 0x2200) is translated to
//     the real port by the kernel. --datestop makes a rule inert at its binding's
//     expiry even if no daemon ever runs again.
// The functions are plain; MapiBox::Load and MapiBox::Persist (in binding_store.cc)
// decide when to call them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace wanopt::protocols::epm {

// The longest interface name a binding may carry.
constexpr size_t kMaxInterfaceChars = 64;

struct SavedBinding {
  boost::asio::ip::address server;  // IPv4 or IPv6
  uint16_t proxy_port = 0;
  uint16_t real_port = 0;
  std::string interface;    // "EMSMDB", "NSPI", a UUID: [A-Za-z0-9-], at most kMaxInterfaceChars
  int64_t expires_unix = 0;  // seconds since the epoch (UTC)
  bool operator==(const SavedBinding&) const = default;
};

// At most this many bindings are written, and read back.
constexpr size_t kMaxSavedBindings = 4096;

// The longest binding line FormatBindings writes, from the fields' limits:
// "SERVER 65535 65535 INTERFACE -9223372036854775808\n", SERVER at most 39 characters:
// an IPv6 address as written (eight groups of four hex digits; an IPv4 address in an
// IPv6 one is written only for ::ffff:0:0/96 and ::/96, shorter).
constexpr size_t kMaxBindingLineBytes = 39 + 1 + 5 + 1 + 5 + 1 + kMaxInterfaceChars + 1 + 20 + 1;
// The largest file LoadBindings reads (a larger one is refused): the version line,
// kMaxSavedBindings of the longest lines and "end N" (N at most 20 digits). Any file
// SaveBindings writes fits.
constexpr size_t kMaxBindingsFileBytes = 64 + kMaxSavedBindings * kMaxBindingLineBytes + 4 + 20 + 1;

// The file's text: a version line, then one binding a line.
std::string FormatBindings(const std::vector<SavedBinding>& bindings);
// nullopt and *error (one line) when the text is not a whole, well-formed file
// (truncated, corrupt, another version, too many lines).
std::optional<std::vector<SavedBinding>> ParseBindings(std::string_view text, std::string* error);

// Writes `path` atomically: `path`.tmp, fsync, rename. False and *error on failure.
bool SaveBindings(const std::string& path, const std::vector<SavedBinding>& bindings, std::string* error);
// The bindings in `path`: empty when there is no file; nullopt and *error when it
// cannot be read or does not parse (the caller ignores it).
std::optional<std::vector<SavedBinding>> LoadBindings(const std::string& path, std::string* error);

enum class Family { kIpv4, kIpv6 };

// iptables-restore input (ip6tables-restore for kIpv6) that replaces the contents
// of nat chain `chain` with one DNAT rule per binding of that family (the caller
// passes the live ones; the other family's are skipped).
std::string NatRules(Family family, const std::string& chain, const std::vector<SavedBinding>& bindings);
// Runs `iptables-nft-restore --noflush -w 5` (ip6tables-nft-restore for kIpv6) with
// `rules` on its input, waiting for it. False and *error (with its message) when it
// fails: no iptables, no such chain (deploy/intercept not installed, or installed
// --ipv4-only), no CAP_NET_ADMIN.
bool ApplyNatRules(Family family, const std::string& rules, std::string* error);

}  // namespace wanopt::protocols::epm
