// Relay buffers, recycled per event-loop thread.
//
// A connection holds a buffer only while bytes are moving: an idle connection waits
// for readability with no buffer at all, which is what keeps 10,000 idle
// connections cheap. Each buffer holds exactly one maximum-size inner-channel frame.
#pragma once

#include <memory>

#include "wanopt/channel/frame.h"
#include "util/buffer.h"

namespace wanopt {

inline constexpr size_t kRelayBufferSize = channel::kMaxFrameSize;

// Returns an empty buffer of capacity kRelayBufferSize.
std::unique_ptr<Buffer> AcquireRelayBuffer();
// Gives a buffer back to this thread's pool (or frees it when the pool is full).
void ReleaseRelayBuffer(std::unique_ptr<Buffer> buffer);

}  // namespace wanopt
