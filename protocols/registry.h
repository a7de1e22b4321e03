// The registry of protocol modules, by name.
//
// Each module folder registers itself at static-initialization time with a
// ModuleRegistrar; the daemon core only ever looks names up here, so it names no
// concrete module. Registration happens before main(); lookups are then read-only
// and safe from any thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/module.h"

namespace wanopt::protocols {

using ModuleFactory = std::function<std::unique_ptr<Module>()>;
// Makes a module's box-wide part from its settings; nullptr and *error (one line,
// naming the setting) when they are wrong.
using BoxModuleFactory = std::function<std::unique_ptr<BoxModule>(const ModuleSettings&, std::string* error)>;

struct ModuleInfo {
  std::string name;         // as written in config and sent in the inner-channel hello
  std::string description;  // one line, for `wanopt --help`
  ModuleFactory create;
  BoxModuleFactory create_box = nullptr;  // null: no box-wide part, and no settings
  std::string registered_in;  // the source file of its ModuleRegistrar (set by it), for errors
};

// The box-wide parts of one daemon's modules, in the registry's order (the order
// in which they are asked about a new connection).
class BoxModules {
 public:
  struct Part {
    std::string name;
    std::unique_ptr<BoxModule> box;
  };
  // REQUIRES: parts are added in the registry's order, each name once.
  void Add(std::string name, std::unique_ptr<BoxModule> box) { parts_.push_back({std::move(name), std::move(box)}); }
  // nullptr when the module has no box-wide part here.
  BoxModule* Find(std::string_view name) const {
    for (const auto& part : parts_) {
      if (part.name == name) return part.box.get();
    }
    return nullptr;
  }
  const std::vector<Part>& parts() const { return parts_; }

 private:
  std::vector<Part> parts_;
};

class Registry {
 public:
  static Registry& Global();
  // A name that is not 1..32 characters of [a-z0-9_-], or one already registered,
  // is a programming error found before main(): it prints what is wrong (both
  // source files, for a name registered twice) and exits with status 1.
  void Add(ModuleInfo info);
  // nullptr when no module has that name.
  const ModuleInfo* Find(std::string_view name) const;
  const std::vector<ModuleInfo>& modules() const { return modules_; }
  // Every registered module's name, in registry order: the default module list of
  // rules and of a datacenter.
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& info : modules_) names.push_back(info.name);
    return names;
  }

 private:
  std::vector<ModuleInfo> modules_;
};

// Put one in an anonymous namespace in a module's .cc file, named by the module's
// wanopt_module(NAME ...) (protocols/module.cmake), so that a copied folder needs
// no edit here:
//   namespace { ModuleRegistrar registrar{{WANOPT_MODULE_NAME, "counts bytes", [] { return ...; }}}; }
struct ModuleRegistrar {
  // `file` defaults to the caller's file. __builtin_FILE() rather than
  // std::source_location, which libstdc++ does not offer to clang 14 (the fuzz build).
  explicit ModuleRegistrar(ModuleInfo info, const char* file = __builtin_FILE()) {
    info.registered_in = file;
    Registry::Global().Add(std::move(info));
  }
};

}  // namespace wanopt::protocols
