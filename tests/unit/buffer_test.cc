#include <doctest/doctest.h>

#include <string>

#include "util/buffer.h"

using wanopt::Buffer;

namespace {
std::string Text(const Buffer& b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }
std::span<const uint8_t> Bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
}  // namespace

TEST_CASE("append, consume and replace keep the readable bytes right") {
  Buffer b(8);
  b.Append(Bytes("hello "));
  b.Append(Bytes("world, longer than eight"));
  CHECK(Text(b) == "hello world, longer than eight");
  b.Consume(6);
  CHECK(Text(b) == "world, longer than eight");
  b.Replace(0, 5, Bytes("WAN"));
  CHECK(Text(b) == "WAN, longer than eight");
  b.Replace(5, 6, Bytes("much much longer"));
  CHECK(Text(b) == "WAN, much much longer than eight");
  b.Consume(b.size());
  CHECK(b.empty());
}

TEST_CASE("the writable tail compacts consumed space before growing") {
  Buffer b(16);
  b.Append(Bytes("0123456789abcdef"));
  b.Consume(10);
  auto tail = b.WritableTail();
  CHECK(tail.size() == 10);  // moved "abcdef" to the front
  CHECK(b.capacity() == 16);
  CHECK(Text(b) == "abcdef");
}

TEST_CASE("append after consume reuses the buffer when it fits") {
  Buffer b(16);
  b.Append(Bytes("0123456789"));
  b.Consume(8);
  b.Append(Bytes("abcdefghij"));
  CHECK(b.capacity() == 16);
  CHECK(Text(b) == "89abcdefghij");
}
