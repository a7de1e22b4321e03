// dre_bench: the DRE benchmark of the DRE and LZ issue, in one run.
//
// Every workload goes through a real pair in this process: a datacenter Daemon
// ([datacenter] on 127.0.0.1:0) and a branch Daemon whose rule 0 (policy F) and rule 1
// (policy T, TCP only) forward to a lab::EchoOrigin through that datacenter. Both
// daemons have a chunk store in a fresh temporary directory (a fresh pair per
// workload). The origin echoes every byte back, so one transfer moves the payload in
// both directions; LAN and WAN bytes are the branch daemon's counters
// (lan_in + lan_out, wan_in + wan_out) read once both daemons have no active
// session, and the one-direction view comes from the branch's per-connection
// records: client->server = lan_in read from the client, wan_out sent on the inner
// channel; server->client = wan_in, lan_out.
//
// The same bytes are measured against zstd -3 (libzstd, ZSTD_compress level 3, one
// call per file or message), against the TCP-only rule of the same pair (throughput),
// and, for the random workload, against a two-hop socat chain.
//
// Workloads (deterministic data): 1 random, 2 real text, 3 one text sent twice,
// 4 a text then an edited copy (1% of bytes), 5 one attachment in 8 MIME messages,
// 6 thousands of small messages on one connection and on a connection each; plus
// socket-free microbenchmarks of the codec (wanopt/dre/codec.h) with real chunk
// stores.
//
// Usage: dre_bench [--quick] [--out DIR]
// Writes DIR/dre.json and DIR/dre.md (default: tests/bench/results/) and prints the
// table. MB = 10^6 bytes, GB = 10^9 bytes, MiB = 2^20 bytes.
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "datastore/chunk_store.h"
#include "tests/bench/workloads.h"
#include "wanopt/channel/hello.h"
#include "wanopt/daemon/daemon.h"
#include "wanopt/dre/codec.h"
#include "wanopt/dre/peer_table.h"
#include "wanopt/lab/echo.h"
#include "util/log.h"

namespace {

namespace fs = std::filesystem;
using namespace wanopt;
using boost::asio::ip::tcp;
using wanopt::bench::Bytes;
using wanopt::bench::Edit;
using wanopt::bench::EditStats;
using wanopt::bench::RandomBytes;
using wanopt::bench::SplitMix;
using Clock = std::chrono::steady_clock;

constexpr size_t kMiB = 1024 * 1024;

// Quoted in the issue for WANProxy's XCodec; not measured here.
constexpr double kXcodecSecondPass = 98.7;
constexpr double kXcodecEdit = 93.4;
constexpr double kXcodecMails = 97.4;

// ---------------------------------------------------------------- small helpers

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

double CpuSeconds(int who) {
  rusage u{};
  getrusage(who, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

std::string RunCommand(const std::string& command) {
  std::string out;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[512];
    while (fgets(buffer, sizeof buffer, pipe)) out += buffer;
    pclose(pipe);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string ReadFileText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

std::string Num(double v, int decimals = 1) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Pct(double percent, int decimals = 2) { return Num(percent, decimals) + "%"; }

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

// Grouped thousands: 268,435,456.
std::string Count(uint64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// A JSON object built in insertion order.
class Json {
 public:
  Json& Raw(const std::string& key, const std::string& raw) {
    items_.emplace_back(key, raw);
    return *this;
  }
  Json& Str(const std::string& key, const std::string& v) { return Raw(key, Quote(v)); }
  Json& Int(const std::string& key, uint64_t v) { return Raw(key, std::to_string(v)); }
  Json& SInt(const std::string& key, int64_t v) { return Raw(key, std::to_string(v)); }
  Json& Dbl(const std::string& key, double v, int decimals = 4) { return Raw(key, Num(v, decimals)); }
  Json& Bool(const std::string& key, bool v) { return Raw(key, v ? "true" : "false"); }
  Json& Obj(const std::string& key, const Json& v) { return Raw(key, v.Dump()); }
  std::string Dump(int indent = 0) const {
    std::string pad(indent + 2, ' '), out = "{\n";
    for (size_t i = 0; i < items_.size(); ++i) {
      out += pad + Quote(items_[i].first) + ": " + Reindent(items_[i].second, indent + 2);
      out += i + 1 < items_.size() ? ",\n" : "\n";
    }
    return out + std::string(indent, ' ') + "}";
  }
  static std::string Array(const std::vector<std::string>& raws) {
    std::string out = "[";
    for (size_t i = 0; i < raws.size(); ++i) out += (i ? ", " : "") + raws[i];
    return out + "]";
  }

 private:
  // Nested objects were dumped at indent 0: shift their lines.
  static std::string Reindent(const std::string& raw, int indent) {
    std::string out;
    for (char c : raw) {
      out += c;
      if (c == '\n') out += std::string(indent, ' ');
    }
    return out;
  }
  std::vector<std::pair<std::string, std::string>> items_;
};

// ---------------------------------------------------------------- zstd baselines

size_t ZstdSize(std::span<const uint8_t> data, int level = 3) {
  static thread_local ZSTD_CCtx* cctx = ZSTD_createCCtx();
  static thread_local Bytes out;
  out.resize(ZSTD_compressBound(data.size()));
  size_t n = ZSTD_compressCCtx(cctx, out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
  return n;
}

struct ZstdResult {
  uint64_t in = 0, out = 0;
  double seconds = 0;
  double reduction() const { return in ? 100.0 * (1.0 - double(out) / double(in)) : 0; }
  double mbps() const { return seconds > 0 ? in / seconds / 1e6 : 0; }
};

ZstdResult Zstd(std::span<const uint8_t> data) {
  auto t0 = Clock::now();
  ZstdResult r{data.size(), ZstdSize(data), 0};
  r.seconds = Seconds(t0);
  return r;
}

// zstd -3 the way the codec's LZ runs (wanopt/dre/encoder.cc):
// one stream, a 1 MiB window (windowLog 20), flushed after every block of about
// 88 KiB. Attributes a gap between the codec and plain zstd -3 to these settings.
ZstdResult ZstdLikeCodec(std::span<const uint8_t> data) {
  ZstdResult r;
  r.in = data.size();
  auto t0 = Clock::now();
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 20);
  constexpr size_t kBlock = 88 * 1024;
  Bytes out(ZSTD_compressBound(kBlock));
  for (size_t at = 0; at < data.size(); at += kBlock) {
    size_t n = std::min(kBlock, data.size() - at);
    ZSTD_inBuffer in{data.data() + at, n, 0};
    for (;;) {
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      size_t left = ZSTD_compressStream2(cctx, &o, &in, ZSTD_e_flush);
      if (ZSTD_isError(left)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(left));
      r.out += o.pos;
      if (left == 0 && in.pos == in.size) break;
    }
  }
  ZSTD_freeCCtx(cctx);
  r.seconds = Seconds(t0);
  return r;
}

ZstdResult ZstdEach(const std::vector<Bytes>& messages) {
  ZstdResult r;
  auto t0 = Clock::now();
  for (const auto& m : messages) {
    r.in += m.size();
    r.out += ZstdSize(m);
  }
  r.seconds = Seconds(t0);
  return r;
}

Json ZstdJson(const ZstdResult& z) {
  Json j;
  j.Int("in_bytes", z.in).Int("out_bytes", z.out).Dbl("reduction_percent", z.reduction(), 3).Dbl("compress_mbps_one_core", z.mbps(), 1);
  return j;
}

// ---------------------------------------------------------------- the text corpus

struct Corpus {
  Bytes bytes;  // distinct text files, concatenated in path order
  size_t files = 0, skipped_binary = 0, skipped_duplicate = 0, skipped_other = 0;
  std::vector<std::string> roots;
};

bool IsPlainText(const std::string& content) {
  static const char* const kMagics[] = {"\x1f\x8b", "\xfd" "7zXZ", "BZh", "\x89PNG", "\x28\xb5\x2f\xfd",
                                        "GIF8", "\xff\xd8\xff", "PK\x03\x04", "%PDF", "\x7f" "ELF"};
  for (const char* magic : kMagics) {
    if (content.starts_with(magic)) return false;
  }
  size_t control = 0;
  for (unsigned char c : content) {
    if (c == 0) return false;
    if (c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' && c != 0x1b) ++control;
  }
  return control * 100 <= content.size();  // at most 1% stray control bytes
}

Corpus LoadCorpus() {
  struct Root {
    std::string path;
    bool python;  // only *.py, *.txt and license/copyright files
  };
  std::vector<Root> roots = {{"/usr/share/doc", false}, {"/usr/share/common-licenses", false}};
  {
    std::vector<std::string> python;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/usr/lib", ec)) {
      std::string name = e.path().filename().string();
      if (name.starts_with("python3") && fs::is_directory(e.symlink_status())) python.push_back(e.path().string());
    }
    std::sort(python.begin(), python.end());
    for (auto& p : python) roots.push_back({p, true});
  }
  Corpus corpus;
  std::unordered_set<uint64_t> seen_lo;
  std::set<std::pair<uint64_t, uint64_t>> seen;
  static const std::set<std::string> kSkipExtensions = {".gz", ".xz", ".bz2", ".zst", ".lz", ".zip", ".png", ".jpg",
                                                         ".gif", ".pdf", ".so", ".pyc", ".exe", ".whl", ".ico",
                                                         ".woff", ".woff2", ".ttf", ".svgz", ".jpeg", ".mo"};
  for (const Root& root : roots) {
    corpus.roots.push_back(root.path + (root.python ? " (*.py, *.txt, license/copyright files)" : ""));
    std::vector<fs::path> paths;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root.path, ec); !ec && it != fs::end(it); it.increment(ec)) {
      if (!fs::is_regular_file(it->symlink_status())) continue;  // links would count a file twice
      paths.push_back(it->path());
    }
    std::sort(paths.begin(), paths.end());
    for (const auto& path : paths) {
      std::string ext = path.extension().string();
      std::string name = path.filename().string();
      if (kSkipExtensions.count(ext)) {
        ++corpus.skipped_binary;
        continue;
      }
      if (root.python) {
        std::string lower = name;
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        bool wanted = ext == ".py" || ext == ".txt" || lower.find("license") != std::string::npos ||
                      lower.find("copying") != std::string::npos || lower.find("copyright") != std::string::npos;
        if (!wanted) {
          ++corpus.skipped_other;
          continue;
        }
      }
      std::ifstream in(path, std::ios::binary);
      std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (content.empty()) continue;
      if (!IsPlainText(content)) {
        ++corpus.skipped_binary;
        continue;
      }
      XXH128_hash_t h = XXH3_128bits(content.data(), content.size());
      if (!seen.insert({h.low64, h.high64}).second) {
        ++corpus.skipped_duplicate;
        continue;
      }
      corpus.bytes.insert(corpus.bytes.end(), content.begin(), content.end());
      ++corpus.files;
    }
  }
  return corpus;
}

// `size` bytes of text: the corpus, repeated from its start when it is shorter.
Bytes TextOf(const Corpus& corpus, size_t size, size_t offset = 0) {
  Bytes out;
  out.reserve(size);
  size_t at = offset % corpus.bytes.size();
  while (out.size() < size) {
    size_t take = std::min(size - out.size(), corpus.bytes.size() - at);
    out.insert(out.end(), corpus.bytes.begin() + at, corpus.bytes.begin() + at + take);
    at = 0;
  }
  return out;
}

// ---------------------------------------------------------------- the edit workload

// ---------------------------------------------------------------- MIME and small messages

std::string Base64Lines(std::span<const uint8_t> data) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve(data.size() * 4 / 3 + data.size() / 38 + 8);
  size_t line = 0;
  auto put = [&](char c) {
    out += c;
    if (++line == 76) {
      out += "\r\n";
      line = 0;
    }
  };
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    put(kAlphabet[v >> 18]);
    put(kAlphabet[(v >> 12) & 63]);
    put(kAlphabet[(v >> 6) & 63]);
    put(kAlphabet[v & 63]);
  }
  if (size_t rest = data.size() - i) {
    uint32_t v = data[i] << 16 | (rest == 2 ? data[i + 1] << 8 : 0);
    put(kAlphabet[v >> 18]);
    put(kAlphabet[(v >> 12) & 63]);
    put(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    put('=');
  }
  if (line) out += "\r\n";
  return out;
}

const char* kNames[] = {"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
                        "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter"};

std::string Header(uint64_t i, uint64_t& rng) {
  const char* from = kNames[SplitMix(rng) % std::size(kNames)];
  const char* to = kNames[SplitMix(rng) % std::size(kNames)];
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "From: %s <%s@branch.example.com>\r\nTo: %s <%s@example.org>\r\n"
                "Subject: Re: quarterly figures, item %llu\r\nDate: Tue, %02d Nov 2026 %02d:%02d:%02d +0100\r\n"
                "Message-ID: <%016llx.%llu@mail.example.com>\r\n",
                from, from, to, to, static_cast<unsigned long long>(i), int(1 + SplitMix(rng) % 28),
                int(SplitMix(rng) % 24), int(SplitMix(rng) % 60), int(SplitMix(rng) % 60),
                static_cast<unsigned long long>(SplitMix(rng)), static_cast<unsigned long long>(i));
  return buf;
}

// Eight messages with the same attachment, each with its own headers and body.
std::vector<Bytes> MimeMessages(const Corpus& corpus, std::span<const uint8_t> attachment, size_t count,
                                size_t body_offset) {
  std::string encoded = Base64Lines(attachment);
  std::vector<Bytes> out;
  uint64_t rng = 0x5eed0005;
  size_t text_at = body_offset;
  for (size_t i = 0; i < count; ++i) {
    char boundary[64];
    std::snprintf(boundary, sizeof boundary, "=_part_%016llx", static_cast<unsigned long long>(SplitMix(rng)));
    std::string m = Header(i, rng);
    m += "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + std::string(boundary) + "\"\r\n\r\n";
    m += "This is a multi-part message in MIME format.\r\n\r\n--" + std::string(boundary) + "\r\n";
    m += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n";
    size_t body = 2048 + SplitMix(rng) % 4096;  // a few KiB, different text each time
    Bytes text = TextOf(corpus, body, text_at);
    text_at += body;
    m.append(text.begin(), text.end());
    m += "\r\n--" + std::string(boundary) + "\r\n";
    m += "Content-Type: application/pdf; name=\"figures-q3.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
         "Content-Disposition: attachment; filename=\"figures-q3.pdf\"\r\n\r\n";
    m += encoded;
    m += "--" + std::string(boundary) + "--\r\n";
    out.emplace_back(m.begin(), m.end());
  }
  return out;
}

// Small messages of 1..20 KiB: headers, then consecutive slices of the corpus.
std::vector<Bytes> SmallMessages(const Corpus& corpus, size_t count, uint64_t seed, size_t offset) {
  std::vector<Bytes> out;
  uint64_t rng = seed;
  size_t at = offset;
  for (size_t i = 0; i < count; ++i) {
    std::string header = Header(i, rng) + "\r\n";
    size_t total = 1024 + SplitMix(rng) % (19 * 1024 + 1);
    size_t body = total > header.size() ? total - header.size() : 0;
    Bytes m(header.begin(), header.end());
    Bytes text = TextOf(corpus, body, at);
    at += body;
    m.insert(m.end(), text.begin(), text.end());
    out.push_back(std::move(m));
  }
  return out;
}

Bytes Concat(const std::vector<Bytes>& parts) {
  Bytes out;
  size_t n = 0;
  for (const auto& p : parts) n += p.size();
  out.reserve(n);
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// ---------------------------------------------------------------- the pair

struct TempDir {
  std::string path;
  TempDir() {
    char name[] = "/tmp/wanopt-dre-bench-XXXXXX";
    if (!mkdtemp(name)) throw std::runtime_error("mkdtemp failed");
    path = name;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

constexpr size_t kRuleF = 0, kRuleT = 1;

// A datacenter and a branch with two rules to one echo origin: rule 0 policy F,
// rule 1 policy T. Both daemons have a chunk store in a fresh directory.
struct BenchPair {
  TempDir dir;
  lab::EchoOrigin origin;
  std::unique_ptr<Daemon> datacenter;
  std::unique_ptr<Daemon> branch;

  BenchPair() {
    std::string error;
    const tcp::endpoint loopback{boost::asio::ip::address_v4::loopback(), 0};
    Config dc;
    dc.name = "bench-datacenter";
    dc.device_id = *channel::ParseDeviceId("02:00:00:00:00:02");
    dc.threads = 2;
    dc.datacenter = DatacenterConfig{loopback, {}};
    dc.dre.datastore = dir.path + "/datacenter";
    datacenter = std::make_unique<Daemon>(dc);
    if (!datacenter->Start(&error)) throw std::runtime_error("datacenter: " + error);
    Config br;
    br.name = "bench-branch";
    br.device_id = *channel::ParseDeviceId("02:00:00:00:00:01");
    br.threads = 2;
    br.dre.datastore = dir.path + "/branch";
    for (Policy policy : {Policy::kFull, Policy::kTcpOnly}) {
      ForwardRule rule;
      rule.name = policy == Policy::kFull ? "bench-F" : "bench-T";
      rule.listen = loopback;
      rule.destination = origin.endpoint();
      rule.peer = datacenter->datacenter_endpoint();
      rule.peer_down = PeerDownAction::kReset;  // a benchmark must never measure pass-through
      rule.policy = policy;
      br.forwards.push_back(rule);
    }
    branch = std::make_unique<Daemon>(br);
    if (!branch->Start(&error)) throw std::runtime_error("branch: " + error);
  }
  ~BenchPair() {
    branch.reset();
    datacenter.reset();
  }
};

std::atomic<uint64_t> g_transfer_id{1};

// What one measured step (one or many transfers) did.
struct Run {
  std::string label;
  size_t transfers = 0, failed = 0;
  std::string first_error;
  uint64_t payload = 0;          // bytes sent by the client(s), transfer ids included
  uint64_t client_bytes = 0;     // sent + received by the client(s)
  uint64_t lan = 0, wan = 0;     // branch counters, both directions
  uint64_t up_lan = 0, up_wan = 0, down_lan = 0, down_wan = 0;  // per-connection records
  uint64_t chunks_hit = 0, chunks_missed = 0, nacks = 0;
  uint64_t connections = 0;      // branch records found for this step
  uint64_t resets = 0, protocol_errors = 0, pass_through = 0;  // both daemons
  std::map<std::string, uint64_t> applied;  // policy letters applied, per connection
  double seconds = 0;            // wall time of the transfers
  double cpu_seconds = 0;        // getrusage(RUSAGE_SELF): the whole process
  double child_cpu_seconds = 0;  // socat processes (socat runs only)
  bool settled = true;           // both daemons reached sessions_active == 0
  double settle_seconds = 0;

  bool ok() const { return failed == 0 && transfers > 0 && settled; }
  double reduction() const { return lan ? 100.0 * (1.0 - double(wan) / double(lan)) : 0; }
  double up_reduction() const { return up_lan ? 100.0 * (1.0 - double(up_wan) / double(up_lan)) : 0; }
  double down_reduction() const { return down_lan ? 100.0 * (1.0 - double(down_wan) / double(down_lan)) : 0; }
  uint64_t lan_or_client() const { return lan ? lan : client_bytes; }
  double mbps() const { return seconds > 0 ? lan_or_client() / seconds / 1e6 : 0; }
  double cpu_s_per_gb() const {
    uint64_t b = lan_or_client();
    return b ? (cpu_seconds + child_cpu_seconds) / (b / 1e9) : 0;
  }
};

Json RunJson(const Run& r) {
  Json j;
  j.Str("label", r.label).Int("transfers", r.transfers).Int("failed", r.failed);
  if (!r.first_error.empty()) j.Str("first_error", r.first_error);
  j.Int("payload_bytes", r.payload).Int("client_bytes", r.client_bytes);
  j.Int("lan_bytes", r.lan).Int("wan_bytes", r.wan).Dbl("reduction_percent", r.reduction(), 3);
  Json up, down;
  up.Int("lan_in", r.up_lan).Int("wan_out", r.up_wan).Dbl("reduction_percent", r.up_reduction(), 3);
  down.Int("lan_out", r.down_lan).Int("wan_in", r.down_wan).Dbl("reduction_percent", r.down_reduction(), 3);
  j.Obj("client_to_server", up).Obj("server_to_client", down);
  j.Int("chunks_hit", r.chunks_hit).Int("chunks_missed", r.chunks_missed).Int("nacks", r.nacks);
  j.Int("connections", r.connections);
  std::vector<std::string> applied;
  for (const auto& [k, v] : r.applied) applied.push_back(Quote(k) + ": " + std::to_string(v));
  j.Raw("applied_policies", "{" + [&] {
    std::string s;
    for (size_t i = 0; i < applied.size(); ++i) s += (i ? ", " : "") + applied[i];
    return s;
  }() + "}");
  j.Int("resets", r.resets).Int("protocol_errors", r.protocol_errors).Int("pass_through", r.pass_through);
  j.Dbl("seconds", r.seconds, 4).Dbl("throughput_mbps", r.mbps(), 1);
  j.Dbl("cpu_seconds_process", r.cpu_seconds, 3);
  if (r.child_cpu_seconds > 0) j.Dbl("cpu_seconds_socat", r.child_cpu_seconds, 3);
  j.Dbl("cpu_seconds_per_gb", r.cpu_s_per_gb(), 3);
  j.Bool("settled", r.settled).Dbl("settle_seconds", r.settle_seconds, 3);
  return j;
}

// Echo transfers of `payloads` through `target` on `threads` client threads.
void Transfer(Run& run, const tcp::endpoint& target, const lab::EchoOrigin& origin,
              const std::vector<const Bytes*>& payloads, unsigned threads) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  auto worker = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= payloads.size()) return;
      uint64_t id = g_transfer_id.fetch_add(1);
      auto r = lab::EchoTransfer(target, id, *payloads[i], origin, 60000);
      std::lock_guard lock(mu);
      ++run.transfers;
      run.payload += payloads[i]->size() + 8;
      run.client_bytes += r.bytes_sent + r.bytes_received;
      if (!r.verified) {
        ++run.failed;
        if (run.first_error.empty()) run.first_error = r.error;
      }
    }
  };
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
}

uint64_t MaxConnectionId(const Daemon& d) {
  uint64_t m = 0;
  for (const auto& c : d.table().Connections()) m = std::max(m, c.id);
  return m;
}

// Transfers through the pair's rule and reads both daemons' counters and the
// branch's connection records once every session is gone.
Run MeasurePair(BenchPair& pair, size_t rule, const std::string& label, const std::vector<const Bytes*>& payloads,
                unsigned threads = 1) {
  Run run;
  run.label = label;
  const Counters& b = pair.branch->counters();
  const Counters& d = pair.datacenter->counters();
  uint64_t lan0 = b.lan_in + b.lan_out, wan0 = b.wan_in + b.wan_out;
  uint64_t resets0 = b.resets + d.resets, errors0 = b.protocol_errors + d.protocol_errors,
           pass0 = b.pass_through + d.pass_through;
  uint64_t since_id = MaxConnectionId(*pair.branch);
  double cpu0 = CpuSeconds(RUSAGE_SELF);
  auto t0 = Clock::now();
  Transfer(run, pair.branch->forward_endpoint(rule), pair.origin, payloads, threads);
  run.seconds = Seconds(t0);
  // The branch's counters are final once its sessions closed: a bounded wait.
  auto s0 = Clock::now();
  while (b.sessions_active || d.sessions_active) {
    if (Seconds(s0) > 30) {
      run.settled = false;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  run.settle_seconds = Seconds(s0);
  run.cpu_seconds = CpuSeconds(RUSAGE_SELF) - cpu0;
  run.lan = b.lan_in + b.lan_out - lan0;
  run.wan = b.wan_in + b.wan_out - wan0;
  run.resets = b.resets + d.resets - resets0;
  run.protocol_errors = b.protocol_errors + d.protocol_errors - errors0;
  run.pass_through = b.pass_through + d.pass_through - pass0;
  for (const auto& c : pair.branch->table().Connections()) {
    if (c.id <= since_id) continue;
    ++run.connections;
    run.up_lan += c.lan_in;
    run.up_wan += c.wan_out;
    run.down_lan += c.lan_out;
    run.down_wan += c.wan_in;
    run.chunks_hit += c.chunks_hit;
    run.chunks_missed += c.chunks_missed;
    run.nacks += c.nacks;
    std::string applied = c.policy.applied ? std::string(1, PolicyLetter(*c.policy.applied)) : "none";
    ++run.applied[applied];
  }
  std::printf("  %-46s %s transfers%s, LAN %s B, WAN %s B (c->s %s, round trip %s), %.2f s, %.0f MB/s\n",
              label.c_str(), Count(run.transfers).c_str(),
              run.failed ? (" (" + std::to_string(run.failed) + " FAILED: " + run.first_error + ")").c_str() : "",
              Count(run.lan).c_str(), Count(run.wan).c_str(), Pct(run.up_reduction()).c_str(),
              Pct(run.reduction()).c_str(), run.seconds, run.mbps());
  std::fflush(stdout);
  return run;
}

Run MeasurePair(BenchPair& pair, size_t rule, const std::string& label, const Bytes& payload) {
  return MeasurePair(pair, rule, label, std::vector<const Bytes*>{&payload});
}

std::vector<const Bytes*> Pointers(const std::vector<Bytes>& v, size_t from = 0, size_t to = SIZE_MAX) {
  std::vector<const Bytes*> out;
  for (size_t i = from; i < std::min(to, v.size()); ++i) out.push_back(&v[i]);
  return out;
}

// ---------------------------------------------------------------- the socat chain

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool CanConnect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Starts `socat TCP-LISTEN:listen,... TCP:127.0.0.1:to` with no descriptors of ours.
pid_t StartSocat(const std::string& socat, uint16_t listen, uint16_t to) {
  std::string a = "TCP-LISTEN:" + std::to_string(listen) + ",bind=127.0.0.1,reuseaddr,fork";
  std::string b = "TCP:127.0.0.1:" + std::to_string(to);
  pid_t pid = fork();
  if (pid == 0) {
    ::close_range(3, ~0u, 0);
    execl(socat.c_str(), socat.c_str(), a.c_str(), b.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// ---------------------------------------------------------------- codec microbenchmarks

struct CodecBox {
  std::string dir;
  std::unique_ptr<datastore::ChunkStore> store;
  std::unique_ptr<dre::PeerTable> peers;
  explicit CodecBox(const std::string& path) : dir(path) {
    std::string error;
    datastore::ChunkStoreOptions options;
    options.path = dir + "/store";
    store = datastore::ChunkStore::Open(options, &error);
    if (!store) throw std::runtime_error(error);
    peers = std::make_unique<dre::PeerTable>(dir + "/peers");
  }
};

struct Frame {
  uint8_t flags = 0;
  std::unique_ptr<Buffer> payload;
};

struct PassTiming {
  double encode_seconds = 0, encode_thread_cpu = 0, encode_process_cpu = 0;
  double decode_seconds = 0, decode_thread_cpu = 0, decode_process_cpu = 0;
  uint64_t wire_bytes = 0;
  uint64_t repairs = 0;
  uint64_t chunks_hit = 0, chunks_missed = 0, chunks_delta = 0;
  bool correct = false;
  std::string error;
};

// Encodes `data` in 128 KiB reads on box a, then decodes the frames on box b; each
// timed on this thread alone.
PassTiming CodecPass(std::span<const uint8_t> data, const std::shared_ptr<dre::PeerState>& a_view,
                     const std::shared_ptr<dre::PeerState>& b_view, CodecBox& a, CodecBox& b) {
  PassTiming t;
  dre::CodecOptions options;
  std::vector<Frame> frames;
  frames.reserve(data.size() / (16 * 1024) + 16);
  dre::Encoder encoder(options, a_view, a.store.get());
  auto drain = [&] {
    while (encoder.HasPayload()) {
      Frame f;
      f.payload = std::make_unique<Buffer>();
      encoder.TakePayload(*f.payload, &f.flags);
      frames.push_back(std::move(f));
    }
  };
  double p0 = CpuSeconds(RUSAGE_SELF), c0 = ThreadCpuSeconds();
  auto t0 = Clock::now();
  constexpr size_t kPiece = 128 * 1024;
  for (size_t at = 0; at < data.size(); at += kPiece) {
    encoder.Append(data.subspan(at, std::min(kPiece, data.size() - at)));
    drain();
  }
  encoder.Flush();
  drain();
  t.encode_seconds = Seconds(t0);
  t.encode_thread_cpu = ThreadCpuSeconds() - c0;
  t.encode_process_cpu = CpuSeconds(RUSAGE_SELF) - p0;
  for (const auto& f : frames) t.wire_bytes += f.payload->size() + 16;  // + frame header
  t.chunks_hit = encoder.stats().chunks_hit;
  t.chunks_missed = encoder.stats().chunks_missed;
  t.chunks_delta = encoder.stats().chunks_delta;

  dre::Decoder decoder(options, b_view, b.store.get());
  Buffer out(data.size() + 1024);
  p0 = CpuSeconds(RUSAGE_SELF);
  c0 = ThreadCpuSeconds();
  t0 = Clock::now();
  for (const auto& f : frames) {
    auto status = decoder.Decode(f.flags, f.payload->span(), out);
    while (status == dre::Decoder::Status::kMissing) {
      for (const auto& fp : decoder.missing()) {
        auto chunk = encoder.Repair(fp);
        if (!chunk || !decoder.AddRepair(fp, *chunk)) {
          t.error = "repair failed";
          return t;
        }
        ++t.repairs;
      }
      status = decoder.Resume(out);
    }
    if (status != dre::Decoder::Status::kDone) {
      t.error = decoder.error();
      return t;
    }
  }
  t.decode_seconds = Seconds(t0);
  t.decode_thread_cpu = ThreadCpuSeconds() - c0;
  t.decode_process_cpu = CpuSeconds(RUSAGE_SELF) - p0;
  t.correct = out.size() == data.size() && std::memcmp(out.data(), data.data(), data.size()) == 0;
  if (!t.correct) t.error = "decoded bytes differ";
  return t;
}

// Wire bytes (payloads + 16-byte frame headers) of the codec alone, no sockets: each
// payload encoded in turn on one fresh box, in 128 KiB reads, flushed only at its end.
// The encoder learns what it sends, so later payloads name earlier chunks. Separates
// what the codec does from what the session (pauses, the first round trip) adds.
struct AloneStats {
  uint64_t chunks_hit = 0, chunks_missed = 0, chunks_delta = 0;
};
// Per payload, when given: the encoder's chunk counts.
std::vector<uint64_t> CodecAloneWire(const std::vector<const Bytes*>& payloads, std::vector<AloneStats>* stats = nullptr) {
  TempDir dir;
  CodecBox a(dir.path + "/a");
  auto view = a.peers->Get("b", dre::Seed{9, 9, 9});
  std::vector<uint64_t> out;
  dre::CodecOptions options;
  for (const Bytes* p : payloads) {
    dre::Encoder encoder(options, view, a.store.get());
    uint64_t wire = 0;
    Buffer payload;
    auto drain = [&] {
      while (encoder.HasPayload()) {
        uint8_t flags = 0;
        encoder.TakePayload(payload, &flags);
        wire += payload.size() + 16;
      }
    };
    constexpr size_t kPiece = 128 * 1024;
    for (size_t at = 0; at < p->size(); at += kPiece) {
      encoder.Append(std::span(*p).subspan(at, std::min(kPiece, p->size() - at)));
      drain();
    }
    encoder.Flush();
    drain();
    out.push_back(wire);
    if (stats) stats->push_back({encoder.stats().chunks_hit, encoder.stats().chunks_missed, encoder.stats().chunks_delta});
  }
  return out;
}

std::string AloneCell(uint64_t wire, uint64_t bytes) {
  return "codec alone " + Pct(bytes ? 100.0 * (1.0 - double(wire) / bytes) : 0);
}

Json AloneJson(uint64_t wire, uint64_t bytes, const AloneStats& st) {
  Json j;
  j.Int("in_bytes", bytes).Int("wire_bytes", wire).Dbl("reduction_percent", bytes ? 100.0 * (1.0 - double(wire) / bytes) : 0, 3);
  j.Int("chunks_hit", st.chunks_hit).Int("chunks_missed", st.chunks_missed).Int("chunks_delta_of_missed", st.chunks_delta);
  return j;
}

struct MicroResult {
  size_t bytes = 0;
  int repeats = 0;
  std::vector<double> enc_novel, dec_novel, enc_redundant, dec_redundant;  // MB/s wall, one thread
  std::vector<double> enc_novel_cpu, dec_novel_cpu, enc_redundant_cpu, dec_redundant_cpu;  // MB per process CPU s
  double novel_wire = 0, redundant_wire = 0;  // fraction of input on the wire
  uint64_t chunks = 0, index_memory = 0;
  double index_per_chunk = 0;
  uint64_t repairs = 0;
  uint64_t novel_hit = 0, novel_missed = 0, novel_delta = 0, redundant_hit = 0, redundant_missed = 0;
  std::string error;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

MicroResult CodecMicro(std::span<const uint8_t> text, int repeats) {
  MicroResult m;
  m.bytes = text.size();
  m.repeats = repeats;
  const dre::Seed seed = {1, 2, 3};
  for (int r = 0; r < repeats; ++r) {
    TempDir dir;
    CodecBox a(dir.path + "/a"), b(dir.path + "/b");
    auto a_view = a.peers->Get("b", seed);
    auto b_view = b.peers->Get("a", seed);
    PassTiming novel = CodecPass(text, a_view, b_view, a, b);
    PassTiming again = CodecPass(text, a_view, b_view, a, b);
    if (!novel.correct || !again.correct) {
      m.error = novel.correct ? again.error : novel.error;
      return m;
    }
    double mb = text.size() / 1e6;
    m.enc_novel.push_back(mb / novel.encode_seconds);
    m.dec_novel.push_back(mb / novel.decode_seconds);
    m.enc_redundant.push_back(mb / again.encode_seconds);
    m.dec_redundant.push_back(mb / again.decode_seconds);
    m.enc_novel_cpu.push_back(mb / novel.encode_process_cpu);
    m.dec_novel_cpu.push_back(mb / novel.decode_process_cpu);
    m.enc_redundant_cpu.push_back(mb / again.encode_process_cpu);
    m.dec_redundant_cpu.push_back(mb / again.decode_process_cpu);
    m.novel_wire = double(novel.wire_bytes) / text.size();
    m.redundant_wire = double(again.wire_bytes) / text.size();
    m.repairs += novel.repairs + again.repairs;
    m.novel_hit = novel.chunks_hit;
    m.novel_missed = novel.chunks_missed;
    m.novel_delta = novel.chunks_delta;
    m.redundant_hit = again.chunks_hit;
    m.redundant_missed = again.chunks_missed;
    auto stats = a.store->stats();
    m.chunks = stats.chunks;
    m.index_memory = stats.index_memory_bytes;
    m.index_per_chunk = stats.chunks ? double(stats.index_memory_bytes) / stats.chunks : 0;
    std::printf("  codec run %d: encode novel %.0f MB/s, decode novel %.0f MB/s, encode redundant %.0f MB/s, "
                "decode redundant %.0f MB/s\n",
                r + 1, m.enc_novel.back(), m.dec_novel.back(), m.enc_redundant.back(), m.dec_redundant.back());
    std::fflush(stdout);
  }
  return m;
}

// ---------------------------------------------------------------- report

struct Target {
  std::string name;   // what is checked
  std::string target;  // as text
  std::string value;   // as text
  bool met = false;
};

struct Row {
  std::string workload;
  std::string lan = "-", wan = "-";
  std::string reduction = "-", zstd = "-", other = "-";
  std::string mbps = "-", cpu = "-";
  std::vector<Target> targets;
};

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

std::string MiB(uint64_t bytes) { return Num(bytes / double(kMiB), bytes % kMiB ? 1 : 0) + " MiB"; }

std::string RedCell(const Run& r) {
  return "c→s " + Pct(r.up_reduction()) + "; round trip " + Pct(r.reduction());
}

struct Args {
  bool quick = false;
  std::string out = WANOPT_BENCH_RESULTS_DIR;
};

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") args.quick = true;
    else if (a == "--out" && i + 1 < argc) args.out = argv[++i];
    else {
      std::fprintf(stderr, "usage: dre_bench [--quick] [--out DIR]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  log::SetLevel(log::Level::kWarn);  // no line per connection; warnings still show
  log::StartCapture();
  auto bench_start = Clock::now();

  const size_t big = (args.quick ? 16 : 256) * kMiB;
  const size_t twice_size = (args.quick ? 8 : 64) * kMiB;
  const size_t edit_size = (args.quick ? 4 : 32) * kMiB;
  const size_t attachment_size = 3 * kMiB;
  const size_t mime_count = 8;
  const size_t messages_one = args.quick ? 500 : 5000;
  const size_t messages_many = args.quick ? 200 : 2000;
  const unsigned many_threads = 8;
  const size_t micro_size = (args.quick ? 8 : 64) * kMiB;
  const int micro_repeats = args.quick ? 1 : 3;

  // ---- machine
  utsname uts{};
  uname(&uts);
  std::string source_dir = WANOPT_SOURCE_DIR;
  std::string commit = RunCommand("git -C '" + source_dir + "' rev-parse HEAD 2>/dev/null");
  std::string dirty = RunCommand("git -C '" + source_dir + "' status --porcelain 2>/dev/null | wc -l");
  std::string cpu_model = RunCommand("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'");
  std::string loadavg_start = ReadFileText("/proc/loadavg");
  char date[64];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::string socat = RunCommand("command -v socat");
  std::string zstd_cli = RunCommand("command -v zstd");
  std::string zstd_cli_version = zstd_cli.empty() ? "" : RunCommand("zstd --version");

  std::printf("wanopt DRE benchmark%s: %ld cores, kernel %s, commit %s\n", args.quick ? " (--quick)" : "",
              sysconf(_SC_NPROCESSORS_ONLN), uts.release, commit.c_str());

  // ---- data
  auto t_corpus = Clock::now();
  Corpus corpus = LoadCorpus();
  if (corpus.bytes.size() < 8 * kMiB) {
    std::fprintf(stderr, "dre_bench: only %zu bytes of text found\n", corpus.bytes.size());
    return 1;
  }
  std::printf("text corpus: %s distinct bytes (%s) in %zu files; %zu binary/compressed, %zu duplicate, %zu other "
              "files skipped (%.1f s)\n",
              Count(corpus.bytes.size()).c_str(), MiB(corpus.bytes.size()).c_str(), corpus.files,
              corpus.skipped_binary, corpus.skipped_duplicate, corpus.skipped_other, Seconds(t_corpus));
  std::fflush(stdout);
  const size_t distinct = corpus.bytes.size();

  std::vector<Row> rows;
  std::vector<std::string> workload_json;
  std::vector<std::string> notes;
  std::vector<std::string> anomalies;  // things that looked wrong in the product
  auto check_run = [&](const Run& r) {
    if (r.failed) anomalies.push_back(r.label + ": " + std::to_string(r.failed) + " of " + std::to_string(r.transfers) +
                                      " transfers not verified (first: " + r.first_error + ")");
    if (!r.settled) anomalies.push_back(r.label + ": sessions still active 30 s after the transfers ended");
    if (r.resets) anomalies.push_back(r.label + ": " + std::to_string(r.resets) + " sessions ended in a reset");
    if (r.protocol_errors) anomalies.push_back(r.label + ": " + std::to_string(r.protocol_errors) + " protocol errors");
    if (r.pass_through) anomalies.push_back(r.label + ": " + std::to_string(r.pass_through) + " pass-through sessions");
    if (r.nacks) notes.push_back(r.label + ": " + std::to_string(r.nacks) + " NACKs");
    if (r.connections != r.transfers && r.lan)
      anomalies.push_back(r.label + ": " + std::to_string(r.connections) + " connection records for " +
                          std::to_string(r.transfers) + " transfers");
  };
  auto check_policy = [&](const Run& r, char letter) {
    std::string want(1, letter);
    for (const auto& [k, v] : r.applied) {
      if (k != want) anomalies.push_back(r.label + ": " + std::to_string(v) + " connections applied policy " + k +
                                         " instead of " + want);
    }
  };
  auto finish = [&](const Run& r, char letter) {
    check_run(r);
    check_policy(r, letter);
  };

  // ======== 1. random
  std::printf("\n[1] %s random bytes\n", MiB(big).c_str());
  std::fflush(stdout);
  Bytes random = RandomBytes(big, 0x5eed0001);
  ZstdResult z1 = Zstd(random);
  Run r1f, r1t, r1s;
  {
    BenchPair pair;
    r1f = MeasurePair(pair, kRuleF, "1 random, F", random);
    finish(r1f, 'F');
    r1t = MeasurePair(pair, kRuleT, "1 random, TCP-only pair", random);
    finish(r1t, 'T');
  }
  {
    // The socat chain: client -> socat A -> socat B -> echo origin.
    lab::EchoOrigin origin;
    r1s.label = "1 random, socat chain (2 hops)";
    if (socat.empty()) {
      anomalies.push_back("socat not installed: no socat baseline");
    } else {
      uint16_t a = FreePort(), b = FreePort();
      double child0 = CpuSeconds(RUSAGE_CHILDREN);
      pid_t second = StartSocat(socat, b, origin.endpoint().port());
      pid_t first = StartSocat(socat, a, b);
      auto w0 = Clock::now();
      while (!(CanConnect(b) && CanConnect(a)) && Seconds(w0) < 5) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the probe connections' children exit
      double cpu0 = CpuSeconds(RUSAGE_SELF);
      auto t0 = Clock::now();
      Transfer(r1s, tcp::endpoint(boost::asio::ip::address_v4::loopback(), a), origin, {&random}, 1);
      r1s.seconds = Seconds(t0);
      r1s.cpu_seconds = CpuSeconds(RUSAGE_SELF) - cpu0;
      for (pid_t pid : {first, second}) {
        ::kill(pid, SIGTERM);
        int status = 0;
        ::waitpid(pid, &status, 0);
      }
      r1s.child_cpu_seconds = CpuSeconds(RUSAGE_CHILDREN) - child0;
      if (r1s.failed) anomalies.push_back("socat chain transfer failed: " + r1s.first_error);
      std::printf("  %-46s %.2f s, %.0f MB/s (client bytes), socat CPU %.2f s\n", r1s.label.c_str(), r1s.seconds,
                  r1s.mbps(), r1s.child_cpu_seconds);
    }
  }
  {
    double expansion = r1f.up_lan ? (double(r1f.up_wan) / r1f.up_lan - 1) * 100 : 0;
    double expansion_rt = r1f.lan ? (double(r1f.wan) / r1f.lan - 1) * 100 : 0;
    // Goodput: bytes the client moved (sent + echoed) per second, the same measure for both.
    double f_goodput = r1f.seconds > 0 ? r1f.client_bytes / r1f.seconds / 1e6 : 0;
    double s_goodput = r1s.seconds > 0 ? r1s.client_bytes / r1s.seconds / 1e6 : 0;
    double t_goodput = r1t.seconds > 0 ? r1t.client_bytes / r1t.seconds / 1e6 : 0;
    double ratio = s_goodput > 0 ? f_goodput / s_goodput : 0;
    Row row;
    row.workload = "1. " + MiB(big) + " random (incompressible), F";
    row.lan = Count(r1f.lan);
    row.wan = Count(r1f.wan);
    row.reduction = "expansion c→s " + Num(expansion, 3) + "%; round trip " + Num(expansion_rt, 3) + "%";
    row.zstd = Pct(z1.reduction(), 3);
    row.other = "TCP-only pair " + Num(r1t.mbps(), 0) + " MB/s (" + Num(r1t.cpu_s_per_gb(), 2) + " CPU s/GB); socat chain " +
                Num(r1s.mbps(), 0) + " MB/s (" + Num(r1s.cpu_s_per_gb(), 2) + " CPU s/GB incl. socat); F/socat " +
                Num(ratio, 2) + "x, F/T " + Num(t_goodput > 0 ? f_goodput / t_goodput : 0, 2) + "x";
    row.mbps = Num(r1f.mbps(), 0);
    row.cpu = Num(r1f.cpu_s_per_gb(), 2);
    row.targets.push_back({"random: WAN expansion (client to server)", "expansion ≤ 0.1%", Num(expansion, 3) + "%",
                           r1f.ok() && expansion <= 0.1});
    row.targets.push_back({"random: F pipeline / socat chain goodput", "F/socat ≥ 0.8x", Num(ratio, 2) + "x",
                           r1f.ok() && r1s.ok() && ratio >= 0.8});
    rows.push_back(row);
    Json j;
    j.Str("id", "1").Str("name", "random").Int("payload_bytes", big).Obj("F", RunJson(r1f)).Obj("T", RunJson(r1t));
    j.Obj("socat_chain", RunJson(r1s)).Obj("zstd3", ZstdJson(z1));
    j.Dbl("expansion_client_to_server_percent", expansion, 4).Dbl("expansion_round_trip_percent", expansion_rt, 4);
    j.Dbl("goodput_mbps_F", f_goodput, 1).Dbl("goodput_mbps_T", t_goodput, 1).Dbl("goodput_mbps_socat", s_goodput, 1);
    j.Dbl("harness_cpu_seconds_per_gb", r1s.client_bytes ? r1s.cpu_seconds / (r1s.client_bytes / 1e9) : 0, 3);
    j.Dbl("F_over_socat", ratio, 3).Dbl("F_over_T", t_goodput > 0 ? f_goodput / t_goodput : 0, 3);
    j.Raw("targets", TargetsArray(row.targets));
    workload_json.push_back(j.Dump());
  }
  random.clear();
  random.shrink_to_fit();

  const double harness_cpu = r1s.client_bytes ? r1s.cpu_seconds / (r1s.client_bytes / 1e9) : 0;

  // ======== 2. real text
  std::printf("\n[2] %s real text (%s distinct)\n", MiB(big).c_str(), MiB(std::min(distinct, big)).c_str());
  std::fflush(stdout);
  {
    Bytes text = TextOf(corpus, big);
    ZstdResult z = Zstd(text);
    std::vector<AloneStats> ast;
    auto alone = CodecAloneWire({&text}, &ast);
    ZstdResult zl = ZstdLikeCodec(text);
    Run f, t;
    {
      BenchPair pair;
      f = MeasurePair(pair, kRuleF, "2 text, F", text);
      finish(f, 'F');
      t = MeasurePair(pair, kRuleT, "2 text, TCP-only pair", text);
      finish(t, 'T');
    }
    uint64_t payload = text.size() + 8;
    double vs_zstd = z.out ? double(f.up_wan) / double(z.out) : 0;  // wanopt WAN / zstd bytes, one direction
    Row row;
    row.workload = "2. " + MiB(big) + " real text (" + MiB(std::min(distinct, big)) + " distinct" +
                   (distinct < big ? ", repeated" : "") + "), F";
    row.lan = Count(f.lan);
    row.wan = Count(f.wan);
    row.reduction = RedCell(f) + "; " + AloneCell(alone[0], text.size());
    row.zstd = Pct(z.reduction()) + " (WAN c→s / zstd bytes = " + Num(vs_zstd, 3) + "); as the codec streams it: " +
               Pct(zl.reduction());
    row.other = "TCP-only pair " + Num(t.mbps(), 0) + " MB/s; F/T " + Num(t.mbps() > 0 ? f.mbps() / t.mbps() : 0, 2) + "x";
    row.mbps = Num(f.mbps(), 0);
    row.cpu = Num(f.cpu_s_per_gb(), 2);
    row.targets.push_back({"text: never worse than zstd -3 (client to server WAN ≤ zstd -3 size)",
                           "≥ zstd -3 reduction", Pct(f.up_reduction()) + " vs " + Pct(z.reduction()),
                           f.ok() && f.up_wan <= z.out});
    rows.push_back(row);
    Json j;
    j.Str("id", "2").Str("name", "real text").Int("payload_bytes", text.size()).Int("distinct_bytes", std::min(distinct, big));
    j.Obj("F", RunJson(f)).Obj("T", RunJson(t)).Obj("zstd3", ZstdJson(z)).Dbl("wan_c2s_over_zstd", vs_zstd, 4);
    j.Obj("codec_alone", AloneJson(alone[0], text.size(), ast[0])).Obj("zstd3_streamed_like_codec", ZstdJson(zl));
    j.Raw("targets", TargetsArray(row.targets));
    workload_json.push_back(j.Dump());
    (void)payload;
    if (distinct < big) {
      notes.push_back("workload 2: only " + Count(distinct) + " bytes of distinct text exist here, so the " + MiB(big) +
                      " payload is the corpus repeated; DRE finds the repeats (zstd -3's 2 MiB window cannot), which "
                      "flatters wanopt against zstd. Workload 3's first pass (" + MiB(twice_size) +
                      " of distinct text) is the like-for-like comparison.");
    }
  }

  // ======== 3. the same file twice
  std::printf("\n[3] %s of text sent twice\n", MiB(twice_size).c_str());
  std::fflush(stdout);
  {
    Bytes text = TextOf(corpus, twice_size);
    ZstdResult z = Zstd(text);
    std::vector<AloneStats> ast;
    auto alone = CodecAloneWire({&text, &text}, &ast);
    ZstdResult zl = ZstdLikeCodec(text);
    Run first, second, t;
    {
      BenchPair pair;
      first = MeasurePair(pair, kRuleF, "3 text, first pass, F", text);
      finish(first, 'F');
      second = MeasurePair(pair, kRuleF, "3 text, second pass, F", text);
      finish(second, 'F');
      t = MeasurePair(pair, kRuleT, "3 text, TCP-only pair", text);
      finish(t, 'T');
    }
    Row a;
    a.workload = "3a. " + MiB(twice_size) + " text, first pass, F";
    a.lan = Count(first.lan);
    a.wan = Count(first.wan);
    a.reduction = RedCell(first) + "; " + AloneCell(alone[0], text.size());
    a.zstd = Pct(z.reduction()) + " (WAN c→s / zstd bytes = " + Num(z.out ? double(first.up_wan) / z.out : 0, 3) +
             "); as the codec streams it: " + Pct(zl.reduction());
    a.other = "TCP-only pair " + Num(t.mbps(), 0) + " MB/s";
    a.mbps = Num(first.mbps(), 0);
    a.cpu = Num(first.cpu_s_per_gb(), 2);
    if (twice_size <= distinct) {
      a.targets.push_back({"distinct text: never worse than zstd -3 (client to server)", "≥ zstd -3 reduction",
                           Pct(first.up_reduction()) + " vs " + Pct(z.reduction()), first.ok() && first.up_wan <= z.out});
    }
    rows.push_back(a);
    Row b;
    b.workload = "3b. same " + MiB(twice_size) + " again (second pass), F";
    b.lan = Count(second.lan);
    b.wan = Count(second.wan);
    b.reduction = RedCell(second) + "; " + AloneCell(alone[1], text.size()) + " (XCodec quoted: " +
                  Num(kXcodecSecondPass, 1) + "%)";
    b.zstd = Pct(z.reduction()) + " (same on the second copy)";
    b.other = "TCP-only pair " + Num(t.mbps(), 0) + " MB/s; F/T " + Num(t.mbps() > 0 ? second.mbps() / t.mbps() : 0, 2) + "x";
    b.mbps = Num(second.mbps(), 0);
    b.cpu = Num(second.cpu_s_per_gb(), 2);
    b.targets.push_back({"second pass reduction (client to server)", "≥ 99.5%", Pct(second.up_reduction()),
                         second.ok() && second.up_reduction() >= 99.5});
    rows.push_back(b);
    std::vector<Target> all = a.targets;
    all.insert(all.end(), b.targets.begin(), b.targets.end());
    Json j;
    j.Str("id", "3").Str("name", "same file twice").Int("payload_bytes", text.size());
    j.Obj("F_first", RunJson(first)).Obj("F_second", RunJson(second)).Obj("T", RunJson(t)).Obj("zstd3", ZstdJson(z));
    j.Str("zstd3_second_copy", "the same as the first: zstd -3 keeps no memory between files");
    j.Obj("zstd3_streamed_like_codec", ZstdJson(zl)).Obj("codec_alone_first", AloneJson(alone[0], text.size(), ast[0]));
    j.Obj("codec_alone_second", AloneJson(alone[1], text.size(), ast[1]));
    j.Dbl("xcodec_quoted_second_pass_percent", kXcodecSecondPass, 1);
    j.Raw("targets", TargetsArray(all));
    workload_json.push_back(j.Dump());
  }

  // ======== 4. edited copy
  std::printf("\n[4] %s text, then a copy with 1%% of its bytes edited\n", MiB(edit_size).c_str());
  std::fflush(stdout);
  {
    Bytes v1 = TextOf(corpus, edit_size, twice_size);
    EditStats es;
    Bytes v2 = Edit(v1, 0.01, 0x5eed0004, &es);
    ZstdResult z1v = Zstd(v1), z2v = Zstd(v2);
    std::vector<AloneStats> ast;
    auto alone = CodecAloneWire({&v1, &v2}, &ast);
    ZstdResult zl1 = ZstdLikeCodec(v1);
    // The ideal: zstd --patch-from (the CLI).
    int64_t patch_size = -1;
    std::string patch_note;
    if (!zstd_cli.empty()) {
      TempDir d;
      std::ofstream(d.path + "/v1", std::ios::binary).write(reinterpret_cast<const char*>(v1.data()), v1.size());
      std::ofstream(d.path + "/v2", std::ios::binary).write(reinterpret_cast<const char*>(v2.data()), v2.size());
      std::string cmd = "'" + zstd_cli + "' -3 -q -f --patch-from='" + d.path + "/v1' '" + d.path + "/v2' -o '" + d.path +
                        "/out' 2>&1";
      patch_note = RunCommand(cmd);
      std::error_code ec;
      auto size = fs::file_size(d.path + "/out", ec);
      if (!ec) patch_size = static_cast<int64_t>(size);
    } else {
      anomalies.push_back("zstd CLI not installed: no --patch-from baseline (apt-get install zstd; add zstd to deploy/bootstrap)");
    }
    Run first, second, t;
    {
      BenchPair pair;
      first = MeasurePair(pair, kRuleF, "4 v1, F", v1);
      finish(first, 'F');
      second = MeasurePair(pair, kRuleF, "4 v2 (1% edited), F", v2);
      finish(second, 'F');
      t = MeasurePair(pair, kRuleT, "4 v2, TCP-only pair", v2);
      finish(t, 'T');
    }
    double patch_reduction = patch_size >= 0 ? 100.0 * (1.0 - double(patch_size) / v2.size()) : 0;
    Row a;
    a.workload = "4a. " + MiB(edit_size) + " text v1, F";
    a.lan = Count(first.lan);
    a.wan = Count(first.wan);
    a.reduction = RedCell(first) + "; " + AloneCell(alone[0], v1.size());
    a.zstd = Pct(z1v.reduction()) + "; as the codec streams it: " + Pct(zl1.reduction());
    a.other = "-";
    a.mbps = Num(first.mbps(), 0);
    a.cpu = Num(first.cpu_s_per_gb(), 2);
    rows.push_back(a);
    Row b;
    b.workload = "4b. v2 = v1 with 1% edited (" + std::to_string(es.inserts + es.deletes + es.overwrites) +
                 " edits of 10-90 B), F";
    b.lan = Count(second.lan);
    b.wan = Count(second.wan);
    b.reduction = RedCell(second) + "; " + AloneCell(alone[1], v2.size()) + " (XCodec quoted: " +
                  Num(kXcodecEdit, 1) + "%)";
    b.zstd = Pct(z2v.reduction()) + "; `zstd -3 --patch-from=v1`: " +
             (patch_size >= 0 ? Count(patch_size) + " B = " + Pct(patch_reduction) : std::string("n/a"));
    b.other = "TCP-only pair " + Num(t.mbps(), 0) + " MB/s";
    b.mbps = Num(second.mbps(), 0);
    b.cpu = Num(second.cpu_s_per_gb(), 2);
    b.targets.push_back({"1% edited copy: second-transfer reduction (client to server)", "≥ 95%",
                         Pct(second.up_reduction()), second.ok() && second.up_reduction() >= 95});
    rows.push_back(b);
    Json j;
    j.Str("id", "4").Str("name", "edited copy").Int("v1_bytes", v1.size()).Int("v2_bytes", v2.size());
    Json e;
    e.Int("inserts", es.inserts).Int("deletes", es.deletes).Int("overwrites", es.overwrites).Int("bytes_touched", es.bytes_touched);
    j.Obj("edits", e).Obj("F_v1", RunJson(first)).Obj("F_v2", RunJson(second)).Obj("T_v2", RunJson(t));
    j.Obj("zstd3_v1", ZstdJson(z1v)).Obj("zstd3_v2", ZstdJson(z2v)).Obj("zstd3_v1_streamed_like_codec", ZstdJson(zl1));
    j.Obj("codec_alone_v1", AloneJson(alone[0], v1.size(), ast[0])).Obj("codec_alone_v2", AloneJson(alone[1], v2.size(), ast[1]));
    if (patch_size >= 0) {
      j.SInt("zstd_patch_from_bytes", patch_size).Dbl("zstd_patch_from_reduction_percent", patch_reduction, 3);
    }
    j.Str("zstd_cli", zstd_cli_version);
    if (!patch_note.empty()) j.Str("zstd_cli_output", patch_note);
    j.Dbl("xcodec_quoted_percent", kXcodecEdit, 1);
    j.Raw("targets", TargetsArray(b.targets));
    workload_json.push_back(j.Dump());
  }

  // ======== 5. one attachment in 8 MIME messages
  std::printf("\n[5] one %s attachment in %zu MIME messages\n", MiB(attachment_size).c_str(), mime_count);
  std::fflush(stdout);
  {
    Bytes attachment = RandomBytes(attachment_size, 0x5eed0005);
    auto messages = MimeMessages(corpus, attachment, mime_count, twice_size + edit_size);
    std::vector<Bytes> rest(messages.begin() + 1, messages.end());
    ZstdResult z_first = Zstd(messages[0]), z_rest = ZstdEach(rest);
    auto alone = CodecAloneWire(Pointers(messages));
    uint64_t alone_rest = 0, rest_bytes = 0;
    for (size_t i = 1; i < messages.size(); ++i) {
      alone_rest += alone[i];
      rest_bytes += messages[i].size();
    }
    std::vector<Run> runs;
    Run t;
    {
      BenchPair pair;
      for (size_t i = 0; i < messages.size(); ++i) {
        runs.push_back(MeasurePair(pair, kRuleF, "5 message " + std::to_string(i + 1) + ", F", messages[i]));
        finish(runs.back(), 'F');
      }
      t = MeasurePair(pair, kRuleT, "5 messages 2..8, TCP-only pair", Pointers(messages, 1));
      finish(t, 'T');
    }
    Run agg;  // messages 2..8
    agg.label = "5 messages 2..8, F";
    for (size_t i = 1; i < runs.size(); ++i) {
      const Run& r = runs[i];
      agg.transfers += r.transfers;
      agg.failed += r.failed;
      agg.payload += r.payload;
      agg.client_bytes += r.client_bytes;
      agg.lan += r.lan;
      agg.wan += r.wan;
      agg.up_lan += r.up_lan;
      agg.up_wan += r.up_wan;
      agg.down_lan += r.down_lan;
      agg.down_wan += r.down_wan;
      agg.chunks_hit += r.chunks_hit;
      agg.chunks_missed += r.chunks_missed;
      agg.nacks += r.nacks;
      agg.connections += r.connections;
      agg.seconds += r.seconds;
      agg.cpu_seconds += r.cpu_seconds;
      agg.settled = agg.settled && r.settled;
    }
    Row a;
    a.workload = "5a. MIME message 1 (" + MiB(messages[0].size()) + ", attachment first seen), F";
    a.lan = Count(runs[0].lan);
    a.wan = Count(runs[0].wan);
    a.reduction = RedCell(runs[0]) + "; " + AloneCell(alone[0], messages[0].size());
    a.zstd = Pct(z_first.reduction());
    a.mbps = Num(runs[0].mbps(), 0);
    a.cpu = Num(runs[0].cpu_s_per_gb(), 2);
    rows.push_back(a);
    Row b;
    b.workload = "5b. MIME messages 2..8 (same attachment, new headers and bodies), F";
    b.lan = Count(agg.lan);
    b.wan = Count(agg.wan);
    b.reduction = RedCell(agg) + "; " + AloneCell(alone_rest, rest_bytes) + " (XCodec quoted: " +
                  Num(kXcodecMails, 1) + "%)";
    b.zstd = Pct(z_rest.reduction()) + " (each message alone)";
    b.other = "TCP-only pair " + Num(t.mbps(), 0) + " MB/s";
    b.mbps = Num(agg.mbps(), 0);
    b.cpu = Num(agg.cpu_s_per_gb(), 2);
    b.targets.push_back({"mails 2..8 reduction (client to server)", "≥ 98%", Pct(agg.up_reduction()),
                         agg.ok() && agg.up_reduction() >= 98});
    rows.push_back(b);
    std::vector<std::string> per;
    for (const auto& r : runs) per.push_back(RunJson(r).Dump());
    Json j;
    j.Str("id", "5").Str("name", "MIME attachment").Int("attachment_bytes", attachment_size);
    std::vector<std::string> sizes;
    for (const auto& m : messages) sizes.push_back(std::to_string(m.size()));
    j.Raw("message_bytes", Json::Array(sizes));
    j.Raw("F_per_message", Json::Array(per)).Obj("F_messages_2_to_8", RunJson(agg)).Obj("T_messages_2_to_8", RunJson(t));
    j.Obj("zstd3_message_1", ZstdJson(z_first)).Obj("zstd3_messages_2_to_8_each_alone", ZstdJson(z_rest));
    j.Dbl("xcodec_quoted_percent", kXcodecMails, 1);
    std::vector<std::string> alone_json;
    for (uint64_t w : alone) alone_json.push_back(std::to_string(w));
    j.Raw("codec_alone_wire_bytes_per_message", Json::Array(alone_json));
    j.Raw("targets", TargetsArray(b.targets));
    workload_json.push_back(j.Dump());
  }

  // ======== 6. small messages
  std::printf("\n[6] small messages: %zu on one connection, %zu on a connection each (%u client threads)\n",
              messages_one, messages_many, many_threads);
  std::fflush(stdout);
  {
    size_t offset = twice_size + edit_size + 64 * kMiB;
    auto one = SmallMessages(corpus, messages_one, 0x5eed0006, offset);
    size_t one_bytes = 0;
    for (const auto& m : one) one_bytes += m.size();
    auto many = SmallMessages(corpus, messages_many, 0x5eed0007, offset + one_bytes);
    Bytes joined = Concat(one);
    ZstdResult z_one = ZstdEach(one), z_many = ZstdEach(many), z_joined = Zstd(joined);
    Run fa, ta, fb, tb;
    {
      BenchPair pair;
      fa = MeasurePair(pair, kRuleF, "6a " + std::to_string(messages_one) + " messages, one connection, F", joined);
      finish(fa, 'F');
      ta = MeasurePair(pair, kRuleT, "6a same, TCP-only pair", joined);
      finish(ta, 'T');
    }
    {
      BenchPair pair;
      fb = MeasurePair(pair, kRuleF, "6b " + std::to_string(messages_many) + " messages, own connection each, F",
                       Pointers(many), many_threads);
      finish(fb, 'F');
      tb = MeasurePair(pair, kRuleT, "6b same, TCP-only pair", Pointers(many), many_threads);
      finish(tb, 'T');
    }
    auto overhead = [](uint64_t wan, uint64_t zstd, size_t n) { return (double(wan) - double(zstd)) / double(n); };
    double a_up = overhead(fa.up_wan, z_one.out, messages_one);
    double a_rt = overhead(fa.wan, 2 * z_one.out, messages_one);
    double b_up = overhead(fb.up_wan, z_many.out, messages_many);
    double b_rt = overhead(fb.wan, 2 * z_many.out, messages_many);
    double a_msgs = fa.seconds > 0 ? messages_one / fa.seconds : 0;
    double b_conns = fb.seconds > 0 ? messages_many / fb.seconds : 0;
    double tb_conns = tb.seconds > 0 ? messages_many / tb.seconds : 0;
    Row a;
    a.workload = "6a. " + Count(messages_one) + " messages of 1-20 KiB back to back on one connection, F";
    a.lan = Count(fa.lan);
    a.wan = Count(fa.wan);
    a.reduction = RedCell(fa) + "; per-message overhead vs zstd -3 per message: c→s " + Num(a_up, 0) + " B, round trip " +
                  Num(a_rt, 0) + " B";
    a.zstd = Pct(z_one.reduction()) + " (each message alone); " + Pct(z_joined.reduction()) + " (all as one stream)";
    a.other = "TCP-only pair " + Num(ta.mbps(), 0) + " MB/s";
    a.mbps = Num(fa.mbps(), 0) + " (" + Num(a_msgs, 0) + " msg/s)";
    a.cpu = Num(fa.cpu_s_per_gb(), 2);
    rows.push_back(a);
    Row b;
    b.workload = "6b. " + Count(messages_many) + " messages of 1-20 KiB, one connection each, " + std::to_string(many_threads) +
                 " client threads, F";
    b.lan = Count(fb.lan);
    b.wan = Count(fb.wan);
    b.reduction = RedCell(fb) + "; per-message overhead vs zstd -3 per message: c→s " + Num(b_up, 0) + " B, round trip " +
                  Num(b_rt, 0) + " B";
    b.zstd = Pct(z_many.reduction()) + " (each message alone)";
    b.other = "TCP-only pair " + Num(tb.mbps(), 0) + " MB/s, " + Num(tb_conns, 0) + " conn/s";
    b.mbps = Num(fb.mbps(), 0) + " (" + Num(b_conns, 0) + " conn/s)";
    b.cpu = Num(fb.cpu_s_per_gb(), 2);
    rows.push_back(b);
    Json j;
    j.Str("id", "6").Str("name", "small messages");
    Json ja, jb;
    ja.Int("messages", messages_one).Int("payload_bytes", one_bytes).Obj("F", RunJson(fa)).Obj("T", RunJson(ta));
    ja.Obj("zstd3_each_message", ZstdJson(z_one)).Obj("zstd3_one_stream", ZstdJson(z_joined));
    ja.Dbl("overhead_bytes_per_message_client_to_server", a_up, 1).Dbl("overhead_bytes_per_message_round_trip", a_rt, 1);
    ja.Dbl("messages_per_second", a_msgs, 1);
    jb.Int("messages", messages_many).Int("client_threads", many_threads).Obj("F", RunJson(fb)).Obj("T", RunJson(tb));
    jb.Obj("zstd3_each_message", ZstdJson(z_many));
    jb.Dbl("overhead_bytes_per_message_client_to_server", b_up, 1).Dbl("overhead_bytes_per_message_round_trip", b_rt, 1);
    jb.Dbl("connections_per_second_F", b_conns, 1).Dbl("connections_per_second_T", tb_conns, 1);
    j.Obj("one_connection", ja).Obj("connection_each", jb);
    j.Str("overhead_definition", "(WAN bytes - sum of zstd -3 sizes of each message alone) / messages; round trip "
                                 "subtracts the zstd size twice (the echo)");
    workload_json.push_back(j.Dump());
  }

  // ======== microbenchmarks
  std::printf("\n[micro] codec without sockets: %s of distinct text, %d run(s)\n", MiB(std::min(micro_size, distinct)).c_str(),
              micro_repeats);
  std::fflush(stdout);
  MicroResult micro;
  {
    Bytes text = TextOf(corpus, std::min(micro_size, distinct), 0);
    micro = CodecMicro(text, micro_repeats);
    if (!micro.error.empty()) anomalies.push_back("codec microbenchmark: " + micro.error);
    if (micro.repairs) anomalies.push_back("codec microbenchmark: " + std::to_string(micro.repairs) + " repairs");
  }
  {
    double en = Median(micro.enc_novel), dn = Median(micro.dec_novel), er = Median(micro.enc_redundant),
           dr = Median(micro.dec_redundant);
    auto micro_row = [&](const std::string& name, double mbps, double cpu_mb, const std::vector<Target>& targets) {
      Row r;
      r.workload = name;
      r.lan = Count(micro.bytes);
      r.mbps = Num(mbps, 0) + " (one thread)";
      r.cpu = Num(cpu_mb > 0 ? 1000.0 / cpu_mb : 0, 2);
      r.targets = targets;
      return r;
    };
    bool ok = micro.error.empty();
    Row r1 = micro_row("M1. codec encode, novel text (DRE+LZ, real store)", en, Median(micro.enc_novel_cpu),
                       {{"encode novel text", "≥ 400 MB/s", Num(en, 0) + " MB/s", ok && en >= 400}});
    r1.wan = Count(static_cast<uint64_t>(micro.novel_wire * micro.bytes));
    r1.reduction = Pct(100 * (1 - micro.novel_wire));
    Row r2 = micro_row("M2. codec decode, novel text", dn, Median(micro.dec_novel_cpu),
                       {{"decode novel faster than encode", "> encode (" + Num(en, 0) + " MB/s)", Num(dn, 0) + " MB/s",
                         ok && dn > en}});
    Row r3 = micro_row("M3. codec encode, fully redundant (second pass)", er, Median(micro.enc_redundant_cpu),
                       {{"encode redundant", "≥ 1000 MB/s", Num(er, 0) + " MB/s", ok && er >= 1000}});
    r3.wan = Count(static_cast<uint64_t>(micro.redundant_wire * micro.bytes));
    r3.reduction = Pct(100 * (1 - micro.redundant_wire));
    Row r4 = micro_row("M4. codec decode, fully redundant", dr, Median(micro.dec_redundant_cpu),
                       {{"decode redundant faster than encode", "> encode (" + Num(er, 0) + " MB/s)", Num(dr, 0) + " MB/s",
                         ok && dr > er}});
    Row r5;
    r5.workload = "M5. chunk store index memory per stored chunk";
    r5.other = Count(micro.index_memory) + " B / " + Count(micro.chunks) + " chunks";
    r5.targets = {{"index memory per chunk", "≤ 64 B", Num(micro.index_per_chunk, 1) + " B",
                   ok && micro.chunks && micro.index_per_chunk <= 64}};
    for (auto* r : {&r1, &r2, &r3, &r4, &r5}) rows.push_back(*r);
    auto arr = [](const std::vector<double>& v) {
      std::vector<std::string> s;
      for (double x : v) s.push_back(Num(x, 1));
      return Json::Array(s);
    };
    Json j;
    j.Int("bytes", micro.bytes).Int("repeats", micro.repeats);
    j.Dbl("encode_novel_mbps_median", en, 1).Raw("encode_novel_mbps", arr(micro.enc_novel));
    j.Dbl("decode_novel_mbps_median", dn, 1).Raw("decode_novel_mbps", arr(micro.dec_novel));
    j.Dbl("encode_redundant_mbps_median", er, 1).Raw("encode_redundant_mbps", arr(micro.enc_redundant));
    j.Dbl("decode_redundant_mbps_median", dr, 1).Raw("decode_redundant_mbps", arr(micro.dec_redundant));
    j.Raw("encode_novel_mb_per_process_cpu_s", arr(micro.enc_novel_cpu));
    j.Raw("decode_novel_mb_per_process_cpu_s", arr(micro.dec_novel_cpu));
    j.Raw("encode_redundant_mb_per_process_cpu_s", arr(micro.enc_redundant_cpu));
    j.Raw("decode_redundant_mb_per_process_cpu_s", arr(micro.dec_redundant_cpu));
    j.Dbl("novel_wire_fraction", micro.novel_wire, 5).Dbl("redundant_wire_fraction", micro.redundant_wire, 5);
    j.Int("novel_chunks_hit", micro.novel_hit).Int("novel_chunks_missed", micro.novel_missed);
    j.Int("novel_chunks_delta_of_missed", micro.novel_delta);
    j.Int("redundant_chunks_hit", micro.redundant_hit).Int("redundant_chunks_missed", micro.redundant_missed);
    j.Int("store_chunks", micro.chunks).Int("index_memory_bytes", micro.index_memory);
    j.Dbl("index_memory_bytes_per_chunk", micro.index_per_chunk, 2);
    if (!micro.error.empty()) j.Str("error", micro.error);
    std::vector<Target> all;
    for (auto* r : {&r1, &r2, &r3, &r4, &r5}) all.insert(all.end(), r->targets.begin(), r->targets.end());
    j.Raw("targets", TargetsArray(all));
    workload_json.push_back([&] {
      Json w;
      w.Str("id", "micro").Str("name", "codec microbenchmarks").Obj("results", j).Raw("targets", TargetsArray(all));
      return w.Dump();
    }());
  }

  // ======== report
  double total_seconds = Seconds(bench_start);
  std::string loadavg_end = ReadFileText("/proc/loadavg");
  std::vector<Target> misses;
  size_t target_count = 0;
  for (const auto& r : rows) {
    for (const auto& t : r.targets) {
      ++target_count;
      if (!t.met) misses.push_back(t);
    }
  }
  std::string captured = log::Captured();
  std::vector<std::string> log_lines;
  {
    std::istringstream in(captured);
    for (std::string line; std::getline(in, line);) {
      if (log_lines.size() < 50) log_lines.push_back(line);
    }
  }

  notes.insert(notes.begin(), {
      "Pair: a datacenter and a branch wanopt::Daemon in this process (2 event loops each), each with a chunk store in a "
      "fresh temporary directory (a fresh pair per workload), in front of lab::EchoOrigin on 127.0.0.1. The origin "
      "echoes every byte, so one transfer carries the payload in both directions.",
      "LAN and WAN bytes: the branch daemon's counters (lan_in+lan_out, wan_in+wan_out) once both daemons have no active "
      "session; WAN includes inner-channel framing and control frames. c→s: the client-to-server direction from the "
      "branch's connection records (wan_out / lan_in); round trip: both directions. Targets are judged on c→s: in the "
      "round trip the echoed bytes come back as references to chunks the datacenter just learned, so a first pass "
      "already looks ~50% reduced (random data included).",
      "Throughput: LAN bytes (both directions) / wall seconds of the transfers (for socat, the bytes the client sent and "
      "received). CPU s/GB: getrusage(RUSAGE_SELF) user+sys over the step / LAN GB, i.e. the whole process: both "
      "proxies, the echo origin and the client, which SHA-256 every byte (client: sent and echoed; origin: received). "
      "The socat row adds the socat processes (RUSAGE_CHILDREN); there this process is only the harness, whose own "
      "cost was " + Num(harness_cpu, 2) + " CPU s/GB (subtract it from a pair's figure for the proxies' share).",
      "codec alone: the same bytes through wanopt::dre::Encoder with a fresh chunk store and no sockets, encoded in "
      "128 KiB reads and flushed only at the end (frame headers counted): what the codec does without the session's "
      "pauses and first round trip.",
      "zstd -3: libzstd ZSTD_compress level 3, one call per file or per message. A second copy costs zstd -3 alone the "
      "same as the first. \"As the codec streams it\": zstd -3 with a 1 MiB window, flushed every 88 KiB, as "
      "wanopt/dre/encoder.cc runs its LZ stream.",
      "XCodec figures are quoted from the issue (WANProxy XCodec), not measured here.",
      "Microbenchmarks: one thread, wanopt::dre::Encoder/Decoder with a real ChunkStore per box in a temporary "
      "directory, input in 128 KiB reads, encode and decode timed separately; CPU s/GB there is per process CPU second "
      "(RocksDB background threads included)."});

  Json machine;
  machine.Int("nproc", static_cast<uint64_t>(sysconf(_SC_NPROCESSORS_ONLN)));
  machine.Str("kernel", uts.release).Str("kernel_version", uts.version).Str("machine", uts.machine);
  machine.Str("cpu_model", cpu_model).Str("date_utc", date).Str("git_commit", commit);
  machine.SInt("git_dirty_entries", dirty.empty() ? -1 : std::stoll(dirty));
  machine.Str("loadavg_start", loadavg_start).Str("loadavg_end", loadavg_end);
  machine.Str("compiler", __VERSION__);
#ifdef NDEBUG
  machine.Bool("optimized_ndebug", true);
#else
  machine.Bool("optimized_ndebug", false);
#endif
  machine.Str("zstd_library", ZSTD_versionString()).Str("zstd_cli", zstd_cli_version).Str("socat", socat);

  Json config;
  config.Bool("quick", args.quick).Int("big_bytes", big).Int("twice_bytes", twice_size).Int("edit_bytes", edit_size);
  config.Int("attachment_bytes", attachment_size).Int("mime_messages", mime_count);
  config.Int("messages_one_connection", messages_one).Int("messages_connection_each", messages_many);
  config.Int("client_threads", many_threads).Int("micro_bytes", std::min(micro_size, distinct)).SInt("micro_repeats", micro_repeats);
  Json text;
  std::vector<std::string> roots;
  for (const auto& r : corpus.roots) roots.push_back(Quote(r));
  text.Raw("roots", Json::Array(roots)).Int("distinct_bytes", distinct).Int("files", corpus.files);
  text.Int("skipped_binary_or_compressed", corpus.skipped_binary).Int("skipped_duplicate", corpus.skipped_duplicate);
  text.Int("skipped_other", corpus.skipped_other);
  config.Obj("text_corpus", text);

  auto strings = [](const std::vector<std::string>& v) {
    std::vector<std::string> q;
    for (const auto& s : v) q.push_back(Quote(s));
    return Json::Array(q);
  };
  std::vector<std::string> miss_json;
  for (const auto& m : misses) miss_json.push_back(TargetJson(m).Dump());

  Json root;
  root.Str("schema", "wanopt-dre-bench/1").Obj("machine", machine).Obj("config", config);
  root.Raw("workloads", Json::Array(workload_json));
  root.Int("targets", target_count).Int("targets_met", target_count - misses.size());
  root.Raw("misses", Json::Array(miss_json));
  root.Raw("anomalies", strings(anomalies)).Raw("notes", strings(notes)).Raw("log_lines", strings(log_lines));
  root.Dbl("total_seconds", total_seconds, 1);

  std::ostringstream md;
  md << "# wanopt DRE benchmark" << (args.quick ? " (--quick)" : "") << "\n\n";
  md << "- date: " << date << ", cpu: " << cpu_model << ", nproc: " << sysconf(_SC_NPROCESSORS_ONLN)
     << ", kernel: " << uts.release << ", git commit: " << commit << " (dirty entries: " << dirty << ")\n";
  md << "- loadavg at start: " << loadavg_start << "; at end: " << loadavg_end << "; run took " << Num(total_seconds, 0)
     << " s\n";
  md << "- text: " << Count(distinct) << " distinct bytes in " << corpus.files
     << " files from /usr/share/doc, /usr/share/common-licenses, /usr/lib/python3* (*.py, *.txt, license files); "
     << corpus.skipped_binary << " binary/compressed and " << corpus.skipped_duplicate << " duplicate files skipped\n";
  for (const auto& n : notes) md << "- " << n << "\n";
  md << "\n| workload | LAN bytes | WAN bytes | wanopt reduction | zstd -3 reduction | TCP-only pair / socat | "
        "throughput MB/s | CPU s/GB | target | met |\n";
  md << "|---|---:|---:|---|---|---|---:|---:|---|---|\n";
  for (const auto& r : rows) {
    md << "| " << r.workload << " | " << r.lan << " | " << r.wan << " | " << r.reduction << " | " << r.zstd << " | "
       << r.other << " | " << r.mbps << " | " << r.cpu << " | " << TargetCell(r) << " | " << MetCell(r) << " |\n";
  }
  md << "\nTargets met: " << (target_count - misses.size()) << " of " << target_count << ".\n";
  if (!misses.empty()) {
    md << "\nMissed:\n\n";
    for (const auto& m : misses) md << "- " << m.name << ": " << m.value << " (target " << m.target << ")\n";
  }
  if (!anomalies.empty()) {
    md << "\nAnomalies seen during the run:\n\n";
    for (const auto& a : anomalies) md << "- " << a << "\n";
  }
  if (!log_lines.empty()) {
    md << "\nWarnings the daemons logged (first " << log_lines.size() << "):\n\n```\n";
    for (const auto& l : log_lines) md << l << "\n";
    md << "```\n";
  }

  std::error_code ec;
  fs::create_directories(args.out, ec);
  std::string json_path = args.out + "/dre.json", md_path = args.out + "/dre.md";
  std::ofstream(json_path, std::ios::trunc) << root.Dump() << "\n";
  std::ofstream(md_path, std::ios::trunc) << md.str();
  std::printf("\n%s\nwrote %s and %s\n", md.str().c_str(), json_path.c_str(), md_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dre_bench: %s\n", e.what());
    return 1;
  }
}
