// rpch: RPC over HTTP v2 (Outlook Anywhere) and MAPI over HTTP, the glue between a
// connection and the parsers (HttpStream here, the HTTP heads and the DCE/RPC and
// RTS PDUs in protocols/common). README.md in this folder says what it does and why.
//
// The module only observes: every byte goes on unchanged (so the HTTP and RTS
// framing reach the far side byte for byte, and DRE/LZ work on the channel bodies as
// on any stream). What it learns names the connection on the status page, pairs the
// IN and OUT channels of a virtual connection in the box-wide part, and lets that
// part reset a channel whose partner is gone. Anything it cannot follow (HTTP or a
// PDU that does not parse) makes it stop looking at that connection, with a note;
// the bytes flow on.
#include <map>
#include <memory>
#include <set>
#include <string>

#include "protocols/common/dcerpc/pdu_walker.h"
#include "protocols/common/dcerpc/rts.h"
#include "protocols/common/http/http.h"
#include "protocols/registry.h"
#include "protocols/rpch/http_stream.h"
#include "protocols/rpch/virtual_connection.h"
#include "util/log.h"

namespace wanopt::protocols::rpch {
namespace {

using namespace dcerpc;

// The status page's application for an RPC over HTTP connection with this interface
// bound ("OA": Outlook Anywhere, as WAAS and SteelHead name it).
std::string Application(const Uuid& uuid) {
  if (uuid == uuids::kEmsmdb || uuid == uuids::kAsyncEmsmdb) return "MAPI-OA";
  if (uuid == uuids::kNspi) return "NSPI-OA";
  if (uuid == uuids::kRfr) return "RFR-OA";
  if (uuid == uuids::kEpm) return "EPM-OA";
  return "RPC-OA";
}

std::string InterfaceLabel(const Uuid& uuid) {
  std::string_view known = InterfaceName(uuid);
  return known.empty() ? uuid.ToString() : std::string(known);
}

bool LooksLikeTls(std::span<const uint8_t> bytes) {
  // A TLS record: handshake (22), version 3.x.
  return bytes.size() >= 3 && bytes[0] == 0x16 && bytes[1] == 0x03 && bytes[2] <= 0x04;
}

constexpr Limits kPduLimits{65535, /*allow_rts=*/true};

class RpchModule final : public Module {
 public:
  void OnNewConnection(ModuleContext& context) override {
    context_ = &context;
    box_ = dynamic_cast<RpchBox*>(context.box());
    id_ = context.connection().id;
  }

  FilterStatus OnData(Direction direction, Buffer& data, bool end_stream) override {
    bool up = direction == Direction::kClientToServer;
    if (end_stream) ended_[up ? 0 : 1] = true;
    // The server spoke before the client's first head was one of ours: not HTTP, or
    // not ours. The module steps aside quietly (every connection meets it).
    if (!stopped_ && kind_ == Kind::kUnknown && !up && !data.empty()) stopped_ = true;
    if (!stopped_) {
      std::span<const uint8_t> bytes(data.data(), data.size());
      if (up && kind_ == Kind::kUnknown && requests_.idle() && LooksLikeTls(bytes)) {
        if (!OnRpcProxyPort()) {
          stopped_ = true;
          return FilterStatus::kContinue;
        }
        kind_ = Kind::kHttps;
        context_->SetApplication("HTTPS");
        context_->AddNote("HTTPS: payload encrypted, RPC over HTTP not visible (TCP optimization and LZ only)");
        stopped_ = true;
      } else {
        // A channel's body is as long as the channel lives: the side that ends one
        // mid-body (Content-Length 1 GiB) is not cutting a message short.
        bool channel = kind_ == Kind::kRpcIn || kind_ == Kind::kRpcOut;
        HttpStream& stream = up ? requests_ : responses_;
        HttpStream::Sink& sink = up ? static_cast<HttpStream::Sink&>(request_sink_) : response_sink_;
        if (!stream.Feed(bytes, sink) || (end_stream && !channel && !stream.End(sink))) {
          if (kind_ == Kind::kUnknown) stopped_ = true;  // never was HTTP of ours: no note
          else Stop(std::string(up ? "HTTP from the client: " : "HTTP from the server: ") + std::string(stream.error()));
        }
      }
    }
    RefreshNotes();
    return FilterStatus::kContinue;
  }

  void OnClose() override {
    if (vc_) {
      std::string why;
      auto resets = vc_->Leave(id_, ended_[0] && ended_[1], &why);
      if (!resets.empty()) {
        WANOPT_LOG(kInfo, "rpch") << "connection " << id_ << " ended: " << why.substr(why.find(' ') + 1, why.find(':', 30) - why.find(' ') - 1)
                                  << ": resetting " << resets.size() << " channel(s)";
        if (box_) box_->partner_resets += resets.size();
        for (auto& reset : resets) reset(why);
      }
    }
    if (counted_channel_ && box_) --box_->channels;
    if (counted_mapi_ && box_) --box_->mapi_http;
  }

 private:
  enum class Kind { kUnknown, kRpcIn, kRpcOut, kMapiHttp, kHttps };

  struct RequestSink final : HttpStream::Sink {
    explicit RequestSink(RpchModule& m) : m(m) {}
    void OnHead(const http::Head& head) override { m.OnRequestHead(head); }
    void OnBody(std::span<const uint8_t> content) override {
      if (m.request_body_is_rpc_ && !m.client_pdus_.Feed(content, Wanted, [&](const Pdu& p) { m.OnClientPdu(p); })) {
        m.Stop("malformed PDU in the channel body from the client");
      }
    }
    void OnMessageEnd() override { m.request_body_is_rpc_ = false; }
    static bool Wanted(PType t) { return t == PType::kRts || t == PType::kBind || t == PType::kAlterContext; }
    RpchModule& m;
  };
  struct ResponseSink final : HttpStream::Sink {
    explicit ResponseSink(RpchModule& m) : m(m) {}
    void OnHead(const http::Head& head) override { m.OnResponseHead(head); }
    void OnBody(std::span<const uint8_t> content) override {
      if (m.response_body_is_rpc_ && !m.server_pdus_.Feed(content, Wanted, [&](const Pdu& p) { m.OnServerPdu(p); })) {
        m.Stop("malformed PDU in the channel body from the server");
      }
    }
    void OnMessageEnd() override { m.response_body_is_rpc_ = false; }
    static bool Wanted(PType t) { return t == PType::kRts; }
    RpchModule& m;
  };

  bool OnRpcProxyPort() const {
    return !box_ || box_->settings().ports.count(context_->connection().server.port());
  }

  void Stop(const std::string& why) {
    if (stopped_) return;
    stopped_ = true;
    WANOPT_LOG(kInfo, "rpch") << "connection " << id_ << ": " << why << ": its bytes pass unchanged from here on";
    context_->AddNote("rpch: " + why + ": left untouched");
  }

  void OnRequestHead(const http::Head& head) {
    responses_.PushRequestMethod(head.method);
    request_body_is_rpc_ = false;
    client_pdus_ = PduWalker(kPduLimits);
    if (auto rpc = http::AsRpcOverHttp(head)) {
      Kind kind = rpc->in_channel ? Kind::kRpcIn : Kind::kRpcOut;
      if (kind_ == Kind::kUnknown) {
        kind_ = kind;
        if (box_) ++box_->channels;
        counted_channel_ = true;
        context_->SetApplication("RPC-OA");
      } else if (kind != kind_) {
        return Stop("RPC_IN_DATA and RPC_OUT_DATA on one connection");
      }
      // Again for a retry after a 401: the first try may name no server (impacket's
      // NTLM probe goes to the bare path).
      std::string target = rpc->server.empty() ? "(no server:port)" : rpc->server + ":" + std::to_string(rpc->port);
      context_->SetNote("RPC over HTTP", "RPC over HTTP v2 " + std::string(rpc->in_channel ? "IN" : "OUT") +
                                             " channel (" + head.method + " " + rpc->path + ") to " + target);
      request_body_is_rpc_ = true;
      return;
    }
    if (auto mapi = http::AsMapiOverHttp(head)) {
      if (kind_ == Kind::kUnknown) {
        kind_ = Kind::kMapiHttp;
        if (box_) ++box_->mapi_http;
        counted_mapi_ = true;
        context_->SetApplication(mapi->emsmdb ? "MAPI-HTTP" : "NSPI-HTTP");
      }
      if (kind_ == Kind::kMapiHttp) {
        if (mapi_requests_.size() < 32 || mapi_requests_.count(mapi->request_type)) ++mapi_requests_[mapi->request_type];
        std::string list;
        for (const auto& [type, n] : mapi_requests_) list += (list.empty() ? "" : ", ") + type + " " + std::to_string(n);
        context_->SetNote("MAPI over HTTP", "MAPI over HTTP (" + std::string(mapi->emsmdb ? "emsmdb" : "nspi") +
                                                ") requests: " + list);
      }
      return;
    }
    // Plain web traffic on an RPC proxy's port: nothing for this module.
    if (kind_ == Kind::kUnknown) stopped_ = true;
  }

  void OnResponseHead(const http::Head& head) {
    response_body_is_rpc_ = kind_ == Kind::kRpcOut && head.status == 200;
    server_pdus_ = PduWalker(kPduLimits);
    if (head.status == 401 && (kind_ == Kind::kRpcIn || kind_ == Kind::kRpcOut || kind_ == Kind::kMapiHttp)) {
      ++auth_round_trips_;
      context_->SetNote("HTTP authentication", "HTTP authentication: " + std::to_string(auth_round_trips_) +
                                                   " round trip(s) answered 401");
    }
  }

  void OnClientPdu(const Pdu& pdu) {
    if (pdu.header.ptype == PType::kRts) {
      auto rts = ParseRts(pdu);
      if (!rts) return Stop("RTS PDU does not parse (" + std::string(rts.error().reason) + ")");
      RtsKind kind = Classify(*rts);
      RtsCookies cookies = Cookies(*rts, kind);
      if (kind == RtsKind::kConnA1 && kind_ == Kind::kRpcOut && cookies.virtual_connection && cookies.out_channel) {
        JoinVirtualConnection(*cookies.virtual_connection, ChannelType::kOut, *cookies.out_channel, std::nullopt);
      } else if (kind == RtsKind::kConnB1 && kind_ == Kind::kRpcIn && cookies.virtual_connection && cookies.in_channel) {
        JoinVirtualConnection(*cookies.virtual_connection, ChannelType::kIn, *cookies.in_channel, std::nullopt);
      } else if (kind == RtsKind::kInR1A1InR2A1 && kind_ == Kind::kRpcIn && cookies.virtual_connection &&
                 cookies.successor_channel) {
        JoinVirtualConnection(*cookies.virtual_connection, ChannelType::kIn, *cookies.successor_channel,
                              cookies.predecessor_channel);
      } else if (kind == RtsKind::kOutRA3 && kind_ == Kind::kRpcOut && cookies.virtual_connection &&
                 cookies.successor_channel) {
        JoinVirtualConnection(*cookies.virtual_connection, ChannelType::kOut, *cookies.successor_channel,
                              cookies.predecessor_channel);
      }
      return;
    }
    auto bind = ParseBind(pdu);
    if (!bind) return Stop("bind does not parse (" + std::string(bind.error().reason) + ")");
    bool privacy = pdu.auth_level() == AuthLevel::kPrivacy;
    for (const auto& c : bind->contexts) {
      std::string app = Application(c.abstract_syntax.uuid);
      interfaces_.insert(InterfaceLabel(c.abstract_syntax.uuid));
      if (application_.empty() || (application_ == "RPC-OA" && app != "RPC-OA") ||
          (application_ == "EPM-OA" && app != "RPC-OA" && app != "EPM-OA")) {
        application_ = app;
      }
    }
    if (privacy && !privacy_noted_) {
      privacy_noted_ = true;
      bool mapi = application_ == "MAPI-OA" || application_ == "NSPI-OA";
      context_->AddNote(mapi ? "encrypted MAPI (packet privacy) inside RPC over HTTP: the payload is encrypted, DRE gains little"
                             : "RPC packet privacy inside RPC over HTTP: the payload is encrypted, DRE gains little");
    }
    std::string shown = privacy && (application_ == "MAPI-OA" || application_ == "NSPI-OA") ? "eMAPI-OA" : application_;
    if (vc_) vc_->SetBinding(shown, interfaces_);
    else context_->SetApplication(shown);
  }

  void OnServerPdu(const Pdu& pdu) {
    auto rts = ParseRts(pdu);
    if (!rts) return Stop("RTS PDU from the server does not parse (" + std::string(rts.error().reason) + ")");
    if (Classify(*rts) == RtsKind::kOutRA1A2 && !recycle_asked_) {
      recycle_asked_ = true;
      context_->AddNote("the server asked to recycle the OUT channel");
    }
  }

  void JoinVirtualConnection(const Uuid& cookie, ChannelType type, const Uuid& channel, std::optional<Uuid> predecessor) {
    if (vc_) {
      if (vc_->cookie() != cookie) Stop("a second virtual connection cookie on one channel");
      return;
    }
    if (!box_) {
      context_->SetNote("virtual connection", "virtual connection " + cookie.ToString() + ": " +
                                                  std::string(ChannelName(type)) + " #" + std::to_string(id_));
      return;
    }
    vc_ = box_->Join(cookie);
    vc_->Join(id_, type, channel, predecessor, context_->reset_handle());
    if (predecessor) ++box_->recycles;
    WANOPT_LOG(kInfo, "rpch") << "connection " << id_ << ": " << ChannelName(type) << " channel of virtual connection "
                              << cookie.ToString() << (predecessor ? " (recycled)" : "");
    // A channel that stays alone had its partner go another way: reset it, so that
    // the client builds the virtual connection again, on one path.
    context_->StartTimer(std::chrono::duration_cast<std::chrono::milliseconds>(box_->settings().pairing_timeout), [this, type] {
      if (vc_->Paired(id_)) return;
      ++box_->pairing_resets;
      if (auto reset = context_->reset_handle()) {
        reset("rpch: this " + std::string(ChannelName(type)) + " channel found no " +
              (type == ChannelType::kIn ? "OUT" : "IN") + " channel of virtual connection " + vc_->cookie().ToString() +
              " on this box within " + std::to_string(box_->settings().pairing_timeout.count()) +
              " ms (it went another way: passed through, or through another peer pair): reset");
      }
    });
  }

  // Keeps the connection's line current with its virtual connection (the OUT channel
  // learns the interface from the IN channel's binds this way).
  void RefreshNotes() {
    if (!vc_) return;
    auto snapshot = vc_->snapshot();
    if (snapshot.version == seen_version_) return;
    seen_version_ = snapshot.version;
    context_->SetNote("virtual connection", vc_->Describe(snapshot));
    if (!snapshot.application.empty()) context_->SetApplication(snapshot.application);
  }

  ModuleContext* context_ = nullptr;
  RpchBox* box_ = nullptr;
  uint64_t id_ = 0;
  Kind kind_ = Kind::kUnknown;
  bool stopped_ = false;
  bool ended_[2] = {false, false};  // end_stream seen: client-to-server, server-to-client
  bool counted_channel_ = false, counted_mapi_ = false;
  bool request_body_is_rpc_ = false, response_body_is_rpc_ = false;
  bool privacy_noted_ = false, recycle_asked_ = false;
  uint32_t auth_round_trips_ = 0;
  HttpStream requests_{true};
  HttpStream responses_{false};
  RequestSink request_sink_{*this};
  ResponseSink response_sink_{*this};
  PduWalker client_pdus_{kPduLimits};
  PduWalker server_pdus_{kPduLimits};
  std::shared_ptr<VirtualConnection> vc_;
  uint64_t seen_version_ = 0;
  std::string application_;
  std::set<std::string> interfaces_;
  std::map<std::string, uint64_t> mapi_requests_;
};

ModuleRegistrar registrar{{
    WANOPT_MODULE_NAME,  // "rpch" (protocols/rpch/CMakeLists.txt)
    "RPC over HTTP v2 (Outlook Anywhere) and MAPI over HTTP: recognised, channels paired, classified",
    [] { return std::make_unique<RpchModule>(); },
    [](const ModuleSettings& settings, std::string* error) -> std::unique_ptr<BoxModule> {
      auto parsed = ParseRpchSettings(settings, error);
      if (!parsed) return nullptr;
      return std::make_unique<RpchBox>(std::move(*parsed));
    },
}};

}  // namespace
}  // namespace wanopt::protocols::rpch
