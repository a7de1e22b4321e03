#include "protocols/chain.h"

#include <algorithm>
#include <deque>
#include <exception>

#include <boost/asio/steady_timer.hpp>

#include "protocols/registry.h"
#include "util/log.h"

namespace wanopt::protocols {

namespace {
int Index(Direction direction) { return static_cast<int>(direction); }
constexpr Direction kDirections[] = {Direction::kClientToServer, Direction::kServerToClient};
}  // namespace

// One module's output in one direction that has not gone on yet: runs of bytes,
// each either held (until Release) or free (waiting only behind held bytes).
class ModuleChain::OutQueue {
 public:
  bool empty() const { return bytes_.empty(); }
  size_t size() const { return bytes_.size(); }
  size_t held() const { return held_; }

  void Add(std::span<const uint8_t> bytes, bool held) {
    if (bytes.empty()) return;
    bytes_.Append(bytes);
    if (!runs_.empty() && runs_.back().held == held) {
      runs_.back().length += bytes.size();
    } else {
      runs_.push_back({bytes.size(), held});
    }
    if (held) held_ += bytes.size();
  }

  // The first n held bytes become free (a run is split where n ends).
  void Release(size_t n) {
    for (size_t i = 0; i < runs_.size() && n > 0; ++i) {
      Run& run = runs_[i];
      if (!run.held) continue;
      if (run.length > n) {
        run.length -= n;
        runs_.insert(runs_.begin() + static_cast<ptrdiff_t>(i), Run{n, false});
        held_ -= n;
        return;
      }
      run.held = false;
      held_ -= run.length;
      n -= run.length;
    }
  }
  void ReleaseAll() { Release(held_); }

  // Appends the free bytes at the front to `to`.
  void TakeFree(Buffer& to) {
    size_t n = 0;
    while (!runs_.empty() && !runs_.front().held) {
      n += runs_.front().length;
      runs_.pop_front();
    }
    if (n == 0) return;
    if (to.empty() && n == bytes_.size()) {
      to.Swap(bytes_);
      bytes_.Clear();
      return;
    }
    to.Append(bytes_.span().first(n));
    bytes_.Consume(n);
  }

 private:
  struct Run {
    size_t length;
    bool held;
  };
  Buffer bytes_;
  std::deque<Run> runs_;
  size_t held_ = 0;
};

struct ModuleChain::Entry {
  std::string name;
  uint16_t slot = 0;
  std::unique_ptr<Module> module;
  std::unique_ptr<Context> context;
  Buffer stop[2];          // per direction: input a module asked to see again with more
  OutQueue out[2];         // per direction: output not passed on yet
  size_t emitted[2] = {0, 0};  // per direction: emitted since the host last drained it
  bool wants_drain[2] = {false, false};
  bool ended[2] = {false, false};  // saw end_stream
  size_t timers = 0;
  bool detached = false;
};

struct ModuleChain::Timer {
  Entry* entry;
  std::function<void()> fire;
  std::unique_ptr<boost::asio::steady_timer> timer;
};

class ModuleChain::Context final : public ModuleContext {
 public:
  Context(ModuleChain& chain, Entry& entry) : chain_(chain), entry_(entry) {}
  const ConnectionInfo& connection() const override { return chain_.host_.connection(); }
  bool SendToPeer(std::span<const uint8_t> message) override {
    if (message.size() > kMaxPeerMessage || !(chain_.peer_slots_ >> entry_.slot & 1)) return false;
    return chain_.host_.SendModuleMessage(entry_.slot, message);
  }
  void SetApplication(std::string_view name) override { chain_.host_.SetApplication(name); }
  void AddNote(std::string_view note) override { chain_.host_.AddNote(note); }
  void SetNote(std::string_view key, std::string_view note) override { chain_.host_.SetNote(key, note); }
  BoxModule* box() override { return chain_.host_.BoxModuleFor(entry_.name); }
  ResetHandle reset_handle() override { return chain_.host_.ResetHandle(); }

  bool CanEmit(Direction d) const override {
    return !chain_.closed_ && !entry_.detached && !entry_.ended[Index(d)] && chain_.host_.AcceptsModuleOutput(d);
  }
  bool Emit(Direction d, std::span<const uint8_t> bytes) override { return chain_.Emit(entry_, d, bytes); }
  bool Hold(Direction d, std::span<const uint8_t> bytes) override { return chain_.Hold(entry_, d, bytes); }
  size_t held(Direction d) const override { return entry_.out[Index(d)].held(); }
  void Release(Direction d, size_t n) override { chain_.Release(entry_, d, n); }
  uint64_t StartTimer(std::chrono::milliseconds delay, std::function<void()> fire) override {
    return chain_.StartTimer(entry_, delay, std::move(fire));
  }
  bool CancelTimer(uint64_t id) override { return chain_.CancelTimer(entry_, id); }

 private:
  ModuleChain& chain_;
  Entry& entry_;
};

ModuleChain::ModuleChain(Host& host, const std::vector<std::string>& names) : host_(host) {
  for (size_t slot = 0; slot < names.size(); ++slot) {
    const ModuleInfo* info = Registry::Global().Find(names[slot]);
    if (info == nullptr) continue;
    auto entry = std::make_unique<Entry>();
    entry->name = info->name;
    entry->slot = static_cast<uint16_t>(slot);
    entry->module = info->create();
    entry->context = std::make_unique<Context>(*this, *entry);
    entries_.push_back(std::move(entry));
  }
}

ModuleChain::~ModuleChain() { Close(); }

ModuleChain::Entry& ModuleChain::At(Direction direction, size_t position) {
  return direction == Direction::kClientToServer ? *entries_[position] : *entries_[entries_.size() - 1 - position];
}

void ModuleChain::Detach(Entry& entry, std::string_view why) {
  if (entry.detached) return;
  WANOPT_LOG(kWarn, "modules") << "connection " << host_.connection().id << ": module "
                               << entry.name << " detached: " << why;
  entry.detached = true;
  CancelTimers(&entry);
  // Nothing it held is lost: its output first, then the input it had not taken yet.
  for (int d = 0; d < 2; ++d) {
    entry.out[d].ReleaseAll();
    if (!entry.stop[d].empty()) {
      entry.out[d].Add(entry.stop[d].span(), false);
      entry.stop[d].Clear();
    }
    entry.wants_drain[d] = false;
  }
}

template <class Call>
void ModuleChain::CallModule(Entry& entry, Call call) {
  if (entry.detached || closed_) return;
  bool was_in_call = in_call_;
  in_call_ = true;
  try {
    call();
  } catch (const std::exception& e) {
    Detach(entry, e.what());
  }
  in_call_ = was_in_call;
  if (!in_call_) Pump();
}

void ModuleChain::Start() {
  for (auto& entry : entries_) {
    CallModule(*entry, [&] { entry->module->OnNewConnection(*entry->context); });
  }
}

void ModuleChain::RunOne(Entry& entry, Direction direction, Buffer& data, bool end_stream) {
  int d = Index(direction);
  OutQueue& out = entry.out[d];
  if (!entry.detached) {
    Buffer& stop = entry.stop[d];
    if (!stop.empty()) {
      stop.Append(data.span());
      data.Swap(stop);
      stop.Clear();
    }
    FilterStatus status = FilterStatus::kContinue;
    try {
      status = entry.module->OnData(direction, data, end_stream);
    } catch (const std::exception& e) {
      Detach(entry, e.what());
    }
    if (!entry.detached && status == FilterStatus::kStopIteration && !end_stream) {
      if (data.size() > kMaxHeldBytes) {
        Detach(entry, "held more than 1 MiB waiting for a whole message");
      } else {
        stop.Swap(data);
        data.Clear();
      }
    }
  }
  // What it passes on follows what it emitted or holds: through the queue, unless
  // the queue is empty (then it goes on as it is, uncopied).
  if (!out.empty()) {
    out.Add(data.span(), false);
    data.Clear();
    if (out.size() > kMaxHeldBytes && !entry.detached) Detach(entry, "queued more than 1 MiB behind held bytes");
  }
  if (end_stream) {
    // Set after the call, so that a module may still emit or hold in its end_stream
    // call; nothing stays held past the end.
    entry.ended[d] = true;  // a detached module too: the end passes each module once
    out.ReleaseAll();
  }
}

bool ModuleChain::Pass(Direction direction, Buffer* input) {
  int d = Index(direction);
  bool moved = false;
  Buffer carry;
  if (input != nullptr) carry.Swap(*input);
  for (size_t position = 0; position < entries_.size(); ++position) {
    Entry& entry = At(direction, position);
    // Once end_stream entered, every module sees it once, right after all the
    // bytes before it; nothing is held past the end.
    bool end_here = ending_[d] && !entry.ended[d];
    if (!carry.empty() || end_here) {
      RunOne(entry, direction, carry, end_here);
      moved = true;
    }
    if (ending_[d]) entry.out[d].ReleaseAll();
    entry.out[d].TakeFree(carry);
  }
  if (!carry.empty()) {
    Sink(direction, carry);
    moved = true;
  }
  return moved;
}

void ModuleChain::Sink(Direction direction, Buffer& bytes) {
  int d = Index(direction);
  if (process_out_[d] != nullptr) {
    Buffer& out = *process_out_[d];
    if (out.empty()) {
      out.Swap(bytes);
    } else {
      out.Append(bytes.span());
    }
  } else if (pending_[d].empty() && host_.AcceptsModuleOutput(direction)) {
    host_.ModuleOutput(direction, bytes.span());
  } else {
    // Bytes the host cannot take now (a host without v2: only a detached module's
    // bytes; or an output that closed since they were queued) wait for its next
    // Process(direction), in order.
    pending_[d].Append(bytes.span());
  }
  bytes.Clear();
}

void ModuleChain::Pump(Direction direction, Buffer* input) {
  if (pumping_) return;  // the running pump picks up what was queued
  pumping_ = true;
  if (input != nullptr) Pass(direction, input);
  // Whatever a module did may have queued bytes in either direction: go round until
  // nothing moves (the emit budgets bound how long modules can keep each other busy).
  bool moved = true;
  while (moved) {
    moved = false;
    for (Direction each : kDirections) {
      if (drained_[Index(each)]) {
        drained_[Index(each)] = false;
        NotifyDrained(each);
        moved = true;
      }
    }
    moved |= Pass(Direction::kClientToServer, nullptr);
    moved |= Pass(Direction::kServerToClient, nullptr);
  }
  pumping_ = false;
}

void ModuleChain::PumpIfIdle() {
  if (!pumping_ && !in_call_) Pump();
}

void ModuleChain::Process(Direction direction, Buffer& data, bool end_stream) {
  int d = Index(direction);
  if (closed_ || entries_.empty()) return;  // after OnClose no module sees bytes
  // Called back from a Host method (a broken REQUIRES): leave the bytes as they are
  // rather than lose them.
  if (pumping_) return;
  Buffer result;
  result.Swap(pending_[d]);
  process_out_[d] = &result;
  if (end_stream) ending_[d] = true;
  Pump(direction, &data);
  process_out_[d] = nullptr;
  data.Swap(result);
}

void ModuleChain::DeliverPeerMessage(uint16_t slot, std::span<const uint8_t> message) {
  for (auto& entry : entries_) {
    if (entry->slot != slot) continue;
    CallModule(*entry, [&] { entry->module->OnPeerMessage(message); });
    return;
  }
}

void ModuleChain::OutputDrained(Direction direction) {
  if (closed_) return;
  if (pumping_ || in_call_) {
    drained_[Index(direction)] = true;  // handled when the running pump loops
    return;
  }
  NotifyDrained(direction);
  Pump();
}

void ModuleChain::NotifyDrained(Direction direction) {
  int d = Index(direction);
  for (auto& entry : entries_) {
    entry->emitted[d] = 0;
    if (!entry->wants_drain[d] || entry->detached) continue;
    entry->wants_drain[d] = false;
    bool was_in_call = in_call_;
    in_call_ = true;
    try {
      entry->module->OnOutputDrained(direction);
    } catch (const std::exception& e) {
      Detach(*entry, e.what());
    }
    in_call_ = was_in_call;
  }
}

void ModuleChain::Close() {
  if (closed_) return;
  closed_ = true;
  CancelTimers(nullptr);
  for (auto& entry : entries_) {
    try {
      entry->module->OnClose();
    } catch (const std::exception& e) {
      Detach(*entry, e.what());
    }
  }
}

size_t ModuleChain::queued_bytes() const {
  size_t n = pending_[0].size() + pending_[1].size();
  for (const auto& entry : entries_) {
    for (int d = 0; d < 2; ++d) n += entry->stop[d].size() + entry->out[d].size();
  }
  return n;
}

// ---- v2 calls from modules ----

bool ModuleChain::Emit(Entry& entry, Direction direction, std::span<const uint8_t> bytes) {
  int d = Index(direction);
  if (!entry.context->CanEmit(direction)) return false;
  if (bytes.size() > kMaxEmitBytes - entry.emitted[d]) {
    entry.wants_drain[d] = true;
    return false;
  }
  // Emitted bytes wait behind held ones: the queue may then hold both bounds' worth.
  if (entry.out[d].size() + bytes.size() > kMaxHeldBytes + kMaxEmitBytes) return false;
  entry.emitted[d] += bytes.size();
  entry.out[d].Add(bytes, false);
  PumpIfIdle();
  return true;
}

bool ModuleChain::Hold(Entry& entry, Direction direction, std::span<const uint8_t> bytes) {
  int d = Index(direction);
  if (!entry.context->CanEmit(direction)) return false;
  if (entry.out[d].size() + bytes.size() > kMaxHeldBytes) return false;
  entry.out[d].Add(bytes, true);
  return true;
}

void ModuleChain::Release(Entry& entry, Direction direction, size_t n) {
  entry.out[Index(direction)].Release(n);
  PumpIfIdle();
}

uint64_t ModuleChain::StartTimer(Entry& entry, std::chrono::milliseconds delay, std::function<void()> fire) {
  if (closed_ || entry.detached || !fire || entry.timers >= kMaxTimers) return 0;
  std::optional<boost::asio::any_io_executor> executor = host_.ModuleExecutor();
  if (!executor) return 0;
  uint64_t id = ++next_timer_id_;
  auto timer = std::make_unique<Timer>();
  timer->entry = &entry;
  timer->fire = std::move(fire);
  timer->timer = std::make_unique<boost::asio::steady_timer>(*executor, delay);
  // The error code does not matter: a timer cancelled (or whose chain died) is no
  // longer in timers_, even when its handler was already queued.
  timer->timer->async_wait([alive = std::weak_ptr<char>(alive_), this, id](boost::system::error_code) {
    if (alive.expired()) return;
    FireTimer(id);
  });
  timers_.emplace(id, std::move(timer));
  ++entry.timers;
  return id;
}

bool ModuleChain::CancelTimer(Entry& entry, uint64_t id) {
  auto it = timers_.find(id);
  if (it == timers_.end() || it->second->entry != &entry) return false;
  timers_.erase(it);  // the steady_timer's destructor cancels its wait
  --entry.timers;
  return true;
}

void ModuleChain::FireTimer(uint64_t id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  Entry& entry = *it->second->entry;
  std::function<void()> fire = std::move(it->second->fire);
  timers_.erase(it);
  --entry.timers;
  CallModule(entry, fire);
}

void ModuleChain::CancelTimers(const Entry* entry) {
  for (auto it = timers_.begin(); it != timers_.end();) {
    if (entry == nullptr || it->second->entry == entry) {
      --it->second->entry->timers;
      it = timers_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace wanopt::protocols
