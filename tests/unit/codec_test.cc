// The DRE/LZ codec between two simulated boxes (codec_test_util.h): round trips,
// references and deltas, repairs, corrupt input, literals-only and LZ-only peers.
// Idle connections releasing their codecs: codec_idle_test.cc.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include <filesystem>
#include <random>

#include <zstd.h>

#include "tests/unit/codec_test_util.h"
#include "wanopt/dre/codec.h"
#include "wanopt/dre/codec_format.h"
#include "wanopt/lab/echo.h"

using namespace wanopt;
using namespace wanopt::dre;
using namespace wanopt::dre::test_helpers;

TEST_CASE("codec round trips random, text, zeros, one repeated byte, tiny and empty inputs") {
  Box a("a"), b("b");
  std::vector<std::pair<const char*, std::vector<uint8_t>>> inputs = {
      {"random", lab::RandomBytes(3 << 20, 1)},
      {"text", Text(3 << 20, 2)},
      {"zeros", std::vector<uint8_t>(2 << 20, 0)},
      {"one byte repeated", std::vector<uint8_t>(1 << 20, 'x')},
      {"one byte", std::vector<uint8_t>{42}},
      {"empty", {}},
  };
  for (CodecOptions options : {CodecOptions{true, true}, CodecOptions{true, false}, CodecOptions{false, true}}) {
    for (const auto& [name, data] : inputs) {
      CAPTURE(name);
      CAPTURE(options.dre);
      CAPTURE(options.lz);
      Link link(a, b, options);
      CHECK(link.Send(data) == data);
    }
  }
}

TEST_CASE("the second pass of the same bytes is almost all references") {
  Box a("a"), b("b");
  auto data = Text(8 << 20, 3);
  Link first(a, b);
  REQUIRE(first.Send(data) == data);
  Link second(a, b);
  REQUIRE(second.Send(data) == data);
  CHECK(second.encoder.stats().chunks_missed == 0);
  CHECK(second.encoder.stats().chunks_hit > 1000);
  CHECK(second.wire_bytes * 200 < data.size());  // > 99.5% reduction
}

TEST_CASE("chunks learned in one direction serve the other") {
  Box a("a"), b("b");
  auto data = Text(4 << 20, 4);
  Link forward(a, b);
  REQUIRE(forward.Send(data) == data);
  Link backward(b, a);  // b's encoder names chunks a's decoder learned when sending
  REQUIRE(backward.Send(data) == data);
  CHECK(backward.encoder.stats().chunks_missed == 0);
}

TEST_CASE("flushing after every small read does not change the chunks") {
  Box a("a"), b("b");
  auto data = Text(2 << 20, 5);
  Link once(a, b);
  REQUIRE(once.Send(data) == data);
  Link interactive(a, b);
  REQUIRE(interactive.Send(data, 1000, /*flush_each=*/true) == data);
  // Every chunk is still found: the flushed bytes became the start of their chunk.
  CHECK(interactive.encoder.stats().chunks_missed == 0);
  CHECK(interactive.encoder.stats().chunks_hit > 300);
}

TEST_CASE("an unresolvable reference is repaired, never guessed") {
  Box a("a"), b("b");
  auto data = Text(2 << 20, 6);
  Link first(a, b);
  REQUIRE(first.Send(data) == data);
  // b loses everything (a wiped datastore that a does not know about yet).
  b.peers.reset();
  b.store.reset();
  std::filesystem::remove_all(b.dir);
  b.Open();
  Link second(a, b);
  CHECK(second.Send(data) == data);
  CHECK(second.decoder.stats().nacks > 0);
  CHECK(second.encoder.stats().nacks == second.decoder.stats().nacks);
  // Repaired chunks are known again: a third pass needs no repair.
  Link third(a, b);
  CHECK(third.Send(data) == data);
  CHECK(third.decoder.stats().nacks == 0);
}

TEST_CASE("a stored chunk that is not the one referenced is asked for again, none of it delivered") {
  Box a("a"), b("b");
  auto data = Text(1 << 20, 8);
  Link first(a, b);
  REQUIRE(first.Send(data) == data);
  // b's name for the second chunk now leads to the first chunk's bytes: valid for
  // their own id in the store, wrong for the reference. The decoder appends them to
  // the frame's output after the first chunk, finds the mismatch and must take
  // them back out.
  Chunker chunker;
  std::span<const uint8_t> all(data);
  auto one = all.first(chunker.NextBoundary(all, false));
  auto rest = all.subspan(one.size());
  auto two = rest.first(chunker.NextBoundary(rest, false));
  auto peer = b.peers->Get("a", kSeed);
  auto id_one = peer->Find(FingerprintOf(one, peer->key()));
  REQUIRE(id_one);
  peer->Learn(FingerprintOf(two, peer->key()), *id_one);
  Link second(a, b);
  CHECK(second.Send(data) == data);
  CHECK(second.decoder.stats().nacks == 1);
}

TEST_CASE("a corrupted frame is refused whole") {
  Box a("a"), b("b");
  auto data = Text(1 << 20, 7);
  CodecOptions plain{true, false};  // no LZ: flip a byte inside a literal
  Encoder encoder(plain, a.peers->Get("b", kSeed), a.store.get());
  Decoder decoder(plain, b.peers->Get("a", kSeed), b.store.get());
  encoder.Append(data);
  encoder.Flush();
  REQUIRE(encoder.HasPayload());
  Buffer payload;
  uint8_t flags;
  encoder.TakePayload(payload, &flags);
  payload.data()[payload.size() / 2] ^= 0x20;
  Buffer out;
  CHECK(decoder.Decode(flags, payload.span(), out) == Decoder::Status::kCorrupt);
  CHECK(out.empty());
  CHECK(decoder.error().find("check") != std::string::npos);
}

TEST_CASE("garbage instructions are corrupt, not a crash") {
  Box a("a"), b("b");
  Decoder decoder({true, false}, b.peers->Get("a", kSeed), b.store.get());
  std::mt19937 rng(1);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> payload(static_cast<size_t>(rng() % 64));
    for (auto& byte : payload) byte = static_cast<uint8_t>(rng() % 5);  // mostly valid opcodes
    Buffer out;
    auto status = decoder.Decode(0, payload, out);
    CHECK(status != Decoder::Status::kDone);
    if (status == Decoder::Status::kMissing) continue;
  }
}

TEST_CASE("an edited file is sent as references and small deltas") {
  Box a("a"), b("b");
  auto v1 = Text(8 << 20, 21);
  // ~1% of the bytes changed by scattered edits of tens of bytes.
  std::vector<uint8_t> v2;
  std::mt19937_64 rng(5);
  size_t changed = 0;
  for (size_t at = 0; at < v1.size();) {
    size_t run = 2000 + rng() % 6000;
    size_t take = std::min(run, v1.size() - at);
    v2.insert(v2.end(), v1.begin() + static_cast<long>(at), v1.begin() + static_cast<long>(at + take));
    at += take;
    size_t edit = 10 + rng() % 60;
    switch (rng() % 3) {
      case 0: for (size_t i = 0; i < edit; ++i) v2.push_back(static_cast<uint8_t>('A' + rng() % 26)); break;  // insert
      case 1: at += edit; break;  // delete
      default:
        for (size_t i = 0; i < edit && !v2.empty(); ++i) v2[v2.size() - 1 - i] = static_cast<uint8_t>('a' + rng() % 26);
    }
    changed += edit;
  }
  REQUIRE(changed * 100 < v1.size() * 2);
  Link first(a, b);
  REQUIRE(first.Send(v1) == v1);
  Link second(a, b);
  REQUIRE(second.Send(v2) == v2);
  CHECK(second.encoder.stats().chunks_delta > 100);
  double reduction = 100.0 * (1.0 - double(second.wire_bytes) / double(v2.size()));
  MESSAGE("1% edit: " << reduction << "% reduction, " << second.encoder.stats().chunks_delta << " deltas, "
                      << second.encoder.stats().chunks_hit << " references, " << second.encoder.stats().chunks_missed
                      << " new chunks");
  CHECK(reduction > 95.0);
}

namespace {

// `encoder` encodes `bytes` (which its peer map says the peer knows) into one frame,
// and `decoder`, on a box that lacks them, stalls on it: true when it named chunks
// and the decoder now lists them in missing().
bool NamedThenMissed(Encoder& encoder, std::span<const uint8_t> bytes, Decoder& decoder, Buffer& out) {
  encoder.Append(bytes);
  encoder.Flush();
  if (encoder.stats().chunks_hit == 0) return false;
  Buffer payload;
  uint8_t flags = 0;
  encoder.TakePayload(payload, &flags);
  return decoder.Decode(flags, payload.span(), out) == Decoder::Status::kMissing;
}

}  // namespace

TEST_CASE("a NACK that arrives after the peer's store was found new is still repaired") {
  Box a("a"), b("b");
  auto data = Text(1 << 20, 31);
  Link first(a, b);
  REQUIRE(first.Send(data) == data);
  // The encoder names a chunk, then learns (hello-ack) that the peer's store is new,
  // which forgets what the peer knew, and only then gets the peer's NACK.
  auto peer = a.peers->Get(b.name, kSeed);
  REQUIRE(peer->SetPeerInstance(1) == false);  // first sight of the peer
  Encoder encoder({true, true}, peer, a.store.get());
  Box c("c");  // the peer, its store wiped
  Decoder decoder({true, true}, c.peers->Get(a.name, kSeed), c.store.get());
  Buffer out;
  REQUIRE(NamedThenMissed(encoder, std::span(data).first(64 * 1024), decoder, out));
  REQUIRE(peer->SetPeerInstance(2) == true);  // the hello-ack: a new store
  for (const auto& fp : decoder.missing()) {
    auto chunk = encoder.Repair(fp);
    REQUIRE(chunk);
    REQUIRE(decoder.AddRepair(fp, *chunk));
  }
  auto status = decoder.Resume(out);
  while (status == Decoder::Status::kMissing) {
    for (const auto& fp : decoder.missing()) {
      auto chunk = encoder.Repair(fp);
      REQUIRE(chunk);
      REQUIRE(decoder.AddRepair(fp, *chunk));
    }
    status = decoder.Resume(out);
  }
  CHECK(status == Decoder::Status::kDone);
  CHECK(std::equal(out.data(), out.data() + out.size(), data.begin()));
}

TEST_CASE("two connections of one peering answer NACKs for the same chunks at once: every repair is served") {
  // Sessions of one peering run on several threads and share its PeerState; a repair
  // must never hide the chunk's name from another one answering the same NACK.
  Box a("a"), b("b");
  auto data = Text(1 << 20, 41);
  Link first(a, b);
  REQUIRE(first.Send(data) == data);
  auto peer = a.peers->Get(b.name, kSeed);
  Encoder named({true, true}, peer, a.store.get());
  Box c("c");  // a peer that lacks them all: its decoder says which it needs
  Decoder decoder({true, true}, c.peers->Get(a.name, kSeed), c.store.get());
  Buffer out;
  REQUIRE(NamedThenMissed(named, std::span(data).first(256 * 1024), decoder, out));
  std::vector<Fingerprint> missing(decoder.missing().begin(), decoder.missing().end());
  REQUIRE(!missing.empty());

  std::atomic<int> unserved{0};
  auto answer = [&] {
    Encoder encoder({true, true}, peer, a.store.get());
    for (int round = 0; round < 300; ++round) {
      for (const auto& fp : missing) unserved += !encoder.Repair(fp);
    }
  };
  std::thread one(answer), two(answer);
  one.join();
  two.join();
  CHECK(unserved.load() == 0);
}

TEST_CASE("references off: literals only, which a decoder without DRE passes on and one with DRE learns") {
  Box branch("lit-branch"), dc("lit-dc"), plain("lit-plain");
  auto data = lab::SampleText(1 << 20, 77);
  {
    // A peer without DRE: every chunk arrives as a literal, decoded as plain bytes.
    Encoder encoder({}, branch.peers->Get(plain.name, kSeed), branch.store.get());
    Decoder decoder({.dre = false}, nullptr, nullptr);
    encoder.set_references(false);
    Buffer out;
    for (int pass = 0; pass < 2; ++pass) {  // the second pass would be all references
      encoder.Append(data);
      encoder.Flush();
      while (encoder.HasPayload()) {
        Buffer payload;
        uint8_t flags = 0;
        encoder.TakePayload(payload, &flags);
        REQUIRE(decoder.Decode(flags, payload.span(), out) == Decoder::Status::kDone);
      }
    }
    REQUIRE(out.size() == 2 * data.size());
    CHECK(std::equal(data.begin(), data.end(), out.data()));
    CHECK(std::equal(data.begin(), data.end(), out.data() + data.size()));
    CHECK(encoder.stats().chunks_hit == 0);
  }
  {
    // A peer with DRE learns what crossed as literals: the next time it is references.
    Link first(branch, dc);
    first.encoder.set_references(false);
    CHECK(first.Send(data) == data);
    CHECK(first.encoder.stats().chunks_hit == 0);
    Link second(branch, dc);
    CHECK(second.Send(data) == data);
    CHECK(second.encoder.stats().chunks_missed == 0);
    CHECK(second.decoder.stats().nacks == 0);
    CHECK(second.wire_bytes * 50 < data.size());
  }
}

TEST_CASE("a decoder with DRE on decodes an LZ-only stream of any length (a peer whose datastore is off)") {
  Box from("lz-only-from"), to("lz-only-to");
  CodecOptions lz_only;
  lz_only.dre = false;
  Encoder encoder(lz_only, from.peers->Get(to.name, kSeed), nullptr);
  Decoder decoder({}, to.peers->Get(from.name, kSeed), to.store.get());
  auto data = lab::SampleText(3 << 20, 31);
  auto random = lab::RandomBytes(3 << 20, 32);
  data.insert(data.end(), random.begin(), random.end());
  Buffer out;
  for (size_t at = 0; at < data.size(); at += 128 * 1024) {
    encoder.Append(std::span<const uint8_t>(data).subspan(at, std::min<size_t>(128 * 1024, data.size() - at)));
    encoder.Flush();
    while (encoder.HasPayload()) {
      Buffer payload;
      uint8_t flags = 0;
      encoder.TakePayload(payload, &flags);
      REQUIRE_MESSAGE(decoder.Decode(flags, payload.span(), out) == Decoder::Status::kDone, decoder.error());
    }
  }
  CHECK(std::vector<uint8_t>(out.data(), out.data() + out.size()) == data);
}

// Found by reading the decoder while fuzzing it (tests/fuzz/dre_decoder_fuzz.cc): a
// DELTA's declared length n is a 64-bit varint, and the bound check added it to the
// RAW bytes already held, so n = 2^64 - 1 after one RAW byte wrapped to 0, passed,
// reserved nothing, and let zstd write the delta's whole output past the buffer.
TEST_CASE("a delta whose declared length wraps around is corrupt, not a heap overflow") {
  Box a("a"), b("b");
  auto data = Text(256 * 1024, 8);
  Link link(a, b);
  REQUIRE(link.Send(data) == data);
  // A chunk b knows, by its fingerprint on the wire: the first one the chunker cuts.
  auto peer = b.peers->Get("a", kSeed);
  Chunker chunker;
  size_t first = chunker.NextBoundary(data, false);
  REQUIRE(first > 0);
  auto base = FingerprintBytes(FingerprintOf(std::span<const uint8_t>(data).first(first), peer->key()));
  REQUIRE(peer->Find(FingerprintOf(std::span<const uint8_t>(data).first(first), peer->key())));
  // 64 MiB of zeros as a zstd frame: a few KiB that would overflow any small buffer.
  std::vector<uint8_t> zeros(64 << 20);
  std::vector<uint8_t> delta(ZSTD_compressBound(zeros.size()));
  size_t m = ZSTD_compress(delta.data(), delta.size(), zeros.data(), zeros.size(), 1);
  REQUIRE_FALSE(ZSTD_isError(m));
  delta.resize(m);
  // Buffer rather than vector inserts: GCC 12 warns falsely on the latter at -O3.
  Buffer payload;
  const uint8_t head[] = {0, 0, 0, 0, 0, 0, 0, 0,  // the check: never reached
                          0x01, 0x01, 'x',         // RAW "x"
                          0x04};                   // DELTA base n m bytes
  payload.Append(head);
  payload.Append(base);
  const uint8_t n[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};  // 2^64 - 1
  payload.Append(n);
  for (uint64_t v = m; v; v >>= 7) {
    const uint8_t byte = static_cast<uint8_t>((v & 0x7f) | (v >> 7 ? 0x80 : 0));
    payload.Append({&byte, 1});
  }
  payload.Append(delta);
  Decoder decoder({true, false}, peer, b.store.get());
  Buffer out;
  CHECK(decoder.Decode(0, payload.span(), out) == Decoder::Status::kCorrupt);
  CHECK(out.empty());
  CHECK(decoder.error().find("delta") != std::string::npos);
}

// The same wrap in a REF: RAW bytes one longer than the referenced chunk, and a
// declared length of 2^64 - 1, made prefix + n equal the chunk's size. The decoder
// then compared one byte past the chunk (a byte left in its buffer by a larger chunk
// resolved before, here made to match) and appended the chunk "after the prefix":
// a span of 2^64 - 1 bytes.
TEST_CASE("a reference whose declared length wraps around is corrupt, not a wild copy") {
  Box a("a"), b("b");
  auto data = Text(256 * 1024, 9);
  Link link(a, b);
  REQUIRE(link.Send(data) == data);
  auto peer = b.peers->Get("a", kSeed);
  // Two chunks b knows, the larger resolved first so that the smaller one's buffer
  // holds a byte of it just past its end.
  Chunker chunker;
  std::span<const uint8_t> first = std::span<const uint8_t>(data).first(chunker.NextBoundary(data, false));
  std::span<const uint8_t> rest = std::span<const uint8_t>(data).subspan(first.size());
  std::span<const uint8_t> second = rest.first(chunker.NextBoundary(rest, false));
  REQUIRE(first.size() != second.size());
  auto large = first.size() > second.size() ? first : second;
  auto small = first.size() > second.size() ? second : first;
  auto Varint = [](Buffer& out, uint64_t v) {
    do {
      const uint8_t byte = static_cast<uint8_t>((v & 0x7f) | (v >> 7 ? 0x80 : 0));
      out.Append({&byte, 1});
      v >>= 7;
    } while (v);
  };
  Buffer payload;
  const uint8_t check[8] = {};  // never reached
  const uint8_t ref = 0x03, raw = 0x01;
  payload.Append(check);
  payload.Append({&ref, 1});
  payload.Append(FingerprintBytes(FingerprintOf(large, peer->key())));
  Varint(payload, large.size());
  payload.Append({&raw, 1});
  Varint(payload, small.size() + 1);
  payload.Append(small);
  payload.Append(large.subspan(small.size(), 1));  // what the buffer holds past `small`
  payload.Append({&ref, 1});
  payload.Append(FingerprintBytes(FingerprintOf(small, peer->key())));
  Varint(payload, ~uint64_t{0});
  Decoder decoder({true, false}, peer, b.store.get());
  Buffer out;
  CHECK(decoder.Decode(0, payload.span(), out) == Decoder::Status::kCorrupt);
  CHECK(out.empty());
  CHECK_MESSAGE(decoder.error().find("continue") != std::string::npos, decoder.error());
}

TEST_CASE("a frame stands for at most 1 MiB, and one that decodes to more than 8 MiB is refused") {
  Box a("a"), b("b");
  auto data = Text(6 << 20, 10);
  Link first(a, b);
  REQUIRE(first.Send(data) == data);
  // The second pass is references, ~20 bytes each: without the budget one frame
  // would stand for all 6 MiB, held whole by the decoder until its check passed.
  // Given in one piece, so that only the budget closes a block.
  Link second(a, b);
  CHECK(second.Send(data, data.size()) == data);
  CHECK(second.frames >= 6);
  CHECK(second.largest_frame <= (1 << 20) + 64 * 1024);
  // A peer's frame of the same reference over and over, past 8 MiB.
  Chunker chunker;
  std::span<const uint8_t> all(data);
  auto one = all.first(chunker.NextBoundary(all, false));
  auto peer = b.peers->Get("a", kSeed);
  Buffer hostile;
  const uint8_t check[8] = {}, ref = 0x03;
  hostile.Append(check);
  for (size_t decoded = 0; decoded <= (8 << 20); decoded += one.size()) {
    hostile.Append({&ref, 1});
    hostile.Append(FingerprintBytes(FingerprintOf(one, peer->key())));
    codec_format::PutVarint(hostile, one.size());
  }
  Decoder decoder({true, false}, peer, b.store.get());
  Buffer out;
  CHECK(decoder.Decode(0, hostile.span(), out) == Decoder::Status::kCorrupt);
  CHECK(out.empty());
  CHECK_MESSAGE(decoder.error().find("8 MiB") != std::string::npos, decoder.error());
}

TEST_CASE("a repeat paced by the peer's window crosses as prefixes and references, not as RAW") {
  // A sender that pauses every few kilobytes (RPC over HTTP's receive window): every
  // pause flushes the chunk begun so far. On the repeat those bytes are named as the
  // prefix of the chunk that came next last time, not sent again.
  Box a("a"), b("b");
  std::vector<uint8_t> data(2 << 20);
  uint64_t x = 88172645463325252ull;
  for (auto& byte : data) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    byte = static_cast<uint8_t>(x);  // incompressible: LZ cannot hide RAW
  }
  Link first(a, b);
  REQUIRE(first.Send(data, 5000, /*flush_each=*/true) == data);
  CHECK(first.encoder.stats().prefixes_hit == 0);
  Link second(a, b);
  REQUIRE(second.Send(data, 4093, /*flush_each=*/true) == data);
  CHECK(second.encoder.stats().chunks_missed == 0);
  CHECK(second.encoder.stats().prefixes_hit > 200);
  CHECK(second.wire_bytes * 50 < data.size());  // > 98% reduction despite ~500 pauses

  // The same start, then other bytes: the prediction fails where they differ and
  // those bytes go as RAW; every byte arrives as sent.
  std::vector<uint8_t> edited = data;
  for (size_t i = 100000; i < edited.size(); i += 7) edited[i] ^= 0x5a;
  Link third(a, b);
  REQUIRE(third.Send(edited, 4093, /*flush_each=*/true) == edited);
  CHECK(third.encoder.stats().chunks_missed > 300);
}
