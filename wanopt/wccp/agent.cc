#include "wanopt/wccp/agent.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "util/log.h"

namespace wanopt::wccp {

namespace asio = boost::asio;
using asio::ip::udp;

struct Agent::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io, const WccpConfig& config) : config(config), socket(io), timer(io) {
    if (config.forwarding & capability::kGre) gre = std::make_unique<GreReceiver>(io, config.tun, config.address);
    for (const auto& service : config.services) {
      ServiceGroupSettings s;
      s.service = service;
      s.routers = config.routers;
      s.password = config.password;
      s.forwarding = config.forwarding;
      s.return_method = config.return_method;
      s.assignment = config.assignment;
      s.weight = config.weight;
      s.here_i_am_interval = config.here_i_am_interval;
      groups.push_back(std::make_unique<ServiceGroup>(s, config.address));
    }
  }

  void Send(const std::vector<ServiceGroup::Datagram>& out) {
    for (const auto& d : out) {
      if (d.bytes.empty()) continue;
      boost::system::error_code ec;
      socket.send_to(asio::buffer(d.bytes), udp::endpoint(asio::ip::address_v4(d.to), kUdpPort), 0, ec);
      if (ec) {
        WANOPT_LOG(kWarn, "wccp") << "to router " << asio::ip::address_v4(d.to) << ": " << ec.message();
      }
    }
  }

  // What the groups negotiated decides how declined packets go back.
  void UpdateReturn() {
    if (!gre) return;
    uint32_t router = 0;
    for (auto& g : groups) {
      if (!router) router = g->gre_return_router();
    }
    gre->set_return_router(router);
  }

  void Tick() {
    if (stopped) return;
    {
      std::lock_guard lock(mu);
      for (auto& g : groups) Send(g->Tick(ServiceGroup::Clock::now()));
      UpdateReturn();
    }
    timer.expires_after(std::chrono::milliseconds(200));
    timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->Tick();
    });
  }

  void Receive() {
    socket.async_receive_from(asio::buffer(buffer), from, [self = shared_from_this()](boost::system::error_code ec, size_t n) {
      if (ec == asio::error::operation_aborted || self->stopped) return;
      if (!ec) self->Dispatch(n);
      self->Receive();
    });
  }

  void Dispatch(size_t n) {
    std::span<const uint8_t> bytes(buffer.data(), n);
    uint32_t router = from.address().is_v4() ? from.address().to_v4().to_uint() : 0;
    // By service id; what does not decode goes to the first group, which counts it.
    auto m = Decode(bytes);
    std::lock_guard lock(mu);
    ServiceGroup* target = groups.empty() ? nullptr : groups.front().get();
    if (m && m->service) {
      for (auto& g : groups) {
        if (g->settings().service.id == m->service->id) target = g.get();
      }
    }
    if (target) Send(target->OnDatagram(router, bytes, ServiceGroup::Clock::now()));
    UpdateReturn();
  }

  const WccpConfig config;
  udp::socket socket;
  asio::steady_timer timer;
  udp::endpoint from;
  std::array<uint8_t, 65536> buffer{};
  mutable std::mutex mu;  // the groups: status() reads them from other threads
  std::vector<std::unique_ptr<ServiceGroup>> groups;
  std::unique_ptr<GreReceiver> gre;  // GRE forwarding configured
  bool stopped = false;
};

Agent::Agent(asio::io_context& io, const WccpConfig& config) : impl_(std::make_shared<Impl>(io, config)) {}

Agent::~Agent() { Stop(); }

bool Agent::Start(std::string* error) {
  boost::system::error_code ec;
  udp::endpoint local(asio::ip::address_v4(impl_->config.address), kUdpPort);
  impl_->socket.open(udp::v4(), ec);
  if (!ec) impl_->socket.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->socket.bind(local, ec);
  if (ec) {
    *error = "wccp: cannot bind " + local.address().to_string() + ":2048: " + ec.message();
    impl_->socket.close(ec);
    return false;
  }
  // Before registering: a router may redirect as soon as it has an assignment.
  if (impl_->gre && !impl_->gre->Start(error)) {
    impl_->socket.close(ec);
    return false;
  }
  WANOPT_LOG(kInfo, "wccp") << "registering as " << local.address() << " with " << impl_->config.routers.size()
                            << " router(s), " << impl_->groups.size() << " service group(s)";
  asio::post(impl_->socket.get_executor(), [impl = impl_] {
    impl->Receive();
    impl->Tick();
  });
  return true;
}

void Agent::Stop() {
  auto impl = impl_;
  // At once when called on the agent's loop (the daemon's Stop does), else posted.
  asio::dispatch(impl->socket.get_executor(), [impl] {
    if (impl->stopped) return;
    impl->stopped = true;
    boost::system::error_code ignored;
    impl->timer.cancel();
    impl->socket.close(ignored);
    if (impl->gre) impl->gre->Stop();
  });
}

const GreReceiver* Agent::gre() const { return impl_->gre.get(); }

std::vector<ServiceGroup::Status> Agent::status() const {
  std::lock_guard lock(impl_->mu);
  std::vector<ServiceGroup::Status> out;
  for (const auto& g : impl_->groups) out.push_back(g->status());
  return out;
}

}  // namespace wanopt::wccp
