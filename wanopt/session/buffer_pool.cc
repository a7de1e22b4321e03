#include "wanopt/session/buffer_pool.h"

#include <vector>

namespace wanopt {
namespace {
// Enough for the active connections of one thread at full speed; the rest is freed.
constexpr size_t kMaxPooledPerThread = 32;
thread_local std::vector<std::unique_ptr<Buffer>> t_pool;
}  // namespace

std::unique_ptr<Buffer> AcquireRelayBuffer() {
  if (t_pool.empty()) return std::make_unique<Buffer>(kRelayBufferSize);
  auto buffer = std::move(t_pool.back());
  t_pool.pop_back();
  return buffer;
}

void ReleaseRelayBuffer(std::unique_ptr<Buffer> buffer) {
  if (!buffer || buffer->capacity() != kRelayBufferSize) return;
  buffer->Clear();
  if (t_pool.size() < kMaxPooledPerThread) t_pool.push_back(std::move(buffer));
}

}  // namespace wanopt
