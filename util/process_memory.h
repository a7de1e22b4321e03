// Where this process's memory is, for the status API and /metrics: what the kernel
// counts as resident, and how much of the heap the program uses against what the
// allocator (glibc malloc) holds freed. A resident size that grows while the heap in
// use stays flat is the allocator's, not a leak.
//
// Linux. The heap figures are glibc malloc's (mallinfo2): under another allocator
// (a sanitizer's) they are not known, and heap_known is false. Reading them walks
// the allocator's free lists under its locks: for a scrape, not for a hot path.
#pragma once

#include <malloc.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

namespace wanopt {

struct ProcessMemory {
  uint64_t resident_bytes = 0;     // /proc/self/statm's resident pages
  uint64_t heap_in_use_bytes = 0;  // allocated and not freed (mmapped blocks included)
  // Freed, held in the allocator's free lists: an upper bound on what it keeps, as
  // the daemon's periodic malloc_trim may already have handed their whole pages back.
  uint64_t heap_free_bytes = 0;
  bool heap_known = false;  // glibc reported a heap (a replaced malloc reports none)
};

inline ProcessMemory ReadProcessMemory() {
  ProcessMemory m;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    unsigned long long size = 0, resident = 0;
    if (std::fscanf(f, "%llu %llu", &size, &resident) == 2) {
      m.resident_bytes = resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    }
    std::fclose(f);
  }
  struct mallinfo2 info = ::mallinfo2();
  m.heap_in_use_bytes = info.uordblks + info.hblkhd;
  m.heap_free_bytes = info.fordblks;
  m.heap_known = info.arena + info.hblkhd > 0;  // a running daemon always has one
  return m;
}

}  // namespace wanopt
