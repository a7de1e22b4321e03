// v2test: exercises every capability of module interface v2 on a line protocol, so
// that a loopback test can check each byte (tests/integration/module_v2_test.cc).
//
// On the branch, client-to-server lines:
//   LOCAL <x>   answered by this box: "ANSWER <x>" to the client; the server never sees it  (a)
//   COUNT       answered by this box: "COUNT <n>", n = this client's live connections      (a, e)
//   HOLD <x>    held for 50 ms (a timer), then passed on; what follows waits behind it    (c, d)
// On the datacenter:
//   ORIGINATE <x>  passed on, followed by a request of this box's own, "SECRET <x>";      (b)
//   SECRET <x>     from the server: the answer to that request, consumed, never relayed
// Anything else passes unchanged. A line is at most 4 KiB; a longer one passes as it is.
#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "protocols/group.h"
#include "protocols/registry.h"

namespace wanopt::protocols::v2test {
namespace {

constexpr size_t kMaxLine = 4096;

struct ClientGroup {
  std::mutex mu;
  int connections = 0;
};

class Box final : public BoxModule {
 public:
  FlowAdvice OnNewFlow(const boost::asio::ip::tcp::endpoint&, const boost::asio::ip::tcp::endpoint&) override {
    return {};
  }
  Groups<std::string, ClientGroup> groups;
};

class V2Test final : public Module {
 public:
  void OnNewConnection(ModuleContext& context) override {
    context_ = &context;
    if (auto* box = dynamic_cast<Box*>(context.box())) {
      group_ = box->groups.Join(context.connection().client.address().to_string(),
                                [] { return std::make_unique<ClientGroup>(); });
      std::lock_guard lock(group_->mu);
      ++group_->connections;
    }
  }

  FilterStatus OnData(Direction direction, Buffer& data, bool end_stream) override {
    std::string& partial = partial_[static_cast<int>(direction)];
    partial.append(reinterpret_cast<const char*>(data.data()), data.size());
    data.Clear();
    std::string out;  // lines passed on, in order
    size_t at = 0;
    for (;;) {
      size_t nl = partial.find('\n', at);
      if (nl == std::string::npos) break;
      std::string line = partial.substr(at, nl + 1 - at);
      at = nl + 1;
      Handle(direction, line, out);
    }
    partial.erase(0, at);
    if (partial.size() > kMaxLine || end_stream) {
      out += partial;
      partial.clear();
    }
    data.Append({reinterpret_cast<const uint8_t*>(out.data()), out.size()});
    return FilterStatus::kContinue;
  }

  void OnClose() override {
    if (consumed_) context_->AddNote("v2test: consumed " + std::to_string(consumed_) + " answers to its own requests");
    if (group_) {
      std::lock_guard lock(group_->mu);
      --group_->connections;
    }
  }

 private:
  static std::span<const uint8_t> Span(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
  static bool Starts(const std::string& line, std::string_view word) { return line.rfind(word, 0) == 0; }

  // What was passed on so far goes out first, so that an emit or a hold keeps the order.
  void FlushPassed(Direction direction, std::string& out) {
    if (out.empty()) return;
    context_->Emit(direction, Span(out));
    out.clear();
  }

  void Handle(Direction direction, const std::string& line, std::string& out) {
    bool branch = context_->connection().side == Side::kBranch;
    bool up = direction == Direction::kClientToServer;
    if (branch && up && Starts(line, "LOCAL ")) {
      context_->Emit(Direction::kServerToClient, Span("ANSWER " + line.substr(6)));
      return;
    }
    if (branch && up && line == "COUNT\n") {
      int n = 0;
      if (group_) {
        std::lock_guard lock(group_->mu);
        n = group_->connections;
      }
      context_->Emit(Direction::kServerToClient, Span("COUNT " + std::to_string(n) + "\n"));
      return;
    }
    if (branch && up && Starts(line, "HOLD ") && context_->CanEmit(direction)) {
      FlushPassed(direction, out);
      context_->Hold(direction, Span(line));
      context_->StartTimer(std::chrono::milliseconds(50), [this] {
        context_->Release(Direction::kClientToServer, context_->held(Direction::kClientToServer));
      });
      return;
    }
    if (!branch && up && Starts(line, "ORIGINATE ")) {
      out += line;
      FlushPassed(direction, out);
      context_->Emit(direction, Span("SECRET " + line.substr(10)));
      return;
    }
    if (!branch && !up && Starts(line, "SECRET ")) {
      ++consumed_;
      return;
    }
    out += line;
  }

  ModuleContext* context_ = nullptr;
  std::string partial_[2];
  std::shared_ptr<ClientGroup> group_;
  uint64_t consumed_ = 0;
};

ModuleRegistrar registrar{{WANOPT_MODULE_NAME, "test module: module interface v2 on a line protocol",
                           [] { return std::make_unique<V2Test>(); },
                           [](const ModuleSettings&, std::string*) { return std::make_unique<Box>(); }}};

}  // namespace
}  // namespace wanopt::protocols::v2test
