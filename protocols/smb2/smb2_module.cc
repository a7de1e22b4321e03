// The smb2 module: SMB2/3 read-ahead on the module interface (README.md says how
// and why). On the datacenter box a Prefetcher reads ahead of serial readers; on
// the branch box an AnswerCache answers the client's READs from what arrived. Both
// walk their connection's directions with a FrameStream each. Connections to other
// ports than `ports` are left alone, byte for byte.
//
// [modules.smb2] settings:
//   read_ahead = true            false: SMB connections get DRE/LZ only
//   ports = ["445", "139"]       the server ports the module looks at
//   max_ahead_mb = 8             bytes read ahead and not yet used, per file
//   branch_memory_mb = 64        answers kept at a branch, all connections together
#include <atomic>
#include <memory>
#include <set>
#include <string>

#include "protocols/registry.h"
#include "protocols/smb2/answer_cache.h"
#include "protocols/smb2/frame_stream.h"
#include "protocols/smb2/prefetcher.h"
#include "protocols/smb2/twin.h"

namespace wanopt::protocols::smb2 {
namespace {

struct Settings {
  bool read_ahead = true;
  std::set<uint16_t> ports{445, 139};
  uint64_t max_ahead = 8 << 20;
  uint64_t branch_memory = 64 << 20;
};

class Box final : public BoxModule {
 public:
  explicit Box(Settings settings) : settings(std::move(settings)) {}
  FlowAdvice OnNewFlow(const boost::asio::ip::tcp::endpoint&, const boost::asio::ip::tcp::endpoint&) override {
    return {};
  }
  std::vector<std::pair<std::string, uint64_t>> Gauges() const override {
    return {{"kept_bytes", kept.load()}, {"connections", connections.load()}};
  }
  const Settings settings;
  std::atomic<uint64_t> kept{0};         // answers kept by this box's branch connections
  std::atomic<uint64_t> connections{0};  // SMB connections the module looks at now
};

std::string Mib(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

// File names as the status page shows them: printable ASCII, the rest escaped.
std::string Escaped(std::string_view name) {
  std::string out;
  for (unsigned char c : name) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

class Smb2 final : public Module, public Prefetcher::Sink, public AnswerCache::Sink {
 public:
  void OnNewConnection(ModuleContext& context) override {
    context_ = &context;
    auto* box = dynamic_cast<Box*>(context.box());
    Settings settings = box ? box->settings : Settings{};
    const ConnectionInfo& c = context.connection();
    if (!settings.ports.count(c.server.port())) return;  // not SMB: untouched
    active_ = true;
    if (box) {
      box_ = box;
      ++box->connections;
    }
    if (c.side == Side::kDatacenter) {
      ReadAheadLimits limits;
      limits.max_ahead_per_file = settings.max_ahead;
      prefetcher_ = std::make_unique<Prefetcher>(*this, limits);
      if (!settings.read_ahead) prefetcher_->StepAside("read_ahead = false in [modules.smb2]");
      // Answers read ahead must reach a twin that takes them out of the stream.
      else if (!context.SendToPeer(twin::Epoch(0, ~uint64_t{0}))) prefetcher_->StepAside("the branch box does not run smb2");
    } else {
      cache_ = std::make_unique<AnswerCache>(*this, box ? &box->kept : nullptr, settings.branch_memory);
    }
  }

  FilterStatus OnData(Direction direction, Buffer& data, bool end_stream) override {
    if (!active_) return FilterStatus::kContinue;
    int d = static_cast<int>(direction);
    FrameStream& stream = streams_[d];
    if (stream.raw() && stream.buffered() == 0) return FilterStatus::kContinue;
    Buffer out(data.size() + 256);
    in_push_[d] = true;
    stream.Push(data.span(), *owners_[d], out);
    if (end_stream) stream.Finish(out);
    in_push_[d] = false;
    data.Swap(out);
    Report();
    return FilterStatus::kContinue;
  }

  void OnPeerMessage(std::span<const uint8_t> message) override {
    if (prefetcher_) prefetcher_->OnTwinMessage(message);
    if (cache_) cache_->OnTwinMessage(message);
    Report();
  }

  void OnOutputDrained(Direction direction) override {
    int d = static_cast<int>(direction);
    if (streams_[d].at_boundary()) Emit(direction, streams_[d].TakeInserts());
  }

  void OnClose() override {
    Report();
    active_ = false;
    cache_.reset();  // its kept answers go back to the box's budget now
    if (box_) --box_->connections;
    box_ = nullptr;
  }
  ~Smb2() override {
    if (box_) --box_->connections;
  }

  // ---- Prefetcher::Sink and AnswerCache::Sink ----

  void ToServer(std::span<const uint8_t> frame) override { Out(Direction::kClientToServer, frame); }
  void ToClient(std::span<const uint8_t> frame) override { Out(Direction::kServerToClient, frame); }
  void ToTwin(std::span<const uint8_t> message) override { context_->SendToPeer(message); }
  void Note(std::string_view note) override { context_->AddNote(note); }

 private:
  // Bytes of the module's own go between two frames of their direction: into the
  // stream being walked now, or emitted at once when the direction is between
  // frames; else they wait for the frame in passage to end.
  void Out(Direction direction, std::span<const uint8_t> frame) {
    int d = static_cast<int>(direction);
    if (in_push_[d] || !streams_[d].at_boundary()) {
      streams_[d].Insert(frame);
      return;
    }
    std::vector<uint8_t> bytes = streams_[d].TakeInserts();
    bytes.insert(bytes.end(), frame.begin(), frame.end());
    Emit(direction, std::move(bytes));
  }
  // Emitted now, or kept for OnOutputDrained (the emit budget) or the next Push.
  void Emit(Direction direction, std::vector<uint8_t> bytes) {
    if (bytes.empty()) return;
    if (!context_->Emit(direction, bytes)) streams_[static_cast<int>(direction)].Insert(bytes);
  }

  void Report() {
    std::string_view application;
    std::string figures;
    uint16_t dialect = prefetcher_ ? prefetcher_->dialect() : cache_ ? cache_->dialect() : 0;
    if (dialect != 0 && dialect != reported_dialect_ && !DialectName(dialect).empty()) {
      reported_dialect_ = dialect;
      context_->SetNote("dialect ", "dialect " + std::string(DialectName(dialect)));
    }
    if (prefetcher_) {
      application = prefetcher_->application();
      const ReadAheadFigures& f = prefetcher_->figures();
      if (f.predicted > 0) {
        figures = "read-ahead: " + std::to_string(f.predicted) + " READs sent ahead (" + Mib(f.predicted_bytes) +
                  "), " + std::to_string(f.served) + " answered at the branch (" + Mib(f.served_bytes) + "), " +
                  std::to_string(f.abandoned) + " abandoned";
      }
      if (prefetcher_->opened_count() != reported_opened_) {
        reported_opened_ = prefetcher_->opened_count();
        std::string names;
        for (const auto& n : prefetcher_->opened()) names += (names.empty() ? "" : ", ") + (n.empty() ? "(the share)" : Escaped(n));
        if (reported_opened_ > prefetcher_->opened().size()) {
          names += " and " + std::to_string(reported_opened_ - prefetcher_->opened().size()) + " more";
        }
        context_->SetNote("files opened:", "files opened: " + names);
      }
    } else if (cache_) {
      uint16_t dialect = cache_->dialect();
      if (dialect != 0) application = dialect >= 0x0300 && dialect != 0x02FF ? "SMB3" : "SMB2";
      const AnswerFigures& f = cache_->figures();
      if (f.predicted > 0) {
        figures = "read-ahead: " + std::to_string(f.served) + " of " + std::to_string(f.predicted) +
                  " READs read ahead answered here (" + Mib(f.served_bytes) + "), hit rate " +
                  std::to_string(f.served * 100 / f.predicted) + "%";
      }
    }
    if (!application.empty() && application != reported_application_) {
      reported_application_ = application;
      context_->SetApplication(application);
    }
    if (!figures.empty() && figures != reported_figures_) {
      reported_figures_ = figures;
      context_->SetNote("read-ahead:", figures);
    }
  }

  struct ClientSide final : FrameStream::Owner {
    explicit ClientSide(Smb2& m) : m(m) {}
    FrameStream::Verdict OnFrame(FrameStream::Head head) override {
      if (m.prefetcher_) return m.prefetcher_->OnClientFrame(head);
      return m.cache_->OnClientFrame(head);
    }
    void OnLaterHeader(std::span<uint8_t> header) override {
      if (m.prefetcher_) m.prefetcher_->OnClientLaterHeader(header);
    }
    void OnTaken(std::vector<uint8_t>) override {}  // never takes
    void OnMalformed(std::string_view reason) override {
      if (m.prefetcher_) m.prefetcher_->OnMalformed(reason);
    }
    Smb2& m;
  };
  struct ServerSide final : FrameStream::Owner {
    explicit ServerSide(Smb2& m) : m(m) {}
    FrameStream::Verdict OnFrame(FrameStream::Head head) override {
      if (m.prefetcher_) return m.prefetcher_->OnServerFrame(head);
      return m.cache_->OnServerFrame(head);
    }
    void OnLaterHeader(std::span<uint8_t> header) override {
      if (m.prefetcher_) m.prefetcher_->OnServerLaterHeader(header);
    }
    void OnTaken(std::vector<uint8_t> frame) override {
      if (m.cache_) m.cache_->OnTaken(std::move(frame));
    }
    void OnMalformed(std::string_view reason) override {
      if (m.prefetcher_) m.prefetcher_->OnMalformed(reason);
    }
    Smb2& m;
  };

  ModuleContext* context_ = nullptr;
  Box* box_ = nullptr;
  bool active_ = false;
  std::unique_ptr<Prefetcher> prefetcher_;  // datacenter
  std::unique_ptr<AnswerCache> cache_;      // branch
  FrameStream streams_[2];                  // by Direction
  ClientSide client_side_{*this};
  ServerSide server_side_{*this};
  FrameStream::Owner* owners_[2] = {&client_side_, &server_side_};
  bool in_push_[2] = {false, false};
  std::string_view reported_application_;
  std::string reported_figures_;
  uint64_t reported_opened_ = 0;
  uint16_t reported_dialect_ = 0;
};

std::optional<Settings> ParseSettings(const ModuleSettings& settings, std::string* error) {
  Settings s;
  for (const auto& [key, value] : settings) {
    if (key == "read_ahead") {
      if (value != "true" && value != "false") {
        *error = "read_ahead: '" + value + "' is not true or false";
        return std::nullopt;
      }
      s.read_ahead = value == "true";
    } else if (key == "ports") {
      s.ports.clear();
      size_t at = 0;
      while (at <= value.size()) {
        size_t comma = value.find(',', at);
        std::string port = value.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
        char* end = nullptr;
        long n = std::strtol(port.c_str(), &end, 10);
        if (port.empty() || *end != '\0' || n < 1 || n > 65535) {
          *error = "ports: '" + port + "' is not a port";
          return std::nullopt;
        }
        s.ports.insert(static_cast<uint16_t>(n));
        if (comma == std::string::npos) break;
        at = comma + 1;
      }
    } else if (key == "max_ahead_mb" || key == "branch_memory_mb") {
      char* end = nullptr;
      long n = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || n < 1 || n > 4096) {
        *error = key + ": '" + value + "' is not a number of MiB from 1 to 4096";
        return std::nullopt;
      }
      (key == "max_ahead_mb" ? s.max_ahead : s.branch_memory) = static_cast<uint64_t>(n) << 20;
    } else {
      *error = "unknown setting '" + key + "' (known: read_ahead, ports, max_ahead_mb, branch_memory_mb)";
      return std::nullopt;
    }
  }
  return s;
}

ModuleRegistrar registrar{{
    WANOPT_MODULE_NAME,
    "SMB2/3 read-ahead: the datacenter reads ahead of serial readers, the branch answers their READs",
    [] { return std::make_unique<Smb2>(); },
    [](const ModuleSettings& settings, std::string* error) -> std::unique_ptr<BoxModule> {
      auto parsed = ParseSettings(settings, error);
      if (!parsed) return nullptr;
      return std::make_unique<Box>(std::move(*parsed));
    },
}};

}  // namespace
}  // namespace wanopt::protocols::smb2
