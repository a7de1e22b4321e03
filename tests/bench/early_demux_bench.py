#!/usr/bin/python3
"""What turning TCP early demux off costs the boxes (deploy/intercept sets
net.ipv4.tcp_early_demux=0 so that a box's TIME_WAIT sockets cannot take the packets
of connections it routes; see deploy/README.md, "Sockets in TIME_WAIT").

The lab, boxes and rate client of intercept_scale_bench.py (policy F, WAN 1 ms, each
connection connect + 16-byte echo verified + close, 64 in flight). The rows
optimized with TLS, optimized with a plaintext channel and pass-through by rule, run
with early demux off (as installed) and on in both boxes, interleaved, R repeats;
medians of conn/s and of CPU ms per connection per box.

Usage (root; /usr/bin/python3):
  tests/bench/early_demux_bench.py [--wanopt build-release/wanopt/wanopt] [--repeats 3] [--rate-count 3000]
Prints a Markdown table; writes tests/bench/results/early_demux.json.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import intercept_scale_bench as scale  # noqa: E402

ROWS = ((scale.OPT_PORT, "optimized (F, TLS)"), (scale.PLAIN_PORT, "optimized (F, plaintext channel)"),
        (scale.RULE_PORT, "pass-through by rule"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wanopt", default=str(scale.REPO / "build-release/wanopt/wanopt"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate-count", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--json", default=str(scale.HERE / "results/early_demux.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the namespace lab needs root")
    samples = {(label, demux): [] for _, label in ROWS for demux in (0, 1)}
    with tempfile.TemporaryDirectory(prefix="wanopt-demux-") as work:
        lab = scale.open_lab("wd%d" % (os.getpid() % 100000), work, os.path.abspath(args.wanopt), delay_ms=1)
        try:
            lab.up()
            scale.prepare_lab(lab)
            pids = scale.start_boxes(lab)
            for _ in range(args.repeats):
                for demux in (0, 1):
                    for box in ("branch", "dc"):
                        lab.run(box, "sysctl", "-q", "-w", f"net.ipv4.tcp_early_demux={demux}", check_rc=True)
                    for port, label in ROWS:
                        samples[(label, demux)].append(scale.run_rate(lab, args, port, f"{label}, demux {demux}", pids))
        finally:
            lab.down()
    rows = []
    print("| new connections | early demux off: conn/s | on: conn/s | off/on | CPU ms per connection off (branch / dc) | on |")
    print("|---|---:|---:|---:|---|---|")
    for _, label in ROWS:
        med = {d: statistics.median(r["per_second"] for r in samples[(label, d)]) for d in (0, 1)}
        cpu = {d: {b: statistics.median(r["cpu_ms_per_connection"][b] for r in samples[(label, d)])
                   for b in ("branch", "dc")} for d in (0, 1)}
        rows.append({"label": label, "conn_per_s_median": med, "cpu_ms_per_connection_median": cpu,
                     "samples": {d: [r["per_second"] for r in samples[(label, d)]] for d in (0, 1)}})
        print(f"| {label} | {med[0]:.0f} | {med[1]:.0f} | {med[0] / med[1]:.2f}x | "
              f"{cpu[0]['branch']:.3f} / {cpu[0]['dc']:.3f} | {cpu[1]['branch']:.3f} / {cpu[1]['dc']:.3f} |")
    with open(args.json, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeats": args.repeats,
                   "rate_count": args.rate_count, "concurrency": args.concurrency, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
