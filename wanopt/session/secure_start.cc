#include "wanopt/session/secure_start.h"

#include <memory>

#include "util/close_with_reset.h"
#include "util/log.h"
#include "util/log_rate_limit.h"

namespace wanopt {
namespace {

// Failed handshakes: anyone who reaches the box can cause them, so one line each
// could write the journal full.
log::RateLimit& FailureLog() {
  static log::RateLimit limit(5);
  return limit;
}

}  // namespace

void SecureInnerChannel(SessionEnvironment& env, boost::asio::ip::tcp::socket inner, ChannelSide side,
                        const std::string& peer, channel::SecureChannelOptions options,
                        std::function<void(SecureOutcome, channel::PlainStream plain)> done) {
  TuneInnerSocket(inner, env.config);
  bool opening = side == ChannelSide::kOpening;
  auto timeout = opening ? env.config.timeouts.peer_connect : env.config.timeouts.handshake;
  if (opening && options.resumption_key.empty()) options.resumption_key = peer;
  channel::StartSecureChannel(
      *env.security, std::move(inner), /*client=*/opening, timeout,
      [&env, opening, peer, done = std::move(done)](channel::SecureChannelResult result, channel::PlainStream plain) {
        SecureOutcome outcome;
        if (!result.ec) {
          outcome.ok = true;
          ++(result.resumed ? env.counters.tls_resumed : env.counters.tls_full);
          outcome.text = "inner channel: TLS 1.3, peer authenticated as '" + result.peer_name + "'" +
                         (result.resumed ? " (session resumed)" : "");
          return done(std::move(outcome), std::move(plain));
        }
        outcome.authentication_failed = result.authentication_failed;
        outcome.text =
            std::string(result.authentication_failed ? "failed authentication (" : "TLS handshake failed (") +
            result.error + ")";
        uint64_t suppressed = 0;
        const char* key = opening ? "opening" : "accepting";
        if (FailureLog().Allow(key, &suppressed)) {
          WANOPT_LOG(kWarn, opening ? "branch" : "datacenter")
              << "inner channel " << (opening ? "to " : "from ") << peer << ": " << outcome.text
              << (opening ? ": no client byte goes to it" : ": closed") << log::Suppressed(suppressed);
        }
        done(std::move(outcome), std::move(plain));
      },
      std::move(options));
}

void StartSecuredDatacenterSession(SessionEnvironment& env, boost::asio::ip::tcp::socket inner, DatacenterPlan plan,
                                   const std::string& peer, std::function<void()> on_failure) {
  auto shared = std::make_shared<DatacenterPlan>(std::move(plan));
  SecureInnerChannel(env, std::move(inner), ChannelSide::kAccepting, peer, {},
                     [&env, shared, on_failure = std::move(on_failure)](SecureOutcome outcome,
                                                                         channel::PlainStream plain) {
                       if (!outcome.ok) {
                         if (shared->server) CloseWithReset(*shared->server);
                         if (on_failure) on_failure();
                         return;
                       }
                       shared->notes.push_back(outcome.text);
                       StartDatacenterSession(env, std::move(plain), std::move(*shared));
                     });
}

}  // namespace wanopt
