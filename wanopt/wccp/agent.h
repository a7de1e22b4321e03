// The WCCPv2 agent: this box's UDP port 2048 and one ServiceGroup per configured
// service group, driven by a timer on one event loop. It sends what the groups say
// when they say it; all protocol decisions are in service_group.h.
//
// Threading: the agent runs on the io_context it is given; status() may be called
// from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "wanopt/config/config.h"
#include "wanopt/wccp/gre_receiver.h"
#include "wanopt/wccp/service_group.h"

namespace wanopt::wccp {

class Agent {
 public:
  Agent(boost::asio::io_context& io, const WccpConfig& config);
  ~Agent();
  // Binds address:2048. False with *error when it cannot.
  bool Start(std::string* error);
  // Stops sending Here_I_Am: the routers drop this box after their timeout and its
  // buckets move to the other caches. Idempotent.
  void Stop();

  std::vector<ServiceGroup::Status> status() const;
  // The GRE receiver, when GRE forwarding is configured and running; else null.
  const GreReceiver* gre() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace wanopt::wccp
