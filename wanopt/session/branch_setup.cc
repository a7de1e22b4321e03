// A branch session's set-up: the configured peer (connect, TLS, peer_down), or the
// server directly, and the fall-back to pass-through.
#include "wanopt/session/session_impl.h"

namespace wanopt::session_internal {

void Session::StartBranch(BranchPlan plan) {
  wan_writer_.Start(weak_from_this());
  plan_ = std::move(plan);
  error_code ec;
  info_.client = lan_.remote_endpoint(ec);
  info_.server = plan_.destination;
  record_->SetEndpoints(info_.client, info_.server);
  TuneLanSocket(lan_);
  modules_ = std::make_unique<protocols::ModuleChain>(*this, plan_.modules);
  // Until the peer's HelloAck says otherwise, assume its twins run every module.
  modules_->SetPeerSlots((1u << plan_.modules.size()) - 1);
  for (const auto& note : plan_.notes) record_->AddNote(note);
  if (plan_.connected) {
    // Interception: discovery already opened the WAN side.
    wan_ = std::move(*plan_.connected);
    plan_.connected.reset();
    if (plan_.connected_is_inner) {
      OnPeerConnected({});
    } else {
      PassThroughOverConnected(plan_.pass_through_reason.empty() ? "no peer on the path" : plan_.pass_through_reason);
    }
    return;
  }
  if (plan_.peer) {
    Connect(wan_.tcp(), *plan_.peer, env_.config.timeouts.peer_connect,
            [self = shared_from_this()](error_code ec) { self->OnPeerReached(ec); });
  } else {
    ConnectDirect(plan_.pass_through_reason.empty() ? "no peer for this connection" : plan_.pass_through_reason);
  }
}

// A configured peer answered the TCP connect: secure the channel (with [peering]),
// then the handshake.
void Session::OnPeerReached(error_code ec) {
  if (closed_) return;
  if (ec || !env_.security) {
    if (!ec) {
      TuneInnerSocket(wan_.tcp(), env_.config);
      record_->AddNote("inner channel unencrypted (no [peering] configured)");
    }
    return OnPeerConnected(ec);
  }
  SecureInnerChannel(env_, std::move(wan_.tcp()), ChannelSide::kOpening, "peer " + FormatEndpoint(*plan_.peer), {},
                     [self = shared_from_this()](SecureOutcome outcome, channel::PlainStream plain) {
                       if (self->closed_) return;
                       if (!outcome.ok) {
                         // Like an unreachable peer: this box never sends a client's
                         // bytes to a box it could not authenticate.
                         self->wan_ = channel::PlainStream(self->lan_.get_executor());
                         return self->OnPeerConnected(asio::error::access_denied, outcome.text);
                       }
                       self->record_->AddNote(outcome.text);
                       self->wan_ = std::move(plain);
                       self->OnPeerConnected({});
                     });
}

void Session::OnPeerConnected(error_code ec, const std::string& failure) {
  if (closed_) return;
  if (ec) {
    std::string what = failure.empty() ? "unreachable (" + ec.message() + ")" : failure;
    if (plan_.peer_down == PeerDownAction::kReset) {
      WANOPT_LOG(kWarn, "branch") << "connection " << id_ << " " << FormatEndpoint(info_.client) << " -> "
                                  << FormatEndpoint(info_.server) << ": peer " << FormatEndpoint(*plan_.peer) << " " << what
                                  << ": resetting the client (peer_down = reset)";
      Abort("peer " + FormatEndpoint(*plan_.peer) + " " + what + ": client reset (peer_down = reset)");
      return;
    }
    ConnectDirect("peer " + FormatEndpoint(*plan_.peer) + " " + what);
    return;
  }
  wan_remote_ = *plan_.peer;
  record_->SetPeer(plan_.peer_id, FormatEndpoint(wan_remote_));
  SetFramed(true);
  awaiting_handshake_ = true;
  channel::Hello hello;
  hello.device_id = env_.config.device_id;
  // Offer only what this box can do: DRE needs a chunk store.
  hello.offered = Intersect(plan_.policy, env_.capability());
  if (std::string trouble = env_.store_trouble(); HasDre(plan_.policy) && !trouble.empty()) record_->AddNote(trouble);
  if (HasDre(hello.offered)) {
    peer_state_ = env_.peers->Get(plan_.peering_key.empty() ? "peer " + FormatEndpoint(*plan_.peer) : plan_.peering_key,
                                  std::nullopt);
    hello.dre_seed = peer_state_->seed();
    hello.store_instance = env_.store_instance;
  }
  hello.destination = plan_.destination;
  hello.source = info_.client;
  // An intercepted channel may come from the client's address (a transparent
  // probe): tell the datacenter where this box is.
  if (plan_.connected_is_inner) {
    if (auto own = OwnAddressTowards(plan_.peer->address()); !own.is_unspecified()) hello.opener = own;
  }
  hello.modules = plan_.modules;
  hello.lz_window_log = dre::kLzWideWindowLog;  // what our decoder takes
  wan_writer_.QueueControl(FrameType::kHello, 0, channel::EncodeHello(hello));
  // Client bytes follow the hello at once: discovery of the server's answer costs
  // no round trip. The datacenter reads them only after it reached the server.
  // They are encoded as the peering's last connection applied, if there was one.
  // A new peering's first bytes go as literals (any peer decodes them, one that
  // stores chunks learns them): references wait for the peer's answer.
  if (peer_state_) {
    if (auto last = peer_state_->last_applied()) {
      StartEncoder(Intersect(*last, hello.offered));
    } else {
      StartEncoder(hello.offered);
      if (encoder_) encoder_->set_references(false);
    }
    encoded_before_ack_ = encoder_ != nullptr;
  }
  StartRelay();
}

// Marks this connection pass-through, for `reason`.
void Session::BecomePassThrough(const std::string& reason) {
  WANOPT_LOG(kInfo, "branch") << "connection " << id_ << " " << FormatEndpoint(info_.client) << " -> "
                              << FormatEndpoint(info_.server) << ": pass-through: " << reason;
  ++env_.counters.pass_through;
  record_->SetState(ConnectionState::kPassThrough);
  record_->SetPeer("", "");
  record_->AddNote("pass-through: " + reason);
  SetFramed(false);
  modules_->SetPeerSlots(0);
}

// Interception found no peer: the probe connection is the server connection.
void Session::PassThroughOverConnected(const std::string& reason) {
  BecomePassThrough(reason);
  TuneLanSocket(wan_.tcp());
  wan_remote_ = plan_.destination;
  StartRelay();
}

void Session::ConnectDirect(const std::string& reason) {
  BecomePassThrough(reason);
  error_code ignored;
  wan_ = channel::PlainStream(lan_.get_executor());
  wan_.tcp().open(plan_.destination.protocol(), ignored);
  SetAbortiveClose(wan_.tcp(), true);  // as TuneLanSocket will: the server must never see a clean cut
  if (plan_.source) BindTransparent(wan_.tcp(), *plan_.source);
  Connect(wan_.tcp(), plan_.destination, env_.config.timeouts.connect,
          [self = shared_from_this()](error_code ec) {
            if (self->closed_) return;
            if (ec) {
              // What the client would have seen without us, as closely as an
              // already-accepted connection allows: a reset.
              WANOPT_LOG(kInfo, "branch") << "connection " << self->id_ << ": server "
                                          << FormatEndpoint(self->info_.server) << ": " << ec.message();
              self->Abort("server " + FormatEndpoint(self->info_.server) + ": " + ec.message());
              return;
            }
            TuneLanSocket(self->wan_.tcp());
            self->wan_remote_ = self->plan_.destination;
            self->StartRelay();
          });
}

}  // namespace wanopt::session_internal
