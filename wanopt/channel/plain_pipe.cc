#include "wanopt/channel/plain_pipe.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <unordered_set>

#include <boost/asio/error.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>

namespace wanopt::channel::tls_internal {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

// A queue that fills starts with this much storage (it grows to kQueueLimit):
// most writes are a frame or a TLS record, and regrowing copies.
constexpr size_t kInitialStorage = 64 * 1024;

}  // namespace

// The pipes of one io_context. Its destruction shuts its services down, newest
// first: this one, created with the first pipe, before the scheduler, which then
// destroys whatever dropping the handlers posted.
class PipeRegistry final : public asio::execution_context::service {
 public:
  using key_type = PipeRegistry;
  static asio::execution_context::id id;

  explicit PipeRegistry(asio::execution_context& context) : service(context) {}

  static PipeRegistry& Of(const asio::any_io_executor& executor) {
    return asio::use_service<PipeRegistry>(
        asio::query(executor, asio::execution::context_as<asio::execution_context&>));
  }
  void Add(PlainPipe* pipe) {
    std::lock_guard lock(mutex_);
    pipes_.insert(pipe);
  }
  void Remove(PlainPipe* pipe) {
    std::lock_guard lock(mutex_);
    pipes_.erase(pipe);
  }

 private:
  void shutdown() override {
    std::vector<PlainPipe::Handler> handlers;
    {
      std::lock_guard lock(mutex_);
      for (PlainPipe* pipe : pipes_) pipe->TakeHandlers(handlers);
    }
    // Destroyed outside the lock: the last reference to a session or a pump, and so
    // to a pipe, may go with them.
    handlers.clear();
  }

  std::mutex mutex_;  // a daemon's loops each run one thread, and may end on another
  std::unordered_set<PlainPipe*> pipes_;
};

asio::execution_context::id PipeRegistry::id;

PlainPipe::PlainPipe(asio::any_io_executor executor)
    : executor_(std::move(executor)), registry_(&PipeRegistry::Of(executor_)) {
  registry_->Add(this);
}

PlainPipe::~PlainPipe() { registry_->Remove(this); }

void PlainPipe::TakeHandlers(std::vector<Handler>& into) {
  for (Handler* h : {&up_.readable, &up_.writable, &down_.readable, &down_.writable, &session_closed_waiter_}) {
    if (*h) into.push_back(std::move(*h));
    *h = nullptr;
  }
}

void PlainPipe::Post(Handler& handler, error_code ec) {
  if (!handler) return;
  asio::post(executor_, [h = std::move(handler), ec] { h(ec); });
  handler = nullptr;
}

// ---- The rules of both queues ----

error_code PlainPipe::NothingToRead(const Queue& queue, bool reset) {
  if (reset) return asio::error::connection_reset;
  return queue.writer_done ? error_code(asio::error::eof) : error_code(asio::error::would_block);
}

size_t PlainPipe::Write(Queue& queue, bool reader_gone, std::span<const asio::const_buffer> from, error_code& ec) {
  if (queue.writer_done || reader_gone) {
    ec = asio::error::broken_pipe;
    return 0;
  }
  size_t total = 0;
  for (const auto& b : from) total += b.size();
  if (total == 0) return 0;
  size_t n = std::min(Room(queue), total);
  if (n == 0) {
    ec = asio::error::would_block;
    return 0;
  }
  if (queue.bytes.capacity() == 0) queue.bytes.Reserve(std::max(n, kInitialStorage));
  size_t left = n;
  for (const auto& b : from) {
    size_t part = std::min(left, b.size());
    queue.bytes.Append({static_cast<const uint8_t*>(b.data()), part});
    left -= part;
  }
  return n;
}

void PlainPipe::Taken(Queue& queue, size_t n) {
  queue.bytes.Consume(n);
  if (queue.bytes.empty()) Discard(queue);
}

// ---- The session's end: reads down, writes up ----

size_t PlainPipe::SessionRead(asio::mutable_buffer into, error_code& ec) {
  ec.clear();
  if (session_closed_) {
    ec = asio::error::bad_descriptor;
    return 0;
  }
  // (An abrupt end of the pump discarded what was queued.)
  if (down_.bytes.empty()) {
    ec = NothingToRead(down_, pump_aborted_);
    return 0;
  }
  size_t n = std::min(into.size(), down_.bytes.size());
  std::memcpy(into.data(), down_.bytes.data(), n);
  Taken(down_, n);
  Post(down_.writable);
  return n;
}

size_t PlainPipe::SessionWrite(std::span<const asio::const_buffer> from, error_code& ec) {
  ec.clear();
  if (session_closed_) {
    ec = asio::error::bad_descriptor;
    return 0;
  }
  size_t n = Write(up_, pump_closed_, from, ec);
  if (n > 0) Post(up_.readable);
  return n;
}

void PlainPipe::SessionWaitReadable(Handler handler) {
  if (session_closed_) return Post(handler, asio::error::operation_aborted);
  down_.readable = std::move(handler);
  if (ReadReady(down_, pump_aborted_)) Post(down_.readable);
}

void PlainPipe::SessionWaitWritable(Handler handler) {
  if (session_closed_) return Post(handler, asio::error::operation_aborted);
  up_.writable = std::move(handler);
  if (WriteReady(up_, pump_closed_)) Post(up_.writable);
}

void PlainPipe::SessionShutdownSend() {
  if (session_closed_ || up_.writer_done) return;
  up_.writer_done = true;
  Post(up_.readable);
}

void PlainPipe::SessionClose() {
  if (session_closed_) return;
  session_closed_ = true;
  up_.writer_done = true;
  if (!down_.bytes.empty() && !pump_closed_) session_reset_pump_ = true;
  Discard(down_);
  Post(down_.readable, asio::error::operation_aborted);
  Post(up_.writable, asio::error::operation_aborted);
  // The pump learns it from its next read (EOF or a reset), write (broken pipe),
  // or its wait for this.
  Post(up_.readable);
  Post(down_.writable);
  Post(session_closed_waiter_);
}

// ---- The pump's end: reads up, writes down ----

std::span<const uint8_t> PlainPipe::PumpPeek(size_t max, error_code& ec) {
  ec.clear();
  if (pump_closed_) {
    ec = asio::error::bad_descriptor;
    return {};
  }
  if (up_.bytes.empty()) {
    ec = NothingToRead(up_, session_reset_pump_);
    return {};
  }
  return up_.bytes.span().first(std::min(max, up_.bytes.size()));
}

void PlainPipe::PumpConsume(size_t n) {
  Taken(up_, n);
  Post(up_.writable);
}

size_t PlainPipe::PumpWrite(const uint8_t* from, size_t size, error_code& ec) {
  ec.clear();
  if (pump_closed_) {
    ec = asio::error::bad_descriptor;
    return 0;
  }
  std::array<asio::const_buffer, 1> one{asio::buffer(from, size)};
  size_t n = Write(down_, session_closed_, one, ec);
  if (n > 0) Post(down_.readable);
  return n;
}

void PlainPipe::PumpWaitReadable(Handler handler) {
  if (pump_closed_) return;
  up_.readable = std::move(handler);
  if (ReadReady(up_, session_reset_pump_)) Post(up_.readable);
}

void PlainPipe::PumpWaitWritable(Handler handler) {
  if (pump_closed_) return;
  down_.writable = std::move(handler);
  if (WriteReady(down_, session_closed_)) Post(down_.writable);
}

void PlainPipe::PumpWaitSessionClosed(Handler handler) {
  if (pump_closed_) return;
  session_closed_waiter_ = std::move(handler);
  if (session_closed_) Post(session_closed_waiter_);
}

void PlainPipe::PumpShutdownSend() {
  if (pump_closed_ || down_.writer_done) return;
  down_.writer_done = true;
  Post(down_.readable);
}

void PlainPipe::PumpClose(bool abort) {
  if (pump_closed_) return;
  pump_closed_ = true;
  pump_aborted_ = abort;
  down_.writer_done = true;
  Discard(up_);
  if (abort) Discard(down_);
  // The pump's own waits: it has ended and checks that itself. Each holds the pump.
  up_.readable = nullptr;
  down_.writable = nullptr;
  session_closed_waiter_ = nullptr;
  Post(down_.readable);
  Post(up_.writable);
}

}  // namespace wanopt::channel::tls_internal
