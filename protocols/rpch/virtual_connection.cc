#include "protocols/rpch/virtual_connection.h"

#include <algorithm>
#include <charconv>
#include <utility>

namespace wanopt::protocols::rpch {
namespace {

using boost::asio::ip::tcp;

// Channels a virtual connection remembers (live ones and the last few ended): a
// client recycling forever must not grow it.
constexpr size_t kMaxChannels = 8;
constexpr size_t kMaxRecyclesShown = 3;

std::optional<uint64_t> Number(const std::string& text, uint64_t min, uint64_t max) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) return std::nullopt;
  return value;
}

}  // namespace

std::string_view ChannelName(ChannelType type) { return type == ChannelType::kIn ? "IN" : "OUT"; }

void VirtualConnection::Join(uint64_t connection, ChannelType type, const Uuid& channel,
                             std::optional<Uuid> predecessor, ModuleContext::ResetHandle reset) {
  std::lock_guard lock(mu_);
  for (auto& c : channels_) {
    if (c.connection == connection) return;  // one channel per connection: the first announcement counts
  }
  if (predecessor) {
    for (auto& c : channels_) {
      if (c.cookie == *predecessor && c.type == type) {
        c.replaced = true;
        ++recycle_count_;
        recycles_.push_back(std::string(ChannelName(type)) + " #" + std::to_string(c.connection) + " -> #" +
                            std::to_string(connection));
        if (recycles_.size() > kMaxRecyclesShown) recycles_.erase(recycles_.begin());
      }
    }
  }
  if (channels_.size() >= kMaxChannels) {
    auto ended = std::find_if(channels_.begin(), channels_.end(), [](const Channel& c) { return !c.live; });
    if (ended != channels_.end()) channels_.erase(ended);
  }
  channels_.push_back({connection, type, channel, true, false, std::move(reset)});
  ++version_;
}

std::vector<ModuleContext::ResetHandle> VirtualConnection::Leave(uint64_t connection, bool clean, std::string* why) {
  std::lock_guard lock(mu_);
  auto it = std::find_if(channels_.begin(), channels_.end(), [&](const Channel& c) { return c.connection == connection; });
  if (it == channels_.end() || !it->live) return {};
  it->live = false;
  it->reset = nullptr;
  ++version_;
  if (clean || it->replaced) return {};
  // Each of them is reset once: the reset handle is used up here, so that their own
  // Leave, when the reset arrives, finds nobody left to reset.
  std::vector<ModuleContext::ResetHandle> resets;
  for (auto& c : channels_) {
    if (c.live && c.reset) resets.push_back(std::exchange(c.reset, nullptr));
  }
  if (!resets.empty() && why) {
    *why = "rpch: virtual connection " + cookie_.ToString() + " lost its " + std::string(ChannelName(it->type)) +
           " channel (connection #" + std::to_string(connection) + " reset): this channel is reset too";
  }
  return resets;
}

bool VirtualConnection::Paired(uint64_t connection) const {
  std::lock_guard lock(mu_);
  auto self = std::find_if(channels_.begin(), channels_.end(), [&](const Channel& c) { return c.connection == connection; });
  if (self == channels_.end()) return false;
  return std::any_of(channels_.begin(), channels_.end(), [&](const Channel& c) { return c.type != self->type; });
}

void VirtualConnection::SetBinding(std::string application, std::set<std::string> interfaces) {
  std::lock_guard lock(mu_);
  if (application == application_ && interfaces == interfaces_) return;
  application_ = std::move(application);
  interfaces_ = std::move(interfaces);
  ++version_;
}

std::string VirtualConnection::ChannelsLocked() const {
  std::string text;
  for (ChannelType type : {ChannelType::kIn, ChannelType::kOut}) {
    std::string live;
    for (const auto& c : channels_) {
      // Ended channels stay named: the line of a closed channel still says who its
      // partner was.
      if (c.type == type) live += (live.empty() ? " #" : ", #") + std::to_string(c.connection);
    }
    text += std::string(type == ChannelType::kIn ? "" : ", ") + std::string(ChannelName(type)) +
            (live.empty() ? " (none)" : live);
  }
  if (!interfaces_.empty()) {
    text += "; bound:";
    for (const auto& i : interfaces_) text += " " + i;
  }
  if (recycle_count_) {
    text += "; recycled " + std::to_string(recycle_count_) + "x (";
    for (size_t i = 0; i < recycles_.size(); ++i) text += (i ? ", " : "") + recycles_[i];
    text += ")";
  }
  return text;
}

VirtualConnection::Snapshot VirtualConnection::snapshot() const {
  std::lock_guard lock(mu_);
  return {version_, application_, ChannelsLocked(), recycle_count_};
}

std::optional<RpchSettings> ParseRpchSettings(const ModuleSettings& settings, std::string* error) {
  RpchSettings s;
  for (const auto& [key, value] : settings) {
    if (key == "ports") {
      s.ports.clear();
      size_t start = 0;
      while (start <= value.size() && !value.empty()) {
        size_t comma = std::min(value.find(',', start), value.size());
        std::string text = value.substr(start, comma - start);
        auto port = Number(text, 1, 65535);
        if (!port) { *error = "ports: '" + text + "' is not a port"; return std::nullopt; }
        s.ports.insert(static_cast<uint16_t>(*port));
        start = comma + 1;
      }
      if (s.ports.empty()) { *error = "ports: give at least one port"; return std::nullopt; }
    } else if (key == "admission_channels") {
      auto n = Number(value, 0, 10'000'000);
      if (!n) { *error = "admission_channels: '" + value + "' is not a count"; return std::nullopt; }
      s.admission_channels = *n;
    } else if (key == "pairing_timeout_ms") {
      auto n = Number(value, 100, 600'000);
      if (!n) { *error = "pairing_timeout_ms: '" + value + "' is not 100..600000"; return std::nullopt; }
      s.pairing_timeout = std::chrono::milliseconds(*n);
    } else if (key == "affinity_ttl_s") {
      auto n = Number(value, 1, 86400);
      if (!n) { *error = "affinity_ttl_s: '" + value + "' is not 1..86400"; return std::nullopt; }
      s.affinity_ttl = std::chrono::seconds(*n);
    } else {
      *error = key + ": unknown setting (ports, admission_channels, pairing_timeout_ms, affinity_ttl_s)";
      return std::nullopt;
    }
  }
  return s;
}

FlowAdvice RpchBox::OnNewFlow(const tcp::endpoint& client, const tcp::endpoint& server) {
  if (!settings_.ports.count(server.port())) return {};
  auto now = Clock::now();
  std::lock_guard lock(mu_);
  AffinityTable::Entry& a = sessions_.At(client.address(), server.address(), now);
  if (a.expires < now) a.pass_through = channels.load() >= settings_.admission_channels;
  // Every connection of the session keeps it alive: its channels, their recycled
  // successors and the client's next session decide alike.
  a.expires = now + settings_.affinity_ttl;
  if (a.pass_through) {
    return {true,
            "rpch admission control: " + std::to_string(channels.load()) + " RPC over HTTP channels on this box (limit " +
                std::to_string(settings_.admission_channels) + "): this client's session with this server passes through whole",
            std::nullopt};
  }
  return {};
}

std::vector<ModuleTable> RpchBox::Tables() const {
  ModuleTable t{"virtual_connections", {{"cookie"}, {"application"}, {"channels"}, {"recycles", true}}, {}};
  for (const auto& vc : virtual_connections_.Live(4096)) {
    VirtualConnection::Snapshot s = vc->snapshot();
    t.rows.push_back({vc->cookie().ToString(), s.application.empty() ? "-" : s.application, s.channels,
                      std::to_string(s.recycles)});
  }
  return {std::move(t)};
}

std::vector<std::pair<std::string, uint64_t>> RpchBox::Gauges() const {
  return {{"channels", channels.load()},
          {"virtual_connections", virtual_connections_.size()},
          {"mapi_http_connections", mapi_http.load()},
          {"recycles", recycles.load()},
          {"partner_resets", partner_resets.load()},
          {"pairing_resets", pairing_resets.load()}};
}

}  // namespace wanopt::protocols::rpch
