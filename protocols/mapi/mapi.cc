#include "protocols/mapi/mapi.h"

#include <algorithm>
#include <charconv>
#include <set>

#include "protocols/common/dcerpc/pdu_walker.h"
#include "protocols/mapi/binding_store.h"
#include "protocols/mapi/epm.h"
#include "protocols/registry.h"
#include "util/endpoint.h"
#include "util/log.h"

namespace wanopt::protocols::epm {
namespace {

using boost::asio::ip::tcp;
using Address = MapiBox::Address;
constexpr uint16_t kEpmPort = 135;

std::optional<uint64_t> Number(const std::string& text, uint64_t min, uint64_t max) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) return std::nullopt;
  return value;
}

std::string Name(const Uuid& uuid) {
  std::string_view known = InterfaceName(uuid);
  return known.empty() ? uuid.ToString() : std::string(known);
}

// What a bound interface makes of the connection, for the status page.
std::string Application(const Uuid& uuid) {
  if (uuid == uuids::kEmsmdb || uuid == uuids::kAsyncEmsmdb) return "MAPI";
  if (uuid == uuids::kNspi) return "NSPI";
  if (uuid == uuids::kRfr) return "RFR";
  if (uuid == uuids::kEpm) return "EPM";
  return "RPC";
}

class MapiModule final : public Module {
 public:
  void OnNewConnection(ModuleContext& context) override {
    context_ = &context;
    box_ = dynamic_cast<MapiBox*>(context.box());
    const ConnectionInfo& c = context.connection();
    // The flows OnNewFlow is asked about carry no scope (a link-local server's
    // address as the SYN has it): a binding must be found by them.
    server_ = Unscoped(c.server.address());
    if (c.server.port() == kEpmPort) {
      role_ = Role::kEpm;
      context.SetApplication("EPM");
    }
    if (box_) {
      if (auto found = box_->FindByRealPort(server_, c.server.port())) {
        context.AddNote("remapped: the client was told port " + std::to_string(found->first) + " for " +
                        found->second.interface + ", the server's port is " + std::to_string(c.server.port()));
      }
    }
  }

  FilterStatus OnData(Direction direction, Buffer& data, bool end_stream) override {
    if (stopped_ || data.empty()) return FilterStatus::kContinue;
    std::span<uint8_t> bytes(data.data(), data.size());
    if (direction == Direction::kClientToServer) {
      if (role_ == Role::kUnknown) {
        // DCE/RPC over TCP begins with a bind: version 5, ptype 11.
        if (bytes.size() >= 3 && bytes[0] == 5 && bytes[2] == static_cast<uint8_t>(PType::kBind)) {
          role_ = Role::kRpc;
        } else {
          stopped_ = true;
          return FilterStatus::kContinue;
        }
      }
      if (!counted_ && box_) {
        box_->ConnectionStarted();
        counted_ = true;
      }
      auto wanted = [this](PType t) {
        return t == PType::kBind || t == PType::kAlterContext || (role_ == Role::kEpm && t == PType::kRequest);
      };
      if (!client_.Feed(bytes, wanted, [this](const Pdu& pdu) { OnClientPdu(pdu); })) Stop("malformed PDU from the client");
      return FilterStatus::kContinue;
    }
    // Server to client: only the endpoint mapper's answers change, on the branch.
    if (role_ != Role::kEpm || !Rewriting()) {
      if (role_ == Role::kEpm &&
          !server_walker_.Feed(bytes, [](PType t) { return t == PType::kBindAck || t == PType::kAlterContextResp; },
                               [this](const Pdu& pdu) { OnBindAck(pdu); })) {
        Stop("malformed PDU from the server");
      }
      return FilterStatus::kContinue;
    }
    return OnServerBytes(bytes, end_stream);
  }

  void OnClose() override {
    if (counted_ && box_) box_->ConnectionEnded();
  }

 private:
  enum class Role { kUnknown, kEpm, kRpc };

  // This box remaps the endpoint mapper's answers (the branch, mode remap)...
  bool RemapConfigured() const {
    return box_ && box_->settings().mode == MapiSettings::Mode::kRemap && context_->connection().side == Side::kBranch;
  }
  // ... and this connection's, now.
  bool Rewriting() const { return RemapConfigured() && !stopped_; }

  void Stop(const std::string& why) {
    if (stopped_) return;
    stopped_ = true;
    WANOPT_LOG(kInfo, "mapi") << "connection " << context_->connection().id << ": " << why
                              << ": its bytes pass unchanged from here on";
    context_->AddNote("mapi: " + why + ": left untouched");
  }

  void OnClientPdu(const Pdu& pdu) {
    if (pdu.header.ptype == PType::kBind || pdu.header.ptype == PType::kAlterContext) {
      auto bind = ParseBind(pdu);
      if (!bind) return Stop("bind does not parse (" + std::string(bind.error().reason) + ")");
      (void)contexts_.OnBind(*bind, pdu.auth_level());
      for (const auto& c : bind->contexts) {
        std::string app = Application(c.abstract_syntax.uuid);
        interfaces_.insert(Name(c.abstract_syntax.uuid));
        if (role_ == Role::kRpc && (application_.empty() || (application_ == "RPC" && app != "RPC"))) application_ = app;
      }
      if (interfaces_.size() > 1 && !multiple_noted_) {
        multiple_noted_ = true;
        std::string list;
        for (const auto& i : interfaces_) list += (list.empty() ? "" : ", ") + i;
        context_->AddNote("multiple contexts on one connection: " + list);
      }
      if (role_ == Role::kRpc && !application_.empty()) {
        bool privacy = pdu.auth_level() == AuthLevel::kPrivacy;
        if (privacy && (application_ == "MAPI" || application_ == "NSPI")) {
          context_->SetApplication("eMAPI");
          if (!privacy_noted_) {
            privacy_noted_ = true;
            context_->AddNote("encrypted MAPI (packet privacy): the payload is encrypted, DRE gains little");
          }
        } else {
          context_->SetApplication(application_);
        }
      }
      return;
    }
    if (pdu.header.ptype != PType::kRequest || role_ != Role::kEpm) return;
    auto request = ParseRequest(pdu);
    if (!request) return Stop("request does not parse (" + std::string(request.error().reason) + ")");
    if (pdu.protected_by_auth()) {
      if (!protected_noted_) {
        protected_noted_ = true;
        context_->AddNote("endpoint mapper used with integrity or privacy: ports left as the server says");
      }
      return;
    }
    if (request->opnum == kOpnumEptMap && pdu.header.first_frag()) map_calls_.insert(pdu.header.call_id);
  }

  void OnBindAck(const Pdu& pdu) {
    auto ack = ParseBindAck(pdu);
    if (ack) (void)contexts_.OnBindAck(*ack);
  }

  // The endpoint mapper's answers, on a branch that remaps. Whole PDUs only: the
  // chain re-presents held bytes with the next ones, so nothing is processed twice.
  FilterStatus OnServerBytes(std::span<uint8_t> bytes, bool end_stream) {
    // First pass, no side effects: do the bytes end on a PDU boundary, with every
    // ept_map answer complete?
    size_t at = 0;
    std::set<uint32_t> open;
    while (at < bytes.size()) {
      Split split = SplitPdu(bytes.subspan(at));
      if (split.kind == Split::kMalformed) {
        Stop("malformed PDU from the server (" + std::string(split.error.reason) + ")");
        return FilterStatus::kContinue;
      }
      if (split.kind == Split::kNeedMore) return end_stream ? FilterStatus::kContinue : FilterStatus::kStopIteration;
      const Header& h = split.pdu.header;
      if (h.ptype == PType::kResponse && map_calls_.count(h.call_id)) {
        if (h.last_frag()) open.erase(h.call_id);
        else open.insert(h.call_id);
      }
      at += split.pdu.bytes.size();
    }
    if (!open.empty() && !end_stream) return FilterStatus::kStopIteration;
    // Second pass: process, rewriting answers in place.
    at = 0;
    std::map<uint32_t, size_t> starts;  // call id -> offset of its first fragment
    while (at < bytes.size()) {
      Split split = SplitPdu(bytes.subspan(at));
      if (split.kind != Split::kPdu) break;
      const Header h = split.pdu.header;
      size_t size = split.pdu.bytes.size();
      if (h.ptype == PType::kBindAck || h.ptype == PType::kAlterContextResp) OnBindAck(split.pdu);
      if (h.ptype == PType::kResponse && map_calls_.count(h.call_id)) {
        if (h.first_frag()) starts[h.call_id] = at;
        if (h.last_frag() && starts.count(h.call_id)) {
          size_t begin = starts[h.call_id];
          RewriteAnswer(bytes.subspan(begin, at + size - begin));
          map_calls_.erase(h.call_id);
          starts.erase(h.call_id);
        }
      }
      if (h.ptype == PType::kFault) map_calls_.erase(h.call_id);
      at += size;
    }
    return FilterStatus::kContinue;
  }

  void RewriteAnswer(std::span<uint8_t> pdus) {
    if (contexts_.auth_level() > AuthLevel::kConnect) return;  // must not change a protected PDU
    for (const auto& entry : contexts_.entries()) {
      if (entry.abstract_syntax.uuid == uuids::kEpm && entry.transfer_syntax.uuid == uuids::kNdr64) {
        return Stop("endpoint mapper bound with NDR64");
      }
    }
    const MapiSettings& s = box_->settings();
    std::vector<PortRemap> remaps = {{uuids::kEmsmdb, s.mapi_port}, {uuids::kNspi, s.nspi_port}};
    for (const Uuid& u : s.remap_interfaces) remaps.push_back({u, s.mapi_port});
    // On a copy first: a proxy port already standing for another real port on that
    // server is not handed out again.
    for (int attempt = 0; attempt < 2; ++attempt) {
      std::vector<uint8_t> copy(pdus.begin(), pdus.end());
      auto rewrites = RewriteMapResponsePdus(copy, remaps);
      if (!rewrites) {
        if (rewrites.error().kind == Error::kMalformed) Stop("ept_map answer does not parse");
        return;
      }
      std::vector<Uuid> refused;
      for (const PortRewrite& r : *rewrites) {
        // Over IPv4 the tower's address, where it names one (0.0.0.0: the one asked).
        // Over IPv6 the address asked: a tower carries IPv4 only, and a client keeps
        // the address it asked the endpoint mapper at, taking only the port.
        Address server = server_.is_v4() && r.ipv4 && *r.ipv4 ? Address(boost::asio::ip::address_v4(*r.ipv4)) : server_;
        if (!box_->Bind(server, r.new_port, r.old_port, Name(r.interface.uuid))) refused.push_back(r.interface.uuid);
      }
      if (refused.empty()) {
        std::copy(copy.begin(), copy.end(), pdus.begin());
        for (const PortRewrite& r : *rewrites) {
          std::string note = "ept_map: " + Name(r.interface.uuid) + " at port " + std::to_string(r.old_port) +
                             ", told as " + std::to_string(r.new_port);
          WANOPT_LOG(kInfo, "mapi") << "connection " << context_->connection().id << ": " << note;
          context_->AddNote(note);
        }
        return;
      }
      std::erase_if(remaps, [&](const PortRemap& m) { return std::find(refused.begin(), refused.end(), m.interface) != refused.end(); });
      for (const Uuid& u : refused) {
        context_->AddNote("ept_map: " + Name(u) + " left at its real port: its proxy port already stands for another");
      }
    }
  }

  ModuleContext* context_ = nullptr;
  MapiBox* box_ = nullptr;
  Address server_;  // the connection's server address
  Role role_ = Role::kUnknown;
  bool stopped_ = false;
  bool counted_ = false;
  bool multiple_noted_ = false, privacy_noted_ = false, protected_noted_ = false;
  std::string application_;
  std::set<std::string> interfaces_;
  ContextTable contexts_;
  PduWalker client_;
  PduWalker server_walker_;
  std::set<uint32_t> map_calls_;  // call ids of ept_map requests awaiting their answer
};

ModuleRegistrar registrar{{
    WANOPT_MODULE_NAME,  // "mapi" (protocols/mapi/CMakeLists.txt)
    "Exchange MAPI/EPM: endpoint-mapper port remapping, MAPI classification, session affinity",
    [] { return std::make_unique<MapiModule>(); },
    [](const ModuleSettings& settings, std::string* error) -> std::unique_ptr<BoxModule> {
      auto parsed = ParseMapiSettings(settings, error);
      if (!parsed) return nullptr;
      return std::make_unique<MapiBox>(std::move(*parsed));
    },
}};

}  // namespace

std::optional<MapiSettings> ParseMapiSettings(const ModuleSettings& settings, std::string* error) {
  MapiSettings s;
  s.state_file = "/var/lib/wanopt/mapi-bindings";  // systemd's StateDirectory=wanopt
  s.fail_open_chain = "WANOPT_MAPI";               // deploy/intercept makes it
  for (const auto& [key, value] : settings) {
    if (key == "mode") {
      if (value == "remap") s.mode = MapiSettings::Mode::kRemap;
      else if (value == "no-remap") s.mode = MapiSettings::Mode::kNoRemap;
      else if (value == "pass-through") s.mode = MapiSettings::Mode::kPassThrough;
      else { *error = "mode: '" + value + "' is not remap, no-remap or pass-through"; return std::nullopt; }
    } else if (key == "mapi_port" || key == "nspi_port") {
      auto port = Number(value, 1, 65535);
      if (!port) { *error = key + ": '" + value + "' is not a port"; return std::nullopt; }
      (key == "mapi_port" ? s.mapi_port : s.nspi_port) = static_cast<uint16_t>(*port);
    } else if (key == "remap_interfaces") {
      size_t start = 0;
      while (start < value.size()) {
        size_t comma = std::min(value.find(',', start), value.size());
        std::string text = value.substr(start, comma - start);
        auto uuid = Uuid::Parse(text);
        if (!uuid) { *error = "remap_interfaces: '" + text + "' is not a UUID"; return std::nullopt; }
        s.remap_interfaces.push_back(*uuid);
        start = comma + 1;
      }
    } else if (key == "binding_ttl_s") {
      auto ttl = Number(value, 1, 7 * 86400);
      if (!ttl) { *error = "binding_ttl_s: '" + value + "' is not a number of seconds (1..604800)"; return std::nullopt; }
      s.binding_ttl = std::chrono::seconds(*ttl);
    } else if (key == "admission_connections") {
      auto n = Number(value, 0, 10'000'000);
      if (!n) { *error = "admission_connections: '" + value + "' is not a count"; return std::nullopt; }
      s.admission_connections = *n;
    } else if (key == "state_file") {
      if (!value.empty() && value.front() != '/') { *error = "state_file: '" + value + "' is not an absolute path"; return std::nullopt; }
      s.state_file = value;
    } else if (key == "fail_open_chain") {
      // An iptables chain name, checked here so it can go into iptables-restore's input.
      bool ok = value.size() <= 28 && std::all_of(value.begin(), value.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
      });
      if (!ok) { *error = "fail_open_chain: '" + value + "' is not an iptables chain name ([A-Za-z0-9_-], 28 at most)"; return std::nullopt; }
      s.fail_open_chain = value;
    } else {
      *error = key + ": unknown setting (mode, mapi_port, nspi_port, remap_interfaces, binding_ttl_s, "
                     "admission_connections, state_file, fail_open_chain)";
      return std::nullopt;
    }
  }
  if (s.mapi_port == s.nspi_port) {
    *error = "nspi_port: must differ from mapi_port";
    return std::nullopt;
  }
  return s;
}

FlowAdvice MapiBox::OnNewFlow(const tcp::endpoint& client, const tcp::endpoint& server) {
  Load();
  auto now = Clock::now();
  if (now.time_since_epoch().count() >= next_expiry_.load()) {
    // A binding expired: out of the file and kernel. Not asked again until written.
    next_expiry_ = Clock::time_point::max().time_since_epoch().count();
    RequestPersist();
  }
  std::lock_guard lock(mu_);
  if (server.port() == kEpmPort) {
    if (settings_.mode == MapiSettings::Mode::kPassThrough) {
      return {true, "mode = pass-through: the endpoint mapper is left alone", std::nullopt};
    }
    // A session's first connection decides for all of them (session affinity).
    AffinityTable::Entry& a = sessions_.At(client.address(), server.address(), now);
    if (a.expires < now) {
      a.pass_through = connections_.load() >= settings_.admission_connections;
      a.expires = now + settings_.binding_ttl;
    }
    if (a.pass_through) {
      return {true,
              "admission control: " + std::to_string(connections_.load()) + " MAPI/EPM connections on this box (limit " +
                  std::to_string(settings_.admission_connections) + "): this client's session passes through whole",
              std::nullopt};
    }
    return {};
  }
  const Address& s = server.address();
  auto binding = bindings_.find({s, server.port()});
  if (binding != bindings_.end() && binding->second.expires > now) {
    return {false, "", binding->second.real_port};
  }
  // A real port this box knows for this server: the session's decision holds.
  for (const auto& [key, b] : bindings_) {
    if (key.first == s && b.real_port == server.port() && b.expires > now) {
      const AffinityTable::Entry* a = sessions_.Find(client.address(), server.address());
      if (a != nullptr && a->expires > now && a->pass_through) {
        return {true, "session affinity: this client's MAPI session with this server passes through", std::nullopt};
      }
    }
  }
  return {};
}

std::vector<std::pair<std::string, uint64_t>> MapiBox::Gauges() const {
  uint64_t live = 0;
  {
    std::lock_guard lock(mu_);
    auto now = Clock::now();
    for (const auto& [key, b] : bindings_) live += b.expires > now;
  }
  return {{"connections", connections_.load()},
          {"admission_connections", settings_.admission_connections},
          {"bindings", live}};
}

std::vector<ModuleTable> MapiBox::Tables() const {
  // Asked by a running daemon's status page: the box is in use, so the bindings a
  // restart kept are read now (not at the next connection), as the kernel has them.
  const_cast<MapiBox*>(this)->Load();
  ModuleTable t{"port_bindings",
                {{"server"}, {"proxy_port", true}, {"real_port", true}, {"interface"}, {"expires_in_s", true}},
                {}};
  // Copied under the lock, formatted after it: the interception thread's OnNewFlow
  // waits on that lock.
  std::vector<std::pair<Key, Binding>> live;
  auto now = Clock::now();
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, b] : bindings_) {
      if (b.expires > now && live.size() < kMaxSavedBindings) live.emplace_back(key, b);
    }
  }
  for (const auto& [key, b] : live) {
    auto left = std::chrono::duration_cast<std::chrono::seconds>(b.expires - now).count();
    t.rows.push_back({key.first.to_string(), std::to_string(key.second), std::to_string(b.real_port), b.interface,
                      std::to_string(left)});
  }
  return {std::move(t)};
}

bool MapiBox::Bind(const Address& server, uint16_t proxy_port, uint16_t real_port, std::string interface) {
  Load();
  {
    std::lock_guard lock(mu_);
    auto now = Clock::now();
    Binding& b = bindings_[{server, proxy_port}];
    if (b.expires > now && b.real_port != real_port) return false;
    b.real_port = real_port;
    b.interface = std::move(interface);
    b.expires = now + settings_.binding_ttl;
    // Bounded: forget what expired.
    if (bindings_.size() > 4096) std::erase_if(bindings_, [&](const auto& e) { return e.second.expires < now; });
  }
  RequestPersist();
  return true;
}

std::optional<MapiBox::Binding> MapiBox::Lookup(const Address& server, uint16_t proxy_port) const {
  std::lock_guard lock(mu_);
  auto it = bindings_.find({server, proxy_port});
  if (it == bindings_.end() || it->second.expires < Clock::now()) return std::nullopt;
  return it->second;
}

std::optional<std::pair<uint16_t, MapiBox::Binding>> MapiBox::FindByRealPort(const Address& server, uint16_t real_port) const {
  std::lock_guard lock(mu_);
  for (const auto& [key, b] : bindings_) {
    if (key.first == server && b.real_port == real_port && b.expires > Clock::now()) return std::pair{key.second, b};
  }
  return std::nullopt;
}

}  // namespace wanopt::protocols::epm
