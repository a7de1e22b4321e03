// `wanopt lab`: the whole product on one machine, no root, no config.
//
// Starts an echo origin, a datacenter proxy and a branch proxy on 127.0.0.1
// ephemeral ports, sends each file through the pair twice and reports, per
// transfer, LAN bytes, WAN (inner-channel) bytes, reduction and whether both
// directions arrived intact.
#pragma once

#include <string>
#include <vector>

namespace wanopt::lab {

struct LabOptions {
  std::vector<std::string> files;  // empty: a generated sample
  bool json = false;
  bool keep_running = false;
};

// Runs the lab, prints the report on stdout. Returns the process exit code:
// 0 when every transfer verified, 1 otherwise, 2 for a file that can't be read.
int RunLab(const LabOptions& options);

}  // namespace wanopt::lab
