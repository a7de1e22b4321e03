#include "protocols/smb2/twin.h"

#include <cstring>

#include "util/bytes.h"

namespace wanopt::protocols::smb2::twin {

namespace {

void Put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Put64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

std::vector<uint8_t> Predicted(uint32_t epoch, std::span<const uint8_t> request) {
  std::vector<uint8_t> out{static_cast<uint8_t>(Kind::kPredicted)};
  Put32(out, epoch);
  out.insert(out.end(), request.begin(), request.end());
  return out;
}

std::vector<uint8_t> Epoch(uint32_t epoch, uint64_t from) {
  std::vector<uint8_t> out{static_cast<uint8_t>(Kind::kEpoch)};
  Put32(out, epoch);
  Put64(out, from);
  return out;
}

std::vector<uint8_t> StopFile(const FileId& file) {
  std::vector<uint8_t> out{static_cast<uint8_t>(Kind::kStopFile)};
  Put64(out, file.persistent);
  Put64(out, file.volatile_id);
  return out;
}

std::vector<uint8_t> Served(uint64_t message_id) {
  std::vector<uint8_t> out{static_cast<uint8_t>(Kind::kServed)};
  Put64(out, message_id);
  return out;
}

bool SameRead(std::span<const uint8_t> predicted, std::span<const uint8_t> request) {
  if (predicted.size() != request.size() || predicted.size() < kHeaderSize) return false;
  return std::memcmp(predicted.data(), request.data(), kCreditOffset) == 0 &&
         std::memcmp(predicted.data() + kCreditOffset + 2, request.data() + kCreditOffset + 2,
                     predicted.size() - kCreditOffset - 2) == 0;
}

std::vector<uint8_t> Abandon(uint64_t message_id) {
  std::vector<uint8_t> out{static_cast<uint8_t>(Kind::kAbandon)};
  Put64(out, message_id);
  return out;
}

std::optional<Message> Decode(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return std::nullopt;
  Message m;
  auto rest = bytes.subspan(1);
  switch (static_cast<Kind>(bytes[0])) {
    case Kind::kPredicted:
      if (rest.size() < 4 + kHeaderSize) return std::nullopt;
      m.kind = Kind::kPredicted;
      m.epoch = bytes::GetLe32(rest.data());
      m.request = rest.subspan(4);
      return m;
    case Kind::kEpoch:
      if (rest.size() != 12) return std::nullopt;
      m.kind = Kind::kEpoch;
      m.epoch = bytes::GetLe32(rest.data());
      m.message_id = bytes::GetLe64(rest.data() + 4);
      return m;
    case Kind::kStopFile:
      if (rest.size() != 16) return std::nullopt;
      m.kind = Kind::kStopFile;
      m.file.persistent = bytes::GetLe64(rest.data());
      m.file.volatile_id = bytes::GetLe64(rest.data() + 8);
      return m;
    case Kind::kServed:
    case Kind::kAbandon:
      if (rest.size() != 8) return std::nullopt;
      m.kind = static_cast<Kind>(bytes[0]);
      m.message_id = bytes::GetLe64(rest.data());
      return m;
  }
  return std::nullopt;
}

}  // namespace wanopt::protocols::smb2::twin
