// Helpers for the DRE/LZ codec's tests (codec_*_test.cc): two simulated boxes, each
// with its own chunk store and its own view of the peering, as on the wire, and one
// direction of a connection between them. A failure fails the running test.
#pragma once

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "datastore/chunk_store.h"
#include "wanopt/dre/codec.h"
#include "wanopt/lab/echo.h"

namespace wanopt::dre::test_helpers {

struct Box {
  std::string name;
  std::string dir;
  std::unique_ptr<datastore::ChunkStore> store;
  std::unique_ptr<PeerTable> peers;
  Box(const std::string& box_name, uint64_t max_bytes = uint64_t{256} << 20) : name(box_name) {
    dir = (std::filesystem::temp_directory_path() / ("wanopt-codec-" + name + "-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir);
    Open(max_bytes);
  }
  void Open(uint64_t max_bytes = uint64_t{256} << 20) {
    std::string error;
    datastore::ChunkStoreOptions options;
    options.path = dir + "/store";
    options.max_bytes = max_bytes;
    store = datastore::ChunkStore::Open(options, &error);
    REQUIRE_MESSAGE(store, error);
    peers = std::make_unique<PeerTable>(dir + "/peers");
  }
  ~Box() {
    peers.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
};

inline constexpr Seed kSeed = {7, 7, 7};

// One direction: an encoder on `from`, a decoder on `to`. Repairs are served at
// once, as the sender's box would after a NACK.
struct Link {
  Encoder encoder;
  Decoder decoder;
  uint64_t wire_bytes = 0;
  bool release_while_stalled = false;  // the decoder's ReleaseIdle() while it waits for repairs
  int lz_end_frames = 0;
  size_t frames = 0, largest_frame = 0;  // frames decoded, and the most one decoded to
  Link(Box& from, Box& to, CodecOptions options = {})
      : encoder(options, from.peers->Get(to.name, kSeed), from.store.get()),
        decoder(options, to.peers->Get(from.name, kSeed), to.store.get()) {}

  // Sends `data` in `piece`-sized reads, flushing after each read when asked, and
  // returns what the decoder produced.
  std::vector<uint8_t> Send(std::span<const uint8_t> data, size_t piece = 128 * 1024, bool flush_each = false) {
    Buffer out;
    for (size_t at = 0; at < data.size(); at += piece) {
      encoder.Append(data.subspan(at, std::min(piece, data.size() - at)));
      if (flush_each) encoder.Flush();
      Drain(out);
    }
    encoder.Flush();
    Drain(out);
    return {out.data(), out.data() + out.size()};
  }

  void Drain(Buffer& out) {
    while (encoder.HasPayload()) {
      Buffer payload;
      uint8_t flags = 0;
      encoder.TakePayload(payload, &flags);
      REQUIRE(payload.size() <= 128 * 1024 - 16);
      wire_bytes += payload.size() + 16;
      if (flags & kFlagLzEnd) ++lz_end_frames;
      const size_t before = out.size();
      auto status = decoder.Decode(flags, payload.span(), out);
      while (status == Decoder::Status::kMissing) {
        if (release_while_stalled) decoder.ReleaseIdle();
        for (const auto& fp : decoder.missing()) {
          auto chunk = encoder.Repair(fp);
          REQUIRE(chunk);
          wire_bytes += chunk->size() + 32;
          REQUIRE(decoder.AddRepair(fp, *chunk));
        }
        status = decoder.Resume(out);
      }
      REQUIRE_MESSAGE(status == Decoder::Status::kDone, decoder.error());
      ++frames;
      largest_frame = std::max(largest_frame, out.size() - before);
    }
  }

  // The connection goes idle: the encoder ends its stream (the frame crosses), the
  // decoder frees what it can.
  void Idle(Buffer& out) {
    encoder.ReleaseIdle(true);
    Drain(out);
    decoder.ReleaseIdle();
  }
};

inline std::vector<uint8_t> Text(size_t n, uint64_t seed) { return lab::SampleText(n, seed); }

}  // namespace wanopt::dre::test_helpers
