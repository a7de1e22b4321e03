// dre_bench's report primitives: number formatting, the insertion-ordered JSON object
// that dre.json is built from, and the rows and targets of the dre.md table. The
// format of dre.json and dre.md must not change by accident. Benchmarks only.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace wanopt::bench {

// `v` with `decimals` decimals; "null" when it is not finite (so JSON stays valid).
std::string Num(double v, int decimals = 1);
// Num(percent) + "%".
std::string Pct(double percent, int decimals = 2);
// `s` as a JSON string literal.
std::string Quote(const std::string& s);
// Grouped thousands: 268,435,456.
std::string Count(uint64_t v);
// "16 MiB", or "1.5 MiB" when not a whole number of MiB.
std::string MiB(uint64_t bytes);

// A JSON object built in insertion order.
class Json {
 public:
  Json& Raw(const std::string& key, const std::string& raw) {
    items_.emplace_back(key, raw);
    return *this;
  }
  Json& Str(const std::string& key, const std::string& v) { return Raw(key, Quote(v)); }
  Json& Int(const std::string& key, uint64_t v) { return Raw(key, std::to_string(v)); }
  Json& SInt(const std::string& key, int64_t v) { return Raw(key, std::to_string(v)); }
  Json& Dbl(const std::string& key, double v, int decimals = 4) { return Raw(key, Num(v, decimals)); }
  Json& Bool(const std::string& key, bool v) { return Raw(key, v ? "true" : "false"); }
  Json& Obj(const std::string& key, const Json& v) { return Raw(key, v.Dump()); }
  std::string Dump(int indent = 0) const {
    std::string pad(indent + 2, ' '), out = "{\n";
    for (size_t i = 0; i < items_.size(); ++i) {
      out += pad + Quote(items_[i].first) + ": " + Reindent(items_[i].second, indent + 2);
      out += i + 1 < items_.size() ? ",\n" : "\n";
    }
    return out + std::string(indent, ' ') + "}";
  }
  static std::string Array(const std::vector<std::string>& raws) {
    std::string out = "[";
    for (size_t i = 0; i < raws.size(); ++i) out += (i ? ", " : "") + raws[i];
    return out + "]";
  }

 private:
  // Nested objects were dumped at indent 0: shift their lines.
  static std::string Reindent(const std::string& raw, int indent) {
    std::string out;
    for (char c : raw) {
      out += c;
      if (c == '\n') out += std::string(indent, ' ');
    }
    return out;
  }
  std::vector<std::pair<std::string, std::string>> items_;
};

// A target of the issue, judged on one run.
struct Target {
  std::string name;   // what is checked
  std::string target;  // as text
  std::string value;   // as text
  bool met = false;
};

// One row of the dre.md table: every cell is text, "-" when it has nothing.
struct Row {
  std::string workload;
  std::string lan = "-", wan = "-";
  std::string reduction = "-", zstd = "-", other = "-";
  std::string mbps = "-", cpu = "-";
  std::vector<Target> targets;
};

// The table's "target" and "met" cells of a row ("-" without targets).
std::string TargetCell(const Row& r);
std::string MetCell(const Row& r);
Json TargetJson(const Target& t);
// A JSON array of TargetJson.
std::string TargetsArray(const std::vector<Target>& ts);

}  // namespace wanopt::bench
