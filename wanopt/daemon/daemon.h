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

#include "wanopt/config/config.h"
#include "wanopt/session/counters.h"
#include "wanopt/session/session.h"

namespace wanopt {

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
  // The address a listener actually bound (port 0 in the config gets a free port).
  boost::asio::ip::tcp::endpoint datacenter_endpoint() const;
  boost::asio::ip::tcp::endpoint forward_endpoint(size_t rule) const;

 private:
  struct Listener;
  boost::asio::io_context& NextLoop();
  void Accept(Listener& listener);

  Config config_;
  Counters counters_;
  std::atomic<uint64_t> next_session_id_{0};
  SessionEnvironment env_{config_, counters_, next_session_id_};
  std::vector<std::unique_ptr<boost::asio::io_context>> loops_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  size_t next_loop_ = 0;
  bool running_ = false;
};

}  // namespace wanopt
