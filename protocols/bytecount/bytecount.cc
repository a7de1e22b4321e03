// bytecount: the smallest useful protocol module. It counts the bytes each
// direction carries on each box and, when a direction ends, tells its twin how many
// it saw; the twin checks that both boxes saw the same stream. It rewrites nothing.
//
// It exists to exercise the module interface end to end (tests/integration) and as
// the folder to copy when writing a new module.
#include "protocols/bytecount/bytecount.h"

#include <atomic>
#include <cstring>

#include "protocols/registry.h"
#include "wanopt/util/bytes.h"
#include "wanopt/util/log.h"

namespace wanopt::protocols::bytecount {
namespace {

std::atomic<uint64_t> g_bytes{0};
std::atomic<uint64_t> g_agreements{0};
std::atomic<uint64_t> g_disagreements{0};

class ByteCount final : public Module {
 public:
  void OnNewConnection(ModuleContext& context) override { context_ = &context; }

  FilterStatus OnData(Direction direction, Buffer& data, bool end_stream) override {
    int d = static_cast<int>(direction);
    seen_[d] += data.size();
    g_bytes += data.size();
    if (end_stream) {
      // Message: direction (1 byte) + count (8 bytes, big endian).
      uint8_t message[9];
      message[0] = static_cast<uint8_t>(d);
      bytes::PutBe64(message + 1, seen_[d]);
      context_->SendToPeer(message);
    }
    return FilterStatus::kContinue;
  }

  void OnPeerMessage(std::span<const uint8_t> message) override {
    if (message.size() != 9 || message[0] > 1) {
      ++g_disagreements;
      return;
    }
    // The twin's count covers the whole direction; ours is complete when we too saw
    // the end, which for the receiving box comes right after this message.
    peer_[message[0]] = bytes::GetBe64(message.data() + 1);
    peer_known_[message[0]] = true;
  }

  void OnClose() override {
    for (int d = 0; d < 2; ++d) {
      if (!peer_known_[d]) continue;
      if (peer_[d] == seen_[d]) {
        ++g_agreements;
      } else {
        ++g_disagreements;
        WANOPT_LOG(kWarn, "bytecount") << "connection " << context_->connection().id
                                       << ": direction " << d << " peer counted " << peer_[d]
                                       << " bytes, this box " << seen_[d];
      }
    }
  }

 private:
  ModuleContext* context_ = nullptr;
  uint64_t seen_[2] = {0, 0};
  uint64_t peer_[2] = {0, 0};
  bool peer_known_[2] = {false, false};
};

ModuleRegistrar registrar{{"bytecount", "counts the bytes of each direction and checks them with its twin",
                           [] { return std::make_unique<ByteCount>(); }}};

}  // namespace

Totals ReadTotals() { return {g_bytes.load(), g_agreements.load(), g_disagreements.load()}; }

}  // namespace wanopt::protocols::bytecount
