// The process the datastore tests kill with SIGKILL (datastore_queue_test.cc,
// datastore_restart_test.cc). It is a program of its own, started with fork+exec,
// because a child forked from the test process itself inherits RocksDB's thread
// pools in a state no thread of its own can use (a condition variable the parent's
// threads were waiting on): its first memtable flush would hang.
//
//   datastore_crash_child flush-queued DIR   Puts 20 chunks (7000..7019) while the
//       writer is held, lets it go, Flushes; reports 0 (or a failure code).
//   datastore_crash_child lose-queued DIR    Puts 7000..7019 and Flushes, then holds
//       the writer and Puts 7020..7039; reports 0 if those are served from the queue.
//   datastore_crash_child put-forever DIR BASE  Puts BASE+0, BASE+1, ... and
//       Flushes after every fourth; reports i (uint32) after each Flush.
//   datastore_crash_child evict-forever DIR   Puts chunks 0, 1, 2, ... into a 32 MiB
//       store (so evicted chunks' segments are released all along); reports i
//       after every 16th, never Flushes.
// Reports are native-endian 32-bit integers on stdout. After its report the first
// two wait to be killed; every mode ends itself after 30 s (alarm).
#define DOCTEST_CONFIG_DISABLE  // the helpers' REQUIREs are the tests', not ours
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "datastore/chunk_store.h"
#include "datastore/testing.h"
#include "tests/unit/datastore_test_util.h"

using namespace wanopt::datastore;
using namespace wanopt::datastore::test_helpers;

namespace {

void Report(uint32_t value) {
  if (::write(STDOUT_FILENO, &value, sizeof value) != sizeof value) ::_exit(2);
}

bool Served(ChunkStore& store, uint64_t from, uint64_t to) {
  for (uint64_t i = from; i < to; ++i) {
    Chunk chunk = NthChunk(i);
    ContentId id = store.IdOf(chunk);
    if (!store.Contains(id) || store.Get(id) != chunk) return false;
  }
  return true;
}

uint32_t FlushQueued(ChunkStore& store) {
  testing::HoldWriter(store, true);
  for (uint64_t i = 7000; i < 7020; ++i) store.Put(NthChunk(i));
  if (store.stats().queued_bytes == 0) return 2;
  testing::HoldWriter(store, false);
  store.Flush();
  return store.stats().queued_bytes == 0 ? 0 : 3;
}

uint32_t LoseQueued(ChunkStore& store) {
  for (uint64_t i = 7000; i < 7020; ++i) store.Put(NthChunk(i));
  store.Flush();
  testing::HoldWriter(store, true);
  for (uint64_t i = 7020; i < 7040; ++i) store.Put(NthChunk(i));  // returned, but queued
  return Served(store, 7020, 7040) ? 0 : 4;
}

}  // namespace

int main(int argc, char** argv) {
  ::alarm(30);  // never outlives a test that died
  if (argc < 3) return 64;
  std::string mode = argv[1];
  ChunkStoreOptions options{.path = argv[2], .block_cache_bytes = 4 << 20, .cache_bytes = 0};
  if (mode == "evict-forever") options.max_bytes = kEvictStoreBytes;
  std::string error;
  auto store = ChunkStore::Open(options, &error);
  if (!store) {
    Report(1);
    return 1;
  }
  if (mode == "evict-forever") {
    for (uint32_t i = 0;; ++i) {
      store->Put(NthChunk(i));
      if (i % 16 == 15) Report(i);
    }
  }
  if (mode == "put-forever" && argc == 4) {
    uint64_t base = std::strtoull(argv[3], nullptr, 10);
    for (uint32_t i = 0;; ++i) {
      store->Put(NthChunk(base + i));
      if (i % 4 != 3) continue;
      store->Flush();
      Report(i);
    }
  }
  if (mode == "flush-queued") {
    Report(FlushQueued(*store));
  } else if (mode == "lose-queued") {
    Report(LoseQueued(*store));
  } else {
    return 64;
  }
  for (;;) ::pause();  // until killed: a clean close would write the queue out
}
