#include "wanopt/lab/lab.h"

#include <csignal>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

#include "wanopt/daemon/daemon.h"
#include "wanopt/lab/echo.h"
#include "wanopt/status/status_server.h"
#include "util/endpoint.h"
#include "util/json.h"
#include "util/log.h"
#include "util/signals.h"

namespace wanopt::lab {
namespace {

using boost::asio::ip::tcp;

struct Transfer {
  std::string file;
  int pass = 0;
  uint64_t lan_bytes = 0;
  uint64_t wan_bytes = 0;
  double seconds = 0;
  bool verified = false;
  std::string error;
  double reduction() const { return lan_bytes ? 100.0 * (1.0 - double(wan_bytes) / double(lan_bytes)) : 0.0; }
};

Config LabConfig(const std::string& name, const std::string& device_id) {
  Config config;
  config.name = name;
  config.device_id = *channel::ParseDeviceId(device_id);
  config.threads = 1;
  return config;
}

uint64_t WanBytes(const Daemon& branch) { return branch.counters().wan_in + branch.counters().wan_out; }

// Sessions update counters until their last frame is written; wait for both boxes
// to have closed every session (bounded) so each transfer's figures are its own.
void WaitIdle(const Daemon& a, const Daemon& b) {
  for (int i = 0; i < 2000 && (a.counters().sessions_active || b.counters().sessions_active); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void PrintTable(const std::vector<Transfer>& transfers) {
  std::printf("%-28s %4s %14s %14s %10s %9s %9s\n", "file", "pass", "LAN bytes", "WAN bytes", "reduction",
              "seconds", "verified");
  for (const auto& t : transfers) {
    std::printf("%-28s %4d %14llu %14llu %9.2f%% %9.3f %9s\n", t.file.c_str(), t.pass,
                static_cast<unsigned long long>(t.lan_bytes), static_cast<unsigned long long>(t.wan_bytes),
                t.reduction(), t.seconds, t.verified ? "yes" : "NO");
    if (!t.verified) std::printf("    error: %s\n", t.error.c_str());
  }
}

void PrintJson(const std::vector<Transfer>& transfers, const std::string& status_url, const tcp::endpoint& entry,
               const tcp::endpoint& datacenter) {
  json::Writer w;
  w.BeginObject();
  w.Key("transfers");
  w.BeginArray();
  for (const auto& t : transfers) {
    w.BeginObject();
    w.Field("file", t.file);
    w.Field("pass", t.pass);
    w.Field("lan_bytes", t.lan_bytes);
    w.Field("wan_bytes", t.wan_bytes);
    w.Field("reduction", t.reduction());
    w.Field("seconds", t.seconds);
    w.Field("verified", t.verified);
    if (!t.verified) w.Field("error", t.error);
    w.EndObject();
  }
  w.EndArray();
  w.Field("status_url", status_url);
  w.Field("branch", FormatEndpoint(entry));
  w.Field("datacenter", FormatEndpoint(datacenter));
  w.EndObject();
  std::printf("%s\n", w.str().c_str());
}

}  // namespace

// A temporary directory for the lab's chunk stores, removed with it.
struct TempDir {
  std::string path;
  TempDir() {
    char name[] = "/tmp/wanopt-lab-XXXXXX";
    if (mkdtemp(name)) path = name;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

int RunLab(const LabOptions& options) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> inputs;
  if (options.files.empty()) {
    inputs.emplace_back("sample.txt (generated)", SampleText(8 << 20, 1));
  }
  for (const auto& path : options.files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "wanopt lab: cannot read %s\n", path.c_str());
      return 2;
    }
    inputs.emplace_back(path, std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {}));
  }

  EchoOrigin origin;
  TempDir stores;
  Config dc_config = LabConfig("lab-datacenter", "02:00:00:00:00:02");
  dc_config.dre.datastore = stores.path + "/datacenter";
  dc_config.dre.max_bytes = uint64_t{1} << 30;
  dc_config.datacenter = DatacenterConfig{{boost::asio::ip::address_v4::loopback(), 0}, {}};
  Daemon datacenter(std::move(dc_config));
  std::string error;
  if (!datacenter.Start(&error)) {
    std::fprintf(stderr, "wanopt lab: %s\n", error.c_str());
    return 1;
  }
  Config branch_config = LabConfig("lab-branch", "02:00:00:00:00:01");
  branch_config.dre.datastore = stores.path + "/branch";
  branch_config.dre.max_bytes = uint64_t{1} << 30;
  ForwardRule rule;
  rule.name = "lab";
  rule.listen = {boost::asio::ip::address_v4::loopback(), 0};
  rule.destination = origin.endpoint();
  rule.peer = datacenter.datacenter_endpoint();
  rule.peer_down = PeerDownAction::kReset;  // the lab measures the pair, never a bypass
  branch_config.forwards.push_back(rule);
  Daemon branch(std::move(branch_config));
  if (!branch.Start(&error)) {
    std::fprintf(stderr, "wanopt lab: %s\n", error.c_str());
    return 1;
  }
  tcp::endpoint entry = branch.forward_endpoint(0);
  // One status page for both boxes: the lab's connections seen from either end.
  StatusServer status({&branch, &datacenter}, {boost::asio::ip::address_v4::loopback(), 0}, "");
  if (!status.Start(&error)) {
    std::fprintf(stderr, "wanopt lab: %s\n", error.c_str());
    return 1;
  }

  std::vector<Transfer> transfers;
  uint64_t next_id = 1;
  for (const auto& [name, data] : inputs) {
    for (int pass = 1; pass <= 2; ++pass) {
      uint64_t wan_before = WanBytes(branch);
      TransferResult r = EchoTransfer(entry, next_id++, data, origin);
      WaitIdle(branch, datacenter);
      Transfer t;
      t.file = name;
      t.pass = pass;
      t.lan_bytes = r.bytes_sent + r.bytes_received;
      t.wan_bytes = WanBytes(branch) - wan_before;
      t.seconds = r.seconds;
      t.verified = r.verified;
      t.error = r.error;
      transfers.push_back(t);
    }
  }
  if (options.json) PrintJson(transfers, status.url(), entry, datacenter.datacenter_endpoint());
  else {
    PrintTable(transfers);
    std::printf("status page: %s\n", status.url().c_str());
  }
  std::fflush(stdout);

  if (options.keep_running) {
    std::fprintf(stderr,
                 "wanopt lab: running until Ctrl-C.\n"
                 "  status page: %s\n"
                 "  client entry (branch proxy): %s:%u   -> echo origin %s:%u\n"
                 "  datacenter proxy (inner channels): %s:%u\n"
                 "  try: echo 'hello through the pair' | socat - TCP:%s:%u\n",
                 status.url().c_str(), entry.address().to_string().c_str(), entry.port(),
                 origin.endpoint().address().to_string().c_str(),
                 origin.endpoint().port(), datacenter.datacenter_endpoint().address().to_string().c_str(),
                 datacenter.datacenter_endpoint().port(), entry.address().to_string().c_str(), entry.port());
    WaitForStopSignal();
  }
  bool all_verified = true;
  for (const auto& t : transfers) all_verified &= t.verified;
  return all_verified ? 0 : 1;
}

}  // namespace wanopt::lab
