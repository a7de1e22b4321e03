// The DRE/LZ codec between two simulated boxes (codec_test_util.h): idle
// connections release their codecs (issue 16) without changing a byte.
#include <doctest/doctest.h>

#include <filesystem>
#include <random>

#include "tests/unit/codec_test_util.h"
#include "wanopt/dre/codec.h"
#include "wanopt/lab/echo.h"

using namespace wanopt;
using namespace wanopt::dre;
using namespace wanopt::dre::test_helpers;

// ---- Idle connections release their codecs (issue 16) ----

TEST_CASE("releasing idle codecs at arbitrary points changes no byte") {
  Box a("a"), b("b");
  // New text, incompressible bytes, then the text again (references and deltas).
  auto data = Text(512 * 1024, 41);
  auto noise = lab::RandomBytes(200 * 1024, 42);
  data.insert(data.end(), noise.begin(), noise.end());
  auto again = Text(512 * 1024, 41);
  data.insert(data.end(), again.begin(), again.end());
  for (CodecOptions options : {CodecOptions{true, true}, CodecOptions{false, true}, CodecOptions{true, false}}) {
    CAPTURE(options.dre);
    CAPTURE(options.lz);
    Link link(a, b, options);
    std::mt19937 rng(options.dre * 2 + options.lz);
    Buffer out;
    int releases = 0;
    for (size_t at = 0; at < data.size();) {
      // Reads of 1 byte to 40 KiB, each flushed: most end mid-chunk, their bytes sent as RAW.
      size_t n = std::min<size_t>(data.size() - at, 1 + rng() % (40 * 1024));
      link.encoder.Append(std::span(data).subspan(at, n));
      link.encoder.Flush();
      link.Drain(out);
      at += n;
      if (rng() % 3 == 0) {
        link.Idle(out);
        ++releases;
      }
    }
    link.encoder.Flush();
    link.Drain(out);
    REQUIRE(out.size() == data.size());
    CHECK(std::equal(out.data(), out.data() + out.size(), data.begin()));
    CHECK(releases > 10);
    if (options.lz) {
      CHECK(link.lz_end_frames > 5);
      CHECK(link.encoder.stats().lz_out < link.encoder.stats().lz_in);  // LZ still compresses
    } else {
      CHECK(link.lz_end_frames == 0);
    }
    if (options.dre) CHECK(link.encoder.stats().chunks_hit > 50);
  }
}

TEST_CASE("an idle connection's codecs hold no zstd context, only the bytes of an unfinished chunk") {
  Box a("a"), b("b");
  Link link(a, b);
  Buffer out;
  // The echo of issue 16: 7 bytes, sent as RAW (a chunk's start), not worth compressing.
  // (Before any stream exists, blocks under 128 bytes are not even tried.)
  std::vector<uint8_t> hello{'h', 'e', 'l', 'l', 'o', '!', '\n'};
  link.encoder.Append(hello);
  link.encoder.Flush();
  link.Drain(out);
  // A greeting this short starts no zstd stream: no context was made.
  CHECK(link.encoder.HeldBytes() == hello.size());
  CHECK(link.lz_end_frames == 0);
  link.Idle(out);
  CHECK(link.encoder.HeldBytes() == hello.size());  // the chunk's start, kept for its cut
  CHECK(link.decoder.HeldBytes() == hello.size());
  CHECK(link.lz_end_frames == 0);  // nothing was compressed: the peer holds no stream

  // Busy: compressible text both contexts work on, then idle again mid-chunk.
  auto text = Text(300 * 1024 + 123, 43);
  link.encoder.Append(text);
  link.encoder.Flush();
  link.Drain(out);
  CHECK(link.encoder.HeldBytes() > 256 * 1024);
  CHECK(link.decoder.HeldBytes() > 1024 * 1024);  // the 1 MiB window
  link.Idle(out);
  CHECK(link.lz_end_frames == 1);
  CHECK(link.encoder.HeldBytes() <= 32 * 1024);  // at most a chunk's start (max chunk 32 KiB)
  CHECK(link.decoder.HeldBytes() <= 32 * 1024);
  CHECK(link.encoder.HeldBytes() == link.decoder.HeldBytes());  // the same RAW tail on both sides

  // The next bytes rebuild everything, and every byte arrives.
  auto more = Text(100 * 1024, 44);
  link.encoder.Append(more);
  link.encoder.Flush();
  link.Drain(out);
  std::vector<uint8_t> all(hello);
  all.insert(all.end(), text.begin(), text.end());
  all.insert(all.end(), more.begin(), more.end());
  REQUIRE(out.size() == all.size());
  CHECK(std::equal(out.data(), out.data() + out.size(), all.begin()));
}

TEST_CASE("an encoder with bytes waiting to be framed is not idle") {
  Box a("a"), b("b");
  Link link(a, b);
  Buffer out;
  auto text = Text(200 * 1024, 45);
  link.encoder.Append(text);
  link.encoder.Flush();
  link.Drain(out);
  size_t busy = link.encoder.HeldBytes();
  link.encoder.Append(std::span(text).first(100));  // appended, not flushed
  CHECK_FALSE(link.encoder.ReleaseIdle(true));
  CHECK(link.encoder.HeldBytes() >= busy);
  link.encoder.Flush();
  REQUIRE(link.encoder.HasPayload());  // framed, not taken
  CHECK_FALSE(link.encoder.ReleaseIdle(true));
  link.Drain(out);
  // No frame may be sent now: the contexts go, the stream's end waits for a later call.
  CHECK_FALSE(link.encoder.ReleaseIdle(false));
  CHECK_FALSE(link.encoder.HasPayload());
  CHECK(link.encoder.HeldBytes() <= 32 * 1024);  // at most a chunk's start
  CHECK(link.encoder.ReleaseIdle(true));
  CHECK(link.encoder.HasPayload());
  link.Drain(out);
  CHECK(link.lz_end_frames == 1);
  CHECK(out.size() == text.size() + 100);
}

TEST_CASE("after its stream ended, a compressed frame that does not restart it is refused") {
  Box a("a"), b("b");
  Encoder encoder({true, true}, a.peers->Get("b", kSeed), a.store.get());
  Decoder decoder({true, true}, b.peers->Get("a", kSeed), b.store.get());
  auto take = [&](std::span<const uint8_t> bytes, uint8_t* flags) {
    encoder.Append(bytes);
    encoder.Flush();
    REQUIRE(encoder.HasPayload());
    Buffer payload;
    encoder.TakePayload(payload, flags);
    REQUIRE_FALSE(encoder.HasPayload());
    return std::vector<uint8_t>(payload.data(), payload.data() + payload.size());
  };
  uint8_t first_flags = 0, second_flags = 0, end_flags = 0;
  auto first = take(Text(20 * 1024, 46), &first_flags);
  auto second = take(Text(20 * 1024, 47), &second_flags);
  REQUIRE(first_flags == (kFlagCompressed | kFlagLzReset));
  REQUIRE(second_flags == kFlagCompressed);  // continues the stream
  Buffer out;
  SUBCASE("a decoder that never saw the stream start") {
    CHECK(decoder.Decode(second_flags, second, out) == Decoder::Status::kCorrupt);
  }
  SUBCASE("a decoder whose stream ended") {
    REQUIRE(decoder.Decode(first_flags, first, out) == Decoder::Status::kDone);
    REQUIRE(encoder.ReleaseIdle(true));
    Buffer end;
    encoder.TakePayload(end, &end_flags);
    CHECK(end_flags == kFlagLzEnd);
    CHECK(end.size() == 8);  // the check alone
    size_t before = out.size();
    CHECK(decoder.HeldBytes() > 1024 * 1024);  // the window
    REQUIRE(decoder.Decode(end_flags, end.span(), out) == Decoder::Status::kDone);
    CHECK(out.size() == before);
    CHECK(decoder.HeldBytes() < 256 * 1024);  // the window is gone, scratch buffers wait for ReleaseIdle()
    // The frame that continued the old stream (replayed, or from a broken encoder).
    CHECK(decoder.Decode(second_flags, second, out) == Decoder::Status::kCorrupt);
    CHECK(decoder.error().find("zstd stream") != std::string::npos);
    CHECK(out.size() == before);
  }
}

TEST_CASE("a decoder waiting for repairs keeps its frame through an idle release") {
  Box a("a"), b("b");
  auto data = Text(1 << 20, 48);
  Link first(a, b);
  REQUIRE(first.Send(data) == data);
  b.peers.reset();  // b's store is wiped: every reference needs a repair
  b.store.reset();
  std::filesystem::remove_all(b.dir);
  b.Open();
  Link second(a, b);
  second.release_while_stalled = true;
  CHECK(second.Send(data) == data);
  CHECK(second.decoder.stats().nacks > 0);
}
