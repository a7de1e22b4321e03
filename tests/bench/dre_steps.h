// One run of dre_bench: its sizes, the tools found on the machine, and the measured
// steps (workloads 1..6 and the codec microbenchmarks), each adding its table rows,
// its dre.json workload object, notes and anomalies. Steps run in order, one at a
// time; main (dre_bench.cc) writes the report from what they collected.
//   dre_file_steps.cc     1 random, 2 real text, 3 one text twice, 4 an edited copy
//   dre_message_steps.cc  5 one attachment in MIME messages, 6 small messages
//   dre_codec.cc          the codec microbenchmarks
// Benchmarks only.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "tests/bench/dre_data.h"
#include "tests/bench/dre_pair.h"
#include "tests/bench/dre_report.h"
#include "tests/bench/dre_util.h"

namespace wanopt::bench {

// Quoted in the issue for WANProxy's XCodec; not measured here.
constexpr double kXcodecSecondPass = 98.7;
constexpr double kXcodecEdit = 93.4;
constexpr double kXcodecMails = 97.4;

class DreBench {
 public:
  // REQUIRES: `corpus` outlives this object and holds at least 8 MiB.
  DreBench(bool quick_run, const Corpus& text_corpus) : quick(quick_run), corpus(text_corpus) {}

  void RunRandom();
  void RunText();
  void RunTwice();
  void RunEdited();
  void RunMime();
  void RunSmallMessages();
  void RunMicro();

  // The sizes of a run; --quick makes the big ones smaller.
  const bool quick;
  const size_t big = (quick ? 16 : 256) * kMiB;
  const size_t twice_size = (quick ? 8 : 64) * kMiB;
  const size_t edit_size = (quick ? 4 : 32) * kMiB;
  const size_t attachment_size = 3 * kMiB;
  const size_t mime_count = 8;
  const size_t messages_one = quick ? 500 : 5000;
  const size_t messages_many = quick ? 200 : 2000;
  const unsigned many_threads = 8;
  const size_t micro_size = (quick ? 8 : 64) * kMiB;
  const int micro_repeats = quick ? 1 : 3;

  const Corpus& corpus;
  const size_t distinct = corpus.bytes.size();

  // Paths of the tools, "" when not installed (set before the steps run).
  std::string socat, zstd_cli, zstd_cli_version;

  // What the steps collected, in run order.
  std::vector<Row> rows;
  std::vector<std::string> workload_json;
  std::vector<std::string> notes;
  std::vector<std::string> anomalies;  // things that looked wrong in the product
  // The harness's own CPU s/GB, measured by RunRandom's socat chain.
  double harness_cpu = 0;

 private:
  // Records what looks wrong in a pair run, and policies other than `letter` applied.
  void CheckRun(const Run& r);
  void CheckPolicy(const Run& r, char letter);
  void Finish(const Run& r, char letter);
};

}  // namespace wanopt::bench
