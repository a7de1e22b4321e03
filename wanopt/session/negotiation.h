// The inner channel's handshake decisions as pure functions: what a datacenter
// answers to a hello, and what a branch makes of the answer. No sockets, no clocks,
// no shared state: the session (session.cc) does the I/O around them, so that every
// rule of the negotiation can be tested without a connection.
//
// The rules themselves (policies, module slots, statuses) are the spec's:
// wanopt/docs/inner-channel.md, "hello payload" and "hello-ack payload".
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "wanopt/channel/hello.h"
#include "wanopt/channel/policy.h"

namespace wanopt {

// What the accepting (datacenter) box brings to a negotiation.
struct AcceptorFacts {
  channel::DeviceId device_id{};
  Policy configured = Policy::kFull;  // the box's configured policy: its offer
  Policy capability = Policy::kFull;  // what it can apply now (no DRE without a healthy store)
  bool has_store = false;             // a chunk store is configured (healthy or not)
  std::string store_trouble;          // why the store cannot be used, "" when it can
  uint64_t store_instance = 0;
  std::vector<std::string> modules;   // the modules this box runs for its peers
  // Whether this box serves a destination ([datacenter] serves); empty: every one.
  std::function<bool(const boost::asio::ip::address&)> serves;
};

struct HelloAnswer {
  // Status ok, or rejected (the destination is not served). `acceptor` is left
  // unset: only the session knows where the box is.
  channel::HelloAck ack;
  std::vector<std::string> runnable;  // module slot i: its name, or "" (not run here)
  std::vector<std::string> notes;     // for the connection's record (names from the hello unescaped)
  std::string rejection;              // status rejected: the note that says why
};

// The datacenter's answer to a well-formed hello of this protocol version.
HelloAnswer AnswerHello(const channel::Hello& hello, const AcceptorFacts& facts);

// What a branch makes of a well-formed hello-ack.
struct AckVerdict {
  enum class Outcome {
    kOptimize,        // relay through the peer with ack.applied
    kServerFailed,    // the peer could not reach (or does not serve) the server: reset the client
    kProtocolError,   // the peer broke the negotiation: `error` says how
  };
  Outcome outcome = Outcome::kOptimize;
  std::string error;
  std::vector<std::string> notes;  // for the connection's record
};
// `offered_dre`: the hello carried a DRE section.
AckVerdict CheckHelloAck(const channel::HelloAck& ack, bool offered_dre);

}  // namespace wanopt
