// Interception's life: the transparent listener and the netlink queue opened and
// closed, what the box remembers swept, and the public Interceptor.
#include "wanopt/intercept/interceptor_impl.h"

namespace wanopt::intercept {

bool Interceptor::Impl::Start(std::string* error) {
  error_code ec;
  tcp::endpoint at(tcp::v4(), config_.listen_port);
  acceptor_.open(tcp::v4(), ec);
  int one = 1;
  if (!ec && ::setsockopt(acceptor_.native_handle(), SOL_IP, IP_TRANSPARENT, &one, sizeof one) != 0) {
    ec = error_code(errno, boost::system::system_category());
  }
  uint32_t mark = kMarkListener;
  if (!ec && ::setsockopt(acceptor_.native_handle(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    ec = error_code(errno, boost::system::system_category());
  }
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(at, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "intercept: transparent listener on port " + std::to_string(config_.listen_port) + ": " +
             ec.message() + " (needs root / CAP_NET_ADMIN)";
    acceptor_.close(ec);
    return false;
  }
  auto self = shared_from_this();
  queue_ = NetlinkQueue::Open(loop_, config_.queue, [self](const QueuedPacket& p) { self->OnPacket(p); }, error);
  if (!queue_) {
    *error = "intercept: " + *error;
    acceptor_.close(ec);
    return false;
  }
  WANOPT_LOG(kInfo, "intercept") << env_.config.name << ": intercepting: netlink queue " << config_.queue
                                 << ", transparent listener on port " << config_.listen_port << ", "
                                 << config_.rules.size() << " in-path rule(s), device id "
                                 << channel::FormatDeviceId(env_.config.device_id)
                                 << (config_.answer ? ", answers probes" : "");
  Accept();
  Sweep();
  return true;
}

void Interceptor::Impl::Stop() {
  stopped_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  sweep_timer_.cancel();
  // The queue's handler holds this object: dropping the queue breaks the cycle.
  if (queue_) queue_->Close();
  queue_.reset();
  for (auto& [key, held] : held_) {
    if (held->probe) held->probe->close(ignored);
  }
  held_.clear();
  probes_.clear();
  decisions_.clear();
}

// Forgets decisions whose time is up, closing probes nobody came for.
void Interceptor::Impl::Sweep() {
  sweep_timer_.expires_after(std::chrono::seconds(5));
  sweep_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->stopped_) return;
    auto now = Clock::now();
    for (auto it = self->decisions_.begin(); it != self->decisions_.end();) {
      if (it->second.expires < now && it->second.verdict != Verdict::kHeld) {
        if (it->second.probe) CloseWithReset(*it->second.probe);
        it = self->decisions_.erase(it);
      } else {
        ++it;
      }
    }
    std::erase_if(self->option_droppers_, [now](const auto& e) { return e.second < now; });
    std::erase_if(self->option_drop_suspects_, [now](const auto& e) { return e.second.until < now; });
    std::erase_if(self->unauthenticated_, [now](const auto& e) { return e.second.until < now; });
    std::erase_if(self->asymmetric_, [now](const auto& e) { return e.second < now; });
    std::erase_if(self->learned_, [&](const auto& e) { return now - e.second.at > self->config_.peer_memory; });
    self->Sweep();
  });
}

Interceptor::Interceptor(SessionEnvironment& env, const channel::SecureContext* security, asio::io_context& loop,
                         std::function<asio::io_context&()> session_loop)
    : impl_(std::make_shared<Impl>(env, security, loop, std::move(session_loop))) {}

Interceptor::~Interceptor() = default;

bool Interceptor::Start(std::string* error) { return impl_->Start(error); }
void Interceptor::Stop() { impl_->Stop(); }
tcp::endpoint Interceptor::listen_endpoint() const { return impl_->listen_endpoint(); }

}  // namespace wanopt::intercept
