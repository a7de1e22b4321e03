// The handshake's decisions without sockets (wanopt/session/negotiation.h).
#include <doctest/doctest.h>

#include "wanopt/session/negotiation.h"

using namespace wanopt;
using boost::asio::ip::make_address;

namespace {

channel::Hello HelloFor(Policy offered, bool dre_seed, std::vector<std::string> modules = {}) {
  channel::Hello hello;
  hello.device_id = {2, 0, 0, 0, 0, 1};
  hello.offered = offered;
  hello.destination = {make_address("198.18.2.10"), 80};
  hello.modules = std::move(modules);
  if (dre_seed) hello.dre_seed = std::array<uint8_t, 32>{1};
  return hello;
}

AcceptorFacts Facts() {
  AcceptorFacts facts;
  facts.device_id = {2, 0, 0, 0, 0, 2};
  facts.configured = Policy::kFull;
  facts.capability = Policy::kFull;
  facts.has_store = true;
  facts.store_instance = 77;
  facts.modules = {"mapi", "smb2"};
  return facts;
}

bool AnyNote(const std::vector<std::string>& notes, std::string_view text) {
  for (const auto& n : notes) {
    if (n.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("answer: the lowest common policy, applied as far as this box can, with its id and store") {
  auto answer = AnswerHello(HelloFor(Policy::kFull, true), Facts());
  CHECK(answer.ack.status == channel::HelloStatus::kOk);
  CHECK(answer.ack.device_id == Facts().device_id);
  CHECK(answer.ack.offered == Policy::kFull);
  CHECK(answer.ack.negotiated == Policy::kFull);
  CHECK(answer.ack.applied == Policy::kFull);
  CHECK(answer.ack.store_instance == 77);
  CHECK(answer.notes.empty());

  auto facts = Facts();
  facts.configured = Policy::kLz;
  answer = AnswerHello(HelloFor(Policy::kDre, true), facts);
  CHECK(answer.ack.negotiated == Policy::kTcpOnly);  // D and L have nothing in common
  CHECK(answer.ack.applied == Policy::kTcpOnly);
}

TEST_CASE("answer: no DRE without the branch's seed, or with a degraded store, and the note says why") {
  auto answer = AnswerHello(HelloFor(Policy::kFull, false), Facts());
  CHECK(answer.ack.negotiated == Policy::kFull);
  CHECK(answer.ack.applied == Policy::kLz);
  CHECK(AnyNote(answer.notes, "negotiated F, applied L"));

  auto facts = Facts();
  facts.capability = Policy::kLz;
  facts.store_trouble = "datastore degraded: disk full: DRE off";
  answer = AnswerHello(HelloFor(Policy::kFull, true), facts);
  CHECK(answer.ack.applied == Policy::kLz);
  CHECK(AnyNote(answer.notes, "negotiated F, applied L: datastore degraded: disk full"));

  facts = Facts();
  facts.capability = Policy::kLz;
  facts.has_store = false;
  answer = AnswerHello(HelloFor(Policy::kFull, true), facts);
  CHECK(AnyNote(answer.notes, "applied L: no datastore on this box"));
}

TEST_CASE("answer: module slots keep their position, and one this box does not run is a gap and a note") {
  auto answer = AnswerHello(HelloFor(Policy::kFull, true, {"smb2", "nosuch", "mapi"}), Facts());
  CHECK(answer.runnable == std::vector<std::string>{"smb2", "", "mapi"});
  CHECK(answer.ack.accepted_modules == 0b101u);
  CHECK(AnyNote(answer.notes, "peer asked for module 'nosuch', which this box does not run"));
}

TEST_CASE("answer: a destination this box does not serve is rejected, with the reason") {
  auto facts = Facts();
  facts.serves = [](const boost::asio::ip::address& a) { return a == make_address("198.18.2.11"); };
  auto answer = AnswerHello(HelloFor(Policy::kFull, true), facts);
  CHECK(answer.ack.status == channel::HelloStatus::kRejected);
  CHECK(answer.rejection == "rejected: 198.18.2.10:80 is not in [datacenter] serves");
  facts.serves = [](const boost::asio::ip::address&) { return true; };
  CHECK(AnswerHello(HelloFor(Policy::kFull, true), facts).ack.status == channel::HelloStatus::kOk);
}

TEST_CASE("the branch's check of the answer: server failures, DRE it did not offer, and applied below negotiated") {
  channel::HelloAck ack;
  ack.negotiated = ack.applied = Policy::kFull;
  CHECK(CheckHelloAck(ack, true).outcome == AckVerdict::Outcome::kOptimize);
  CHECK(CheckHelloAck(ack, true).notes.empty());
  auto verdict = CheckHelloAck(ack, false);
  CHECK(verdict.outcome == AckVerdict::Outcome::kProtocolError);
  CHECK(verdict.error == "peer applied DRE that was not offered");
  ack.applied = Policy::kLz;
  verdict = CheckHelloAck(ack, false);
  CHECK(verdict.outcome == AckVerdict::Outcome::kOptimize);
  CHECK(AnyNote(verdict.notes, "negotiated F, applied L: the peer has no datastore"));
  for (auto status : {channel::HelloStatus::kRefused, channel::HelloStatus::kUnreachable, channel::HelloStatus::kTimeout,
                      channel::HelloStatus::kRejected, channel::HelloStatus::kVersionUnsupported}) {
    ack.status = status;
    CHECK(CheckHelloAck(ack, true).outcome == AckVerdict::Outcome::kServerFailed);
  }
}
