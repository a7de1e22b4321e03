#!/usr/bin/python3
"""Signals to real daemons mid-transfer, both ways: a cut stream is never a clean end.

Two `wanopt run` processes on loopback (a branch with a forward rule, a datacenter),
in front of an origin in this script. For each box, each of SIGTERM, SIGKILL and
SIGHUP, and each direction (download: origin -> client, upload: client -> origin):
the stream is endless, so it can never end cleanly; once several MiB have crossed
the signal goes to the box. TERM and KILL: the far end's read must fail with a reset
(never EOF). HUP: the daemon logs it and keeps running, and the transfer goes on.

Usage: fault_signals_test.py PATH_TO_WANOPT. Prints 'N passed, N failed'; exit 1 on failure.
"""
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testkit import Checks, free_port, wait_listening, wait_until  # noqa: E402

WANOPT = sys.argv[1]
check = Checks()
MIB = 1 << 20


def read_until_end(sock, counter):
    """Reads until the stream ends; 'eof', 'reset' or another error name."""
    sock.settimeout(20)
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                return "eof"
            counter[0] += len(data)
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))


def read_at_least(sock, counter, total):
    """Reads until `counter` reaches `total` or the stream ends or fails."""
    sock.settimeout(20)
    try:
        while counter[0] < total:
            data = sock.recv(1 << 16)
            if not data:
                return
            counter[0] += len(data)
    except OSError:
        pass


def write_forever(sock, stop):
    chunk = b"u" * (1 << 16)
    try:
        while not stop.is_set():
            sock.sendall(chunk)
    except OSError:
        pass


class Origin:
    """Per connection: 'D' -> send forever; 'U' -> read until the end, record how it ended."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.upload_end = None
        self.upload_bytes = [0]
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        with conn:
            mode = conn.recv(1)
            if mode == b"D":
                write_forever(conn, self.stop)
            elif mode == b"U":
                self.upload_end = read_until_end(conn, self.upload_bytes)

    def close(self):
        self.stop.set()
        self.listener.close()


tmp = tempfile.mkdtemp(prefix="wanopt-signals-")


def start_pair(origin):
    dc_port, fwd_port = free_port(), free_port()
    dc_conf = os.path.join(tmp, "dc.toml")
    br_conf = os.path.join(tmp, "branch.toml")
    with open(dc_conf, "w") as f:
        f.write(f'[box]\nname = "dc"\nthreads = 1\n[datacenter]\nlisten = "127.0.0.1:{dc_port}"\n')
    with open(br_conf, "w") as f:
        f.write(f'[box]\nname = "branch"\nthreads = 1\n[[branch.forward]]\nlisten = "127.0.0.1:{fwd_port}"\n'
                f'destination = "127.0.0.1:{origin.port}"\npeer = "127.0.0.1:{dc_port}"\npeer_down = "reset"\n')
    logs = {name: open(os.path.join(tmp, name + ".log"), "w+") for name in ("dc", "branch")}
    dc = subprocess.Popen([WANOPT, "run", "--config", dc_conf], stdout=logs["dc"], stderr=subprocess.STDOUT)
    br = subprocess.Popen([WANOPT, "run", "--config", br_conf], stdout=logs["branch"], stderr=subprocess.STDOUT)
    ok = wait_listening(dc_port) and wait_listening(fwd_port)
    return {"dc": dc, "branch": br}, logs, fwd_port, ok


def stop(procs):
    for p in procs.values():
        if p.poll() is None:
            p.kill()
        p.wait()


def log_text(logs, name):
    logs[name].flush()
    logs[name].seek(0)
    return logs[name].read()


for box in ("branch", "dc"):
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGHUP):
        for direction in ("download", "upload"):
            name = f"{signal.Signals(sig).name} to the {box} mid-{direction}"
            origin = Origin()
            procs, logs, port, ok = start_pair(origin)
            check(f"{name}: both daemons listening", ok)
            if not ok:
                stop(procs)
                origin.close()
                continue
            client = socket.create_connection(("127.0.0.1", port))
            moved = [0]
            writer_stop = threading.Event()
            if direction == "download":
                client.sendall(b"D")
                read_at_least(client, moved, 4 * MIB)
                crossed = moved[0] >= 4 * MIB
            else:
                client.sendall(b"U")
                writer = threading.Thread(target=write_forever, args=(client, writer_stop), daemon=True)
                writer.start()
                crossed = wait_until(lambda: origin.upload_bytes[0] >= 4 * MIB, 20)
            check(f"{name}: 4 MiB crossed before the signal", crossed, f"({moved[0]} / {origin.upload_bytes[0]} bytes)")
            procs[box].send_signal(sig)
            if sig == signal.SIGHUP:
                # The daemon says so and goes on: far more bytes cross after the signal than
                # the sockets on the way can hold.
                before = moved[0] if direction == "download" else origin.upload_bytes[0]
                if direction == "download":
                    read_at_least(client, moved, before + 32 * MIB)
                    after = moved[0]
                else:
                    wait_until(lambda: origin.upload_bytes[0] >= before + 32 * MIB, 20)
                    after = origin.upload_bytes[0]
                check(f"{name}: the daemon is still running", procs[box].poll() is None, f"rc {procs[box].poll()}")
                check(f"{name}: the transfer goes on", after >= before + 32 * MIB, f"{before} -> {after}")
                check(f"{name}: the log says SIGHUP", "SIGHUP" in log_text(logs, box), log_text(logs, box)[-500:])
            else:
                if direction == "download":
                    how = read_until_end(client, moved)
                else:
                    wait_until(lambda: origin.upload_end is not None, 20)
                    how = origin.upload_end
                check(f"{name}: the far end sees a reset, not a clean end", how == "reset", f"({how})")
                procs[box].wait(timeout=20)
            writer_stop.set()
            client.close()
            stop(procs)
            origin.close()

sys.exit(check.summary())
