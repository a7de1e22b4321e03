// bytecount: the smallest useful protocol module. It counts the bytes each
// direction carries on each box and, when a direction ends, tells its twin how many
// it saw; the twin checks that both boxes saw the same stream. It rewrites nothing.
//
// It exists to exercise the module interface end to end (tests/integration) and as
// the folder to copy when writing a new module: a test module (TEST_ONLY in its
// CMakeLists.txt), registered in the test binaries, not in the daemon. Its name
// comes from that CMakeLists.txt (WANOPT_MODULE_NAME), so a copy whose NAME changed
// registers as a second module as it is; rename its namespace and header next.
#include "protocols/bytecount/bytecount.h"

#include <cstring>

#include "protocols/registry.h"
#include "util/bytes.h"
#include "util/log.h"

namespace wanopt::protocols::bytecount {
namespace {

class ByteCount final : public Module {
 public:
  void OnNewConnection(ModuleContext& context) override { context_ = &context; }

  FilterStatus OnData(Direction direction, Buffer& data, bool end_stream) override {
    int d = static_cast<int>(direction);
    seen_[d] += data.size();
    internal::g_bytes += data.size();
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
      ++internal::g_disagreements;
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
        ++internal::g_agreements;
      } else {
        ++internal::g_disagreements;
        WANOPT_LOG(kWarn, WANOPT_MODULE_NAME) << "connection " << context_->connection().id
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

ModuleRegistrar registrar{{WANOPT_MODULE_NAME, "counts the bytes of each direction and checks them with its twin",
                           [] { return std::make_unique<ByteCount>(); }}};

}  // namespace

}  // namespace wanopt::protocols::bytecount
