// One-line log records on stderr, for operators reading a journal.
//
// Each record is a single line: "<UTC time> <level> <component>: <message>".
// Thread-safe; a record is written with one write() so lines never interleave.
//
// Logging never stalls the data path: when stderr is a socket (journald's stream,
// under systemd) a record is sent without waiting, and one that finds the socket
// full is dropped, counted, and the count is reported at the head of the next record
// that goes through ("(N log records dropped: the journal did not keep up)"); a
// record the socket took only part of ends there, the next starting a new line;
// records go out one at a time (a lock around a send that never waits). A
// busy box at info level writes a few records per connection; a journal that stops
// reading (a slow disk under journald) must not hold up every connection on the
// thread that logs. Other stderrs (a file, a terminal, a pipe) are written as
// before.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace wanopt::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Records below `level` are dropped. Default: kInfo.
void SetLevel(Level level);
bool Enabled(Level level);

// Writes one record. `component` names the part of the box ("branch", "datacenter", ...).
void Write(Level level, std::string_view component, std::string_view message);

// Captures every record written from now on into memory as well (tests read it back).
void StartCapture();
std::string Captured();

}  // namespace wanopt::log

// Streams into a record: WANOPT_LOG(kWarn, "branch") << "peer " << addr << " unreachable";
#define WANOPT_LOG(level, component)                                                  \
  for (bool wanopt_log_once = ::wanopt::log::Enabled(::wanopt::log::Level::level);    \
       wanopt_log_once; wanopt_log_once = false)                                      \
  ::wanopt::log::detail::Record(::wanopt::log::Level::level, component).stream()

namespace wanopt::log::detail {
class Record {
 public:
  Record(Level level, std::string_view component) : level_(level), component_(component) {}
  ~Record() { Write(level_, component_, stream_.str()); }
  std::ostringstream& stream() { return stream_; }

 private:
  Level level_;
  std::string_view component_;
  std::ostringstream stream_;
};
}  // namespace wanopt::log::detail
