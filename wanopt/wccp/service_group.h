// One WCCPv2 service group as this box, a web cache, takes part in it
// (draft-wilson-wrec-wccp-v2, draft-mclaggan-wccp-v2rev1): the protocol logic only.
// No sockets and no clock of its own: the agent (agent.h) feeds it datagrams and
// ticks and sends what it returns, so every rule here is testable without a network.
//
//  - Here_I_Am to each configured router every `here_i_am_interval`, and at once
//    when a router sends a Removal_Query about this box.
//  - I_See_You: the router's receive id and view (member change number, the caches
//    it redirects to), its capabilities. The methods used are the ones both sides
//    offer (forwarding and return: L2 preferred when both offer it, then GRE;
//    assignment: the configured one). A router that offers none of this box's
//    methods is listed with the reason and not used. A router silent for
//    3 x here_i_am_interval is dropped from the view.
//  - This box's Web-Cache View: the usable routers and the union of their caches;
//    its change number moves whenever either set changes.
//  - The designated cache is the lowest address among the caches in the view. When
//    that is this box it sends Redirect_Assign to every usable router that lists it:
//    a hash assignment (256 buckets by weight, assignment.h) or a mask assignment,
//    at once when the view changes and once per interval otherwise.
//  - MD5 service security when a password is set: what does not verify is counted
//    and ignored, as is a message of another WCCP version.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "wanopt/wccp/message.h"

namespace wanopt::wccp {

struct ServiceGroupSettings {
  ServiceInfo service;
  std::vector<uint32_t> routers;  // unicast router addresses (host order)
  std::string password;           // "" = no service security
  uint32_t forwarding = capability::kGre | capability::kL2;  // methods this box accepts
  uint32_t return_method = capability::kGre | capability::kL2;
  uint32_t assignment = capability::kHash;  // kHash or kMask: what this box assigns when designated
  uint16_t weight = 0;
  std::chrono::milliseconds here_i_am_interval{10000};
};

// WAAS's service groups: 61 hashes on the source address (the LAN side), 62 on the
// destination address (the WAN side); TCP, priority 34, every port.
ServiceInfo WaasService(uint8_t id);

class ServiceGroup {
 public:
  using Clock = std::chrono::steady_clock;

  struct Datagram {
    uint32_t to = 0;
    std::vector<uint8_t> bytes;
  };

  struct RouterStatus {
    uint32_t ip = 0;
    bool usable = false;       // heard from recently, methods agreed
    bool lists_us = false;     // its view has this box among its caches
    uint32_t receive_id = 0;
    uint32_t change_number = 0;  // its member change number
    std::vector<uint32_t> caches;
    uint32_t forwarding = 0, return_method = 0, assignment = 0;  // negotiated (one bit each), 0 if none
    std::string problem;       // why it is not usable
    std::optional<Clock::time_point> last_heard;
  };
  struct Status {
    ServiceInfo service;
    uint32_t own_ip = 0;
    uint32_t change_number = 0;       // this box's Web-Cache View
    std::vector<uint32_t> caches;     // in the view, this box included once it is listed
    std::optional<uint32_t> designated;
    bool designated_here = false;
    // The last assignment this box sent (designated only): per cache, its buckets
    // (hash) or values (mask).
    uint32_t assignment_method = 0;
    uint32_t assignment_change = 0;
    std::vector<std::pair<uint32_t, unsigned>> shares;
    std::vector<RouterStatus> routers;
    uint64_t sent_here_i_am = 0, sent_redirect_assign = 0, received_i_see_you = 0, received_removal_query = 0;
    uint64_t bad_security = 0, bad_version = 0, malformed = 0, other = 0;
  };

  ServiceGroup(ServiceGroupSettings settings, uint32_t own_ip);
  const ServiceGroupSettings& settings() const { return settings_; }

  // What is due at `now` (Here_I_Am, a Redirect_Assign that waited, routers timed out).
  std::vector<Datagram> Tick(Clock::time_point now);
  // A datagram for this service group from `from` (the agent dispatches by service id).
  std::vector<Datagram> OnDatagram(uint32_t from, std::span<const uint8_t> bytes, Clock::time_point now);

  Status status() const;
  // A usable router whose negotiated return method is GRE (declined packets go back
  // to it in GRE), or 0.
  uint32_t gre_return_router() const;

 private:
  struct Router {
    RouterStatus s;
    Clock::time_point next_here_i_am{};
    Clock::time_point last_assign{};
  };

  void OnISeeYou(Router& router, const Message& m, Clock::time_point now, std::vector<Datagram>& out);
  void RebuildView();
  void MaybeAssign(Router& router, Clock::time_point now, bool force, std::vector<Datagram>& out);
  std::vector<uint8_t> Seal(const Message& m) const;
  Datagram HereIAm(const Router& router);
  Message RedirectAssign();

  ServiceGroupSettings settings_;
  uint32_t own_ip_;
  std::map<uint32_t, Router> routers_;
  uint32_t change_number_ = 0;
  std::vector<uint32_t> caches_;
  std::map<uint32_t, uint16_t> weights_;  // as the routers' views give them
  uint32_t assignment_change_ = 0;
  uint32_t assigned_for_view_ = UINT32_MAX;  // the view change number last assigned for
  Status counters_;                          // only the counters and the last assignment are used
};

}  // namespace wanopt::wccp
