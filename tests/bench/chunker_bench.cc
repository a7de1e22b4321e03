// Micro-benchmark of the DRE chunker and fingerprints: the measurements behind the
// default chunk sizes in wanopt/dre/chunker.h.
//
// For avg_size 2, 4, 8 and 16 KiB (min = avg/4, max = avg*8) it measures, on one core:
//   - chunking throughput on random bytes and on real text, both with the whole input
//     in one buffer and fed in 128 KiB reads the way the DRE encoder sees a socket;
//   - chunking plus fingerprinting (keyed XXH3-128) of every chunk: the per-byte work
//     of the DRE encoder before its index lookups;
//   - dedup quality on the "edit" workload: a 32 MiB text v1 and a copy v2 with small
//     scattered inserts, deletes and overwrites (tens of bytes each) amounting to 1%
//     (and 0.1%) of its bytes. Reported: the fraction of v2's bytes in chunks whose
//     fingerprint also occurs in v1, the upper bound of what DRE saves on the second
//     transfer before LZ; and the mean chunk size.
//
// The text is every regular, uncompressed, non-binary file under /usr/share/doc and
// /usr/share/common-licenses and every *.py under /usr/lib/python3, in path order,
// identical files once, up to 64 MiB. Random bytes and edits come from SplitMix64
// with fixed seeds, so two runs on one machine chunk the same bytes.
//
// Writes a JSON object and a Markdown table (both also on stdout).
// Usage: chunker_bench [--quick] [--repeats N] [--json PATH] [--markdown PATH]
// MB is 10^6 bytes. Throughputs are the median of N runs (best in parentheses).
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "tests/bench/workloads.h"
#include "wanopt/dre/chunker.h"
#include "wanopt/dre/fingerprint.h"

namespace {

using wanopt::dre::Chunker;
using wanopt::dre::ChunkerOptions;
using wanopt::dre::Fingerprint;
using wanopt::dre::FingerprintKey;
using wanopt::dre::FingerprintOf;
using wanopt::bench::Bytes;
using wanopt::bench::Edit;
using wanopt::bench::EditStats;
using wanopt::bench::RandomBytes;
using wanopt::bench::SplitMix;

constexpr size_t kMiB = 1024 * 1024;
constexpr size_t kReadSize = 128 * 1024;  // the relay's buffer: what one socket read gives

struct Args {
  bool quick = false;
  int repeats = 7;
  std::string json = WANOPT_BENCH_RESULTS_DIR "/chunker.json";
  std::string markdown = WANOPT_BENCH_RESULTS_DIR "/chunker.md";
};

// ---- The text corpus ----

struct Corpus {
  Bytes bytes;
  size_t files = 0;
  size_t skipped_binary = 0;     // compressed or containing NUL bytes
  size_t skipped_duplicate = 0;  // same content as a file already taken
};

bool LooksBinary(const std::string& head) {
  static const char* const kMagics[] = {"\x1f\x8b", "\xfd" "7zXZ", "BZh", "\x89PNG", "\x28\xb5\x2f\xfd",
                                        "GIF8", "\xff\xd8\xff", "PK\x03\x04", "%PDF"};
  for (const char* magic : kMagics) {
    if (head.starts_with(magic)) return true;
  }
  return head.find('\0') != std::string::npos;
}

Corpus LoadTextCorpus(size_t limit) {
  namespace fs = std::filesystem;
  struct Root {
    const char* path;
    const char* only_extension;  // nullptr: any
  };
  const Root roots[] = {{"/usr/share/doc", nullptr},
                        {"/usr/share/common-licenses", nullptr},
                        {"/usr/lib/python3", ".py"}};
  Corpus corpus;
  corpus.bytes.reserve(limit);
  std::unordered_set<Fingerprint> seen;
  FingerprintKey key(std::array<uint8_t, 32>{});
  for (const Root& root : roots) {
    std::vector<fs::path> paths;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root.path, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      // symlink_status: a link to a file elsewhere would count that file twice.
      if (!fs::is_regular_file(it->symlink_status())) continue;
      if (root.only_extension && it->path().extension() != root.only_extension) continue;
      paths.push_back(it->path());
    }
    std::sort(paths.begin(), paths.end());
    for (const auto& path : paths) {
      if (corpus.bytes.size() >= limit) return corpus;
      std::ifstream in(path, std::ios::binary);
      std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (content.empty()) continue;
      if (LooksBinary(content.substr(0, 4096))) {
        ++corpus.skipped_binary;
        continue;
      }
      auto span = std::span(reinterpret_cast<const uint8_t*>(content.data()), content.size());
      if (!seen.insert(FingerprintOf(span, key)).second) {
        ++corpus.skipped_duplicate;
        continue;
      }
      size_t take = std::min(span.size(), limit - corpus.bytes.size());
      corpus.bytes.insert(corpus.bytes.end(), span.begin(), span.begin() + take);
      ++corpus.files;
    }
  }
  return corpus;
}

// ---- Chunking drivers ----

// Chunk lengths of `data` as one buffer.
std::vector<uint32_t> ChunkWhole(std::span<const uint8_t> data, const ChunkerOptions& options) {
  Chunker chunker(options);
  std::vector<uint32_t> lengths;
  lengths.reserve(data.size() / options.min_size + 1);
  while (size_t n = chunker.NextBoundary(data, true)) {
    lengths.push_back(static_cast<uint32_t>(n));
    data = data.subspan(n);
  }
  return lengths;
}

// Number of chunks of `data` arriving in kReadSize reads. The unfinished chunk's bytes
// stay where they are (no copy), as if the encoder's buffer held them.
size_t ChunkStreamed(std::span<const uint8_t> data, const ChunkerOptions& options) {
  Chunker chunker(options);
  size_t chunks = 0;
  size_t start = 0;
  size_t received = 0;
  while (received < data.size()) {
    received = std::min(data.size(), received + kReadSize);
    bool end = received == data.size();
    while (size_t n = chunker.NextBoundary(data.subspan(start, received - start), end)) {
      ++chunks;
      start += n;
    }
  }
  return chunks;
}

// XOR of all fingerprints, so that the work cannot be optimized away.
uint64_t ChunkAndFingerprint(std::span<const uint8_t> data, const ChunkerOptions& options,
                             const FingerprintKey& key) {
  Chunker chunker(options);
  uint64_t x = 0;
  while (size_t n = chunker.NextBoundary(data, true)) {
    x ^= FingerprintOf(data.first(n), key).lo;
    data = data.subspan(n);
  }
  return x;
}

// ---- Timing ----

struct Throughput {
  double median_mbps = 0;
  double best_mbps = 0;
  std::vector<double> samples_mbps;
};

volatile uint64_t g_sink;  // keeps results of timed work alive

Throughput Measure(size_t bytes, int repeats, const std::function<uint64_t()>& work) {
  Throughput t;
  g_sink = work();  // warm-up: page in the input, train the branch predictors
  for (int r = 0; r < repeats; ++r) {
    auto start = std::chrono::steady_clock::now();
    g_sink = work();
    std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
    t.samples_mbps.push_back(bytes / seconds.count() / 1e6);
  }
  auto sorted = t.samples_mbps;
  std::sort(sorted.begin(), sorted.end());
  t.median_mbps = sorted[sorted.size() / 2];
  t.best_mbps = sorted.back();
  return t;
}

// ---- The edit workload ----

struct Dedup {
  double covered = 0;          // fraction of v2's bytes in chunks also in v1
  double mean_chunk_v2 = 0;    // bytes
  size_t chunks_v2 = 0;
  size_t matched_chunks = 0;
  // Bytes DRE would send for v2, as a fraction of v2: unmatched bytes plus a 20-byte
  // reference (fingerprint and framing) per matched chunk. Before LZ.
  double wire_estimate = 0;
};

constexpr size_t kReferenceBytes = 20;

Dedup MeasureDedup(std::span<const uint8_t> v1, std::span<const uint8_t> v2,
                   const std::vector<uint32_t>& lengths1, const std::vector<uint32_t>& lengths2,
                   const FingerprintKey& key) {
  std::unordered_set<Fingerprint> seen;
  size_t at = 0;
  for (uint32_t n : lengths1) {
    seen.insert(FingerprintOf(v1.subspan(at, n), key));
    at += n;
  }
  Dedup d;
  size_t covered = 0;
  at = 0;
  for (uint32_t n : lengths2) {
    if (seen.contains(FingerprintOf(v2.subspan(at, n), key))) {
      covered += n;
      ++d.matched_chunks;
    }
    at += n;
  }
  d.chunks_v2 = lengths2.size();
  d.covered = double(covered) / v2.size();
  d.mean_chunk_v2 = double(v2.size()) / lengths2.size();
  d.wire_estimate = double(v2.size() - covered + d.matched_chunks * kReferenceBytes) / v2.size();
  return d;
}

std::vector<uint32_t> FixedBlocks(size_t total, size_t block) {
  std::vector<uint32_t> lengths(total / block, static_cast<uint32_t>(block));
  if (total % block) lengths.push_back(static_cast<uint32_t>(total % block));
  return lengths;
}

// ---- Reporting ----

std::string Run(const std::string& command) {
  std::string out;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[256];
    while (fgets(buffer, sizeof buffer, pipe)) out += buffer;
    pclose(pipe);
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string FirstLine(const std::string& path, const std::string& prefix) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(prefix)) {
      auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "";
}

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string Num(double v, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string JsonThroughput(const Throughput& t) {
  std::string s = "{\"median_mbps\": " + Num(t.median_mbps) + ", \"best_mbps\": " + Num(t.best_mbps) +
                  ", \"samples_mbps\": [";
  for (size_t i = 0; i < t.samples_mbps.size(); ++i) s += (i ? ", " : "") + Num(t.samples_mbps[i]);
  return s + "]}";
}

std::string Cell(const Throughput& t) { return Num(t.median_mbps, 0) + " (" + Num(t.best_mbps, 0) + ")"; }

std::string JsonDedup(const Dedup& d) {
  return "{\"covered\": " + Num(d.covered, 4) + ", \"mean_chunk_bytes\": " + Num(d.mean_chunk_v2, 0) +
         ", \"chunks\": " + std::to_string(d.chunks_v2) + ", \"matched_chunks\": " +
         std::to_string(d.matched_chunks) + ", \"wire_estimate\": " + Num(d.wire_estimate, 4) + "}";
}

std::string Percent(double fraction) { return Num(100 * fraction, 1) + "%"; }

struct SizeResult {
  ChunkerOptions options;
  Throughput random_whole, random_streamed, text_whole, text_streamed, text_fingerprinted;
  double mean_chunk_random = 0, mean_chunk_text = 0;
  double max_size_share_text = 0;  // fraction of text chunks cut at max_size
  Dedup same, edit1, edit01;
};

bool WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc);
  out << content;
  return static_cast<bool>(out);
}

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--quick") args.quick = true;
    else if (a == "--repeats") args.repeats = std::max(1, std::stoi(value()));
    else if (a == "--json") args.json = value();
    else if (a == "--markdown") args.markdown = value();
    else {
      std::cerr << "usage: chunker_bench [--quick] [--repeats N] [--json PATH] [--markdown PATH]\n";
      return 2;
    }
  }
  if (args.quick) args.repeats = std::min(args.repeats, 3);
  const size_t throughput_bytes = (args.quick ? 8 : 64) * kMiB;
  const size_t edit_bytes = (args.quick ? 4 : 32) * kMiB;

  std::string loadavg_start = Run("cat /proc/loadavg");
  Bytes random = RandomBytes(throughput_bytes, 1);
  Corpus corpus = LoadTextCorpus(throughput_bytes);
  if (corpus.bytes.size() < edit_bytes) {
    std::cerr << "chunker_bench: only " << corpus.bytes.size() << " bytes of text found\n";
    return 2;
  }
  std::span<const uint8_t> text = corpus.bytes;
  std::span<const uint8_t> v1 = text.first(edit_bytes);
  EditStats stats1, stats01;
  Bytes v2_1 = Edit(v1, 0.01, 2, &stats1);
  Bytes v2_01 = Edit(v1, 0.001, 3, &stats01);
  FingerprintKey key(std::array<uint8_t, 32>{1, 2, 3});

  std::vector<SizeResult> results;
  for (size_t avg : {2048, 4096, 8192, 16384}) {
    SizeResult r;
    r.options = {.min_size = avg / 4, .avg_size = avg, .max_size = avg * 8};
    const auto& o = r.options;
    std::cerr << "avg " << avg << "...\n";
    r.random_whole = Measure(random.size(), args.repeats, [&] { return ChunkWhole(random, o).size(); });
    r.random_streamed = Measure(random.size(), args.repeats, [&] { return ChunkStreamed(random, o); });
    r.text_whole = Measure(text.size(), args.repeats, [&] { return ChunkWhole(text, o).size(); });
    r.text_streamed = Measure(text.size(), args.repeats, [&] { return ChunkStreamed(text, o); });
    r.text_fingerprinted =
        Measure(text.size(), args.repeats, [&] { return ChunkAndFingerprint(text, o, key); });
    r.mean_chunk_random = double(random.size()) / ChunkWhole(random, o).size();
    auto text_lengths = ChunkWhole(text, o);
    r.mean_chunk_text = double(text.size()) / text_lengths.size();
    r.max_size_share_text =
        double(std::count(text_lengths.begin(), text_lengths.end(), o.max_size)) / text_lengths.size();
    auto l1 = ChunkWhole(v1, o);
    r.same = MeasureDedup(v1, v1, l1, l1, key);
    r.edit1 = MeasureDedup(v1, v2_1, l1, ChunkWhole(v2_1, o), key);
    r.edit01 = MeasureDedup(v1, v2_01, l1, ChunkWhole(v2_01, o), key);
    results.push_back(r);
  }
  // Fixed-size blocks for comparison: what content-defined cut points buy.
  auto fixed_v1 = FixedBlocks(v1.size(), 8192);
  Dedup fixed_same = MeasureDedup(v1, v1, fixed_v1, fixed_v1, key);
  Dedup fixed1 = MeasureDedup(v1, v2_1, FixedBlocks(v1.size(), 8192), FixedBlocks(v2_1.size(), 8192), key);
  Dedup fixed01 =
      MeasureDedup(v1, v2_01, FixedBlocks(v1.size(), 8192), FixedBlocks(v2_01.size(), 8192), key);

  // ---- Machine ----
  utsname uts{};
  uname(&uts);
  std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::string cpu = FirstLine("/proc/cpuinfo", "model name");
  std::string commit = Run("git -C " WANOPT_BENCH_RESULTS_DIR " rev-parse HEAD 2>/dev/null");
  std::string dirty = Run("git -C " WANOPT_BENCH_RESULTS_DIR " status --porcelain 2>/dev/null | wc -l");
  std::string loadavg_end = Run("cat /proc/loadavg");
#ifdef NDEBUG
  const char* build = "optimized (NDEBUG)";
#else
  const char* build = "debug (assertions on): numbers not representative";
#endif

  // ---- JSON ----
  std::ostringstream j;
  j << "{\n  \"schema\": \"wanopt-chunker-bench/1\",\n";
  j << "  \"machine\": {\"date_utc\": " << Quote(date) << ", \"host\": " << Quote(uts.nodename)
    << ", \"kernel\": " << Quote(uts.release) << ", \"cpu_model\": " << Quote(cpu)
    << ", \"nproc\": " << sysconf(_SC_NPROCESSORS_ONLN) << ", \"compiler\": " << Quote(__VERSION__)
    << ", \"build\": " << Quote(build) << ", \"git_commit\": " << Quote(commit)
    << ", \"git_dirty_entries\": " << (dirty.empty() ? "null" : dirty)
    << ", \"loadavg_start\": " << Quote(loadavg_start) << ", \"loadavg_end\": " << Quote(loadavg_end) << "},\n";
  j << "  \"parameters\": {\"quick\": " << (args.quick ? "true" : "false") << ", \"repeats\": " << args.repeats
    << ", \"read_size\": " << kReadSize << ", \"random_bytes\": " << random.size()
    << ", \"text_bytes\": " << text.size() << ", \"text_files\": " << corpus.files
    << ", \"text_skipped_binary\": " << corpus.skipped_binary
    << ", \"text_skipped_duplicate\": " << corpus.skipped_duplicate
    << ", \"text_roots\": [\"/usr/share/doc\", \"/usr/share/common-licenses\", \"/usr/lib/python3/**/*.py\"]"
    << ", \"edit_v1_bytes\": " << v1.size() << ", \"edit_length\": \"10..90 bytes, mean 50\""
    << ", \"reference_bytes\": " << kReferenceBytes << ", \"mb\": 1000000},\n";
  auto edit_json = [&](const EditStats& s, const Bytes& v2) {
    return "{\"inserts\": " + std::to_string(s.inserts) + ", \"deletes\": " + std::to_string(s.deletes) +
           ", \"overwrites\": " + std::to_string(s.overwrites) + ", \"bytes_touched\": " +
           std::to_string(s.bytes_touched) + ", \"v2_bytes\": " + std::to_string(v2.size()) + "}";
  };
  j << "  \"edits\": {\"1%\": " << edit_json(stats1, v2_1) << ", \"0.1%\": " << edit_json(stats01, v2_01)
    << "},\n";
  j << "  \"sizes\": [\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    j << "    {\"min_size\": " << r.options.min_size << ", \"avg_size\": " << r.options.avg_size
      << ", \"max_size\": " << r.options.max_size << ",\n";
    j << "     \"random_whole\": " << JsonThroughput(r.random_whole) << ",\n";
    j << "     \"random_streamed\": " << JsonThroughput(r.random_streamed) << ",\n";
    j << "     \"text_whole\": " << JsonThroughput(r.text_whole) << ",\n";
    j << "     \"text_streamed\": " << JsonThroughput(r.text_streamed) << ",\n";
    j << "     \"text_chunk_and_fingerprint\": " << JsonThroughput(r.text_fingerprinted) << ",\n";
    j << "     \"mean_chunk_random\": " << Num(r.mean_chunk_random, 0)
      << ", \"mean_chunk_text\": " << Num(r.mean_chunk_text, 0)
      << ", \"max_size_share_text\": " << Num(r.max_size_share_text, 4) << ",\n";
    j << "     \"same_file_twice\": " << JsonDedup(r.same) << ",\n";
    j << "     \"edit_1pct\": " << JsonDedup(r.edit1) << ",\n";
    j << "     \"edit_0_1pct\": " << JsonDedup(r.edit01) << "}" << (i + 1 < results.size() ? "," : "") << "\n";
  }
  j << "  ],\n";
  j << "  \"fixed_8k_blocks\": {\"same_file_twice\": " << JsonDedup(fixed_same) << ", \"edit_1pct\": " << JsonDedup(fixed1) << ", \"edit_0_1pct\": " << JsonDedup(fixed01)
    << "}\n}\n";

  // ---- Markdown ----
  std::ostringstream m;
  m << "# wanopt chunker benchmark (FastCDC, one core)\n\n";
  m << "- date: " << date << ", host: " << uts.nodename << ", cpu: " << cpu
    << ", nproc: " << sysconf(_SC_NPROCESSORS_ONLN) << ", kernel: " << uts.release << "\n";
  m << "- build: " << build << ", " << __VERSION__ << "; git commit: " << commit << " (dirty entries: " << dirty
    << ")\n";
  m << "- loadavg at start: " << loadavg_start << "; at end: " << loadavg_end << "\n";
  m << "- random: " << random.size() / kMiB << " MiB SplitMix64; text: " << text.size() / kMiB << " MiB, "
    << corpus.files << " files from /usr/share/doc, /usr/share/common-licenses, /usr/lib/python3 *.py ("
    << corpus.skipped_binary << " binary/compressed and " << corpus.skipped_duplicate
    << " duplicate files skipped)\n";
  m << "- MB/s = 10^6 bytes/s, median of " << args.repeats
    << " runs (best in parentheses); \"128 KiB reads\" feeds the input the way the encoder sees a socket\n\n";
  m << "| min / avg / max | random, one buffer MB/s | random, 128 KiB reads MB/s | text, one buffer MB/s"
       " | text, 128 KiB reads MB/s | text, chunk + fingerprint MB/s | mean chunk random / text | max-size chunks (text) |\n";
  m << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  auto size = [](size_t n) { return n % 1024 ? std::to_string(n) : std::to_string(n / 1024) + "K"; };
  auto sizes = [&](const ChunkerOptions& o) {
    const ChunkerOptions d;
    bool is_default = o.min_size == d.min_size && o.avg_size == d.avg_size && o.max_size == d.max_size;
    return size(o.min_size) + " / " + size(o.avg_size) + " / " + size(o.max_size) + (is_default ? " (default)" : "");
  };
  for (const auto& r : results) {
    m << "| " << sizes(r.options) << " | " << Cell(r.random_whole) << " | " << Cell(r.random_streamed) << " | "
      << Cell(r.text_whole) << " | " << Cell(r.text_streamed) << " | " << Cell(r.text_fingerprinted) << " | "
      << Num(r.mean_chunk_random, 0) << " / " << Num(r.mean_chunk_text, 0) << " | "
      << Percent(r.max_size_share_text) << " |\n";
  }
  m << "\nDedup of an edited copy: v1 = the first " << v1.size() / kMiB
    << " MiB of the text; v2 = v1 with scattered edits of 10..90 bytes (inserts, deletes, overwrites; 1%: "
    << stats1.inserts + stats1.deletes + stats1.overwrites << " edits, " << stats1.bytes_touched
    << " bytes; 0.1%: " << stats01.inserts + stats01.deletes + stats01.overwrites << " edits, "
    << stats01.bytes_touched << " bytes). \"covered\" = share of v2's bytes in chunks whose fingerprint occurs in v1"
    << " (upper bound of DRE reduction before LZ); \"wire\" = (uncovered bytes + " << kReferenceBytes
    << " B per matched chunk) / v2 bytes.\n\n";
  m << "| min / avg / max | same file twice: covered | same file twice: wire | 1% edits: covered | 1% edits: wire"
       " | 0.1% edits: covered | 0.1% edits: wire | mean chunk (v2 of 1%) |\n";
  m << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : results) {
    m << "| " << sizes(r.options) << " | " << Percent(r.same.covered) << " | " << Num(100 * r.same.wire_estimate, 2)
      << "% | " << Percent(r.edit1.covered) << " | "
      << Percent(r.edit1.wire_estimate) << " | " << Percent(r.edit01.covered) << " | "
      << Percent(r.edit01.wire_estimate) << " | " << Num(r.edit1.mean_chunk_v2, 0) << " |\n";
  }
  m << "| fixed 8K blocks | " << Percent(fixed_same.covered) << " | " << Num(100 * fixed_same.wire_estimate, 2)
    << "% | " << Percent(fixed1.covered) << " | " << Percent(fixed1.wire_estimate) << " | "
    << Percent(fixed01.covered) << " | " << Percent(fixed01.wire_estimate) << " | 8192 |\n";

  std::cout << j.str() << "\n" << m.str();
  bool ok = WriteFile(args.json, j.str()) && WriteFile(args.markdown, m.str());
  if (!ok) std::cerr << "chunker_bench: could not write " << args.json << " or " << args.markdown << "\n";
  for (const auto& r : results) {
    if (r.same.covered != 1.0) {
      std::cerr << "chunker_bench: same file twice not fully covered at avg " << r.options.avg_size << "\n";
      ok = false;
    }
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "chunker_bench: " << e.what() << "\n";
    return 2;
  }
}
