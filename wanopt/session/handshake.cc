// The inner-channel handshake on both sides: the hello and the hello-ack read off
// the channel; what they decide (negotiation.h) applied to this connection.
#include "wanopt/session/session_impl.h"

namespace wanopt::session_internal {

void Session::OnHello(const channel::Hello& hello) {
  ++connect_generation_;  // the hello arrived: the handshake deadline is met
  connect_timer_.cancel();
  // An intercepted channel comes from wherever the branch's probe did, the
  // client's address included: name the branch where it says it is.
  if (hello.opener && server_connected_) peer_endpoint_ = tcp::endpoint(*hello.opener, 0);
  // The client's own address when the branch knows it, else the branch's.
  info_.client = hello.source.port() ? hello.source : peer_endpoint_;
  info_.server = hello.destination;
  peer_id_ = hello.device_id;
  record_->SetEndpoints(info_.client, info_.server);
  record_->SetPeer(channel::FormatDeviceId(peer_id_), FormatEndpoint(peer_endpoint_));
  env_.table.PeerSeen(channel::FormatDeviceId(peer_id_), FormatEndpoint(peer_endpoint_), true);
  peer_counted_ = true;
  HelloAnswer answer = AnswerHello(hello, AcceptorFactsNow());
  // Module names came off the network: the status page escapes them.
  for (const auto& note : answer.notes) record_->AddNote(note);
  modules_ = std::make_unique<protocols::ModuleChain>(*this, answer.runnable);
  modules_->SetPeerSlots(answer.ack.accepted_modules);
  ack_ = answer.ack;
  ack_.lz_window_log = dre::kLzWideWindowLog;  // what our decoder takes
  SetPeerLzWindowLog(hello.lz_window_log);
  // Only an intercepted channel was opened to the server's address: otherwise the
  // branch already knows where this box is (and ignores the field).
  if (auto own = server_connected_ ? OwnAddressTowards(peer_endpoint_.address()) : boost::asio::ip::address();
      !own.is_unspecified()) {
    ack_.acceptor = tcp::endpoint(own, env_.config.datacenter ? env_.config.datacenter->listen.port() : 0);
  }
  if (env_.store && hello.dre_seed) {
    // The peering is named by the branch's device id; its seed comes from the branch.
    peer_state_ = env_.peers->Get(channel::FormatDeviceId(peer_id_), hello.dre_seed);
    if (peer_state_->SetPeerInstance(hello.store_instance)) {
      record_->AddNote("peer's datastore is new: chunks it had are sent again");
    }
  }
  // The branch may encode before it has our answer (with what the peering applied
  // last time): decode whatever this box can, whatever this connection negotiates.
  if (hello.offered != Policy::kTcpOnly) StartDecoder();
  StartEncoder(ack_.applied);
  record_->SetPolicies(hello.offered, ack_.negotiated, ack_.applied);
  if (ack_.status == channel::HelloStatus::kRejected) {
    WANOPT_LOG(kWarn, "datacenter") << "connection " << id_ << " from peer " << channel::FormatDeviceId(peer_id_)
                                    << " " << FormatEndpoint(peer_endpoint_) << ": " << answer.rejection;
    return AnswerAndDrain(channel::HelloStatus::kRejected, answer.rejection, /*resume=*/false);
  }
  ConnectWanToServer(hello.destination);
}

// What this box brings to a hello now: its store's state may change between two.
AcceptorFacts Session::AcceptorFactsNow() const {
  AcceptorFacts facts;
  facts.device_id = env_.config.device_id;
  facts.configured = env_.config.policy;
  facts.capability = env_.capability();
  facts.has_store = env_.store != nullptr;
  facts.store_trouble = env_.store_trouble();
  facts.store_instance = env_.store_instance;
  // The modules this box runs for its peers: [datacenter] modules, or every one.
  if (env_.config.datacenter) {
    facts.modules = env_.config.datacenter->modules;
    facts.serves = [datacenter = &*env_.config.datacenter](const boost::asio::ip::address& destination) {
      return datacenter->Serves(destination);
    };
  } else {
    facts.modules = protocols::Registry::Global().Names();
  }
  return facts;
}

bool Session::HandleHandshake(const channel::DecodedFrame& frame) {
  std::string error;
  awaiting_handshake_ = false;
  if (role_ == Role::kDatacenter) {
    if (frame.header.type != FrameType::kHello) {
      ProtocolError("first frame is not a hello");
      return false;
    }
    auto hello = channel::DecodeHello(frame.payload, &error);
    if (!hello && SpeaksOtherVersion(frame.payload)) {
      // A newer (or older) peer: say which version we speak instead of a bare reset.
      WANOPT_LOG(kWarn, "datacenter") << "connection " << id_ << ": peer " << FormatEndpoint(peer_endpoint_)
                                      << " speaks inner-channel version " << int{frame.payload[4]}
                                      << ", this box version " << int{channel::kProtocolVersion};
      ack_.status = channel::HelloStatus::kVersionUnsupported;
      ack_.device_id = env_.config.device_id;
      wan_writer_.QueueControl(FrameType::kHelloAck, 0, channel::EncodeHelloAck(ack_));
      draining_ = true;
      return true;
    }
    if (!hello) {
      ProtocolError("bad hello: " + error);
      return false;
    }
    OnHello(*hello);
    return true;
  }
  if (frame.header.type != FrameType::kHelloAck) {
    ProtocolError("first frame is not a hello-ack");
    return false;
  }
  auto ack = channel::DecodeHelloAck(frame.payload, &error);
  if (!ack) {
    ProtocolError("bad hello-ack: " + error);
    return false;
  }
  peer_id_ = ack->device_id;
  ack_ = *ack;
  SetPeerLzWindowLog(ack->lz_window_log);
  AckVerdict verdict = CheckHelloAck(*ack, peer_state_ != nullptr);
  if (verdict.outcome == AckVerdict::Outcome::kServerFailed) {
    WANOPT_LOG(kInfo, "branch") << "connection " << id_ << " " << FormatEndpoint(info_.client) << " -> "
                                << FormatEndpoint(info_.server) << ": server "
                                << channel::HelloStatusName(ack->status) << " (seen by peer "
                                << channel::FormatDeviceId(peer_id_) << ")";
    Abort("server " + FormatEndpoint(info_.server) + " " + std::string(channel::HelloStatusName(ack->status)) +
          " (seen by peer " + channel::FormatDeviceId(peer_id_) + ")");
    return false;
  }
  modules_->SetPeerSlots(ack->accepted_modules);
  // Intercepted, the inner channel was opened to the server's address: name the box
  // by its own address instead (the server stays in the connection's record).
  bool in_path = wan_remote_ == plan_.destination;
  if (in_path && ack->acceptor) peer_address_ = FormatEndpoint(*ack->acceptor);
  else peer_address_ = FormatEndpoint(wan_remote_);
  record_->SetPeer(channel::FormatDeviceId(peer_id_), peer_address_);
  record_->SetPolicies(ack->offered, ack->negotiated, ack->applied);
  record_->SetState(ConnectionState::kOptimized);
  for (const auto& note : verdict.notes) record_->AddNote(note);
  if (verdict.outcome == AckVerdict::Outcome::kProtocolError) {
    ProtocolError(verdict.error);
    return false;
  }
  if (peer_state_ && HasDre(ack->applied) && peer_state_->SetPeerInstance(ack->store_instance)) {
    record_->AddNote("peer's datastore is new: chunks it had are sent again");
  }
  // Bytes sent before this answer were encoded as the peering applied last time, or
  // for a new peering as literals with the offered policy; the encoder keeps its
  // policy for the connection, and references start now if DRE applies.
  if (peer_state_) peer_state_->set_last_applied(ack->applied);
  if (encoder_ && encoder_policy_ != ack->applied) {
    record_->AddNote(std::string("encoded as ") + PolicyLetter(encoder_policy_) + " before the answer, " +
                     PolicyLetter(ack->applied) + " applied now");
  }
  if (encoder_ && HasDre(ack->applied)) encoder_->set_references(true);
  StartEncoder(ack->applied);
  StartDecoder();
  env_.table.PeerSeen(channel::FormatDeviceId(peer_id_), peer_address_, true);
  peer_counted_ = true;
  WANOPT_LOG(kDebug, "branch") << "connection " << id_ << ": optimized by peer "
                               << channel::FormatDeviceId(peer_id_) << ", policy applied "
                               << PolicyLetter(ack->applied);
  return true;
}

bool Session::SpeaksOtherVersion(std::span<const uint8_t> hello) {
  return hello.size() > channel::kHelloMagic.size() &&
         std::equal(channel::kHelloMagic.begin(), channel::kHelloMagic.end(), hello.begin()) &&
         hello[channel::kHelloMagic.size()] != channel::kProtocolVersion;
}

}  // namespace wanopt::session_internal
