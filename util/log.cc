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
std::atomic<uint64_t> g_dropped{0};
// The last record sent went only in part: the next one starts on a new line.
std::atomic<bool> g_cut{false};

// Sends `line` on stderr without waiting if it is a socket, else writes it. False
// when the socket was full (the record dropped).
bool WriteLine(std::string_view line) {
  ssize_t n = ::send(STDERR_FILENO, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0 && errno == ENOTSOCK) {
    ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
    (void)ignored;
    return true;
  }
  if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;  // other errors: nowhere to say so
  if (static_cast<size_t>(n) < line.size()) g_cut.store(true, std::memory_order_relaxed);
  return true;
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
  line.reserve(64 + message.size());
  if (g_cut.exchange(false, std::memory_order_relaxed)) line.append("\n");
  line.append(stamp).append(" ").append(Name(level)).append(" ");
  line.append(component).append(": ");
  uint64_t dropped = g_dropped.exchange(0, std::memory_order_relaxed);
  if (dropped > 0) {
    line.append("(").append(std::to_string(dropped)).append(" log records dropped: the journal did not keep up) ");
  }
  line.append(message).append("\n");
  if (!WriteLine(line)) g_dropped.fetch_add(dropped + 1, std::memory_order_relaxed);
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
