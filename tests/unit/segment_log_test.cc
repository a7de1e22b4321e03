// The chunk store's segment files (datastore/segment_log.h): a run of chunks
// appended one after another read back with one call, into each chunk's own
// buffer; a run that goes past the end of its file, or into a segment that is gone.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <vector>

#include "datastore/segment_log.h"

using wanopt::datastore::SegmentLog;

namespace {

std::string FreshDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "wanopt-segments-XXXXXX").string();
  REQUIRE(::mkdtemp(pattern.data()));
  return pattern;
}

}  // namespace

TEST_CASE("segment log: adjacent chunks read back with one call, each into its own buffer") {
  std::string dir = FreshDir();
  {
    SegmentLog log;
    std::string why;
    REQUIRE_MESSAGE(log.Open(dir, 64 << 10, &why), why);
    std::mt19937 random(3);
    std::vector<std::vector<uint8_t>> chunks;
    for (int i = 0; i < 40; ++i) {
      std::vector<uint8_t> chunk(i == 7 ? 0 : 1 + random() % 4000);  // one empty chunk among them
      for (auto& b : chunk) b = static_cast<uint8_t>(random());
      chunks.push_back(std::move(chunk));
    }
    std::vector<SegmentLog::Record> records;
    for (size_t i = 0; i < chunks.size(); ++i) records.push_back({i + 1, chunks[i]});
    std::vector<SegmentLog::Location> where(records.size());
    REQUIRE(log.Append(records, where.data()) == 0);

    // From every chunk on, the run of those after it in its segment.
    for (size_t first = 0; first < chunks.size(); ++first) {
      size_t end = first + 1;
      while (end < chunks.size() && where[end].segment == where[first].segment) ++end;
      std::vector<std::vector<uint8_t>> got;
      std::vector<std::span<uint8_t>> parts;
      for (size_t i = first; i < end; ++i) got.emplace_back(chunks[i].size(), 0xee);
      for (auto& g : got) parts.push_back(g);
      REQUIRE(log.Read(where[first], parts) == 0);
      for (size_t i = first; i < end; ++i) CHECK(got[i - first] == chunks[i]);
    }
    CHECK(where.front().segment != where.back().segment);  // the runs crossed segments

    // One byte more than the segment holds: the file ends first.
    size_t last = chunks.size() - 1;
    std::vector<uint8_t> tail(chunks[last].size()), beyond(1);
    std::vector<std::span<uint8_t>> too_long = {tail, beyond};
    CHECK(log.Read(where[last], too_long) == ENODATA);
    // A segment that does not exist.
    std::vector<std::span<uint8_t>> one = {tail};
    CHECK(log.Read({where.back().segment + 1, 0}, one) == ENOENT);
    // Read errors are the disk's.
    log.FailReads(EIO);
    CHECK(log.Read(where[last], one) == EIO);
    log.FailReads(0);
    CHECK(log.Read(where[last], one) == 0);
    CHECK(std::vector<uint8_t>(tail) == chunks[last]);
  }
  std::filesystem::remove_all(dir);
}
