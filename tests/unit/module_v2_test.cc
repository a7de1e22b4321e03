// Module interface v2 (protocols/module.h): emitted, originated and held bytes,
// timers, groups shared by connections, the emit budget, and detaching a module
// that holds bytes. A fake host plays the session: it writes Process results and
// ModuleOutput into one log per direction, in call order, as a socket would.
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "protocols/chain.h"
#include "protocols/group.h"
#include "protocols/registry.h"

using namespace wanopt;
using namespace wanopt::protocols;

namespace {

constexpr Direction kC2S = Direction::kClientToServer;
constexpr Direction kS2C = Direction::kServerToClient;

std::span<const uint8_t> Bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
std::string Text(const Buffer& b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }
int Index(Direction d) { return static_cast<int>(d); }

// "t2-a" and "t2-b" append a marker, so a test sees which modules bytes crossed.
template <char kName>
class Marker final : public Module {
 public:
  void OnNewConnection(ModuleContext&) override {}
  FilterStatus OnData(Direction, Buffer& data, bool) override {
    ++calls;
    data.Append(Bytes(std::string("[") + kName + "]"));
    return FilterStatus::kContinue;
  }
  static inline int calls = 0;
};

// What the connections of one client share in the tests.
struct Shared {
  Shared() { ++alive; }
  ~Shared() { --alive; }
  static inline int alive = 0;
};

class TestBox final : public BoxModule {
 public:
  FlowAdvice OnNewFlow(const boost::asio::ip::tcp::endpoint&, const boost::asio::ip::tcp::endpoint&) override {
    return {};
  }
  Groups<std::string, Shared> groups;
};

// "t2-v2" does what each test scripts in on_data; it joins its client's group.
class Scripted final : public Module {
 public:
  void OnNewConnection(ModuleContext& c) override {
    context = &c;
    last = this;
    if (auto* box = dynamic_cast<TestBox*>(c.box())) {
      group = box->groups.Join(c.connection().client.address().to_string(), [] { return std::make_unique<Shared>(); });
    }
  }
  FilterStatus OnData(Direction d, Buffer& data, bool end_stream) override {
    return on_data ? on_data(d, data, end_stream) : FilterStatus::kContinue;
  }
  void OnOutputDrained(Direction d) override {
    ++drained[Index(d)];
    if (on_drained) on_drained(d);
  }
  void OnPeerMessage(std::span<const uint8_t>) override {
    if (on_peer) on_peer();
  }
  void OnClose() override { group.reset(); }

  ModuleContext* context = nullptr;
  std::function<void()> on_peer;
  std::function<FilterStatus(Direction, Buffer&, bool)> on_data;
  std::function<void(Direction)> on_drained;
  int drained[2] = {0, 0};
  std::shared_ptr<Shared> group;
  static inline Scripted* last = nullptr;
};

ModuleRegistrar a{{"t2-a", "test", [] { return std::make_unique<Marker<'a'>>(); }}};
ModuleRegistrar b{{"t2-b", "test", [] { return std::make_unique<Marker<'b'>>(); }}};
ModuleRegistrar v2{{"t2-v2", "test", [] { return std::make_unique<Scripted>(); }}};

class V2Host final : public ModuleChain::Host {
 public:
  const ConnectionInfo& connection() const override { return info; }
  bool SendModuleMessage(uint16_t, std::span<const uint8_t>) override { return true; }
  void SetApplication(std::string_view) override {}
  void AddNote(std::string_view) override {}
  BoxModule* BoxModuleFor(std::string_view name) override { return name == "t2-v2" ? box : nullptr; }
  bool AcceptsModuleOutput(Direction) const override { return accepts; }
  void ModuleOutput(Direction d, std::span<const uint8_t> bytes) override {
    out[Index(d)].append(bytes.begin(), bytes.end());
  }
  std::optional<boost::asio::any_io_executor> ModuleExecutor() override {
    if (!timers) return std::nullopt;
    return io.get_executor();
  }

  // Relays client or server bytes as the session does: what Process returns joins
  // the direction's output.
  std::string Relay(ModuleChain& chain, Direction d, std::string_view bytes, bool end_stream = false) {
    Buffer data;
    data.Append(Bytes(bytes));
    chain.Process(d, data, end_stream);
    out[Index(d)] += Text(data);
    return Text(data);
  }
  // Runs the io_context until `done`, for at most five seconds.
  bool RunUntil(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      io.restart();
      io.run_one_for(std::chrono::milliseconds(10));
    }
    return true;
  }
  // Runs every handler left (cancelled timers complete too).
  void RunAll() {
    io.restart();
    io.run();
  }

  boost::asio::io_context io;
  ConnectionInfo info;
  TestBox* box = nullptr;
  bool accepts = true;
  bool timers = true;
  std::string out[2];
};

bool StartsWith(const Buffer& data, std::string_view prefix) { return Text(data).starts_with(prefix); }

}  // namespace

TEST_CASE("v2: a module answers the client itself, through the modules after it, in order") {
  V2Host host;
  ModuleChain chain(host, {"t2-a", "t2-v2", "t2-b"});  // client-to-server: a, v2, b; back: b, v2, a
  chain.Start();
  Scripted& v = *Scripted::last;
  v.on_data = [&](Direction d, Buffer& data, bool) {
    if (d == kC2S && StartsWith(data, "READ")) {
      data.Clear();  // served here: the server never sees the request
      CHECK(v.context->Emit(kS2C, Bytes("DATA")));
    } else if (d == kC2S && StartsWith(data, "ask")) {
      CHECK(v.context->Emit(kC2S, Bytes("pre-")));  // goes before the data returned
    }
    return FilterStatus::kContinue;
  };
  CHECK(host.Relay(chain, kS2C, "srv1") == "srv1[b][a]");
  CHECK(host.Relay(chain, kC2S, "READ") == "");
  CHECK(host.Relay(chain, kS2C, "srv2") == "srv2[b][a]");
  CHECK(host.out[Index(kS2C)] == "srv1[b][a]DATA[a]srv2[b][a]");  // the answer crossed a only
  CHECK(host.Relay(chain, kC2S, "ask") == "pre-ask[a][b]");
  CHECK(host.out[Index(kC2S)] == "pre-ask[a][b]");
}

TEST_CASE("v2: requests a module originates reach the server, and it consumes their answers") {
  V2Host host;
  ModuleChain chain(host, {"t2-a", "t2-v2", "t2-b"});
  chain.Start();
  Scripted& v = *Scripted::last;
  std::string consumed;
  v.on_data = [&](Direction d, Buffer& data, bool) {
    if (d == kC2S && StartsWith(data, "open")) {
      CHECK(v.context->Emit(kC2S, Bytes("RA1;")));
      CHECK(v.context->StartTimer(std::chrono::milliseconds(1), [&] { CHECK(v.context->Emit(kC2S, Bytes("RA2;"))); }) != 0);
    } else if (d == kS2C && StartsWith(data, "ANS")) {
      consumed += Text(data);
      data.Clear();
    }
    return FilterStatus::kContinue;
  };
  CHECK(host.Relay(chain, kC2S, "open") == "RA1;open[a][b]");
  REQUIRE(host.RunUntil([&] { return host.out[Index(kC2S)].size() > 14; }));
  CHECK(host.out[Index(kC2S)] == "RA1;open[a][b]RA2;[b]");  // the timer's request crossed b only
  int a_calls = Marker<'a'>::calls;
  CHECK(host.Relay(chain, kS2C, "ANS1") == "");
  CHECK(host.Relay(chain, kS2C, "ANS2") == "");
  CHECK(Marker<'a'>::calls == a_calls);  // the answers never went past the module
  CHECK(consumed == "ANS1[b]ANS2[b]");
  CHECK(host.Relay(chain, kS2C, "hello") == "hello[b][a]");
  CHECK(host.out[Index(kS2C)] == "hello[b][a]");
}

TEST_CASE("v2: held bytes wait, with what follows them, and go on in order when released") {
  V2Host host;
  ModuleChain chain(host, {"t2-a", "t2-v2", "t2-b"});
  chain.Start();
  Scripted& v = *Scripted::last;
  int holds = 0;
  v.on_data = [&](Direction d, Buffer& data, bool) {
    if (d == kC2S && holds < 2 && v.context->Hold(d, data.span())) {
      ++holds;
      data.Clear();
    }
    return FilterStatus::kContinue;
  };
  CHECK(host.Relay(chain, kC2S, "one") == "");
  CHECK(host.Relay(chain, kC2S, "two") == "");
  CHECK(host.Relay(chain, kC2S, "three") == "");  // passed on, but behind the held bytes
  CHECK(v.context->held(kC2S) == 12);             // "one[a]two[a]"
  CHECK(host.out[Index(kC2S)] == "");
  bool first = false, second = false;
  v.context->StartTimer(std::chrono::milliseconds(1), [&] {
    v.context->Release(kC2S, 3);  // part of a held run
    first = true;
  });
  REQUIRE(host.RunUntil([&] { return first; }));
  CHECK(host.out[Index(kC2S)] == "one[b]");
  v.context->StartTimer(std::chrono::milliseconds(1), [&] {
    v.context->Release(kC2S, 100);
    second = true;
  });
  REQUIRE(host.RunUntil([&] { return second; }));
  CHECK(host.out[Index(kC2S)] == "one[b][a]two[a]three[a][b]");
  CHECK(v.context->held(kC2S) == 0);
  CHECK(host.Relay(chain, kC2S, "four") == "four[a][b]");
}

TEST_CASE("v2: the end of a direction releases held bytes, and nothing is emitted after it") {
  V2Host host;
  ModuleChain chain(host, {"t2-a", "t2-v2", "t2-b"});
  chain.Start();
  Scripted& v = *Scripted::last;
  v.on_data = [&](Direction d, Buffer& data, bool) {
    if (d == kC2S && v.context->Hold(d, data.span())) data.Clear();
    return FilterStatus::kContinue;
  };
  CHECK(host.Relay(chain, kC2S, "tail") == "");
  // a marks the empty end too; the module holds that as well, and the end lets it go.
  CHECK(host.Relay(chain, kC2S, "", true) == "tail[a][a][b]");
  CHECK_FALSE(v.context->CanEmit(kC2S));
  CHECK_FALSE(v.context->Emit(kC2S, Bytes("late")));
  CHECK(v.context->CanEmit(kS2C));  // the other direction still runs
}

TEST_CASE("v2: timers fire on the connection's loop, and cancelled ones and those after close do not") {
  V2Host host;
  auto chain = std::make_unique<ModuleChain>(host, std::vector<std::string>{"t2-v2"});
  chain->Start();
  Scripted& v = *Scripted::last;
  std::vector<int> fired;
  uint64_t t1 = v.context->StartTimer(std::chrono::milliseconds(1), [&] { fired.push_back(1); });
  uint64_t t2 = v.context->StartTimer(std::chrono::milliseconds(1), [&] { fired.push_back(2); });
  CHECK(t1 != 0);
  CHECK(t2 != 0);
  CHECK(v.context->CancelTimer(t2));
  CHECK_FALSE(v.context->CancelTimer(t2));  // already cancelled
  REQUIRE(host.RunUntil([&] { return !fired.empty(); }));
  CHECK_FALSE(v.context->CancelTimer(t1));  // already fired
  // Two timers due together: the first cancels the second, whose handler may already
  // be queued; it must not run.
  uint64_t t4 = 0;
  v.context->StartTimer(std::chrono::milliseconds(0), [&] {
    fired.push_back(3);
    CHECK(v.context->CancelTimer(t4));
  });
  t4 = v.context->StartTimer(std::chrono::milliseconds(0), [&] { fired.push_back(4); });
  REQUIRE(host.RunUntil([&] { return fired.size() == 2; }));
  // A timer pending at close never fires, even once the chain is gone.
  v.context->StartTimer(std::chrono::milliseconds(1), [&] { fired.push_back(5); });
  v.context->StartTimer(std::chrono::milliseconds(50), [&] { fired.push_back(6); });
  chain->Close();
  CHECK(v.context->StartTimer(std::chrono::milliseconds(1), [&] { fired.push_back(7); }) == 0);
  chain.reset();
  host.RunAll();
  CHECK(fired == std::vector<int>{1, 3});
}

TEST_CASE("v2: without the host's support, Emit, Hold and timers refuse instead of dropping") {
  V2Host host;
  host.accepts = false;
  host.timers = false;
  ModuleChain chain(host, {"t2-v2"});
  chain.Start();
  Scripted& v = *Scripted::last;
  CHECK_FALSE(v.context->CanEmit(kC2S));
  CHECK_FALSE(v.context->Emit(kS2C, Bytes("x")));
  CHECK_FALSE(v.context->Hold(kC2S, Bytes("x")));
  CHECK(v.context->StartTimer(std::chrono::milliseconds(1), [] {}) == 0);
  chain.OutputDrained(kS2C);
  CHECK(v.drained[Index(kS2C)] == 0);  // refusals for want of support promise no drain
  CHECK(host.Relay(chain, kC2S, "as is") == "as is");
}

TEST_CASE("v2: the connections of one client share a group, which dies with the last") {
  TestBox box;
  V2Host host1, host2, host3;
  for (V2Host* h : {&host1, &host2, &host3}) h->box = &box;
  host1.info.client = host2.info.client = {boost::asio::ip::make_address("192.0.2.1"), 1000};
  host3.info.client = {boost::asio::ip::make_address("192.0.2.2"), 1000};
  auto first = std::make_unique<ModuleChain>(host1, std::vector<std::string>{"t2-v2"});
  first->Start();
  Scripted& v1 = *Scripted::last;
  auto second = std::make_unique<ModuleChain>(host2, std::vector<std::string>{"t2-v2"});
  second->Start();
  Scripted& v2 = *Scripted::last;
  auto other = std::make_unique<ModuleChain>(host3, std::vector<std::string>{"t2-v2"});
  other->Start();
  Scripted& v3 = *Scripted::last;
  REQUIRE(v1.group != nullptr);
  CHECK(v1.group == v2.group);
  CHECK(v3.group != v1.group);  // another client
  CHECK(box.groups.size() == 2);
  CHECK(Shared::alive == 2);
  first.reset();  // closes: its module lets go
  CHECK(Shared::alive == 2);
  second.reset();
  CHECK(Shared::alive == 1);
  CHECK(box.groups.size() == 1);
  other.reset();
  CHECK(Shared::alive == 0);
  CHECK(box.groups.size() == 0);
}

TEST_CASE("v2: beyond its emit budget Emit refuses, then the drain callback lets it go on") {
  V2Host host;
  ModuleChain chain(host, {"t2-v2"});
  chain.Start();
  Scripted& v = *Scripted::last;
  const size_t chunk = 64 * 1024;
  size_t accepted = 0;
  v.on_data = [&](Direction d, Buffer& data, bool) {
    if (d == kC2S && StartsWith(data, "go")) {
      data.Clear();
      while (v.context->Emit(kS2C, Bytes(std::string(chunk, static_cast<char>('A' + accepted))))) ++accepted;
      CHECK_FALSE(v.context->Emit(kS2C, Bytes("x")));  // still refused: one drain call follows
    }
    return FilterStatus::kContinue;
  };
  v.on_drained = [&](Direction d) { CHECK(v.context->Emit(d, Bytes(std::string(chunk, 'E')))); };
  CHECK(host.Relay(chain, kC2S, "go") == "");
  CHECK(accepted == ModuleChain::kMaxEmitBytes / chunk);
  CHECK(v.drained[Index(kS2C)] == 0);
  CHECK(host.out[Index(kS2C)].size() == accepted * chunk);
  chain.OutputDrained(kC2S);  // the other direction: no effect
  CHECK(v.drained[Index(kS2C)] == 0);
  chain.OutputDrained(kS2C);
  CHECK(v.drained[Index(kS2C)] == 1);
  chain.OutputDrained(kS2C);  // no refusal since: no call
  CHECK(v.drained[Index(kS2C)] == 1);
  std::string expected;
  for (size_t i = 0; i < accepted; ++i) expected += std::string(chunk, static_cast<char>('A' + i));
  expected += std::string(chunk, 'E');
  CHECK(host.out[Index(kS2C)].size() == expected.size());
  CHECK((host.out[Index(kS2C)] == expected));  // not decomposed: 320 KiB would be printed
  // Held bytes are bounded too.
  CHECK_FALSE(v.context->Hold(kC2S, Bytes(std::string(ModuleChain::kMaxHeldBytes + 1, 'h'))));
  CHECK(v.context->Hold(kC2S, Bytes("h")));
}

TEST_CASE("v2: a module that throws is detached and its held bytes go on in order") {
  V2Host host;
  ModuleChain chain(host, {"t2-a", "t2-v2", "t2-b"});
  chain.Start();
  Scripted& v = *Scripted::last;
  int calls = 0;
  v.on_data = [&](Direction d, Buffer& data, bool) {
    if (++calls == 3) throw std::runtime_error("parser exploded");
    if (v.context->Hold(d, data.span())) data.Clear();
    return FilterStatus::kContinue;
  };
  CHECK(host.Relay(chain, kC2S, "h1") == "");
  CHECK(host.Relay(chain, kC2S, "h2") == "");
  CHECK(host.Relay(chain, kC2S, "boom") == "h1[a]h2[a]boom[a][b]");
  CHECK_FALSE(v.context->CanEmit(kC2S));
  CHECK(host.Relay(chain, kC2S, "after") == "after[a][b]");
  CHECK(host.Relay(chain, kS2C, "back") == "back[b][a]");
}

TEST_CASE("v2: a timer that throws detaches its module, and what it held leaves through the host") {
  V2Host host;
  ModuleChain chain(host, {"t2-a", "t2-v2", "t2-b"});
  chain.Start();
  Scripted& v = *Scripted::last;
  v.on_data = [&](Direction d, Buffer& data, bool) {
    if (d == kS2C && v.context->Hold(d, data.span())) data.Clear();
    return FilterStatus::kContinue;
  };
  CHECK(host.Relay(chain, kS2C, "x") == "");
  bool ran = false;
  v.context->StartTimer(std::chrono::milliseconds(1), [&] {
    ran = true;
    throw std::runtime_error("timer exploded");
  });
  uint64_t later = v.context->StartTimer(std::chrono::milliseconds(1), [] { FAIL("a detached module's timer fired"); });
  CHECK(later != 0);
  REQUIRE(host.RunUntil([&] { return ran; }));
  CHECK(host.out[Index(kS2C)] == "x[b][a]");
  host.RunAll();  // the other timer was cancelled with the module
  CHECK(host.Relay(chain, kS2C, "y") == "y[b][a]");
}

TEST_CASE("v2: a module detached while holding kStopIteration bytes loses none of them") {
  V2Host host;
  host.accepts = false;  // a host without v2: the bytes come with its next Process
  ModuleChain chain(host, {"t2-v2", "t2-b"});
  chain.Start();
  Scripted& v = *Scripted::last;
  v.on_data = [&](Direction, Buffer&, bool) { return FilterStatus::kStopIteration; };
  CHECK(host.Relay(chain, kS2C, "half") == "");
  CHECK(host.Relay(chain, kC2S, "partial") == "");
  v.on_peer = [] { throw std::runtime_error("peer message exploded"); };
  chain.DeliverPeerMessage(0, Bytes("x"));  // detached outside OnData, both directions waiting
  CHECK(host.Relay(chain, kC2S, "more") == "partial[b]more[b]");
  CHECK(host.Relay(chain, kS2C, "tail") == "half[b]tail[b]");
}

TEST_CASE("v2: a module whose queue outgrows the bound is detached, its bytes go on in order") {
  V2Host host;
  ModuleChain chain(host, {"t2-v2", "t2-b"});
  chain.Start();
  Scripted& v = *Scripted::last;
  std::string big(ModuleChain::kMaxHeldBytes - 10, 'h');
  bool first = true;
  v.on_data = [&](Direction d, Buffer& data, bool) {
    if (first && v.context->Hold(d, Bytes(big))) {
      first = false;
      data.Clear();
    }
    return FilterStatus::kContinue;  // later bytes wait behind the held ones
  };
  CHECK(host.Relay(chain, kC2S, "x") == "");
  std::string out = host.Relay(chain, kC2S, std::string(20, 'p'));  // queue passes 1 MiB
  CHECK(out.size() == big.size() + 20 + 3);
  CHECK((out == big + std::string(20, 'p') + "[b]"));
  CHECK_FALSE(v.context->CanEmit(kC2S));
  CHECK(host.Relay(chain, kC2S, "q") == "q[b]");
}
