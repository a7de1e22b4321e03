// Private to protocols/smb2/: the Prefetcher's state and the steps it takes,
// defined in prefetcher.cc (the client's requests, predictions, the public calls)
// and prefetcher_answers.cc (the server's answers). README.md says why.
#pragma once

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "protocols/smb2/messages.h"
#include "protocols/smb2/prefetcher.h"
#include "protocols/smb2/twin.h"
#include "util/bytes.h"

namespace wanopt::protocols::smb2 {

namespace prefetcher_internal {

constexpr uint64_t kNotificationId = ~uint64_t{0};        // server-initiated (oplock break)
constexpr size_t kReadOffsetAt = kHeaderSize + 8;          // READ request: its Offset
constexpr size_t kWriteFileIdAt = kHeaderSize + 16;        // WRITE request: its FileId
constexpr size_t kCreateRequestOplockAt = kHeaderSize + 3;  // CREATE request: RequestedOplockLevel
constexpr size_t kCreateResponseOplockAt = kHeaderSize + 2;  // CREATE response: OplockLevel

using FileKey = std::pair<uint64_t, uint64_t>;

// SMB 3.x signs these even in a session that does not sign (TREE_CONNECT in 3.1.1,
// VALIDATE_NEGOTIATE in 3.0.x; the last SESSION_SETUP answer in 3.1.1): a signed
// one says nothing of the session. Any other signed message means it signs.
inline bool SignedAlways(Command command) {
  return command == Command::kSessionSetup || command == Command::kTreeConnect || command == Command::kIoctl;
}
inline FileKey KeyOf(const FileId& f) { return {f.persistent, f.volatile_id}; }

// A lease's state is the first field after its 16-byte key; R (0x1) is read caching.
inline bool LeaseCachesReads(const std::vector<CreateContext>& contexts) {
  for (const auto& c : contexts) {
    if (c.name == "RqLs" && c.data.size() >= 20) return c.data[16] & 0x01;
  }
  return false;
}

}  // namespace prefetcher_internal

using prefetcher_internal::FileKey;

struct Prefetcher::State {
  struct OpenFile {
    FileId id;
    std::string name;
    uint64_t end_of_file = 0;
    bool oplock_ours = false;  // a Level II asked for on the client's behalf
    bool caching = false;      // a read-caching oplock or lease is held
    bool lease = false;        // ... a lease (its breaks name the lease key, not the file)
    std::string stopped;       // why read-ahead ended on this file
    uint64_t next_offset = 0;  // where a serial reader reads next
    std::vector<uint8_t> read;  // the client's last READ (client numbering), to copy
    uint32_t length = 0;
    uint16_t charge = 1;
    uint64_t predicted_to = 0;    // offset after the last prediction
    uint64_t next_client_id = 0;  // the MessageId of the next prediction
    size_t depth = 0;
    size_t outstanding = 0;  // predictions not yet served
    uint64_t outstanding_bytes = 0;
  };
  struct Prediction {
    std::vector<uint8_t> request;  // as the client will send it
    uint64_t server_id = 0;
    FileKey file;
    uint32_t length = 0;
    uint16_t charge = 1;
    bool answered = false;
  };
  struct Create {
    std::string name;
    bool oplock_ours = false;
  };

  State(Sink& sink, ReadAheadLimits limits) : sink(sink), limits(limits) {}

  Sink& sink;
  ReadAheadLimits limits;
  ReadAheadFigures figures;
  std::string aside;  // read-ahead is off for the connection, and why
  bool broken = false;
  uint16_t dialect = 0;
  std::set<uint64_t> signed_sessions, encrypted_sessions;
  std::map<FileKey, OpenFile> files;
  std::map<uint64_t, Create> creates;              // by server MessageId
  std::map<uint64_t, Prediction> predictions;      // outstanding, by client MessageId
  std::map<uint64_t, uint64_t> predicted_ids;      // server id -> client id, until answered
  std::set<uint64_t> abandoned;                    // server ids whose answers are dropped
  std::map<uint64_t, uint64_t> translated;         // server id -> client id, until answered
  uint64_t k = 0;                                  // server MessageId = client's + k
  uint64_t client_high = 0;                        // past every id of a request that came here
  uint32_t epoch = 0;
  size_t outstanding_client = 0;  // client requests without their final answer
  uint64_t credits_granted = 1;   // the client starts with one credit (NEGOTIATE)
  uint64_t ahead_bytes = 0;
  bool translation_noted = false, signed_translated_noted = false, noted_not_read_ahead = false;
  std::vector<std::string> opened;  // the first files opened, for the report
  uint64_t opened_count = 0;

  // (prefetcher.cc)
  void StepAside(std::string why);
  bool Eligible(const Header& h) const;
  void StopFile(OpenFile& f, const std::string& why);

  // ---- client -> server (prefetcher.cc) ----

  // Returns false when the request (alone in its frame) must not go on.
  bool ClientRequest(std::span<uint8_t> bytes, const Header& h, bool whole, bool compound);
  // The client's request with MessageId `id` (or the branch's word) goes to the
  // server although `id` was read ahead for: every prediction from `id` on is
  // abandoned, and the client's ids from `id` on are shifted past them. (Those
  // below `id` may still be answered at the branch.)
  void Collide(uint64_t id);
  void OnCreateRequest(std::span<uint8_t> bytes, const Message& m, const Header& h);
  void OnReadRequest(std::span<const uint8_t> bytes, const Message& m, const Header& h, bool compound);
  // The first reason a serial-looking READ was not read ahead, for the status page.
  void NotReadAhead(const std::string& why);
  void TopUp(OpenFile& f);
  void Stop(const FileId& id, const std::string& why);

  // ---- server -> client (prefetcher_answers.cc) ----

  // Returns false when the message (alone in its frame) must not go on.
  bool ServerResponse(std::span<uint8_t> bytes, const Header& h, bool whole);
  void OnCreateResponse(std::span<uint8_t> bytes, const Message& m, const Header& h, uint64_t server_id);
  void OnServed(uint64_t cid);
};

}  // namespace wanopt::protocols::smb2
