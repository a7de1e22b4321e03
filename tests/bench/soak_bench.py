#!/usr/bin/python3
"""A soak of the intercepting pair: mixed sizes, contents and policies for a while,
every transfer verified, memory, descriptors and the datastore watched.

client -- branch == WAN (5 ms) == dc -- server, `netlab up --intercept --ipv6`
(dual-stack; with --one-arm the boxes hang off routers that policy-route TCP to
them), both boxes with a 64 MiB datastore (so eviction runs) and rules by
port:
  9000 F over TLS   9002 F, plaintext channel   9003 L   9004 D   9001 pass-through
W client workers (default 16) loop for --seconds: each picks a port (weighted), a
family (IPv6 for --ipv6-share percent of the transfers, default 25; 0 brings the lab
up IPv4 only), a size (log-uniform, 1 KiB .. --max-kib), and a content (novel random
bytes, text, or a repeat of a recent payload: DRE hits, across families too), sends
it to an echo server and checks what comes back byte for byte. Every --sample seconds: each box's RSS and open
descriptors, its datastore's size on disk, its active connections.

At the end (traffic stopped, connections closed): active connections back to 0,
sockets back to what they were after start-up, every transfer verified, both boxes
alive, the optimized ports' transfers went through the dc box, and with IPv6 both
families carried verified transfers. --check makes those the exit status (the CI
runs a 60 s version: tests/lab/CMakeLists.txt); the RSS curve is printed, and with
--svg drawn.

Usage (root; /usr/bin/python3):
  tests/bench/soak_bench.py [--seconds 1800] [--workers 16] [--max-kib 4096] [--ipv6-share 25]
                            [--one-arm] [--svg docs/soak-rss.svg]
Results: tests/bench/results/soak.{md,json} (--json/--markdown elsewhere). The lab
and every process started are removed at the end.
"""

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import benchkit  # noqa: E402
from netns_boxes import (REPO, SERVER, SERVER6, box_config, box_reading, echo, keep_logs, metrics, open_lab, summed,  # noqa: E402
                         wait_metric)

FAILED_DIR = os.environ.get("WANOPT_SOAK_FAILED_DIR")  # where the workers keep payloads that failed
PASS_THROUGH_PORT = 9001  # RULES pass it through; every other port is optimized
# port -> (what it is, weight)
PORTS = {9000: ("F, TLS", 45), 9002: ("F, plaintext channel", 10), 9003: ("L", 15), 9004: ("D", 15),
         PASS_THROUGH_PORT: ("pass-through by rule", 15)}
RULES = f"""
[intercept]
[[intercept.rule]]
ports = "{PASS_THROUGH_PORT}"
action = "pass-through"
[[intercept.rule]]
ports = "9002"
encryption = false
[[intercept.rule]]
ports = "9003"
policy = "L"
[[intercept.rule]]
ports = "9004"
policy = "D"
"""


# ---------------------------------------------------------------------------
# Children: the echo server (server namespace), the workers (client namespace)
# ---------------------------------------------------------------------------

async def serve(ipv6):
    for port in PORTS:
        await asyncio.start_server(echo, SERVER, port, backlog=1024)
        if ipv6:
            await asyncio.start_server(echo, SERVER6, port, backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()


def text_base():
    out = bytearray()
    for p in sorted(Path("/usr/share/common-licenses").glob("*")):
        if p.is_file():
            out += p.read_bytes()
    return bytes(out) or b"lorem ipsum dolor sit amet " * 100000


async def transfer(server, port, payload):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(server, port), 30)
    try:
        async def send():
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
        sender = asyncio.create_task(send())
        h, n = hashlib.sha256(), 0
        while n < len(payload):
            b = await asyncio.wait_for(reader.read(1 << 20), 60)
            if not b:
                break
            h.update(b)
            n += len(b)
        await sender
        return n == len(payload) and h.digest() == hashlib.sha256(payload).digest()
    finally:
        writer.close()


async def workers(seconds, count, max_kib, seed, ipv6_share):
    rng = random.Random(seed)
    text = text_base()
    recent = []
    totals = {"transfers": 0, "verified": 0, "bytes": 0, "failures": [], "by_port": {}, "by_content": {},
              "by_family": {}}
    deadline = time.monotonic() + seconds
    ports, weights = list(PORTS), [w for _, w in PORTS.values()]

    def payload():
        size = int(2 ** rng.uniform(10, math.log2(max(1024, max_kib * 1024))))
        kind = rng.choices(("random", "text", "repeat"), (40, 40, 20))[0]
        if kind == "repeat" and recent:
            return "repeat", rng.choice(recent)
        if kind == "text":
            start = rng.randrange(max(1, len(text) - size))
            body = text[start:start + size]
            data = (body * (size // max(1, len(body)) + 1))[:size]
            kind = "text"
        else:
            data, kind = rng.randbytes(size), "random"
        recent.append(data)
        del recent[:-16]
        return kind, data

    async def worker():
        while time.monotonic() < deadline:
            port = rng.choices(ports, weights)[0]
            family = "IPv6" if rng.uniform(0, 100) < ipv6_share else "IPv4"
            kind, data = payload()
            try:
                ok = await transfer(SERVER6 if family == "IPv6" else SERVER, port, data)
                err = None if ok else "wrong bytes"
            except (OSError, asyncio.TimeoutError) as e:
                ok, err = False, type(e).__name__
            totals["transfers"] += 1
            totals["bytes"] += len(data)
            p = totals["by_port"].setdefault(str(port), [0, 0])
            c = totals["by_content"].setdefault(kind, [0, 0])
            f = totals["by_family"].setdefault(family, [0, 0])
            for counts in (p, c, f):
                counts[0] += 1
            if ok:
                totals["verified"] += 1
                for counts in (p, c, f):
                    counts[1] += 1
            elif len(totals["failures"]) < 20:
                totals["failures"].append("%s port %d, %s, %d bytes: %s" % (family, port, kind, len(data), err))
                if FAILED_DIR:
                    Path(FAILED_DIR, "failed-%d-%d.bin" % (port, len(totals["failures"]))).write_bytes(data)

    await asyncio.gather(*(worker() for _ in range(count)))
    print(json.dumps(totals), flush=True)


# ---------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------

def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def sample(lab, pids, work, t0):
    s = {"t": round(time.monotonic() - t0, 1)}
    for b, pid in pids.items():
        m = box_reading(pid)
        series = lab.series(b)  # one /metrics read per box per sample
        totals = summed(series)
        parts = dre_parts(series)
        heap = 'wanopt_process_heap_bytes{state="%s"}'
        s[b] = {"rss_kib": m["VmRSS"] // 1024, "fds": m["fds"], "sockets": m["fd_kinds"].get("socket", 0), "store_bytes": du(os.path.join(work, "%s-%s-store" % (
            lab.prefix, b))), "active": totals.get("wanopt_connections_active"),
            # Where the RSS is: the heap the daemon uses, and what glibc keeps freed.
            "heap_in_use_kib": series.get(heap % "in_use", 0) // 1024, "heap_free_kib": series.get(heap % "free", 0) // 1024,
            # ... of which the DRE state: read cache, chunk index, RocksDB, write queue, peerings.
            "dre_state_kib": sum(parts.values()), "dre_parts_kib": parts}
    return s


def dre_parts(series):
    """The DRE state by part ({'read_cache': KiB, ...}), from wanopt_memory_bytes{box,part}."""
    parts = {}
    for key, value in series.items():
        found = re.match(r'wanopt_memory_bytes\{.*part="(\w+)"', key)
        if found:
            parts[found.group(1)] = parts.get(found.group(1), 0) + int(value) // 1024
    return parts


def svg(samples, path):
    """The RSS of both boxes over time, as a small hand-made SVG."""
    w, h, pad = 640, 240, 40
    tmax = max(s["t"] for s in samples) or 1
    ymax = max(s[b]["rss_kib"] for s in samples for b in ("branch", "dc")) / 1024 * 1.1 or 1
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="11">' % (w, h), '<rect width="100%" height="100%" fill="white"/>']
    for i in range(5):
        y = pad + (h - 2 * pad) * i / 4
        out.append('<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#ddd"/>' % (pad, y, w - pad, y))
        out.append('<text x="2" y="%.0f">%.0f MiB</text>' % (y + 4, ymax * (4 - i) / 4))
    for b, color in (("branch", "#1f77b4"), ("dc", "#d62728")):
        pts = " ".join("%.1f,%.1f" % (pad + (w - 2 * pad) * s["t"] / tmax,
                                      h - pad - (h - 2 * pad) * (s[b]["rss_kib"] / 1024) / ymax) for s in samples)
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (color, pts))
    out.append('<text x="%d" y="%d">time (s), 0 .. %.0f</text>' % (w / 2 - 40, h - 8, tmax))
    out.append('<text x="%d" y="16" fill="#1f77b4">branch RSS</text>' % (pad + 10))
    out.append('<text x="%d" y="16" fill="#d62728">dc RSS</text>' % (pad + 110))
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")


def render(r):
    rows = ["# Soak: mixed traffic through the intercepting pair (namespace lab)", "",
            "- date %s, git commit %s, %d s, %d workers, sizes 1 KiB .. %d KiB, 64 MiB datastores, %s" % (
                r["date"], (r["machine"]["git_commit"] or "?")[:7], r["seconds"], r["workers"], r["max_kib"],
                r.get("topology", "in path")),
            "- transfers %d, verified %d, %.1f MB each way; by port: %s; by content: %s; by family: %s" % (
                r["totals"]["transfers"], r["totals"]["verified"], r["totals"]["bytes"] / 1e6,
                ", ".join("%s (%s) %d/%d" % (p, PORTS[int(p)][0], v[1], v[0])
                          for p, v in sorted(r["totals"]["by_port"].items())),
                ", ".join("%s %d/%d" % (k, v[1], v[0]) for k, v in sorted(r["totals"]["by_content"].items())),
                ", ".join("%s %d/%d" % (k, v[1], v[0]) for k, v in sorted(r["totals"].get("by_family", {}).items()))
                or "IPv4 only"),
            "- optimized: %s of %s transfers on the optimizing ports went through the dc box; the WAN's TUNs "
            "dropped %s packets; the branch's %s probes sent %s SYNs again with option 0x21 and %s without" % (
                r.get("optimized", {}).get("branch_peer_connections", "?"),
                r.get("optimized", {}).get("transfers_on_optimized_ports", "?"),
                ", ".join("%s %d" % kv for kv in sorted(r.get("wan_tun_drops", {}).items())) or "?",
                *(r.get("discovery", {}).get(k, "?") for k in ("probes", "syns_resent_with_option",
                                                               "syns_resent_without_option"))), "",
            "| t (s) | branch RSS MiB | dc RSS MiB | heap in use MiB (branch / dc) | of which DRE state MiB "
            "| heap free MiB (branch / dc) | branch fds | dc fds | branch store MiB | dc store MiB "
            "| active (branch / dc) |",
            "|---:|---:|---:|---|---|---|---:|---:|---:|---:|---|"]
    for s in r["samples"]:
        heap = ["%.1f / %.1f" % tuple(s[b].get(k, 0) / 1024 for b in ("branch", "dc"))
                for k in ("heap_in_use_kib", "dre_state_kib", "heap_free_kib")]
        rows.append("| %.0f | %.1f | %.1f | %s | %s | %s | %d | %d | %.1f | %.1f | %s / %s |" % (
            s["t"], s["branch"]["rss_kib"] / 1024, s["dc"]["rss_kib"] / 1024, *heap, s["branch"]["fds"], s["dc"]["fds"],
            s["branch"]["store_bytes"] / 2**20, s["dc"]["store_bytes"] / 2**20,
            s["branch"]["active"], s["dc"]["active"]))
    rows += ["", "Checks: " + "; ".join(r["checks"])]
    if r["errors"]:
        rows += ["", "Errors:"] + ["- " + e for e in r["errors"]]
    return "\n".join(rows) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=int, metavar="SECONDS", help=argparse.SUPPRESS)
    ap.add_argument("--wanopt", default=str(REPO / "build-release/wanopt/wanopt"))
    ap.add_argument("--seconds", type=int, default=1800)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--max-kib", type=int, default=4096)
    ap.add_argument("--sample", type=float, default=None, help="seconds between samples (default seconds/30)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--one-arm", action="store_true", help="the one-arm lab (policy routing) instead of in path")
    ap.add_argument("--ipv6-share", type=float, default=25,
                    help="percent of the transfers over IPv6 (default 25; 0: an IPv4-only lab)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every check passed (the CI version)")
    ap.add_argument("--svg", help="draw the RSS curve into this SVG file")
    ap.add_argument("--log-level", default="info", help="the boxes' log_level (default info)")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the boxes' logs into DIR at the end")
    ap.add_argument("--json", default=str(HERE / "results/soak.json"))
    ap.add_argument("--markdown", default=str(HERE / "results/soak.md"))
    args = ap.parse_args()
    if not 0 <= args.ipv6_share <= 100:
        ap.error("--ipv6-share is a percentage, 0 to 100")
    ipv6 = args.ipv6_share > 0
    if args.serve:
        return asyncio.run(serve(ipv6))
    if args.work:
        return asyncio.run(workers(args.work, args.workers, args.max_kib, args.seed, args.ipv6_share))
    if os.geteuid() != 0:
        print("SKIP: the namespace lab needs root")
        return 77
    wanopt = os.path.abspath(args.wanopt)
    every = args.sample or max(2.0, args.seconds / 30)
    r = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": benchkit.machine_basics(),
         "seconds": args.seconds, "workers": args.workers, "max_kib": args.max_kib, "ipv6_share": args.ipv6_share,
         "topology": "one-arm" if args.one_arm else "in path",
         "samples": [], "errors": [],
         "checks": [], "totals": {"transfers": 0, "verified": 0, "bytes": 0, "by_port": {}, "by_content": {}}}
    ok = False
    with tempfile.TemporaryDirectory(prefix="wanopt-soak-") as work:
        lab = open_lab("wk%d" % (os.getpid() % 100000), work, wanopt, delay_ms=5, ipv6=ipv6, one_arm=args.one_arm)
        me = str(Path(__file__).resolve())
        try:
            lab.up()
            server = lab.spawn("echo", "server", "/usr/bin/python3", me, "--serve", "--ipv6-share",
                               str(args.ipv6_share), stdout=subprocess.PIPE, text=True)
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("the echo server did not start")
            pids = {}
            for box in ("dc", "branch"):
                lab.start_box(box, box_config(lab, box, RULES, args.log_level))
                pids[box] = lab.procs[box].pid
            t0 = time.monotonic()
            r["samples"].append(sample(lab, pids, work, t0))
            client = lab.spawn("workers", "client", "/usr/bin/python3", me, "--work", str(args.seconds),
                               "--workers", str(args.workers), "--max-kib", str(args.max_kib),
                               "--seed", str(args.seed), "--ipv6-share", str(args.ipv6_share),
                               stdout=subprocess.PIPE, text=True)
            while client.poll() is None:
                try:
                    client.wait(timeout=every)
                except subprocess.TimeoutExpired:
                    pass
                for b in pids:
                    if lab.procs[b].poll() is not None:
                        raise RuntimeError("the %s box died (exit %s)" % (b, lab.procs[b].returncode))
                r["samples"].append(sample(lab, pids, work, t0))
            out = client.stdout.read().strip().splitlines()
            if client.returncode != 0 or not out:
                raise RuntimeError("the workers failed (exit %s)" % client.returncode)
            r["totals"] = json.loads(out[-1])
            # Settled: every connection closed on both boxes.
            for b in pids:
                wait_metric(lab, b, "wanopt_connections_active", lambda v: v == 0, 30)
            end = sample(lab, pids, work, t0)
            r["samples"].append(end)
            first = r["samples"][0]
            t = r["totals"]
            checks = [
                ("every transfer verified", t["transfers"] > 0 and t["verified"] == t["transfers"],
                 "%d of %d %s" % (t["verified"], t["transfers"], t.get("failures", [])[:5])),
                ("both boxes alive", all(lab.procs[b].poll() is None for b in pids), ""),
                ("no connection left active", all(end[b]["active"] == 0 for b in pids),
                 {b: end[b]["active"] for b in pids}),
                # Sockets: RocksDB keeps its table files open, more as the store grows.
                ("sockets back to what they were after start-up",
                 all(end[b]["sockets"] <= first[b]["sockets"] for b in pids),
                 {b: (first[b]["sockets"], end[b]["sockets"]) for b in pids}),
                ("every port carried verified transfers", all(str(p) in t["by_port"] and t["by_port"][str(p)][1] > 0
                                                            for p in PORTS), t["by_port"]),
            ]
            # Optimized, not merely relayed: the branch's inner channels to the dc
            # carried the transfers of every port but the pass-through one.
            optimized = sum(v[0] for p, v in t["by_port"].items() if int(p) != PASS_THROUGH_PORT)
            peered = int(metrics(lab, "branch").get("wanopt_peer_connections_total", 0))
            r["optimized"] = {"transfers_on_optimized_ports": optimized, "branch_peer_connections": peered}
            # A packet lost on the WAN can cost a connection its optimization (a lost SYN
            # carrying the offer, then its retransmission too): what the lab's TUNs dropped.
            r["wan_tun_drops"] = lab.tun_drops()
            # ... and the branch's probe SYNs sent again unanswered (with the option: lost).
            samples = lab.series("branch")
            resent = 'wanopt_discovery_syn_retransmissions_total{box="branch",option="%s"}'
            r["discovery"] = {"probes": int(samples.get('wanopt_discovery_probes_total{box="branch"}', -1)),
                              "syns_resent_with_option": int(samples.get(resent % "with", -1)),
                              "syns_resent_without_option": int(samples.get(resent % "without", -1))}
            checks.append(("the optimized ports' transfers went through the dc box (>= 99%)",
                           optimized > 0 and peered >= 0.99 * optimized, r["optimized"]))
            if ipv6:
                checks.append(("both families carried verified transfers",
                               all(t["by_family"].get(f, [0, 0])[1] > 0 for f in ("IPv4", "IPv6")), t["by_family"]))
            for name, good, detail in checks:
                r["checks"].append("%s: %s%s" % (name, "ok" if good else "FAILED", "" if good else " (%s)" % (detail,)))
                print("%s: %s %s" % ("ok" if good else "FAIL", name, "" if good else detail), flush=True)
            mid = r["samples"][len(r["samples"]) // 3]
            for b in pids:
                r["checks"].append("%s RSS at a third %.1f MiB, at the end %.1f MiB (%+.0f%%; heap in use %.1f then "
                                   "%.1f MiB, of which DRE state %.1f then %.1f MiB; free %.1f then %.1f MiB)" % (
                    b, mid[b]["rss_kib"] / 1024, end[b]["rss_kib"] / 1024,
                    100 * (end[b]["rss_kib"] - mid[b]["rss_kib"]) / max(1, mid[b]["rss_kib"]),
                    *(x[b].get(k, 0) / 1024 for k in ("heap_in_use_kib", "dre_state_kib", "heap_free_kib")
                      for x in (mid, end))))
                parts = sorted(set(mid[b].get("dre_parts_kib", {})) | set(end[b].get("dre_parts_kib", {})))
                r["checks"].append("%s DRE state by part, at a third and at the end: %s" % (b, ", ".join(
                    "%s %.1f then %.1f MiB" % (p, mid[b]["dre_parts_kib"].get(p, 0) / 1024,
                                               end[b]["dre_parts_kib"].get(p, 0) / 1024) for p in parts)))
            ok = all(good for _, good, _ in checks)
        except Exception as e:  # reported; the lab still comes down
            r["errors"].append(repr(e))
            lab.print_logs()
        finally:
            lab.down()
            if args.keep_logs:
                keep_logs(work, args.keep_logs)
    if args.svg and len(r["samples"]) > 1:
        svg(r["samples"], args.svg)
    print(benchkit.write_outputs(r, render(r), Path(args.json), Path(args.markdown)))
    print("%d passed, %d failed" % (sum(1 for c in r["checks"] if c.endswith(": ok")),
                                    sum(1 for c in r["checks"] if "FAILED" in c) + len(r["errors"])))
    return 0 if ok and not r["errors"] else (1 if args.check or r["errors"] else 0)


if __name__ == "__main__":
    sys.exit(main())
