#include "util/log.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <mutex>

namespace wanopt::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::mutex g_capture_mu;
bool g_capturing = false;
std::string g_captured;

const char* Name(Level level) {
  switch (level) {
    case Level::kDebug: return "DEBUG";
    case Level::kInfo: return "INFO";
    case Level::kWarn: return "WARN";
    case Level::kError: return "ERROR";
  }
  return "?";
}
}  // namespace

void SetLevel(Level level) { g_level = static_cast<int>(level); }
bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

namespace {
// Records go out one at a time, so that the two below describe what the journal got.
std::mutex g_write_mu;
uint64_t g_dropped = 0;  // guarded: records dropped since the last one that went out
bool g_cut = false;      // guarded: the last one went out only in part

enum class Sent { kWhole, kPart, kNone };

// Sends `line` on stderr without waiting if it is a socket, else writes it.
Sent WriteLine(std::string_view line) {
  ssize_t n = ::send(STDERR_FILENO, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0 && errno == ENOTSOCK) {
    ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
    (void)ignored;
    return Sent::kWhole;
  }
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? Sent::kNone : Sent::kWhole;  // else: nowhere to say so
  return static_cast<size_t>(n) < line.size() ? Sent::kPart : Sent::kWhole;
}
}  // namespace

void Write(Level level, std::string_view component, std::string_view message) {
  using namespace std::chrono;
  auto now = system_clock::now();
  std::time_t secs = system_clock::to_time_t(now);
  auto millis = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[64];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(millis));
  std::string line;
  line.reserve(128 + message.size());
  {
    std::lock_guard lock(g_write_mu);
    if (g_cut) line.append("\n");
    line.append(stamp).append(" ").append(Name(level)).append(" ");
    line.append(component).append(": ");
    if (g_dropped > 0) {
      line.append("(").append(std::to_string(g_dropped)).append(" log records dropped: the journal did not keep up) ");
    }
    line.append(message).append("\n");
    switch (WriteLine(line)) {
      case Sent::kWhole: g_cut = false, g_dropped = 0; break;
      case Sent::kPart: g_cut = true, g_dropped = 0; break;
      case Sent::kNone: ++g_dropped; break;
    }
  }
  std::lock_guard lock(g_capture_mu);
  if (g_capturing) g_captured += line;
}

void StartCapture() {
  std::lock_guard lock(g_capture_mu);
  g_capturing = true;
  g_captured.clear();
}

std::string Captured() {
  std::lock_guard lock(g_capture_mu);
  return g_captured;
}

}  // namespace wanopt::log
