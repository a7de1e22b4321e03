// dre_bench's report primitives (see dre_report.h).
#include "tests/bench/dre_report.h"

#include <cmath>
#include <cstdio>

#include "tests/bench/dre_util.h"

namespace wanopt::bench {

std::string Num(double v, int decimals) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Pct(double percent, int decimals) { return Num(percent, decimals) + "%"; }

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string Count(uint64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string MiB(uint64_t bytes) { return Num(bytes / double(kMiB), bytes % kMiB ? 1 : 0) + " MiB"; }

std::string TargetCell(const Row& r) {
  if (r.targets.empty()) return "-";
  std::string s;
  for (size_t i = 0; i < r.targets.size(); ++i) s += (i ? "; " : "") + r.targets[i].target;
  return s;
}

std::string MetCell(const Row& r) {
  if (r.targets.empty()) return "-";
  std::string s;
  for (size_t i = 0; i < r.targets.size(); ++i) {
    s += (i ? "; " : "") + std::string(r.targets[i].met ? "**yes**" : "**NO**") + " (" + r.targets[i].value + ")";
  }
  return s;
}

Json TargetJson(const Target& t) {
  Json j;
  j.Str("name", t.name).Str("target", t.target).Str("value", t.value).Bool("met", t.met);
  return j;
}

std::string TargetsArray(const std::vector<Target>& ts) {
  std::vector<std::string> raws;
  for (const auto& t : ts) raws.push_back(TargetJson(t).Dump());
  return Json::Array(raws);
}

}  // namespace wanopt::bench
