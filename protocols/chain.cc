#include "protocols/chain.h"

#include <exception>

#include "protocols/registry.h"
#include "util/log.h"

namespace wanopt::protocols {

class ModuleChain::Context final : public ModuleContext {
 public:
  Context(ModuleChain& chain, uint16_t slot) : chain_(chain), slot_(slot) {}
  const ConnectionInfo& connection() const override { return chain_.host_.connection(); }
  bool SendToPeer(std::span<const uint8_t> message) override {
    if (message.size() > kMaxPeerMessage || !(chain_.peer_slots_ >> slot_ & 1)) return false;
    return chain_.host_.SendModuleMessage(slot_, message);
  }
  void SetApplication(std::string_view name) override { chain_.host_.SetApplication(name); }
  void AddNote(std::string_view note) override { chain_.host_.AddNote(note); }
  BoxModule* box() override { return chain_.host_.BoxModuleFor(name_); }
  void set_name(std::string name) { name_ = std::move(name); }

 private:
  ModuleChain& chain_;
  uint16_t slot_;
  std::string name_;
};

struct ModuleChain::Entry {
  std::string name;
  uint16_t slot = 0;
  std::unique_ptr<Module> module;
  std::unique_ptr<Context> context;
  Buffer held[2];  // per direction: bytes a module asked to see again with more
  bool detached = false;
};

ModuleChain::ModuleChain(Host& host, const std::vector<std::string>& names) : host_(host) {
  for (size_t slot = 0; slot < names.size(); ++slot) {
    const ModuleInfo* info = Registry::Global().Find(names[slot]);
    if (info == nullptr) continue;
    auto entry = std::make_unique<Entry>();
    entry->name = info->name;
    entry->slot = static_cast<uint16_t>(slot);
    entry->module = info->create();
    entry->context = std::make_unique<Context>(*this, static_cast<uint16_t>(slot));
    entry->context->set_name(info->name);
    entries_.push_back(std::move(entry));
  }
}

ModuleChain::~ModuleChain() { Close(); }

void ModuleChain::Detach(Entry& entry, std::string_view why) {
  WANOPT_LOG(kWarn, "modules") << "connection " << host_.connection().id << ": module "
                               << entry.name << " detached: " << why;
  entry.detached = true;
}

void ModuleChain::Start() {
  for (auto& entry : entries_) {
    try {
      entry->module->OnNewConnection(*entry->context);
    } catch (const std::exception& e) {
      Detach(*entry, e.what());
    }
  }
}

bool ModuleChain::RunOne(Entry& entry, Direction direction, Buffer& data, bool end_stream) {
  Buffer& held = entry.held[static_cast<int>(direction)];
  if (entry.detached) return true;
  if (!held.empty()) {
    held.Append(data.span());
    data.Swap(held);
    held.Clear();
  }
  FilterStatus status;
  try {
    status = entry.module->OnData(direction, data, end_stream);
  } catch (const std::exception& e) {
    Detach(entry, e.what());
    return true;
  }
  if (status == FilterStatus::kContinue || end_stream) return true;
  if (data.size() > kMaxHeldBytes) {
    Detach(entry, "held more than 1 MiB waiting for a whole message");
    return true;
  }
  held.Swap(data);
  data.Clear();
  return false;
}

void ModuleChain::Process(Direction direction, Buffer& data, bool end_stream) {
  if (direction == Direction::kClientToServer) {
    for (auto& entry : entries_) {
      if (!RunOne(*entry, direction, data, end_stream)) return;
    }
  } else {
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
      if (!RunOne(**it, direction, data, end_stream)) return;
    }
  }
}

void ModuleChain::DeliverPeerMessage(uint16_t slot, std::span<const uint8_t> message) {
  for (auto& entry : entries_) {
    if (entry->slot != slot || entry->detached) continue;
    try {
      entry->module->OnPeerMessage(message);
    } catch (const std::exception& e) {
      Detach(*entry, e.what());
    }
    return;
  }
}

void ModuleChain::Close() {
  if (closed_) return;
  closed_ = true;
  for (auto& entry : entries_) {
    try {
      entry->module->OnClose();
    } catch (const std::exception& e) {
      Detach(*entry, e.what());
    }
  }
}

}  // namespace wanopt::protocols
