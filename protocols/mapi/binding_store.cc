#include "protocols/mapi/binding_store.h"

#include "protocols/mapi/mapi.h"
#include "util/log.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

extern char** environ;

namespace wanopt::protocols::epm {
namespace {

constexpr std::string_view kMagic = "wanopt-mapi-bindings 1";
static_assert(kMagic.size() + 1 <= 64, "kMaxBindingsFileBytes allows 64 bytes for the version line");

bool ValidInterface(std::string_view name) {
  if (name.empty() || name.size() > kMaxInterfaceChars) return false;
  for (char c : name) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

template <class T>
bool Parse(std::string_view text, T* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t at = 0;
  while (at <= line.size()) {
    size_t space = std::min(line.find(' ', at), line.size());
    fields.push_back(line.substr(at, space - at));
    at = space + 1;
  }
  return fields;
}

// A scoped IPv6 address (the module binds none: it drops a server's scope, as the
// SYNs it steers have none) is neither written nor read.
bool Storable(const boost::asio::ip::address& address) {
  return !address.is_unspecified() && (address.is_v4() || address.to_v6().scope_id() == 0);
}

bool IsFamily(const boost::asio::ip::address& address, Family family) {
  return address.is_v4() == (family == Family::kIpv4);
}

std::string Utc(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  return text;
}

}  // namespace

std::string FormatBindings(const std::vector<SavedBinding>& bindings) {
  std::ostringstream out;
  out << kMagic << "\n";
  size_t n = 0;
  for (const auto& b : bindings) {
    if (n == kMaxSavedBindings || !ValidInterface(b.interface) || !Storable(b.server)) continue;
    out << b.server.to_string() << " " << b.proxy_port << " " << b.real_port << " " << b.interface << " "
        << b.expires_unix << "\n";
    ++n;
  }
  out << "end " << n << "\n";  // a truncated file lacks it
  return out.str();
}

std::optional<std::vector<SavedBinding>> ParseBindings(std::string_view text, std::string* error) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) {
      *error = "truncated (the last line has no end)";
      return std::nullopt;
    }
    lines.push_back(text.substr(0, nl));
    text.remove_prefix(nl + 1);
  }
  if (lines.empty() || lines.front() != kMagic) {
    *error = "not a bindings file (the first line is not '" + std::string(kMagic) + "')";
    return std::nullopt;
  }
  size_t count = 0;
  if (lines.size() < 2 || !lines.back().starts_with("end ") || !Parse(lines.back().substr(4), &count) ||
      count != lines.size() - 2) {
    *error = "truncated (no 'end N' line matching the bindings)";
    return std::nullopt;
  }
  if (count > kMaxSavedBindings) {
    *error = "more than " + std::to_string(kMaxSavedBindings) + " bindings";
    return std::nullopt;
  }
  std::vector<SavedBinding> bindings;
  for (size_t i = 1; i + 1 < lines.size(); ++i) {
    auto f = Fields(lines[i]);
    SavedBinding b;
    boost::system::error_code ec;
    auto address = f.size() == 5 && f[0].find('%') == std::string_view::npos
                       ? boost::asio::ip::make_address(std::string(f[0]), ec)
                       : boost::asio::ip::address();
    if (f.size() != 5 || ec || !Storable(address) || !Parse(f[1], &b.proxy_port) || !Parse(f[2], &b.real_port) ||
        b.proxy_port == 0 || b.real_port == 0 || !ValidInterface(f[3]) || !Parse(f[4], &b.expires_unix)) {
      *error = "line " + std::to_string(i + 1) + " is not 'SERVER PROXY_PORT REAL_PORT INTERFACE EXPIRES'";
      return std::nullopt;
    }
    b.server = address;
    b.interface = std::string(f[3]);
    bindings.push_back(std::move(b));
  }
  return bindings;
}

bool SaveBindings(const std::string& path, const std::vector<SavedBinding>& bindings, std::string* error) {
  std::string text = FormatBindings(bindings);
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = tmp + ": " + std::strerror(errno);
    return false;
  }
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  bool ok = done == text.size() && ::fsync(fd) == 0;
  int saved_errno = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = (ok ? path : tmp) + ": " + std::strerror(ok ? errno : saved_errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

std::optional<std::vector<SavedBinding>> LoadBindings(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return std::vector<SavedBinding>{};
    *error = path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string text(kMaxBindingsFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxBindingsFileBytes) {
    *error = path + ": larger than " + std::to_string(kMaxBindingsFileBytes) + " bytes";
    return std::nullopt;
  }
  auto parsed = ParseBindings(text, error);
  if (!parsed) *error = path + ": " + *error;
  return parsed;
}

std::string NatRules(Family family, const std::string& chain, const std::vector<SavedBinding>& bindings) {
  bool v4 = family == Family::kIpv4;
  std::string rules = "*nat\n-F " + chain + "\n";
  for (const auto& b : bindings) {
    if (!IsFamily(b.server, family) || !Storable(b.server)) continue;
    std::string server = b.server.to_string();
    // mark 0x1: what interception's TPROXY rule gives a SYN the daemon takes.
    rules += "-A " + chain + " -d " + server + (v4 ? "/32" : "/128") + " -p tcp --dport " +
             std::to_string(b.proxy_port) + " -m mark ! --mark 0x1 -m time --datestop " + Utc(b.expires_unix) +
             " -j DNAT --to-destination " + (v4 ? server : "[" + server + "]") + ":" + std::to_string(b.real_port) +
             "\n";
  }
  return rules + "COMMIT\n";
}

bool ApplyNatRules(Family family, const std::string& rules, std::string* error) {
  // The rules go in on stdin (a memory file), the messages come back in another.
  int in = ::memfd_create("wanopt-mapi-rules", MFD_CLOEXEC);
  int out = ::memfd_create("wanopt-mapi-errors", MFD_CLOEXEC);
  if (in < 0 || out < 0 || ::write(in, rules.data(), rules.size()) != static_cast<ssize_t>(rules.size()) ||
      ::lseek(in, 0, SEEK_SET) != 0) {
    *error = std::string("memfd: ") + std::strerror(errno);
    if (in >= 0) ::close(in);
    if (out >= 0) ::close(out);
    return false;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in, 0);
  posix_spawn_file_actions_adddup2(&actions, out, 1);
  posix_spawn_file_actions_adddup2(&actions, out, 2);
  // The daemon's sockets are not the child's (Asio does not open them close-on-exec).
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  std::string program = family == Family::kIpv4 ? "iptables-nft-restore" : "ip6tables-nft-restore";
  char arg1[] = "--noflush", arg2[] = "-w", arg3[] = "5";
  char* argv[] = {program.data(), arg1, arg2, arg3, nullptr};
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in);
  if (rc != 0) {
    ::close(out);
    *error = program + ": " + std::strerror(rc);
    return false;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    ::close(out);
    return true;
  }
  char text[512] = {};
  ssize_t n = ::pread(out, text, sizeof text - 1, 0);
  ::close(out);
  std::string message(text, n > 0 ? static_cast<size_t>(n) : 0);
  for (char& c : message) if (c == '\n') c = ' ';
  *error = program + " failed (" + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
           "): " + message;
  return false;
}

// ---------------------------------------------------------------- MapiBox's use of them

void MapiBox::Load() {
  std::call_once(loaded_, [this] {
    if (settings_.state_file.empty()) return;
    std::string error;
    auto saved = LoadBindings(settings_.state_file, &error);
    if (!saved) {
      WANOPT_LOG(kWarn, "mapi") << "bindings not restored, the file is ignored: " << error;
      return;
    }
    if (saved->empty()) return;
    auto now = Clock::now();
    auto wall = std::chrono::system_clock::now().time_since_epoch();
    size_t restored = 0;
    {
      std::lock_guard lock(mu_);
      for (const auto& saved_binding : *saved) {
        auto left = std::chrono::seconds(saved_binding.expires_unix) - wall;
        if (left <= Clock::duration::zero()) continue;
        Binding& b = bindings_[{saved_binding.server, saved_binding.proxy_port}];
        if (b.expires > now) continue;  // learnt since the start: newer
        b.real_port = saved_binding.real_port;
        b.interface = saved_binding.interface;
        b.expires = now + std::min<Clock::duration>(left, settings_.binding_ttl);  // the wall clock may have jumped
        ++restored;
      }
    }
    WANOPT_LOG(kInfo, "mapi") << "restored " << restored << " port bindings from " << settings_.state_file << " ("
                              << saved->size() - restored << " expired)";
    RequestPersist(/*force=*/true);  // the kernel rules as the file says, without what expired
  });
}

MapiBox::~MapiBox() {
  {
    std::lock_guard lock(writer_mu_);
    stopping_ = true;
  }
  writer_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

void MapiBox::RequestPersist(bool force) {
  if (settings_.state_file.empty() && settings_.fail_open_chain.empty()) return;
  {
    std::lock_guard lock(writer_mu_);
    ++requested_;
    force_ |= force;
    if (!writer_.joinable()) writer_ = std::thread([this] { WriterLoop(); });
  }
  writer_cv_.notify_all();
}

void MapiBox::WaitPersisted() {
  std::unique_lock lock(writer_mu_);
  uint64_t asked = requested_;
  writer_cv_.wait(lock, [&] { return written_ >= asked; });
}

void MapiBox::WriterLoop() {
  std::unique_lock lock(writer_mu_);
  for (;;) {
    // What was asked before stopping is still written: the last bindings survive.
    writer_cv_.wait(lock, [&] { return requested_ > written_ || stopping_; });
    if (requested_ == written_) return;
    uint64_t asked = requested_;
    bool force = std::exchange(force_, false);
    lock.unlock();
    Persist(force);  // requests meanwhile are folded into the next round
    lock.lock();
    written_ = asked;
    writer_cv_.notify_all();
  }
}

void MapiBox::Persist(bool force) {
  // The snapshot is taken under persist_mu_ too: a later snapshot is never
  // overwritten by an earlier one. (Lock order: persist_mu_, then mu_.)
  std::lock_guard persist_lock(persist_mu_);
  auto now = Clock::now();
  auto wall = std::chrono::system_clock::now().time_since_epoch();
  std::vector<SavedBinding> live;
  std::map<Key, uint16_t> keys;
  Clock::time_point next = Clock::time_point::max();
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, b] : bindings_) {
      if (b.expires <= now) continue;
      auto expires = std::chrono::duration_cast<std::chrono::seconds>(wall + (b.expires - now)).count() + 1;
      live.push_back({key.first, key.second, b.real_port, b.interface, expires});
      keys[key] = b.real_port;
      next = std::min(next, b.expires);
    }
  }
  bool stale = !keys.empty() && now - persisted_at_ >= settings_.binding_ttl / 10;
  bool changed = force || stale || keys != persisted_;
  bool first = persisted_at_ == Clock::time_point{};  // this process's first write
  // A kernel write that failed is tried again with the next change, or at the first
  // request a minute later: a chain that is missing for good (deploy/intercept not
  // re-run after an upgrade) must not cost two iptables runs per ept_map answer.
  auto retry_due = [&](int i) { return rules_retry_at_[i] && now >= *rules_retry_at_[i]; };
  if (!changed && !file_failed_ && !retry_due(0) && !retry_due(1)) {
    next_expiry_ = next.time_since_epoch().count();  // refreshed: look again when this one is due
    return;
  }
  if (!settings_.state_file.empty() && (changed || file_failed_)) {
    std::string error;
    bool ok = SaveBindings(settings_.state_file, live, &error);
    if (!ok && !file_failed_) WANOPT_LOG(kWarn, "mapi") << "port bindings not kept across restarts: " << error;
    if (ok && file_failed_) WANOPT_LOG(kInfo, "mapi") << "port bindings kept in " << settings_.state_file << " again";
    file_failed_ = !ok;
  }
  if (!settings_.fail_open_chain.empty()) {
    auto has_v6 = [](const auto& bindings) {
      return std::any_of(bindings.begin(), bindings.end(), [](const auto& b) { return !b.first.first.is_v4(); });
    };
    // IPv6 rules matter while an IPv6 server has a binding (and once more when the
    // last is gone). The first write of a process empties the IPv6 chain too, of what
    // an earlier run left, quietly: a box used over IPv4 only may not have it.
    bool v6_needed = has_v6(keys) || has_v6(persisted_);
    for (int i : {0, 1}) {
      Family family = i == 0 ? Family::kIpv4 : Family::kIpv6;
      bool needed = i == 0 || v6_needed;
      if (!needed && !first) {
        rules_retry_at_[i].reset();  // nothing to write
        continue;
      }
      if (!changed && !retry_due(i)) continue;
      std::string error;
      bool ok = ApplyNatRules(family, NatRules(family, settings_.fail_open_chain, live), &error);
      if (!needed) continue;  // only emptying, at the start
      bool failed_before = rules_retry_at_[i].has_value();
      if (!ok && !failed_before) {
        WANOPT_LOG(kWarn, "mapi") << "no kernel fallback for remapped ports" << (i ? " of IPv6 servers" : "")
                                  << " (clients told " << settings_.mapi_port
                                  << " fail while the daemon is stopped): " << error;
      }
      if (ok && failed_before) {
        WANOPT_LOG(kInfo, "mapi") << "kernel fallback rules in " << settings_.fail_open_chain
                                  << (i ? " (IPv6)" : "") << " again";
      }
      if (ok) rules_retry_at_[i].reset();
      else rules_retry_at_[i] = now + std::chrono::minutes(1);
    }
  }
  WANOPT_LOG(kDebug, "mapi") << live.size() << " port bindings written";
  persisted_ = std::move(keys);
  persisted_at_ = now;
  next_expiry_ = next.time_since_epoch().count();
}

}  // namespace wanopt::protocols::epm
