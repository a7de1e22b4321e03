// A datacenter session's set-up: the hello deadline, the server connection, and the
// answer when the server cannot be reached or is not served.
#include "wanopt/session/session_impl.h"

namespace wanopt::session_internal {

void Session::StartDatacenter(DatacenterPlan plan) {
  wan_writer_.Start(weak_from_this());
  error_code ec;
  peer_endpoint_ = wan_remote_ = plan.peer_endpoint ? *plan.peer_endpoint : wan_.tcp().remote_endpoint(ec);
  for (const auto& note : plan.notes) record_->AddNote(note);
  if (plan.server) {
    lan_ = std::move(*plan.server);
    server_connected_ = true;
  }
  wan_.tcp().non_blocking(true, ec);  // (a TLS pump's end is non-blocking)
  SetFramed(true);
  awaiting_handshake_ = true;
  StartTicks();
  // The hello must arrive within the handshake deadline, however it trickles in:
  // a peer that holds a half-sent hello holds a descriptor and a buffer.
  uint32_t generation = ++connect_generation_;
  connect_timer_.expires_after(env_.config.timeouts.handshake);
  connect_timer_.async_wait([self = shared_from_this(), generation](error_code ec) {
    if (ec || self->closed_ || generation != self->connect_generation_) return;
    WANOPT_LOG(kInfo, "datacenter") << "connection " << self->id_ << " from " << FormatEndpoint(self->wan_endpoint())
                                    << ": no hello within " << self->env_.config.timeouts.handshake.count()
                                    << " ms: closed";
    self->record_->AddNote("no hello within the handshake deadline");
    self->Abort("");
  });
  DownWaitReadable();
}

void Session::ConnectWanToServer(const tcp::endpoint& server) {
  if (server_connected_) {
    // Interception connected to the server before answering the branch's SYN.
    error_code ec;
    tcp::endpoint connected = lan_.remote_endpoint(ec);
    if (ec || connected != server) {
      ProtocolError("hello names " + FormatEndpoint(server) + ", but this inner channel was opened for " +
                    FormatEndpoint(connected));
      return;
    }
    // As if the connect had just completed: after the caller has consumed the hello.
    asio::post(lan_.get_executor(), [self = shared_from_this()] { self->OnServerConnected({}); });
    return;
  }
  // The datacenter's WAN side is the inner channel, its LAN side the server: the
  // server connection goes into lan_.
  // Abortive from the start: a box that stops before the connect completes must
  // not leave the server a clean, empty connection.
  error_code opened;
  lan_.open(server.protocol(), opened);
  SetAbortiveClose(lan_, true);
  Connect(lan_, server, env_.config.timeouts.connect,
          [self = shared_from_this()](error_code ec) { self->OnServerConnected(ec); });
}

void Session::OnServerConnected(error_code ec) {
  if (closed_) return;
  if (ec) {
    WANOPT_LOG(kInfo, "datacenter") << "connection " << id_ << " from peer "
                                    << channel::FormatDeviceId(peer_id_) << " " << FormatEndpoint(peer_endpoint_)
                                    << ": server " << FormatEndpoint(info_.server) << ": " << ec.message();
    return AnswerAndDrain(StatusFor(ec), "server " + FormatEndpoint(info_.server) + ": " + ec.message(), /*resume=*/true);
  }
  TuneLanSocket(lan_);
  wan_writer_.QueueControl(FrameType::kHelloAck, 0, channel::EncodeHelloAck(ack_));
  record_->SetState(ConnectionState::kOptimized);
  StartRelay();
  DownResume();
}

// The hello-ack says why this box does not serve the connection; then the box
// waits for the branch to hang up (reading and discarding), so that its close
// cannot overtake the answer; dead-peer time bounds the wait. `resume`: the down
// direction was waiting for this answer (else the caller is reading frames).
void Session::AnswerAndDrain(channel::HelloStatus status, const std::string& note, bool resume) {
  ack_.status = status;
  record_->AddNote(note);  // before the answer: the branch may act on it at once
  wan_writer_.QueueControl(FrameType::kHelloAck, 0, channel::EncodeHelloAck(ack_));
  reset_ = true;
  draining_ = true;
  if (resume) DownResume();
}

}  // namespace wanopt::session_internal
