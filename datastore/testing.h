// Test hooks of ChunkStore. Internal to datastore/ and its tests; never used by the
// proxy.
#pragma once

#include "datastore/chunk_store.h"

namespace wanopt::datastore::testing {

// Holds the store's writer thread (hold = true) before its next batch, or lets it go
// on: while held, chunks Put stay in the write queue, and a Put that finds the queue
// full waits. Flush waits for the writer, so it does not return while held; closing
// the store writes the queue out, held or not.
void HoldWriter(ChunkStore& store, bool hold);

// Makes every read of a chunk's bytes from its segment fail with `error` (an errno;
// 0: reads work again), as a failing disk would.
void FailSegmentReads(ChunkStore& store, int error);

// Makes Lasting ignore the rate chunks arrived at (as if they had come slowly), so
// that its quarter-of-the-store margin can be seen alone.
void IgnoreTurnover(ChunkStore& store);

}  // namespace wanopt::datastore::testing
