// DRE and LZ through the pair over loopback: reductions that survive restarts, and
// correct bytes whatever either datastore lost.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "datastore/chunk_store.h"
#include "wanopt/dre/peer_table.h"
#include "tests/integration/pair.h"

using namespace wanopt;
using namespace wanopt::testing;

namespace {

struct Transfer {
  bool verified = false;
  uint64_t lan = 0, wan = 0;
  double reduction() const { return lan ? 100.0 * (1.0 - double(wan) / double(lan)) : 0; }
};

// One echo transfer through the pair; LAN and WAN bytes as the branch counted them.
Transfer Send(Pair& pair, uint64_t id, const std::vector<uint8_t>& data) {
  const Counters& c = pair.branch->counters();
  uint64_t lan0 = c.lan_in + c.lan_out, wan0 = c.wan_in + c.wan_out;
  auto r = lab::EchoTransfer(pair.entry(), id, data, pair.origin);
  if (!r.verified) MESSAGE(r.error);
  // The branch's counters are final once its session closed.
  auto busy = [&] { return c.sessions_active || (pair.datacenter && pair.datacenter->counters().sessions_active); };
  for (int i = 0; i < 5000 && busy(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // bounded wait for a condition
  }
  return {r.verified, c.lan_in + c.lan_out - lan0, c.wan_in + c.wan_out - wan0};
}

uint64_t Nacks(Pair& pair) {
  uint64_t n = 0;
  for (const Daemon* d : {pair.branch.get(), pair.datacenter.get()}) {
    for (const auto& c : d->table().Connections()) n += c.nacks;
  }
  return n;
}

}  // namespace

TEST_CASE("second pass reduces, and still does after both proxies restart") {
  TempDir dir;
  Pair pair({.branch_store = dir.path + "/branch", .datacenter_store = dir.path + "/dc"});
  auto data = lab::SampleText(16 << 20, 11);
  Transfer first = Send(pair, 1, data);
  CHECK(first.verified);
  Transfer second = Send(pair, 2, data);
  CHECK(second.verified);
  CHECK(second.reduction() > 99.0);
  pair.Restart();
  Transfer after = Send(pair, 3, data);
  CHECK(after.verified);
  CHECK(after.reduction() > 99.0);
  MESSAGE("first " << first.reduction() << "%, second " << second.reduction() << "%, after restart "
                   << after.reduction() << "%");
}

// [dre] read_cache_mb reaches the store: a datacenter without a read cache decodes the
// second pass from its segment files, the branch (the default cache) keeps chunks in memory.
TEST_CASE("read_cache_mb = 0: the datacenter's store caches nothing and still decodes the second pass") {
  TempDir dir;
  Pair pair({.branch_store = dir.path + "/branch",
             .datacenter_store = dir.path + "/dc",
             .datacenter_read_cache_bytes = 0});
  auto data = lab::SampleText(4 << 20, 12);
  CHECK(Send(pair, 1, data).verified);
  Transfer second = Send(pair, 2, data);
  CHECK(second.verified);
  CHECK(second.reduction() > 99.0);
  CHECK(pair.datacenter->store()->stats().cache_bytes == 0);
  CHECK(pair.branch->store()->stats().cache_bytes > 0);
}

TEST_CASE("datacenter datastore wiped between transfers: bytes still correct") {
  TempDir dir;
  Pair pair({.branch_store = dir.path + "/branch", .datacenter_store = dir.path + "/dc"});
  auto data = lab::SampleText(8 << 20, 12);
  REQUIRE(Send(pair, 1, data).verified);
  pair.Restart([&] { std::filesystem::remove_all(dir.path + "/dc"); });
  Transfer after = Send(pair, 2, data);
  CHECK(after.verified);
  // The branch learns from the hello-ack that the datacenter's store is new and
  // sends the chunks again instead of naming them.
  bool noted = false;
  for (const auto& c : pair.branch->table().Connections()) {
    for (const auto& n : c.notes) noted |= n.find("datastore is new") != std::string::npos;
  }
  CHECK(noted);
  CHECK(Send(pair, 3, data).reduction() > 99.0);
}

TEST_CASE("a peering file unused for 90 days is deleted at start, and the peering still carries correct bytes") {
  TempDir dir;
  Pair pair({.branch_store = dir.path + "/branch", .datacenter_store = dir.path + "/dc"});
  auto data = lab::SampleText(4 << 20, 13);
  REQUIRE(Send(pair, 1, data).verified);
  const std::string peers = dir.path + "/dc/peers";
  auto files = [&] {
    size_t n = 0;
    for (const auto& f : std::filesystem::directory_iterator(peers)) n += f.path().extension() == ".idx";
    return n;
  };
  REQUIRE(files() == 1);
  pair.Restart([&] {
    for (const auto& f : std::filesystem::directory_iterator(peers)) {
      std::filesystem::last_write_time(f.path(), std::filesystem::file_time_type::clock::now() -
                                                     dre::kIdlePeeringAge - std::chrono::hours(24));
    }
  });
  // Deleted when the datacenter started, before any connection.
  CHECK(files() == 0);
  // The branch still names what it sent: the datacenter asks for every chunk again.
  Transfer after = Send(pair, 2, data);
  CHECK(after.verified);
  CHECK(Nacks(pair) > 0);
  CHECK(files() == 1);
}

TEST_CASE("chunks the datacenter evicted are NACKed and re-sent: correct bytes, NACK counter > 0") {
  TempDir dir;
  // A datacenter store far smaller than what crosses: it evicts what the branch
  // still believes it has.
  Pair pair({.branch_store = dir.path + "/branch", .datacenter_store = dir.path + "/dc",
             .datacenter_store_bytes = 16 << 20});
  auto first = lab::RandomBytes(12 << 20, 13);
  auto filler = lab::RandomBytes(20 << 20, 14);
  REQUIRE(Send(pair, 1, first).verified);
  REQUIRE(Send(pair, 2, filler).verified);  // pushes `first` out of the datacenter's store
  Transfer again = Send(pair, 3, first);
  CHECK(again.verified);
  CHECK(Nacks(pair) > 0);
}

TEST_CASE("two branches against one datacenter") {
  TempDir dir;
  Pair one({.branch_store = dir.path + "/branch1", .datacenter_store = dir.path + "/dc"});
  // The second branch peers with the first pair's datacenter.
  Pair two({.peer = one.datacenter_endpoint(), .start_datacenter = false, .branch_store = dir.path + "/branch2",
            .branch_device_id = "02:00:00:00:00:03"});
  auto data = lab::SampleText(8 << 20, 15);
  CHECK(Send(one, 1, data).verified);
  CHECK(Send(two, 2, data).verified);
  Transfer one_again = Send(one, 3, data);
  Transfer two_again = Send(two, 4, data);
  CHECK(one_again.verified);
  CHECK(two_again.verified);
  CHECK(one_again.reduction() > 99.0);
  CHECK(two_again.reduction() > 99.0);
  // One datastore at the datacenter holds the chunks once for both branches.
  auto stats = one.datacenter->store()->stats();
  CHECK(stats.duplicates > 0);
}

TEST_CASE("an idle connection gives its codecs' memory back, and its next bytes still cross intact") {
  TempDir dir;
  Timeouts timeouts;
  timeouts.keepalive = std::chrono::milliseconds(50);  // idle after one or two quiet ticks
  timeouts.dead_peer = std::chrono::seconds(30);
  Pair pair({.timeouts = timeouts, .branch_store = dir.path + "/branch", .datacenter_store = dir.path + "/dc"});
  int fd = ConnectTo(pair.entry());
  REQUIRE(fd >= 0);
  auto echo = [&](uint64_t seed) {
    auto text = lab::SampleText(96 * 1024, seed);
    std::string sent(text.begin(), text.end());
    REQUIRE(SendAll(fd, sent));
    return ReadExactly(fd, sent.size()) == sent;
  };
  REQUIRE(SendAll(fd, "idle-id!"));  // the origin's transfer id
  REQUIRE(ReadExactly(fd, 8) == "idle-id!");
  CHECK(echo(51));
  // Both boxes held zstd contexts for both directions (MiBs); idle, they free them.
  auto released = [&] {
    return pair.branch->counters().codec_bytes_released > (1u << 20) &&
           pair.datacenter->counters().codec_bytes_released > (1u << 20);
  };
  for (int i = 0; i < 10000 && !released(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // bounded wait for a condition
  }
  CHECK(released());
  // The streams restart: the same connection carries new bytes, verified.
  CHECK(echo(52));
  CHECK(echo(53));
  ::close(fd);
  CHECK(pair.branch->counters().resets.load() == 0);
  CHECK(pair.datacenter->counters().resets.load() == 0);
}

TEST_CASE("16 first connections to a new peer at once: a second pass reduces as much as one connection's") {
  // Many connections start before the new peer's first answer; what they send before
  // it crosses as literals (codec_test: "references off") and must be learned too.
  // (On loopback the answer comes within microseconds; the lab has the latency.)
  TempDir dir;
  Pair pair({.branch_store = dir.path + "/branch", .datacenter_store = dir.path + "/dc"});
  constexpr int kConnections = 16;
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < kConnections; ++i) data.push_back(lab::RandomBytes(512 << 10, 100 + static_cast<uint64_t>(i)));  // nothing to find but the first pass
  auto round = [&](uint64_t base) {
    const Counters& c = pair.branch->counters();
    uint64_t lan0 = c.lan_in, wan0 = c.wan_out;
    std::vector<std::thread> clients;
    std::vector<int> verified(kConnections, 0);
    for (int i = 0; i < kConnections; ++i) {
      clients.emplace_back([&, i] {
        verified[static_cast<size_t>(i)] =
            lab::EchoTransfer(pair.entry(), base + static_cast<uint64_t>(i), data[static_cast<size_t>(i)], pair.origin)
                .verified;
      });
    }
    for (auto& t : clients) t.join();
    CHECK(std::count(verified.begin(), verified.end(), 1) == kConnections);
    REQUIRE(WaitFor([&] { return !c.sessions_active && !pair.datacenter->counters().sessions_active; },
                    std::chrono::seconds(5)));
    // Client to server only: the echo coming back is known to the datacenter anyway.
    return 100.0 * (1.0 - double(c.wan_out - wan0) / double(c.lan_in - lan0));
  };
  double first = round(1000);
  double second = round(2000);
  MESSAGE("client-to-server reduction: first pass " << first << "%, second pass " << second << "%");
  CHECK(second > 98.0);  // each connection's first chunk differs: it starts with its transfer id
}
