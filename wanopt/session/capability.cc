// What DRE a connection can have from this box's datastore now (session.h).
#include "datastore/chunk_store.h"
#include "wanopt/session/session.h"

namespace wanopt {

Policy CurrentCapability(const SessionEnvironment& env) {
  if (env.store && !env.store->healthy()) return Intersect(env.capability, Policy::kLz);
  return env.capability;
}

std::string StoreTrouble(const SessionEnvironment& env) {
  if (env.store && !env.store->healthy()) return "datastore degraded: " + env.store->degraded_reason() + ": DRE off";
  return "";
}

}  // namespace wanopt
