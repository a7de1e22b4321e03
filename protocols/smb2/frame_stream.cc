#include "protocols/smb2/frame_stream.h"

#include <algorithm>

#include "protocols/smb2/smb2.h"

namespace wanopt::protocols::smb2 {

namespace {

uint32_t Le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

// The payload offset of the header after the one at `at` (NextCommand `next`), or
// 0 when there is none; nullopt-like `kBad` when the chain would leave the frame.
constexpr uint64_t kBad = ~uint64_t{0};
uint64_t NextHeader(uint64_t at, uint32_t next, uint32_t length) {
  if (next == 0) return 0;
  if (next % 8 != 0 || next < kHeaderSize || at + next + kHeaderSize > length) return kBad;
  return at + next;
}

}  // namespace

void FrameStream::Insert(std::span<const uint8_t> bytes) { inserts_.insert(inserts_.end(), bytes.begin(), bytes.end()); }

void FrameStream::FlushInserts(Buffer& out) {
  if (inserts_.empty()) return;
  out.Append(inserts_);
  inserts_.clear();
}

void FrameStream::Break(std::string_view reason, Owner& owner, Buffer& out) {
  // What was being assembled has not gone out yet: it goes first, unchanged.
  out.Append(assembled_);
  assembled_.clear();
  state_ = State::kRaw;
  owner.OnMalformed(reason);
  FlushInserts(out);
}

void FrameStream::Push(std::span<const uint8_t> in, Owner& owner, Buffer& out) {
  if (state_ == State::kPrefix && assembled_.empty()) FlushInserts(out);
  while (!in.empty()) {
    switch (state_) {
      case State::kRaw:
        FlushInserts(out);
        out.Append(in);
        return;
      case State::kPrefix: {
        size_t n = std::min(in.size(), kFramePrefixSize - assembled_.size());
        assembled_.insert(assembled_.end(), in.begin(), in.begin() + n);
        in = in.subspan(n);
        if (assembled_.size() < kFramePrefixSize) break;
        if (assembled_[0] >= 0x81 && assembled_[0] <= 0x85) {
          // NetBIOS session service (port 139): session request and response,
          // keepalive. They pass as they are, unseen by the owner; a 17-bit length.
          length_ = static_cast<uint32_t>(assembled_[1] & 1) << 16 | static_cast<uint32_t>(assembled_[2]) << 8 |
                    assembled_[3];
          out.Append(assembled_);
          assembled_.clear();
          verdict_ = Verdict::kPass;
          position_ = 0;
          next_header_ = 0;
          state_ = State::kBody;
          if (length_ == 0) EndFrame(owner, out);
          break;
        }
        if (assembled_[0] != 0) {
          Break("a frame does not start with 0 or a NetBIOS session type (not SMB2)", owner, out);
          break;
        }
        length_ = static_cast<uint32_t>(assembled_[1]) << 16 | static_cast<uint32_t>(assembled_[2]) << 8 |
                  assembled_[3];
        if (length_ == 0 || length_ > kMaxFrameLength) {
          Break("a frame length of 0 or over 16 MiB", owner, out);
          break;
        }
        head_target_ = length_ <= kWholeFrame ? length_ : kHeadBytes - kFramePrefixSize;
        state_ = State::kHead;
        break;
      }
      case State::kHead: {
        size_t want = kFramePrefixSize + head_target_ - assembled_.size();
        size_t n = std::min(in.size(), want);
        assembled_.insert(assembled_.end(), in.begin(), in.begin() + n);
        in = in.subspan(n);
        if (n == want) StartFrame(owner, out);
        break;
      }
      case State::kBody: {
        uint64_t left = length_ - position_;
        size_t n = static_cast<size_t>(std::min<uint64_t>(in.size(), left));
        BodyBytes(in, n, owner, out);
        in = in.subspan(n);
        break;
      }
    }
  }
}

// The head is here: the owner decides, then the rest of the frame follows its verdict.
void FrameStream::StartFrame(Owner& owner, Buffer& out) {
  bool whole = head_target_ == length_;
  verdict_ = owner.OnFrame(Head{assembled_, length_, whole});
  position_ = head_target_;
  next_header_ = 0;
  // Only an SMB2 header has a NextCommand (not an encrypted or compressed message).
  bool smb2 = assembled_[kFramePrefixSize] == 0xFE && assembled_[kFramePrefixSize + 1] == 'S';
  if (!whole && verdict_ == Verdict::kPass && smb2) {
    uint32_t next = Le32(assembled_.data() + kFramePrefixSize + kNextCommandOffset);
    next_header_ = NextHeader(0, next, length_);
  }
  if (verdict_ == Verdict::kPass) out.Append(assembled_);
  if (verdict_ == Verdict::kTake) {
    taken_ = std::move(assembled_);
    taken_.reserve(kFramePrefixSize + length_);
  }
  assembled_.clear();
  if (next_header_ == kBad) {
    state_ = State::kPrefix;  // (not at a boundary: the break passes the rest raw)
    Break("a compound chain leaves its frame", owner, out);
    return;
  }
  state_ = State::kBody;
  if (position_ == length_) EndFrame(owner, out);
}

void FrameStream::BodyBytes(std::span<const uint8_t> in, size_t n, Owner& owner, Buffer& out) {
  while (n > 0) {
    if (verdict_ == Verdict::kPass && next_header_ != 0) {
      if (position_ < next_header_) {
        size_t k = static_cast<size_t>(std::min<uint64_t>(n, next_header_ - position_));
        out.Append(in.first(k));
        in = in.subspan(k);
        n -= k;
        position_ += k;
        continue;
      }
      // At a later compound header: assemble it, show it, pass it.
      size_t k = std::min(n, kHeaderSize - header_.size());
      header_.insert(header_.end(), in.begin(), in.begin() + k);
      in = in.subspan(k);
      n -= k;
      position_ += k;
      if (header_.size() < kHeaderSize) continue;
      owner.OnLaterHeader(header_);
      out.Append(header_);
      uint64_t at = next_header_;
      next_header_ = NextHeader(at, Le32(header_.data() + kNextCommandOffset), length_);
      header_.clear();
      if (next_header_ == kBad) {
        state_ = State::kRaw;
        owner.OnMalformed("a compound chain leaves its frame");
        FlushInserts(out);
        out.Append(in.first(n));
        return;
      }
      continue;
    }
    if (verdict_ == Verdict::kPass) out.Append(in.first(n));
    if (verdict_ == Verdict::kTake) taken_.insert(taken_.end(), in.begin(), in.begin() + n);
    position_ += n;
    n = 0;
  }
  if (position_ == length_) EndFrame(owner, out);
}

void FrameStream::Finish(Buffer& out) {
  out.Append(assembled_);
  assembled_.clear();
  out.Append(header_);
  header_.clear();
  std::vector<uint8_t>().swap(taken_);
  FlushInserts(out);
}

void FrameStream::EndFrame(Owner& owner, Buffer& out) {
  state_ = State::kPrefix;
  if (verdict_ == Verdict::kTake) {
    std::vector<uint8_t> frame;
    frame.swap(taken_);
    owner.OnTaken(std::move(frame));
  }
  FlushInserts(out);
}

}  // namespace wanopt::protocols::smb2
