// The WCCP surfaces: /api/wccp (JSON), `wanopt show wccp` (text), /metrics lines.
#include <boost/asio/ip/address_v4.hpp>
#include <sstream>

#include "util/json.h"
#include "wanopt/status/render.h"

namespace wanopt::status {
namespace {

using wccp::ServiceGroup;

std::string Ip(uint32_t ip) { return boost::asio::ip::address_v4(ip).to_string(); }

std::string Method(uint32_t m) {
  if (m == wccp::capability::kGre) return "gre";
  if (m == wccp::capability::kL2) return "l2";
  return m ? "gre+l2" : "none";
}
std::string Assignment(uint32_t m) {
  if (m == wccp::capability::kHash) return "hash";
  if (m == wccp::capability::kMask) return "mask";
  return m ? "hash+mask" : "none";
}

// A Prometheus label value: backslash, quote and newline escaped.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string Age(const std::optional<ServiceGroup::Clock::time_point>& t) {
  if (!t) return "never";
  auto s = std::chrono::duration_cast<std::chrono::seconds>(ServiceGroup::Clock::now() - *t).count();
  return std::to_string(s) + "s ago";
}

}  // namespace

std::string WccpJson(const Model& m) {
  json::Writer w;
  w.BeginObject();
  w.Key("boxes");
  w.BeginArray();
  for (const Model::WccpBox& entry : m.wccp) {
    const std::string& box = entry.box;
    const auto& groups = entry.groups;
    w.BeginObject();
    w.Field("box", box);
    w.Key("service_groups");
    w.BeginArray();
    for (const auto& g : groups) {
      w.BeginObject();
      w.Field("service", static_cast<uint64_t>(g.service.id));
      w.Field("address", Ip(g.own_ip));
      w.Field("change_number", static_cast<uint64_t>(g.change_number));
      w.Key("caches");
      w.BeginArray();
      for (uint32_t c : g.caches) w.Value(Ip(c));
      w.EndArray();
      w.Key("designated");
      if (g.designated) w.Value(Ip(*g.designated));
      else w.Null();
      w.Field("designated_here", g.designated_here);
      w.Field("assignment", Assignment(g.assignment_method));
      w.Field("assignment_change", static_cast<uint64_t>(g.assignment_change));
      w.Key("shares");  // what this box assigned, when it is the designated cache
      w.BeginArray();
      for (const auto& [ip, n] : g.shares) {
        w.BeginObject();
        w.Field("cache", Ip(ip));
        w.Field(g.assignment_method == wccp::capability::kMask ? "values" : "buckets", static_cast<uint64_t>(n));
        w.EndObject();
      }
      w.EndArray();
      w.Key("routers");
      w.BeginArray();
      for (const auto& r : g.routers) {
        w.BeginObject();
        w.Field("address", Ip(r.ip));
        w.Field("usable", r.usable);
        w.Field("lists_this_box", r.lists_us);
        w.Field("receive_id", static_cast<uint64_t>(r.receive_id));
        w.Field("change_number", static_cast<uint64_t>(r.change_number));
        w.Field("forwarding", Method(r.forwarding));
        w.Field("return", Method(r.return_method));
        w.Field("assignment", Assignment(r.assignment));
        w.Field("last_heard", Age(r.last_heard));
        w.Field("problem", r.problem);
        w.EndObject();
      }
      w.EndArray();
      w.Key("messages");
      w.BeginObject();
      w.Field("here_i_am_sent", g.sent_here_i_am);
      w.Field("redirect_assign_sent", g.sent_redirect_assign);
      w.Field("i_see_you_received", g.received_i_see_you);
      w.Field("removal_query_received", g.received_removal_query);
      w.Field("bad_security", g.bad_security);
      w.Field("bad_version", g.bad_version);
      w.Field("malformed", g.malformed);
      w.Field("other", g.other);
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
    w.Key("gre");  // GRE-redirected packets handed to the kernel
    if (entry.gre) {
      w.BeginObject();
      w.Field("tun", entry.tun);
      w.Field("packets", entry.gre_packets);
      w.Field("bytes", entry.gre_bytes);
      w.Field("refused", entry.gre_refused);
      w.Field("dropped", entry.gre_dropped);
      w.Field("returned_gre", entry.returned_gre);
      w.Field("returned_routed", entry.returned_routed);
      w.EndObject();
    } else {
      w.Null();
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str();
}

std::string WccpText(const Model& m) {
  std::ostringstream out;
  if (m.wccp.empty()) return "WCCP is not configured on this box ([wccp] in the config)\n";
  for (const Model::WccpBox& entry : m.wccp) {
    const std::string& box = entry.box;
    const auto& groups = entry.groups;
    if (entry.gre) {
      out << box << ": GRE-redirected packets: " << entry.gre_packets << " (" << entry.gre_bytes << " bytes) handed to "
          << entry.tun << ", " << entry.gre_refused << " refused, " << entry.gre_dropped << " dropped; declined and returned: "
          << entry.returned_gre << " in GRE, " << entry.returned_routed << " routed\n";
    } else {
      out << box << ": GRE forwarding not configured (L2 only)\n";
    }
    for (const auto& g : groups) {
      out << box << ": service group " << static_cast<int>(g.service.id) << " as " << Ip(g.own_ip) << ", view #"
          << g.change_number << ", caches:";
      for (uint32_t c : g.caches) out << " " << Ip(c);
      if (g.caches.empty()) out << " (none yet)";
      out << "\n  designated: " << (g.designated ? Ip(*g.designated) : "none");
      if (g.designated_here) out << " (this box)";
      out << "\n";
      if (g.designated_here && !g.shares.empty()) {
        out << "  assignment " << g.assignment_change << " (" << Assignment(g.assignment_method) << "):";
        const char* unit = g.assignment_method == wccp::capability::kMask ? " values" : " buckets";
        for (size_t i = 0; i < g.shares.size(); ++i) {
          out << (i ? ", " : " ") << Ip(g.shares[i].first) << " " << g.shares[i].second << unit;
        }
        out << "\n";
      } else if (g.designated) {
        out << "  assignment: made by the designated cache " << Ip(*g.designated) << "\n";
      }
      for (const auto& r : g.routers) {
        out << "  router " << Ip(r.ip) << ": " << (r.usable ? "usable" : "not usable") << ", forwarding "
            << Method(r.forwarding) << ", return " << Method(r.return_method) << ", " << Assignment(r.assignment)
            << " assignment, its view #" << r.change_number << (r.lists_us ? " lists this box" : " does not list this box")
            << ", heard " << Age(r.last_heard);
        if (!r.problem.empty()) out << ": " << r.problem;
        out << "\n";
      }
      out << "  messages: " << g.sent_here_i_am << " Here_I_Am and " << g.sent_redirect_assign << " Redirect_Assign sent, "
          << g.received_i_see_you << " I_See_You and " << g.received_removal_query << " Removal_Query received; refused: "
          << g.bad_security << " bad MD5, " << g.bad_version << " other version, " << g.malformed << " malformed, "
          << g.other << " other\n";
    }
  }
  return out.str();
}

std::string WccpMetrics(const Model& m) {
  std::ostringstream out;
  if (m.wccp.empty()) return "";
  out << "# HELP wanopt_wccp_buckets Hash buckets (or mask values) the designated cache assigned to each cache.\n"
         "# TYPE wanopt_wccp_buckets gauge\n";
  for (const Model::WccpBox& entry : m.wccp) {
    const std::string& box = entry.box;
    const auto& groups = entry.groups;
    for (const auto& g : groups) {
      for (const auto& [ip, n] : g.shares) {
        out << "wanopt_wccp_buckets{box=\"" << Label(box) << "\",service=\"" << static_cast<int>(g.service.id) << "\",cache=\""
            << Ip(ip) << "\"} " << n << "\n";
      }
    }
  }
  out << "# HELP wanopt_wccp_routers_usable Routers this box is registered with and can use.\n"
         "# TYPE wanopt_wccp_routers_usable gauge\n";
  for (const Model::WccpBox& entry : m.wccp) {
    const std::string& box = entry.box;
    const auto& groups = entry.groups;
    for (const auto& g : groups) {
      unsigned usable = 0;
      for (const auto& r : g.routers) usable += r.usable;
      out << "wanopt_wccp_routers_usable{box=\"" << Label(box) << "\",service=\"" << static_cast<int>(g.service.id) << "\"} "
          << usable << "\n";
    }
  }
  out << "# HELP wanopt_wccp_gre_packets_total GRE-redirected packets handed to the kernel, and refused.\n"
         "# TYPE wanopt_wccp_gre_packets_total counter\n";
  for (const Model::WccpBox& entry : m.wccp) {
    if (!entry.gre) continue;
    out << "wanopt_wccp_gre_packets_total{box=\"" << Label(entry.box) << "\",outcome=\"taken\"} " << entry.gre_packets << "\n"
        << "wanopt_wccp_gre_packets_total{box=\"" << Label(entry.box) << "\",outcome=\"refused\"} " << entry.gre_refused << "\n"
        << "wanopt_wccp_gre_packets_total{box=\"" << Label(entry.box) << "\",outcome=\"dropped\"} " << entry.gre_dropped << "\n"
        << "wanopt_wccp_gre_packets_total{box=\"" << Label(entry.box) << "\",outcome=\"returned_gre\"} " << entry.returned_gre << "\n"
        << "wanopt_wccp_gre_packets_total{box=\"" << Label(entry.box) << "\",outcome=\"returned_routed\"} " << entry.returned_routed << "\n";
  }
  out << "# HELP wanopt_wccp_messages_total WCCP messages by kind.\n# TYPE wanopt_wccp_messages_total counter\n";
  for (const Model::WccpBox& entry : m.wccp) {
    const std::string& box = entry.box;
    const auto& groups = entry.groups;
    for (const auto& g : groups) {
      std::string l = "{box=\"" + Label(box) + "\",service=\"" + std::to_string(g.service.id) + "\",kind=\"";
      out << "wanopt_wccp_messages_total" << l << "here_i_am_sent\"} " << g.sent_here_i_am << "\n"
          << "wanopt_wccp_messages_total" << l << "redirect_assign_sent\"} " << g.sent_redirect_assign << "\n"
          << "wanopt_wccp_messages_total" << l << "i_see_you_received\"} " << g.received_i_see_you << "\n"
          << "wanopt_wccp_messages_total" << l << "bad_security\"} " << g.bad_security << "\n"
          << "wanopt_wccp_messages_total" << l << "bad_version\"} " << g.bad_version << "\n"
          << "wanopt_wccp_messages_total" << l << "malformed\"} " << g.malformed << "\n";
    }
  }
  return out.str();
}

}  // namespace wanopt::status
