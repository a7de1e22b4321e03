// The Prefetcher's view of the server's answers (prefetcher_state.h): predicted
// answers passed on or dropped, MessageIds shifted back, what CREATE, NEGOTIATE,
// SESSION_SETUP and oplock breaks tell it, and a prediction used at the branch.
#include "protocols/smb2/prefetcher_state.h"

namespace wanopt::protocols::smb2 {

using namespace prefetcher_internal;

// Returns false when the message (alone in its frame) must not go on.
bool Prefetcher::State::ServerResponse(std::span<uint8_t> bytes, const Header& h, bool whole) {
  if (!h.is_response()) return true;
  Message m;
  m.header = h;
  m.bytes = bytes;
  if (h.message_id == kNotificationId) {
    if (h.command != Command::kOplockBreak || !whole) return true;
    auto r = ParseOplockBreak(m);
    if (!r) return true;
    if (r->lease) {
      // A lease break names a lease key; the box does not keep keys: every file
      // read ahead under a lease stops (the client acknowledges its own lease).
      for (auto& [key, f] : files) {
        if (f.lease) StopFile(f, "its lease broken");
      }
      return true;
    }
    auto it = files.find(KeyOf(r->file_id));
    if (it == files.end()) return true;
    it->second.caching = r->oplock_level >= oplock::kLevelII;
    StopFile(it->second, "its oplock broken");
    // A break of the oplock the box asked for: the client never had it (and a
    // break to none needs no acknowledgement).
    return !it->second.oplock_ours;
  }
  credits_granted += h.credit;
  if (h.is_signed() && !SignedAlways(h.command)) signed_sessions.insert(h.session_id);
  if (auto p = predicted_ids.find(h.message_id); p != predicted_ids.end()) {
    if (h.is_interim()) return false;  // the client never sent it: only the final answer
    uint64_t cid = p->second;
    predicted_ids.erase(p);
    if (abandoned.erase(h.message_id)) return false;
    if (cid != h.message_id) PatchMessageId(bytes, cid);
    if (auto q = predictions.find(cid); q != predictions.end()) q->second.answered = true;
    return true;
  }
  uint64_t server_id = h.message_id;
  if (auto t = translated.find(server_id); t != translated.end()) {
    PatchMessageId(bytes, t->second);
    if (!h.is_interim()) translated.erase(t);
  }
  if (!h.is_interim() && outstanding_client > 0) --outstanding_client;
  switch (h.command) {
    case Command::kNegotiate:
      if (auto r = ParseNegotiateResponse(m)) {
        dialect = r->dialect;
        if (r->signing_required()) StepAside("the server requires signing");
      }
      break;
    case Command::kSessionSetup:
      if (h.status == status::kSuccess) {
        if (auto r = ParseSessionSetupResponse(m); r && (r->session_flags & session_flags::kEncryptData)) {
          encrypted_sessions.insert(h.session_id);
        }
        // SMB 3.x signs this answer always; 2.x only in a session that signs.
        if (h.is_signed() && dialect < dialect::kSmb30) signed_sessions.insert(h.session_id);
      }
      break;
    case Command::kTreeConnect:
      if (auto r = ParseTreeConnectResponse(m); r && (r->share_flags & share_flags::kEncryptData)) {
        encrypted_sessions.insert(h.session_id);
      }
      break;
    case Command::kCreate:
      OnCreateResponse(bytes, m, h, server_id);
      break;
    default:
      break;
  }
  return true;
}

void Prefetcher::State::OnCreateResponse(std::span<uint8_t> bytes, const Message& m, const Header& h, uint64_t server_id) {
  auto c = creates.find(server_id);
  if (c == creates.end()) return;
  if (h.is_interim()) return;
  Create create = std::move(c->second);
  creates.erase(c);
  auto r = ParseCreateResponse(m);
  if (!r) return;
  ++opened_count;
  if (opened.size() < 8) opened.push_back(create.name);
  OpenFile f;
  f.id = r->file_id;
  f.name = create.name;
  f.end_of_file = r->end_of_file;
  f.oplock_ours = create.oplock_ours;
  if (create.oplock_ours) {
    f.caching = r->oplock_level == oplock::kLevelII || r->oplock_level == oplock::kExclusive ||
                r->oplock_level == oplock::kBatch;
    bytes[kCreateResponseOplockAt] = oplock::kNone;  // the client asked for none
    // An exclusive or batch oplock the client does not know of would need an
    // acknowledgement the box cannot give for it: only Level II is ever asked for.
  } else {
    f.lease = r->oplock_level == oplock::kLease;
    f.caching = r->oplock_level == oplock::kLevelII || r->oplock_level == oplock::kExclusive ||
                r->oplock_level == oplock::kBatch || (f.lease && LeaseCachesReads(r->contexts));
  }
  files[KeyOf(f.id)] = std::move(f);
}

void Prefetcher::State::OnServed(uint64_t cid) {
  auto p = predictions.find(cid);
  if (p == predictions.end()) return;
  Prediction done = p->second;
  predictions.erase(p);
  ++figures.served;
  figures.served_bytes += done.length;
  ahead_bytes -= done.length;
  auto it = files.find(done.file);
  if (it == files.end()) return;
  OpenFile& f = it->second;
  --f.outstanding;
  f.outstanding_bytes -= done.length;
  // Only while predictions remain: with none, the client may already have sent
  // its next READ to the server, whose id must not be predicted now.
  if (f.outstanding == 0 || !f.stopped.empty()) return;
  f.depth = std::min<size_t>(f.depth * 2, std::max<uint64_t>(1, limits.max_ahead_per_file / f.length));
  TopUp(f);
}

}  // namespace wanopt::protocols::smb2
