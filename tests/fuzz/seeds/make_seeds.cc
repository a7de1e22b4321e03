// Writes the seed corpora of frame_fuzz, dre_decoder_fuzz and peer_table_fuzz with
// the project's own encoders: real frames, hellos and acks, real Encoder output
// under the fuzzers' peering (../dre_fixture.h), and real peer files written by
// PeerTable. Built by tests/fuzz/CMakeLists.txt (make_fuzz_seeds), run by hand when
// the formats change:
//   build-fuzz/make_fuzz_seeds tests/fuzz/seeds
// Inputs named regression_* are kept by hand: they once crashed a parser (the commit
// that fixed it says how), and stay in the corpus.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/dre_fixture.h"
#include "wanopt/channel/frame.h"
#include "wanopt/channel/hello.h"
#include "wanopt/dre/codec.h"

using namespace wanopt;
using namespace wanopt::channel;
namespace fs = std::filesystem;

namespace {

fs::path root;

void Write(const std::string& corpus, const std::string& name, const std::vector<uint8_t>& bytes) {
  fs::create_directories(root / corpus);
  std::ofstream out(root / corpus / name, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::cerr << "cannot write " << (root / corpus / name) << "\n";
    std::exit(1);
  }
}

void AppendFrame(std::vector<uint8_t>& out, FrameType type, uint8_t flags, uint16_t stream,
                 std::span<const uint8_t> payload) {
  uint8_t header[kFrameHeaderSize];
  EncodeFrameHeader({type, flags, stream, static_cast<uint32_t>(payload.size())}, payload, header);
  out.insert(out.end(), header, header + kFrameHeaderSize);
  out.insert(out.end(), payload.begin(), payload.end());
}

std::vector<uint8_t> Selected(uint8_t selector, const std::vector<uint8_t>& bytes) {
  std::vector<uint8_t> out{selector};
  out.insert(out.end(), bytes.begin(), bytes.end());
  return out;
}

Hello BranchHello(bool dre, bool v6) {
  Hello hello;
  hello.device_id = {0x02, 0x00, 0x5e, 0x00, 0x00, 0x01};
  hello.offered = dre ? Policy::kFull : Policy::kLz;
  auto address = v6 ? boost::asio::ip::make_address("2001:db8::10") : boost::asio::ip::make_address("198.18.2.10");
  hello.destination = {address, 445};
  hello.source = {boost::asio::ip::make_address(v6 ? "2001:db8:1::20" : "198.18.1.20"), 51234};
  hello.modules = {"bytecount", "mapi"};
  if (dre) {
    hello.dre_seed = fuzz::PeeringSeed();
    hello.store_instance = 0x1122334455667788;
  }
  return hello;
}

void FrameSeeds() {
  Hello hello = BranchHello(true, false);
  Hello plain = BranchHello(false, true);
  plain.source = {};
  plain.modules.clear();
  HelloAck ack;
  ack.device_id = {0x02, 0x00, 0x5e, 0x00, 0x00, 0x02};
  ack.offered = Policy::kFull;
  ack.negotiated = ack.applied = Policy::kFull;
  ack.accepted_modules = 0x3;
  ack.store_instance = 0x99aabbccddeeff00;
  HelloAck refused = ack;
  refused.status = HelloStatus::kRefused;
  refused.negotiated = refused.applied = Policy::kLz;
  refused.store_instance = 0;

  Write("frame", "hello_payload.bin", Selected(1, EncodeHello(hello)));
  Write("frame", "hello_payload_v6_plain.bin", Selected(1, EncodeHello(plain)));
  Write("frame", "ack_payload.bin", Selected(2, EncodeHelloAck(ack)));
  Write("frame", "ack_payload_refused.bin", Selected(2, EncodeHelloAck(refused)));

  // A branch's stream: hello, data, a module message, keepalive, half-close.
  std::vector<uint8_t> stream;
  AppendFrame(stream, FrameType::kHello, 0, 0, EncodeHello(hello));
  const std::string request = "GET /index.html HTTP/1.1\r\nHost: intranet\r\n\r\n";
  AppendFrame(stream, FrameType::kData, 0, 0, {reinterpret_cast<const uint8_t*>(request.data()), request.size()});
  const uint8_t module_message[] = {0x01, 0x00, 0x87, 0x0b};
  AppendFrame(stream, FrameType::kModule, 0, 1, module_message);
  AppendFrame(stream, FrameType::kKeepalive, 0, 0, {});
  AppendFrame(stream, FrameType::kHalfClose, 0, 0, {});
  Write("frame", "branch_stream.bin", Selected(0, stream));
  std::vector<uint8_t> answer;
  AppendFrame(answer, FrameType::kHelloAck, 0, 0, EncodeHelloAck(ack));
  const uint8_t reason[] = {static_cast<uint8_t>(ResetReason::kLanReset)};
  AppendFrame(answer, FrameType::kReset, 0, 0, reason);
  Write("frame", "datacenter_stream.bin", Selected(0, answer));
}

// The DRE frames one Encoder makes for `pieces`, each piece followed by a Flush (the
// LAN side paused), as a dre_decoder_fuzz input: options byte, then frames.
std::vector<uint8_t> Encode(uint8_t options_byte, const std::vector<std::vector<uint8_t>>& pieces,
                            fuzz::Box& sender) {
  dre::CodecOptions options;
  options.dre = options_byte & 1;
  options.lz = options_byte & 2;
  dre::Encoder encoder(options, sender.peer, &sender.store);
  std::vector<uint8_t> out{options_byte};
  Buffer payload;
  for (const auto& piece : pieces) {
    encoder.Append(piece);
    encoder.Flush();
    while (encoder.HasPayload()) {
      uint8_t flags = 0;
      encoder.TakePayload(payload, &flags);
      AppendFrame(out, FrameType::kDre, flags, 0, payload.span());
    }
  }
  return out;
}

std::vector<uint8_t> NewText(uint32_t state, size_t size) {
  std::vector<uint8_t> out;
  while (out.size() < size) {
    state = state * 1664525 + 1013904223;
    out.push_back(static_cast<uint8_t>("abcdefghij klmnopqrstuvwxyz\n,.0123"[(state >> 24) % 34]));
  }
  return out;
}

// The sender's peering has seen KnownText() cross before (all of it REFs now): it
// remembers which chunk followed which, so an edited chunk goes as a DELTA.
void Prime(fuzz::Box& sender) {
  Encode(3, {fuzz::KnownText()}, sender);
}

void DreSeeds() {
  const std::vector<uint8_t>& known = fuzz::KnownText();
  std::vector<uint8_t> edited = known;
  for (size_t at = 2000; at < edited.size(); at += 9000) edited[at] ^= 0x20;  // a few small edits
  std::vector<uint8_t> fresh = NewText(7, 20 * 1024);
  std::vector<uint8_t> head(known.begin(), known.begin() + 5000), tail(known.begin() + 5000, known.end());
  {
    fuzz::Box sender(false);
    Write("dre", "full_known_refs.bin", Encode(3, {known}, sender));
  }
  {
    fuzz::Box sender(false);
    Prime(sender);
    Write("dre", "full_edited_deltas.bin", Encode(3, {edited}, sender));
  }
  {
    fuzz::Box sender(false);
    Write("dre", "full_new_then_again.bin", Encode(3, {fresh, fresh}, sender));
  }
  {
    fuzz::Box sender(false);
    Write("dre", "full_paused_mid_chunk.bin", Encode(3, {head, tail}, sender));
  }
  {
    fuzz::Box sender(false);
    Prime(sender);
    Write("dre", "dre_only_edited.bin", Encode(1, {edited}, sender));
  }
  {
    fuzz::Box sender(false);
    Write("dre", "lz_only.bin", Encode(2, {fresh}, sender));
  }
  {
    fuzz::Box sender(false);
    std::vector<uint8_t> random(12 * 1024);
    uint32_t state = 99;
    for (auto& b : random) b = static_cast<uint8_t>((state = state * 1664525 + 1013904223) >> 24);
    Write("dre", "full_incompressible.bin", Encode(3, {random, known}, sender));
  }
  {
    // The sender knows a chunk the receiver does not: REF, NACK, then the repair.
    fuzz::Box sender(false);
    dre::Chunker chunker;
    size_t n = chunker.NextBoundary(fresh, false);
    std::span<const uint8_t> chunk(fresh.data(), n);
    auto fingerprint = dre::FingerprintOf(chunk, sender.peer->key());
    sender.peer->Learn(fingerprint, sender.store.Put(chunk));
    auto input = Encode(3, {fresh, known}, sender);
    auto fp = dre::FingerprintBytes(fingerprint);
    std::vector<uint8_t> repair(fp.begin(), fp.end());
    repair.insert(repair.end(), chunk.begin(), chunk.end());
    AppendFrame(input, FrameType::kRepair, 0, 0, repair);
    Write("dre", "full_ref_missing_then_repair.bin", input);
  }
  {
    // A REF to the decoy (the receiver's store serves other bytes for it), by hand:
    // check, then REF fingerprint varint(length).
    fuzz::Box receiver(true);
    const auto& decoy = fuzz::DecoyChunk();
    std::vector<uint8_t> payload(8);
    uint64_t check = XXH3_64bits(decoy.data(), decoy.size());
    for (int i = 0; i < 8; ++i) payload[i] = static_cast<uint8_t>(check >> (56 - 8 * i));
    payload.push_back(0x03);
    auto fp = dre::FingerprintBytes(dre::FingerprintOf(decoy, receiver.peer->key()));
    payload.insert(payload.end(), fp.begin(), fp.end());
    payload.push_back(static_cast<uint8_t>(0x80 | (decoy.size() & 0x7f)));
    payload.push_back(static_cast<uint8_t>(decoy.size() >> 7));
    std::vector<uint8_t> input{7};
    AppendFrame(input, FrameType::kDre, 0, 0, payload);
    std::vector<uint8_t> repair(fp.begin(), fp.end());
    repair.insert(repair.end(), decoy.begin(), decoy.end());
    AppendFrame(input, FrameType::kRepair, 0, 0, repair);
    Write("dre", "decoy_ref_then_repair.bin", input);
  }
}

std::vector<uint8_t> ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void PeerTableSeeds() {
  fs::path directory = fs::temp_directory_path() / "wanopt-make-seeds";
  fs::remove_all(directory);
  dre::Seed seed = fuzz::PeeringSeed();
  {
    // A peering that learned the known chunks, forgot one, saw the peer's instance
    // and applied F.
    fuzz::MemoryStore store;
    dre::PeerTable table(directory.string());
    auto peer = table.Get("fuzz", seed);
    peer->SetPeerInstance(0x1122334455667788);
    peer->set_last_applied(Policy::kFull);
    for (const auto& chunk : fuzz::KnownChunks()) peer->Learn(dre::FingerprintOf(chunk, peer->key()), store.Put(chunk));
    peer->Forget(dre::FingerprintOf(fuzz::KnownChunks().front(), peer->key()));
  }
  auto learned = ReadAll(directory / "fuzz.idx");
  Write("peer_table", "learned.idx", learned);
  // The same file with its last record torn (kill -9 while appending).
  Write("peer_table", "torn_last_record.idx", std::vector<uint8_t>(learned.begin(), learned.end() - 10));
  {
    // Then the peer's store was replaced (forget everything), and the policy unset.
    dre::PeerTable table(directory.string());
    auto peer = table.Get("fuzz", std::nullopt);
    peer->SetPeerInstance(0x0102030405060708);
    peer->set_last_applied(std::nullopt);
    fuzz::MemoryStore store;
    peer->Learn(dre::FingerprintOf(fuzz::DecoyChunk(), peer->key()), store.Put(fuzz::DecoyChunk()));
  }
  Write("peer_table", "instance_changed.idx", ReadAll(directory / "fuzz.idx"));
  fs::remove_all(directory);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_fuzz_seeds SEEDS_DIRECTORY\n";
    return 2;
  }
  root = argv[1];
  FrameSeeds();
  DreSeeds();
  PeerTableSeeds();
  return 0;
}
