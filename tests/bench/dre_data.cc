// dre_bench's workload data (see dre_data.h).
#include "tests/bench/dre_data.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <unordered_set>

namespace wanopt::bench {
namespace {

namespace fs = std::filesystem;

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

}  // namespace

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
Bytes TextOf(const Corpus& corpus, size_t size, size_t offset) {
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

}  // namespace wanopt::bench
