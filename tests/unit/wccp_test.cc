// WCCPv2 codec (wanopt/wccp): round trips of what a cache sends and receives, MD5
// service security, hostile lengths and counts, GRE redirection; and tshark as an
// independent judge of the encoded messages.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "util/bytes.h"
#include "wanopt/wccp/gre.h"
#include "wanopt/wccp/message.h"

namespace wccp = wanopt::wccp;

namespace {

constexpr uint32_t kCache = 0xC0A80A02;   // 192.168.10.2
constexpr uint32_t kCache2 = 0xC0A80A03;  // 192.168.10.3
constexpr uint32_t kRouter = 0xC0A80A01;  // 192.168.10.1

wccp::ServiceInfo Service61() {
  wccp::ServiceInfo s;
  s.type = wccp::ServiceInfo::kDynamic;
  s.id = 61;
  s.priority = 34;
  s.protocol = 6;
  s.flags = wccp::service_flag::kSrcIpHash;
  return s;
}

wccp::Capabilities Caps() {
  wccp::Capabilities c;
  c.Set(wccp::capability::kForwardingMethod, wccp::capability::kGre | wccp::capability::kL2);
  c.Set(wccp::capability::kAssignmentMethod, wccp::capability::kHash);
  c.Set(wccp::capability::kReturnMethod, wccp::capability::kGre);
  return c;
}

wccp::Message HereIAm(bool md5) {
  wccp::Message m;
  m.type = wccp::MessageType::kHereIAm;
  m.security = wccp::SecurityInfo{md5 ? wccp::kSecurityMd5 : wccp::kSecurityNone, {}};
  m.service = Service61();
  wccp::WebCacheIdentity id;
  id.ip = kCache;
  id.weight = 100;
  for (unsigned b = 0; b < 256; b += 2) wccp::SetBucketBit(id.bucket_bits, b);
  m.web_cache_identity = id;
  m.web_cache_view = wccp::WebCacheView{7, {{kRouter, 42}}, {kCache, kCache2}};
  m.capabilities = Caps();
  return m;
}

wccp::Message ISeeYou() {
  wccp::Message m;
  m.type = wccp::MessageType::kISeeYou;
  m.security = wccp::SecurityInfo{};
  m.service = Service61();
  m.router_identity = wccp::RouterIdentity{{kRouter, 43}, kCache, {kCache}};
  wccp::WebCacheIdentity a;
  a.ip = kCache;
  a.weight = 1;
  wccp::WebCacheIdentity b = a;
  b.ip = kCache2;
  b.data_type = wccp::WebCacheIdentity::kMask;
  b.mask_sets = {{{0x1741, 0, 0, 0}, {{0x1, 0, 0, 0, kCache2}}}};
  m.router_view = wccp::RouterView{3, {kCache, 2}, {kRouter}, {a, b}};
  m.capabilities = Caps();
  return m;
}

wccp::Message RedirectAssign() {
  wccp::Message m;
  m.type = wccp::MessageType::kRedirectAssign;
  m.security = wccp::SecurityInfo{};
  m.service = Service61();
  wccp::HashAssignment h;
  h.key = {kCache, 2};
  h.routers = {{kRouter, 43, 3}};
  h.caches = {kCache, kCache2};
  for (unsigned i = 0; i < 256; ++i) h.buckets[i] = static_cast<uint8_t>(i % 2);
  h.buckets[255] = wccp::kBucketUnassigned;
  m.assignment = h;
  return m;
}

wccp::Message MaskAssign() {
  wccp::Message m;
  m.type = wccp::MessageType::kRedirectAssign;
  m.security = wccp::SecurityInfo{};
  m.service = Service61();
  wccp::AlternateAssignment alt;
  alt.type = wccp::AlternateAssignment::kMask;
  alt.mask.key = {kCache, 2};
  alt.mask.routers = {{kRouter, 43, 3}};
  wccp::MaskValueSet set{{0x00001741, 0, 0, 0}, {}};
  for (uint32_t v = 0; v < 4; ++v) set.values.push_back({v, 0, 0, 0, v % 2 ? kCache2 : kCache});
  alt.mask.sets = {set};
  m.alternate_assignment = alt;
  return m;
}

wccp::Message RemovalQuery() {
  wccp::Message m;
  m.type = wccp::MessageType::kRemovalQuery;
  m.security = wccp::SecurityInfo{};
  m.service = Service61();
  m.service->flags |= wccp::service_flag::kPortsDefined;
  m.service->ports = {80, 443};
  m.query = wccp::QueryInfo{{kRouter, 44}, kCache, kCache2};
  return m;
}

std::vector<uint8_t> Wire(const wccp::Message& m) {
  auto w = wccp::Encode(m);
  REQUIRE(w.has_value());
  return *w;
}

// A pcap (LINKTYPE_RAW: IPv4) with one UDP 2048 datagram per message.
void WritePcap(const std::filesystem::path& path, const std::vector<std::vector<uint8_t>>& messages) {
  std::vector<uint8_t> out;
  auto le32 = [&](uint32_t v) { for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> 8 * i)); };
  auto le16 = [&](uint16_t v) { out.push_back(static_cast<uint8_t>(v)); out.push_back(static_cast<uint8_t>(v >> 8)); };
  le32(0xA1B2C3D4); le16(2); le16(4); le32(0); le32(0); le32(65535); le32(101);
  for (const auto& m : messages) {
    std::vector<uint8_t> p(28);
    p[0] = 0x45;
    wanopt::bytes::PutBe16(&p[2], static_cast<uint16_t>(28 + m.size()));
    p[8] = 64;
    p[9] = 17;
    wanopt::bytes::PutBe32(&p[12], 0x7F000001);
    wanopt::bytes::PutBe32(&p[16], 0x7F000002);
    wanopt::bytes::PutBe16(&p[20], 2048);
    wanopt::bytes::PutBe16(&p[22], 2048);
    wanopt::bytes::PutBe16(&p[24], static_cast<uint16_t>(8 + m.size()));
    p.insert(p.end(), m.begin(), m.end());
    le32(1); le32(0); le32(static_cast<uint32_t>(p.size())); le32(static_cast<uint32_t>(p.size()));
    out.insert(out.end(), p.begin(), p.end());
  }
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
}

std::vector<std::string> Tshark(const std::filesystem::path& pcap, const std::string& fields) {
  std::string cmd = "tshark -n -r '" + pcap.string() + "' -T fields -E separator='|' " + fields + " 2>/dev/null";
  std::vector<std::string> lines;
  FILE* f = popen(cmd.c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[8192];
  while (fgets(buf, sizeof buf, f)) {
    std::string line(buf);
    if (!line.empty() && line.back() == '\n') line.pop_back();
    lines.push_back(line);
  }
  pclose(f);
  return lines;
}

std::filesystem::path TempDir() {
  char templ[] = "/tmp/wccp_test_XXXXXX";
  REQUIRE(mkdtemp(templ) != nullptr);
  return templ;
}

}  // namespace

TEST_CASE("wccp: every message a cache sends and receives round-trips") {
  for (const auto& m : {HereIAm(false), HereIAm(true), ISeeYou(), RedirectAssign(), MaskAssign(), RemovalQuery()}) {
    auto wire = Wire(m);
    CHECK(wanopt::bytes::GetBe16(&wire[6]) == wire.size() - 8);
    auto back = wccp::Decode(wire);
    REQUIRE_MESSAGE(back.ok(), back.error().reason);
    CHECK(*back == m);
    CHECK(Wire(*back) == wire);
  }
  wccp::Message shutdown;
  shutdown.type = wccp::MessageType::kHereIAm;
  shutdown.commands = std::vector<wccp::Command>{{wccp::command::kShutdown, {192, 168, 10, 2}}};
  shutdown.unknown = {{99, {1, 2, 3}}};
  auto back = wccp::Decode(Wire(shutdown));
  REQUIRE(back.ok());
  CHECK(*back == shutdown);
  CHECK(back->unknown[0].body == std::vector<uint8_t>{1, 2, 3});
}

TEST_CASE("wccp: the capabilities a cache asks for read back as bitmasks") {
  auto back = wccp::Decode(Wire(HereIAm(false)));
  REQUIRE(back.ok());
  CHECK(back->capabilities->Get(wccp::capability::kForwardingMethod) == (wccp::capability::kGre | wccp::capability::kL2));
  CHECK(back->capabilities->Get(wccp::capability::kAssignmentMethod) == wccp::capability::kHash);
  CHECK(back->capabilities->Get(wccp::capability::kReturnMethod) == wccp::capability::kGre);
  CHECK_FALSE(back->capabilities->Get(9).has_value());
  CHECK(wccp::BucketBit(back->web_cache_identity->bucket_bits, 0));
  CHECK_FALSE(wccp::BucketBit(back->web_cache_identity->bucket_bits, 1));
}

TEST_CASE("wccp: MD5 signed messages verify and a wrong password or a flipped byte is refused") {
  auto wire = Wire(HereIAm(true));
  CHECK_FALSE(wccp::Verify(wire, "secret"));  // zero digest before signing
  REQUIRE(wccp::Sign(wire, "secret"));
  CHECK(wccp::Verify(wire, "secret"));
  CHECK_FALSE(wccp::Verify(wire, "secreT"));
  CHECK_FALSE(wccp::Verify(wire, ""));
  CHECK(wccp::Verify(wire, "secret\0\0"));  // the key is the password zero-padded to 8 bytes
  for (size_t i = 0; i < wire.size(); ++i) {
    auto bad = wire;
    bad[i] ^= 0x01;
    CHECK_FALSE_MESSAGE(wccp::Verify(bad, "secret"), "byte ", i);
  }
  auto plain = Wire(HereIAm(false));
  CHECK_FALSE(wccp::Sign(plain, "secret"));  // no MD5 component to fill
  CHECK_FALSE(wccp::Verify(plain, "secret"));
}

TEST_CASE("wccp: every truncation of every message is an error") {
  for (const auto& m : {HereIAm(true), ISeeYou(), RedirectAssign(), MaskAssign(), RemovalQuery()}) {
    auto wire = Wire(m);
    for (size_t n = 0; n < wire.size(); ++n) {
      auto cut = std::vector<uint8_t>(wire.begin(), wire.begin() + static_cast<long>(n));
      CHECK_FALSE(wccp::Decode(cut).ok());
      // The header's length fixed to the cut size: the components no longer fit.
      if (n >= 8) {
        wanopt::bytes::PutBe16(&cut[6], static_cast<uint16_t>(n - 8));
        auto r = wccp::Decode(cut);
        // Cut exactly between components is a shorter valid message; anything else is not.
        if (r.ok()) CHECK(Wire(*r) == cut);
      }
    }
    auto longer = wire;
    longer.push_back(0);
    CHECK_FALSE(wccp::Decode(longer).ok());
  }
}

TEST_CASE("wccp: absurd counts, lengths, versions and repeats are refused") {
  auto wire = Wire(ISeeYou());
  // The Router View's counts: header 8, security 8, service 28, router identity 24,
  // then the view's component header (4), change number (4) and key (8).
  constexpr size_t kRouterCount = 8 + 8 + 28 + 24 + 4 + 4 + 8;
  constexpr size_t kCacheCount = kRouterCount + 4 + 4;
  REQUIRE(wanopt::bytes::GetBe16(&wire[kRouterCount - 16]) == wccp::component::kRouterView);
  REQUIRE(wanopt::bytes::GetBe32(&wire[kRouterCount]) == 1);
  REQUIRE(wanopt::bytes::GetBe32(&wire[kCacheCount]) == 2);
  for (uint32_t absurd : {33u, 0x10000u, 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    auto b = wire;
    wanopt::bytes::PutBe32(&b[kRouterCount], absurd);
    CHECK_FALSE(wccp::Decode(b).ok());
    b = wire;
    wanopt::bytes::PutBe32(&b[kCacheCount], absurd);
    CHECK_FALSE(wccp::Decode(b).ok());
  }
  auto bad = wire;
  bad[5] = 0x01;  // version 0x0201
  CHECK(std::string(wccp::Decode(bad).error().reason) == "not WCCP version 2.0");
  bad = wire;
  bad[3] = 9;
  CHECK_FALSE(wccp::Decode(bad).ok());
  bad = wire;
  wanopt::bytes::PutBe16(&bad[10], 0xFFFF);  // first component's length
  CHECK(std::string(wccp::Decode(bad).error().reason) == "component runs past the message");
  // Counts: 0xFFFFFFFF routers or caches in every count position of the router view.
  auto view = Wire(ISeeYou());
  for (size_t i = 8; i + 4 <= view.size(); ++i) {
    auto b = view;
    wanopt::bytes::PutBe32(&b[i], 0xFFFFFFFF);
    auto r = wccp::Decode(b);
    // A field that is not a count (or a component type turned unknown): still a
    // consistent message, equal to itself once encoded and decoded again.
    if (r.ok()) CHECK_MESSAGE(*wccp::Decode(Wire(*r)) == *r, "offset ", i);
  }
  // A repeated component.
  wccp::Message m = RemovalQuery();
  m.unknown = {};
  auto q = Wire(m);
  std::vector<uint8_t> twice(q.begin(), q.end());
  twice.insert(twice.end(), q.end() - 20, q.end());  // the query component again
  wanopt::bytes::PutBe16(&twice[6], static_cast<uint16_t>(twice.size() - 8));
  CHECK_FALSE(wccp::Decode(twice).ok());
  // 33 caches in a view: over the draft's 32.
  wccp::Message big = ISeeYou();
  big.router_view->caches.resize(33);
  CHECK_FALSE(wccp::Decode(Wire(big)).ok());
  // An unknown security option.
  auto sec = Wire(RemovalQuery());
  sec[15] = 7;
  CHECK_FALSE(wccp::Decode(sec).ok());
}

TEST_CASE("wccp: GRE redirect packets parse to the inner IPv4 packet and build back") {
  std::vector<uint8_t> ip(40, 0);
  ip[0] = 0x45;
  wanopt::bytes::PutBe16(&ip[2], 40);
  wccp::RedirectHeader h{true, true, 61, 7, 200};
  auto gre = wccp::BuildGre(h, ip);
  CHECK(gre.size() == 48);
  CHECK(wanopt::bytes::GetBe16(&gre[2]) == 0x883E);
  auto p = wccp::ParseGre(gre);
  REQUIRE_MESSAGE(p.ok(), p.error().reason);
  CHECK(p->protocol == wccp::kGreProtoWccp);
  REQUIRE(p->redirect.has_value());
  CHECK(*p->redirect == h);
  CHECK(p->inner.data() == gre.data() + 8);
  CHECK(p->inner.size() == 40);
  auto plain = wccp::BuildGre(std::nullopt, ip);
  auto q = wccp::ParseGre(plain);
  REQUIRE(q.ok());
  CHECK(q->protocol == wccp::kGreProtoIpv4);
  CHECK_FALSE(q->redirect.has_value());
  // 0x883E straight to the IPv4 header (no redirect header).
  auto bare = plain;
  wanopt::bytes::PutBe16(&bare[2], 0x883E);
  auto r = wccp::ParseGre(bare);
  REQUIRE(r.ok());
  CHECK_FALSE(r->redirect.has_value());
  // Key and sequence fields are skipped.
  std::vector<uint8_t> keyed = {0x30, 0x00, 0x88, 0x3E, 0, 0, 0, 1, 0, 0, 0, 2};
  keyed.insert(keyed.end(), gre.begin() + 4, gre.end());
  auto k = wccp::ParseGre(keyed);
  REQUIRE(k.ok());
  CHECK(k->inner.size() == 40);
  // Every truncation fails; a lying inner length, routing, other versions and protocols fail.
  for (size_t n = 0; n < gre.size(); ++n) CHECK_FALSE(wccp::ParseGre(std::span(gre).first(n)).ok());
  auto lying = gre;
  wanopt::bytes::PutBe16(&lying[8 + 2], 41);
  CHECK_FALSE(wccp::ParseGre(lying).ok());
  auto routed = gre;
  routed[0] = 0x40;
  CHECK_FALSE(wccp::ParseGre(routed).ok());
  auto v1 = gre;
  v1[1] = 0x01;
  CHECK_FALSE(wccp::ParseGre(v1).ok());
  auto other = gre;
  wanopt::bytes::PutBe16(&other[2], 0x86DD);
  CHECK_FALSE(wccp::ParseGre(other).ok());
}

TEST_CASE("wccp: tshark decodes every encoded message type without malformed or length warnings") {
  auto dir = TempDir();
  auto pcap = dir / "wccp.pcap";
  auto signed_hia = Wire(HereIAm(true));
  REQUIRE(wccp::Sign(signed_hia, "secret"));
  std::vector<std::vector<uint8_t>> messages = {signed_hia,           Wire(ISeeYou()),     Wire(RedirectAssign()),
                                                Wire(MaskAssign()),   Wire(RemovalQuery())};
  WritePcap(pcap, messages);
  auto lines = Tshark(pcap, "-e wccp.message -e wccp.message_header_version -e wccp.item_type -e _ws.expert.message");
  REQUIRE(lines.size() == messages.size());
  const char* types[] = {"10", "11", "12", "12", "13"};
  const char* items[] = {"0,1,3,5,8", "0,1,2,4,8", "0,1,6", "0,1,13", "0,1,7"};
  for (size_t i = 0; i < lines.size(); ++i) {
    INFO("tshark line: ", lines[i]);
    std::string head = std::string(types[i]) + "|0x0200|" + items[i] + "|";
    REQUIRE(lines[i].rfind(head, 0) == 0);
    // The only expert info allowed: the note that a service without ports_defined
    // carries zero ports (service 61 redirects all ports). No malformed, bad length,
    // missing or unexpected component.
    std::string expert = lines[i].substr(head.size());
    if (i == 4) CHECK(expert.empty());  // the Removal_Query's service names its ports
    else CHECK(expert == "Ports fields not used");
  }
  auto ids = Tshark(pcap, "-e wccp.service_info_dyn_id -e wccp.web_cache_identity.ipv4");
  REQUIRE(ids.size() == messages.size());
  CHECK(ids[0] == "61|192.168.10.2");
  // What each element says, read by tshark: the router view's two caches, the hash
  // assignment's caches, the mask assignment's four values, the capabilities' bits.
  auto more = Tshark(pcap, "-e wccp.router_query_info.ipv4 -e wccp.hash_buckets_assignment.wc_ip.ipv4 "
                           "-e wccp.mask_value_set_selement.value_element_num -e wccp.value_element.web_cache_ip.ipv4 "
                           "-e wccp.capability_info.forwarding_method_flag.l2 -e wccp.router_query_info.target_ip.ipv4");
  REQUIRE(more.size() == messages.size());
  CHECK(more[0] == "||||1|");
  CHECK(more[1] == "192.168.10.2,192.168.10.3||1|192.168.10.3|1|");  // the second cache's mask set
  CHECK(more[2] == "|192.168.10.2,192.168.10.3||||");
  CHECK(more[3] == "||4|192.168.10.2,192.168.10.3,192.168.10.2,192.168.10.3||");
  CHECK(more[4] == "|||||192.168.10.3");
  // The GRE redirect header as Wireshark reads it: an IPv4/GRE packet.
  std::vector<uint8_t> inner(20, 0);
  inner[0] = 0x45;
  inner[9] = 6;
  wanopt::bytes::PutBe16(&inner[2], 20);
  auto gre = wccp::BuildGre(wccp::RedirectHeader{true, false, 61, 0, 77}, inner);
  std::vector<uint8_t> ip(20, 0);
  ip[0] = 0x45;
  wanopt::bytes::PutBe16(&ip[2], static_cast<uint16_t>(20 + gre.size()));
  ip[8] = 64;
  ip[9] = 47;
  ip.insert(ip.end(), gre.begin(), gre.end());
  // Reuse the pcap writer's record layout by writing a raw record by hand.
  auto gre_pcap = dir / "gre.pcap";
  {
    std::vector<uint8_t> out = {0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 101, 0, 0, 0};
    uint8_t rec[16] = {1, 0, 0, 0, 0, 0, 0, 0, static_cast<uint8_t>(ip.size()), 0, 0, 0, static_cast<uint8_t>(ip.size()), 0, 0, 0};
    out.insert(out.end(), rec, rec + 16);
    out.insert(out.end(), ip.begin(), ip.end());
    std::ofstream(gre_pcap, std::ios::binary).write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  }
  auto g = Tshark(gre_pcap, "-e gre.proto -e gre.wccp.dynamic_service -e gre.wccp.service_id -e gre.wccp.primary_bucket -e _ws.expert.message");
  REQUIRE(g.size() == 1);
  CHECK(g[0].rfind("0x883e|1|61|77", 0) == 0);
  std::filesystem::remove_all(dir);
}

// The fuzz seeds (tests/fuzz/seeds/wccp) are this encoder's output: a message format
// change shows here. WANOPT_WRITE_SEEDS=1 rewrites them.
TEST_CASE("wccp: the fuzz seeds are the encoder's output") {
  auto root = std::filesystem::path(WANOPT_MAKE_PKI).parent_path().parent_path().parent_path();
  auto dir = root / "tests/fuzz/seeds/wccp";
  auto signed_hia = Wire(HereIAm(true));
  REQUIRE(wccp::Sign(signed_hia, "secret"));
  std::vector<uint8_t> ip(40, 0);
  ip[0] = 0x45;
  wanopt::bytes::PutBe16(&ip[2], 40);
  std::vector<std::pair<std::string, std::vector<uint8_t>>> seeds = {
      {"here_i_am.bin", Wire(HereIAm(false))},       {"here_i_am_md5.bin", signed_hia},
      {"i_see_you.bin", Wire(ISeeYou())},            {"redirect_assign_hash.bin", Wire(RedirectAssign())},
      {"redirect_assign_mask.bin", Wire(MaskAssign())}, {"removal_query.bin", Wire(RemovalQuery())},
      {"gre_redirect.bin", wccp::BuildGre(wccp::RedirectHeader{true, false, 61, 0, 9}, ip)},
      {"gre_plain.bin", wccp::BuildGre(std::nullopt, ip)},
  };
  bool write = std::getenv("WANOPT_WRITE_SEEDS") != nullptr;
  if (write) std::filesystem::create_directories(dir);
  for (const auto& [name, bytes] : seeds) {
    INFO(name);
    if (write)
      std::ofstream(dir / name, std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    std::ifstream in(dir / name, std::ios::binary);
    std::vector<uint8_t> stored((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(stored == bytes);
  }
}

// An independent implementation: the Here_I_Am Debian's Squid 5.7 sent to a UDP
// socket standing in for the router (captured once; fixtures/README.md says how):
// `wccp2_service dynamic 61 password=secret`, `wccp2_service_info 61 protocol=tcp
// flags=src_ip_hash priority=34 ports=80,443`, GRE forwarding and return, hash
// assignment, `wccp2_address 127.0.0.3`, `wccp2_router 127.0.0.2`.
TEST_CASE("wccp: a Here_I_Am from Squid decodes, its MD5 verifies, and it re-encodes to the same bytes") {
  auto root = std::filesystem::path(WANOPT_MAKE_PKI).parent_path().parent_path().parent_path();
  std::ifstream in(root / "tests/unit/fixtures/wccp_squid57_here_i_am_md5.bin", std::ios::binary);
  std::vector<uint8_t> wire((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(wire.size() == 160);
  auto m = wccp::Decode(wire);
  REQUIRE_MESSAGE(m.ok(), m.error().reason);
  CHECK(m->type == wccp::MessageType::kHereIAm);
  REQUIRE(m->security.has_value());
  CHECK(m->security->option == wccp::kSecurityMd5);
  CHECK(wccp::Verify(wire, "secret"));
  CHECK_FALSE(wccp::Verify(wire, "secreu"));
  REQUIRE(m->service.has_value());
  CHECK(m->service->type == wccp::ServiceInfo::kDynamic);
  CHECK(m->service->id == 61);
  CHECK(m->service->priority == 34);
  CHECK(m->service->protocol == 6);
  CHECK(m->service->flags == (wccp::service_flag::kSrcIpHash | wccp::service_flag::kPortsDefined));
  CHECK(m->service->ports == std::array<uint16_t, 8>{80, 443});
  REQUIRE(m->web_cache_identity.has_value());
  CHECK(m->web_cache_identity->ip == 0x7F000003);
  CHECK(m->web_cache_identity->data_type == wccp::WebCacheIdentity::kHash);
  CHECK(m->web_cache_identity->weight == 10000);
  REQUIRE(m->web_cache_view.has_value());
  CHECK(m->web_cache_view->routers == std::vector<wccp::RouterIdElement>{{0x7F000002, 0}});
  CHECK(m->web_cache_view->caches.empty());
  REQUIRE(m->capabilities.has_value());
  CHECK(m->capabilities->Get(wccp::capability::kForwardingMethod) == wccp::capability::kGre);
  CHECK(m->capabilities->Get(wccp::capability::kAssignmentMethod) == wccp::capability::kHash);
  CHECK(m->capabilities->Get(wccp::capability::kReturnMethod) == wccp::capability::kGre);
  CHECK(m->unknown.empty());
  // Same bytes once encoded (Squid writes the components in the draft's order), and
  // our own signature over them is Squid's.
  auto again = Wire(*m);
  CHECK(std::equal(again.begin(), again.begin() + 16, wire.begin()));
  CHECK(std::equal(again.begin() + 32, again.end(), wire.begin() + 32));
  REQUIRE(wccp::Sign(again, "secret"));
  CHECK(again == wire);
}
