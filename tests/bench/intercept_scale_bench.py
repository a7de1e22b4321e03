#!/usr/bin/python3
"""Connections through the intercepting pair at scale, in the namespace lab.

client -- branch == WAN (1 ms) == dc -- server, `netlab up --intercept`: the boxes
see the client's SYNs through NFQUEUE and TPROXY, discover each other with option
0x21, and optimize (policy F, TLS between them). Every connection carries a
token the echo server returns and the client checks: a connection counts only if
its bytes came back right.

  1. New-connection rate: connect, send 16 bytes, read them back, close; N such
     connections with C in flight. Measured the same way
       - without boxes (the interception rules installed, no daemon: the kernel
         passes the packets as if the rules were not there) - the baseline;
       - optimized (port 9000, TLS between the boxes; port 9002, a rule's
         plaintext inner channel: what the TLS handshake costs);
       - pass-through by rule (port 9001: the branch lets the SYN go unproxied);
       - pass-through for want of a peer (the dc box stopped: the branch probes,
         nobody answers, it relays the connection unoptimized).
  2. Concurrency (on freshly started boxes, once with a plaintext inner channel,
     once with TLS): H connections (default 10,000, as many as the descriptor
     limit allows) opened and verified, all held open; then each box's RSS and
     open descriptors against before (just opened, and idle 6.5 s later: after the
     codecs' idle release), the status API's active count, a second token
     through every connection (all verified while all are open); then all
     closed, and RSS and descriptors once the boxes counted them gone.
  3. The floor under the TLS figure: tests/bench/tls_memory_floor (built with the
     tests) on the lab's PKI: what OpenSSL itself keeps per idle channel per box.

Results: a Markdown table on stdout and tests/bench/results/intercept_scale.{md,json}.
Targets (printed, never asserted): 10,000 concurrent; >= 1,000 new optimized
connections/s per box pair; <= 16 KiB per idle connection per box.

Usage (root; /usr/bin/python3):
  tests/bench/intercept_scale_bench.py [--wanopt build-release/wanopt/wanopt]
      [--rate-count 3000] [--concurrency 64] [--hold 10000]
The lab (namespaces wsNNNNN-*) and every process started are removed at the end.
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import benchkit  # noqa: E402
from benchkit import proc_cpu_seconds, proc_nofile_limit  # noqa: E402
from netns_boxes import (REPO, SERVER, box_config, box_reading, echo, keep_logs, metrics, open_lab,  # noqa: E402
                         wait_metric)

OPT_PORT, RULE_PORT, PLAIN_PORT = 9000, 9001, 9002
PSK_PEERING = """[peering]
psk_identity = "scale-bench"
psk = "9f2c6a1e0b7d4c3a8e5f1029384756abcdef0123456789abcdef0123456789ab"
"""
RULES = """
[intercept]
[[intercept.rule]]
ports = "%d"
action = "pass-through"
[[intercept.rule]]
ports = "%d"
encryption = false
""" % (RULE_PORT, PLAIN_PORT)


# ---------------------------------------------------------------------------
# The echo server (server namespace) and the load client (client namespace)
# ---------------------------------------------------------------------------

async def serve(ports):
    for port in ports:
        await asyncio.start_server(echo, SERVER, port, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def one_exchange(reader, writer, token):
    writer.write(token)
    await writer.drain()
    got = await asyncio.wait_for(reader.readexactly(len(token)), 30)
    return got == token


async def rate(port, count, concurrency):
    """count connections, concurrency at a time: connect, echo 16 bytes, close."""
    latencies, failures = [], []
    next_id = iter(range(count))

    async def worker():
        for i in next_id:
            t0 = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(SERVER, port), 30)
                ok = await one_exchange(reader, writer, b"%016d" % i)
                writer.close()
                await writer.wait_closed()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                ok = False
                failures.append("%d: %s" % (i, type(e).__name__))
            if ok:
                latencies.append(time.monotonic() - t0)
            elif len(failures) < 20:
                failures.append("%d: wrong bytes" % i)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.monotonic() - t0
    latencies.sort()
    return {"count": count, "verified": len(latencies), "failures": failures[:20], "seconds": round(seconds, 3),
            "per_second": round(len(latencies) / seconds, 1),
            "latency_ms_median": round(1000 * statistics.median(latencies), 2) if latencies else None,
            "latency_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else None,
            # A lost SYN costs the client's 1 s retransmission timeout.
            "over_900_ms": sum(1 for x in latencies if x > 0.9)}


async def hold(port, count, ramp):
    """Opens count connections (ramp connects in flight), verifies each, holds them
    all; on 'verify' sends a second token through every one; on 'close' closes all."""
    conns, failures = [], []
    sem = asyncio.Semaphore(ramp)

    async def opener(i):
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(SERVER, port), 60)
                if await one_exchange(reader, writer, b"A%015d" % i):
                    conns.append((i, reader, writer))
                else:
                    failures.append("%d: wrong bytes" % i)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                failures.append("%d: %s" % (i, type(e).__name__))

    t0 = time.monotonic()
    await asyncio.gather(*(opener(i) for i in range(count)))
    print(json.dumps({"opened": len(conns), "open_seconds": round(time.monotonic() - t0, 2),
                      "failures": failures[:20], "failed": len(failures)}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "verify"
    results = await asyncio.gather(*(one_exchange(r, w, b"B%015d" % i) for i, r, w in conns),
                                   return_exceptions=True)
    print(json.dumps({"second_token_verified": sum(1 for r in results if r is True)}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "close"
    for _, _, w in conns:
        w.close()
    print(json.dumps({"closed": len(conns)}), flush=True)


def child_main(args):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.serve:
        asyncio.run(serve([OPT_PORT, RULE_PORT, PLAIN_PORT]))
    elif args.rate_port:
        print(json.dumps(asyncio.run(rate(args.rate_port, args.rate_count, args.concurrency))), flush=True)
    elif args.hold_port:
        asyncio.run(hold(args.hold_port, args.hold, args.concurrency))


# ---------------------------------------------------------------------------
# The parent: lab, boxes, phases
# ---------------------------------------------------------------------------

def client_cmd(*extra):
    """This script in one of its child roles."""
    return ["/usr/bin/python3", str(Path(__file__).resolve()), *extra]


def tls_handshakes(lab, box):
    """The box's TLS handshakes so far, by kind: {"full": n, "resumed": n}."""
    r = lab.run(box, "curl", "-s", "-m", "3", "http://127.0.0.1:7880/metrics")
    out = {"full": 0, "resumed": 0}
    for line in r.stdout.splitlines():
        for kind in out:
            if line.startswith("wanopt_tls_handshakes_total{") and 'kind="%s"' % kind in line:
                out[kind] += int(float(line.rsplit(" ", 1)[1]))
    return out


def prepare_lab(lab):
    """After lab.up(): every namespace tuned for many short connections (ports, backlogs,
    TIME_WAIT reuse by the client), and the echo server started."""
    for node in ("client", "server", "branch", "dc"):
        lab.run(node, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=10000 65000",
                "-w", "net.ipv4.tcp_tw_reuse=1", "-w", "net.core.somaxconn=8192",
                "-w", "net.ipv4.tcp_max_syn_backlog=8192")
    server = lab.spawn("echo", "server", *client_cmd("--serve"), stdout=subprocess.PIPE, text=True)
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("the echo server did not start")


def start_boxes(lab):
    """Both boxes with RULES, log level warn; returns their pids by name."""
    pids = {}
    for box in ("dc", "branch"):
        lab.start_box(box, box_config(lab, box, RULES, "warn", keepalive_ms=2000))
        pids[box] = lab.procs[box].pid
    return pids


def run_rate(lab, args, port, label, pids=None):
    """pids: the running boxes, whose CPU per connection is recorded."""
    pids = {b: p for b, p in (pids or {}).items() if lab.procs.get(b) and lab.procs[b].poll() is None}
    cpu0 = {b: proc_cpu_seconds(p) for b, p in pids.items()}
    tls0 = tls_handshakes(lab, "dc") if "dc" in pids else None
    r = lab.run("client", *client_cmd("--rate-port", str(port), "--rate-count", str(args.rate_count),
                                      "--concurrency", str(args.concurrency)), timeout=600)
    if r.returncode != 0:
        raise RuntimeError("rate client (%s): %s" % (label, r.stderr[-2000:]))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["label"] = label
    res["cpu_ms_per_connection"] = {b: round(1000 * (proc_cpu_seconds(p) - cpu0[b]) / max(1, res["verified"]), 3)
                                    for b, p in pids.items()}
    if tls0 is not None:  # the dc accepted every inner channel: how many were resumed
        tls1 = tls_handshakes(lab, "dc")
        res["tls_handshakes"] = {k: tls1[k] - tls0[k] for k in tls1}
    print("[intercept_scale] rate %-32s %8.1f conn/s  verified %d/%d  median %s ms  p99 %s ms  over 900 ms: %d" % (
        label, res["per_second"], res["verified"], res["count"], res["latency_ms_median"], res["latency_ms_p99"],
        res["over_900_ms"]) + "  CPU ms/conn %s  TLS %s" % (res["cpu_ms_per_connection"], res.get("tls_handshakes")),
        flush=True)
    return res


def run_hold(lab, args, boxes_pid, results, port, label, fds_per_conn):
    """Holds as many of args.hold connections as every box's descriptor limit allows
    (fds_per_conn each: 2, the LAN socket and the inner channel's TCP socket; the TLS
    pump's end is in-process: no descriptor)."""
    before = {b: box_reading(pid) for b, pid in boxes_pid.items()}
    limits = {b: int(proc_nofile_limit(pid)["soft"]) for b, pid in boxes_pid.items()}
    # 64 spare for the boxes' own use, and 64 more the status server keeps for the data
    # plane (it refuses a request that would eat into them: the API reading below).
    room = min((limits[b] - before[b]["fds"] - 128) // fds_per_conn for b in boxes_pid)
    count = min(args.hold, room)
    if count < args.hold:
        print("[intercept_scale] hold %s: %d connections, not %d: the boxes' RLIMIT_NOFILE is %s and each "
              "connection takes %d descriptors per box" % (label, count, args.hold, limits, fds_per_conn), flush=True)
    p = lab.spawn("holder", "client", *client_cmd("--hold-port", str(port), "--hold", str(count),
                                                  "--concurrency", str(args.concurrency)),
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    opened = json.loads(p.stdout.readline())
    print("[intercept_scale] hold %s: %s" % (label, opened), flush=True)
    active = {b: wait_metric(lab, b, "wanopt_connections_active", lambda v: v >= opened["opened"], 30)
              for b in boxes_pid}
    during = {b: box_reading(pid) for b, pid in boxes_pid.items()}
    # The idle reading is taken three keepalive ticks (keepalive_ms = 2000) later,
    # when every session has had its idle release: a measurement point, not a wait
    # for an event (the boxes report none).
    time.sleep(6.5)
    idle = {b: box_reading(pid) for b, pid in boxes_pid.items()}
    sockets = {}
    for b in boxes_pid:
        kinds = {}
        for line in lab.run(b, "ss", "-tanH").stdout.splitlines()[:200000]:
            f = line.split()
            if len(f) >= 5:
                local_port, peer_port = (x.rsplit(":", 1)[1].replace("*", "0") for x in f[3:5])
                key = "%s local :%s" % (f[0], local_port if int(local_port) < 10000 else "eph") + \
                      " peer :%s" % (peer_port if int(peer_port) < 10000 else "eph")
                kinds[key] = kinds.get(key, 0) + 1
        sockets[b] = kinds
    p.stdin.write("verify\n")
    p.stdin.flush()
    second = json.loads(p.stdout.readline())
    p.stdin.write("close\n")
    p.stdin.flush()
    closed = json.loads(p.stdout.readline())
    lab.stop("holder")
    gone = {b: wait_metric(lab, b, "wanopt_connections_active", lambda v: v == 0, 60) for b in boxes_pid}
    after = {b: box_reading(pid) for b, pid in boxes_pid.items()}
    n = max(1, opened["opened"])
    per_conn = {b: {"rss_bytes_per_conn": round((idle[b]["VmRSS"] - before[b]["VmRSS"]) / n),
                    "busy_rss_bytes_per_conn": round((during[b]["VmRSS"] - before[b]["VmRSS"]) / n),
                    "fds_per_conn": round((during[b]["fds"] - before[b]["fds"]) / n, 2)} for b in boxes_pid}
    results["holds"].append({"label": label, "requested": args.hold, "count": count, "nofile_limits": limits,
                       **opened, **second, **closed, "active_seen": active,
                       "active_after_close": gone, "before": before, "during": during, "idle": idle, "sockets": sockets, "after": after,
                       "per_connection": per_conn})
    print("[intercept_scale] hold: active %s, second token %d, per connection %s, after close active %s" % (
        active, second["second_token_verified"], per_conn, gone), flush=True)


def tls_floor_note(results, worst):
    """The floor beside the TLS figure: OpenSSL's own memory per resumed channel plus
    what a plaintext channel takes."""
    floor, plain = results.get("tls_floor"), worst.get("plaintext channel")
    if not floor or plain is None:
        return ""
    openssl = max(floor["resumed"].values())
    return ("; with TLS the floor is %.1f KiB: OpenSSL alone keeps %.1f KiB per resumed channel per box (%s, "
            "tls_memory_floor), above the target by itself, plus the plaintext channel's %.1f KiB" % (
                (openssl + plain) / 1024, openssl / 1024, floor["openssl"], plain / 1024))


def render(results):
    rows = ["# Connections through the intercepting pair (namespace lab)", "",
            "- date: %s; git commit: %s; nproc %s; WAN delay 1 ms one way; policy F; peering by %s" % (
                results["date"], (results["machine"]["git_commit"] or "?")[:7], os.cpu_count(), results["peering"]),
            "- rate: %d connections per row, %d in flight, each connect + 16-byte echo verified + close; "
            "the client is one Python asyncio process" % (results["rate_count"], results["concurrency"]), "",
            "| new connections | conn/s | vs without boxes | verified | median ms | p99 ms | over 900 ms "
            "| CPU ms per connection (branch / dc) | TLS handshakes at the dc (full / resumed) |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    base = results["rates"][0]["per_second"] if results["rates"] else None
    for r in results["rates"]:
        cpu = r["cpu_ms_per_connection"]
        tls = r.get("tls_handshakes")
        rows.append("| %s | %.0f | %s | %d/%d | %s | %s | %d | %s | %s |" % (
            r["label"], r["per_second"], "%.2fx" % (r["per_second"] / base) if base else "-",
            r["verified"], r["count"], r["latency_ms_median"], r["latency_ms_p99"], r["over_900_ms"],
            " / ".join("%.2f" % cpu[b] if b in cpu else "-" for b in ("branch", "dc")),
            "%d / %d" % (tls["full"], tls["resumed"]) if tls and any(tls.values()) else "-"))
    for h in results["holds"]:
        pc = h["per_connection"]
        rows += ["", "| %d concurrent connections, %s | branch | dc |" % (h["count"], h["label"]),
                 "|---|---:|---:|",
                 "| opened and verified | %d of %d | |" % (h["opened"], h["count"]),
                 "| active in the status API | %d | %d |" % (h["active_seen"]["branch"], h["active_seen"]["dc"]),
                 "| second token through every one, all open | %d | |" % h["second_token_verified"],
                 "| RSS per connection, just opened | %.1f KiB | %.1f KiB |" % (
                     pc["branch"]["busy_rss_bytes_per_conn"] / 1024, pc["dc"]["busy_rss_bytes_per_conn"] / 1024),
                 "| RSS per connection, idle (6.5 s later) | %.1f KiB | %.1f KiB |" % (
                     pc["branch"]["rss_bytes_per_conn"] / 1024, pc["dc"]["rss_bytes_per_conn"] / 1024),
                 "| descriptors per connection | %s | %s |" % (pc["branch"]["fds_per_conn"], pc["dc"]["fds_per_conn"]),
                 "| RSS before / just opened / idle / after close (MiB) | %s | %s |" % tuple(
                     "%.1f / %.1f / %.1f / %.1f" % tuple(h[k][b]["VmRSS"] / 2**20 for k in ("before", "during",
                                                                                           "idle", "after"))
                     for b in ("branch", "dc")),
                 "| active after close | %d | %d |" % (h["active_after_close"]["branch"],
                                                     h["active_after_close"]["dc"])]
        if h["count"] < h["requested"]:
            rows.append("\n%d, not %d: the boxes' RLIMIT_NOFILE here is %s (this sandbox's hard limit; no "
                        "CAP_SYS_RESOURCE to raise it) and each connection takes %s descriptors per box."
                        % (h["count"], h["requested"], sorted(set(h["nofile_limits"].values())),
                           pc["branch"]["fds_per_conn"]))
    rows += ["", "Targets (printed, not asserted): " + "; ".join(results["targets"])]
    if results["errors"]:
        rows += ["", "Errors:"] + ["- " + e for e in results["errors"]]
    return "\n".join(rows) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rate-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--hold-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--wanopt", default=str(REPO / "build-release/wanopt/wanopt"))
    ap.add_argument("--tls-memory-floor", default=str(REPO / "build-release/tests/bench/tls_memory_floor"),
                    help="the tls_memory_floor tool (OpenSSL's own memory per idle TLS channel)")
    ap.add_argument("--peering", choices=("certificates", "psk"), default="certificates",
                    help="how the boxes authenticate each other (default: the lab PKI's certificates)")
    ap.add_argument("--log-level", default="warn", help="the boxes' log_level (default warn)")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the boxes' logs into DIR at the end")
    ap.add_argument("--rate-count", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--hold", type=int, default=10000)
    ap.add_argument("--json", default=str(HERE / "results/intercept_scale.json"))
    ap.add_argument("--markdown", default=str(HERE / "results/intercept_scale.md"))
    args = ap.parse_args()
    if args.serve or args.rate_port or args.hold_port:
        return child_main(args)
    if os.geteuid() != 0:
        raise SystemExit("the namespace lab needs root")
    wanopt = os.path.abspath(args.wanopt)
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": benchkit.machine_basics(),
               "rate_count": args.rate_count, "concurrency": args.concurrency, "peering": args.peering,
               "rates": [], "holds": [], "errors": []}
    with tempfile.TemporaryDirectory(prefix="wanopt-scale-") as work:
        lab = open_lab("ws%d" % (os.getpid() % 100000), work, wanopt, delay_ms=1)
        try:
            lab.up()
            prepare_lab(lab)
            results["rates"].append(run_rate(lab, args, OPT_PORT, "without boxes"))
            pids, configs = {}, {}
            for box in ("dc", "branch"):
                path = box_config(lab, box, RULES, args.log_level, keepalive_ms=2000)
                if args.peering == "psk":
                    text = Path(path).read_text()
                    Path(path).write_text(text[:text.index("[peering]")] + PSK_PEERING + text[text.index("[intercept]"):])
                configs[box] = path
                lab.start_box(box, path)
                pids[box] = lab.procs[box].pid

            def restart_boxes():
                # Each hold starts from fresh processes: memory freed by what ran
                # before would otherwise be reused, and the RSS per connection understated.
                for box in ("branch", "dc"):
                    lab.stop(box)
                for box in ("dc", "branch"):
                    lab.start_box(box, configs[box])
                    pids[box] = lab.procs[box].pid
            results["rates"].append(run_rate(lab, args, OPT_PORT, "optimized (F, TLS)", pids))
            results["rates"].append(run_rate(lab, args, PLAIN_PORT, "optimized (F, plaintext channel)", pids))
            results["rates"].append(run_rate(lab, args, RULE_PORT, "pass-through by rule", pids))
            m = {b: metrics(lab, b) for b in pids}
            results["metrics_after_rates"] = m
            restart_boxes()
            run_hold(lab, args, pids, results, PLAIN_PORT, "plaintext channel", 2)
            restart_boxes()
            run_hold(lab, args, pids, results, OPT_PORT, "TLS channel", 2)
            lab.stop("dc")
            results["rates"].append(run_rate(lab, args, OPT_PORT, "pass-through, no peer (dc stopped)", pids))
            results["rates"].append(run_rate(lab, args, OPT_PORT, "pass-through, no peer, again", pids))
            results["branch_metrics_end"] = metrics(lab, "branch")
            # The floor under the idle TLS figure: what OpenSSL alone keeps per channel.
            r = subprocess.run([args.tls_memory_floor, os.path.join(work, "pki")], capture_output=True, text=True,
                               timeout=120)
            if r.returncode != 0:
                raise RuntimeError("tls_memory_floor: %s" % r.stderr.strip())
            results["tls_floor"] = json.loads(r.stdout)
        except Exception as e:  # reported, and the lab still comes down
            results["errors"].append(repr(e))
        finally:
            if results["errors"]:
                lab.print_logs()
            lab.down()
            if args.keep_logs:
                keep_logs(work, args.keep_logs)
    opt = [r for r in results["rates"] if r["label"].startswith("optimized")]
    holds = results["holds"]
    worst = {h["label"]: max(v["rss_bytes_per_conn"] for v in h["per_connection"].values()) for h in holds}
    results["targets"] = [
        "10,000 concurrent: %s" % (", ".join("%d verified twice (%s)" % (h["second_token_verified"], h["label"])
                                             for h in holds) or "not measured"),
        ">= 1,000 new optimized connections/s: %s" % (", ".join("%.0f/s %s (%s)" % (
            r["per_second"], r["label"], "met" if r["per_second"] >= 1000 else "missed") for r in opt)
            or "not measured"),
        "<= 16 KiB per idle connection per box: %s" % (", ".join("%.1f KiB %s (%s)" % (
            w / 1024, label, "met" if w <= 16384 else "missed") for label, w in worst.items()) or "not measured")
        + tls_floor_note(results, worst)]
    for r in results["rates"]:
        if r["verified"] != r["count"]:
            results["errors"].append("%s: %d of %d verified: %s" % (r["label"], r["verified"], r["count"],
                                                                  r["failures"][:5]))
    for h in holds:
        if h["opened"] != h["count"] or h["second_token_verified"] != h["opened"]:
            results["errors"].append("hold %s: opened %d of %d, second token %d" % (
                h["label"], h["opened"], h["count"], h["second_token_verified"]))
    print(benchkit.write_outputs(results, render(results), Path(args.json), Path(args.markdown)))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
