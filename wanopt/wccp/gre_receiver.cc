#include "wanopt/wccp/gre_receiver.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
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

struct GreReceiver::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io, std::string tun_name, uint32_t local) : tun(std::move(tun_name)), local(local), raw(io) {}
  ~Impl() {
    if (tun_fd >= 0) ::close(tun_fd);
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
    return true;
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
    ssize_t written = ::write(tun_fd, gre->inner.data(), gre->inner.size());
    if (written != static_cast<ssize_t>(gre->inner.size())) return void(++counters.dropped);
    ++counters.packets;
    counters.bytes += gre->inner.size();
  }

  const std::string tun;
  const uint32_t local;
  asio::posix::stream_descriptor raw;
  int tun_fd = -1;
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
  asio::post(impl_->raw.get_executor(), [impl = impl_] { impl->Read(); });
  return true;
}

void GreReceiver::Stop() {
  auto impl = impl_;
  asio::dispatch(impl->raw.get_executor(), [impl] {
    if (impl->stopped) return;
    impl->stopped = true;
    boost::system::error_code ignored;
    impl->raw.close(ignored);
  });
}

const GreReceiver::Counters& GreReceiver::counters() const { return impl_->counters; }
const std::string& GreReceiver::tun() const { return impl_->tun; }

}  // namespace wanopt::wccp
