// The modules' box-wide state: /api/modules (JSON), `wanopt show modules` (text).
#include <algorithm>
#include <charconv>
#include <sstream>

#include "util/json.h"
#include "wanopt/daemon/daemon.h"
#include "wanopt/status/render.h"

namespace wanopt::status {

std::vector<ModuleState> ModulesOf(const std::vector<const Daemon*>& boxes) {
  std::vector<ModuleState> out;
  for (const Daemon* b : boxes) {
    for (const auto& part : b->box_modules().parts()) {
      out.push_back({b->config().name, part.name, part.box->Gauges(), part.box->Tables()});
    }
  }
  return out;
}

std::string ModulesJson(const std::vector<ModuleState>& modules) {
  json::Writer w;
  w.BeginObject();
  w.Key("modules");
  w.BeginArray();
  for (const ModuleState& s : modules) {
    w.BeginObject();
    w.Field("box", s.box);
    w.Field("module", s.module);
    w.Key("gauges");
    w.BeginObject();
    for (const auto& [name, value] : s.gauges) w.Field(name, value);
    w.EndObject();
    w.Key("tables");
    w.BeginObject();
    for (const protocols::ModuleTable& t : s.tables) {
      w.Key(t.name);
      w.BeginArray();
      for (const auto& row : t.rows) {
        w.BeginObject();
        for (size_t c = 0; c < t.columns.size() && c < row.size(); ++c) {
          const std::string& cell = row[c];
          int64_t number = 0;
          auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), number);
          if (t.columns[c].numeric && !cell.empty() && ec == std::errc() && end == cell.data() + cell.size()) {
            w.Field(t.columns[c].name, number);
          } else {
            w.Field(t.columns[c].name, cell);  // not the integer promised: kept as text, never invalid JSON
          }
        }
        w.EndObject();
      }
      w.EndArray();
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str();
}

std::string ModulesText(const std::vector<ModuleState>& modules, size_t max_rows) {
  std::ostringstream out;
  if (modules.empty()) out << "no module with a box-wide part is running\n";
  for (const ModuleState& s : modules) {
    out << s.box << ": " << s.module;
    for (size_t i = 0; i < s.gauges.size(); ++i) {
      out << (i ? ", " : ": ") << s.gauges[i].first << " " << s.gauges[i].second;
    }
    out << "\n";
    for (const protocols::ModuleTable& t : s.tables) {
      out << "  " << t.name << ": " << t.rows.size() << (t.rows.size() == 1 ? " row" : " rows") << "\n";
      if (t.rows.empty()) continue;
      // Columns as wide as their widest cell shown, headings in capitals.
      size_t shown = std::min(max_rows, t.rows.size());
      std::vector<size_t> width(t.columns.size());
      for (size_t c = 0; c < t.columns.size(); ++c) {
        width[c] = t.columns[c].name.size();
        for (size_t r = 0; r < shown; ++r) width[c] = std::max(width[c], c < t.rows[r].size() ? t.rows[r][c].size() : 0);
      }
      auto line = [&](auto cell) {
        std::string text = "  ";
        for (size_t c = 0; c < t.columns.size(); ++c) {
          std::string v = cell(c);
          text += v + (c + 1 < t.columns.size() ? std::string(width[c] - v.size() + 2, ' ') : "");
        }
        out << text << "\n";
      };
      line([&](size_t c) {
        std::string h = t.columns[c].name;
        std::transform(h.begin(), h.end(), h.begin(), [](char ch) { return ch >= 'a' && ch <= 'z' ? ch - 32 : ch; });
        return h;
      });
      for (size_t r = 0; r < shown; ++r) {
        line([&](size_t c) { return c < t.rows[r].size() ? t.rows[r][c] : std::string(); });
      }
      if (shown < t.rows.size()) out << "  ... " << t.rows.size() - shown << " more (/api/modules has them all)\n";
    }
  }
  return out.str();
}

}  // namespace wanopt::status
