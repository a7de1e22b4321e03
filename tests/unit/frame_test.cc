#include <doctest/doctest.h>

#include <vector>

#include "wanopt/channel/frame.h"

using namespace wanopt::channel;

namespace {
std::vector<uint8_t> Frame(FrameType type, uint16_t stream, std::vector<uint8_t> payload) {
  std::vector<uint8_t> out(kFrameHeaderSize);
  EncodeFrameHeader({type, 0, stream, static_cast<uint32_t>(payload.size())}, payload, out);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}
}  // namespace

TEST_CASE("a frame decodes to what was encoded, without copying") {
  auto bytes = Frame(FrameType::kModule, 7, {1, 2, 3});
  DecodedFrame frame;
  REQUIRE(DecodeFrame(bytes, &frame) == DecodeStatus::kFrame);
  CHECK(frame.header.type == FrameType::kModule);
  CHECK(frame.header.stream == 7);
  CHECK(frame.header.length == 3);
  CHECK(frame.size == kFrameHeaderSize + 3);
  CHECK(frame.payload.data() == bytes.data() + kFrameHeaderSize);
}

TEST_CASE("empty and maximum-size payloads") {
  DecodedFrame frame;
  auto empty = Frame(FrameType::kHalfClose, 0, {});
  REQUIRE(DecodeFrame(empty, &frame) == DecodeStatus::kFrame);
  CHECK(frame.payload.empty());
  auto big = Frame(FrameType::kData, 0, std::vector<uint8_t>(kMaxFramePayload, 0xab));
  REQUIRE(DecodeFrame(big, &frame) == DecodeStatus::kFrame);
  CHECK(frame.payload.size() == kMaxFramePayload);
}

TEST_CASE("every strict prefix of a frame needs more bytes") {
  auto bytes = Frame(FrameType::kData, 0, {9, 8, 7, 6, 5});
  DecodedFrame frame;
  for (size_t n = 0; n < bytes.size(); ++n) {
    CHECK(DecodeFrame(std::span(bytes).first(n), &frame) == DecodeStatus::kNeedMore);
  }
}

TEST_CASE("two frames back to back decode one at a time") {
  auto a = Frame(FrameType::kData, 0, {1});
  auto b = Frame(FrameType::kKeepalive, 0, {});
  a.insert(a.end(), b.begin(), b.end());
  DecodedFrame frame;
  REQUIRE(DecodeFrame(a, &frame) == DecodeStatus::kFrame);
  CHECK(frame.header.type == FrameType::kData);
  REQUIRE(DecodeFrame(std::span(a).subspan(frame.size), &frame) == DecodeStatus::kFrame);
  CHECK(frame.header.type == FrameType::kKeepalive);
}

TEST_CASE("any flipped bit in a frame is detected") {
  auto good = Frame(FrameType::kData, 3, {10, 20, 30, 40});
  DecodedFrame frame;
  for (size_t byte = 0; byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = good;
      bad[byte] ^= static_cast<uint8_t>(1 << bit);
      DecodeStatus status = DecodeFrame(bad, &frame);
      // A flipped length bit may make the frame look longer (need more) or too long;
      // it must never decode as a valid frame.
      CHECK(status != DecodeStatus::kFrame);
    }
  }
}

TEST_CASE("unknown types and oversized lengths are rejected from the header alone") {
  auto bytes = Frame(FrameType::kData, 0, {});
  bytes[0] = 0x7f;
  DecodedFrame frame;
  CHECK(DecodeFrame(bytes, &frame) == DecodeStatus::kBadType);
  bytes = Frame(FrameType::kData, 0, {});
  bytes[4] = 0x00;
  bytes[5] = 0x02;  // length 128 KiB: one above the maximum payload
  bytes[6] = 0x00;
  bytes[7] = 0x00;
  CHECK(DecodeFrame(bytes, &frame) == DecodeStatus::kTooLong);
}
