// Private to wanopt/config/: how a TOML table is read (TableReader: typed keys,
// one-line errors with the line number, unknown keys reported), the readers of each
// section (sections.cc) and what config.cc assembles from them.
#pragma once

#include "wanopt/config/config.h"

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <charconv>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "protocols/registry.h"

namespace wanopt::config_internal {

using boost::asio::ip::tcp;

// Thrown inside the parser only; ParseConfig turns it into the one-line error.
struct ConfigError {
  uint32_t line;
  std::string key;
  std::string problem;
};

// Walks one TOML table, remembering which keys were read so that the rest can be
// reported as unknown (a typo must never be silently ignored).
class TableReader {
 public:
  TableReader(const toml::table& table, std::string path) : table_(table), path_(std::move(path)) {}

  std::string Key(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  const toml::node* Get(std::string_view key) {
    seen_.insert(std::string(key));
    return table_.get(key);
  }

  [[noreturn]] void Fail(std::string_view key, const toml::node* node, std::string problem) const {
    uint32_t line = node ? node->source().begin.line : table_.source().begin.line;
    throw ConfigError{line, Key(key), std::move(problem)};
  }

  std::optional<std::string> String(std::string_view key) {
    const toml::node* node = Get(key);
    if (!node) return std::nullopt;
    if (!node->is_string()) Fail(key, node, "must be a string");
    return node->as_string()->get();
  }

  std::optional<int64_t> Integer(std::string_view key, int64_t min, int64_t max) {
    const toml::node* node = Get(key);
    if (!node) return std::nullopt;
    if (!node->is_integer()) Fail(key, node, "must be an integer");
    int64_t value = node->as_integer()->get();
    if (value < min || value > max) {
      Fail(key, node, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    return value;
  }

  std::optional<tcp::endpoint> Endpoint(std::string_view key, std::optional<uint16_t> default_port) {
    auto text = String(key);
    if (!text) return std::nullopt;
    auto endpoint = ParseEndpoint(*text, default_port);
    if (!endpoint) {
      Fail(key, Get(key), "'" + *text + "' is not an address:port (like 192.0.2.1:80 or [2001:db8::1]:80)");
    }
    return endpoint;
  }

  tcp::endpoint RequiredEndpoint(std::string_view key, std::optional<uint16_t> default_port) {
    auto endpoint = Endpoint(key, default_port);
    if (!endpoint) Fail(key, nullptr, "is required");
    return *endpoint;
  }

  std::optional<Policy> PolicyKey(std::string_view key) {
    auto text = String(key);
    if (!text) return std::nullopt;
    auto policy = text->size() == 1 ? PolicyFromLetter((*text)[0]) : std::nullopt;
    if (!policy) Fail(key, Get(key), "'" + *text + "' is not a policy (F, D, L or T)");
    return policy;
  }

  std::optional<std::vector<std::string>> Modules(std::string_view key) {
    const toml::node* node = Get(key);
    if (!node) return std::nullopt;
    if (!node->is_array()) Fail(key, node, "must be an array of module names");
    std::vector<std::string> names;
    for (const toml::node& item : *node->as_array()) {
      if (!item.is_string()) Fail(key, &item, "must be an array of module names");
      std::string name = item.as_string()->get();
      if (!protocols::Registry::Global().Find(name)) {
        std::string known;
        for (const auto& each : protocols::Registry::Global().Names()) known += (known.empty() ? "" : ", ") + each;
        Fail(key, &item, "unknown module '" + name + "' (known: " + known + ")");
      }
      for (const auto& previous : names) {
        if (previous == name) Fail(key, &item, "module '" + name + "' listed twice");
      }
      names.push_back(std::move(name));
    }
    if (names.size() > channel::kMaxModules) {
      Fail(key, node, "at most " + std::to_string(channel::kMaxModules) + " modules");
    }
    return names;
  }

  // An array of subnets ("198.18.1.0/24", "2001:db8::/32"; a bare address is a /32 or /128).
  std::optional<std::vector<Subnet>> Subnets(std::string_view key) {
    const toml::node* node = Get(key);
    if (!node) return std::nullopt;
    if (!node->is_array()) Fail(key, node, "must be an array of subnets (like [\"198.18.1.0/24\", \"2001:db8::/32\"])");
    std::vector<Subnet> subnets;
    for (const toml::node& item : *node->as_array()) {
      auto subnet = item.is_string() ? ParseSubnet(item.as_string()->get()) : std::nullopt;
      if (!subnet) Fail(key, &item, "must be an array of subnets (like [\"198.18.1.0/24\", \"2001:db8::/32\"])");
      subnets.push_back(*subnet);
    }
    return subnets;
  }

  std::optional<std::chrono::milliseconds> Millis(std::string_view key, int64_t min, int64_t max) {
    auto value = Integer(key, min, max);
    if (!value) return std::nullopt;
    return std::chrono::milliseconds(*value);
  }

  const toml::table* SubTable(std::string_view key) {
    const toml::node* node = Get(key);
    if (!node) return nullptr;
    if (!node->is_table()) Fail(key, node, "must be a table");
    return node->as_table();
  }

  // Call when every known key was read.
  void RejectUnknownKeys() const {
    for (auto&& [key, node] : table_) {
      if (!seen_.count(std::string(key.str()))) {
        throw ConfigError{key.source().begin.line, Key(key.str()), "unknown key"};
      }
    }
  }

 private:
  const toml::table& table_;
  std::string path_;
  std::set<std::string> seen_;
};

inline bool Boolean(TableReader& r, std::string_view key, bool fallback) {
  const toml::node* node = r.Get(key);
  if (!node) return fallback;
  if (!node->is_boolean()) r.Fail(key, node, "must be true or false");
  return node->as_boolean()->get();
}

inline Subnet SubnetKey(TableReader& r, std::string_view key) {
  auto text = r.String(key);
  if (!text) return {};
  auto subnet = ParseSubnet(*text);
  if (!subnet) r.Fail(key, r.Get(key), "'" + *text + "' is not a subnet (like 198.18.1.0/24 or 2001:db8::/32)");
  return *subnet;
}

inline std::string ReadFileKey(TableReader& r, std::string_view key) {
  auto path = r.String(key);
  if (!path) return {};
  if (::access(path->c_str(), R_OK) != 0) r.Fail(key, r.Get(key), "cannot read '" + *path + "': " + std::strerror(errno));
  return *path;
}

// sections.cc: each reads its section into `config` (or returns it), throwing
// ConfigError at the first problem.
void ReadBox(TableReader& r, Config& config);
void ReadTimeouts(TableReader& r, Timeouts& t);
void ReadDatacenter(TableReader& r, Config& config);
void ReadDre(TableReader& r, Config& config);
void ReadWan(TableReader& r, Config& config);
void ReadStatus(TableReader& r, Config& config);
ForwardRule ReadForward(TableReader& r, const Config& config);
InpathRule ReadInpathRule(TableReader& r, const Config& config);
void ReadIntercept(TableReader& r, Config& config);
void ReadPeering(TableReader& r, Config& config);
void ReadWccp(TableReader& r, Config& config);  // wccp_section.cc
void WarnAboutIdleModules(TableReader& top, Config& config);
void ReadModuleSettings(TableReader& r, const toml::table& table, Config& config);

}  // namespace wanopt::config_internal
