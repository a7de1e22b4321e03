// [wccp] and its [[wccp.service]] groups: this box as a WCCPv2 web cache.
#include "wanopt/config/config_internal.h"

namespace wanopt::config_internal {
namespace {

uint32_t Ipv4(TableReader& r, std::string_view key, const toml::node* node, const std::string& text) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address_v4(text, ec);
  if (ec) r.Fail(key, node, "'" + text + "' is not an IPv4 address");
  return address.to_uint();
}

uint32_t Method(TableReader& r, std::string_view key, uint32_t fallback) {
  auto text = r.String(key);
  if (!text) return fallback;
  if (*text == "gre") return wccp::capability::kGre;
  if (*text == "l2") return wccp::capability::kL2;
  if (*text == "any") return wccp::capability::kGre | wccp::capability::kL2;
  r.Fail(key, r.Get(key), "'" + *text + "' is not gre, l2 or any");
}

wccp::ServiceInfo ReadService(TableReader& r) {
  wccp::ServiceInfo s;
  s.type = wccp::ServiceInfo::kDynamic;
  auto id = r.Integer("id", 51, 255);
  if (!id) r.Fail("id", nullptr, "is required (51..255: dynamic service groups; 61 and 62 are WAAS's)");
  s.id = static_cast<uint8_t>(*id);
  if (*id == 61 || *id == 62) s = wccp::WaasService(static_cast<uint8_t>(*id));
  if (auto p = r.Integer("priority", 0, 255)) s.priority = static_cast<uint8_t>(*p);
  if (auto proto = r.String("protocol")) {
    if (*proto == "tcp") s.protocol = 6;
    else if (*proto == "udp") s.protocol = 17;
    else r.Fail("protocol", r.Get("protocol"), "'" + *proto + "' is not tcp or udp");
  }
  if (auto hash = r.String("hash")) {
    if (*hash == "source") s.flags = (s.flags & ~wccp::service_flag::kDstIpHash) | wccp::service_flag::kSrcIpHash;
    else if (*hash == "destination") s.flags = (s.flags & ~wccp::service_flag::kSrcIpHash) | wccp::service_flag::kDstIpHash;
    else r.Fail("hash", r.Get("hash"), "'" + *hash + "' is not source or destination");
  }
  if (const toml::node* ports = r.Get("ports")) {
    if (!ports->is_array() || ports->as_array()->size() > 8) r.Fail("ports", ports, "must be an array of up to 8 ports");
    size_t i = 0;
    for (const toml::node& p : *ports->as_array()) {
      if (!p.is_integer() || p.as_integer()->get() < 1 || p.as_integer()->get() > 65535) {
        r.Fail("ports", &p, "must be an array of up to 8 ports (1..65535)");
      }
      s.ports[i++] = static_cast<uint16_t>(p.as_integer()->get());
    }
    if (i) s.flags |= wccp::service_flag::kPortsDefined;
  }
  r.RejectUnknownKeys();
  return s;
}

}  // namespace

void ReadWccp(TableReader& r, Config& config) {
  WccpConfig w;
  if (!config.intercept) {
    r.Fail("address", nullptr, "[wccp] needs [intercept]: what the routers redirect goes through interception");
  }
  auto address = r.String("address");
  if (!address) r.Fail("address", nullptr, "is required: this box's IPv4 address towards the routers");
  w.address = Ipv4(r, "address", r.Get("address"), *address);
  const toml::node* routers = r.Get("routers");
  if (!routers || !routers->is_array() || routers->as_array()->empty()) {
    r.Fail("routers", routers, "is required: an array of router addresses (like [\"198.18.1.1\"])");
  }
  for (const toml::node& item : *routers->as_array()) {
    if (!item.is_string()) r.Fail("routers", &item, "must be an array of IPv4 addresses");
    w.routers.push_back(Ipv4(r, "routers", &item, item.as_string()->get()));
  }
  if (w.routers.size() > wccp::kMaxRouters) r.Fail("routers", routers, "at most 32 routers");
  if (auto password = r.String("password")) {
    if (password->size() > 8) r.Fail("password", r.Get("password"), "WCCP passwords are at most 8 characters");
    w.password = *password;
  }
  w.forwarding = Method(r, "forwarding", w.forwarding);
  w.return_method = Method(r, "return", w.return_method);
  if (auto a = r.String("assignment")) {
    if (*a == "hash") w.assignment = wccp::capability::kHash;
    else if (*a == "mask") w.assignment = wccp::capability::kMask;
    else r.Fail("assignment", r.Get("assignment"), "'" + *a + "' is not hash or mask");
  }
  if (auto weight = r.Integer("weight", 0, 65535)) w.weight = static_cast<uint16_t>(*weight);
  if (auto ms = r.Millis("here_i_am_interval_ms", 1000, 60000)) w.here_i_am_interval = *ms;
  if (auto tun = r.String("tun")) {
    bool ok = !tun->empty() && tun->size() < 16 && std::all_of(tun->begin(), tun->end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    });
    if (!ok) r.Fail("tun", r.Get("tun"), "'" + *tun + "' is not an interface name (1..15 of [a-z0-9_-])");
    w.tun = *tun;
  }
  if (const toml::node* services = r.Get("service")) {
    if (!services->is_array_of_tables()) r.Fail("service", services, "must be an array of tables ([[wccp.service]])");
    size_t index = 0;
    for (const toml::node& item : *services->as_array()) {
      TableReader s(*item.as_table(), "wccp.service[" + std::to_string(index++) + "]");
      wccp::ServiceInfo service = ReadService(s);
      for (const auto& other : w.services) {
        if (other.id == service.id) s.Fail("id", s.Get("id"), "service group " + std::to_string(service.id) + " given twice");
      }
      w.services.push_back(service);
    }
  } else {
    w.services = {wccp::WaasService(61), wccp::WaasService(62)};
  }
  r.RejectUnknownKeys();
  config.wccp = std::move(w);
}

}  // namespace wanopt::config_internal
