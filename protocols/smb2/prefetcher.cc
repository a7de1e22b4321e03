// The Prefetcher (prefetcher.h): the client's requests, the predictions, and the
// public calls. The server's answers: prefetcher_answers.cc.
#include "protocols/smb2/prefetcher_state.h"

namespace wanopt::protocols::smb2 {

using namespace prefetcher_internal;

void Prefetcher::State::StepAside(std::string why) {
  if (!aside.empty()) return;
  aside = std::move(why);
  sink.Note("read-ahead off: " + aside);
}

bool Prefetcher::State::Eligible(const Header& h) const {
  return aside.empty() && !broken && dialect != 0 && !signed_sessions.count(h.session_id) &&
         !encrypted_sessions.count(h.session_id);
}

void Prefetcher::State::StopFile(OpenFile& f, const std::string& why) {
  if (!f.stopped.empty()) return;
  f.stopped = why;
  if (f.outstanding > 0) {
    sink.ToTwin(twin::StopFile(f.id));
    sink.Note("read-ahead stopped on " + (f.name.empty() ? std::string("(the share)") : f.name) + ": " + why);
  }
}

// Returns false when the request (alone in its frame) must not go on.
bool Prefetcher::State::ClientRequest(std::span<uint8_t> bytes, const Header& h, bool whole, bool compound) {
  if (h.is_response()) return true;
  uint64_t id = h.message_id;
  uint16_t charge = std::max<uint16_t>(1, h.credit_charge);
  bool cancel = h.command == Command::kCancel;
  if (!cancel) {
    auto hit = predictions.lower_bound(id);
    if (hit != predictions.end() && hit->first < id + charge) {
      // The client's READ overtook the prediction made for it (it left the branch
      // before the prediction arrived there): the prediction's answer is its answer,
      // and the branch knows (AnswerCache: late match). Not sent twice.
      if (hit->first == id && whole && !compound && twin::SameRead(hit->second.request, bytes)) {
        client_high = std::max(client_high, id + charge);
        OnServed(id);
        return false;
      }
      Collide(id);
    }
    client_high = std::max(client_high, id + charge);
    ++outstanding_client;
  }
  if (h.is_signed() && !SignedAlways(h.command)) signed_sessions.insert(h.session_id);
  // Read what the request says before its MessageId changes.
  Message m;
  m.header = h;
  m.bytes = bytes;
  switch (h.command) {
    case Command::kNegotiate:
      if (auto r = ParseNegotiateRequest(m); r && (r->security_mode & security_mode::kSigningRequired)) {
        StepAside("the client requires signing");
      }
      break;
    case Command::kSessionSetup:
      if (auto r = ParseSessionSetupRequest(m); r && (r->security_mode & security_mode::kSigningRequired)) {
        signed_sessions.insert(h.session_id);
      }
      break;
    case Command::kCreate:
      if (whole) OnCreateRequest(bytes, m, h);
      break;
    case Command::kRead:
      if (whole) OnReadRequest(bytes, m, h, compound);
      break;
    case Command::kWrite:
      if (bytes.size() >= kWriteFileIdAt + 16) {
        FileId f{bytes::GetLe64(bytes.data() + kWriteFileIdAt), bytes::GetLe64(bytes.data() + kWriteFileIdAt + 8)};
        Stop(f, "written to");
      }
      break;
    case Command::kSetInfo:
      if (auto r = ParseSetInfoRequest(m); r && r->changes_size()) Stop(r->file_id, "its size set");
      break;
    case Command::kLock:
      if (auto r = ParseLockRequest(m)) Stop(r->file_id, "locked");
      break;
    case Command::kClose:
      if (auto r = ParseCloseRequest(m)) files.erase(KeyOf(r->file_id));  // (predictions for it collided above)
      break;
    default:
      break;
  }
  if (k == 0) return true;
  PatchMessageId(bytes, id + k);
  if (!cancel) translated[id + k] = id;
  ++figures.translated;
  if (h.is_signed() && !signed_translated_noted) {
    signed_translated_noted = true;
    sink.Note("a signed " + std::string(CommandName(h.command)) +
              " came after read-ahead had spent MessageIds: sent with another id, the server refuses it");
  }
  return true;
}

// The client's request with MessageId `id` (or the branch's word) goes to the
// server although `id` was read ahead for: every prediction from `id` on is
// abandoned, and the client's ids from `id` on are shifted past them. (Those
// below `id` may still be answered at the branch.)
void Prefetcher::State::Collide(uint64_t id) {
  uint64_t spent = 0;
  for (auto it = predictions.lower_bound(id); it != predictions.end(); it = predictions.erase(it)) {
    Prediction& p = it->second;
    spent += p.charge;
    if (!p.answered) abandoned.insert(p.server_id);
    ++figures.abandoned;
    ahead_bytes -= p.length;
    if (auto f = files.find(p.file); f != files.end()) {
      --f->second.outstanding;
      f->second.outstanding_bytes -= p.length;
    }
  }
  k += spent;
  ++epoch;
  sink.ToTwin(twin::Epoch(epoch, id));
  if (!translation_noted) {
    translation_noted = true;
    sink.Note("read-ahead: request " + std::to_string(id) + " was not the READ predicted for its MessageId: " +
              "MessageIds shifted by " + std::to_string(k) + " towards the server from then on");
  }
}

void Prefetcher::State::OnCreateRequest(std::span<uint8_t> bytes, const Message& m, const Header& h) {
  auto r = ParseCreateRequest(m);
  if (!r) return;
  Create c{r->name, false};
  // A Level II oplock asked for on the client's behalf: the server's promise to
  // break it before another opener changes the file (README.md, Freshness).
  if (Eligible(h) && r->oplock_level == oplock::kNone && !r->lease_requested && !h.is_signed()) {
    bytes[kCreateRequestOplockAt] = oplock::kLevelII;
    c.oplock_ours = true;
  }
  creates[h.message_id + k] = std::move(c);
}

void Prefetcher::State::OnReadRequest(std::span<const uint8_t> bytes, const Message& m, const Header& h, bool compound) {
  auto r = ParseReadRequest(m);
  if (!r) return;
  auto it = files.find(KeyOf(r->file_id));
  if (it == files.end()) return;
  OpenFile& f = it->second;
  bool sequential = r->offset == f.next_offset;
  f.next_offset = r->offset + r->length;
  if (!Eligible(h) || !f.stopped.empty() || compound || h.is_async() || h.is_signed()) return;
  if (!f.caching) return NotReadAhead("the server granted no oplock or lease (another opener may change the file)");
  if (outstanding_client > 1) return NotReadAhead("several requests in flight (the client pipelines: it needs no read-ahead)");
  if (r->length > limits.max_read) {
    return NotReadAhead("READs of " + std::to_string(r->length) + " bytes, over " + std::to_string(limits.max_read));
  }
  if (!sequential || f.outstanding > 0 || r->length == 0 || f.next_offset >= f.end_of_file) return;
  f.read.assign(bytes.begin(), bytes.end());
  f.length = r->length;
  f.charge = std::max<uint16_t>(1, h.credit_charge);
  f.predicted_to = f.next_offset;
  f.next_client_id = h.message_id + f.charge;
  f.depth = std::max(f.depth, limits.first_depth);
  TopUp(f);
}

// The first reason a serial-looking READ was not read ahead, for the status page.
void Prefetcher::State::NotReadAhead(const std::string& why) {
  if (noted_not_read_ahead) return;
  noted_not_read_ahead = true;
  sink.Note("read-ahead not used: " + why);
}

void Prefetcher::State::TopUp(OpenFile& f) {
  while (f.outstanding < f.depth && f.predicted_to < f.end_of_file) {
    if (f.outstanding_bytes + f.length > limits.max_ahead_per_file) break;
    if (ahead_bytes + f.length > limits.max_ahead) break;
    uint64_t cid = f.next_client_id, sid = cid + k;
    if (cid < client_high) break;                 // the client went past: wait for its next READ
    if (sid + f.charge > credits_granted) break;  // past the server's window
    std::vector<uint8_t> request = f.read;
    PatchMessageId(request, cid);
    bytes::PutLe64(request.data() + kReadOffsetAt, f.predicted_to);
    sink.ToTwin(twin::Predicted(epoch, request));
    std::vector<uint8_t> client_request = request;
    PatchMessageId(request, sid);
    std::vector<uint8_t> frame(kFramePrefixSize);
    WriteFramePrefix(frame.data(), static_cast<uint32_t>(request.size()));
    frame.insert(frame.end(), request.begin(), request.end());
    sink.ToServer(frame);
    predictions[cid] = Prediction{std::move(client_request), sid, KeyOf(f.id), f.length, f.charge, false};
    predicted_ids[sid] = cid;
    ++f.outstanding;
    f.outstanding_bytes += f.length;
    ahead_bytes += f.length;
    ++figures.predicted;
    figures.predicted_bytes += f.length;
    f.predicted_to += f.length;
    f.next_client_id += f.charge;
  }
}

void Prefetcher::State::Stop(const FileId& id, const std::string& why) {
  auto it = files.find(KeyOf(id));
  if (it != files.end()) StopFile(it->second, why);
}


Prefetcher::Prefetcher(Sink& sink, ReadAheadLimits limits) : s_(std::make_unique<State>(sink, limits)) {}
Prefetcher::~Prefetcher() = default;

FrameStream::Verdict Prefetcher::OnClientFrame(FrameStream::Head head) {
  if (s_->broken) return FrameStream::Verdict::kPass;
  auto payload = head.bytes.subspan(kFramePrefixSize);
  auto protocol = Classify(payload);
  if (!protocol) return FrameStream::Verdict::kPass;
  if (*protocol == Protocol::kTransform) {
    if (s_->k != 0) s_->sink.Note("an encrypted request after read-ahead had spent MessageIds: its id is not the server's");
    s_->StepAside("encrypted (SMB3 transform headers)");
    return FrameStream::Verdict::kPass;
  }
  if (*protocol != Protocol::kSmb2) return FrameStream::Verdict::kPass;
  if (head.whole) {
    auto messages = SplitCompound(payload);
    if (!messages) {
      s_->StepAside(std::string("a request not understood (") + std::string(messages.error().reason) + ")");
      return FrameStream::Verdict::kPass;
    }
    bool compound = messages->size() > 1;
    bool keep = true;
    for (const Message& m : *messages) {
      keep = s_->ClientRequest(payload.subspan(m.offset, m.bytes.size()), m.header, true, compound) && keep;
    }
    return keep ? FrameStream::Verdict::kPass : FrameStream::Verdict::kDrop;  // (only a lone READ is dropped)
  }
  if (auto h = ParseHeader(payload)) (void)s_->ClientRequest(payload, *h, false, h->next_command != 0);
  return FrameStream::Verdict::kPass;
}

void Prefetcher::OnClientLaterHeader(std::span<uint8_t> header) {
  if (auto h = ParseHeader(header); h && !s_->broken) (void)s_->ClientRequest(header, *h, false, true);
}

FrameStream::Verdict Prefetcher::OnServerFrame(FrameStream::Head head) {
  if (s_->broken) return FrameStream::Verdict::kPass;
  auto payload = head.bytes.subspan(kFramePrefixSize);
  auto protocol = Classify(payload);
  if (!protocol || *protocol != Protocol::kSmb2) return FrameStream::Verdict::kPass;
  if (head.whole) {
    auto messages = SplitCompound(payload);
    if (!messages) return FrameStream::Verdict::kPass;
    bool keep = true;
    for (const Message& m : *messages) {
      keep = s_->ServerResponse(payload.subspan(m.offset, m.bytes.size()), m.header, true) && keep;
    }
    // Only a lone message is ever dropped (predicted answers, breaks are never compounded).
    return keep || messages->size() > 1 ? FrameStream::Verdict::kPass : FrameStream::Verdict::kDrop;
  }
  auto h = ParseHeader(payload);
  if (!h) return FrameStream::Verdict::kPass;
  bool keep = s_->ServerResponse(payload, *h, false);
  return keep || h->next_command != 0 ? FrameStream::Verdict::kPass : FrameStream::Verdict::kDrop;
}

void Prefetcher::OnServerLaterHeader(std::span<uint8_t> header) {
  if (auto h = ParseHeader(header); h && !s_->broken) (void)s_->ServerResponse(header, *h, false);
}

void Prefetcher::OnTwinMessage(std::span<const uint8_t> message) {
  auto m = twin::Decode(message);
  if (!m) return;
  if (m->kind == twin::Kind::kServed) s_->OnServed(m->message_id);
  if (m->kind == twin::Kind::kAbandon && !s_->predictions.empty() && s_->predictions.rbegin()->first >= m->message_id) {
    s_->Collide(m->message_id);
  }
}

void Prefetcher::OnMalformed(std::string_view reason) {
  s_->broken = true;
  if (s_->k != 0) {
    s_->sink.Note(std::string("the SMB2 stream broke (") + std::string(reason) +
                  ") after read-ahead had spent MessageIds: the rest passes untranslated");
  }
  s_->StepAside(std::string(reason));
}

void Prefetcher::StepAside(std::string why) { s_->StepAside(std::move(why)); }
const std::string& Prefetcher::stepped_aside() const { return s_->aside; }
const std::vector<std::string>& Prefetcher::opened() const { return s_->opened; }
uint64_t Prefetcher::opened_count() const { return s_->opened_count; }
std::string_view Prefetcher::application() const {
  if (s_->dialect == 0) return "";
  return s_->dialect >= dialect::kSmb30 && s_->dialect != dialect::kWildcard ? "SMB3" : "SMB2";
}
const ReadAheadFigures& Prefetcher::figures() const { return s_->figures; }
uint16_t Prefetcher::dialect() const { return s_->dialect; }

}  // namespace wanopt::protocols::smb2
