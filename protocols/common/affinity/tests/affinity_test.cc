// AffinityTable (protocols/common/affinity/affinity.h): decisions kept per session,
// and a table that sweeps at its doublings, not on every call.
#include <doctest/doctest.h>

#include "protocols/common/affinity/affinity.h"

using boost::asio::ip::make_address;
using boost::asio::ip::make_address_v4;
using wanopt::protocols::AffinityTable;
using namespace std::chrono_literals;

namespace {
AffinityTable::Address V4(uint32_t n) { return make_address_v4(n); }
}  // namespace

TEST_SUITE("protocols") {

TEST_CASE("AffinityTable: a session's decision holds until it expires") {
  AffinityTable table;
  auto now = AffinityTable::Clock::now();
  AffinityTable::Entry& e = table.At(V4(1), V4(2), now);
  CHECK(e.expires < now);  // new: decide
  e.pass_through = true;
  e.expires = now + 10s;
  CHECK(table.At(V4(1), V4(2), now + 5s).pass_through);
  CHECK(table.Find(V4(1), V4(2))->expires == now + 10s);
  CHECK(table.Find(V4(2), V4(1)) == nullptr);  // (client, server), in that order
  CHECK(table.At(V4(1), V4(3), now).expires < now);
  // IPv6 sessions alike, apart from IPv4 ones.
  auto client6 = make_address("2001:2:0:1::10"), server6 = make_address("2001:2:0:2::10");
  AffinityTable::Entry& e6 = table.At(client6, server6, now);
  CHECK(e6.expires < now);
  e6.pass_through = true;
  e6.expires = now + 10s;
  CHECK(table.Find(client6, server6)->pass_through);
  CHECK(table.Find(server6, client6) == nullptr);
  CHECK(table.Find(make_address("::ffff:0.0.0.1"), V4(2)) == nullptr);  // a mapped IPv4 address is another key
}

TEST_CASE("AffinityTable: many sessions alive cost a sweep per doubling, not one per connection") {
  constexpr size_t kFloor = 16;
  AffinityTable table(kFloor);
  auto now = AffinityTable::Clock::now();
  // 1,000 sessions alive for an hour, their connections coming again and again.
  for (int round = 0; round < 100; ++round) {
    for (uint32_t client = 0; client < 1000; ++client) {
      AffinityTable::Entry& e = table.At(V4(client), V4(7), now);
      if (e.expires < now) e.expires = now + 1h;
    }
  }
  CHECK(table.size() == 1000);
  // 16, 32, ..., 512: one sweep each on the way up, then none.
  CHECK(table.sweeps() == 6);

  // Later, new sessions only: the expired ones go, the table stays near twice the live.
  auto later = now + 2h;
  for (uint32_t client = 1000; client < 101000; ++client) {
    AffinityTable::Entry& e = table.At(V4(client), V4(7), later);
    e.expires = later + 1h;
    REQUIRE(table.size() <= 2 * 100000 + kFloor);
  }
  CHECK(table.Find(V4(0), V4(7)) == nullptr);  // swept
  CHECK(table.Find(V4(100999), V4(7)) != nullptr);
  CHECK(table.sweeps() < 6 + 20);
}

}  // TEST_SUITE
