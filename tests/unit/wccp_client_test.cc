// The WCCPv2 client's protocol logic (wanopt/wccp/service_group.h, assignment.h)
// against a scripted router: Here_I_Am contents and timing, views and change
// numbers, the designated cache's hash and mask assignments, a second cache
// splitting the buckets, capability negotiation, MD5, versions, Removal_Query and
// a silent router.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "util/bytes.h"
#include "wanopt/wccp/assignment.h"
#include "wanopt/wccp/service_group.h"

using namespace wanopt::wccp;
using namespace std::chrono_literals;
using Clock = ServiceGroup::Clock;

namespace {

constexpr uint32_t kRouter = 0xC6120101;  // 198.18.1.1
constexpr uint32_t kBoxA = 0xC6120102;    // 198.18.1.2
constexpr uint32_t kBoxB = 0xC6120103;    // 198.18.1.3

ServiceGroupSettings Settings(std::string password = "") {
  ServiceGroupSettings s;
  s.service = WaasService(61);
  s.routers = {kRouter};
  s.password = std::move(password);
  s.forwarding = capability::kGre;
  s.return_method = capability::kGre;
  return s;
}

// The router's I_See_You listing `caches`.
std::vector<uint8_t> ISeeYou(std::vector<uint32_t> caches, uint32_t change, uint32_t receive_id,
                             std::string password = "", uint32_t forwarding = capability::kGre | capability::kL2,
                             uint8_t service = 61) {
  Message m;
  m.type = MessageType::kISeeYou;
  m.security = SecurityInfo{password.empty() ? kSecurityNone : kSecurityMd5, {}};
  m.service = WaasService(service);
  m.router_identity = RouterIdentity{{kRouter, receive_id}, kBoxA, caches};
  RouterView view;
  view.member_change_number = change;
  view.routers = {kRouter};
  for (uint32_t ip : caches) {
    WebCacheIdentity id;
    id.ip = ip;
    view.caches.push_back(id);
  }
  m.router_view = view;
  Capabilities caps;
  caps.Set(capability::kForwardingMethod, forwarding);
  caps.Set(capability::kAssignmentMethod, capability::kHash | capability::kMask);
  caps.Set(capability::kReturnMethod, capability::kGre | capability::kL2);
  m.capabilities = caps;
  auto wire = Encode(m);
  REQUIRE(wire);
  if (!password.empty()) REQUIRE(Sign(*wire, password));
  return *wire;
}

Message Only(const std::vector<ServiceGroup::Datagram>& out, MessageType type) {
  auto it = std::find_if(out.begin(), out.end(), [&](const auto& d) {
    auto m = Decode(d.bytes);
    return m && m->type == type;
  });
  REQUIRE(it != out.end());
  return *Decode(it->bytes);
}

}  // namespace

TEST_CASE("wccp client: Here_I_Am every interval, then the view and the designated cache's assignment") {
  ServiceGroup group(Settings(), kBoxA);
  auto t0 = Clock::now();
  auto out = group.Tick(t0);
  REQUIRE(out.size() == 1);
  CHECK(out[0].to == kRouter);
  Message hia = Only(out, MessageType::kHereIAm);
  CHECK(hia.service->id == 61);
  CHECK(hia.service->flags == service_flag::kSrcIpHash);
  CHECK(hia.web_cache_identity->ip == kBoxA);
  CHECK(hia.web_cache_view->routers.empty());  // no router heard yet
  CHECK(hia.capabilities->Get(capability::kForwardingMethod) == capability::kGre);
  CHECK(group.Tick(t0 + 5s).empty());     // not yet due
  CHECK(group.Tick(t0 + 10s).size() == 1);

  // The router answers, listing this box: it is designated and assigns all 256 buckets.
  out = group.OnDatagram(kRouter, ISeeYou({kBoxA}, 1, 77), t0 + 10s);
  Message ra = Only(out, MessageType::kRedirectAssign);
  REQUIRE(ra.assignment);
  CHECK(ra.assignment->key.ip == kBoxA);
  CHECK(ra.assignment->routers == std::vector<RouterAssignment>{{kRouter, 77, 1}});
  CHECK(ra.assignment->caches == std::vector<uint32_t>{kBoxA});
  CHECK(std::all_of(ra.assignment->buckets.begin(), ra.assignment->buckets.end(), [](uint8_t b) { return b == 0; }));
  auto st = group.status();
  CHECK(st.designated_here);
  CHECK(st.shares == std::vector<std::pair<uint32_t, unsigned>>{{kBoxA, 256}});
  CHECK(st.routers[0].usable);
  CHECK(st.routers[0].forwarding == capability::kGre);
  // The next Here_I_Am names the router with its receive id, and this box in the view.
  hia = Only(group.Tick(t0 + 20s), MessageType::kHereIAm);
  CHECK(hia.web_cache_view->routers == std::vector<RouterIdElement>{{kRouter, 77}});
  CHECK(hia.web_cache_view->caches == std::vector<uint32_t>{kBoxA});
  // The same view again: no new assignment until the interval has passed.
  CHECK(group.OnDatagram(kRouter, ISeeYou({kBoxA}, 1, 78), t0 + 15s).empty());
  CHECK(!group.OnDatagram(kRouter, ISeeYou({kBoxA}, 1, 79), t0 + 21s).empty());
}

TEST_CASE("wccp client: two boxes split the buckets, the lowest address assigns, the other does not") {
  ServiceGroup a(Settings(), kBoxA), b(Settings(), kBoxB);
  auto t = Clock::now();
  auto out = a.OnDatagram(kRouter, ISeeYou({kBoxB, kBoxA}, 2, 5), t);
  Message ra = Only(out, MessageType::kRedirectAssign);
  CHECK(ra.assignment->caches == std::vector<uint32_t>{kBoxA, kBoxB});
  CHECK(BucketsOf(ra.assignment->buckets, ra.assignment->caches, kBoxA) == 128);
  CHECK(BucketsOf(ra.assignment->buckets, ra.assignment->caches, kBoxB) == 128);
  CHECK(b.OnDatagram(kRouter, ISeeYou({kBoxA, kBoxB}, 2, 5), t).empty());  // not designated: no assignment
  CHECK(b.status().designated == kBoxA);
  CHECK_FALSE(b.status().designated_here);
  // B leaves the router's view: A's next assignment holds every bucket.
  out = a.OnDatagram(kRouter, ISeeYou({kBoxA}, 3, 6), t + 1s);
  ra = Only(out, MessageType::kRedirectAssign);
  CHECK(BucketsOf(ra.assignment->buckets, ra.assignment->caches, kBoxA) == 256);
  CHECK(a.status().assignment_change == 2);
}

TEST_CASE("wccp client: weights, mask assignment") {
  auto buckets = AssignBuckets({{1, 1}, {2, 3}});
  std::vector<uint32_t> caches = {1, 2};
  CHECK(BucketsOf(buckets, caches, 1) == 64);
  CHECK(BucketsOf(buckets, caches, 2) == 192);
  buckets = AssignBuckets({{1, 0}, {2, 0}, {3, 0}});
  CHECK(BucketsOf(buckets, {1, 2, 3}, 1) + BucketsOf(buckets, {1, 2, 3}, 2) + BucketsOf(buckets, {1, 2, 3}, 3) == 256);

  ServiceGroupSettings s = Settings();
  s.assignment = capability::kMask;
  s.service = WaasService(62);
  ServiceGroup group(s, kBoxA);
  Message ra = Only(group.OnDatagram(kRouter, ISeeYou({kBoxA, kBoxB}, 1, 1, "", capability::kGre, 62), Clock::now()),
                    MessageType::kRedirectAssign);
  REQUIRE(ra.alternate_assignment);
  CHECK(ra.alternate_assignment->type == AlternateAssignment::kMask);
  const auto& set = ra.alternate_assignment->mask.sets.at(0);
  CHECK(set.mask.dst_ip_mask == kDefaultIpMask);  // service 62 hashes on the destination
  CHECK(set.values.size() == 64);
  CHECK(std::count_if(set.values.begin(), set.values.end(), [](const ValueElement& v) { return v.cache_ip == kBoxB; }) == 32);
}

TEST_CASE("wccp client: MD5, versions, strangers, no common method, Removal_Query, a silent router") {
  auto t = Clock::now();
  ServiceGroup group(Settings("secret"), kBoxA);
  Message hia = Only(group.Tick(t), MessageType::kHereIAm);
  CHECK(hia.security->option == kSecurityMd5);
  CHECK(Verify(group.Tick(t + 10s)[0].bytes, "secret"));
  CHECK(group.OnDatagram(kRouter, ISeeYou({kBoxA}, 1, 1, "wrong"), t).empty());
  CHECK(group.OnDatagram(kRouter, ISeeYou({kBoxA}, 1, 1), t).empty());  // no security at all
  CHECK(group.status().bad_security == 2);
  auto v1 = ISeeYou({kBoxA}, 1, 1, "secret");
  v1[4] = 0x01;
  v1[5] = 0x00;
  CHECK(group.OnDatagram(kRouter, v1, t).empty());
  CHECK(group.status().bad_version == 1);
  CHECK(group.OnDatagram(kRouter, std::vector<uint8_t>{0, 0, 0, 11, 2, 0, 0, 99}, t).empty());
  CHECK(group.status().malformed == 1);
  CHECK(group.OnDatagram(0x01020304, ISeeYou({kBoxA}, 1, 1, "secret"), t).empty());  // not a configured router
  CHECK(group.status().other == 1);
  CHECK(!group.OnDatagram(kRouter, ISeeYou({kBoxA}, 1, 1, "secret"), t).empty());
  CHECK(group.status().routers[0].usable);

  // A router that forwards only by L2 to a box that takes only GRE: listed, not used.
  ServiceGroup gre_only(Settings(), kBoxA);
  CHECK(gre_only.OnDatagram(kRouter, ISeeYou({kBoxA}, 1, 1, "", capability::kL2), t).empty());
  auto st = gre_only.status();
  CHECK_FALSE(st.routers[0].usable);
  CHECK(st.routers[0].problem.rfind("no forwarding method in common", 0) == 0);
  CHECK(st.caches.empty());

  // Removal_Query about this box: a Here_I_Am at once.
  ServiceGroup plain(Settings(), kBoxA);
  plain.Tick(t);
  Message q;
  q.type = MessageType::kRemovalQuery;
  q.security = SecurityInfo{};
  q.service = WaasService(61);
  q.query = QueryInfo{{kRouter, 3}, kBoxA, kBoxA};
  auto out = plain.OnDatagram(kRouter, *Encode(q), t + 1s);
  REQUIRE(out.size() == 1);
  CHECK(Decode(out[0].bytes)->type == MessageType::kHereIAm);

  // A router silent for three intervals leaves the view.
  plain.OnDatagram(kRouter, ISeeYou({kBoxA, kBoxB}, 1, 1), t + 2s);
  uint32_t before = plain.status().change_number;
  CHECK(plain.status().caches.size() == 2);
  plain.Tick(t + 33s);
  st = plain.status();
  CHECK(st.caches.empty());
  CHECK(st.change_number == before + 1);
  CHECK(st.routers[0].problem == "no I_See_You for 30 s");
}
