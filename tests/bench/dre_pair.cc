// dre_bench's pair harness (see dre_pair.h).
#include "tests/bench/dre_pair.h"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "wanopt/channel/hello.h"

namespace wanopt::bench {
namespace {

using boost::asio::ip::tcp;

std::atomic<uint64_t> g_transfer_id{1};

uint64_t MaxConnectionId(const Daemon& d) {
  uint64_t m = 0;
  for (const auto& c : d.table().Connections()) m = std::max(m, c.id);
  return m;
}

}  // namespace

BenchPair::BenchPair() {
  std::string error;
  const tcp::endpoint loopback{boost::asio::ip::address_v4::loopback(), 0};
  Config dc;
  dc.name = "bench-datacenter";
  dc.device_id = *channel::ParseDeviceId("02:00:00:00:00:02");
  dc.threads = 2;
  dc.datacenter = DatacenterConfig{loopback, {}};
  dc.dre.datastore = dir.path + "/datacenter";
  datacenter = std::make_unique<Daemon>(dc);
  if (!datacenter->Start(&error)) throw std::runtime_error("datacenter: " + error);
  Config br;
  br.name = "bench-branch";
  br.device_id = *channel::ParseDeviceId("02:00:00:00:00:01");
  br.threads = 2;
  br.dre.datastore = dir.path + "/branch";
  for (Policy policy : {Policy::kFull, Policy::kTcpOnly}) {
    ForwardRule rule;
    rule.name = policy == Policy::kFull ? "bench-F" : "bench-T";
    rule.listen = loopback;
    rule.destination = origin.endpoint();
    rule.peer = datacenter->datacenter_endpoint();
    rule.peer_down = PeerDownAction::kReset;  // a benchmark must never measure pass-through
    rule.policy = policy;
    br.forwards.push_back(rule);
  }
  branch = std::make_unique<Daemon>(br);
  if (!branch->Start(&error)) throw std::runtime_error("branch: " + error);
}

BenchPair::~BenchPair() {
  branch.reset();
  datacenter.reset();
}

Json RunJson(const Run& r) {
  Json j;
  j.Str("label", r.label).Int("transfers", r.transfers).Int("failed", r.failed);
  if (!r.first_error.empty()) j.Str("first_error", r.first_error);
  j.Int("payload_bytes", r.payload).Int("client_bytes", r.client_bytes);
  j.Int("lan_bytes", r.lan).Int("wan_bytes", r.wan).Dbl("reduction_percent", r.reduction(), 3);
  Json up, down;
  up.Int("lan_in", r.up_lan).Int("wan_out", r.up_wan).Dbl("reduction_percent", r.up_reduction(), 3);
  down.Int("lan_out", r.down_lan).Int("wan_in", r.down_wan).Dbl("reduction_percent", r.down_reduction(), 3);
  j.Obj("client_to_server", up).Obj("server_to_client", down);
  j.Int("chunks_hit", r.chunks_hit).Int("chunks_missed", r.chunks_missed).Int("nacks", r.nacks);
  j.Int("connections", r.connections);
  std::vector<std::string> applied;
  for (const auto& [k, v] : r.applied) applied.push_back(Quote(k) + ": " + std::to_string(v));
  j.Raw("applied_policies", "{" + [&] {
    std::string s;
    for (size_t i = 0; i < applied.size(); ++i) s += (i ? ", " : "") + applied[i];
    return s;
  }() + "}");
  j.Int("resets", r.resets).Int("protocol_errors", r.protocol_errors).Int("pass_through", r.pass_through);
  j.Dbl("seconds", r.seconds, 4).Dbl("throughput_mbps", r.mbps(), 1);
  j.Dbl("cpu_seconds_process", r.cpu_seconds, 3);
  if (r.child_cpu_seconds > 0) j.Dbl("cpu_seconds_socat", r.child_cpu_seconds, 3);
  j.Dbl("cpu_seconds_per_gb", r.cpu_s_per_gb(), 3);
  j.Bool("settled", r.settled).Dbl("settle_seconds", r.settle_seconds, 3);
  return j;
}

std::string RedCell(const Run& r) {
  return "c→s " + Pct(r.up_reduction()) + "; round trip " + Pct(r.reduction());
}

void Transfer(Run& run, const tcp::endpoint& target, const lab::EchoOrigin& origin,
              const std::vector<const Bytes*>& payloads, unsigned threads) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  auto worker = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= payloads.size()) return;
      uint64_t id = g_transfer_id.fetch_add(1);
      auto r = lab::EchoTransfer(target, id, *payloads[i], origin, 60000);
      std::lock_guard lock(mu);
      ++run.transfers;
      run.payload += payloads[i]->size() + 8;
      run.client_bytes += r.bytes_sent + r.bytes_received;
      if (!r.verified) {
        ++run.failed;
        if (run.first_error.empty()) run.first_error = r.error;
      }
    }
  };
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
}

Run MeasurePair(BenchPair& pair, size_t rule, const std::string& label, const std::vector<const Bytes*>& payloads,
                unsigned threads) {
  Run run;
  run.label = label;
  const Counters& b = pair.branch->counters();
  const Counters& d = pair.datacenter->counters();
  uint64_t lan0 = b.lan_in + b.lan_out, wan0 = b.wan_in + b.wan_out;
  uint64_t resets0 = b.resets + d.resets, errors0 = b.protocol_errors + d.protocol_errors,
           pass0 = b.pass_through + d.pass_through;
  uint64_t since_id = MaxConnectionId(*pair.branch);
  double cpu0 = CpuSeconds(RUSAGE_SELF);
  auto t0 = Clock::now();
  Transfer(run, pair.branch->forward_endpoint(rule), pair.origin, payloads, threads);
  run.seconds = Seconds(t0);
  // The branch's counters are final once its sessions closed: a bounded wait.
  auto s0 = Clock::now();
  while (b.sessions_active || d.sessions_active) {
    if (Seconds(s0) > 30) {
      run.settled = false;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  run.settle_seconds = Seconds(s0);
  run.cpu_seconds = CpuSeconds(RUSAGE_SELF) - cpu0;
  run.lan = b.lan_in + b.lan_out - lan0;
  run.wan = b.wan_in + b.wan_out - wan0;
  run.resets = b.resets + d.resets - resets0;
  run.protocol_errors = b.protocol_errors + d.protocol_errors - errors0;
  run.pass_through = b.pass_through + d.pass_through - pass0;
  for (const auto& c : pair.branch->table().Connections()) {
    if (c.id <= since_id) continue;
    ++run.connections;
    run.up_lan += c.lan_in;
    run.up_wan += c.wan_out;
    run.down_lan += c.lan_out;
    run.down_wan += c.wan_in;
    run.chunks_hit += c.chunks_hit;
    run.chunks_missed += c.chunks_missed;
    run.nacks += c.nacks;
    std::string applied = c.policy.applied ? std::string(1, PolicyLetter(*c.policy.applied)) : "none";
    ++run.applied[applied];
  }
  std::printf("  %-46s %s transfers%s, LAN %s B, WAN %s B (c->s %s, round trip %s), %.2f s, %.0f MB/s\n",
              label.c_str(), Count(run.transfers).c_str(),
              run.failed ? (" (" + std::to_string(run.failed) + " FAILED: " + run.first_error + ")").c_str() : "",
              Count(run.lan).c_str(), Count(run.wan).c_str(), Pct(run.up_reduction()).c_str(),
              Pct(run.reduction()).c_str(), run.seconds, run.mbps());
  std::fflush(stdout);
  return run;
}

Run MeasurePair(BenchPair& pair, size_t rule, const std::string& label, const Bytes& payload) {
  return MeasurePair(pair, rule, label, std::vector<const Bytes*>{&payload});
}

std::vector<const Bytes*> Pointers(const std::vector<Bytes>& v, size_t from, size_t to) {
  std::vector<const Bytes*> out;
  for (size_t i = from; i < std::min(to, v.size()); ++i) out.push_back(&v[i]);
  return out;
}

}  // namespace wanopt::bench
