#include "protocols/smb2/answer_cache.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "protocols/smb2/messages.h"
#include "protocols/smb2/twin.h"
#include "util/bytes.h"

namespace wanopt::protocols::smb2 {

namespace {

constexpr size_t kReadFileIdAt = kHeaderSize + 16;  // READ request: its FileId

}  // namespace

struct AnswerCache::State {
  enum class Phase : uint8_t {
    kExpected,       // announced; its answer has not come
    kKept,           // its answer is here, the client has not asked
    kClientWaiting,  // the client asked (its READ was dropped); the answer will come
    kAbandoned,      // not to be served: its answer is dropped when it comes
  };
  struct Entry {
    uint32_t epoch = 0;
    std::vector<uint8_t> request;  // as the client will send it
    std::vector<uint8_t> answer;   // kKept: the whole frame
    Phase phase = Phase::kExpected;
    FileId file;
    uint64_t data = 0;  // the READ's length, for the figures
  };

  State(Sink& sink, std::atomic<uint64_t>* box_kept, uint64_t box_limit)
      : sink(sink), box_kept(box_kept), box_limit(box_limit) {}

  Sink& sink;
  std::atomic<uint64_t>* box_kept;
  uint64_t box_limit;
  AnswerFigures figures;
  std::map<uint64_t, Entry> entries;  // by MessageId (client numbering)
  uint32_t epoch = 0;                 // the datacenter's, as last announced
  uint64_t client_next = 0;           // past every MessageId the client used
  uint64_t kept = 0;
  uint16_t dialect = 0;
  uint64_t taking = 0;                // the MessageId of the frame being taken
  // The client's latest READs that went to the server, by MessageId: a prediction
  // announced after the client sent its READ is that READ when the bytes agree,
  // and the datacenter then lets its answer stand for it (Prefetcher: late match).
  std::map<uint64_t, std::vector<uint8_t>> forwarded;
  static constexpr size_t kForwardedKept = 64;

  void Keep(Entry& e, std::vector<uint8_t> frame) {
    kept += frame.size();
    if (box_kept) *box_kept += frame.size();
    e.answer = std::move(frame);
    e.phase = Phase::kKept;
  }
  void Forget(Entry& e) {
    kept -= e.answer.size();
    if (box_kept) *box_kept -= e.answer.size();
    std::vector<uint8_t>().swap(e.answer);
  }
  void Abandon(Entry& e) {
    if (e.phase == Phase::kClientWaiting) return;  // asked for: its answer goes to the client
    Forget(e);
    e.phase = Phase::kAbandoned;
  }
  // Every prediction from `id` on: the client went another way.
  void AbandonFrom(uint64_t id) {
    for (auto it = entries.lower_bound(id); it != entries.end(); ++it) Abandon(it->second);
  }
  void Erase(std::map<uint64_t, Entry>::iterator it) {
    Forget(it->second);
    entries.erase(it);
  }
};

AnswerCache::AnswerCache(Sink& sink, std::atomic<uint64_t>* box_kept, uint64_t box_limit)
    : s_(std::make_unique<State>(sink, box_kept, box_limit)) {}

AnswerCache::~AnswerCache() {
  if (s_->box_kept) *s_->box_kept -= s_->kept;
}

FrameStream::Verdict AnswerCache::OnClientFrame(FrameStream::Head head) {
  auto payload = head.bytes.subspan(kFramePrefixSize);
  auto h = ParseHeader(payload);
  if (!h || h->is_response()) return FrameStream::Verdict::kPass;
  uint64_t id = h->message_id;
  uint16_t charge = std::max<uint16_t>(1, h->credit_charge);
  if (h->command == Command::kCancel) {
    // The client gave up on a READ answered here: its answer still comes, and is
    // what the client gets (a cancel may always lose the race).
    auto it = s_->entries.find(id);
    return it != s_->entries.end() && it->second.phase == State::Phase::kClientWaiting
               ? FrameStream::Verdict::kDrop
               : FrameStream::Verdict::kPass;
  }
  s_->client_next = std::max(s_->client_next, id + charge);
  auto it = s_->entries.lower_bound(id);
  if (it == s_->entries.end() || it->first >= id + charge) {
    if (h->command == Command::kRead && head.whole && h->next_command == 0) {
      s_->forwarded[id].assign(payload.begin(), payload.end());
      if (s_->forwarded.size() > State::kForwardedKept) s_->forwarded.erase(s_->forwarded.begin());
    }
    return FrameStream::Verdict::kPass;
  }
  State::Entry& e = it->second;
  bool usable = it->first == id && (e.phase == State::Phase::kExpected || e.phase == State::Phase::kKept);
  if (!usable || !head.whole || h->next_command != 0 || !twin::SameRead(e.request, payload)) {
    s_->AbandonFrom(id);
    s_->sink.ToTwin(twin::Abandon(id));  // before the request: the datacenter shifts its MessageId
    return FrameStream::Verdict::kPass;
  }
  s_->sink.ToTwin(twin::Served(id));
  ++s_->figures.served;
  s_->figures.served_bytes += e.data;
  if (e.phase == State::Phase::kKept) {
    s_->sink.ToClient(e.answer);
    s_->Erase(it);
  } else {
    e.phase = State::Phase::kClientWaiting;
  }
  return FrameStream::Verdict::kDrop;
}

FrameStream::Verdict AnswerCache::OnServerFrame(FrameStream::Head head) {
  auto payload = head.bytes.subspan(kFramePrefixSize);
  auto h = ParseHeader(payload);
  if (!h || !h->is_response()) return FrameStream::Verdict::kPass;
  if (h->command == Command::kNegotiate && head.whole) {
    Message m;
    m.header = *h;
    m.bytes = payload;
    if (auto r = ParseNegotiateResponse(m)) s_->dialect = r->dialect;
  }
  auto it = s_->entries.find(h->message_id);
  if (it == s_->entries.end()) return FrameStream::Verdict::kPass;
  State::Entry& e = it->second;
  if (h->is_interim()) return FrameStream::Verdict::kDrop;  // the datacenter drops these; never the client's
  if (e.phase == State::Phase::kAbandoned || e.phase == State::Phase::kKept) {
    s_->Erase(it);
    ++s_->figures.dropped;
    return FrameStream::Verdict::kDrop;
  }
  // Past the box's budget an answer nobody asked for yet is not kept: the client's
  // READ will go to the server, which is slower, never wrong.
  bool over = s_->box_kept && *s_->box_kept + kFramePrefixSize + head.length > s_->box_limit;
  if (e.phase == State::Phase::kExpected && over) {
    s_->sink.ToTwin(twin::Abandon(it->first));
    s_->AbandonFrom(it->first);
    s_->Erase(s_->entries.find(h->message_id));
    ++s_->figures.dropped;
    return FrameStream::Verdict::kDrop;
  }
  s_->taking = h->message_id;
  return FrameStream::Verdict::kTake;
}

void AnswerCache::OnTaken(std::vector<uint8_t> frame) {
  auto it = s_->entries.find(s_->taking);
  if (it == s_->entries.end()) return;
  if (it->second.phase == State::Phase::kClientWaiting) {
    s_->sink.ToClient(frame);
    s_->entries.erase(it);
    return;
  }
  s_->Keep(it->second, std::move(frame));
}

void AnswerCache::OnTwinMessage(std::span<const uint8_t> message) {
  auto m = twin::Decode(message);
  if (!m) return;
  switch (m->kind) {
    case twin::Kind::kPredicted: {
      auto h = ParseHeader(m->request);
      if (!h || m->request.size() < kReadFileIdAt + 16) return;
      ++s_->figures.predicted;
      State::Entry e;
      e.epoch = m->epoch;
      e.request.assign(m->request.begin(), m->request.end());
      e.file.persistent = bytes::GetLe64(m->request.data() + kReadFileIdAt);
      e.file.volatile_id = bytes::GetLe64(m->request.data() + kReadFileIdAt + 8);
      e.data = bytes::GetLe32(m->request.data() + kHeaderSize + 4);  // the READ's Length
      // Announced after the client used this MessageId. If the client sent this very
      // READ, the datacenter answers it with the prediction's answer (a late match);
      // otherwise the id went to something else (the datacenter shifts) and the
      // answer is dropped.
      if (h->message_id < s_->client_next || m->epoch < s_->epoch) {
        auto f = s_->forwarded.find(h->message_id);
        if (m->epoch >= s_->epoch && f != s_->forwarded.end() && twin::SameRead(e.request, f->second)) {
          e.phase = State::Phase::kClientWaiting;
          ++s_->figures.served;
          s_->figures.served_bytes += e.data;
        } else {
          e.phase = State::Phase::kAbandoned;
        }
      }
      s_->entries[h->message_id] = std::move(e);
      break;
    }
    case twin::Kind::kEpoch:
      // Every prediction of an earlier epoch from `message_id` on was abandoned by
      // the datacenter; their answers, if they were sent, came before this message.
      // Those the client asked for were served (the datacenter knew before).
      s_->epoch = m->epoch;
      for (auto it = s_->entries.lower_bound(m->message_id); it != s_->entries.end();) {
        if (it->second.epoch < m->epoch && it->second.phase != State::Phase::kClientWaiting) {
          s_->Forget(it->second);
          it = s_->entries.erase(it);
        } else {
          ++it;
        }
      }
      break;
    case twin::Kind::kStopFile:
      for (auto& [id, e] : s_->entries) {
        if (e.file == m->file) s_->Abandon(e);
      }
      break;
    case twin::Kind::kServed:
    case twin::Kind::kAbandon:
      break;  // never sent to a branch
  }
}

uint16_t AnswerCache::dialect() const { return s_->dialect; }
uint64_t AnswerCache::kept_bytes() const { return s_->kept; }
const AnswerFigures& AnswerCache::figures() const { return s_->figures; }

}  // namespace wanopt::protocols::smb2
