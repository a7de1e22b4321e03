"""relay_bench's idle-connection memory phase: a hold origin (run as
`relay_bench.py --origin-mode PORT`) that counts the bytes it receives, and N idle
connections through a fresh wanopt pair, each carrying one byte."""

import os
import resource
import selectors
import socket
import subprocess
import sys
import time

from benchkit import BenchError, indent, log, proc_nofile_limit, proc_status
from relay_paths import LOOPBACK, WanoptPair, check_binary
from relay_report import TARGET_IDLE_BYTES_PER_CONN, TARGET_IDLE_CONNS

RELAY_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay_bench.py")


def origin_main(port):
    """Hold origin: accepts and holds connections, counts bytes received.
    Protocol on stdin/stdout: prints 'READY' once listening; each 'q' line on
    stdin is answered with 'accepted open closed bytes'."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((LOOPBACK, port))
    lsock.listen(65535)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, "listen")
    sel.register(0, selectors.EVENT_READ, "stdin")
    stats = {"accepted": 0, "open": 0, "closed": 0, "bytes": 0, "accept_errors": 0}
    os.write(1, b"READY\n")
    inbuf = b""
    while True:
        for key, _ in sel.select():
            if key.data == "listen":
                for _ in range(256):
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    except OSError:
                        stats["accept_errors"] += 1
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                    stats["accepted"] += 1
                    stats["open"] += 1
            elif key.data == "stdin":
                chunk = os.read(0, 4096)
                if not chunk:
                    return 0
                inbuf += chunk
                while b"\n" in inbuf:
                    line, inbuf = inbuf.split(b"\n", 1)
                    if line.strip() == b"q":
                        os.write(1, ("%(accepted)d %(open)d %(closed)d %(bytes)d "
                                     "%(accept_errors)d\n" % stats).encode())
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    stats["bytes"] += len(data)
                else:
                    sel.unregister(conn)
                    conn.close()
                    stats["open"] -= 1
                    stats["closed"] += 1


class Origin:
    def __init__(self, procs, port, tmpdir):
        self.port = port
        self.proc = procs.start(
            "hold-origin", [sys.executable, RELAY_BENCH, "--origin-mode", str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr_path=os.path.join(tmpdir, "origin.stderr"))
        line = self._readline(10.0)
        if line != "READY":
            raise BenchError("hold origin failed to start (got %r); stderr:\n%s"
                             % (line, indent(self.proc.stderr_tail())))

    def _readline(self, timeout):
        fd = self.proc.popen.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise BenchError("hold origin did not answer within %.0f s" % timeout)
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise BenchError("hold origin exited; stderr:\n%s"
                                     % indent(self.proc.stderr_tail()))
                buf += chunk
        finally:
            sel.close()
        return buf.decode().strip()

    def stats(self):
        self.proc.popen.stdin.write(b"q\n")
        self.proc.popen.stdin.flush()
        a, o, c, b, e = (int(x) for x in self._readline(10.0).split())
        return {"accepted": a, "open": o, "closed": c, "bytes": b, "accept_errors": e}


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard != resource.RLIM_INFINITY and hard < needed:
        # Only possible with CAP_SYS_RESOURCE; fine to fail.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ValueError, OSError):
            pass
    if soft != target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def idle_phase(args, procs, ports, tmpdir, results):
    n = args.idle
    idle = results["idle"]
    idle["connections_requested"] = n
    soft, hard = raise_nofile(n + 256)
    idle["rlimit_nofile_bench"] = {"soft": soft, "hard": hard}
    if soft != resource.RLIM_INFINITY and soft < n + 64:
        raise BenchError("RLIMIT_NOFILE is %d (hard %d); %d idle connections need about %d"
                         % (soft, hard, n, n + 64))
    origin_port = ports.get()
    pair = WanoptPair(procs, ports, tmpdir, args.wanopt, origin_port, "idle", args.daemon_nofile)
    origin = None
    socks = []
    try:
        pair.start()
        results["config"]["wanopt_configs_idle"] = pair.config_text()
        idle["wanopt_ready"] = pair.ready_info
        check_binary(results, pair, "idle-memory")
        # Origin starts after the readiness probes, so probe connections that
        # the pair forwards are refused instead of being counted.
        origin = Origin(procs, origin_port, tmpdir)
        base = origin.stats()
        idle["origin_before"] = base
        before = {p.name: proc_status(p.pid) for p in pair.members}
        idle["daemons_before"] = before
        idle["daemon_nofile_limits"] = {p.name: proc_nofile_limit(p.pid) for p in pair.members}

        t0 = time.monotonic()
        connect_error = None
        for i in range(n):
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as e:
                connect_error = "socket() failed after %d connections: %s" % (i, e)
                break
            socks.append(s)
            s.settimeout(15.0)
            try:
                s.connect((LOOPBACK, pair.client_port))
                s.sendall(b"x")
            except OSError as e:
                connect_error = "connection %d of %d failed: %s" % (i + 1, n, e)
                break
            if i % 500 == 499:
                pair.check_alive()
        idle["connect_seconds"] = round(time.monotonic() - t0, 3)
        pair.check_alive()
        if connect_error:
            raise BenchError(connect_error)

        # All N bytes must arrive at the origin: proof that every connection
        # really went through both proxies.
        # Wait (bounded) until all bytes arrived; give up early after 10 s
        # without progress.
        deadline = time.monotonic() + 30 + n / 500.0
        st = origin.stats()
        last_progress = time.monotonic()
        while st["bytes"] - base["bytes"] < n and time.monotonic() < deadline:
            pair.check_alive()
            if time.monotonic() - last_progress > 10.0:
                break
            time.sleep(0.2)
            prev = st["bytes"]
            st = origin.stats()
            if st["bytes"] != prev:
                last_progress = time.monotonic()
        idle["deliver_seconds"] = round(time.monotonic() - t0, 3)
        idle["origin_after"] = st
        received = st["bytes"] - base["bytes"]
        idle["origin_bytes_received"] = received
        after = {p.name: proc_status(p.pid) for p in pair.members}
        idle["daemons_after"] = after
        pair.check_alive()

        # Client sockets that became readable were closed/reset by the proxy.
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        idle["client_sockets_closed_by_proxy"] = len(sel.select(0))
        sel.close()

        if received != n:
            idle["valid"] = False
            msg = ("origin received %d bytes, expected %d (one per connection); origin stats %s; "
                   "daemon open fds %s; daemon RLIMIT_NOFILE %s"
                   % (received, n, st, {k: v.get("fds") for k, v in after.items()},
                      {p.name: proc_nofile_limit(p.pid) for p in pair.members}))
            limits = {p.name: proc_nofile_limit(p.pid) for p in pair.members}
            for name, lim in limits.items():
                fds = after.get(name, {}).get("fds")
                try:
                    soft_lim = int(lim["soft"])
                except (TypeError, KeyError, ValueError):
                    continue
                if fds is not None and fds >= soft_lim - max(32, soft_lim // 50):
                    msg += ("; %s is at its descriptor limit (%d of %d): with 2 descriptors per "
                            "relayed connection per box, %d connections need more than %d. "
                            "Raise the hard limit (--daemon-nofile N, needs CAP_SYS_RESOURCE) or "
                            "use a smaller --idle" % (name, fds, soft_lim, n, soft_lim))
                    break
            idle["error"] = msg
            results["errors"].append("idle: " + msg)
            log("idle: " + msg)
        else:
            idle["valid"] = True
        rss_before = sum(before[k].get("VmRSS", 0) for k in before)
        hwm_after = sum(after[k].get("VmHWM", 0) for k in after)
        rss_after = sum(after[k].get("VmRSS", 0) for k in after)
        idle["rss_before_bytes_total"] = rss_before
        idle["peak_rss_after_bytes_total"] = hwm_after
        idle["rss_after_bytes_total"] = rss_after
        idle["bytes_per_connection"] = round((hwm_after - rss_before) / n, 1)
        idle["bytes_per_connection_current_rss"] = round((rss_after - rss_before) / n, 1)
        idle["per_daemon_bytes_per_connection"] = {
            k: round((after[k].get("VmHWM", 0) - before[k].get("VmRSS", 0)) / n, 1)
            for k in after}
        idle["stderr_tail"] = pair.stderr_tails()
        log("idle: %d connections, origin got %d bytes, %.0f B/conn (peak RSS delta, both daemons)"
            % (n, received, idle["bytes_per_connection"]))
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        socks.clear()
        idle["wanopt_stop"] = pair.stop()
        results["warnings"].extend(pair.warnings)
        if origin is not None:
            procs.stop(origin.proc)
    tgt = results["targets"]
    tgt["idle_memory"] = {
        "description": "< 64 KiB per idle connection for both proxies together at 10,000 idle"
                       " connections",
        "limit_bytes_per_connection": TARGET_IDLE_BYTES_PER_CONN,
        "connections": n,
        "met": (idle["bytes_per_connection"] < TARGET_IDLE_BYTES_PER_CONN
                if idle.get("valid") else None),
        "note": None if n == TARGET_IDLE_CONNS else
        "measured at %d connections, target is defined at %d" % (n, TARGET_IDLE_CONNS),
    }
