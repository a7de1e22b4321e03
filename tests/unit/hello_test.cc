#include <doctest/doctest.h>

#include "wanopt/channel/hello.h"

using namespace wanopt;
using namespace wanopt::channel;
using boost::asio::ip::make_address;

TEST_CASE("hello round-trips with IPv4 and IPv6 destinations and modules") {
  for (const char* address : {"198.18.1.10", "2001:db8::10"}) {
    Hello hello;
    hello.device_id = {2, 0, 0x5e, 0, 0, 1};
    hello.offered = Policy::kDre;
    hello.destination = {make_address(address), 135};
    hello.source = {make_address(address), 50123};
    hello.modules = {"bytecount", "epm"};
    hello.dre_seed = std::array<uint8_t, 32>{1, 2, 3};
    hello.store_instance = 42;
    std::string error;
    auto decoded = DecodeHello(EncodeHello(hello), &error);
    REQUIRE_MESSAGE(decoded, error);
    CHECK(decoded->device_id == hello.device_id);
    CHECK(decoded->offered == Policy::kDre);
    CHECK(decoded->destination == hello.destination);
    CHECK(decoded->source == hello.source);
    CHECK(decoded->modules == hello.modules);
    CHECK(decoded->dre_seed == hello.dre_seed);
    CHECK(decoded->store_instance == 42);
  }
}

TEST_CASE("a hello without a source address decodes with port 0") {
  Hello hello;
  hello.destination = {make_address("198.18.1.10"), 80};
  std::string error;
  auto decoded = DecodeHello(EncodeHello(hello), &error);
  REQUIRE_MESSAGE(decoded, error);
  CHECK(decoded->source.port() == 0);
}

TEST_CASE("every truncation of a hello is rejected, never read past") {
  Hello hello;
  hello.destination = {make_address("198.18.1.10"), 80};
  hello.modules = {"bytecount"};
  auto bytes = EncodeHello(hello);
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<long>(n));
    std::string error;
    CHECK_FALSE(DecodeHello(prefix, &error));
    CHECK_FALSE(error.empty());
  }
}

TEST_CASE("hello: bad magic, version, policy and family are named") {
  Hello hello;
  hello.destination = {make_address("198.18.1.10"), 80};
  auto good = EncodeHello(hello);
  std::string error;
  auto bad = good;
  bad[0] = 'X';
  CHECK_FALSE(DecodeHello(bad, &error));
  CHECK(error.find("magic") != std::string::npos);
  bad = good;
  bad[4] = 9;
  CHECK_FALSE(DecodeHello(bad, &error));
  CHECK(error.find("version 9") != std::string::npos);
  bad = good;
  bad[5] = 'Q';
  CHECK_FALSE(DecodeHello(bad, &error));
  CHECK(error.find("policy") != std::string::npos);
  bad = good;
  bad[12] = 5;
  CHECK_FALSE(DecodeHello(bad, &error));
  CHECK(error.find("family") != std::string::npos);
}

TEST_CASE("hello-ack round-trips and rejects unknown status") {
  HelloAck ack;
  ack.status = HelloStatus::kRefused;
  ack.device_id = {2, 0, 0, 0, 0, 2};
  ack.offered = Policy::kFull;
  ack.negotiated = Policy::kLz;
  ack.applied = Policy::kTcpOnly;
  ack.accepted_modules = 0b101;
  std::string error;
  ack.store_instance = 0x0102030405060708;
  auto bytes = EncodeHelloAck(ack);
  auto decoded = DecodeHelloAck(bytes, &error);
  REQUIRE_MESSAGE(decoded, error);
  CHECK(decoded->store_instance == 0x0102030405060708);
  CHECK(decoded->status == HelloStatus::kRefused);
  CHECK(decoded->negotiated == Policy::kLz);
  CHECK(decoded->accepted_modules == 0b101);
  bytes[5] = 99;
  CHECK_FALSE(DecodeHelloAck(bytes, &error));
  for (size_t n = 0; n < 20; ++n) {  // the store instance (last 8 bytes) is optional
    CHECK_FALSE(DecodeHelloAck(std::span(bytes).first(n), &error));
  }
}

TEST_CASE("policies negotiate to the lowest common one") {
  CHECK(Intersect(Policy::kFull, Policy::kFull) == Policy::kFull);
  CHECK(Intersect(Policy::kFull, Policy::kDre) == Policy::kDre);
  CHECK(Intersect(Policy::kFull, Policy::kLz) == Policy::kLz);
  CHECK(Intersect(Policy::kDre, Policy::kLz) == Policy::kTcpOnly);
  CHECK(Intersect(Policy::kTcpOnly, Policy::kFull) == Policy::kTcpOnly);
  CHECK(PolicyLetter(Policy::kDre) == 'D');
  CHECK(PolicyFromLetter('f') == Policy::kFull);
  CHECK_FALSE(PolicyFromLetter('X'));
}

TEST_CASE("device ids parse and print as six hex bytes") {
  auto id = ParseDeviceId("02:00:5e:0A:ff:01");
  REQUIRE(id);
  CHECK(FormatDeviceId(*id) == "02:00:5e:0a:ff:01");
  CHECK_FALSE(ParseDeviceId("02:00:5e:0a:ff"));
  CHECK_FALSE(ParseDeviceId("02-00-5e-0a-ff-01"));
  CHECK_FALSE(ParseDeviceId("02:00:5e:0a:ff:0g"));
}

TEST_CASE("hello-ack: the acceptor's own address is optional at the end, and its truncations are rejected") {
  HelloAck ack;
  ack.device_id = {2, 0, 0, 0, 0, 2};
  ack.offered = ack.negotiated = ack.applied = Policy::kFull;
  std::string error;
  auto without = EncodeHelloAck(ack);
  auto decoded = DecodeHelloAck(without, &error);
  REQUIRE_MESSAGE(decoded, error);
  CHECK_FALSE(decoded->acceptor);  // what an older box sends
  ack.acceptor = boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("198.18.0.2"), 7800);
  auto with = EncodeHelloAck(ack);
  CHECK(with.size() == without.size() + 8);
  decoded = DecodeHelloAck(with, &error);
  REQUIRE_MESSAGE(decoded, error);
  REQUIRE(decoded->acceptor);
  CHECK(*decoded->acceptor == *ack.acceptor);
  ack.acceptor = boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("2001:db8::2"), 0);
  decoded = DecodeHelloAck(EncodeHelloAck(ack), &error);
  REQUIRE_MESSAGE(decoded, error);
  CHECK(*decoded->acceptor == *ack.acceptor);
  for (size_t n = without.size() + 1; n < with.size(); ++n) {
    error.clear();
    CHECK_FALSE(DecodeHelloAck(std::span<const uint8_t>(with.data(), n), &error));
    CHECK_FALSE(error.empty());
  }
}

TEST_CASE("hello: the opener's own address is optional at the end, with or without DRE, and its truncations are rejected") {
  for (bool dre : {false, true}) {
    Hello hello;
    hello.destination = {make_address("198.18.2.10"), 80};
    hello.source = {make_address("198.18.1.10"), 50123};
    if (dre) hello.dre_seed = std::array<uint8_t, 32>{7};
    std::string error;
    auto without = EncodeHello(hello);
    auto decoded = DecodeHello(without, &error);
    REQUIRE_MESSAGE(decoded, error);
    CHECK_FALSE(decoded->opener);  // what an older box sends
    hello.opener = make_address("198.18.0.1");
    auto with = EncodeHello(hello);
    CHECK(with.size() == without.size() + 8);
    decoded = DecodeHello(with, &error);
    REQUIRE_MESSAGE(decoded, error);
    REQUIRE(decoded->opener);
    CHECK(*decoded->opener == *hello.opener);
    CHECK(decoded->dre_seed == hello.dre_seed);
    hello.opener = make_address("2001:db8::1");
    decoded = DecodeHello(EncodeHello(hello), &error);
    REQUIRE_MESSAGE(decoded, error);
    CHECK(*decoded->opener == *hello.opener);
    for (size_t n = without.size() + 1; n < with.size(); ++n) {
      error.clear();
      CHECK_FALSE(DecodeHello(std::span<const uint8_t>(with.data(), n), &error));
      CHECK_FALSE(error.empty());
    }
  }
}

TEST_CASE("hello and hello-ack: the decoder's zstd window log, with or without an opener, absent from older boxes") {
  std::string error;
  for (bool with_opener : {false, true}) {
    CAPTURE(with_opener);
    Hello hello;
    hello.destination = {make_address("198.18.1.10"), 80};
    if (with_opener) hello.opener = make_address("198.18.1.2");
    auto old_format = EncodeHello(hello);  // lz_window_log 0: what an older box sends
    hello.lz_window_log = 23;
    auto bytes = EncodeHello(hello);
    auto decoded = DecodeHello(bytes, &error);
    REQUIRE_MESSAGE(decoded, error);
    CHECK(decoded->lz_window_log == 23);
    CHECK(decoded->opener.has_value() == with_opener);
    auto older = DecodeHello(old_format, &error);
    REQUIRE_MESSAGE(older, error);
    CHECK(older->lz_window_log == 0);
    // The window log is the last byte: a box that stops reading after the opener ignores it.
    CHECK(bytes.size() == old_format.size() + (with_opener ? 1 : 5));
  }
  HelloAck ack;
  ack.lz_window_log = 23;
  auto decoded = DecodeHelloAck(EncodeHelloAck(ack), &error);
  REQUIRE_MESSAGE(decoded, error);
  CHECK(decoded->lz_window_log == 23);
  CHECK(EncodeHelloAck(ack)[9] == 23);  // the byte that was reserved
  CHECK(DecodeHelloAck(EncodeHelloAck(HelloAck{}), &error)->lz_window_log == 0);
}
