#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "protocols/chain.h"
#include "protocols/registry.h"

using namespace wanopt;
using namespace wanopt::protocols;

namespace {

std::span<const uint8_t> Bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
std::string Text(const Buffer& b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

// Test modules, registered under names no real module uses.
// "t-lines" holds bytes until it has a whole line, then upper-cases the line.
class Lines final : public Module {
 public:
  void OnNewConnection(ModuleContext&) override {}
  FilterStatus OnData(Direction, Buffer& data, bool end_stream) override {
    if (!end_stream && (data.empty() || data.data()[data.size() - 1] != '\n')) return FilterStatus::kStopIteration;
    for (size_t i = 0; i < data.size(); ++i) data.data()[i] = static_cast<uint8_t>(std::toupper(data.data()[i]));
    return FilterStatus::kContinue;
  }
};
// "t-tag" appends a marker naming the direction it saw.
class Tag final : public Module {
 public:
  void OnNewConnection(ModuleContext& c) override { context = &c; }
  FilterStatus OnData(Direction d, Buffer& data, bool) override {
    data.Append(Bytes(d == Direction::kClientToServer ? "<c2s>" : "<s2c>"));
    return FilterStatus::kContinue;
  }
  void OnPeerMessage(std::span<const uint8_t> m) override { last_message.assign(m.begin(), m.end()); }
  ModuleContext* context = nullptr;
  static inline std::string last_message;
};
// "t-throws" fails on every call.
class Throws final : public Module {
 public:
  void OnNewConnection(ModuleContext&) override {}
  FilterStatus OnData(Direction, Buffer&, bool) override { throw std::runtime_error("parser exploded"); }
};

ModuleRegistrar lines{{"t-lines", "test", [] { return std::make_unique<Lines>(); }}};
ModuleRegistrar tag{{"t-tag", "test", [] { return std::make_unique<Tag>(); }}};
ModuleRegistrar throws{{"t-throws", "test", [] { return std::make_unique<Throws>(); }}};

class FakeHost final : public ModuleChain::Host {
 public:
  const ConnectionInfo& connection() const override { return info; }
  bool SendModuleMessage(uint16_t slot, std::span<const uint8_t> m) override {
    sent.emplace_back(slot, std::string(m.begin(), m.end()));
    return true;
  }
  void SetApplication(std::string_view) override {}
  void AddNote(std::string_view) override {}
  ConnectionInfo info;
  std::vector<std::pair<uint16_t, std::string>> sent;
};

}  // namespace

TEST_CASE("client-to-server data visits modules in order, server-to-client in reverse") {
  FakeHost host;
  ModuleChain chain(host, {"t-lines", "t-tag"});
  chain.Start();
  Buffer data;
  data.Append(Bytes("abc\n"));
  chain.Process(Direction::kClientToServer, data, false);
  CHECK(Text(data) == "ABC\n<c2s>");  // upper-cased first, then tagged
  ModuleChain reversed(host, {"t-tag", "t-lines"});
  reversed.Start();
  data.Clear();
  data.Append(Bytes("xy\n"));
  reversed.Process(Direction::kServerToClient, data, false);
  CHECK(Text(data) == "XY\n<s2c>");  // t-lines (last configured) ran first
}

TEST_CASE("kStopIteration holds bytes until the module has enough, in order") {
  FakeHost host;
  ModuleChain chain(host, {"t-lines", "t-tag"});
  chain.Start();
  Buffer data;
  data.Append(Bytes("hal"));
  chain.Process(Direction::kClientToServer, data, false);
  CHECK(data.empty());  // held: neither the tag module nor the socket saw it
  data.Append(Bytes("f a line\nrest"));
  chain.Process(Direction::kClientToServer, data, false);
  CHECK(data.empty());  // still no line end at the end of the bytes
  data.Append(Bytes("\n"));
  chain.Process(Direction::kClientToServer, data, false);
  CHECK(Text(data) == "HALF A LINE\nREST\n<c2s>");
}

TEST_CASE("end of stream releases held bytes") {
  FakeHost host;
  ModuleChain chain(host, {"t-lines"});
  chain.Start();
  Buffer data;
  data.Append(Bytes("no newline"));
  chain.Process(Direction::kClientToServer, data, false);
  CHECK(data.empty());
  chain.Process(Direction::kClientToServer, data, true);
  CHECK(Text(data) == "NO NEWLINE");
}

TEST_CASE("a module that throws is detached and its bytes flow on untouched") {
  FakeHost host;
  ModuleChain chain(host, {"t-throws", "t-tag"});
  chain.Start();
  for (int i = 0; i < 2; ++i) {
    Buffer data;
    data.Append(Bytes("payload"));
    chain.Process(Direction::kClientToServer, data, false);
    CHECK(Text(data) == "payload<c2s>");
  }
}

TEST_CASE("a module that holds more than the limit is detached, nothing lost") {
  FakeHost host;
  ModuleChain chain(host, {"t-lines"});
  chain.Start();
  std::string chunk(256 * 1024, 'a');
  std::string seen;
  for (int i = 0; i < 5; ++i) {
    Buffer data;
    data.Append(Bytes(chunk));
    chain.Process(Direction::kClientToServer, data, false);
    seen += Text(data);
  }
  CHECK(seen.size() == 5 * chunk.size());
}

TEST_CASE("peer messages go to the module in the right slot, only if the twin exists") {
  FakeHost host;
  ModuleChain chain(host, {"t-lines", "t-tag"});
  chain.Start();
  chain.DeliverPeerMessage(1, Bytes("to tag"));
  CHECK(Tag::last_message == "to tag");
  chain.DeliverPeerMessage(9, Bytes("nobody"));  // no such slot: ignored
  CHECK(Tag::last_message == "to tag");
}

TEST_CASE("the registry knows the built-in bytecount module") {
  CHECK(Registry::Global().Find("bytecount") != nullptr);
  CHECK(Registry::Global().Find("no-such-module") == nullptr);
}

TEST_CASE("SendToPeer reaches the host only when the peer runs the twin") {
  FakeHost host;
  struct Probe final : Module {
    void OnNewConnection(ModuleContext& c) override { context = &c; }
    FilterStatus OnData(Direction, Buffer&, bool) override { return FilterStatus::kContinue; }
    ModuleContext* context = nullptr;
  };
  static Probe* probe = nullptr;
  static ModuleRegistrar registrar{{"t-probe", "test", [] {
                                      auto p = std::make_unique<Probe>();
                                      probe = p.get();
                                      return p;
                                    }}};
  ModuleChain probed(host, {"t-tag", "t-probe"});
  probed.Start();
  REQUIRE(probe != nullptr);
  CHECK_FALSE(probe->context->SendToPeer(Bytes("hi")));
  probed.SetPeerSlots(0b10);
  CHECK(probe->context->SendToPeer(Bytes("hi")));
  REQUIRE(host.sent.size() == 1);
  CHECK(host.sent[0].first == 1);
  CHECK(host.sent[0].second == "hi");
}
