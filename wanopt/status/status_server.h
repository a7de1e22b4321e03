// The status server: what a network engineer opens to see whether the boxes are
// doing their job. Read-only HTTP (Boost.Beast) on a management address:
//
//   /                  the page: totals, LAN vs WAN chart, applications, peers,
//                      datastore, and the connections table (filter, sort); a plain
//                      server-rendered page that refreshes itself when JavaScript is on
//   /api/connections   JSON ({"connections":[...]}); ?format=text for a terminal table
//   /api/summary       JSON totals, per application, datastore, the process's memory,
//                      history; ?format=text
//   /api/peers         JSON peers; ?format=text
//   /api/datastore     JSON each box's datastore; ?format=text
//   /api/wccp          JSON WCCP service groups; ?format=text
//   /api/modules       JSON the protocol modules' box-wide state (gauges, tables);
//                      ?format=text
//   /metrics           Prometheus text format
//
// Every string that came off the network is escaped for where it goes (HTML, JSON,
// Prometheus labels). When a token is configured every request must carry it
// (`Authorization: Bearer TOKEN` or `?token=TOKEN`).
//
// It reports on one or more daemons ("boxes"): one in production, the branch and
// the datacenter together in `wanopt lab`. It runs its own thread, away from the
// data path. The daemons must outlive the server.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

namespace wanopt {

class Daemon;

class StatusServer {
 public:
  StatusServer(std::vector<const Daemon*> boxes, boost::asio::ip::tcp::endpoint listen, std::string token);
  ~StatusServer();  // Stop()s
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

  // Binds and starts serving. On failure returns false with *error set.
  bool Start(std::string* error);
  void Stop();
  // "http://127.0.0.1:PORT/" (with ?token=... when a token is set).
  std::string url() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wanopt
