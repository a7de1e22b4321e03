// What the chunk store plugs into RocksDB so that a failing disk (full, read-only,
// I/O errors) can never take the process down. Internal to datastore/.
//
// Why. Debian's RocksDB 7.8 is built with assertions on. Once a file writer has
// seen an error, its next Append/Flush/Sync asserts (writable_file_writer.h:312,
// `sync_without_flush_called_`) instead of returning the error. On a full disk the
// first writer to fail is RocksDB's own info log (the LOG file in the store's
// directory): the next thing RocksDB logs, the very error it is handling, aborts.
// The same holds for the write-ahead log if anything writes or syncs it again after
// a failed write. So:
//  - RocksDB logs into the journal through JournalLogger, never into a file on the
//    store's disk;
//  - ErrorListener reports every background error to the store (which stops writing
//    from then on) and turns RocksDB's automatic recovery off: that recovery flushes
//    and syncs the failed log, the path that asserts.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <rocksdb/env.h>
#include <rocksdb/listener.h>

namespace wanopt::datastore {

// RocksDB's messages at `level` and above, into wanopt's log as component
// "datastore", each prefixed with `path`.
std::shared_ptr<rocksdb::Logger> MakeJournalLogger(std::string path, rocksdb::InfoLogLevel level);

// Calls `on_error` with every background error RocksDB raises (a failed flush,
// compaction, log write or manifest write), on whichever RocksDB thread raised it
// and with no RocksDB lock held; `on_error` must be quick and must not call into
// the database. Suppresses RocksDB's automatic recovery from such errors.
std::shared_ptr<rocksdb::EventListener> MakeErrorListener(std::function<void(const rocksdb::Status&)> on_error);

}  // namespace wanopt::datastore
