// What the smb2 module's twins tell each other (ModuleContext::SendToPeer), carried
// in order with the data on the inner channel. README.md says why each exists.
//
//   datacenter -> branch
//     kPredicted  epoch u32, the predicted READ request as the client will send it
//                 (header and body, MessageId in the client's numbering)
//     kEpoch      epoch u32, MessageId u64: every prediction of an earlier epoch
//                 for this MessageId or a later one is abandoned
//     kStopFile   FileId (persistent u64, volatile u64): answers kept for this file
//                 must not be served (an oplock break, a change)
//   branch -> datacenter
//     kServed     MessageId u64 (client numbering): the branch answered it
//     kAbandon    MessageId u64: the client's request with this id goes to the server
//                 although it was predicted (not the READ predicted, or its answer
//                 no longer fresh): every prediction is abandoned
// All integers little-endian. Decode returns nullopt for anything else.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "protocols/smb2/smb2.h"

namespace wanopt::protocols::smb2::twin {

enum class Kind : uint8_t { kPredicted = 1, kEpoch = 2, kStopFile = 3, kServed = 4, kAbandon = 5 };

struct Message {
  Kind kind = Kind::kEpoch;
  uint32_t epoch = 0;                   // kPredicted, kEpoch
  std::span<const uint8_t> request;     // kPredicted (aliases the decoded bytes)
  FileId file;                          // kStopFile
  uint64_t message_id = 0;              // kServed, kAbandon; kEpoch: from
};

std::vector<uint8_t> Predicted(uint32_t epoch, std::span<const uint8_t> request);
std::vector<uint8_t> Epoch(uint32_t epoch, uint64_t from);
std::vector<uint8_t> StopFile(const FileId& file);
std::vector<uint8_t> Served(uint64_t message_id);
std::vector<uint8_t> Abandon(uint64_t message_id);

std::optional<Message> Decode(std::span<const uint8_t> bytes);

// The twins' test of "the client sent the READ that was predicted": the same bytes
// but for the credits asked (the server granted what the prediction asked, and the
// client gets exactly that grant).
bool SameRead(std::span<const uint8_t> predicted, std::span<const uint8_t> request);

}  // namespace wanopt::protocols::smb2::twin
