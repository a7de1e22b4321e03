// dre_bench's codec without sockets: the codec-alone wire bytes and the codec
// microbenchmarks (see dre_codec.h and dre_steps.h).
#include "tests/bench/dre_codec.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>

#include "datastore/chunk_store.h"
#include "tests/bench/dre_steps.h"
#include "tests/bench/dre_util.h"
#include "wanopt/dre/codec.h"
#include "wanopt/dre/peer_table.h"

namespace wanopt::bench {
namespace {

// A box's read cache unless [dre] read_cache_mb says otherwise.
const uint64_t kDefaultReadCache = datastore::ChunkStoreOptions{}.cache_bytes;

struct CodecBox {
  std::string dir;
  std::unique_ptr<datastore::ChunkStore> store;
  std::unique_ptr<dre::PeerTable> peers;
  // `cache_bytes`: the store's read cache (a box's [dre] read_cache_mb).
  CodecBox(const std::string& path, uint64_t cache_bytes = kDefaultReadCache) : dir(path) {
    std::string error;
    datastore::ChunkStoreOptions options;
    options.path = dir + "/store";
    options.cache_bytes = cache_bytes;
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
  // Its pages touched before the clock starts: a session decodes into a LAN buffer it
  // reuses, and the kernel zeroing 64 MiB of fresh pages (a fifth of the redundant
  // pass's decode time, perf says) is not the decoder's work.
  std::span<uint8_t> fresh = out.WritableTail();
  std::memset(fresh.data(), 0, fresh.size());
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

MicroResult CodecMicro(std::span<const uint8_t> text, int repeats, uint64_t cache_bytes) {
  MicroResult m;
  m.bytes = text.size();
  m.repeats = repeats;
  const dre::Seed seed = {1, 2, 3};
  for (int r = 0; r < repeats; ++r) {
    TempDir dir;
    CodecBox a(dir.path + "/a", cache_bytes), b(dir.path + "/b", cache_bytes);
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

}  // namespace

std::vector<uint64_t> CodecAloneWire(const std::vector<const Bytes*>& payloads, std::vector<AloneStats>* stats) {
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

void DreBench::RunMicro() {
  std::printf("\n[micro] codec without sockets: %s of distinct text, %d run(s)\n", MiB(std::min(micro_size, distinct)).c_str(),
              micro_repeats);
  std::fflush(stdout);
  MicroResult micro, cached;
  {
    Bytes text = TextOf(corpus, std::min(micro_size, distinct), 0);
    micro = CodecMicro(text, micro_repeats, kDefaultReadCache);
    // The same with a read cache that holds the whole repeat ([dre] read_cache_mb).
    cached = CodecMicro(text, micro_repeats, 2 * text.size() + (uint64_t{8} << 20));
    for (const MicroResult* m : {&micro, &cached}) {
      if (!m->error.empty()) anomalies.push_back("codec microbenchmark: " + m->error);
      if (m->repairs) anomalies.push_back("codec microbenchmark: " + std::to_string(m->repairs) + " repairs");
    }
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
    Row r4 = micro_row("M4. codec decode, fully redundant (read cache " + MiB(kDefaultReadCache) +
                           ": the rest read back from the segment files)",
                       dr, Median(micro.dec_redundant_cpu),
                       {{"decode redundant faster than encode", "> encode (" + Num(er, 0) + " MB/s)", Num(dr, 0) + " MB/s",
                         ok && dr > er}});
    double dc = Median(cached.dec_redundant);
    Row r4b = micro_row("M4b. the same, the read cache holding the whole repeat (read_cache_mb)", dc,
                        Median(cached.dec_redundant_cpu),
                        {{"decode redundant from the cache faster than encode", "> encode (" + Num(er, 0) + " MB/s)",
                          Num(dc, 0) + " MB/s", cached.error.empty() && dc > er}});
    Row r5;
    r5.workload = "M5. chunk store index memory per stored chunk";
    r5.other = Count(micro.index_memory) + " B / " + Count(micro.chunks) + " chunks";
    r5.targets = {{"index memory per chunk", "≤ 64 B", Num(micro.index_per_chunk, 1) + " B",
                   ok && micro.chunks && micro.index_per_chunk <= 64}};
    for (auto* r : {&r1, &r2, &r3, &r4, &r4b, &r5}) rows.push_back(*r);
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
    j.Int("read_cache_bytes", kDefaultReadCache);
    j.Dbl("decode_redundant_whole_repeat_cached_mbps_median", dc, 1)
        .Raw("decode_redundant_whole_repeat_cached_mbps", arr(cached.dec_redundant));
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
    for (auto* r : {&r1, &r2, &r3, &r4, &r4b, &r5}) all.insert(all.end(), r->targets.begin(), r->targets.end());
    j.Raw("targets", TargetsArray(all));
    workload_json.push_back([&] {
      Json w;
      w.Str("id", "micro").Str("name", "codec microbenchmarks").Obj("results", j).Raw("targets", TargetsArray(all));
      return w.Dump();
    }());
  }
}

}  // namespace wanopt::bench
