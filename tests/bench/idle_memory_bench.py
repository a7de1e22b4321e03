#!/usr/bin/python3
"""Memory of idle and of finished connections through a wanopt pair, per policy.

relay_bench.py measures idle memory with the TCP-only policy (T), where no codec
exists. This one measures what a connection costs each box once bytes have
crossed with a codec (F: DRE + LZ, with a datastore on both boxes), optionally
over TLS with a pre-shared key:

  1. idle:  N connections through the pair to an echo origin; each sends 7 bytes
            and reads them back, then stays open and silent. After --settle
            seconds (longer than two keepalive ticks, so idle sessions had their
            chance to release their codecs), each daemon's VmRSS against its
            VmRSS before: bytes per idle connection, per box.
  2. busy:  M connections open at once, each sending --busy-kib KiB of
            compressible text (different on every connection: no DRE hits) and
            reading it back; then all are closed. VmHWM (peak) and VmRSS after
            --settle seconds: whether the memory went back to the system.

Results: a Markdown table on stdout, and JSON with --json.

Usage:
  /usr/bin/python3 tests/bench/idle_memory_bench.py --wanopt build/wanopt/wanopt
  /usr/bin/python3 tests/bench/idle_memory_bench.py --policy T --idle 1000 --busy 0
  /usr/bin/python3 tests/bench/idle_memory_bench.py --tls --idle 500 --busy 500

All traffic is on 127.0.0.1. Every process started here is stopped in a finally
block, by PID. Exit status: 0 measured; 1 a measurement failed; 2 setup error.
"""

import argparse
import json
import os
import random
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testkit import free_port  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
PSK = "00112233445566778899aabbccddeeff"
ECHO_BYTES = b"hello!\n"  # 7 bytes


class BenchError(Exception):
    pass


def log(msg):
    print("[idle-bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                out[key] = int(value.split()[0]) * 1024
    return out


def echo_origin_main(port):
    """Echo origin: echoes every byte back; runs until stdin closes."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((LOOPBACK, port))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    sel.register(0, selectors.EVENT_READ, "stdin")
    pending = {}
    os.write(1, b"READY\n")
    while True:
        for key, events in sel.select():
            if key.data == "stdin":
                if not os.read(0, 4096):
                    return 0
            elif key.fileobj is lsock:
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except (BlockingIOError, OSError):
                        break
                    conn.setblocking(False)
                    pending[conn] = b""
                    sel.register(conn, selectors.EVENT_READ, "conn")
            else:
                conn = key.fileobj
                if events & selectors.EVENT_READ:
                    try:
                        data = conn.recv(262144)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        data = b""
                    if data == b"":
                        sel.unregister(conn)
                        conn.close()
                        pending.pop(conn, None)
                        continue
                    if data:
                        pending[conn] += data
                if pending[conn]:
                    try:
                        n = conn.send(pending[conn])
                        pending[conn] = pending[conn][n:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        pending[conn] = b""
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending[conn] else 0)
                sel.modify(conn, want, "conn")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, argv, stderr_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
        def preexec():
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        err = open(stderr_path, "wb")
        # Its own process group: a --wrap command and the daemon it runs stop together.
        p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err, preexec_fn=preexec,
                             start_new_session=True)
        err.close()
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # the group this script made for it
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs = []


def wait_connectable(port, procs, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise BenchError("a daemon exited with status %s" % p.returncode)
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError("port %d not listening after %.0f s" % (port, timeout))


def write_configs(tmp, args, origin_port, dc_port, br_port):
    timeouts = "[timeouts]\nkeepalive_ms = %d\ndead_peer_ms = %d\n\n" % (
        args.keepalive_ms, max(45000, 3 * args.keepalive_ms))
    peering = ('[peering]\npsk_identity = "bench"\npsk = "%s"\n\n' % PSK) if args.tls else ""
    dc_dre = br_dre = ""
    if args.policy in ("F", "D"):
        dc_dre = '[dre]\ndatastore = "%s"\nmax_size_mb = 1024\n\n' % os.path.join(tmp, "dc-store")
        br_dre = '[dre]\ndatastore = "%s"\nmax_size_mb = 1024\n\n' % os.path.join(tmp, "br-store")
    box = '[box]\ndevice_id = "%s"\npolicy = "%s"\nthreads = %d\nlog_level = "warn"\n\n'
    dc = os.path.join(tmp, "datacenter.toml")
    br = os.path.join(tmp, "branch.toml")
    with open(dc, "w") as f:
        f.write(box % ("02:00:00:00:00:02", args.policy, args.threads) + timeouts + peering + dc_dre +
                '[datacenter]\nlisten = "%s:%d"\n' % (LOOPBACK, dc_port))
    with open(br, "w") as f:
        f.write(box % ("02:00:00:00:00:01", args.policy, args.threads) + timeouts + peering + br_dre +
                '[[branch.forward]]\nlisten = "%s:%d"\ndestination = "%s:%d"\npeer = "%s:%d"\n'
                % (LOOPBACK, br_port, LOOPBACK, origin_port, LOOPBACK, dc_port))
    return dc, br


def recv_exactly(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(262144, n - len(out)))
        if not chunk:
            raise BenchError("connection ended after %d of %d echoed bytes" % (len(out), n))
        out += chunk
    return bytes(out)


def text_payload(rng, n):
    """Compressible, but different on every connection: words in a random order."""
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel",
             b"india", b"juliet", b"kilo", b"lima", b"mike", b"november", b"oscar", b"papa"]
    parts = []
    size = 0
    while size < n:
        w = words[rng.randrange(len(words))] + b"%d " % rng.randrange(100000)
        parts.append(w)
        size += len(w)
    return b"".join(parts)[:n]


def echo_one(sock, data):
    """Sends `data` and reads it back, interleaved so neither side's buffers fill."""
    sock.setblocking(True)
    got = bytearray()
    sent = 0
    while sent < len(data):
        n = sock.send(data[sent:sent + 65536])
        sent += n
        while len(got) < sent - 262144:
            got += sock.recv(262144)
    got += recv_exactly(sock, len(data) - len(got))
    if bytes(got) != data:
        raise BenchError("echo differs from what was sent")


def measure(daemons):
    return {name: proc_status(p.pid) for name, p in daemons.items()}


def run(args):
    tmp = tempfile.mkdtemp(prefix="wanopt-idle-bench-")
    procs = Procs()
    results = {"policy": args.policy, "tls": args.tls, "keepalive_ms": args.keepalive_ms,
               "settle_s": args.settle, "idle_connections": args.idle, "busy_connections": args.busy,
               "busy_kib": args.busy_kib}
    socks = []
    try:
        origin_port, dc_port, br_port = free_port(), free_port(), free_port()
        origin = procs.start([sys.executable, os.path.abspath(__file__), "--origin-mode", str(origin_port)],
                             os.path.join(tmp, "origin.stderr"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if origin.stdout.readline().strip() != b"READY":
            raise BenchError("echo origin did not start")
        dc_cfg, br_cfg = write_configs(tmp, args, origin_port, dc_port, br_port)
        wrap = shlex.split(args.wrap) if args.wrap else []
        dc = procs.start(wrap + [args.wanopt, "run", "--config", dc_cfg], os.path.join(tmp, "dc.stderr"))
        wait_connectable(dc_port, [dc])
        br = procs.start(wrap + [args.wanopt, "run", "--config", br_cfg], os.path.join(tmp, "br.stderr"))
        wait_connectable(br_port, [dc, br])
        daemons = {"datacenter": dc, "branch": br}
        # One connection first: the datastores, TLS contexts and loops are warm.
        with socket.create_connection((LOOPBACK, br_port)) as s:
            echo_one(s, ECHO_BYTES)
        time.sleep(1.0)
        before = measure(daemons)
        results["before"] = before

        if args.idle:
            t0 = time.monotonic()
            for i in range(args.idle):
                s = socket.create_connection((LOOPBACK, br_port), timeout=15)
                socks.append(s)
                echo_one(s, ECHO_BYTES)
            log("idle: %d connections echoed 7 bytes each in %.1f s; settling %.0f s"
                % (args.idle, time.monotonic() - t0, args.settle))
            time.sleep(args.settle)
            after = measure(daemons)
            results["idle_after"] = after
            results["idle_bytes_per_connection"] = {
                k: round((after[k]["VmRSS"] - before[k]["VmRSS"]) / args.idle) for k in daemons}
            for s in socks:
                s.close()
            socks = []
            time.sleep(2.0)

        if args.busy:
            rng = random.Random(args.seed)
            base = measure(daemons)
            results["busy_before"] = base
            t0 = time.monotonic()
            for i in range(args.busy):
                s = socket.create_connection((LOOPBACK, br_port), timeout=30)
                socks.append(s)
                echo_one(s, text_payload(rng, args.busy_kib * 1024))
            results["busy_open"] = measure(daemons)
            log("busy: %d connections of %d KiB each in %.1f s; idle for %.0f s, still open"
                % (args.busy, args.busy_kib, time.monotonic() - t0, args.settle))
            time.sleep(args.settle)
            results["busy_open_idle"] = measure(daemons)
            for s in socks:
                s.close()
            socks = []
            log("busy: closed; settling %.0f s" % args.settle)
            time.sleep(args.settle)
            results["busy_after"] = measure(daemons)
        for name, p in daemons.items():
            if p.poll() is not None:
                raise BenchError("%s exited with status %s" % (name, p.returncode))
        return results
    finally:
        for s in socks:
            s.close()
        procs.stop_all()
        if args.keep_tmp:
            log("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def mib(b):
    return "%.1f MiB" % (b / 1048576.0)


def render(r):
    label = "policy %s%s" % (r["policy"], " + TLS (PSK)" if r["tls"] else "")
    out = ["### %s (keepalive %d ms, settle %.0f s)" % (label, r["keepalive_ms"], r["settle_s"]), ""]
    out.append("| | datacenter | branch |")
    out.append("|---|---|---|")
    b = r["before"]
    out.append("| RSS at start | %s | %s |" % (mib(b["datacenter"]["VmRSS"]), mib(b["branch"]["VmRSS"])))
    if "idle_bytes_per_connection" in r:
        per = r["idle_bytes_per_connection"]
        a = r["idle_after"]
        out.append("| RSS with %d idle connections | %s | %s |"
                   % (r["idle_connections"], mib(a["datacenter"]["VmRSS"]), mib(a["branch"]["VmRSS"])))
        out.append("| per idle connection | %.1f KiB | %.1f KiB |"
                   % (per["datacenter"] / 1024.0, per["branch"] / 1024.0))
    if "busy_after" in r:
        o, i, a = r["busy_open"], r["busy_open_idle"], r["busy_after"]
        out.append("| RSS with %d connections open, each just echoed %d KiB | %s | %s |"
                   % (r["busy_connections"], r["busy_kib"], mib(o["datacenter"]["VmRSS"]), mib(o["branch"]["VmRSS"])))
        out.append("| peak RSS (VmHWM) | %s | %s |" % (mib(a["datacenter"]["VmHWM"]), mib(a["branch"]["VmHWM"])))
        out.append("| RSS when they had been idle %.0f s, still open | %s | %s |"
                   % (r["settle_s"], mib(i["datacenter"]["VmRSS"]), mib(i["branch"]["VmRSS"])))
        out.append("| RSS %.0f s after they closed | %s | %s |"
                   % (r["settle_s"], mib(a["datacenter"]["VmRSS"]), mib(a["branch"]["VmRSS"])))
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--origin-mode":
        return echo_origin_main(int(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wanopt", default=str(REPO_ROOT / "build/wanopt/wanopt"))
    ap.add_argument("--policy", default="F", choices=["F", "D", "L", "T"])
    ap.add_argument("--tls", action="store_true", help="inner channels over TLS with a pre-shared key")
    ap.add_argument("--idle", type=int, default=1000, help="idle connections (0: skip)")
    ap.add_argument("--busy", type=int, default=1000, help="busy connections (0: skip)")
    ap.add_argument("--busy-kib", type=int, default=256, help="KiB each busy connection echoes")
    ap.add_argument("--keepalive-ms", type=int, default=2000)
    ap.add_argument("--settle", type=float, default=None, help="seconds to wait before measuring "
                    "(default: 2 keepalive intervals + the daemon's 10 s memory trim interval + 2 s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--wrap", help="a command that execs the daemon, e.g. "
                    "'env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072' (the daemon's process "
                    "group gets SIGTERM at the end: a profiler in the same group may not finish its file)")
    args = ap.parse_args()
    if args.settle is None:
        args.settle = 2 * args.keepalive_ms / 1000.0 + 12.0
    if not os.access(args.wanopt, os.X_OK):
        print("idle_memory_bench: no wanopt binary at %s" % args.wanopt, file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < max(args.idle, args.busy) + 256:
        print("idle_memory_bench: RLIMIT_NOFILE %d is too low" % hard, file=sys.stderr)
        return 2
    try:
        results = run(args)
    except BenchError as e:
        print("idle_memory_bench: " + str(e), file=sys.stderr)
        return 1
    print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
