#include "wanopt/intercept/netlink_queue.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <unordered_set>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

extern "C" {
#include <libnetfilter_queue/libnetfilter_queue.h>
}

#include "util/log.h"

namespace wanopt::intercept {
namespace {

namespace asio = boost::asio;

class NetlinkQueueImpl final : public NetlinkQueue {
 public:
  NetlinkQueueImpl(asio::io_context& loop, Handler handler) : descriptor_(loop), handler_(std::move(handler)) {}
  ~NetlinkQueueImpl() override {
    *alive_ = false;
    Close();
  }

  bool Open(uint16_t number, std::string* error) {
    handle_ = nfq_open();
    if (!handle_) return Fail(error, "cannot open netlink queue handle");
    queue_ = nfq_create_queue(handle_, number, &NetlinkQueueImpl::OnPacket, this);
    if (!queue_) {
      return Fail(error, "cannot bind netlink queue " + std::to_string(number) +
                             " (needs root / CAP_NET_ADMIN; is another process bound to it?)");
    }
    if (nfq_set_mode(queue_, NFQNL_COPY_PACKET, 0xffff) < 0) return Fail(error, "cannot set copy mode");
    // Full queue: let packets through rather than dropping them.
    nfq_set_queue_flags(queue_, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN);
    nfq_set_queue_maxlen(queue_, 8192);
    int fd = nfq_fd(handle_);
    int size = 4 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    // A lost netlink message would leave its packet queued without a verdict; ask the
    // kernel not to drop them silently on overrun, and never fail reads with ENOBUFS.
    int one = 1;
    ::setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    descriptor_.assign(::dup(fd));
    descriptor_.non_blocking(true);
    buffer_.resize(0xffff + 4096);
    Wait();
    return true;
  }

  void Accept(uint32_t id, std::optional<uint32_t> mark, std::span<const uint8_t> replacement) override {
    if (!queue_ || !pending_.erase(id)) return;
    int rc;
    if (mark) {
      rc = nfq_set_verdict2(queue_, id, NF_ACCEPT, *mark, static_cast<uint32_t>(replacement.size()),
                            replacement.empty() ? nullptr : replacement.data());
    } else {
      rc = nfq_set_verdict(queue_, id, NF_ACCEPT, static_cast<uint32_t>(replacement.size()),
                           replacement.empty() ? nullptr : replacement.data());
    }
    if (rc < 0) WANOPT_LOG(kWarn, "intercept") << "verdict for packet " << id << ": " << std::strerror(errno);
  }

  void Drop(uint32_t id) override {
    if (!queue_ || !pending_.erase(id)) return;
    nfq_set_verdict(queue_, id, NF_DROP, 0, nullptr);
  }

  void Close() override {
    if (!handle_) return;
    // Whatever is still held goes on unchanged: fail open.
    for (uint32_t id : std::vector<uint32_t>(pending_.begin(), pending_.end())) Accept(id, std::nullopt, {});
    boost::system::error_code ignored;
    descriptor_.close(ignored);
    if (queue_) nfq_destroy_queue(queue_);
    nfq_close(handle_);
    queue_ = nullptr;
    handle_ = nullptr;
  }

 private:
  bool Fail(std::string* error, const std::string& what) {
    *error = what;
    if (queue_) nfq_destroy_queue(queue_);
    if (handle_) nfq_close(handle_);
    queue_ = nullptr;
    handle_ = nullptr;
    return false;
  }

  void Wait() {
    descriptor_.async_wait(asio::posix::descriptor_base::wait_read, [this](boost::system::error_code ec) {
      if (ec || !handle_) return;
      Drain();
    });
  }

  // Reads what is there, then waits again. Bounded: after a batch, the rest is read
  // in a posted turn, so other work on this loop gets its share and nothing queued
  // waits for the next packet to wake us.
  void Drain() {
    for (int i = 0; i < 256 && handle_; ++i) {
      ssize_t n = ::recv(descriptor_.native_handle(), buffer_.data(), buffer_.size(), MSG_DONTWAIT);
      if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ENOBUFS) {
          WANOPT_LOG(kWarn, "intercept") << "netlink queue read: " << std::strerror(errno);
        }
        if (errno == EINTR || errno == ENOBUFS) continue;
        Wait();
        return;
      }
      nfq_handle_packet(handle_, reinterpret_cast<char*>(buffer_.data()), static_cast<int>(n));
    }
    if (!handle_) return;
    // The batch is used up and more may be waiting. `alive_` outlives this object's
    // Close(): a turn posted before it does nothing after.
    boost::asio::post(descriptor_.get_executor(), [this, alive = alive_] {
      if (*alive && handle_) Drain();
    });
  }

  static int OnPacket(nfq_q_handle*, nfgenmsg*, nfq_data* data, void* self_ptr) {
    auto* self = static_cast<NetlinkQueueImpl*>(self_ptr);
    nfqnl_msg_packet_hdr* header = nfq_get_msg_packet_hdr(data);
    if (!header) return 0;
    QueuedPacket packet;
    packet.id = ntohl(header->packet_id);
    packet.hook = static_cast<Hook>(header->hook);
    packet.mark = nfq_get_nfmark(data);
    unsigned char* payload = nullptr;
    int length = nfq_get_payload(data, &payload);
    if (length > 0) packet.bytes = {payload, static_cast<size_t>(length)};
    self->pending_.insert(packet.id);
    try {
      self->handler_(packet);
    } catch (const std::exception& e) {
      WANOPT_LOG(kWarn, "intercept") << "packet " << packet.id << ": " << e.what() << ": passed unchanged";
      self->Accept(packet.id, std::nullopt, {});
    }
    return 0;
  }

  asio::posix::stream_descriptor descriptor_;
  Handler handler_;
  nfq_handle* handle_ = nullptr;
  nfq_q_handle* queue_ = nullptr;
  std::vector<uint8_t> buffer_;
  std::unordered_set<uint32_t> pending_;  // packets without a verdict yet
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::unique_ptr<NetlinkQueue> NetlinkQueue::Open(asio::io_context& loop, uint16_t number, Handler handler,
                                                 std::string* error) {
  auto queue = std::make_unique<NetlinkQueueImpl>(loop, std::move(handler));
  if (!queue->Open(number, error)) return nullptr;
  return queue;
}

}  // namespace wanopt::intercept
