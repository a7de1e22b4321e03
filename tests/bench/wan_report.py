"""wan_bench's summary (medians, speed-ups, targets met) and its Markdown."""

from benchkit import fmt_b, fmt_s, fmt_x, median
from wan_lab import PROFILES, TARGET_FIRST, TARGET_SECOND, TINY_BYTES


def summarize(results):
    summ = {}
    for pname, prof in results["profiles"].items():
        rtt = 2 * prof["profile"]["delay_ms"] / 1000
        rows = {}
        for key in (("direct", "-"), ("pair", "first"), ("pair", "second")):
            ss = [s for s in prof["transfers"] if (s["path"], s["pass"]) == key and s.get("sha256_ok")]
            allss = [s for s in prof["transfers"] if (s["path"], s["pass"]) == key]
            rows["%s/%s" % key] = {
                "n_ok": len(ss), "n": len(allss),
                "seconds_median": median([s["seconds"] for s in ss]),
                "seconds_samples": [s["seconds"] for s in allss],
                "starttransfer_median": median([s["curl"].get("time_starttransfer") for s in ss]),
                "wan_ip_bytes_median": median([s.get("wan_ip_bytes") for s in ss]),
                "lan_bytes_median": median([s.get("lan_bytes") for s in ss]),
                "wan_bytes_median": median([s.get("wan_bytes") for s in ss]),
                "reduction_median": median([s.get("reduction") for s in ss]),
                "dc_lz_level_peak_median": median([s.get("dc_lz_level_peak") for s in ss]),
                "optimized_all": all(s.get("optimized") for s in ss) if key[0] == "pair" and ss else None,
                "box_cpu_seconds_median": {b: median([(s.get("box_cpu_seconds") or {}).get(b) for s in ss])
                                           for b in ("branch", "dc")} if key[0] == "pair" else None,
            }
        d = rows["direct/-"]["seconds_median"]
        d_ip = rows["direct/-"]["wan_ip_bytes_median"]
        for key, target in (("pair/first", TARGET_FIRST), ("pair/second", TARGET_SECOND)):
            r = rows[key]
            r["speedup_vs_direct"] = d / r["seconds_median"] if d and r["seconds_median"] else None
            r["wan_ip_reduction_vs_direct"] = (1 - r["wan_ip_bytes_median"] / d_ip
                                               if d_ip and r["wan_ip_bytes_median"] else None)
            r["target_speedup"] = target
            r["met"] = None if r["speedup_vs_direct"] is None else r["speedup_vs_direct"] >= target
        setup = {}
        for path in ("direct", "pair"):
            ss = [s for s in prof["setup"] if s["path"] == path and s["ok"]]
            setup[path] = {"n": len(ss),
                           "time_connect_median": median([s["time_connect"] for s in ss]),
                           "time_starttransfer_median": median([s["time_starttransfer"] for s in ss]),
                           "time_connect_min": min([s["time_connect"] for s in ss], default=None),
                           "time_connect_max": max([s["time_connect"] for s in ss], default=None),
                           "time_starttransfer_min": min([s["time_starttransfer"] for s in ss], default=None),
                           "time_starttransfer_max": max([s["time_starttransfer"] for s in ss], default=None)}
        for k in ("time_connect", "time_starttransfer"):
            a, b = setup["direct"][k + "_median"], setup["pair"][k + "_median"]
            setup[k + "_ratio"] = b / a if a and b else None
            setup[k + "_extra_rtts"] = (b - a) / rtt if a is not None and b is not None else None
        setup["no_extra_round_trip_on_connect"] = (None if setup["time_connect_extra_rtts"] is None
                                                  else setup["time_connect_extra_rtts"] < 0.5)
        firsts = [s for s in prof["transfers"] if s["pass"] == "first" and s.get("curl")]
        setup["first_connection_after_fresh_start"] = {
            "time_connect": [s["curl"].get("time_connect") for s in firsts],
            "time_starttransfer": [s["curl"].get("time_starttransfer") for s in firsts]}
        summ[pname] = {"transfer": rows, "setup": setup}
    results["summary"] = summ



def fmt_pct(v):
    return "-" if v is None else "%.2f%%" % (100 * v)


def fmt_ms(v):
    return "-" if v is None else "%.1f" % (1000 * v)


def render_markdown(results):
    m = results["machine"]
    t = results.get("text", {})
    out = ["# wanopt WAN benchmark (interception and auto-discovery, namespace lab)", ""]
    out.append("- date: %s, host: %s, nproc: %s, kernel: %s, cpu: %s" % (
        m.get("date_utc"), m.get("hostname"), m.get("nproc"), m.get("kernel"), m.get("cpu_model")))
    out.append("- git commit: %s (dirty entries: %s); wanopt binary sha256 %s (built %s)" % (
        m.get("git_commit"), m.get("git_dirty_entries"), (m.get("wanopt_binary") or {}).get("sha256", "?")[:16],
        (m.get("wanopt_binary") or {}).get("mtime_utc")))
    out.append("- run: `%s`; %s; whole run %.0f s (%.1f min); loadavg start %s, end %s" % (
        results["config"]["command"], "QUICK smoke run" if results["config"]["quick"] else "full run",
        results.get("wall_seconds", 0), results.get("wall_seconds", 0) / 60, m.get("loadavg_start"),
        m.get("loadavg_end")))
    out.append("")
    out.append("## Method")
    out.append("")
    out.append("`tests/bench/wan_bench.py`: the namespace lab (`tests/lab/netlab up --delay-ms D --rate-mbit R "
               "--intercept`, client -- branch == WAN == dc -- server), one `wanopt run` per box namespace with "
               "the configs of `tests/lab/discovery_test.py` (TLS peering with the lab PKI of `tests/lab/make-pki`, "
               "`[intercept]` auto-discovery, `threads = 1`, policy F) plus `[wan] congestion = \"bbr\"`, "
               "`bandwidth_mbit`/`rtt_ms` = the profile, and `[dre] max_size_mb = 1024`. The origin is "
               "`python3 -m http.server` in the server namespace; curl in the client namespace fetches "
               "into tmpfs, and every fetch is SHA-256 verified.")
    out.append("")
    out.append("- **direct**: no daemon running; the interception rules fail open (`--queue-bypass`), "
               "the boxes are plain routers.")
    out.append("- **first pass**: both boxes restarted with wiped datastores just before; **second pass**: the "
               "same file again, same daemons and stores.")
    out.append("- Repeats interleaved (direct, first, second, direct, ...); seconds = curl's `time_total`, median "
               "over repeats. WAN bytes = the branch status API's `wan_in + wan_out` for the connection (inner "
               "channel payload) against `lan_in + lan_out`; WAN IP bytes = the delay line's forwarded bytes, "
               "both directions, headers and TLS included (direct too).")
    out.append("- Set-up: curl's `time_connect` and `time_starttransfer` for a %d-byte file, one new connection "
               "each, direct (daemons stopped) and through the pair (warm, after the passes), in blocks inside "
               "each repeat." % TINY_BYTES)
    if t:
        out.append("- Text: %s MiB (%s bytes, sha256 %s...), %s, seed %s, trained on %s distinct lines (%s "
                   "bytes) from %s files of this machine's %s. **`zstd -3` ratio %.2fx** (%s bytes); "
                   "`zstd -3 --long=27` %.2fx (long-range repeats would show here); `zstd -9` %.2fx; `zstd -19` %.2fx." % (
                       t["size"] >> 20, fmt_b(t["size"]), t["sha256"][:16], t["generator"], t["seed"],
                       fmt_b(t["corpus_distinct_lines"]), fmt_b(t["corpus_bytes"]), t["corpus_files_used"],
                       t["corpus"], t["zstd3_ratio"], fmt_b(t["zstd3_bytes"]), t.get("zstd3_long_ratio") or 0,
                       t.get("zstd9_ratio") or 0, t.get("zstd19_ratio") or 0))
    for pname, prof in results["profiles"].items():
        oc = prof.get("origin_check", {})
        out.append("- Profile %s: ping client -> server %s ms (min/avg/max); origin alone (curl from the dc "
                   "namespace) %s MB/s; %d repeat(s)." % (
                       pname, "/".join("%.1f" % prof["ping_rtt_ms"][k] for k in ("min", "avg", "max"))
                       if prof.get("ping_rtt_ms") else "?", oc.get("MB_per_s"), prof["repeats"]))
    out.append("")
    out.append("## Transfer of the text file")
    out.append("")
    out.append("| profile | path | pass | seconds (median) | samples | first byte s | speed-up vs direct | LAN bytes "
               "| WAN bytes (inner channel) | reduction | WAN IP bytes (delay line) | vs direct | box CPU s "
               "(branch/dc) | target | met |")
    out.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for pname, s in results.get("summary", {}).items():
        label = PROFILES[pname]["label"]
        for key, path, pas in (("direct/-", "direct", "-"), ("pair/first", "**wanopt pair**", "first"),
                               ("pair/second", "**wanopt pair**", "second")):
            r = s["transfer"][key]
            samples = ", ".join(fmt_s(v) for v in r["seconds_samples"])
            if key == "direct/-":
                out.append("| %s | %s | %s | %s | %s | %s | 1.00x | - | - | - | %s | 1.00x | - | - | - |" % (
                    label, path, pas, fmt_s(r["seconds_median"]), samples, fmt_s(r["starttransfer_median"]),
                    fmt_b(r["wan_ip_bytes_median"])))
            else:
                met = "-" if r["met"] is None else ("**yes**" if r["met"] else "**NO**")
                wan_ip_ratio = (r["wan_ip_bytes_median"] / s["transfer"]["direct/-"]["wan_ip_bytes_median"]
                                if r["wan_ip_bytes_median"] and s["transfer"]["direct/-"]["wan_ip_bytes_median"]
                                else None)
                cpu = r.get("box_cpu_seconds_median") or {}
                out.append("| %s | %s | %s | %s | %s | %s | **%s** | %s | %s | %s | %s | %s | %s | >= %.0fx | %s |" % (
                    label, path, pas, fmt_s(r["seconds_median"]), samples, fmt_s(r["starttransfer_median"]),
                    fmt_x(r["speedup_vs_direct"]),
                    fmt_b(r["lan_bytes_median"]), fmt_b(r["wan_bytes_median"]), fmt_pct(r["reduction_median"]),
                    fmt_b(r["wan_ip_bytes_median"]), "%.4fx" % wan_ip_ratio if wan_ip_ratio else "-",
                    "%s / %s" % (fmt_s(cpu.get("branch")), fmt_s(cpu.get("dc"))), r["target_speedup"], met))
    out.append("")
    out.append("## Connection set-up")
    out.append("")
    out.append("| profile | path | connections | time_connect ms (median) | min-max | vs direct | "
               "time_starttransfer ms (median) | min-max | vs direct |")
    out.append("|---|---|---:|---:|---|---:|---:|---|---:|")
    for pname, s in results.get("summary", {}).items():
        st = s["setup"]
        for path in ("direct", "pair"):
            r = st[path]
            if path == "direct":
                rc, rt = "1.00x", "1.00x"
            else:
                rc = "**%s** (%+.2f RTT)" % (fmt_x(st["time_connect_ratio"]), st["time_connect_extra_rtts"]) \
                    if st["time_connect_ratio"] else "-"
                rt = "%s (%+.2f RTT)" % (fmt_x(st["time_starttransfer_ratio"]), st["time_starttransfer_extra_rtts"]) \
                    if st["time_starttransfer_ratio"] else "-"
            out.append("| %s | %s | %d | %s | %s-%s | %s | %s | %s-%s | %s |" % (
                PROFILES[pname]["label"], "direct" if path == "direct" else "**wanopt pair**", r["n"],
                fmt_ms(r["time_connect_median"]), fmt_ms(r["time_connect_min"]), fmt_ms(r["time_connect_max"]), rc,
                fmt_ms(r["time_starttransfer_median"]), fmt_ms(r["time_starttransfer_min"]),
                fmt_ms(r["time_starttransfer_max"]), rt))
    out.append("")
    caps = [(pname, prof["setup_capture"]) for pname, prof in results["profiles"].items()
            if prof.get("setup_capture", {}).get("packets")]
    for pname, cap in caps:
        out.append("WAN packets of one %d-byte fetch through the pair, profile %s (tshark on the branch's wan0; "
                   "t from the branch's probe SYN; curl: connect %s ms, first byte %s ms, from its start):" % (
                       TINY_BYTES, pname, fmt_ms(cap["curl"].get("time_connect")),
                       fmt_ms(cap["curl"].get("time_starttransfer"))))
        out.append("")
        out.append("| # | t ms | t in RTTs | direction | TCP payload bytes | flags |")
        out.append("|---:|---:|---:|---|---:|---|")
        for i, pk in enumerate(cap["packets"], 1):
            out.append("| %d | %.1f | %.2f | %s | %d | %s |" % (i, pk["t_ms"], pk["t_rtt"], pk["dir"], pk["payload"],
                                                             pk["flags"]))
        out.append("")
    out.append("## Targets")
    out.append("")
    for pname, s in results.get("summary", {}).items():
        for key, what in (("pair/first", "first pass"), ("pair/second", "second pass")):
            r = s["transfer"][key]
            verdict = "n/a" if r["met"] is None else ("met" if r["met"] else "NOT met")
            extra = ""
            if r["met"] is False and r["speedup_vs_direct"]:
                extra = " (short by %.2fx, %.0f%% of the target)" % (
                    r["target_speedup"] - r["speedup_vs_direct"], 100 * r["speedup_vs_direct"] / r["target_speedup"])
            out.append("- Profile %s, %s >= %.0fx faster than direct: %s, %s%s" % (
                pname, what, r["target_speedup"], fmt_x(r["speedup_vs_direct"]), verdict, extra))
            d = s["transfer"]["direct/-"]
            if r["lan_bytes_median"] and r["wan_bytes_median"] and r["seconds_median"] and d["seconds_median"]:
                rtt = 2 * PROFILES[pname]["delay_ms"] / 1000
                t = results.get("text") or {}
                line = ("  - LAN/WAN bytes %.2fx (the file alone: zstd -3 %.2fx, -9 %.2fx, -19 %.2fx; the datacenter "
                        "box's zstd level peaked at %s); first byte after %.3f s "
                        "(%.1f RTT; direct %.3f s), the rest %.3f s (direct %.3f s)" % (
                            r["lan_bytes_median"] / r["wan_bytes_median"], t.get("zstd3_ratio") or 0,
                            t.get("zstd9_ratio") or 0, t.get("zstd19_ratio") or 0,
                            r.get("dc_lz_level_peak_median") or "-",
                            r["starttransfer_median"] or 0, (r["starttransfer_median"] or 0) / rtt,
                            d["starttransfer_median"] or 0, r["seconds_median"] - (r["starttransfer_median"] or 0),
                            d["seconds_median"] - (d["starttransfer_median"] or 0)))
                rate = PROFILES[pname]["rate_mbit"] * 1e6
                if r["wan_ip_bytes_median"]:
                    line += ("; its %s WAN IP bytes take %.2f s at %g Mbit/s (direct: %s bytes, %.2f s)" % (
                        fmt_b(r["wan_ip_bytes_median"]), r["wan_ip_bytes_median"] * 8 / rate,
                        PROFILES[pname]["rate_mbit"], fmt_b(d["wan_ip_bytes_median"]),
                        (d["wan_ip_bytes_median"] or 0) * 8 / rate))
                after = r["seconds_median"] - (r["starttransfer_median"] or 0)
                if after > 0:
                    line += "; after the first byte %.0f MB/s" % (r["lan_bytes_median"] / after / 1e6)
                if r["met"] is False:
                    best = d["seconds_median"] / r["target_speedup"]
                    line += "; the target needs <= %.2f s in all" % best
                out.append(line)
        st = s["setup"]
        v = st["no_extra_round_trip_on_connect"]
        out.append("- Profile %s, discovery adds no round trip to the connect (median within 0.5 RTT of direct): "
                   "%s (%s, %+.2f RTT)" % (pname, "n/a" if v is None else ("met" if v else "NOT met"),
                                           fmt_x(st["time_connect_ratio"]), st["time_connect_extra_rtts"] or 0))
    notes = results.get("notes") or []
    if notes:
        out.append("")
        out.append("## Notes")
        out.append("")
        out.extend("- " + n for n in notes)
    for title, key in (("Errors", "errors"), ("Warnings", "warnings")):
        if results.get(key):
            out.append("")
            out.append("## " + title)
            out.append("")
            out.extend("- " + e.replace("\n", " | ") for e in results[key])
    out.append("")
    out.append("Every figure (each sample, curl's timings, the status API's records of each connection, delay-line "
               "counters, box CPU seconds, configs, log findings): [wan.json](wan.json).")
    out.append("")
    return "\n".join(out)
