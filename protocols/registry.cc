#include "protocols/registry.h"

#include <cstdio>
#include <cstdlib>

namespace wanopt::protocols {

Registry& Registry::Global() {
  static Registry registry;
  return registry;
}

void Registry::Add(ModuleInfo info) {
  bool valid_name = !info.name.empty() && info.name.size() <= 32;
  for (char c : info.name) {
    valid_name &= (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  }
  if (!valid_name || Find(info.name) != nullptr) {
    // A programming error in a module folder, found before main() runs.
    std::fprintf(stderr, "wanopt: protocol module name '%s' is invalid or registered twice\n",
                 info.name.c_str());
    std::abort();
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
