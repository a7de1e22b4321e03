// Interception's life: the transparent listener and the netlink queue opened and
// closed, what the box remembers swept, and the public Interceptor.
#include "wanopt/intercept/interceptor_impl.h"

#include "util/socket_options.h"

namespace wanopt::intercept {

namespace {

// A transparent listener for one family (IPv6 only on its own: the IPv4 one has the
// IPv4 connections, with their addresses as they are rather than v4-mapped).
error_code OpenTransparentListener(tcp::acceptor& acceptor, tcp protocol, uint16_t port) {
  error_code ec;
  acceptor.open(protocol, ec);
  int fd = ec ? -1 : acceptor.native_handle();
  bool v6 = protocol == tcp::v6();
  if (!ec && v6) acceptor.set_option(asio::ip::v6_only(true), ec);
  if (int error = ec ? 0 : SetTransparent(fd, v6)) ec = error_code(error, boost::system::system_category());
  if (int error = ec ? 0 : SetSocketMark(fd, kMarkListener)) ec = error_code(error, boost::system::system_category());
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(tcp::endpoint(protocol, port), ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    acceptor.close(ignored);
  }
  return ec;
}

}  // namespace

bool Interceptor::Impl::Start(std::string* error) {
  if (error_code ec = OpenTransparentListener(acceptor_, tcp::v4(), config_.listen_port)) {
    *error = "intercept: transparent listener on port " + std::to_string(config_.listen_port) + ": " +
             ec.message() + " (needs root / CAP_NET_ADMIN)";
    return false;
  }
  // A host without IPv6 intercepts IPv4 only; any other failure is the operator's to see.
  std::string families = "IPv4 and IPv6";
  if (error_code ec = OpenTransparentListener(acceptor6_, tcp::v6(), config_.listen_port)) {
    if (ec != asio::error::address_family_not_supported) {
      *error = "intercept: IPv6 transparent listener on port " + std::to_string(config_.listen_port) + ": " +
               ec.message() + " (needs root / CAP_NET_ADMIN)";
      Stop();
      return false;
    }
    families = "IPv4 only (no IPv6 on this host)";
  }
  auto self = shared_from_this();
  queue_ = NetlinkQueue::Open(loop_, config_.queue, [self](const QueuedPacket& p) { self->OnPacket(p); }, error);
  if (!queue_) {
    *error = "intercept: " + *error;
    Stop();
    return false;
  }
  WANOPT_LOG(kInfo, "intercept") << env_.config.name << ": intercepting " << families << ": netlink queue "
                                 << config_.queue << ", transparent listener on port " << config_.listen_port << ", "
                                 << config_.rules.size() << " in-path rule(s), device id "
                                 << channel::FormatDeviceId(env_.config.device_id)
                                 << (config_.answer ? ", answers probes" : "");
  Accept(acceptor_);
  if (acceptor6_.is_open()) Accept(acceptor6_);
  Sweep();
  return true;
}

void Interceptor::Impl::Stop() {
  stopped_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  acceptor6_.close(ignored);
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
    self->option_droppers_.Expire(now);
    std::erase_if(self->unauthenticated_, [now](const auto& e) { return e.second.until < now; });
    self->asymmetric_.Expire(now);
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
