// The status surfaces, rendered from a Model (internal to wanopt/status): the JSON
// API, the text tables `wanopt show` prints, the Prometheus metrics, and the page.
// Every string that came off the network is escaped for where it goes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "protocols/module.h"
#include "wanopt/status/model.h"

namespace wanopt::json {
class Writer;
}

namespace wanopt::status {

// JSON (render_api.cc).
std::string ConnectionsJson(const Model& m, const View& v);
std::string PeersJson(const Model& m);
std::string SummaryJson(const Model& m);
std::string DatastoreJson(const Model& m);

// Text tables for `wanopt show` (render_api.cc).
std::string ConnectionsText(const Model& m, const View& v);
std::string PeersText(const Model& m);
std::string SummaryText(const Model& m);
std::string StoresText(const Model& m);

// Prometheus text format (render_api.cc).
std::string Metrics(const Model& m);

// WCCP (render_wccp.cc): /api/wccp, `wanopt show wccp`, its /metrics lines.
std::string WccpJson(const Model& m);
std::string WccpText(const Model& m);
std::string WccpMetrics(const Model& m);

// The protocol modules' box-wide parts (render_modules.cc): /api/modules and
// `wanopt show modules`. ModulesOf asks each running part now (Gauges, Tables);
// the renderers are pure.
struct ModuleState {
  std::string box, module;
  std::vector<std::pair<std::string, uint64_t>> gauges;
  std::vector<protocols::ModuleTable> tables;
};
std::vector<ModuleState> ModulesOf(const std::vector<const Daemon*>& boxes);
std::string ModulesJson(const std::vector<ModuleState>& modules);
// At most `max_rows` rows of each table, then how many more there are.
std::string ModulesText(const std::vector<ModuleState>& modules, size_t max_rows = SIZE_MAX);

// HTML (render_page.cc): the whole page, and the part of it that refreshes. `token`
// is carried in the page's own links and form so that a reader who opened it with
// ?token= can sort and filter.
std::string Page(const Model& m, const View& v, const std::string& token);
std::string Live(const Model& m, const View& v, const std::string& token);

}  // namespace wanopt::status
