#include "wanopt/status/status_server.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "wanopt/daemon/daemon.h"
#include "wanopt/status/http_connection.h"
#include "util/accept_backoff.h"
#include "wanopt/status/model.h"
#include "wanopt/status/render.h"
#include "util/log.h"
#include "util/log_rate_limit.h"

namespace wanopt {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
using boost::system::error_code;
using status::Request;
using status::Response;

namespace {

// A status page is a handful of readers: more connections than this are an attack
// or a bug, and each one costs a descriptor the data plane may need.
constexpr size_t kMaxConnections = 64;  // the refusal's log line says 64 too
// Descriptors the status server never takes: the data plane's, for its listeners'
// next connections and their server and inner sockets (a quarter of the limit when
// that is less, so that a box with a small limit still has a status page).
constexpr rlim_t kDescriptorReserve = 64;
// Accept failures (out of descriptors, memory) are retried after this, doubled on
// each failure in a row up to the maximum: no spinning on a listener that stays ready.

// True when the descriptor `fd` leaves fewer than the reserve free. accept() returns
// the lowest free descriptor, so every one below `fd` is in use.
bool IntoReserve(int fd) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return false;
  rlim_t used_at_least = static_cast<rlim_t>(fd) + 1;
  return used_at_least + std::min(kDescriptorReserve, limit.rlim_cur / 4) > limit.rlim_cur;
}

}  // namespace

struct StatusServer::Impl {
  std::vector<const Daemon*> boxes;
  tcp::endpoint listen;
  std::string token;
  // Before the loop: connections still pending when the loop is destroyed count
  // themselves out on the way.
  size_t open_connections = 0;
  status::HttpHandlers handlers;
  log::RateLimit log_limit{5};
  asio::io_context loop{1};
  tcp::acceptor acceptor{loop};
  asio::steady_timer sampler{loop};
  asio::steady_timer accept_retry{loop};
  AcceptBackoff accept_backoff;
  int spare_fd = -1;  // /dev/null, given up to accept-and-close when out of descriptors
  std::thread thread;
  std::mutex history_mu;
  std::deque<status::HistorySample> history;  // every 5 s, the last hour
  bool running = false;

  ~Impl() {
    if (spare_fd >= 0) ::close(spare_fd);
  }

  void Accept() {
    acceptor.async_accept([this](error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (ec) {
        AcceptFailed(ec);
        return;
      }
      accept_backoff.Succeeded();
      Admit(std::move(socket));
      Accept();
    });
  }

  // Out of descriptors: the connection stays in the listen queue and the listener
  // stays ready, so retrying at once would spin. Take the waiting connection with the
  // spare descriptor and close it (the client sees a close, not a hang), then retry
  // after a delay that grows while the failures last.
  void AcceptFailed(const error_code& ec) {
    bool out_of_descriptors = ec == asio::error::no_descriptors || ec.value() == ENFILE;
    if (out_of_descriptors && spare_fd >= 0) {
      ::close(spare_fd);
      int fd = ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) ::close(fd);
      spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    auto retry = accept_backoff.Failed();
    if (retry.log) {
      WANOPT_LOG(kWarn, "status") << "accept: " << ec.message()
                                  << (out_of_descriptors ? ": connection closed at once" : "") << "; retrying in "
                                  << retry.delay.count() << " ms" << log::Suppressed(retry.suppressed);
    }
    accept_retry.expires_after(retry.delay);
    accept_retry.async_wait([this](error_code ec) {
      if (!ec) Accept();
    });
  }

  // A new connection is served only within the bounds; otherwise it is closed at once.
  void Admit(tcp::socket socket) {
    const char* refused = nullptr;
    if (IntoReserve(socket.native_handle())) refused = "descriptors are short (the rest are kept for the data plane)";
    else if (open_connections >= kMaxConnections) refused = "too many status connections open (at most 64)";
    if (refused) {
      uint64_t suppressed = 0;
      if (log_limit.Allow(refused, &suppressed)) {
        error_code ignored;
        WANOPT_LOG(kWarn, "status") << "connection from " << socket.remote_endpoint(ignored) << " closed: " << refused
                                    << log::Suppressed(suppressed);
      }
      return;  // the socket closes here
    }
    ++open_connections;
    std::make_shared<status::HttpConnection>(std::move(socket), handlers)->Start();
  }

  void Sample() {
    status::HistorySample s{status::Clock::now(), 0, 0};
    for (const Daemon* b : boxes) {
      s.lan_bytes += b->counters().lan_in + b->counters().lan_out;
      s.wan_bytes += b->counters().wan_in + b->counters().wan_out;
    }
    {
      std::lock_guard lock(history_mu);
      history.push_back(s);
      while (history.size() > 720) history.pop_front();
    }
    sampler.expires_after(std::chrono::seconds(5));
    sampler.async_wait([this](error_code ec) {
      if (!ec) Sample();
    });
  }

  status::Model Snapshot() {
    std::lock_guard lock(history_mu);
    return status::Read(boxes, history);
  }

  bool Authorized(const Request& req, const std::map<std::string, std::string>& query) const {
    if (token.empty()) return true;
    auto it = query.find("token");
    if (it != query.end() && it->second == token) return true;
    auto auth = req.find(http::field::authorization);
    return auth != req.end() && auth->value() == "Bearer " + token;
  }

  static Response Reply(const Request& req, http::status status, const char* type, std::string body) {
    Response res{status, req.version()};
    res.set(http::field::server, "wanopt");
    res.set(http::field::content_type, type);
    res.set(http::field::cache_control, "no-store");
    // The page is self-contained: no script, style or image from anywhere else.
    res.set("Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'");
    res.set("X-Content-Type-Options", "nosniff");
    res.body() = std::move(body);
    return res;
  }

  // Method and token, from the header alone: nothing more is read from a request
  // that will be refused.
  std::optional<Response> Screen(const Request& req, const tcp::endpoint& from) {
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      auto res = Reply(req, http::status::method_not_allowed, "text/plain", "read-only: GET only\n");
      res.set(http::field::allow, "GET, HEAD");
      return res;
    }
    if (!Authorized(req, status::ParseQuery(std::string(req.target())))) {
      uint64_t suppressed = 0;
      if (log_limit.Allow("unauthorized", &suppressed)) {
        WANOPT_LOG(kWarn, "status") << "request from " << from << " without the token: refused (401)"
                                    << log::Suppressed(suppressed);
      }
      auto res = Reply(req, http::status::unauthorized, "text/plain", "this status server needs its access token\n");
      res.set(http::field::www_authenticate, "Bearer");
      return res;
    }
    return std::nullopt;
  }

  Response Handle(const Request& req) {
    std::string target(req.target());
    auto query = status::ParseQuery(target);
    std::string path = target.substr(0, target.find('?'));
    auto reply = [&](http::status s, const char* type, std::string body) { return Reply(req, s, type, std::move(body)); };
    bool text = query.count("format") && query.at("format") == "text";
    status::View view = status::ViewFrom(query);
    const char* kHtml = "text/html; charset=utf-8";
    const char* kText = "text/plain; charset=utf-8";
    const char* kJson = "application/json";
    if (path == "/") return reply(http::status::ok, kHtml, status::Page(Snapshot(), view, token));
    if (path == "/live") return reply(http::status::ok, kHtml, status::Live(Snapshot(), view, token));
    if (path == "/api/connections") {
      status::Model m = Snapshot();
      return text ? reply(http::status::ok, kText, status::ConnectionsText(m, view))
                  : reply(http::status::ok, kJson, status::ConnectionsJson(m, view));
    }
    if (path == "/api/peers") {
      status::Model m = Snapshot();
      return text ? reply(http::status::ok, kText, status::PeersText(m)) : reply(http::status::ok, kJson, status::PeersJson(m));
    }
    if (path == "/api/summary") {
      status::Model m = Snapshot();
      return text ? reply(http::status::ok, kText, status::SummaryText(m))
                  : reply(http::status::ok, kJson, status::SummaryJson(m));
    }
    if (path == "/api/datastore") {
      status::Model m = Snapshot();
      return text ? reply(http::status::ok, kText, status::StoresText(m))
                  : reply(http::status::ok, kJson, status::DatastoreJson(m));
    }
    if (path == "/api/wccp") {
      status::Model m = Snapshot();
      return text ? reply(http::status::ok, kText, status::WccpText(m)) : reply(http::status::ok, kJson, status::WccpJson(m));
    }
    if (path == "/api/modules") {
      auto modules = status::ModulesOf(boxes);  // no snapshot of the connections needed
      return text ? reply(http::status::ok, kText, status::ModulesText(modules))
                  : reply(http::status::ok, kJson, status::ModulesJson(modules));
    }
    if (path == "/metrics") {
      status::Model m = Snapshot();
      return reply(http::status::ok, "text/plain; version=0.0.4", status::Metrics(m) + status::WccpMetrics(m));
    }
    return reply(http::status::not_found, "text/plain", "not found\n");
  }
};

StatusServer::StatusServer(std::vector<const Daemon*> boxes, tcp::endpoint listen, std::string token)
    : impl_(std::make_unique<Impl>()) {
  impl_->boxes = std::move(boxes);
  impl_->listen = listen;
  impl_->token = std::move(token);
  Impl* impl = impl_.get();
  impl_->handlers.screen = [impl](const Request& req, const tcp::endpoint& from) { return impl->Screen(req, from); };
  impl_->handlers.handle = [impl](const Request& req) { return impl->Handle(req); };
  impl_->handlers.closed = [impl] { --impl->open_connections; };
}

StatusServer::~StatusServer() { Stop(); }

bool StatusServer::Start(std::string* error) {
  error_code ec;
  impl_->acceptor.open(impl_->listen.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(impl_->listen, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "status: cannot listen on " + status::FormatEndpoint(impl_->listen) + ": " + ec.message();
    return false;
  }
  impl_->spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  impl_->Sample();
  impl_->Accept();
  impl_->running = true;
  impl_->thread = std::thread([this] { impl_->loop.run(); });
  // The URL without its token: logs are read by more people than the page is.
  std::string at = url();
  at = at.substr(0, at.find('?'));
  WANOPT_LOG(kInfo, "status") << "status page on " << at << (impl_->token.empty() ? "" : " (token required)");
  return true;
}

void StatusServer::Stop() {
  if (!impl_->running) return;
  impl_->running = false;
  impl_->loop.stop();
  impl_->thread.join();
}

std::string StatusServer::url() const {
  error_code ec;
  tcp::endpoint at = impl_->acceptor.local_endpoint(ec);
  if (at.address().is_unspecified()) at.address(asio::ip::address_v4::loopback());
  return "http://" + status::FormatEndpoint(at) + "/" +
         (impl_->token.empty() ? "" : "?token=" + UrlEncode(impl_->token));
}

}  // namespace wanopt
