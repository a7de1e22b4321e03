#include "protocols/registry.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace wanopt::protocols {
namespace {

// "/work/src/protocols/mapi/mapi.cc" -> "protocols/mapi/mapi.cc": short, and the
// same on every build machine.
std::string SourcePath(const std::string& file) {
  size_t at = file.rfind("protocols/");
  return at == std::string::npos ? (file.empty() ? "unknown file" : file) : file.substr(at);
}

}  // namespace

Registry& Registry::Global() {
  static Registry registry;
  return registry;
}

void Registry::Add(ModuleInfo info) {
  bool valid_name = !info.name.empty() && info.name.size() <= 32;
  for (char c : info.name) {
    valid_name &= (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  }
  // Programming errors in a module folder, found before main() runs: say which
  // files, and stop without a core dump.
  if (!valid_name) {
    std::fprintf(stderr, "wanopt: protocol module name '%s' (%s) is invalid: 1..32 characters of [a-z0-9_-]\n",
                 info.name.c_str(), SourcePath(info.registered_in).c_str());
    std::exit(1);
  }
  if (const ModuleInfo* earlier = Find(info.name)) {
    std::fprintf(stderr,
                 "wanopt: protocol module '%s' is registered twice, by %s and by %s "
                 "(a copied module folder needs its own NAME in its CMakeLists.txt)\n",
                 info.name.c_str(), SourcePath(earlier->registered_in).c_str(),
                 SourcePath(info.registered_in).c_str());
    std::exit(1);
  }
  modules_.push_back(std::move(info));
}

const ModuleInfo* Registry::Find(std::string_view name) const {
  for (const auto& info : modules_) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

}  // namespace wanopt::protocols
