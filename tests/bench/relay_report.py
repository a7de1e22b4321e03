"""relay_bench's summary (medians, ratios, targets met) and its Markdown."""

from benchkit import median
from relay_paths import STREAM_COUNTS

TARGET_RATIO_VS_SOCAT = 1.5
TARGET_IDLE_BYTES_PER_CONN = 64 * 1024
TARGET_IDLE_CONNS = 10000

PATH_LABELS = {
    "direct": "direct",
    "socat": "socat chain (2 hops)",
    "wanopt": "wanopt pair",
}


def summarize(results, args):
    samples = results["throughput"]["samples"]
    directions = ["forward", "reverse"] if args.reverse else ["forward"]
    rows = []
    for streams in STREAM_COUNTS:
        for direction in directions:
            med = {}
            for path in args.paths:
                ok = [s["bits_per_second"] for s in samples
                      if s["path"] == path and s["streams"] == streams
                      and s["direction"] == direction and s["bits_per_second"]]
                failed = sum(1 for s in samples if s["path"] == path and s["streams"] == streams
                             and s["direction"] == direction and s["error"])
                m = median(ok)
                med[path] = m
                cpu = [s["proxy_cpu_seconds"] / s["bytes_received"] * 1e9
                       for s in samples if s["path"] == path and s["streams"] == streams
                       and s["direction"] == direction and s.get("proxy_cpu_seconds") is not None
                       and s.get("bytes_received")]
                rows.append({
                    "path": path, "streams": streams, "direction": direction,
                    "n_ok": len(ok), "n_failed": failed,
                    "median_bits_per_second": m,
                    "median_gbit_s": round(m / 1e9, 3) if m else None,
                    "samples_gbit_s": [round(v / 1e9, 3) for v in ok],
                    "min_gbit_s": round(min(ok) / 1e9, 3) if ok else None,
                    "max_gbit_s": round(max(ok) / 1e9, 3) if ok else None,
                    "proxy_cpu_seconds_per_gb_median":
                        round(median(cpu), 3) if cpu else None,
                })
            for row in rows[-len(args.paths):]:
                m = med[row["path"]]
                row["ratio_vs_socat"] = (round(m / med["socat"], 3)
                                         if m and med.get("socat") else None)
                row["ratio_vs_direct"] = (round(m / med["direct"], 3)
                                          if m and med.get("direct") else None)
    results["throughput"]["summary"] = rows
    ratios = {}
    for row in rows:
        if row["path"] == "wanopt":
            key = "P%d_%s" % (row["streams"], row["direction"])
            ratios[key] = {"wanopt_over_socat": row["ratio_vs_socat"],
                           "wanopt_over_direct": row["ratio_vs_direct"]}
    results["ratios"] = ratios
    tgt = results["targets"]
    tgt["throughput"] = {
        "description": "TCP-only pair goodput >= %.1fx the socat chain's" % TARGET_RATIO_VS_SOCAT,
        "required_ratio": TARGET_RATIO_VS_SOCAT,
        "per_config": {k: (None if v["wanopt_over_socat"] is None
                           else v["wanopt_over_socat"] >= TARGET_RATIO_VS_SOCAT)
                       for k, v in ratios.items()},
    }



def fmt_ratio(r):
    return "%.2fx" % r if r is not None else "n/a"


def fmt_kib(b):
    return "%.1f KiB" % (b / 1024.0)


def render_markdown(results, args):
    m = results["machine"]
    out = []
    out.append("# wanopt relay benchmark (TCP-only pair, loopback)")
    out.append("")
    out.append("- date: %s, host: %s, nproc: %s, kernel: %s"
               % (m.get("date_utc"), m.get("hostname"), m.get("nproc"), m.get("kernel")))
    out.append("- cpu: %s; git commit: %s (dirty entries: %s)"
               % (m.get("cpu_model"), m.get("git_commit") or "none", m.get("git_dirty_entries")))
    if args.paths:
        out.append("- goodput: %d repeat(s) x %s s per run, interleaved; loadavg at start: %s"
                   % (args.repeats, args.seconds, m.get("loadavg_start")))
    else:
        out.append("- goodput part skipped (--paths none); loadavg at start: %s"
                   % m.get("loadavg_start"))
    out.append("")
    rows = results["throughput"].get("summary") or []
    if rows:
        out.append("| path | streams | direction | median Gbit/s | samples Gbit/s "
                   "| ratio vs socat chain | ratio vs direct | proxy CPU s/GB |")
        out.append("|---|---:|---|---:|---|---:|---:|---:|")
        for r in rows:
            if r["median_gbit_s"] is not None:
                med = "%.2f" % r["median_gbit_s"]
            else:
                med = "FAILED" if r["n_failed"] else "not run"
            samples = ", ".join("%.2f" % v for v in r["samples_gbit_s"]) or "-"
            if r["n_failed"]:
                samples += " (%d failed)" % r["n_failed"]
            cpu = r["proxy_cpu_seconds_per_gb_median"]
            out.append("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                PATH_LABELS[r["path"]], r["streams"], r["direction"], med, samples,
                fmt_ratio(r["ratio_vs_socat"]), fmt_ratio(r["ratio_vs_direct"]),
                "%.2f" % cpu if cpu is not None else "-"))
        out.append("")
        tp = results["targets"].get("throughput")
        if tp and tp["per_config"]:
            parts = []
            for key, met in tp["per_config"].items():
                ratio = results["ratios"][key]["wanopt_over_socat"]
                parts.append("%s %s (%s)" % (key, fmt_ratio(ratio),
                                             "n/a" if met is None else ("met" if met else "NOT met")))
            out.append("Target: wanopt pair >= %.1fx socat chain goodput: %s"
                       % (TARGET_RATIO_VS_SOCAT, "; ".join(parts)))
        elif "wanopt" not in args.paths:
            out.append("Target: wanopt pair >= %.1fx socat chain goodput: not measured "
                       "(wanopt path not selected)" % TARGET_RATIO_VS_SOCAT)
        out.append("")
    idle = results.get("idle") or {}
    if idle.get("bytes_per_connection") is not None:
        per = idle["per_daemon_bytes_per_connection"]
        tgt = results["targets"].get("idle_memory", {})
        met = tgt.get("met")
        verdict = "n/a (invalid run)" if met is None else ("met" if met else "NOT met")
        out.append("Idle memory: %d idle connections: %.0f B/conn (%s) peak-RSS delta for both "
                   "daemons together [branch %s B/conn, datacenter %s B/conn]; "
                   "RSS before %s, peak after %s, RSS after %s; origin received %d/%d bytes. "
                   "Target < 64 KiB/conn at 10,000 connections: %s%s"
                   % (idle["connections_requested"], idle["bytes_per_connection"],
                      fmt_kib(idle["bytes_per_connection"]),
                      per.get("wanopt-branch"), per.get("wanopt-datacenter"),
                      fmt_kib(idle["rss_before_bytes_total"]),
                      fmt_kib(idle["peak_rss_after_bytes_total"]),
                      fmt_kib(idle["rss_after_bytes_total"]),
                      idle.get("origin_bytes_received", 0), idle["connections_requested"],
                      verdict, (" (" + tgt["note"] + ")") if tgt.get("note") else ""))
    elif args.idle and idle:
        out.append("Idle memory: FAILED - %s" % (idle.get("error") or "see errors"))
    elif args.idle:
        out.append("Idle memory: not run (benchmark aborted earlier, see errors)")
    else:
        out.append("Idle memory: not measured (--idle 0)")
    for title, key in (("Errors", "errors"), ("Warnings", "warnings")):
        if results.get(key):
            out.append("")
            out.append(title + ":")
            for e in results[key]:
                out.append("- " + e.replace("\n", " | "))
    out.append("")
    return "\n".join(out)
