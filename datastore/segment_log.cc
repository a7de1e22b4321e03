// SegmentLog: append-only segment files holding the chunks' bytes (segment_log.h).
#include "datastore/segment_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace wanopt::datastore {
namespace {

constexpr char kSuffix[] = ".seg";
constexpr size_t kNameDigits = 16;
constexpr uint64_t kWriteBackBytes = 1 << 20;

// The number in a segment's file name, or 0 for anything else in the directory.
uint64_t NumberOf(const std::string& name) {
  if (name.size() != kNameDigits + sizeof kSuffix - 1 || !name.ends_with(kSuffix)) return 0;
  uint64_t n = 0;
  for (size_t i = 0; i < kNameDigits; ++i) {
    char c = name[i];
    int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) return 0;
    n = n << 4 | static_cast<uint64_t>(digit);
  }
  return n;
}

// Reads of `fd` leave its access time alone: a read-ahead reads a segment a run of
// chunks at a time, and checking whether the atime was due cost each read a tenth of
// its time. Only the file's owner (or CAP_FOWNER) may ask; for anyone else nothing
// changes.
void SkipAccessTime(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NOATIME);
}

// After a pwritev or preadv that moved `n` bytes: the `*count` buffers from `*next`
// on are moved past them, so that the call can be made again for the rest.
void SkipDone(iovec** next, int* count, size_t n) {
  while (*count > 0 && n >= (*next)->iov_len) {
    n -= (*next)->iov_len;
    ++*next;
    --*count;
  }
  if (*count > 0) {
    (*next)->iov_base = static_cast<uint8_t*>((*next)->iov_base) + n;
    (*next)->iov_len -= n;
  }
}

}  // namespace

struct SegmentLog::Segment {
  ~Segment() {
    if (fd >= 0) ::close(fd);
  }
  uint64_t number = 0;
  int fd = -1;
  std::atomic<uint64_t> size{0};
  // The highest sequence number of a chunk in it (0: none known).
  std::atomic<uint64_t> last_seq{0};
  uint64_t submitted = 0;  // the writer's: bytes handed to write-back
};

SegmentLog::~SegmentLog() = default;

std::string SegmentLog::FileName(uint64_t number) const {
  char name[kNameDigits + sizeof kSuffix];
  std::snprintf(name, sizeof name, "%016llx%s", static_cast<unsigned long long>(number), kSuffix);
  return dir_ + "/" + name;
}

bool SegmentLog::Open(const std::string& dir, uint64_t segment_bytes, std::string* why) {
  dir_ = dir;
  segment_bytes_ = segment_bytes;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) {
    *why = "cannot create " + dir_ + ": " + ec.message();
    return false;
  }
  std::lock_guard lock(mu_);
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    uint64_t number = NumberOf(entry.path().filename().string());
    if (number == 0) continue;
    auto segment = std::make_shared<Segment>();
    segment->number = number;
    segment->fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (segment->fd < 0 || ::fstat(segment->fd, &st) != 0) {
      *why = "cannot open " + entry.path().string() + ": " + std::error_code(errno, std::generic_category()).message();
      return false;
    }
    SkipAccessTime(segment->fd);
    segment->size = static_cast<uint64_t>(st.st_size);
    segments_.emplace(number, std::move(segment));
    next_number_ = std::max(next_number_, number + 1);
  }
  if (ec) {
    *why = "cannot list " + dir_ + ": " + ec.message();
    return false;
  }
  return true;
}

int SegmentLog::StartSegment() {
  std::string file = FileName(next_number_);
  auto segment = std::make_shared<Segment>();
  segment->number = next_number_;
  segment->fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (segment->fd < 0) return errno;
  SkipAccessTime(segment->fd);
  std::lock_guard lock(mu_);
  segments_.emplace(next_number_, segment);
  ++next_number_;
  current_ = std::move(segment);
  dir_unsynced_ = true;
  return 0;
}

int SegmentLog::Append(std::span<const Record> records, Location* where) {
  std::lock_guard append_lock(append_mu_);
  size_t i = 0;
  while (i < records.size()) {
    // The records that go into the current segment, one write for them all.
    uint64_t size = current_ ? current_->size.load() : 0;
    if (!current_ || (size > 0 && size + records[i].bytes.size() > segment_bytes_)) {
      if (int error = StartSegment()) return error;
      size = 0;
    }
    size_t end = i;
    uint64_t end_size = size;
    while (end < records.size() && end - i < IOV_MAX &&
           (end == i || end_size + records[end].bytes.size() <= segment_bytes_)) {
      where[end] = {current_->number, static_cast<uint32_t>(end_size)};
      end_size += records[end].bytes.size();
      ++end;
    }
    iovec iov[IOV_MAX];
    for (size_t k = i; k < end; ++k) {
      iov[k - i] = {const_cast<uint8_t*>(records[k].bytes.data()), records[k].bytes.size()};
    }
    // pwritev, resumed after a short write.
    iovec* next = iov;
    int count = static_cast<int>(end - i);
    off_t at = static_cast<off_t>(size);
    while (count > 0 && next->iov_len == 0) ++next, --count;  // empty chunks
    while (count > 0) {
      ssize_t n = ::pwritev(current_->fd, next, count, at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno;
      if (n == 0) return EIO;
      at += n;
      SkipDone(&next, &count, static_cast<size_t>(n));
    }
    current_->size = end_size;
    current_->last_seq = records[end - 1].seq;
    if (unsynced_.empty() || unsynced_.back() != current_) unsynced_.push_back(current_);
    // Write-back starts now, a MiB at a time, so that Sync finds little left to
    // wait for (what RocksDB's bytes_per_sync does for its files).
    if (end_size - current_->submitted >= kWriteBackBytes) {
      ::sync_file_range(current_->fd, static_cast<off_t>(current_->submitted),
                        static_cast<off_t>(end_size - current_->submitted), SYNC_FILE_RANGE_WRITE);
      current_->submitted = end_size;
    }
    i = end;
  }
  return 0;
}

int SegmentLog::Sync() {
  std::lock_guard append_lock(append_mu_);
  for (const auto& segment : unsynced_) {
    if (::fdatasync(segment->fd) != 0) return errno;
  }
  unsynced_.clear();
  if (dir_unsynced_) {
    int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int error = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    if (error) return error;
    dir_unsynced_ = false;
  }
  return 0;
}

std::shared_ptr<SegmentLog::Segment> SegmentLog::Find(uint64_t number) const {
  std::lock_guard lock(mu_);
  auto it = segments_.find(number);
  return it == segments_.end() ? nullptr : it->second;
}

int SegmentLog::Read(Location at, uint32_t size, uint8_t* out) const {
  std::span<uint8_t> whole(out, size);
  return Read(at, std::span<const std::span<uint8_t>>(&whole, 1));
}

int SegmentLog::Read(Location at, std::span<const std::span<uint8_t>> outs) const {
  if (int error = fail_reads_.load(std::memory_order_relaxed)) return error;
  std::shared_ptr<Segment> segment = Find(at.segment);
  if (!segment) return ENOENT;
  iovec iov[kMaxReadParts];
  int count = 0;
  for (std::span<uint8_t> out : outs) {
    if (!out.empty()) iov[count++] = {out.data(), out.size()};
  }
  // preadv, resumed after a short read.
  iovec* next = iov;
  off_t offset = at.offset;
  while (count > 0) {
    ssize_t n = ::preadv(segment->fd, next, count, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return ENODATA;
    offset += n;
    SkipDone(&next, &count, static_cast<size_t>(n));
  }
  return 0;
}

bool SegmentLog::NoteIndexed(Location at, uint32_t size, uint64_t seq) {
  auto segment = Find(at.segment);
  if (!segment || uint64_t{at.offset} + size > segment->size) return false;
  segment->last_seq = std::max(segment->last_seq.load(), seq);
  return true;
}

size_t SegmentLog::DropUnindexed() {
  std::vector<uint64_t> gone;
  {
    std::lock_guard lock(mu_);
    for (auto it = segments_.begin(); it != segments_.end();) {
      if (it->second->last_seq == 0 && it->second != current_) {
        gone.push_back(it->first);
        it = segments_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (uint64_t number : gone) ::unlink(FileName(number).c_str());
  return gone.size();
}

void SegmentLog::ReleaseBelow(uint64_t cursor) {
  std::vector<uint64_t> gone;
  {
    std::lock_guard lock(mu_);
    // Oldest first; the one being appended to (the newest) always stays.
    for (auto it = segments_.begin(); it != segments_.end() && std::next(it) != segments_.end();) {
      if (it->second->last_seq >= cursor) break;
      gone.push_back(it->first);
      it = segments_.erase(it);
    }
  }
  for (uint64_t number : gone) ::unlink(FileName(number).c_str());
}

uint64_t SegmentLog::disk_bytes() const {
  std::lock_guard lock(mu_);
  uint64_t bytes = 0;
  for (const auto& [number, segment] : segments_) bytes += segment->size;
  return bytes;
}

}  // namespace wanopt::datastore
