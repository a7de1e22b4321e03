// Inner-channel framing, protocol v1 (spec: wanopt/docs/inner-channel.md).
//
// Every byte on an inner channel belongs to a frame: a 16-byte header followed by
// `length` payload bytes. The header carries an XXH3-64 check over the header's
// first 8 bytes and the payload, so a corrupted or misaligned stream is detected
// before a single byte of it reaches a LAN socket.
//
// This file only encodes and decodes; it owns no sockets and no buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace wanopt::channel {

enum class FrameType : uint8_t {
  kData = 0x01,       // payload: application bytes of the relayed connection
  kHalfClose = 0x02,  // sender's LAN side sent FIN; no payload
  kReset = 0x03,      // sender's LAN side was reset or failed; payload: ResetReason (1 byte)
  kKeepalive = 0x04,  // proves the peer is alive while the connection is idle; payload: none, or
                      // kKeepaliveFinished (the sender decoded everything up to the receiver's half-close)
  kModule = 0x05,     // payload: a protocol module's message to its twin; `stream` = module slot
  kDre = 0x06,        // payload: DRE/LZ-encoded application bytes (wanopt/dre/codec.h); flags: codec flags
  kNack = 0x07,       // payload: fingerprints (16 bytes each) of references the sender could not resolve
  kRepair = 0x08,     // payload: a fingerprint (16 bytes) and the chunk's bytes, answering a kNack
  kHello = 0x10,      // first frame from the opening side (see hello.h)
  kHelloAck = 0x11,   // first frame from the accepting side
};

// A keepalive's one-byte payload, sent by a side once it processed the receiver's
// half-close: "I will send no more nack; close once your side is done" (inner-channel.md, "Ending a
// connection"). Older receivers ignore a keepalive's payload.
inline constexpr uint8_t kKeepaliveFinished = 0x01;

// Why a connection was reset; carried in kReset frames and logged on both boxes.
enum class ResetReason : uint8_t {
  kLanReset = 1,       // the client or server reset its TCP connection
  kLanError = 2,       // a socket error other than a reset on the LAN side
  kProtocolError = 3,  // a malformed frame or a frame out of order
  kTimeout = 4,        // peer silent longer than the dead-peer timeout
  kShutdown = 5,       // the daemon is stopping
  kIntegrity = 6,      // reconstructed bytes failed their check
  kModule = 7,         // a protocol module ended it (a virtual connection lost a channel)
};
std::string_view ResetReasonName(ResetReason reason);

inline constexpr size_t kFrameHeaderSize = 16;
// Largest payload a v1 receiver accepts. Senders may use less; a larger length is
// a protocol error (the receiver's buffer is sized for exactly this).
inline constexpr size_t kMaxFramePayload = 128 * 1024 - kFrameHeaderSize;
inline constexpr size_t kMaxFrameSize = kFrameHeaderSize + kMaxFramePayload;

struct FrameHeader {
  FrameType type = FrameType::kData;
  uint8_t flags = 0;
  uint16_t stream = 0;
  uint32_t length = 0;
};

// Writes the 16-byte header for `header` and `payload` into `out`.
// REQUIRES: out.size() >= kFrameHeaderSize, payload.size() == header.length <= kMaxFramePayload.
void EncodeFrameHeader(const FrameHeader& header, std::span<const uint8_t> payload,
                       std::span<uint8_t> out);

enum class DecodeStatus {
  kFrame,        // a whole, intact frame is at the front of the input
  kNeedMore,     // the input ends inside the first frame
  kBadType,      // unknown frame type
  kTooLong,      // length above kMaxFramePayload
  kBadChecksum,  // the check does not match: corrupted or misaligned stream
};
std::string_view DecodeStatusName(DecodeStatus status);

struct DecodedFrame {
  FrameHeader header;
  std::span<const uint8_t> payload;  // points into the decoder's input
  size_t size = 0;                   // header + payload: bytes to consume
};

// Decodes the frame at the front of `input` without copying. On kFrame, `*frame`
// is filled and its payload aliases `input`. Errors are final for the channel.
DecodeStatus DecodeFrame(std::span<const uint8_t> input, DecodedFrame* frame);

}  // namespace wanopt::channel
