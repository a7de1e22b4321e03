#include "wanopt/session/negotiation.h"

#include <algorithm>

#include "util/endpoint.h"

namespace wanopt {
namespace {

bool HasDre(Policy p) { return static_cast<uint8_t>(p) & static_cast<uint8_t>(Policy::kDre); }

std::string Applied(Policy negotiated, Policy applied) {
  return std::string("negotiated ") + PolicyLetter(negotiated) + ", applied " + PolicyLetter(applied);
}

}  // namespace

HelloAnswer AnswerHello(const channel::Hello& hello, const AcceptorFacts& facts) {
  HelloAnswer answer;
  channel::HelloAck& ack = answer.ack;
  for (size_t slot = 0; slot < hello.modules.size(); ++slot) {
    const std::string& name = hello.modules[slot];
    bool runs = std::find(facts.modules.begin(), facts.modules.end(), name) != facts.modules.end();
    // Slots keep their position; a module this box does not run leaves a gap.
    answer.runnable.push_back(runs ? name : std::string());
    if (runs) ack.accepted_modules |= 1u << slot;
    else answer.notes.push_back("peer asked for module '" + name + "', which this box does not run");
  }
  ack.device_id = facts.device_id;
  ack.offered = facts.configured;
  ack.negotiated = Intersect(hello.offered, facts.configured);
  ack.applied = Intersect(ack.negotiated, facts.capability);
  // DRE needs the branch's seed: without a DRE section there is no peering to use.
  if (!hello.dre_seed) ack.applied = Intersect(ack.applied, Policy::kLz);
  ack.store_instance = facts.store_instance;
  if (ack.applied != ack.negotiated) {
    std::string note = Applied(ack.negotiated, ack.applied);
    if (!facts.store_trouble.empty()) note.append(": ").append(facts.store_trouble);
    else if (!facts.has_store) note.append(": no datastore on this box");
    answer.notes.push_back(std::move(note));
  }
  if (facts.serves && !facts.serves(hello.destination.address())) {
    ack.status = channel::HelloStatus::kRejected;
    answer.rejection = "rejected: " + FormatEndpoint(hello.destination) + " is not in [datacenter] serves";
  }
  return answer;
}

AckVerdict CheckHelloAck(const channel::HelloAck& ack, bool offered_dre) {
  AckVerdict verdict;
  if (ack.status != channel::HelloStatus::kOk) {
    verdict.outcome = AckVerdict::Outcome::kServerFailed;
    return verdict;
  }
  if (HasDre(ack.applied) && !offered_dre) {
    verdict.outcome = AckVerdict::Outcome::kProtocolError;
    verdict.error = "peer applied DRE that was not offered";
    return verdict;
  }
  if (ack.applied != ack.negotiated) {
    verdict.notes.push_back(Applied(ack.negotiated, ack.applied).append(": the peer has no datastore, or it is degraded"));
  }
  return verdict;
}

}  // namespace wanopt
