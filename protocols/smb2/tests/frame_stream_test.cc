// FrameStream (protocols/smb2/frame_stream.h): frames walked whatever the read
// boundaries, verdicts kept, inserts between frames only, the headers of a large
// compound frame shown as they pass, and a broken stream passed on unchanged.
#include <doctest/doctest.h>

#include <functional>

#include "protocols/smb2/frame_stream.h"
#include "protocols/smb2/tests/smb2_messages_util.h"

namespace wanopt::protocols::smb2 {
namespace {

using namespace testing;

struct Recorder : FrameStream::Owner {
  std::function<FrameStream::Verdict(FrameStream::Head)> decide = [](FrameStream::Head) {
    return FrameStream::Verdict::kPass;
  };
  std::vector<size_t> heads;  // the size of each head shown
  std::vector<bool> whole;
  std::vector<std::vector<uint8_t>> taken;
  std::vector<uint64_t> later_ids;
  std::string malformed;
  FrameStream::Verdict OnFrame(FrameStream::Head h) override {
    heads.push_back(h.bytes.size());
    whole.push_back(h.whole);
    return decide(h);
  }
  void OnLaterHeader(std::span<uint8_t> header) override {
    later_ids.push_back(ParseHeader(header)->message_id);
    PatchMessageId(header, ParseHeader(header)->message_id + 1000);
  }
  void OnTaken(std::vector<uint8_t> frame) override { taken.push_back(std::move(frame)); }
  void OnMalformed(std::string_view reason) override { malformed = reason; }
};

Bytes Message(uint64_t id, size_t body, uint32_t next = 0) {
  Header h;
  h.command = Command::kRead;
  h.message_id = id;
  h.next_command = next;
  Bytes b(body, static_cast<uint8_t>(id));
  return Build(h, b);
}

// Pushes `stream` in pieces of `step` bytes; returns what came out.
Bytes Walk(FrameStream& s, Recorder& r, const Bytes& stream, size_t step) {
  Buffer out;
  for (size_t at = 0; at < stream.size(); at += step) {
    s.Push(std::span(stream).subspan(at, std::min(step, stream.size() - at)), r, out);
  }
  return Bytes(out.data(), out.data() + out.size());
}

TEST_CASE("smb2 frame stream: frames pass unchanged whatever the read boundaries, each head shown once") {
  Bytes stream;
  for (uint64_t id = 0; id < 5; ++id) {
    Bytes f = Framed(Message(id, id * 50000));  // the last ones are over 64 KiB: shown by their head
    stream.insert(stream.end(), f.begin(), f.end());
  }
  for (size_t step : {1, 3, 64, 1000, 65536, 1 << 20}) {
    FrameStream s;
    Recorder r;
    CHECK(Walk(s, r, stream, step) == stream);
    REQUIRE(r.heads.size() == 5);
    CHECK(r.whole == std::vector<bool>{true, true, false, false, false});
    CHECK(r.heads[4] == FrameStream::kHeadBytes);
    CHECK(s.at_boundary());
    CHECK(r.malformed.empty());
  }
}

TEST_CASE("smb2 frame stream: dropped and taken frames go nowhere, inserts land between frames") {
  Bytes a = Framed(Message(1, 10)), b = Framed(Message(2, 100000)), c = Framed(Message(3, 20));
  Bytes stream = a;
  stream.insert(stream.end(), b.begin(), b.end());
  stream.insert(stream.end(), c.begin(), c.end());
  for (size_t step : {1, 7, 4096}) {
    FrameStream s;
    Recorder r;
    Bytes insert = {0xAA, 0xBB};
    r.decide = [&](FrameStream::Head h) {
      uint64_t id = ParseHeader(h.bytes.subspan(kFramePrefixSize))->message_id;
      if (id == 1) {
        s.Insert(insert);  // goes after frame 1, before frame 2's bytes
        return FrameStream::Verdict::kDrop;
      }
      return id == 2 ? FrameStream::Verdict::kTake : FrameStream::Verdict::kPass;
    };
    Bytes expected = insert;
    expected.insert(expected.end(), c.begin(), c.end());
    CHECK(Walk(s, r, stream, step) == expected);
    REQUIRE(r.taken.size() == 1);
    CHECK(r.taken[0] == b);
  }
}

TEST_CASE("smb2 frame stream: a large compound frame's later headers are shown and patchable as they pass") {
  Bytes first = Message(7, 70000 - kHeaderSize, 70000);  // NextCommand: 70000 (8-aligned)
  Bytes second = Message(8, 24, 88);
  Bytes third = Message(9, 8);
  Bytes payload = first;
  payload.insert(payload.end(), second.begin(), second.end());
  payload.insert(payload.end(), third.begin(), third.end());
  Bytes stream = Framed(payload);
  for (size_t step : {1, 5, 65536}) {
    FrameStream s;
    Recorder r;
    Bytes out = Walk(s, r, stream, step);
    CHECK(r.later_ids == std::vector<uint64_t>{8, 9});
    REQUIRE(out.size() == stream.size());
    CHECK(ParseHeader(std::span(out).subspan(kFramePrefixSize + 70000))->message_id == 1008);
    CHECK(ParseHeader(std::span(out).subspan(kFramePrefixSize + 70000 + 88))->message_id == 1009);
  }
}

TEST_CASE("smb2 frame stream: NetBIOS session frames (port 139) pass unseen, SMB2 frames after them are walked") {
  Bytes stream = {0x81, 0, 0, 4, 'a', 'b', 'c', 'd', 0x82, 0, 0, 0, 0x85, 0, 0, 0};
  Bytes f = Framed(Message(5, 30));
  stream.insert(stream.end(), f.begin(), f.end());
  for (size_t step : {1, 5, 100}) {
    FrameStream s;
    Recorder r;
    CHECK(Walk(s, r, stream, step) == stream);
    CHECK(r.heads.size() == 1);
    CHECK_FALSE(s.raw());
  }
}

TEST_CASE("smb2 frame stream: a stream that breaks the framing passes on unchanged, said once") {
  SUBCASE("not SMB2 over direct TCP") {
    Bytes http = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1', '.', '1', '\r', '\n'};
    FrameStream s;
    Recorder r;
    CHECK(Walk(s, r, http, 3) == http);
    CHECK(s.raw());
    CHECK_FALSE(r.malformed.empty());
  }
  SUBCASE("a compound chain that leaves its frame, after a good frame") {
    Bytes good = Framed(Message(1, 10));
    Bytes bad = Framed(Message(2, 70000, 999992));  // NextCommand past the frame
    Bytes stream = good;
    stream.insert(stream.end(), bad.begin(), bad.end());
    FrameStream s;
    Recorder r;
    CHECK(Walk(s, r, stream, 1000) == stream);
    CHECK(s.raw());
  }
  SUBCASE("an unfinished frame at the end of the direction goes out as it came") {
    Bytes f = Framed(Message(1, 100));
    f.resize(40);
    FrameStream s;
    Recorder r;
    Buffer out;
    s.Push(f, r, out);
    CHECK(out.empty());
    s.Finish(out);
    CHECK(Bytes(out.data(), out.data() + out.size()) == f);
  }
}

}  // namespace
}  // namespace wanopt::protocols::smb2
