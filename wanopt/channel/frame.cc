#include "wanopt/channel/frame.h"

#define XXH_INLINE_ALL  // inlined: the frame check runs on every relayed byte
#include <xxhash.h>

#include "util/bytes.h"

namespace wanopt::channel {
namespace {

bool KnownType(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kData:
    case FrameType::kHalfClose:
    case FrameType::kReset:
    case FrameType::kKeepalive:
    case FrameType::kModule:
    case FrameType::kDre:
    case FrameType::kNack:
    case FrameType::kRepair:
    case FrameType::kHello:
    case FrameType::kHelloAck:
      return true;
  }
  return false;
}

// The check covers the first 8 header bytes (type, flags, stream, length) and the payload.
uint64_t FrameCheck(std::span<const uint8_t> head8, std::span<const uint8_t> payload) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, head8.data(), head8.size());
  XXH3_64bits_update(&state, payload.data(), payload.size());
  return XXH3_64bits_digest(&state);
}

}  // namespace

std::string_view ResetReasonName(ResetReason reason) {
  switch (reason) {
    case ResetReason::kLanReset: return "lan-reset";
    case ResetReason::kLanError: return "lan-error";
    case ResetReason::kProtocolError: return "protocol-error";
    case ResetReason::kTimeout: return "timeout";
    case ResetReason::kShutdown: return "shutdown";
    case ResetReason::kIntegrity: return "integrity";
    case ResetReason::kModule: return "module";
  }
  return "unknown";
}

std::string_view DecodeStatusName(DecodeStatus status) {
  switch (status) {
    case DecodeStatus::kFrame: return "frame";
    case DecodeStatus::kNeedMore: return "need-more";
    case DecodeStatus::kBadType: return "unknown frame type";
    case DecodeStatus::kTooLong: return "frame length above maximum";
    case DecodeStatus::kBadChecksum: return "frame check mismatch";
  }
  return "?";
}

void EncodeFrameHeader(const FrameHeader& header, std::span<const uint8_t> payload,
                       std::span<uint8_t> out) {
  uint8_t* p = out.data();
  p[0] = static_cast<uint8_t>(header.type);
  p[1] = header.flags;
  bytes::PutBe16(p + 2, header.stream);
  bytes::PutBe32(p + 4, header.length);
  bytes::PutBe64(p + 8, FrameCheck({p, 8}, payload));
}

DecodeStatus DecodeFrame(std::span<const uint8_t> input, DecodedFrame* frame) {
  if (input.size() < kFrameHeaderSize) return DecodeStatus::kNeedMore;
  const uint8_t* p = input.data();
  // Validate what can be validated before waiting for the payload, so that garbage
  // is rejected at once instead of after buffering up to a maximum-size frame.
  if (!KnownType(p[0])) return DecodeStatus::kBadType;
  uint32_t length = bytes::GetBe32(p + 4);
  if (length > kMaxFramePayload) return DecodeStatus::kTooLong;
  if (input.size() < kFrameHeaderSize + length) return DecodeStatus::kNeedMore;
  std::span<const uint8_t> payload = input.subspan(kFrameHeaderSize, length);
  if (bytes::GetBe64(p + 8) != FrameCheck(input.first(8), payload)) return DecodeStatus::kBadChecksum;
  frame->header.type = static_cast<FrameType>(p[0]);
  frame->header.flags = p[1];
  frame->header.stream = bytes::GetBe16(p + 2);
  frame->header.length = length;
  frame->payload = payload;
  frame->size = kFrameHeaderSize + length;
  return DecodeStatus::kFrame;
}

}  // namespace wanopt::channel
