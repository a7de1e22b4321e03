// libFuzzer target: what a box reads first from an inner channel: the frame header
// and its check (wanopt/channel/frame.h), and the Hello and HelloAck payloads
// (wanopt/channel/hello.h).
//
// Input: a selector byte, then the bytes. Selector % 3 == 0: a channel's input
// stream for DecodeFrame; 1: a Hello payload; 2: a HelloAck payload.
// Whatever the bytes: no crash, no read past the end, and
//  - a decoded frame re-encodes to the very header it was read from, and any header
//    with a known type, a length that fits and a correct check decodes;
//  - a decoded Hello or HelloAck re-encodes to bytes that decode to the same value;
//  - a rejected one says why.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "wanopt/channel/frame.h"
#include "wanopt/channel/hello.h"
#include "util/bytes.h"

using namespace wanopt;
using namespace wanopt::channel;

namespace {

void FuzzFrame(std::span<const uint8_t> in) {
  DecodedFrame frame;
  DecodeStatus status = DecodeFrame(in, &frame);
  (void)DecodeStatusName(status);
  if (status == DecodeStatus::kFrame) {
    if (frame.size != kFrameHeaderSize + frame.header.length || frame.size > in.size() ||
        frame.payload.data() != in.data() + kFrameHeaderSize || frame.payload.size() != frame.header.length) {
      std::abort();
    }
    uint8_t header[kFrameHeaderSize];
    EncodeFrameHeader(frame.header, frame.payload, header);
    if (std::memcmp(header, in.data(), kFrameHeaderSize) != 0) std::abort();
    if (frame.header.type == FrameType::kReset && !frame.payload.empty()) {
      (void)ResetReasonName(static_cast<ResetReason>(frame.payload[0]));
    }
  }
  // The same header with its check made right: decodes, unless the type is unknown
  // or the length does not fit.
  if (in.size() < kFrameHeaderSize) return;
  FrameHeader header;
  header.type = static_cast<FrameType>(in[0]);
  header.flags = in[1];
  header.stream = bytes::GetBe16(in.data() + 2);
  header.length = bytes::GetBe32(in.data() + 4);
  if (header.length > kMaxFramePayload || header.length > in.size() - kFrameHeaderSize) return;
  std::vector<uint8_t> fixed(in.begin(), in.end());
  std::span<const uint8_t> payload(fixed.data() + kFrameHeaderSize, header.length);
  EncodeFrameHeader(header, payload, {fixed.data(), kFrameHeaderSize});
  status = DecodeFrame(fixed, &frame);
  if (status == DecodeStatus::kBadType) return;
  if (status != DecodeStatus::kFrame || frame.header.type != header.type || frame.header.flags != header.flags ||
      frame.header.stream != header.stream || frame.header.length != header.length) {
    std::abort();
  }
}

// The client address is optional on the wire: port 0 means "not told".
bool SameSource(const Hello& a, const Hello& b) {
  if (a.source.port() == 0 || b.source.port() == 0) return a.source.port() == b.source.port();
  return a.source == b.source;
}

bool Same(const Hello& a, const Hello& b) {
  return a.version == b.version && a.device_id == b.device_id && a.offered == b.offered &&
         a.destination == b.destination && SameSource(a, b) && a.modules == b.modules && a.dre_seed == b.dre_seed &&
         a.store_instance == b.store_instance;
}

bool Same(const HelloAck& a, const HelloAck& b) {
  return a.version == b.version && a.status == b.status && a.device_id == b.device_id && a.offered == b.offered &&
         a.negotiated == b.negotiated && a.applied == b.applied && a.accepted_modules == b.accepted_modules &&
         a.store_instance == b.store_instance;
}

void FuzzHello(std::span<const uint8_t> in) {
  std::string error;
  auto hello = DecodeHello(in, &error);
  if (!hello) {
    if (error.empty()) std::abort();
    return;
  }
  (void)FormatDeviceId(hello->device_id);
  auto bytes = EncodeHello(*hello);
  auto again = DecodeHello(bytes, &error);
  if (!again || !Same(*hello, *again) || EncodeHello(*again) != bytes) std::abort();
}

void FuzzHelloAck(std::span<const uint8_t> in) {
  std::string error;
  auto ack = DecodeHelloAck(in, &error);
  if (!ack) {
    if (error.empty()) std::abort();
    return;
  }
  (void)HelloStatusName(ack->status);
  auto bytes = EncodeHelloAck(*ack);
  auto again = DecodeHelloAck(bytes, &error);
  if (!again || !Same(*ack, *again) || EncodeHelloAck(*again) != bytes) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::span<const uint8_t> in(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0: FuzzFrame(in); break;
    case 1: FuzzHello(in); break;
    case 2: FuzzHelloAck(in); break;
  }
  return 0;
}
