// wanopt: the command line. `wanopt run` is the daemon, `wanopt lab` the
// self-contained loopback lab.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/registry.h"
#include "wanopt/cli/show.h"
#include "wanopt/channel/secure_channel.h"
#include "wanopt/config/config.h"
#include "wanopt/daemon/daemon.h"
#include "wanopt/lab/lab.h"
#include "util/log.h"
#include "util/signals.h"

#ifndef WANOPT_VERSION
#define WANOPT_VERSION "0.0.0"
#endif

namespace {

constexpr int kExitUsage = 2;

const char kMainHelp[] =
    "usage: wanopt <command> [options]\n"
    "\n"
    "A WAN optimization proxy: one box at the branch, one at the datacenter.\n"
    "\n"
    "commands:\n"
    "  run --config FILE     run the daemon (branch, datacenter or both, as FILE says)\n"
    "  lab [options]         run origin, datacenter proxy, branch proxy and client on\n"
    "                        127.0.0.1 and report what crossed the pair\n"
    "  show WHAT [options]   connections, peers, summary, datastore, wccp or modules\n"
    "                        of a running daemon, from its status API\n"
    "\n"
    "  wanopt --version      print the version\n"
    "  wanopt <command> --help\n";

const char kRunHelp[] =
    "usage: wanopt run --config FILE [--check]\n"
    "\n"
    "Runs the daemon until SIGINT or SIGTERM (SIGHUP re-reads log_level from FILE;\n"
    "other changes take a restart). FILE is TOML; see deploy/examples/ and\n"
    "README.md for every key. A bad config prints one line naming the key and exits 2\n"
    "without starting anything.\n"
    "\n"
    "  --check    only validate FILE: exit 0 and print a summary, or exit 2\n";

const char kLabHelp[] =
    "usage: wanopt lab [--json] [--file PATH ...] [--keep-running]\n"
    "\n"
    "Starts an echo origin, a datacenter proxy and a branch proxy on 127.0.0.1\n"
    "ephemeral ports, sends each file through the pair twice and verifies the bytes\n"
    "both ways (SHA-256). Needs no root and no config.\n"
    "\n"
    "  --file PATH       send PATH (repeatable); default: an 8 MiB generated text\n"
    "  --json            print {\"transfers\":[...],\"status_url\":...} instead of a table\n"
    "  --keep-running    keep the lab up afterwards until Ctrl-C\n"
    "\n"
    "Exit status: 0 when every transfer verified, 1 otherwise.\n";

int Usage(const char* message, const char* help) {
  std::fprintf(stderr, "wanopt: %s\n\n%s", message, help);
  return kExitUsage;
}

bool IsHelp(std::string_view arg) { return arg == "--help" || arg == "-h"; }

// Each relayed connection takes two descriptors; the default soft limit (1024)
// would cap a box at a few hundred connections.
void RaiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

const char* LevelName(wanopt::log::Level level) {
  switch (level) {
    case wanopt::log::Level::kDebug: return "debug";
    case wanopt::log::Level::kInfo: return "info";
    case wanopt::log::Level::kWarn: return "warn";
    case wanopt::log::Level::kError: return "error";
  }
  return "?";
}

// SIGHUP: the log level is read again from the config file; everything else a
// running box keeps until it is restarted (listeners, peers, the datastore).
void ReloadOnHangup(const std::string& config_path) {
  std::string error;
  auto config = wanopt::LoadConfigFile(config_path, &error);
  if (!config) {
    WANOPT_LOG(kWarn, "daemon") << "SIGHUP: " << error << ": keeping the running configuration";
    return;
  }
  wanopt::log::SetLevel(config->log_level);
  // Written whatever the new level: the operator asked for this.
  wanopt::log::Write(wanopt::log::Level::kWarn, "daemon",
                     std::string("SIGHUP: log level ") + LevelName(config->log_level) + " (from " + config_path +
                         "); other changes take a restart");
}

int Run(const std::vector<std::string_view>& args) {
  std::string config_path;
  bool check_only = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (IsHelp(args[i])) {
      std::fputs(kRunHelp, stdout);
      return 0;
    }
    if (args[i] == "--config" && i + 1 < args.size()) {
      config_path = args[++i];
    } else if (args[i] == "--check") {
      check_only = true;
    } else {
      return Usage(("run: unexpected argument '" + std::string(args[i]) + "'").c_str(), kRunHelp);
    }
  }
  if (config_path.empty()) return Usage("run: --config FILE is required", kRunHelp);
  std::string error;
  auto config = wanopt::LoadConfigFile(config_path, &error);
  if (!config) {
    std::fprintf(stderr, "wanopt: config error: %s\n", error.c_str());
    return kExitUsage;
  }
  // Valid, but probably not what was meant: said by --check and at every start.
  for (const auto& warning : config->warnings) std::fprintf(stderr, "wanopt: config warning: %s\n", warning.c_str());
  if (check_only) {
    // The certificates too: a box that would fail at start fails the check.
    if (config->peering.mode != wanopt::channel::PeeringSecurity::Mode::kNone &&
        !wanopt::channel::SecureContext::Create(config->peering, &error)) {
      std::fprintf(stderr, "wanopt: config error: %s: peering: %s\n", config_path.c_str(), error.c_str());
      return kExitUsage;
    }
    std::string intercept =
        config->intercept ? "interception (" + std::to_string(config->intercept->rules.size()) + " in-path rule(s)), "
                          : "";
    const char* peering = config->peering.mode == wanopt::channel::PeeringSecurity::Mode::kCertificate ? "TLS with certificates, "
                          : config->peering.mode == wanopt::channel::PeeringSecurity::Mode::kPsk       ? "TLS with a pre-shared key, "
                                                                                                       : "";
    std::printf("%s: ok: %s%s%s%s%zu forward rule(s), device id %s\n", config_path.c_str(),
                config->datacenter ? "datacenter, " : "", config->forwards.empty() ? "" : "branch, ",
                intercept.c_str(), peering, config->forwards.size(),
                wanopt::channel::FormatDeviceId(config->device_id).c_str());
    return 0;
  }
  wanopt::log::SetLevel(config->log_level);
  wanopt::BlockStopSignals();
  // SIGHUP too (before any thread starts): its default action would end the daemon
  // with no word, which systemd counts as a clean exit.
  sigset_t signals = wanopt::StopSignals();
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  RaiseDescriptorLimit();
  wanopt::Daemon daemon(std::move(*config));
  if (!daemon.Start(&error)) {
    std::fprintf(stderr, "wanopt: %s\n", error.c_str());
    return 1;
  }
  int received = 0;
  while (sigwait(&signals, &received) == 0 && received == SIGHUP) ReloadOnHangup(config_path);
  WANOPT_LOG(kInfo, "daemon") << "stopping on " << strsignal(received);
  daemon.Stop();
  return 0;
}

int Lab(const std::vector<std::string_view>& args) {
  wanopt::lab::LabOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    if (IsHelp(args[i])) {
      std::fputs(kLabHelp, stdout);
      return 0;
    }
    if (args[i] == "--json") options.json = true;
    else if (args[i] == "--keep-running") options.keep_running = true;
    else if (args[i] == "--file" && i + 1 < args.size()) options.files.emplace_back(args[++i]);
    else return Usage(("lab: unexpected argument '" + std::string(args[i]) + "'").c_str(), kLabHelp);
  }
  // The lab's log lines are for debugging; its report is the output.
  wanopt::log::SetLevel(wanopt::log::Level::kWarn);
  wanopt::BlockStopSignals();
  RaiseDescriptorLimit();
  return wanopt::lab::RunLab(options);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty()) return Usage("a command is required", kMainHelp);
  std::string_view command = args[0];
  std::vector<std::string_view> rest(args.begin() + 1, args.end());
  if (command == "--version" || command == "version") {
    std::printf("wanopt %s\n", WANOPT_VERSION);
    return 0;
  }
  if (IsHelp(command) || command == "help") {
    std::fputs(kMainHelp, stdout);
    std::fputs("\nprotocol modules built in:\n", stdout);
    for (const auto& info : wanopt::protocols::Registry::Global().modules()) {
      std::printf("  %-12s %s\n", info.name.c_str(), info.description.c_str());
    }
    return 0;
  }
  if (command == "run") return Run(rest);
  if (command == "lab") return Lab(rest);
  if (command == "show") return wanopt::cli::Show(rest);
  return Usage(("unknown command '" + std::string(command) + "'").c_str(), kMainHelp);
}
