#include "wanopt/wccp/service_group.h"

#include <algorithm>

#include "util/bytes.h"
#include "wanopt/wccp/assignment.h"

namespace wanopt::wccp {
namespace {

// The one method both offer: L2 when both can (no encapsulation), else GRE.
uint32_t Pick(uint32_t ours, uint32_t theirs) {
  uint32_t both = ours & theirs;
  if (both & capability::kL2) return capability::kL2;
  if (both & capability::kGre) return capability::kGre;
  return 0;
}

}  // namespace

ServiceInfo WaasService(uint8_t id) {
  ServiceInfo s;
  s.type = ServiceInfo::kDynamic;
  s.id = id;
  s.priority = 34;
  s.protocol = 6;
  s.flags = id == 62 ? service_flag::kDstIpHash : service_flag::kSrcIpHash;
  return s;
}

ServiceGroup::ServiceGroup(ServiceGroupSettings settings, uint32_t own_ip)
    : settings_(std::move(settings)), own_ip_(own_ip) {
  for (uint32_t ip : settings_.routers) routers_[ip].s.ip = ip;
}

std::vector<uint8_t> ServiceGroup::Seal(const Message& m) const {
  auto wire = Encode(m);
  if (!wire) return {};
  if (!settings_.password.empty()) Sign(*wire, settings_.password);
  return std::move(*wire);
}

ServiceGroup::Datagram ServiceGroup::HereIAm(const Router& router) {
  Message m;
  m.type = MessageType::kHereIAm;
  m.security = SecurityInfo{settings_.password.empty() ? kSecurityNone : kSecurityMd5, {}};
  m.service = settings_.service;
  WebCacheIdentity id;
  id.ip = own_ip_;
  id.data_type = WebCacheIdentity::kHash;
  id.weight = settings_.weight;
  m.web_cache_identity = id;
  WebCacheView view;
  view.change_number = change_number_;
  for (const auto& [ip, r] : routers_) {
    if (r.s.last_heard) view.routers.push_back({ip, r.s.receive_id});
  }
  view.caches = caches_;
  m.web_cache_view = view;
  Capabilities caps;
  caps.Set(capability::kForwardingMethod, settings_.forwarding);
  caps.Set(capability::kAssignmentMethod, settings_.assignment);
  caps.Set(capability::kReturnMethod, settings_.return_method);
  m.capabilities = caps;
  ++counters_.sent_here_i_am;
  return {router.s.ip, Seal(m)};
}

std::vector<ServiceGroup::Datagram> ServiceGroup::Tick(Clock::time_point now) {
  std::vector<Datagram> out;
  bool lost = false;
  for (auto& [ip, r] : routers_) {
    if (r.s.last_heard && now - *r.s.last_heard > 3 * settings_.here_i_am_interval) {
      r.s.last_heard.reset();
      r.s.usable = false;
      r.s.lists_us = false;
      r.s.caches.clear();
      r.s.problem = "no I_See_You for " + std::to_string(3 * settings_.here_i_am_interval.count() / 1000) + " s";
      lost = true;
    }
  }
  if (lost) RebuildView();
  for (auto& [ip, r] : routers_) {
    if (now >= r.next_here_i_am) {
      out.push_back(HereIAm(r));
      r.next_here_i_am = now + settings_.here_i_am_interval;
    }
  }
  return out;
}

std::vector<ServiceGroup::Datagram> ServiceGroup::OnDatagram(uint32_t from, std::span<const uint8_t> bytes,
                                                             Clock::time_point now) {
  std::vector<Datagram> out;
  if (bytes.size() >= kHeaderSize && bytes::GetBe16(bytes.data() + 4) != kVersion) {
    ++counters_.bad_version;
    return out;
  }
  auto m = Decode(bytes);
  if (!m) {
    ++counters_.malformed;
    return out;
  }
  bool md5 = m->security && m->security->option == kSecurityMd5;
  if (settings_.password.empty() ? md5 : !Verify(bytes, settings_.password)) {
    ++counters_.bad_security;
    return out;
  }
  auto router = routers_.find(from);
  if (router == routers_.end() || !m->service || m->service->id != settings_.service.id) {
    ++counters_.other;
    return out;
  }
  if (m->type == MessageType::kISeeYou) {
    OnISeeYou(router->second, *m, now, out);
  } else if (m->type == MessageType::kRemovalQuery && m->query && m->query->target == own_ip_) {
    // The router is about to drop this box: answer at once.
    ++counters_.received_removal_query;
    out.push_back(HereIAm(router->second));
    router->second.next_here_i_am = now + settings_.here_i_am_interval;
  } else {
    ++counters_.other;
  }
  return out;
}

void ServiceGroup::OnISeeYou(Router& router, const Message& m, Clock::time_point now, std::vector<Datagram>& out) {
  if (!m.router_identity || !m.router_view) {
    ++counters_.malformed;
    return;
  }
  ++counters_.received_i_see_you;
  RouterStatus& s = router.s;
  s.last_heard = now;
  s.receive_id = m.router_identity->router.receive_id;
  s.change_number = m.router_view->member_change_number;
  s.caches.clear();
  for (const auto& c : m.router_view->caches) {
    s.caches.push_back(c.ip);
    weights_[c.ip] = c.weight;
  }
  std::sort(s.caches.begin(), s.caches.end());
  s.lists_us = std::binary_search(s.caches.begin(), s.caches.end(), own_ip_);
  // Without a Capabilities component a router offers the draft's defaults.
  uint32_t forwarding = capability::kGre, ret = capability::kGre, assignment = capability::kHash;
  if (m.capabilities) {
    forwarding = m.capabilities->Get(capability::kForwardingMethod).value_or(forwarding);
    ret = m.capabilities->Get(capability::kReturnMethod).value_or(ret);
    assignment = m.capabilities->Get(capability::kAssignmentMethod).value_or(assignment);
  }
  s.forwarding = Pick(settings_.forwarding, forwarding);
  s.return_method = Pick(settings_.return_method, ret);
  s.assignment = settings_.assignment & assignment;
  if (!s.forwarding) s.problem = "no forwarding method in common (the router offers " + std::to_string(forwarding) + ")";
  else if (!s.return_method) s.problem = "no return method in common (the router offers " + std::to_string(ret) + ")";
  else if (!s.assignment) s.problem = std::string("the router does not take ") + (settings_.assignment == capability::kMask ? "mask" : "hash") + " assignment";
  else s.problem.clear();
  s.usable = s.problem.empty();
  RebuildView();
  MaybeAssign(router, now, false, out);
}

void ServiceGroup::RebuildView() {
  std::vector<uint32_t> caches;
  for (const auto& [ip, r] : routers_) {
    if (r.s.usable) caches.insert(caches.end(), r.s.caches.begin(), r.s.caches.end());
  }
  std::sort(caches.begin(), caches.end());
  caches.erase(std::unique(caches.begin(), caches.end()), caches.end());
  if (caches.size() > kMaxCaches) caches.resize(kMaxCaches);
  if (caches != caches_) {
    caches_ = std::move(caches);
    ++change_number_;
  }
}

void ServiceGroup::MaybeAssign(Router& router, Clock::time_point now, bool force, std::vector<Datagram>& out) {
  if (caches_.empty() || caches_.front() != own_ip_) return;  // not the designated cache
  if (assigned_for_view_ != change_number_) {
    // The view changed: a new assignment, to every router that can take it.
    assigned_for_view_ = change_number_;
    ++assignment_change_;
    std::vector<uint8_t> wire = Seal(RedirectAssign());
    for (auto& [ip, r] : routers_) {
      if (!r.s.usable || !r.s.lists_us) continue;
      out.push_back({ip, wire});
      r.last_assign = now;
      ++counters_.sent_redirect_assign;
    }
    return;
  }
  if (router.s.usable && router.s.lists_us && (force || now - router.last_assign >= settings_.here_i_am_interval)) {
    out.push_back({router.s.ip, Seal(RedirectAssign())});
    router.last_assign = now;
    ++counters_.sent_redirect_assign;
  }
}

Message ServiceGroup::RedirectAssign() {
  Message m;
  m.type = MessageType::kRedirectAssign;
  m.security = SecurityInfo{settings_.password.empty() ? kSecurityNone : kSecurityMd5, {}};
  m.service = settings_.service;
  AssignmentKey key{own_ip_, assignment_change_};
  std::vector<RouterAssignment> routers;
  for (const auto& [ip, r] : routers_) {
    if (r.s.usable && r.s.lists_us) routers.push_back({ip, r.s.receive_id, r.s.change_number});
  }
  counters_.assignment_method = settings_.assignment;
  counters_.assignment_change = assignment_change_;
  counters_.shares.clear();
  if (settings_.assignment == capability::kMask) {
    MaskAssignment mask{key, routers, {AssignMask(caches_, settings_.service.flags)}};
    for (uint32_t ip : caches_) {
      unsigned n = 0;
      for (const auto& v : mask.sets[0].values) n += v.cache_ip == ip;
      counters_.shares.push_back({ip, n});
    }
    AlternateAssignment alt;
    alt.type = AlternateAssignment::kMask;
    alt.mask = std::move(mask);
    m.alternate_assignment = std::move(alt);
    return m;
  }
  std::vector<CacheWeight> weights;
  for (uint32_t ip : caches_) weights.push_back({ip, ip == own_ip_ ? settings_.weight : weights_[ip]});
  HashAssignment hash{key, routers, caches_, AssignBuckets(weights)};
  for (uint32_t ip : caches_) counters_.shares.push_back({ip, BucketsOf(hash.buckets, caches_, ip)});
  m.assignment = std::move(hash);
  return m;
}

uint32_t ServiceGroup::gre_return_router() const {
  for (const auto& [ip, r] : routers_) {
    if (r.s.usable && r.s.return_method == capability::kGre) return ip;
  }
  return 0;
}

ServiceGroup::Status ServiceGroup::status() const {
  Status s = counters_;
  s.service = settings_.service;
  s.own_ip = own_ip_;
  s.change_number = change_number_;
  s.caches = caches_;
  if (!caches_.empty()) s.designated = caches_.front();
  s.designated_here = s.designated == own_ip_;
  if (!s.designated_here) s.shares.clear();
  for (const auto& [ip, r] : routers_) s.routers.push_back(r.s);
  return s;
}

}  // namespace wanopt::wccp
