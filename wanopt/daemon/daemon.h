// The daemon: event loops, listeners, and the sessions they start.
//
// A Daemon runs one event loop per thread (Config::threads, default one per core).
// Each accepted connection is handed to the next loop in turn and stays there for
// its whole life, so a session never needs locking.
//
// `wanopt run` makes one Daemon from the config file; `wanopt lab` and the
// integration tests make several in one process.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "protocols/registry.h"
#include "wanopt/config/config.h"
#include "wanopt/dre/lz_governor.h"
#include "wanopt/session/connection_table.h"
#include "wanopt/session/counters.h"
#include "wanopt/session/session.h"

namespace wanopt {

class StatusServer;
namespace channel {
class SecureContext;
}
namespace intercept {
class Interceptor;
}
namespace wccp {
class Agent;
}

class Daemon {
 public:
  explicit Daemon(Config config);
  ~Daemon();  // Stop()s if running
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Binds every listener and starts the event loops. On failure (address in use,
  // permission) returns false with *error naming the listener; nothing keeps running.
  bool Start(std::string* error);
  // Stops accepting, ends every session, joins the threads. Idempotent.
  void Stop();

  const Config& config() const { return config_; }
  const Counters& counters() const { return counters_; }
  // The protocol modules' box-wide parts (their gauges go to /metrics).
  const protocols::BoxModules& box_modules() const { return box_modules_; }
  // Live and recent connections and peers. Thread-safe; usable on a const Daemon
  // because reading it prunes expired records.
  ConnectionTable& table() const { return table_; }
  SystemTime started_at() const { return started_at_; }
  // The status page URL when [status] is configured and running, else "".
  std::string status_url() const;
  // The chunk store, or null without [dre] datastore.
  datastore::ChunkStore* store() const { return store_.get(); }
  // What the box knows of each peering's chunks, or null before Start.
  const dre::PeerTable* peers() const { return peers_.get(); }
  // The WCCP agent when [wccp] is configured and running, else null.
  const wccp::Agent* wccp() const { return wccp_.get(); }
  // The address a listener actually bound (port 0 in the config gets a free port).
  boost::asio::ip::tcp::endpoint datacenter_endpoint() const;
  boost::asio::ip::tcp::endpoint forward_endpoint(size_t rule) const;

 private:
  struct Listener;
  boost::asio::io_context& NextLoop();
  void Accept(Listener& listener);

  Config config_;
  Counters counters_;
  mutable ConnectionTable table_;
  SystemTime started_at_ = std::chrono::system_clock::now();
  std::atomic<uint64_t> next_session_id_{0};
  std::unique_ptr<datastore::ChunkStore> store_;
  std::unique_ptr<dre::PeerTable> peers_;
  dre::LzMemoryBudget lz_budget_{config_.dre.lz_adaptive_memory_bytes};
  SessionEnvironment env_{config_, counters_, table_, next_session_id_};
  std::unique_ptr<StatusServer> status_;
  std::unique_ptr<channel::SecureContext> security_;      // [peering], or null
  std::unique_ptr<intercept::Interceptor> interceptor_;   // [intercept], or null
  std::unique_ptr<wccp::Agent> wccp_;                     // [wccp], or null
  protocols::BoxModules box_modules_;                     // the modules' box-wide parts
  std::vector<std::unique_ptr<boost::asio::io_context>> loops_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  size_t next_loop_ = 0;
  bool running_ = false;
};

}  // namespace wanopt
