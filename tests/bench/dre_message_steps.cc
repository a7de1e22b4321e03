// dre_bench's workloads of messages: 5 one attachment in MIME messages (one connection
// each, in turn), 6 thousands of small messages on one connection and on a connection
// each. See dre_steps.h.
#include <cstdio>

#include "tests/bench/dre_baselines.h"
#include "tests/bench/dre_codec.h"
#include "tests/bench/dre_steps.h"

namespace wanopt::bench {

void DreBench::RunMime() {
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
        Finish(runs.back(), 'F');
      }
      t = MeasurePair(pair, kRuleT, "5 messages 2..8, TCP-only pair", Pointers(messages, 1));
      Finish(t, 'T');
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
}

void DreBench::RunSmallMessages() {
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
      Finish(fa, 'F');
      ta = MeasurePair(pair, kRuleT, "6a same, TCP-only pair", joined);
      Finish(ta, 'T');
    }
    {
      BenchPair pair;
      fb = MeasurePair(pair, kRuleF, "6b " + std::to_string(messages_many) + " messages, own connection each, F",
                       Pointers(many), many_threads);
      Finish(fb, 'F');
      tb = MeasurePair(pair, kRuleT, "6b same, TCP-only pair", Pointers(many), many_threads);
      Finish(tb, 'T');
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
}

}  // namespace wanopt::bench
