#!/usr/bin/python3
"""Throughput of the full pipeline on loopback, per policy, beside a socat chain.

One transfer = one TCP connection, client -> path -> sink, one way; the sink
hashes what it receives and the transfer counts only if every byte arrived
unchanged. Paths, each started fresh (empty datastores) for every repeat:

  socat   client -> socat -> socat -> sink (two hops: "no optimizer")
  T L D F client -> wanopt branch -> wanopt datacenter -> sink, both boxes
          offering that policy (T TCP only, L zstd, D DRE, F DRE+zstd)

Workloads, in this order on each fresh path: `random` (os.urandom, novel and
incompressible), `text` (wan_bench's Markov text, first pass), `text again`
(the same bytes on a new connection: the datastores now know them).

Reported per path and workload: median MB/s (size / time from connect to the
sink's last byte), the ratio to the socat chain, the reduction the branch box
reports (1 - WAN bytes / LAN bytes), and CPU seconds per GB of each box (hop).
With --tls the boxes peer over TLS 1.3 (a pre-shared key): what encryption
costs. Targets (printed, never asserted): F on random >= 0.8x the socat chain
(stretch 1.0x). Everything runs on 2 cores shared with the client and the
sink: the figures are what this machine does, quoted as medians and ratios.

Usage:
  /usr/bin/python3 tests/bench/pipeline_bench.py [--repeats 3] [--paths socat,T,L,D,F]
Standard library only. All traffic is on 127.0.0.1; every process started here
is stopped by PID in a finally block.
"""

import argparse
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402
from benchkit import BenchError, ProcSet, log, median, proc_children, proc_cpu_seconds  # noqa: E402
from relay_paths import LOOPBACK, PortAllocator, SocatChain, WanoptPair, wait_tcp_connect  # noqa: E402
import wan_text  # noqa: E402

benchkit.set_log_name("pipeline_bench")
REPO_ROOT = benchkit.REPO_ROOT
WORKLOADS = ("random", "text", "text again")
POLICIES = ("T", "L", "D", "F")
# --tls: both boxes' [peering] (TLS 1.3, external PSK).
TLS_PEERING = ('[peering]\npsk_identity = "pipeline-bench"\n'
               'psk = "5d1c0f3a9b7e2d4c6a8f0e1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f7"\n\n')


# ---------------------------------------------------------------------------
# The sink: a child process, so that hashing does not share the sender's GIL
# ---------------------------------------------------------------------------

def sink_main(port):
    """Accepts connections one at a time; prints one JSON line per connection:
    bytes, sha1, and the CLOCK_MONOTONIC time of the last byte."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((LOOPBACK, port))
    srv.listen(64)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        conn, _ = srv.accept()
        h, n, t_last = hashlib.sha1(), 0, time.monotonic()
        while True:
            k = conn.recv_into(buf)
            if k == 0:
                break
            t_last = time.monotonic()
            h.update(view[:k])
            n += k
        conn.close()
        if n == 0:
            continue  # a readiness probe
        print(json.dumps({"bytes": n, "sha1": h.hexdigest(), "t_last": t_last}), flush=True)


class Sink:
    def __init__(self, procs, ports, tmpdir):
        self.port = ports.get()
        self.proc = procs.start("sink", ["/usr/bin/python3", __file__, "--sink", str(self.port)],
                                stdout=subprocess.PIPE,
                                stderr_path=os.path.join(tmpdir, "sink.stderr"))
        wait_tcp_connect(self.port, [self.proc])

    def result(self, timeout):
        ready, _, _ = select.select([self.proc.popen.stdout], [], [], timeout)
        if not ready:
            raise BenchError("the sink reported nothing within %.0f s" % timeout)
        line = self.proc.popen.stdout.readline()
        if not line:
            self.proc.check_alive()
            raise BenchError("the sink closed its output")
        return json.loads(line)


# ---------------------------------------------------------------------------
# One transfer
# ---------------------------------------------------------------------------

def box_cpu(path):
    """CPU seconds per box (per hop for socat), reaped children included."""
    if isinstance(path, SocatChain):
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(proc_children(p.pid) for p in path.members):
            time.sleep(0.05)
        # members were started far hop first
        far, near = path.members
        return {"hop1": proc_cpu_seconds(near.pid, children=True),
                "hop2": proc_cpu_seconds(far.pid, children=True)}
    return {"branch": proc_cpu_seconds(path.br.pid), "datacenter": proc_cpu_seconds(path.dc.pid)}


def branch_connection(pair, local_port, timeout=10.0):
    """The branch box's record of the connection from local_port, once ended."""
    url = "http://%s:%d/api/connections" % (LOOPBACK, pair.status_port["branch"])
    want = "%s:%d" % (LOOPBACK, local_port)
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=5) as r:
            conns = json.loads(r.read())["connections"]
        found = [c for c in conns if c.get("client") == want]
        if found and found[-1].get("ended"):
            return found[-1]
        if time.monotonic() > deadline:
            return found[-1] if found else None
        time.sleep(0.05)


def transfer(path, sink, data, digest):
    path.check_alive()
    cpu0 = box_cpu(path)
    t0 = time.monotonic()
    s = socket.create_connection((LOOPBACK, path.client_port), timeout=60)
    local_port = s.getsockname()[1]
    s.sendall(memoryview(data))
    s.shutdown(socket.SHUT_WR)
    got = sink.result(timeout=300)
    s.close()
    cpu1 = box_cpu(path)
    sample = {"seconds": round(got["t_last"] - t0, 4), "bytes": got["bytes"],
              "ok": got["bytes"] == len(data) and got["sha1"] == digest}
    sample["mb_per_s"] = round(len(data) / 1e6 / sample["seconds"], 1)
    sample["cpu_seconds"] = {k: (round(cpu1[k] - cpu0[k], 3) if cpu0[k] is not None and cpu1[k] is not None
                                 else None) for k in cpu0}
    if isinstance(path, WanoptPair):
        c = branch_connection(path, local_port)
        if c:
            lan, wan = c["lan_in"] + c["lan_out"], c["wan_in"] + c["wan_out"]
            sample.update(lan_bytes=lan, wan_bytes=wan, reduction=round(1 - wan / lan, 4) if lan else None,
                          policy=c.get("policy"), lz_level_peak=c.get("lz_level_peak"))
    path.check_alive()
    return sample


def start_path(name, procs, ports, tmpdir, binary, sink_port, tag, dre_lines, tls):
    if name == "socat":
        p = SocatChain(procs, ports, tmpdir, sink_port)
        p.start()
        return p
    p = WanoptPair(procs, ports, tmpdir, binary, sink_port, tag, policy=name, datastores=True, status=True,
                   dre_lines=dre_lines, peering_lines=TLS_PEERING if tls else "")
    p.start()
    return p


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

def summarize(samples, paths, sizes):
    rows = []
    base = {}
    for w in WORKLOADS:
        for name in paths:
            ss = [s for s in samples if s["path"] == name and s["workload"] == w and s["ok"]]
            if not ss:
                continue
            row = {"path": name, "workload": w, "runs": len(ss),
                   "mb_per_s": median([s["mb_per_s"] for s in ss]),
                   "samples_mb_per_s": [s["mb_per_s"] for s in ss]}
            gb = sizes[w] / 1e9
            for box in ss[0]["cpu_seconds"]:
                vals = [s["cpu_seconds"][box] for s in ss if s["cpu_seconds"][box] is not None]
                row.setdefault("cpu_s_per_gb", {})[box] = round(median(vals) / gb, 2) if vals else None
            red = [s["reduction"] for s in ss if s.get("reduction") is not None]
            row["reduction"] = median(red) if red else None
            if name == "socat":
                base[w] = row["mb_per_s"]
            rows.append(row)
    for row in rows:
        b = base.get(row["workload"])
        row["vs_socat"] = round(row["mb_per_s"] / b, 2) if b else None
    return rows


def render(results):
    out = ["# wanopt pipeline benchmark (loopback, one connection at a time)", "",
           "- date: %s, host: %s, nproc: %s, kernel: %s" % (
               results["date"], results["machine"]["hostname"], results["machine"]["nproc"],
               results["machine"]["kernel"]),
           "- git commit: %s; %d repeat(s), each on fresh boxes with empty datastores; inner channel: %s" % (
               results["machine"]["git_commit"], results["config"]["repeats"],
               "TLS 1.3 (PSK)" if results["config"].get("tls") else "plaintext"),
           "- workloads: random %d MiB (os.urandom); text %d MiB (wan_bench's Markov text; zstd -3 %.2fx)" % (
               results["config"]["random_mib"], results["config"]["text_mib"], results["text"]["zstd3_ratio"]),
           "- CPU s/GB: per box (branch, datacenter) or per socat hop; the client and the sink "
           "share the same 2 cores", "",
           "| workload | path | median MB/s | samples | vs socat chain | reduction | CPU s/GB (branch / dc) |",
           "|---|---|---:|---|---:|---:|---|"]
    for r in results["summary"]:
        cpu = " / ".join("-" if v is None else "%.2f" % v for v in r["cpu_s_per_gb"].values())
        out.append("| %s | %s | %.1f | %s | %s | %s | %s |" % (
            r["workload"], "socat chain" if r["path"] == "socat" else "wanopt " + r["path"], r["mb_per_s"],
            ", ".join("%.0f" % v for v in r["samples_mb_per_s"]),
            "-" if r["vs_socat"] is None else "%.2fx" % r["vs_socat"],
            "-" if r["reduction"] is None else "%.1f%%" % (100 * r["reduction"]), cpu))
    out += ["", "Target (printed, not asserted): F on novel incompressible data >= 0.8x the socat chain "
            "(stretch 1.0x): %s" % results["target"]]
    if results["errors"]:
        out += ["", "Errors:"] + ["- " + e for e in results["errors"]]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--wanopt", default=str(REPO_ROOT / "build-release/wanopt/wanopt"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="socat," + ",".join(POLICIES))
    ap.add_argument("--lz-level-max", type=int, help="[dre] lz_level_max for both boxes (default: theirs, 19)")
    ap.add_argument("--tls", action="store_true", help="TLS 1.3 between the boxes (PSK peering)")
    ap.add_argument("--workloads", default="random,text", help="random, text (text also runs 'text again')")
    ap.add_argument("--random-mib", type=int, default=64)
    ap.add_argument("--text-mib", type=int, default=32)
    ap.add_argument("--text-cache", default="/tmp/wanopt-pipeline-text-%dM-seed1.txt")
    ap.add_argument("--json", default=str(REPO_ROOT / "tests/bench/results/pipeline.json"))
    ap.add_argument("--markdown", default=str(REPO_ROOT / "tests/bench/results/pipeline.md"))
    args = ap.parse_args()
    if args.sink:
        return sink_main(args.sink)
    paths = args.paths.split(",")
    workloads = [w for w in WORKLOADS if w.split()[0] in args.workloads.split(",")]
    for p in paths:
        if p != "socat" and p not in POLICIES:
            raise SystemExit("unknown path %r (socat, T, L, D, F)" % p)
    if not os.access(args.wanopt, os.X_OK):
        raise SystemExit("no wanopt binary at %s (build it first)" % args.wanopt)

    text_path = args.text_cache % args.text_mib if "%d" in args.text_cache else args.text_cache
    if not os.path.exists(text_path):
        log("generating %d MiB of text into %s" % (args.text_mib, text_path))
        wan_text.generate_text(text_path, args.text_mib << 20, 1)
    data = {"random": os.urandom(args.random_mib << 20), "text": Path(text_path).read_bytes()}
    data["text again"] = data["text"]
    digests = {w: hashlib.sha1(d).hexdigest() for w, d in data.items()}
    sizes = {w: len(d) for w, d in data.items()}
    z3 = wan_text.zstd_size(text_path, "-3")

    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
               "machine": benchkit.machine_basics(),
               "config": {"repeats": args.repeats, "paths": paths, "random_mib": args.random_mib,
                          "text_mib": args.text_mib, "tls": args.tls},
               "text": {"path": text_path, "bytes": sizes["text"], "zstd3_ratio": round(sizes["text"] / z3, 2)},
               "samples": [], "errors": []}
    procs = ProcSet()
    ports = PortAllocator()
    benchkit.interrupt_on_signals()
    try:
        with tempfile.TemporaryDirectory(prefix="wanopt-pipeline-") as tmp:
            sink = Sink(procs, ports, tmp)
            for rep in range(args.repeats):
                order = paths[rep % len(paths):] + paths[:rep % len(paths)]
                for name in order:
                    path = start_path(name, procs, ports, tmp, args.wanopt, sink.port, "%s-%d" % (name, rep),
                                            "" if args.lz_level_max is None
                                            else "lz_level_max = %d\n" % args.lz_level_max, args.tls)
                    try:
                        for w in workloads:
                            s = transfer(path, sink, data[w], digests[w])
                            s.update(path=name, workload=w, repeat=rep + 1)
                            results["samples"].append(s)
                            log("rep %d %-5s %-10s %7.1f MB/s%s%s" % (
                                rep + 1, name, w, s["mb_per_s"],
                                "" if s.get("reduction") is None else "  reduction %.1f%%" % (100 * s["reduction"]),
                                "" if s["ok"] else "  BYTES WRONG"))
                            if not s["ok"]:
                                results["errors"].append("rep %d %s %s: %d bytes arrived, hash %s" % (
                                    rep + 1, name, w, s["bytes"], "wrong"))
                    finally:
                        path.stop()
    finally:
        procs.stop_all()
    results["summary"] = summarize(results["samples"], paths, sizes)
    f = [r for r in results["summary"] if r["path"] == "F" and r["workload"] == "random"]
    results["target"] = ("%.2fx (%s)" % (f[0]["vs_socat"], "met" if f[0]["vs_socat"] >= 0.8 else "missed")
                         if f and f[0]["vs_socat"] else "not measured")
    print(benchkit.write_outputs(results, render(results), Path(args.json), Path(args.markdown)))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
