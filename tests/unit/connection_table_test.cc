#include <doctest/doctest.h>

#include "wanopt/session/connection_table.h"

using namespace wanopt;

TEST_CASE("closed connections stay for the window, then count in the pruned totals") {
  ConnectionTable keep(std::chrono::seconds(300));
  auto a = keep.Add("box", "branch", Policy::kFull);
  a->lan_in = 100;
  a->wan_out = 10;
  a->SetApplication("EPM");
  a->End(false);
  auto rows = keep.Connections();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].state == ConnectionState::kClosed);
  CHECK(rows[0].application == "EPM");
  CHECK(rows[0].reduction() == doctest::Approx(90.0));

  ConnectionTable forget(std::chrono::seconds(0));
  auto b = forget.Add("box", "branch", Policy::kFull);
  auto live = forget.Add("box", "branch", Policy::kFull);
  b->lan_in = 50;
  b->SetApplication("SMB");
  b->End(true);
  rows = forget.Connections();
  REQUIRE(rows.size() == 1);  // the live one
  CHECK(rows[0].id == live->id());
  auto pruned = forget.PrunedByApplication();
  CHECK(pruned["SMB"].connections == 1);
  CHECK(pruned["SMB"].lan_bytes == 50);
}

TEST_CASE("a reset stays a reset, notes are bounded and deduplicated") {
  ConnectionTable table;
  auto r = table.Add("box", "datacenter", Policy::kDre);
  r->SetState(ConnectionState::kOptimized);
  r->End(true);
  r->End(false);  // a later close does not hide the reset
  for (int i = 0; i < 40; ++i) r->AddNote("note " + std::to_string(i % 20));
  r->AddNote(std::string(1000, 'x'));
  auto s = r->Snapshot();
  CHECK(s.state == ConnectionState::kReset);
  CHECK(s.notes.size() == 16);
  CHECK(s.reduction() == 0.0);  // no bytes: no reduction, not a division by zero
}

TEST_CASE("peers: connections and active counts") {
  ConnectionTable table;
  table.PeerSeen("02:00:00:00:00:02", "198.18.0.2:7800", true);
  table.PeerSeen("02:00:00:00:00:02", "198.18.0.2:7800", true);
  table.PeerConnectionEnded("02:00:00:00:00:02");
  auto peers = table.Peers();
  REQUIRE(peers.size() == 1);
  CHECK(peers[0].connections == 2);
  CHECK(peers[0].active == 1);
}

TEST_CASE("a figure kept current: SetNote replaces the note with its key, in place, or adds it") {
  ConnectionTable table;
  auto r = table.Add("box", "branch", Policy::kFull);
  r->AddNote("inner channel: TLS 1.3");
  r->SetNote("read-ahead:", "read-ahead: 1 of 2 READs answered here");
  r->AddNote("dialect 3.1.1");
  r->SetNote("read-ahead:", "read-ahead: 2 of 2 READs answered here");
  auto s = r->Snapshot();
  REQUIRE(s.notes.size() == 3);
  CHECK(s.notes[0] == "inner channel: TLS 1.3");
  CHECK(s.notes[1] == "read-ahead: 2 of 2 READs answered here");
  CHECK(s.notes[2] == "dialect 3.1.1");
  r->SetNote("x", std::string(300, 'x'));
  CHECK(r->Snapshot().notes.back().size() == 200);
}

TEST_CASE("with nobody reading it (the status page off), the table prunes itself as connections come and go") {
  constexpr size_t kMaxClosed = 10;
  ConnectionTable table(std::chrono::seconds(3600), kMaxClosed);
  std::vector<std::shared_ptr<ConnectionRecord>> live;
  for (int i = 0; i < 500; ++i) live.push_back(table.Add("box", "branch", Policy::kFull));
  std::vector<std::weak_ptr<ConnectionRecord>> closed;
  constexpr uint64_t kClosed = 100000;
  for (uint64_t i = 0; i < kClosed; ++i) {
    auto r = table.Add("box", "branch", Policy::kFull);
    r->lan_in = 3;
    r->End(false);
    closed.push_back(r);
  }
  size_t held = 0;
  for (const auto& r : closed) held += r.expired() ? 0 : 1;
  // Pruned at doublings from 2 * max_closed + 1024: never more than twice that.
  CHECK(held + live.size() <= 2 * (2 * kMaxClosed + 1024));
  uint64_t pruned = 0, pruned_bytes = 0;
  for (const auto& [application, totals] : table.PrunedByApplication()) {
    pruned += totals.connections;
    pruned_bytes += totals.lan_bytes;
  }
  CHECK(pruned == kClosed - held);  // what went is counted, nothing lost from the totals
  CHECK(pruned_bytes == 3 * pruned);
  auto rows = table.Connections();
  size_t live_rows = 0;
  for (const auto& row : rows) live_rows += row.state != ConnectionState::kClosed ? 1 : 0;
  CHECK(live_rows == live.size());  // a live connection is never pruned
  CHECK(rows.size() == live.size() + kMaxClosed);
}
