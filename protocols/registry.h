// The registry of protocol modules, by name.
//
// Each module folder registers itself at static-initialization time with a
// ModuleRegistrar; the daemon core only ever looks names up here, so it names no
// concrete module. Registration happens before main(); lookups are then read-only
// and safe from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/module.h"

namespace wanopt::protocols {

using ModuleFactory = std::function<std::unique_ptr<Module>()>;

struct ModuleInfo {
  std::string name;         // as written in config and sent in the inner-channel hello
  std::string description;  // one line, for `wanopt --help`
  ModuleFactory create;
};

class Registry {
 public:
  static Registry& Global();
  // REQUIRES: name unique, 1..32 characters of [a-z0-9_-].
  void Add(ModuleInfo info);
  // nullptr when no module has that name.
  const ModuleInfo* Find(std::string_view name) const;
  const std::vector<ModuleInfo>& modules() const { return modules_; }

 private:
  std::vector<ModuleInfo> modules_;
};

// Put one at namespace scope in a module's .cc file:
//   static ModuleRegistrar registrar{{"bytecount", "counts bytes", [] { return ...; }}};
struct ModuleRegistrar {
  explicit ModuleRegistrar(ModuleInfo info) { Registry::Global().Add(std::move(info)); }
};

}  // namespace wanopt::protocols
