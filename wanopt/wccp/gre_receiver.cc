#include "wanopt/wccp/gre_receiver.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>

#include "util/bytes.h"
#include "util/log.h"
#include "wanopt/wccp/gre.h"

namespace wanopt::wccp {

namespace asio = boost::asio;

namespace {

// Runs `ip` with `args`; true if it exited 0. Its output goes to /dev/null.
bool RunIp(std::vector<std::string> args) {
  args.insert(args.begin(), "ip");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "ip", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return false;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::vector<std::string> ReturnRule(const std::string& tun, const char* verb) {
  return {"rule", verb, "iif", tun, "fwmark", "0/1", "lookup", std::to_string(GreReceiver::kReturnTable),
          "priority", std::to_string(GreReceiver::kReturnRulePriority)};
}

}  // namespace

struct GreReceiver::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io, std::string tun_name, uint32_t local)
      : tun(std::move(tun_name)), local(local), raw(io), tun_in(io) {}
  ~Impl() {
    if (tun_fd >= 0) ::close(tun_fd);
    if (routed_fd >= 0) ::close(routed_fd);
  }

  bool Open(std::string* error) {
    auto fail = [&](const std::string& what) {
      *error = "wccp: " + what + ": " + std::strerror(errno);
      return false;
    };
    tun_fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (tun_fd < 0) return fail("cannot open /dev/net/tun");
    ifreq ifr{};
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    std::strncpy(ifr.ifr_name, tun.c_str(), IFNAMSIZ - 1);
    if (::ioctl(tun_fd, TUNSETIFF, &ifr) < 0) return fail("cannot create TUN device " + tun);
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return fail("socket");
    bool up = ::ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags |= IFF_UP;
    up = up && ::ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    ::close(s);
    if (!up) return fail("cannot bring " + tun + " up");
    // Inner packets carry the client's and the server's addresses, which the kernel
    // would not expect from this device: strict reverse-path filtering would drop them.
    std::ofstream(std::string("/proc/sys/net/ipv4/conf/") + tun + "/rp_filter") << "0\n";
    int fd = ::socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_GRE);
    if (fd < 0) return fail("cannot open a raw GRE socket (CAP_NET_RAW)");
    raw.assign(fd);
    // Declined packets sent back as they are: a raw socket with the IP header given.
    routed_fd = ::socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
    if (routed_fd < 0) return fail("cannot open a raw IP socket (CAP_NET_RAW)");
    // The return path: forwarded packets from the TUN device go back into it.
    RunIp(ReturnRule(tun, "del"));  // a rule a crashed run left behind
    if (!RunIp({"route", "replace", "default", "dev", tun, "table", std::to_string(GreReceiver::kReturnTable)}) ||
        !RunIp(ReturnRule(tun, "add"))) {
      errno = EPERM;
      return fail("cannot add the return route (ip rule/route, table " + std::to_string(GreReceiver::kReturnTable) + ")");
    }
    tun_in.assign(tun_fd);
    tun_fd = -1;  // tun_in owns it now
    return true;
  }

  void ReadTun() {
    tun_in.async_wait(asio::posix::stream_descriptor::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->stopped) return;
      for (int i = 0; i < 256; ++i) {
        ssize_t n = ::read(self->tun_in.native_handle(), self->out.data(), self->out.size());
        if (n <= 0) break;
        self->Return(std::span<const uint8_t>(self->out.data(), static_cast<size_t>(n)));
      }
      self->ReadTun();
    });
  }

  void Return(std::span<const uint8_t> packet) {
    if (packet.size() < 20 || (packet[0] >> 4) != 4) return;
    uint32_t router = return_router.load();
    if (router) {
      std::vector<uint8_t> gre = BuildGre(std::nullopt, packet);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_addr.s_addr = htonl(router);
      if (::sendto(raw.native_handle(), gre.data(), gre.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) > 0) {
        ++counters.returned_gre;
      }
      return;
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    std::memcpy(&to.sin_addr.s_addr, packet.data() + 16, 4);
    if (::sendto(routed_fd, packet.data(), packet.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) > 0) {
      ++counters.returned_routed;
    }
  }

  void Read() {
    raw.async_wait(asio::posix::stream_descriptor::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->stopped) return;
      self->Drain();
      self->Read();
    });
  }

  void Drain() {
    for (int i = 0; i < 256; ++i) {
      ssize_t n = ::recv(raw.native_handle(), buffer.data(), buffer.size(), 0);
      if (n <= 0) return;
      Handle(std::span<const uint8_t>(buffer.data(), static_cast<size_t>(n)));
    }
  }

  void Handle(std::span<const uint8_t> packet) {
    // The raw socket gives the outer IPv4 header too.
    if (packet.size() < 20 || (packet[0] >> 4) != 4) return void(++counters.refused);
    size_t header = static_cast<size_t>(packet[0] & 0x0F) * 4;
    size_t total = bytes::GetBe16(packet.data() + 2);
    if (header < 20 || total < header || total > packet.size()) return void(++counters.refused);
    if (bytes::GetBe32(packet.data() + 16) != local) return;  // GRE for another address of this host
    auto gre = ParseGre(packet.subspan(header, total - header));
    if (!gre) {
      if (log_refusals-- > 0) WANOPT_LOG(kInfo, "wccp") << "GRE packet refused: " << gre.error().reason;
      return void(++counters.refused);
    }
    ssize_t written = ::write(tun_in.native_handle(), gre->inner.data(), gre->inner.size());
    if (written != static_cast<ssize_t>(gre->inner.size())) return void(++counters.dropped);
    ++counters.packets;
    counters.bytes += gre->inner.size();
  }

  const std::string tun;
  const uint32_t local;
  asio::posix::stream_descriptor raw;
  asio::posix::stream_descriptor tun_in;  // the TUN device: inner packets in, declined ones back
  int tun_fd = -1;                        // until tun_in takes it
  int routed_fd = -1;
  std::atomic<uint32_t> return_router{0};
  std::array<uint8_t, 65536> out{};
  bool stopped = false;
  int log_refusals = 10;  // a few lines, not one per packet
  std::array<uint8_t, 65536> buffer{};
  Counters counters;
};

GreReceiver::GreReceiver(asio::io_context& io, std::string tun, uint32_t local)
    : impl_(std::make_shared<Impl>(io, std::move(tun), local)) {}

GreReceiver::~GreReceiver() { Stop(); }

bool GreReceiver::Start(std::string* error) {
  if (!impl_->Open(error)) return false;
  WANOPT_LOG(kInfo, "wccp") << "GRE-redirected packets go to " << impl_->tun;
  asio::post(impl_->raw.get_executor(), [impl = impl_] {
    impl->Read();
    impl->ReadTun();
  });
  return true;
}

void GreReceiver::Stop() {
  auto impl = impl_;
  asio::dispatch(impl->raw.get_executor(), [impl] {
    if (impl->stopped) return;
    impl->stopped = true;
    boost::system::error_code ignored;
    impl->raw.close(ignored);
    impl->tun_in.close(ignored);  // the device and its route go with it
    RunIp(ReturnRule(impl->tun, "del"));
  });
}

void GreReceiver::set_return_router(uint32_t router) { impl_->return_router = router; }

const GreReceiver::Counters& GreReceiver::counters() const { return impl_->counters; }
const std::string& GreReceiver::tun() const { return impl_->tun; }

}  // namespace wanopt::wccp
