#include "wanopt/daemon/daemon.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>

#include "datastore/chunk_store.h"
#include "wanopt/channel/secure_channel.h"
#include "wanopt/dre/peer_table.h"
#include "wanopt/intercept/interceptor.h"
#include "wanopt/session/secure_start.h"
#include "wanopt/status/status_server.h"
#include "wanopt/wccp/agent.h"
#include "util/accept_backoff.h"
#include "util/bytes.h"
#include "util/close_with_reset.h"
#include "util/endpoint.h"
#include "util/log.h"
#include "util/log_rate_limit.h"

namespace wanopt {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// glibc keeps what connections freed (zstd contexts, buffers) in its arenas, where it
// counts as the daemon's memory until the arena's top is free: after a busy hour,
// gigabytes that no connection uses. Handing it back every 10 s is cheap on a small
// heap; on a large one a trim walks every free block under the arenas' locks (tens
// of ms at a GiB), so the next one waits 1,000 times as long as this one took: at
// most a thousandth of loop 0's time.
constexpr auto kTrimInterval = std::chrono::seconds(10);
constexpr int kTrimDutyDivisor = 1000;

// Blocks this large come straight from the kernel and go back to it when freed: a
// busy connection's zstd context (1 to 3 MiB) and other large buffers. glibc's
// default threshold starts at 128 KiB but rises to the largest block freed, so after
// the first context freed every later one was carved from a session thread's arena,
// where the small blocks allocated around it kept its pages: in a soak the arenas
// held 90-100 MiB freed (mallinfo2) beside 60-75 MiB in use, and the resident size
// grew with it (+16% and +33% in 2.5 minutes); with the threshold fixed, 27-34 MiB
// freed. Setting it also stops glibc raising it again. Process-wide: set by each
// box's Start, to the same value (`wanopt lab` runs two).
constexpr int kMmapThreshold = 256 * 1024;

void TrimMemoryPeriodically(std::shared_ptr<asio::steady_timer> timer, std::chrono::steady_clock::duration wait) {
  timer->expires_after(wait);
  timer->async_wait([timer](error_code ec) {
    if (ec) return;
    auto start = std::chrono::steady_clock::now();
    malloc_trim(0);
    auto took = std::chrono::steady_clock::now() - start;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
    if (ms >= 20) WANOPT_LOG(kDebug, "daemon") << "returning freed memory took " << ms << " ms";
    TrimMemoryPeriodically(timer, std::max<std::chrono::steady_clock::duration>(kTrimInterval, took * kTrimDutyDivisor));
  });
}

// Peering files unused for dre::kIdlePeeringAge go, at start and then once a day
// (peer_table.h says why).
void ForgetIdlePeeringsDaily(std::shared_ptr<asio::steady_timer> timer, dre::PeerTable* peers) {
  timer->expires_after(std::chrono::hours(24));
  timer->async_wait([timer, peers](error_code ec) {
    if (ec) return;
    peers->ForgetIdleFiles();
    ForgetIdlePeeringsDaily(timer, peers);
  });
}

// Inner channels refused (failed authentication): one line each would let anyone who
// can connect write the journal full.
log::RateLimit g_refused_log(5);
}  // namespace

struct Daemon::Listener {
  enum class Kind { kDatacenter, kForward } kind;
  const ForwardRule* rule = nullptr;  // kForward
  std::string name;
  tcp::acceptor acceptor;
  AcceptBackoff backoff;
  Listener(Kind k, const ForwardRule* r, std::string n, asio::io_context& loop)
      : kind(k), rule(r), name(std::move(n)), acceptor(loop) {}
};

Daemon::Daemon(Config config)
    : config_(std::move(config)), table_(config_.status ? config_.status->closed_window : std::chrono::seconds(300)) {
  env_.lz_budget = &lz_budget_;
}

std::string Daemon::status_url() const { return status_ ? status_->url() : std::string(); }

Daemon::~Daemon() { Stop(); }

asio::io_context& Daemon::NextLoop() {
  asio::io_context& loop = *loops_[next_loop_];
  next_loop_ = (next_loop_ + 1) % loops_.size();
  return loop;
}

namespace {

// The outermost directory of `path` that does not exist yet ("" when `path` exists):
// what opening a datastore there creates, and what a failed start removes again.
std::filesystem::path FirstMissing(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::path missing;
  for (std::filesystem::path p = std::filesystem::absolute(path, ec); !p.empty(); p = p.parent_path()) {
    if (std::filesystem::exists(p, ec) || ec) break;
    missing = p;
    if (p == p.parent_path()) break;
  }
  return missing;
}

}  // namespace

bool Daemon::Start(std::string* error) {
  started_at_ = std::chrono::system_clock::now();  // "up" counts from here, not from construction
  env_.configured_capability = config_.dre.capability();
  unsigned threads = config_.threads ? config_.threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < threads; ++i) loops_.push_back(std::make_unique<asio::io_context>(1));

  auto bind = [&](Listener& l, const tcp::endpoint& endpoint) {
    error_code ec;
    l.acceptor.open(endpoint.protocol(), ec);
    if (!ec) l.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) l.acceptor.bind(endpoint, ec);
    if (!ec) l.acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      *error = l.name + ": cannot listen on " + FormatEndpoint(endpoint) + ": " + ec.message();
      return false;
    }
    return true;
  };

  // Listeners first, before anything is written to disk: an address in use fails the
  // start with nothing created. They live on the first loop; the sessions they accept
  // are spread over all.
  if (config_.datacenter) {
    auto l = std::make_unique<Listener>(Listener::Kind::kDatacenter, nullptr, "datacenter", *loops_[0]);
    if (!bind(*l, config_.datacenter->listen)) return false;
    listeners_.push_back(std::move(l));
  }
  for (const ForwardRule& rule : config_.forwards) {
    auto l = std::make_unique<Listener>(Listener::Kind::kForward, &rule, rule.name, *loops_[0]);
    if (!bind(*l, rule.listen)) {
      listeners_.clear();
      return false;
    }
    listeners_.push_back(std::move(l));
  }

  // What a failed start leaves behind: nothing (a datastore directory it created
  // is removed again).
  std::filesystem::path created_store;
  auto fail = [&] {
    listeners_.clear();
    env_.store = nullptr;
    env_.peers = nullptr;
    peers_.reset();
    store_.reset();
    if (!created_store.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(created_store, ignored);
    }
    return false;
  };

  if (!config_.dre.datastore.empty()) {
    created_store = FirstMissing(config_.dre.datastore);
    datastore::ChunkStoreOptions options;
    options.path = config_.dre.datastore;
    options.max_bytes = config_.dre.max_bytes;
    options.sync_writes = config_.dre.sync_writes;
    options.cache_bytes = config_.dre.read_cache_bytes;
    bool misconfigured = false;
    store_ = datastore::ChunkStore::Open(options, error, &misconfigured);
    if (!store_ && misconfigured) return fail();
    if (store_) {
      peers_ = std::make_unique<dre::PeerTable>(config_.dre.datastore + "/peers", store_.get());
      peers_->ForgetIdleFiles();
    } else {
      // A full, read-only or failing disk must not keep the box from relaying: it
      // runs with a store that holds nothing, so DRE is off for its connections
      // (SessionEnvironment::capability()) and a peer's DRE stream still decodes, and says so here
      // and in its connections' notes.
      WANOPT_LOG(kWarn, "daemon") << config_.name << ": " << *error << ": running without DRE (LZ only)";
      store_ = datastore::ChunkStore::Unavailable(*error);
      error->clear();
      created_store.clear();  // a store that could not be opened is not removed either
      peers_ = std::make_unique<dre::PeerTable>("");
    }
    // A store's ids depend on its secret: the id of a fixed string names the store's
    // contents. A wiped store draws a new secret, so its peers learn it knows nothing.
    static constexpr std::string_view kInstanceProbe = "wanopt store instance";
    auto id = store_->IdOf({reinterpret_cast<const uint8_t*>(kInstanceProbe.data()), kInstanceProbe.size()});
    env_.store = store_.get();
    env_.peers = peers_.get();
    env_.store_instance = bytes::GetBe64(id.data()) | 1;  // never 0, which means "no store"
  } else {
    peers_ = std::make_unique<dre::PeerTable>("");
    env_.peers = peers_.get();
  }

  for (auto& l : listeners_) {
    error_code ec;
    auto at = l->acceptor.local_endpoint(ec);
    if (l->kind == Listener::Kind::kDatacenter) {
      WANOPT_LOG(kInfo, "daemon") << config_.name << ": datacenter listening on " << at
                                  << " for inner channels (device id "
                                  << channel::FormatDeviceId(config_.device_id) << ")";
      if (config_.peering.mode == channel::PeeringSecurity::Mode::kNone) {
        WANOPT_LOG(kWarn, "daemon") << config_.name << ": no [peering]: inner channels are neither authenticated "
                                    << "nor encrypted; accepted from loopback"
                                    << (config_.datacenter->plaintext_peers.empty() ? " only" : " and [datacenter] plaintext_peers");
      }
    } else {
      WANOPT_LOG(kInfo, "daemon") << config_.name << ": " << l->name << " listening on " << at
                                  << " -> " << l->rule->destination << " via peer " << l->rule->peer;
    }
    Accept(*l);
  }
  if (config_.peering.mode != channel::PeeringSecurity::Mode::kNone) {
    security_ = channel::SecureContext::Create(config_.peering, error);
    if (!security_) {
      *error = "peering: " + *error;
      return fail();
    }
  }
  env_.security = security_.get();
  for (const auto& info : protocols::Registry::Global().modules()) {
    if (!info.create_box) continue;
    auto it = config_.module_settings.find(info.name);
    auto box = info.create_box(it == config_.module_settings.end() ? protocols::ModuleSettings{} : it->second, error);
    if (!box) {
      *error = "modules." + info.name + ": " + *error;
      return fail();
    }
    box_modules_.Add(info.name, std::move(box));
  }
  env_.box_modules = &box_modules_;
  if (config_.intercept) {
    interceptor_ = std::make_unique<intercept::Interceptor>(env_, security_.get(), *loops_[0],
                                                            [this]() -> asio::io_context& { return NextLoop(); });
    if (!interceptor_->Start(error)) {
      interceptor_.reset();
      return fail();
    }
  }
  if (config_.wccp) {
    wccp_ = std::make_unique<wccp::Agent>(*loops_[0], *config_.wccp);
    if (!wccp_->Start(error)) {
      wccp_.reset();
      if (interceptor_) interceptor_->Stop();
      interceptor_.reset();
      return fail();
    }
  }
  if (config_.status) {
    status_ = std::make_unique<StatusServer>(std::vector<const Daemon*>{this}, config_.status->listen, config_.status->token);
    if (!status_->Start(error)) {
      status_.reset();
      if (interceptor_) interceptor_->Stop();  // no loop runs yet: unbind the queue now
      interceptor_.reset();
      if (wccp_) wccp_->Stop();
      wccp_.reset();
      return fail();
    }
  }
  running_ = true;
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  // Stopped with the loops: the timer goes with its pending wait.
  TrimMemoryPeriodically(std::make_shared<asio::steady_timer>(*loops_[0]), kTrimInterval);
  ForgetIdlePeeringsDaily(std::make_shared<asio::steady_timer>(*loops_[0]), peers_.get());
  for (auto& loop : loops_) {
    threads_.emplace_back([&loop] {
      auto work = asio::make_work_guard(*loop);
      loop->run();
    });
  }
  return true;
}

void Daemon::Accept(Listener& listener) {
  listener.acceptor.async_accept(NextLoop(), [this, &listener](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !listener.acceptor.is_open()) return;
    if (ec) {
      // Out of descriptors or memory: keep serving the connections we have.
      auto retry = listener.backoff.Failed();
      if (retry.log) {
        WANOPT_LOG(kWarn, "daemon") << listener.name << ": accept: " << ec.message() << "; retrying in "
                                    << retry.delay.count() << " ms" << log::Suppressed(retry.suppressed);
      }
      auto timer = std::make_shared<asio::steady_timer>(listener.acceptor.get_executor(), retry.delay);
      timer->async_wait([this, &listener, timer](error_code) { Accept(listener); });
      return;
    }
    listener.backoff.Succeeded();
    // Hand the socket to its own loop's thread before touching it there.
    auto executor = socket.get_executor();
    asio::post(executor, [this, &listener, s = std::make_shared<tcp::socket>(std::move(socket))]() mutable {
      if (listener.kind == Listener::Kind::kDatacenter) {
        if (!security_) {
          error_code ec;
          tcp::endpoint from = s->remote_endpoint(ec);
          if (ec || !config_.datacenter->AllowsPlaintextFrom(from.address())) {
            // Not authenticated and not in plaintext_peers: never a relay for it.
            uint64_t suppressed = 0;
            if (g_refused_log.Allow(config_.name + ": plaintext refused", &suppressed)) {
              WANOPT_LOG(kWarn, "datacenter") << "plaintext inner channel from " << from
                                              << " refused: not in [datacenter] plaintext_peers"
                                              << log::Suppressed(suppressed);
            }
            ++counters_.refused_peers;
            CloseWithReset(*s);
            return;
          }
          DatacenterPlan plan;
          plan.peer_endpoint = from;
          plan.notes.push_back("inner channel unencrypted (no [peering] configured)");
          TuneInnerSocket(*s, config_);
          StartDatacenterSession(env_, std::move(*s), std::move(plan));
          return;
        }
        error_code ec;
        DatacenterPlan plan;
        plan.peer_endpoint = s->remote_endpoint(ec);
        std::string peer = FormatEndpoint(*plan.peer_endpoint);
        StartSecuredDatacenterSession(env_, std::move(*s), std::move(plan), peer);
      } else {
        const ForwardRule& rule = *listener.rule;
        BranchPlan plan{rule.destination, rule.peer, rule.policy, rule.peer_down, rule.modules};
        StartBranchSession(env_, std::move(*s), std::move(plan));
      }
    });
    Accept(listener);
  });
}

tcp::endpoint Daemon::datacenter_endpoint() const {
  for (const auto& l : listeners_) {
    if (l->kind == Listener::Kind::kDatacenter) return l->acceptor.local_endpoint();
  }
  return {};
}

tcp::endpoint Daemon::forward_endpoint(size_t rule) const {
  for (const auto& l : listeners_) {
    if (l->kind == Listener::Kind::kForward && l->rule == &config_.forwards[rule]) {
      return l->acceptor.local_endpoint();
    }
  }
  return {};
}

void Daemon::Stop() {
  if (!running_) return;
  running_ = false;
  if (status_) status_->Stop();
  // Close the acceptors on their own thread, then stop every loop; pending
  // operations are destroyed with the loops, which closes their sockets.
  std::promise<void> closed;
  asio::post(*loops_[0], [this, &closed] {
    for (auto& l : listeners_) {
      error_code ignored;
      l->acceptor.close(ignored);
    }
    if (interceptor_) interceptor_->Stop();
    if (wccp_) wccp_->Stop();  // the routers move this box's buckets after their timeout
    closed.set_value();
  });
  closed.get_future().wait();
  for (auto& loop : loops_) loop->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  listeners_.clear();
  interceptor_.reset();
  wccp_.reset();
  loops_.clear();
  // Every session is gone: the peer state and the store can close.
  env_.peers = nullptr;
  env_.store = nullptr;
  peers_.reset();
  store_.reset();
}

}  // namespace wanopt
