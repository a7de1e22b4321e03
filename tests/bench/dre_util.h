// dre_bench's small helpers: clocks, CPU time, running a shell command, reading a
// small file, and a temporary directory removed on destruction. Benchmarks only.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace wanopt::bench {

using Clock = std::chrono::steady_clock;

constexpr size_t kMiB = 1024 * 1024;

// Wall seconds since `since`.
double Seconds(Clock::time_point since);
// User + system CPU seconds of getrusage(who): RUSAGE_SELF or RUSAGE_CHILDREN.
double CpuSeconds(int who);
// CPU seconds of the calling thread.
double ThreadCpuSeconds();
// The command's standard output (through popen), trailing newlines removed; "" when
// it could not run.
std::string RunCommand(const std::string& command);
// The file's text, trailing newlines removed; "" when it cannot be read.
std::string ReadFileText(const std::string& path);

// A fresh /tmp/wanopt-dre-bench-XXXXXX, removed with everything in it on destruction.
struct TempDir {
  std::string path;
  TempDir();
  ~TempDir();
};

}  // namespace wanopt::bench
