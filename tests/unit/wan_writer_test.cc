// The session's WAN writer over a real socket pair, without a session.
#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>

#include "wanopt/channel/frame.h"
#include "wanopt/session/wan_writer.h"

using namespace wanopt;
namespace asio = boost::asio;
using asio::ip::tcp;
using channel::FrameType;

namespace {

struct Recorder : WanWriter::Events {
  std::vector<WanWriter::After> completions;
  size_t bytes = 0;
  bool failed = false;
  std::function<void(WanWriter::After)> on_written;
  void OnWanWritten(size_t n, WanWriter::After after) override {
    bytes += n;
    completions.push_back(after);
    if (on_written) on_written(after);
  }
  void OnWanWriteFailed(const boost::system::error_code&) override { failed = true; }
};

// A connected TCP pair on loopback: the writer's socket and the far end.
struct Pair {
  asio::io_context io;
  channel::PlainStream near{io.get_executor()};
  tcp::socket far{io};
  Pair() {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    near.tcp().open(tcp::v4());
    near.tcp().connect(acceptor.local_endpoint());
    far = acceptor.accept();
  }
  // A writer on the near end (the pair owns it, and is its owner for Start).
  WanWriter& Writer(WanWriter::Events& events, bool framed) {
    writer = std::make_unique<WanWriter>(near, events);
    writer->Start(owner);
    writer->set_framed(framed);
    return *writer;
  }
  std::shared_ptr<int> owner = std::make_shared<int>(0);
  std::unique_ptr<WanWriter> writer;
  // Everything the far end received once the near end is closed.
  std::vector<uint8_t> Drain() {
    near.Close();
    std::vector<uint8_t> all;
    boost::system::error_code ec;
    asio::read(far, asio::dynamic_buffer(all), ec);
    return all;
  }
};

std::vector<std::pair<FrameType, std::string>> Frames(std::span<const uint8_t> bytes) {
  std::vector<std::pair<FrameType, std::string>> frames;
  while (!bytes.empty()) {
    channel::DecodedFrame frame;
    REQUIRE(channel::DecodeFrame(bytes, &frame) == channel::DecodeStatus::kFrame);
    frames.emplace_back(frame.header.type, std::string(frame.payload.begin(), frame.payload.end()));
    bytes = bytes.subspan(frame.size);
  }
  return frames;
}

std::vector<uint8_t> Bytes(std::string_view text) { return {text.begin(), text.end()}; }

}  // namespace

TEST_CASE("wan writer: frames go out in queue order, an urgent one right after the write in flight") {
  Pair pair;
  Recorder events;
  WanWriter& writer = pair.Writer(events, /*framed=*/true);
  std::string data = "client bytes";
  writer.QueueData({reinterpret_cast<const uint8_t*>(data.data()), data.size()}, WanWriter::After::kResumeUp);
  CHECK(writer.writing());
  writer.QueueControl(FrameType::kKeepalive, 0, {});
  writer.QueueUrgent(FrameType::kNack, Bytes("0123456789abcdef"));
  writer.QueueHalfClose();
  pair.io.run();
  CHECK_FALSE(writer.writing());
  CHECK(events.completions == std::vector<WanWriter::After>{WanWriter::After::kResumeUp, WanWriter::After::kNothing,
                                                             WanWriter::After::kNothing,
                                                             WanWriter::After::kHalfCloseSent});
  auto frames = Frames(pair.Drain());
  REQUIRE(frames.size() == 4);
  CHECK(frames[0] == std::pair{FrameType::kData, data});  // already being written
  CHECK(frames[1].first == FrameType::kNack);             // ahead of what waited
  CHECK(frames[2].first == FrameType::kKeepalive);
  CHECK(frames[3].first == FrameType::kHalfClose);
  CHECK(events.bytes == 4 * channel::kFrameHeaderSize + data.size() + 16);
}

TEST_CASE("wan writer: data larger than a frame is split, the completion goes with the last part") {
  Pair pair;
  Recorder events;
  WanWriter& writer = pair.Writer(events, /*framed=*/true);
  std::vector<uint8_t> big(channel::kMaxFramePayload * 2 + 100, 'x');
  writer.QueueData(big, WanWriter::After::kResumeUp);
  pair.io.run();
  CHECK(events.completions == std::vector<WanWriter::After>{WanWriter::After::kNothing, WanWriter::After::kNothing,
                                                             WanWriter::After::kResumeUp});
  auto frames = Frames(pair.Drain());
  REQUIRE(frames.size() == 3);
  size_t total = 0;
  for (const auto& [type, payload] : frames) {
    CHECK(type == FrameType::kData);
    CHECK(payload.size() <= channel::kMaxFramePayload);
    total += payload.size();
  }
  CHECK(total == big.size());
}

TEST_CASE("wan writer: raw (pass-through) data goes unframed and the half-close shuts the socket down") {
  Pair pair;
  Recorder events;
  WanWriter& writer = pair.Writer(events, /*framed=*/false);
  std::string data = "plain bytes";
  writer.QueueData({reinterpret_cast<const uint8_t*>(data.data()), data.size()}, WanWriter::After::kNothing);
  writer.QueueHalfClose();
  pair.io.run();
  // The far end sees the bytes, then EOF, while the near socket is still open.
  std::vector<uint8_t> got;
  boost::system::error_code ec;
  asio::read(pair.far, asio::dynamic_buffer(got), ec);
  CHECK(ec == asio::error::eof);
  CHECK(std::string(got.begin(), got.end()) == data);
  CHECK(pair.near.is_open());
  CHECK(events.completions.back() == WanWriter::After::kHalfCloseSent);
}

TEST_CASE("wan writer: after Stop nothing more is written or reported") {
  Pair pair;
  Recorder events;
  WanWriter& writer = pair.Writer(events, /*framed=*/true);
  events.on_written = [&](WanWriter::After) { writer.Stop(); };
  writer.QueueControl(FrameType::kKeepalive, 0, {});
  writer.QueueControl(FrameType::kKeepalive, 0, {});
  writer.QueueControl(FrameType::kKeepalive, 0, {});
  pair.io.run();
  CHECK(events.completions.size() == 1);
  CHECK(Frames(pair.Drain()).size() == 1);
}
