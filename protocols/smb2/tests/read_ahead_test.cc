// Read-ahead end to end without sockets: a serial client, the branch's AnswerCache
// and the datacenter's Prefetcher (each behind a FrameStream per direction, as the
// module runs them) and a small SMB2 server, joined by two in-order queues that
// carry data and the twins' messages as the inner channel does. Every answer the
// client gets is checked against the file; the server checks it never sees a
// MessageId twice.
#include <doctest/doctest.h>

#include <deque>
#include <map>
#include <set>
#include <string>
#include <variant>

#include "protocols/smb2/answer_cache.h"
#include "protocols/smb2/frame_stream.h"
#include "protocols/smb2/messages.h"
#include "protocols/smb2/prefetcher.h"
#include "protocols/smb2/tests/smb2_messages_util.h"

namespace wanopt::protocols::smb2 {
namespace {

using namespace testing;

// What crosses the inner channel in one direction, in order.
struct Item {
  bool twin = false;
  std::vector<uint8_t> bytes;
};

// A server of one share with one file, answering NEGOTIATE, CREATE, READ, ECHO and
// CLOSE. It grants the oplock asked (up to Level II) and can break it.
struct Server {
  std::vector<uint8_t> file;
  bool signing_required = false;
  std::set<uint64_t> seen;  // MessageIds
  bool duplicate = false;
  uint8_t granted_oplock = 0;
  FileId id{0x1111, 0x2222};

  std::vector<uint8_t> Answer(std::span<const uint8_t> message) {
    auto h = ParseHeader(message);
    REQUIRE(h);
    for (uint64_t i = h->message_id; i < h->message_id + std::max<uint16_t>(1, h->credit_charge); ++i) {
      if (!seen.insert(i).second) duplicate = true;
    }
    Header r = ResponseTo(*h);
    Message m;
    m.header = *h;
    m.bytes = message;
    switch (h->command) {
      case Command::kNegotiate:
        r.credit = 512;  // a window to read ahead in (Samba grants 8192 at SESSION_SETUP)
        return Framed(Build(r, NegotiateResponseBody(dialect::kSmb302, signing_required)));
      case Command::kCreate: {
        auto c = ParseCreateRequest(m);
        REQUIRE(c);
        granted_oplock = std::min<uint8_t>(c->oplock_level, oplock::kLevelII);
        return Framed(Build(r, CreateResponseBody(granted_oplock, id, file.size())));
      }
      case Command::kRead: {
        auto q = ParseReadRequest(m);
        REQUIRE(q);
        if (q->offset >= file.size()) {
          r.status = status::kEndOfFile;
          return Framed(Build(r, ErrorBody()));
        }
        size_t n = std::min<uint64_t>(q->length, file.size() - q->offset);
        return Framed(Build(r, ReadResponseBody(std::span(file).subspan(q->offset, n))));
      }
      default:
        return Framed(Build(r, {4, 0, 0, 0}));  // ECHO, CLOSE-like: StructureSize 4
    }
  }
};

// The client, the two boxes and the server. Pump() runs everything queued.
struct World : Prefetcher::Sink, AnswerCache::Sink {
  explicit World(ReadAheadLimits limits = {}, uint64_t branch_budget = 64 << 20, std::atomic<uint64_t>* box = nullptr)
      : kept(box ? *box : own_kept), prefetcher(*this, limits), cache(*this, &kept, branch_budget) {}

  std::atomic<uint64_t> own_kept{0};
  std::atomic<uint64_t>& kept;  // the branch box's answers kept, all connections
  Prefetcher prefetcher;
  AnswerCache cache;
  FrameStream branch_up, branch_down, dc_up, dc_down;
  bool in_branch_down = false, in_dc_up = false;
  std::deque<Item> up, down;            // branch -> dc, dc -> branch
  std::deque<std::vector<uint8_t>> to_server;
  std::vector<std::vector<uint8_t>> client_inbox;
  Server server;
  std::vector<std::string> notes;

  void ToClient(std::span<const uint8_t> frame) override {
    if (in_branch_down) branch_down.Insert(frame);
    else client_inbox.emplace_back(frame.begin(), frame.end());
  }
  void ToServer(std::span<const uint8_t> frame) override {
    if (in_dc_up) dc_up.Insert(frame);
    else to_server.emplace_back(frame.begin(), frame.end());
  }
  void ToTwin(std::span<const uint8_t> message) override {
    // The branch's messages go up, the datacenter's down; which one is talking is
    // known from who is being called (a Sink is shared here).
    (talking_dc ? down : up).push_back({true, {message.begin(), message.end()}});
  }
  void Note(std::string_view note) override { notes.emplace_back(note); }
  bool talking_dc = false;

  struct Owner : FrameStream::Owner {
    std::function<FrameStream::Verdict(FrameStream::Head)> frame;
    std::function<void(std::vector<uint8_t>)> taken = [](std::vector<uint8_t>) {};
    std::function<void(std::span<uint8_t>)> later = [](std::span<uint8_t>) {};
    FrameStream::Verdict OnFrame(FrameStream::Head h) override { return frame(h); }
    void OnLaterHeader(std::span<uint8_t> header) override { later(header); }
    void OnTaken(std::vector<uint8_t> f) override { taken(std::move(f)); }
    void OnMalformed(std::string_view) override { FAIL("malformed"); }
  };

  void ClientSends(const std::vector<uint8_t>& frame) {
    Owner o;
    o.frame = [&](FrameStream::Head h) { return cache.OnClientFrame(h); };
    Buffer out;
    talking_dc = false;
    branch_up.Push(frame, o, out);
    if (!out.empty()) up.push_back({false, {out.data(), out.data() + out.size()}});
  }

  void Pump() {
    for (int rounds = 0; rounds < 100000 && (!up.empty() || !down.empty() || !to_server.empty()); ++rounds) {
      while (!up.empty()) {
        Item item = std::move(up.front());
        up.pop_front();
        talking_dc = true;
        if (item.twin) {
          prefetcher.OnTwinMessage(item.bytes);
          continue;
        }
        Owner o;
        o.frame = [&](FrameStream::Head h) { return prefetcher.OnClientFrame(h); };
        o.later = [&](std::span<uint8_t> h) { prefetcher.OnClientLaterHeader(h); };
        Buffer out;
        in_dc_up = true;
        dc_up.Push(item.bytes, o, out);
        in_dc_up = false;
        SplitFrames(out.span(), [&](std::span<const uint8_t> f) { to_server.emplace_back(f.begin(), f.end()); });
      }
      while (!to_server.empty()) {
        std::vector<uint8_t> frame = std::move(to_server.front());
        to_server.pop_front();
        std::vector<uint8_t> answer = server.Answer(std::span(frame).subspan(kFramePrefixSize));
        ServerSends(answer);
      }
      // Down: one item at a time, so that the client's next request (sent as soon
      // as its answer is in) can overtake predictions still on their way.
      if (!down.empty()) {
        Item item = std::move(down.front());
        down.pop_front();
        talking_dc = false;
        if (item.twin) {
          cache.OnTwinMessage(item.bytes);
        } else {
          Owner o;
          o.frame = [&](FrameStream::Head h) { return cache.OnServerFrame(h); };
          o.taken = [&](std::vector<uint8_t> f) { cache.OnTaken(std::move(f)); };
          Buffer out;
          in_branch_down = true;
          branch_down.Push(item.bytes, o, out);
          in_branch_down = false;
          SplitFrames(out.span(), [&](std::span<const uint8_t> f) { client_inbox.emplace_back(f.begin(), f.end()); });
        }
      }
      if (on_idle && up.empty()) on_idle();
    }
  }
  std::function<void()> on_idle;

  void ServerSends(const std::vector<uint8_t>& frame) {
    Owner o;
    o.frame = [&](FrameStream::Head h) { return prefetcher.OnServerFrame(h); };
    o.later = [&](std::span<uint8_t> h) { prefetcher.OnServerLaterHeader(h); };
    Buffer out;
    talking_dc = true;
    dc_down.Push(frame, o, out);
    if (!out.empty()) down.push_back({false, {out.data(), out.data() + out.size()}});
  }
};

// A serial client: each request waits for its answer.
struct Client {
  World& w;
  uint64_t next_id = 0;

  std::vector<uint8_t> Call(std::vector<uint8_t> frame) {
    uint64_t id = ParseHeader(std::span(frame).subspan(kFramePrefixSize))->message_id;
    w.client_inbox.clear();
    w.ClientSends(frame);
    w.Pump();
    for (auto& answer : w.client_inbox) {
      auto h = ParseHeader(std::span(answer).subspan(kFramePrefixSize));
      REQUIRE(h);
      if (h->message_id == id && !h->is_interim()) return answer;
    }
    FAIL("no answer for MessageId " << id);
    return {};
  }
  Header Next(Command command, uint16_t charge = 1) {
    Header h;
    h.command = command;
    h.message_id = next_id;
    h.credit_charge = charge;
    h.credit = 1;
    h.session_id = 0x77;
    h.tree_id = 1;
    next_id += charge;
    return h;
  }
  void SetUp(uint8_t oplock_asked = oplock::kNone) {
    Call(Framed(Build(Next(Command::kNegotiate), NegotiateRequestBody())));
    Call(Framed(Build(Next(Command::kCreate), CreateRequestBody("f.bin", oplock_asked))));
  }
  std::vector<uint8_t> Read(uint64_t offset, uint32_t length) {
    ReadRequestParams p;
    uint16_t charge = CreditChargeFor(length);
    p.message_id = next_id;
    p.credit_charge = charge;
    p.session_id = 0x77;
    p.tree_id = 1;
    p.file_id = w.server.id;
    p.offset = offset;
    p.length = length;
    next_id += charge;
    auto answer = Call(Framed(WriteReadRequest(p)));
    Message m;
    auto bytes = std::span<const uint8_t>(answer).subspan(kFramePrefixSize);
    auto h = ParseHeader(bytes);
    m.header = *h;
    m.bytes = bytes;
    auto r = ParseReadResponse(m);
    if (!r) return {};
    return {r->data.begin(), r->data.end()};
  }
};

std::vector<uint8_t> FileOf(size_t n) {
  std::vector<uint8_t> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = static_cast<uint8_t>(i * 7 + i / 997);
  return f;
}

TEST_CASE("smb2 read-ahead: a serial reader gets every byte right, most READs answered at the branch") {
  World w;
  w.server.file = FileOf(3 << 20);
  Client c{w};
  c.SetUp();
  CHECK(w.server.granted_oplock == oplock::kLevelII);  // asked for on the client's behalf
  for (uint64_t at = 0; at < w.server.file.size(); at += 64000) {
    auto data = c.Read(at, 64000);
    size_t n = std::min<uint64_t>(64000, w.server.file.size() - at);
    REQUIRE(data == std::vector<uint8_t>(w.server.file.begin() + at, w.server.file.begin() + at + n));
  }
  CHECK_FALSE(w.server.duplicate);
  CHECK(w.cache.figures().served >= 40);
  CHECK(w.prefetcher.figures().served == w.cache.figures().served);
  CHECK(w.prefetcher.figures().translated == 0);
  CHECK(w.cache.kept_bytes() == 0);
}

TEST_CASE("smb2 read-ahead: 1 MiB READs (several credits each) are predicted and answered too") {
  World w;
  w.server.file = FileOf(6 << 20);
  Client c{w};
  c.SetUp();
  for (uint64_t at = 0; at < w.server.file.size(); at += 1 << 20) {
    REQUIRE(c.Read(at, 1 << 20) == std::vector<uint8_t>(w.server.file.begin() + at, w.server.file.begin() + at + (1 << 20)));
  }
  CHECK_FALSE(w.server.duplicate);
  CHECK(w.cache.figures().served >= 3);
}

TEST_CASE("smb2 read-ahead: a client that does something else mid-file is answered right, ids shifted") {
  std::atomic<uint64_t> box{0};
  {
  World w({}, 64 << 20, &box);
  w.server.file = FileOf(2 << 20);
  Client c{w};
  c.SetUp();
  for (uint64_t at = 0; at < 5 * 64000; at += 64000) c.Read(at, 64000);
  // An ECHO on a MessageId the datacenter spent on a READ ahead.
  auto echo = c.Call(Framed(Build(c.Next(Command::kEcho), {4, 0, 0, 0})));
  CHECK(ParseHeader(std::span(echo).subspan(kFramePrefixSize))->command == Command::kEcho);
  // Then on reading, from elsewhere: every answer right, with the client's ids.
  for (uint64_t at = 1 << 20; at < (1 << 20) + 8 * 64000; at += 64000) {
    REQUIRE(c.Read(at, 64000) == std::vector<uint8_t>(w.server.file.begin() + at, w.server.file.begin() + at + 64000));
  }
  CHECK_FALSE(w.server.duplicate);
  CHECK(w.prefetcher.figures().abandoned > 0);
  CHECK(w.prefetcher.figures().translated > 0);
  CHECK(box.load() == w.cache.kept_bytes());
  }
  CHECK(box.load() == 0);  // a connection that goes gives its kept answers back to the box
}

TEST_CASE("smb2 read-ahead: no oplock granted, a session whose server requires signing: nothing read ahead") {
  SUBCASE("signing required") {
    World w;
    w.server.signing_required = true;
    w.server.file = FileOf(1 << 20);
    Client c{w};
    c.SetUp();
    for (uint64_t at = 0; at < 4 * 64000; at += 64000) c.Read(at, 64000);
    CHECK(w.prefetcher.figures().predicted == 0);
    CHECK(w.prefetcher.stepped_aside() == "the server requires signing");
    CHECK(w.server.granted_oplock == oplock::kNone);  // nothing asked on the client's behalf
  }
  SUBCASE("the client asked for an oplock the server does not grant") {
    World w;
    w.server.file = FileOf(1 << 20);
    Client c{w};
    c.SetUp(oplock::kBatch);  // the server here grants at most Level II: not what was asked, but caching
    for (uint64_t at = 0; at < 4 * 64000; at += 64000) c.Read(at, 64000);
    CHECK(w.prefetcher.figures().predicted > 0);  // Level II is read caching
  }
}

TEST_CASE("smb2 read-ahead: the oplock broken (another opener writes): no data older than the change") {
  World w;
  w.server.file = FileOf(2 << 20);
  Client c{w};
  c.SetUp();
  for (uint64_t at = 0; at < 4 * 64000; at += 64000) c.Read(at, 64000);
  REQUIRE(w.cache.kept_bytes() > 0);  // blocks read ahead are waiting at the branch
  // The file changes on the server, which breaks the oplock first.
  for (auto& b : w.server.file) b ^= 0x5a;
  Header brk;
  brk.command = Command::kOplockBreak;
  brk.flags = flags::kServerToRedir;
  brk.message_id = ~uint64_t{0};
  w.ServerSends(Framed(Build(brk, OplockBreakBody(w.server.id, oplock::kNone))));
  w.Pump();
  for (const auto& answer : w.client_inbox) {
    CHECK(ParseHeader(std::span(answer).subspan(kFramePrefixSize))->command != Command::kOplockBreak);
  }
  for (uint64_t at = 4 * 64000; at < 10 * 64000; at += 64000) {
    REQUIRE(c.Read(at, 64000) == std::vector<uint8_t>(w.server.file.begin() + at, w.server.file.begin() + at + 64000));
  }
  CHECK_FALSE(w.server.duplicate);
  CHECK(w.cache.kept_bytes() == 0);
}

TEST_CASE("smb2 read-ahead: past the branch's memory budget, answers are not kept and READs go to the server") {
  World w({}, /*branch_budget=*/100000);
  w.server.file = FileOf(2 << 20);
  Client c{w};
  c.SetUp();
  for (uint64_t at = 0; at < 12 * 64000; at += 64000) {
    REQUIRE(c.Read(at, 64000) == std::vector<uint8_t>(w.server.file.begin() + at, w.server.file.begin() + at + 64000));
  }
  CHECK_FALSE(w.server.duplicate);
  CHECK(w.kept.load() <= 100000 + 64000 + 200);  // one answer the client waits for may pass the budget
}

}  // namespace
}  // namespace wanopt::protocols::smb2
