#include "datastore/rocksdb_hooks.h"

#include <cstdarg>
#include <cstdio>
#include <utility>

#include "util/log.h"

namespace wanopt::datastore {
namespace {

class JournalLogger final : public rocksdb::Logger {
 public:
  JournalLogger(std::string path, rocksdb::InfoLogLevel level) : rocksdb::Logger(level), path_(std::move(path)) {}

  using rocksdb::Logger::Logv;
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel() || level == rocksdb::InfoLogLevel::HEADER_LEVEL) return;
    char text[1024];
    int n = std::vsnprintf(text, sizeof text, format, ap);
    if (n < 0) return;
    auto ours = level >= rocksdb::InfoLogLevel::ERROR_LEVEL  ? log::Level::kError
                : level >= rocksdb::InfoLogLevel::WARN_LEVEL ? log::Level::kWarn
                                                             : log::Level::kDebug;
    if (!log::Enabled(ours)) return;
    log::Write(ours, "datastore", path_ + ": rocksdb: " + text);
  }
  // Nothing to close: the journal is not ours.
  rocksdb::Status Close() override { return rocksdb::Status::OK(); }

 private:
  const std::string path_;
};

class ErrorListener final : public rocksdb::EventListener {
 public:
  explicit ErrorListener(std::function<void(const rocksdb::Status&)> on_error) : on_error_(std::move(on_error)) {}

  void OnBackgroundError(rocksdb::BackgroundErrorReason, rocksdb::Status* bg_error) override {
    if (bg_error && !bg_error->ok()) on_error_(*bg_error);
  }
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status, bool* auto_recovery) override {
    if (auto_recovery) *auto_recovery = false;
  }

 private:
  std::function<void(const rocksdb::Status&)> on_error_;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> MakeJournalLogger(std::string path, rocksdb::InfoLogLevel level) {
  return std::make_shared<JournalLogger>(std::move(path), level);
}

std::shared_ptr<rocksdb::EventListener> MakeErrorListener(std::function<void(const rocksdb::Status&)> on_error) {
  return std::make_shared<ErrorListener>(std::move(on_error));
}

}  // namespace wanopt::datastore
