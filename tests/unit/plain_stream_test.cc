// The in-process link between a session and its TLS pump (plain_pipe.h), driven from
// both ends by hand: a socket's rules (bounded queues, EOF after the bytes, resets),
// handlers never run from inside the call that readies them, and nothing kept once
// both ends are done.
#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "wanopt/channel/plain_pipe.h"
#include "wanopt/channel/plain_stream.h"

using namespace wanopt::channel;
using tls_internal::PlainPipe;
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// The pump reads as its relay does: what is queued, then consumed.
size_t PumpRead(PlainPipe& pipe, uint8_t* into, size_t size, error_code& ec) {
  std::span<const uint8_t> bytes = pipe.PumpPeek(size, ec);
  if (bytes.empty()) return 0;
  std::memcpy(into, bytes.data(), bytes.size());
  pipe.PumpConsume(bytes.size());
  return bytes.size();
}

// Runs what is ready now (an io_context that ran out of work must be restarted).
void Poll(asio::io_context& io) {
  io.restart();
  io.poll();
}

struct Link {
  asio::io_context io;
  std::shared_ptr<PlainPipe> pipe = std::make_shared<PlainPipe>(io.get_executor());
  PlainStream session{pipe};

  size_t SessionWrite(const std::string& text, error_code& ec) {
    std::array<asio::const_buffer, 1> one{asio::buffer(text)};
    return session.WriteSome(one, ec);
  }
  std::string PumpReadAll(error_code& ec) {
    std::string got;
    std::vector<uint8_t> buffer(64 * 1024);
    for (;;) {
      size_t n = PumpRead(*pipe, buffer.data(), buffer.size(), ec);
      if (ec) return got;
      got.append(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
    }
  }
  std::string SessionReadAll(error_code& ec) {
    std::string got;
    char buffer[4096];
    for (;;) {
      size_t n = session.ReadSome(asio::buffer(buffer), ec);
      if (ec) return got;
      got.append(buffer, n);
    }
  }
};

}  // namespace

TEST_CASE("plain pipe: bounded each way, and a waiting writer runs only after the reader made room") {
  Link link;
  std::string big(PlainPipe::kQueueLimit + 1000, 'x');
  error_code ec;
  CHECK(link.SessionWrite(big, ec) == PlainPipe::kQueueLimit);
  CHECK(!ec);
  CHECK(link.SessionWrite("more", ec) == 0);
  CHECK(ec == asio::error::would_block);
  int woken = 0;
  link.session.WaitReadable([](error_code) {});  // nothing to read: stays waiting
  link.pipe->SessionWaitWritable([&](error_code e) {
    CHECK(!e);
    ++woken;
  });
  Poll(link.io);
  CHECK(woken == 0);
  uint8_t some[100];
  CHECK(PumpRead(*link.pipe, some, sizeof some, ec) == sizeof some);
  CHECK(woken == 0);  // posted, not run from inside the read
  Poll(link.io);
  CHECK(woken == 1);

  // The other way: the pump's writes stop at the limit too.
  std::vector<uint8_t> down(PlainPipe::kQueueLimit * 2, 'y');
  CHECK(link.pipe->PumpWrite(down.data(), down.size(), ec) == PlainPipe::kQueueLimit);
  CHECK(link.pipe->PumpWrite(down.data(), 1, ec) == 0);
  CHECK(ec == asio::error::would_block);
}

TEST_CASE("plain pipe: half-closes arrive after the bytes before them, and the other way keeps flowing") {
  Link link;
  error_code ec;
  link.SessionWrite("request", ec);
  link.session.ShutdownSend();
  CHECK(link.PumpReadAll(ec) == "request");
  CHECK(ec == asio::error::eof);
  CHECK(!link.pipe->session_closed());  // shut down, not closed
  CHECK(link.SessionWrite("late", ec) == 0);
  CHECK(ec == asio::error::broken_pipe);

  std::string reply = "reply after the request ended";
  link.pipe->PumpWrite(reinterpret_cast<const uint8_t*>(reply.data()), reply.size(), ec);
  link.pipe->PumpShutdownSend();
  CHECK(link.SessionReadAll(ec) == reply);
  CHECK(ec == asio::error::eof);
}

TEST_CASE("plain pipe: a session closing with bytes unread resets the pump, after what it wrote") {
  Link link;
  error_code ec;
  bool told = false;
  link.pipe->PumpWaitSessionClosed([&](error_code) { told = true; });
  link.SessionWrite("last words", ec);
  const uint8_t unread[] = {1, 2, 3};
  link.pipe->PumpWrite(unread, sizeof unread, ec);
  link.session.Close();
  CHECK(!link.session.is_open());
  Poll(link.io);
  CHECK(told);
  CHECK(link.PumpReadAll(ec) == "last words");
  CHECK(ec == asio::error::connection_reset);
  CHECK(link.pipe->PumpWrite(unread, 1, ec) == 0);
  CHECK(ec == asio::error::broken_pipe);
}

TEST_CASE("plain pipe: a peek repeated after the session wrote more starts with the same bytes, never shorter") {
  // What the pump's SSL_write needs when it repeats a write that had to wait: the
  // bytes may move (the queue grows), but they are the same and not fewer.
  Link link;
  error_code ec;
  link.SessionWrite("first bytes", ec);
  std::span<const uint8_t> before = link.pipe->PumpPeek(64 * 1024, ec);
  REQUIRE(!ec);
  std::string first(before.begin(), before.end());
  std::string more(100 * 1024, 'm');  // past the queue's first storage: it grows
  CHECK(link.SessionWrite(more, ec) == more.size());
  std::span<const uint8_t> after = link.pipe->PumpPeek(64 * 1024, ec);
  REQUIRE(after.size() >= first.size());
  CHECK(std::string(after.begin(), after.begin() + static_cast<std::ptrdiff_t>(first.size())) == first);
  CHECK(after.size() == 64 * 1024);
  link.pipe->PumpConsume(first.size());  // what OpenSSL reports written: only those leave
  std::span<const uint8_t> rest = link.pipe->PumpPeek(SIZE_MAX, ec);
  CHECK(rest.size() == more.size());
  CHECK(rest[0] == 'm');
}

TEST_CASE("plain pipe: a session closing with nothing unread is an orderly end for the pump") {
  Link link;
  error_code ec;
  link.SessionWrite("bye", ec);
  link.session.Close();
  CHECK(link.PumpReadAll(ec) == "bye");
  CHECK(ec == asio::error::eof);
  CHECK(link.pipe->session_closed());
}

TEST_CASE("plain pipe: the pump ending abruptly cuts the session: a waiting read wakes to a reset") {
  Link link;
  error_code ec;
  const uint8_t queued[] = {'a', 'b'};
  link.pipe->PumpWrite(queued, sizeof queued, ec);
  std::string got = link.SessionReadAll(ec);  // takes what was queued
  CHECK(got == "ab");
  CHECK(ec == asio::error::would_block);
  error_code woke_with = asio::error::would_block;
  link.session.WaitReadable([&](error_code e) { woke_with = e; });
  link.pipe->PumpWrite(queued, sizeof queued, ec);  // queued, never read:
  link.pipe->PumpClose(/*abort=*/true);
  Poll(link.io);
  CHECK(!woke_with);  // readable: the read tells what happened
  char buffer[8];
  CHECK(link.session.ReadSome(asio::buffer(buffer), ec) == 0);
  CHECK(ec == asio::error::connection_reset);
  CHECK(link.SessionWrite("x", ec) == 0);
  CHECK(ec == asio::error::broken_pipe);
}

TEST_CASE("plain pipe: the pump ending in order leaves its last bytes to be read, then EOF") {
  Link link;
  error_code ec;
  const uint8_t last[] = {'e', 'n', 'd'};
  link.pipe->PumpWrite(last, sizeof last, ec);
  link.pipe->PumpClose(/*abort=*/false);
  CHECK(link.SessionReadAll(ec) == "end");
  CHECK(ec == asio::error::eof);
}

TEST_CASE("plain pipe: closing an end aborts its waits and drops the pump's, so neither keeps the other") {
  Link link;
  error_code aborted;
  link.session.WaitReadable([&](error_code e) { aborted = e; });
  link.session.Close();
  Poll(link.io);
  CHECK(aborted == asio::error::operation_aborted);

  // A pump's wait holds the pump; once the pump ended, the pipe lets go of it.
  Link other;
  auto pump = std::make_shared<int>(0);
  std::weak_ptr<int> watch = pump;
  std::vector<uint8_t> fill(PlainPipe::kQueueLimit);
  error_code ec;
  other.pipe->PumpWrite(fill.data(), fill.size(), ec);  // full: the writable wait stays
  other.pipe->PumpWaitReadable([pump](error_code) {});
  other.pipe->PumpWaitWritable([pump](error_code) {});
  pump.reset();
  CHECK(!watch.expired());
  other.pipe->PumpClose(/*abort=*/false);
  CHECK(watch.expired());
  Poll(other.io);
}

TEST_CASE("plain stream: AsyncWrite of 1 MiB through the pipe arrives whole and in order, completed once") {
  Link link;
  std::string header = "HEAD";
  std::string body(1 << 20, '\0');
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7 + i / 1000);
  int completions = 0;
  size_t written = 0;
  link.session.AsyncWrite({asio::buffer(header), asio::buffer(body)}, [&](error_code ec, size_t n) {
    CHECK(!ec);
    ++completions;
    written = n;
  });
  CHECK(completions == 0);  // never from inside the call
  std::string got;
  std::vector<uint8_t> buffer(20000);
  while (got.size() < header.size() + body.size()) {
    error_code ec;
    size_t n = PumpRead(*link.pipe, buffer.data(), buffer.size(), ec);
    if (ec == asio::error::would_block) {
      link.io.restart();
      REQUIRE(link.io.run_one() == 1);
      continue;
    }
    REQUIRE(!ec);
    got.append(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
  }
  Poll(link.io);
  CHECK(completions == 1);
  CHECK(written == header.size() + body.size());
  CHECK(got == header + body);
}

TEST_CASE("plain stream: a TCP stream and a pump's end say which they are") {
  asio::io_context io;
  PlainStream closed(io.get_executor());
  CHECK(!closed.through_pump());
  CHECK(!closed.is_open());
  Link link;
  CHECK(link.session.through_pump());
  CHECK(link.session.is_open());
  CHECK(!link.session.tcp().is_open());
  PlainStream moved = std::move(link.session);
  CHECK(moved.through_pump());
  CHECK(moved.is_open());
  moved = PlainStream(io.get_executor());  // replacing a pump's end closes it
  CHECK(link.pipe->session_closed());
}

TEST_CASE("plain pipe: destroying the io_context frees a session and a pump that wait on each other") {
  // As the daemon stops: its loops are destroyed with whatever waits on them.
  auto io = std::make_unique<asio::io_context>();
  struct Holder {
    std::shared_ptr<PlainPipe> pipe;
    std::optional<PlainStream> stream;
  };
  auto pump = std::make_shared<Holder>();
  pump->pipe = std::make_shared<PlainPipe>(io->get_executor());
  auto session = std::make_shared<Holder>();
  session->stream.emplace(pump->pipe);
  pump->pipe->PumpWaitReadable([pump](error_code) {});          // pump -> pipe -> handler -> pump
  session->stream->WaitReadable([session](error_code) {});      // session -> pipe -> handler -> session
  std::weak_ptr<Holder> pump_alive = pump, session_alive = session;
  pump.reset();
  session.reset();
  CHECK(!pump_alive.expired());
  CHECK(!session_alive.expired());
  io.reset();
  CHECK(pump_alive.expired());
  CHECK(session_alive.expired());
}
