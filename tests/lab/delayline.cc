// wanopt_delayline: a WAN emulator between two TUN devices, for the namespace lab
// (tests/lab/netlab). This kernel has no netem, so the lab's WAN is this process:
// it opens two TUN devices, reads every IP packet the kernel sends out of one and
// writes it into the other after a constant one-way delay, optionally through a
// rate-limited bottleneck with a bounded tail-drop queue, and with random loss.
//
// Model, per direction (A->B and B->A are independent and identical):
//
//   read from TUN ─► [bottleneck queue, Q packets, tail drop] ─► serialize at R bit/s
//                 ─► random loss (P %) ─► propagation delay D ─► write to other TUN
//
// The bottleneck is a token bucket one packet deep, i.e. a link of rate R: a packet
// finishes serializing at finish = max(now, previous finish) + bytes*8/R, and is
// delivered at finish + D. Because D is constant and finish times never decrease,
// delivery times never decrease either, so one FIFO per direction ordered by arrival
// is also ordered by release time: the event loop only ever looks at its head.
// A packet is in the bottleneck queue while its finish time is in the future; when Q
// packets are there, a new one is dropped (tail drop). Default Q: one bandwidth-delay
// product (R * 2D / 1500 bytes), at least 16 packets, which lets one Reno/CUBIC flow
// fill the link without adding more than one RTT of queueing delay. Loss is applied
// after serialization (a packet lost on the wire still used its link time).
// Sizes are IP packet sizes (TUN without packet info carries no link-layer header).
//
// One thread: epoll on the two TUN fds, a timerfd armed at the earliest release time,
// and a signalfd (SIGTERM/SIGINT: print stats and exit 0; SIGUSR1: print stats).
// "ready" goes to stdout (and to --ready-fd) once both devices are open, so a script
// can move them into namespaces straight away. Stats go to stderr.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: wanopt_delayline --dev-a NAME --dev-b NAME --delay-ms N [--rate-mbit R]\n"
    "                        [--loss-pct P] [--queue-packets Q] [--seed S] [--ready-fd FD]\n"
    "\n"
    "Opens the TUN devices --dev-a (A) and --dev-b (B) (created if missing; IFF_TUN |\n"
    "IFF_NO_PI) and writes every packet read from one into the other N ms later (one\n"
    "way; fractions allowed). In each direction separately:\n"
    "  --rate-mbit R     bottleneck rate in Mbit/s (IP bytes); default: no limit\n"
    "  --queue-packets Q bottleneck queue, tail drop; default: 1 BDP (R*2N), min 16\n"
    "  --loss-pct P      random loss in percent (0..100), applied in each direction, so\n"
    "                    a round trip loses 1-(1-P/100)^2 (19% of pings for P=10)\n"
    "  --seed S          random seed for loss; default: from the clock (printed)\n"
    "  --ready-fd FD     also write \"ready\\n\" to FD and close it once both are open\n"
    "Prints \"ready\" on stdout once both devices are open. Stats to stderr on SIGUSR1\n"
    "and at exit; SIGTERM or SIGINT exits 0.\n";

constexpr std::size_t kMaxPacket = 65536;
// Without a rate limit nothing queues except the delay itself; this only bounds memory
// (65536 packets of 1500 bytes is ~100 MB; at 10 Gbit/s that is 78 ms of delay).
constexpr std::size_t kMaxInFlight = 65536;
constexpr int kReadBatch = 256;  // packets read per readiness event, for fairness

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "wanopt_delayline: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "wanopt_delayline: %s (see --help)\n", msg.c_str());
  std::exit(2);
}

struct Options {
  std::string dev_a, dev_b;
  double delay_ms = -1;
  double rate_mbit = 0;  // 0: unlimited
  double loss_pct = 0;
  long queue_packets = 0;  // 0: default
  uint64_t seed = 0;
  bool seed_given = false;
  int ready_fd = -1;
};

double parse_number(const char* opt, const char* s, double lo, double hi) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !std::isfinite(v) || v < lo || v > hi)
  {
    char range[64];
    std::snprintf(range, sizeof range, "[%g, %g]", lo, hi);
    usage_error(std::string(opt) + ": '" + s + "' is not a number in " + range);
  }
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) usage_error(std::string(a) + ": missing value (or unknown option)");
    const char* v = argv[++i];
    if (a == "--dev-a") o.dev_a = v;
    else if (a == "--dev-b") o.dev_b = v;
    else if (a == "--delay-ms") o.delay_ms = parse_number("--delay-ms", v, 0, 60'000);
    else if (a == "--rate-mbit") o.rate_mbit = parse_number("--rate-mbit", v, 0.001, 1e6);
    else if (a == "--loss-pct") o.loss_pct = parse_number("--loss-pct", v, 0, 100);
    else if (a == "--queue-packets") o.queue_packets = long(parse_number("--queue-packets", v, 1, 1e6));
    else if (a == "--seed") {
      o.seed = uint64_t(parse_number("--seed", v, 0, 1.8e19));
      o.seed_given = true;
    } else if (a == "--ready-fd") o.ready_fd = int(parse_number("--ready-fd", v, 0, 1 << 20));
    else usage_error("unknown option " + std::string(a));
  }
  if (o.dev_a.empty() || o.dev_b.empty()) usage_error("--dev-a and --dev-b are required");
  if (o.dev_a == o.dev_b) usage_error("--dev-a and --dev-b must differ");
  if (o.dev_a.size() >= IFNAMSIZ || o.dev_b.size() >= IFNAMSIZ)
    usage_error("device names are at most " + std::to_string(IFNAMSIZ - 1) + " characters");
  if (o.delay_ms < 0) usage_error("--delay-ms is required");
  return o;
}

int open_tun(const std::string& name) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    std::string what = "TUNSETIFF " + name;
    die(what.c_str());
  }
  return fd;
}

struct Packet {
  int64_t release_ns;
  std::vector<uint8_t> data;
};

struct Stats {
  uint64_t read = 0, read_bytes = 0;
  uint64_t forwarded = 0, forwarded_bytes = 0;
  uint64_t dropped_queue = 0, dropped_loss = 0, dropped_overflow = 0, write_errors = 0;
};

struct Direction {
  const char* name;  // "a->b"
  std::string from_dev, to_dev;
  int in_fd = -1, out_fd = -1;
  std::deque<Packet> fifo;            // ordered by arrival == by release time
  std::deque<int64_t> in_bottleneck;  // finish times of packets still serializing
  int64_t last_finish_ns = 0;
  Stats st;
};

class DelayLine {
 public:
  explicit DelayLine(const Options& o) : opt_(o) {
    delay_ns_ = int64_t(std::llround(o.delay_ms * 1e6));
    if (o.rate_mbit > 0) {
      ns_per_byte_ = 8e9 / (o.rate_mbit * 1e6);
      if (o.queue_packets > 0) {
        queue_limit_ = std::size_t(o.queue_packets);
      } else {
        double bdp = o.rate_mbit * 1e6 / 8 * (2 * o.delay_ms / 1e3) / 1500;
        queue_limit_ = std::max<std::size_t>(16, std::size_t(std::ceil(bdp)));
      }
    } else if (o.queue_packets > 0) {
      std::fprintf(stderr, "wanopt_delayline: --queue-packets has no effect without --rate-mbit\n");
    }
    seed_ = o.seed_given ? o.seed : uint64_t(now_ns()) ^ (uint64_t(getpid()) << 32);
    rng_.seed(seed_);
  }

  int run() {
    // Signals first, so a SIGTERM that arrives right after "ready" is not lost.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGUSR1);
    // A shell starts background jobs with SIGINT ignored; keep that (like nohup does).
    struct sigaction old_int{};
    sigaction(SIGINT, nullptr, &old_int);
    if (old_int.sa_handler != SIG_IGN) sigaddset(&mask, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) < 0) die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");

    int fa = open_tun(opt_.dev_a);
    int fb = open_tun(opt_.dev_b);
    dirs_[0] = Direction{"a->b", opt_.dev_a, opt_.dev_b, fa, fb, {}, {}, 0, {}};
    dirs_[1] = Direction{"b->a", opt_.dev_b, opt_.dev_a, fb, fa, {}, {}, 0, {}};

    tfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd_ < 0) die("timerfd_create");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    auto add = [&](int fd, uint64_t tag) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tag;
      if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    };
    add(fa, 0);
    add(fb, 1);
    add(tfd_, 2);
    add(sfd, 3);

    char rate[64] = "unlimited";
    if (opt_.rate_mbit > 0)
      std::snprintf(rate, sizeof rate, "%g Mbit/s, queue %zu packets", opt_.rate_mbit, queue_limit_);
    std::fprintf(stderr,
                 "wanopt_delayline: %s <-> %s, delay %g ms, rate %s, loss %g%% each way, "
                 "seed %" PRIu64 "\n",
                 opt_.dev_a.c_str(), opt_.dev_b.c_str(), opt_.delay_ms, rate, opt_.loss_pct, seed_);
    std::fputs("ready\n", stdout);
    std::fflush(stdout);
    if (opt_.ready_fd >= 0) {
      static const char msg[] = "ready\n";
      if (write(opt_.ready_fd, msg, sizeof msg - 1) < 0)
        std::fprintf(stderr, "wanopt_delayline: --ready-fd %d: %s\n", opt_.ready_fd,
                     std::strerror(errno));
      close(opt_.ready_fd);
    }

    std::vector<uint8_t> buf(kMaxPacket);
    epoll_event evs[8];
    int exit_code = 0;
    for (bool running = true; running;) {
      int n = epoll_wait(ep, evs, 8, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        uint64_t tag = evs[i].data.u64;
        if (tag <= 1) {
          if (!read_packets(dirs_[tag], buf)) {
            running = false;
            exit_code = 1;
          }
        } else if (tag == 2) {
          uint64_t expirations;
          while (read(tfd_, &expirations, sizeof expirations) > 0) {
          }
        } else {
          signalfd_siginfo si;
          while (read(sfd, &si, sizeof si) == ssize_t(sizeof si)) {
            if (si.ssi_signo == SIGUSR1) {
              print_stats("stats");
            } else {
              running = false;
            }
          }
        }
      }
      release_due();
    }
    print_stats("exit");
    return exit_code;
  }

 private:
  // Drains up to kReadBatch packets. Returns false if the device is gone for good.
  bool read_packets(Direction& d, std::vector<uint8_t>& buf) {
    for (int i = 0; i < kReadBatch; ++i) {
      ssize_t r = read(d.in_fd, buf.data(), buf.size());
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        if (errno == EBADFD || errno == ENODEV || errno == ENXIO) {
          std::fprintf(stderr, "wanopt_delayline: %s is gone (%s); exiting\n", d.from_dev.c_str(),
                       std::strerror(errno));
          return false;
        }
        // Transient (e.g. EIO while the device moves between namespaces): note it, go on.
        std::fprintf(stderr, "wanopt_delayline: read %s: %s\n", d.from_dev.c_str(),
                     std::strerror(errno));
        return true;
      }
      if (r == 0) return true;
      enqueue(d, buf.data(), std::size_t(r));
    }
    return true;
  }

  void enqueue(Direction& d, const uint8_t* p, std::size_t len) {
    int64_t now = now_ns();
    d.st.read++;
    d.st.read_bytes += len;
    int64_t deliver = now + delay_ns_;
    if (ns_per_byte_ > 0) {
      while (!d.in_bottleneck.empty() && d.in_bottleneck.front() <= now) d.in_bottleneck.pop_front();
      if (d.in_bottleneck.size() >= queue_limit_) {
        d.st.dropped_queue++;
        return;
      }
      int64_t start = std::max(now, d.last_finish_ns);
      d.last_finish_ns = start + int64_t(std::llround(double(len) * ns_per_byte_));
      d.in_bottleneck.push_back(d.last_finish_ns);
      deliver = d.last_finish_ns + delay_ns_;
    }
    if (opt_.loss_pct > 0 && uniform_(rng_) * 100.0 < opt_.loss_pct) {
      d.st.dropped_loss++;
      return;
    }
    if (d.fifo.size() >= kMaxInFlight) {
      d.st.dropped_overflow++;
      return;
    }
    std::vector<uint8_t> data;
    if (!pool_.empty()) {
      data = std::move(pool_.back());
      pool_.pop_back();
    }
    data.assign(p, p + len);
    d.fifo.push_back(Packet{deliver, std::move(data)});
  }

  void release_due() {
    int64_t now = now_ns();
    int64_t next = INT64_MAX;
    for (Direction& d : dirs_) {
      while (!d.fifo.empty() && d.fifo.front().release_ns <= now) {
        Packet& pk = d.fifo.front();
        ssize_t w = write(d.out_fd, pk.data.data(), pk.data.size());
        if (w == ssize_t(pk.data.size())) {
          d.st.forwarded++;
          d.st.forwarded_bytes += pk.data.size();
        } else {
          // EIO: the other device is down (e.g. before netlab brings it up). A real
          // link would lose the packet too.
          d.st.write_errors++;
        }
        if (pool_.size() < 4096) pool_.push_back(std::move(pk.data));
        d.fifo.pop_front();
      }
      if (!d.fifo.empty()) next = std::min(next, d.fifo.front().release_ns);
    }
    if (next == armed_ns_) return;
    itimerspec its{};
    if (next != INT64_MAX) {
      its.it_value.tv_sec = next / 1'000'000'000;
      its.it_value.tv_nsec = next % 1'000'000'000;
    }  // else all zero: disarm
    if (timerfd_settime(tfd_, TFD_TIMER_ABSTIME, &its, nullptr) < 0) die("timerfd_settime");
    armed_ns_ = next;
  }

  // The name a TUN device has now: netlab moves and renames one after "ready".
  static std::string current_name(int fd, const std::string& fallback) {
    ifreq ifr{};
    if (ioctl(fd, TUNGETIFF, &ifr) < 0) return fallback;
    return std::string(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  }

  void print_stats(const char* when) {
    for (const Direction& d : dirs_) {
      std::string from = current_name(d.in_fd, d.from_dev), to = current_name(d.out_fd, d.to_dev);
      std::fprintf(stderr,
                   "wanopt_delayline: %s %s %s->%s read %" PRIu64 " (%" PRIu64
                   " bytes) forwarded %" PRIu64 " (%" PRIu64 " bytes) lost %" PRIu64
                   " queue_drops %" PRIu64 " overflow_drops %" PRIu64 " write_errors %" PRIu64
                   " queued %zu\n",
                   when, d.name, from.c_str(), to.c_str(), d.st.read, d.st.read_bytes,
                   d.st.forwarded, d.st.forwarded_bytes, d.st.dropped_loss, d.st.dropped_queue,
                   d.st.dropped_overflow, d.st.write_errors, d.fifo.size());
    }
    std::fflush(stderr);
  }

  Options opt_;
  int64_t delay_ns_ = 0;
  double ns_per_byte_ = 0;  // 0: no rate limit
  std::size_t queue_limit_ = 0;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> uniform_{0.0, 1.0};
  Direction dirs_[2];
  std::vector<std::vector<uint8_t>> pool_;  // recycled packet buffers
  int tfd_ = -1;
  int64_t armed_ns_ = INT64_MAX;
};

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  DelayLine dl(o);
  return dl.run();
}
