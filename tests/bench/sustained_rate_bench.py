#!/usr/bin/python3
"""New connections through the intercepting pair, sustained: many rows back to back
on the same boxes, so that the sockets the boxes leave in TIME_WAIT (60 s each) pile
up as they do under steady load.

The lab, boxes and rate client of intercept_scale_bench.py (policy F, WAN 1 ms; each
connection connect + 16-byte echo verified + close, 64 in flight); R rows of N
connections on one port (default: the plaintext-channel rule's, 22 rows of 3,000:
66,000 connections, more than the client's port range of 55,000, in about 40 s).
Each row: conn/s, latency, CPU per connection per box, and the TIME_WAIT sockets in
each box after it. A box that slows down as they pile up shows here (it did: bind()
to port 0 scanning a client address's ports for a free one, 2,700 -> 130 conn/s
after 27,000 connections; fixed by leaving the port to connect()).

Usage (root; /usr/bin/python3):
  tests/bench/sustained_rate_bench.py [--wanopt build-release/wanopt/wanopt] [--rows 22] [--rate-count 3000]
      [--port 9002 (plaintext channel) | 9000 (TLS)] [--baseline-wanopt OTHER-BUILD/wanopt/wanopt]
Prints a Markdown table per build (the baseline first, each on fresh boxes in a lab of
its own); writes tests/bench/results/sustained_rate.json.
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


def time_waits(lab, node):
    return int(lab.run(node, "sh", "-c", "ss -Htan state time-wait | wc -l").stdout.strip() or -1)


def run_rows(args, wanopt):
    """args.rows rows on fresh boxes running `wanopt`, in a lab of their own."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="wanopt-sustained-") as work:
        lab = scale.open_lab("wr%d" % (os.getpid() % 100000), work, os.path.abspath(wanopt), delay_ms=1)
        try:
            lab.up()
            scale.prepare_lab(lab)
            pids = scale.start_boxes(lab)
            for i in range(args.rows):
                r = scale.run_rate(lab, args, args.port, f"row {i + 1}", pids)
                r["time_wait"] = {b: time_waits(lab, b) for b in ("branch", "dc")}
                rows.append(r)
        finally:
            lab.down()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wanopt", default=str(scale.REPO / "build-release/wanopt/wanopt"))
    ap.add_argument("--baseline-wanopt", metavar="PATH",
                    help="another build to run first, on fresh boxes (its wanopt binary, in a build tree)")
    ap.add_argument("--rows", type=int, default=22)
    ap.add_argument("--rate-count", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--port", type=int, default=scale.PLAIN_PORT)
    ap.add_argument("--json", default=str(scale.HERE / "results/sustained_rate.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the namespace lab needs root")
    runs = {}
    if args.baseline_wanopt:
        runs["baseline"] = run_rows(args, args.baseline_wanopt)
    runs["current"] = run_rows(args, args.wanopt)
    for name, rows in runs.items():
        print(f"\n{name}:\n")
        print("| row | connections so far | conn/s | verified | median ms | p99 ms | CPU ms per connection (branch / dc) | TIME_WAIT after (branch / dc) |")
        print("|---:|---:|---:|---:|---:|---:|---|---|")
        for i, r in enumerate(rows):
            cpu, tw = r["cpu_ms_per_connection"], r["time_wait"]
            print(f"| {i + 1} | {(i + 1) * args.rate_count} | {r['per_second']:.0f} | {r['verified']} | "
                  f"{r['latency_ms_median']} | {r['latency_ms_p99']} | {cpu['branch']:.2f} / {cpu['dc']:.2f} | "
                  f"{tw['branch']} / {tw['dc']} |")
        rates = [r["per_second"] for r in rows]
        print(f"\n{name}: conn/s over {len(rows)} rows: median {statistics.median(rates):.0f}, lowest {min(rates):.0f} "
              f"(lowest/median {min(rates) / statistics.median(rates):.2f}); verified "
              f"{sum(r['verified'] for r in rows)} of {sum(r['count'] for r in rows)}")
    with open(args.json, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "port": args.port,
                   "rate_count": args.rate_count, "concurrency": args.concurrency, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
