// What DRE a connection can have from this box's datastore now (session.h).
#include "datastore/chunk_store.h"
#include "wanopt/session/session.h"

namespace wanopt {

Policy SessionEnvironment::capability() const {
  if (store && !store->healthy()) return Intersect(configured_capability, Policy::kLz);
  return configured_capability;
}

std::string SessionEnvironment::store_trouble() const {
  if (store && !store->healthy()) return "datastore degraded: " + store->degraded_reason() + ": DRE off";
  return "";
}

}  // namespace wanopt
