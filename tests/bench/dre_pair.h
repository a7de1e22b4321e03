// dre_bench's pair harness: a datacenter and a branch wanopt::Daemon in this process
// in front of a lab::EchoOrigin, echo transfers through one of the branch's rules, and
// what one measured step did (Run), read from both daemons' counters and the branch's
// connection records. Benchmarks only.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/bench/dre_report.h"
#include "tests/bench/dre_util.h"
#include "tests/bench/workloads.h"
#include "wanopt/daemon/daemon.h"
#include "wanopt/lab/echo.h"

namespace wanopt::bench {

// The branch's rules: policy F and policy T (TCP only).
constexpr size_t kRuleF = 0, kRuleT = 1;

// A datacenter and a branch with two rules to one echo origin: rule 0 policy F,
// rule 1 policy T. Both daemons have a chunk store in a fresh directory. The
// constructor throws when a daemon does not start.
struct BenchPair {
  TempDir dir;
  lab::EchoOrigin origin;
  std::unique_ptr<Daemon> datacenter;
  std::unique_ptr<Daemon> branch;

  BenchPair();
  ~BenchPair();
};

// What one measured step (one or many transfers) did.
struct Run {
  std::string label;
  size_t transfers = 0, failed = 0;
  std::string first_error;
  uint64_t payload = 0;          // bytes sent by the client(s), transfer ids included
  uint64_t client_bytes = 0;     // sent + received by the client(s)
  uint64_t lan = 0, wan = 0;     // branch counters, both directions
  uint64_t up_lan = 0, up_wan = 0, down_lan = 0, down_wan = 0;  // per-connection records
  uint64_t chunks_hit = 0, chunks_missed = 0, nacks = 0;
  uint64_t connections = 0;      // branch records found for this step
  uint64_t resets = 0, protocol_errors = 0, pass_through = 0;  // both daemons
  std::map<std::string, uint64_t> applied;  // policy letters applied, per connection
  double seconds = 0;            // wall time of the transfers
  double cpu_seconds = 0;        // getrusage(RUSAGE_SELF): the whole process
  double child_cpu_seconds = 0;  // socat processes (socat runs only)
  bool settled = true;           // both daemons reached sessions_active == 0
  double settle_seconds = 0;

  bool ok() const { return failed == 0 && transfers > 0 && settled; }
  double reduction() const { return lan ? 100.0 * (1.0 - double(wan) / double(lan)) : 0; }
  double up_reduction() const { return up_lan ? 100.0 * (1.0 - double(up_wan) / double(up_lan)) : 0; }
  double down_reduction() const { return down_lan ? 100.0 * (1.0 - double(down_wan) / double(down_lan)) : 0; }
  uint64_t lan_or_client() const { return lan ? lan : client_bytes; }
  double mbps() const { return seconds > 0 ? lan_or_client() / seconds / 1e6 : 0; }
  double cpu_s_per_gb() const {
    uint64_t b = lan_or_client();
    return b ? (cpu_seconds + child_cpu_seconds) / (b / 1e9) : 0;
  }
};

Json RunJson(const Run& r);
// The "wanopt reduction" cell: client to server and round trip.
std::string RedCell(const Run& r);

// Echo transfers of `payloads` through `target` on `threads` client threads, added to
// `run` (transfers, failures, bytes). The payloads outlive the call.
void Transfer(Run& run, const boost::asio::ip::tcp::endpoint& target, const lab::EchoOrigin& origin,
              const std::vector<const Bytes*>& payloads, unsigned threads);
// Transfers through the pair's rule and reads both daemons' counters and the
// branch's connection records once every session is gone (at most 30 s later);
// prints one line.
Run MeasurePair(BenchPair& pair, size_t rule, const std::string& label, const std::vector<const Bytes*>& payloads,
                unsigned threads = 1);
Run MeasurePair(BenchPair& pair, size_t rule, const std::string& label, const Bytes& payload);
// Pointers to v[from, to).
std::vector<const Bytes*> Pointers(const std::vector<Bytes>& v, size_t from = 0, size_t to = SIZE_MAX);

}  // namespace wanopt::bench
