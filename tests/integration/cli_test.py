#!/usr/bin/python3
"""The command line as a user meets it: help, version, config errors, run, lab.

Usage: cli_test.py PATH_TO_WANOPT SOURCE_DIR. Prints 'N passed, N failed'; exit 1 on failure.
"""
import hashlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testkit import Checks, free_port, wait_listening  # noqa: E402

WANOPT = sys.argv[1]
SOURCE = sys.argv[2]
check = Checks()


def run(*args, timeout=60):
    return subprocess.run([WANOPT, *args], capture_output=True, text=True, timeout=timeout)


tmp = tempfile.mkdtemp(prefix="wanopt-cli-")


def config_file(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Daemon:
    """`wanopt run --config PATH`, its stderr collected line by line as it comes."""

    def __init__(self, path, nofile=None):
        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        env = dict(os.environ)
        if nofile and "UBSAN_OPTIONS" in env:
            # In the sanitizer build: UBSan's vptr check opens a pipe to test whether
            # memory is readable; at the descriptor limit that fails and it reports a
            # false "invalid vptr" (and cannot symbolize to apply a suppression). Such
            # reports are printed, not fatal, for the daemons run at a descriptor limit.
            env["UBSAN_OPTIONS"] = env["UBSAN_OPTIONS"].replace("halt_on_error=1", "halt_on_error=0")
        self.proc = subprocess.Popen([WANOPT, "run", "--config", path], stderr=subprocess.PIPE, text=True,
                                     preexec_fn=limit, env=env)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")), daemon=True)
        self.reader.start()

    def log(self):
        return "".join(self.lines)

    def wait_log(self, text, timeout=10):
        """True once `text` is in the log; False after `timeout` s or if the daemon exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                self.reader.join(timeout=5)
                return text in self.log()
            time.sleep(0.05)  # polling a condition with a deadline
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.reader.join(timeout=5)
        return rc


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


r = run("--version")
check("--version", r.returncode == 0 and r.stdout.startswith("wanopt "), r.stdout)
for args in (["--help"], ["run", "--help"], ["lab", "--help"]):
    r = run(*args)
    check(" ".join(args), r.returncode == 0 and "usage: wanopt" in r.stdout, r.stdout + r.stderr)
r = run("frobnicate")
check("unknown command exits 2", r.returncode == 2 and "unknown command" in r.stderr, r.stderr)
r = run("run")
check("run without --config exits 2", r.returncode == 2 and "--config FILE is required" in r.stderr, r.stderr)

port = free_port()
bad_configs = {
    "unknown key": (f'[datacenter]\nlisten = "127.0.0.1:{port}"\nlisen = 1\n', "datacenter.lisen: unknown key"),
    "bad address": ('[datacenter]\nlisten = "127.0.0.1:99999"\n', "datacenter.listen: '127.0.0.1:99999' is not an address:port"),
    "missing destination": ('[[branch.forward]]\nlisten = "127.0.0.1:1"\npeer = "127.0.0.1"\n',
                            "branch.forward[0].destination: is required"),
    "syntax": ("[datacenter\n", "TOML syntax"),
    "unknown module": (f'[datacenter]\nlisten = "127.0.0.1:{port}"\nmodules = ["nope"]\n', "unknown module 'nope'"),
}
for name, (text, expected) in bad_configs.items():
    path = config_file(name.replace(" ", "_") + ".toml", text)
    r = run("run", "--config", path)
    lines = r.stderr.strip().splitlines()
    check(f"bad config ({name}) exits 2", r.returncode == 2, f"rc={r.returncode}")
    check(f"bad config ({name}) prints one line", len(lines) == 1, repr(r.stderr))
    check(f"bad config ({name}) names the file, line and key", lines and path in lines[0] and expected in lines[0],
          repr(r.stderr))
r = run("run", "--config", os.path.join(tmp, "missing.toml"))
check("missing config file exits 2", r.returncode == 2 and "cannot open" in r.stderr, r.stderr)

# Every shipped example config is valid.
examples = os.path.join(SOURCE, "deploy", "examples")
for name in sorted(os.listdir(examples)):
    r = run("run", "--check", "--config", os.path.join(examples, name))
    check(f"example {name} is valid", r.returncode == 0 and ": ok: " in r.stdout, r.stdout + r.stderr)
r = run("run", "--check", "--config", config_file("check_bad.toml", "[box]\nname = 1\n"))
check("--check on a bad config exits 2", r.returncode == 2, r.stderr)

# Nothing was started by the bad configs: the port they named is still free.
with socket.socket() as s:
    check("bad config started nothing", s.connect_ex(("127.0.0.1", port)) != 0)

# A good config runs until SIGTERM and exits 0.
path = config_file("good.toml", f'[box]\ndevice_id = "02:00:00:00:00:09"\n[datacenter]\nlisten = "127.0.0.1:{port}"\n')
daemon = subprocess.Popen([WANOPT, "run", "--config", path], stderr=subprocess.PIPE, text=True)
try:
    check("run: listens on the configured port", wait_listening(port, daemon))
    daemon.send_signal(signal.SIGTERM)
    rc = daemon.wait(timeout=10)
    err = daemon.stderr.read()
    check("run: SIGTERM stops it with exit 0", rc == 0, f"rc={rc} {err}")
    check("run: logs that it listens", "datacenter listening on 127.0.0.1:%d" % port in err, err)
finally:
    if daemon.poll() is None:
        daemon.kill()
        daemon.wait()

# The status server of a daemon: token enforced, read-only.
status_port = free_port()
path = config_file("status.toml", f'[box]\nname = "tokened"\n[datacenter]\nlisten = "127.0.0.1:{free_port()}"\n'
                                  f'[status]\nlisten = "127.0.0.1:{status_port}"\ntoken = "s3cret-token-for-tests"\n')
daemon = Daemon(path)
try:
    check("status: listening", wait_listening(status_port, daemon.proc))
    import urllib.request, urllib.error
    base = f"http://127.0.0.1:{status_port}"
    try:
        urllib.request.urlopen(base + "/api/summary", timeout=5)
        check("status: no token -> 401", False)
    except urllib.error.HTTPError as e:
        check("status: no token -> 401", e.code == 401, e.code)
    req = urllib.request.Request(base + "/api/summary", headers={"Authorization": "Bearer s3cret-token-for-tests"})
    with urllib.request.urlopen(req, timeout=5) as r:
        check("status: bearer token -> 200 and the box's name", r.status == 200 and b'"tokened"' in r.read())
    with urllib.request.urlopen(base + "/?token=s3cret-token-for-tests", timeout=5) as r:
        check("status: ?token= works for the page", r.status == 200 and b"<table" in r.read())
    r = run("show", "summary", "--api", base)
    check("show without the token says so", r.returncode == 1 and "needs its access token" in r.stderr, r.stderr)
    r = run("show", "summary", "--api", base, "--token", "s3cret-token-for-tests")
    check("show with the token", r.returncode == 0 and "box tokened" in r.stdout, r.stdout + r.stderr)

    # 1,000 requests without the token: each refused, a few log lines in all.
    def unauthorized():
        """The whole answer to a request without the token, up to the server's close,
        and whether the server closed it: True at the end of the stream (or a reset),
        False when the 5 s timeout or another error ended the read."""
        answer = b""
        try:
            with socket.create_connection(("127.0.0.1", status_port), timeout=5) as c:
                c.sendall(b"GET /api/summary HTTP/1.1\r\nHost: x\r\n\r\n")
                while chunk := c.recv(4096):
                    answer += chunk
            return answer, True
        except ConnectionResetError:
            return answer, True
        except OSError as e:
            return answer + f" [{e}]".encode(), False
    started = time.monotonic()
    answers = [unauthorized() for _ in range(1000)]
    elapsed = time.monotonic() - started
    check("status: 1,000 requests without the token all get 401 and a close",
          all(a.startswith(b"HTTP/1.1 401") and closed for a, closed in answers),
          [(a[:40], closed) for a, closed in answers if not (a.startswith(b"HTTP/1.1 401") and closed)][:3])
    # Every refused line was written before its 401 was sent; the reader thread may
    # still lag. A line logged after the flood (SIGHUP's) means it has caught up.
    daemon.proc.send_signal(signal.SIGHUP)
    caught_up = daemon.wait_log("SIGHUP: log level", timeout=10)
    refused_lines = [l for l in daemon.lines if "without the token" in l]
    check("status: refused requests are logged at most 5 a second",
          caught_up and 1 <= len(refused_lines) <= 5 * (elapsed + 2),
          f"{len(refused_lines)} lines in {elapsed:.2f} s (log read up to a line after the flood: {caught_up})")
    # The lines it held back are counted on the next one it writes.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not daemon.wait_log("more suppressed)", timeout=0.2):
        unauthorized()
    check("status: the suppressed lines are counted in a later line", "more suppressed)" in daemon.log(),
          daemon.log()[-600:])
    # An idle connection is closed within the first-request deadline (5 s), not held.
    with socket.create_connection(("127.0.0.1", status_port), timeout=15) as idle:
        started = time.monotonic()
        try:
            closed = idle.recv(1) == b""
        except OSError:
            closed = False
        check("status: an idle connection is closed after ~5 s", closed and 3 < time.monotonic() - started < 10,
              time.monotonic() - started)
finally:
    rc = daemon.stop()
check("status: the token is never written to the log", "s3cret-token-for-tests" not in daemon.log(), daemon.log())
check("status: the log gives the page's address and says a token is required",
      f"status page on http://127.0.0.1:{status_port}/ (token required)" in daemon.log(), daemon.log())
r = run("run", "--check", "--config", config_file("open_status.toml",
        '[datacenter]\nlisten = "127.0.0.1:1"\n[status]\nlisten = "0.0.0.0:7880"\n'))
check("status on a non-loopback address without a token is refused", r.returncode == 2 and "status.token" in r.stderr,
      r.stderr)

# `run --check` finds what the start would: two listeners on one address, a datastore
# under a regular file. One line naming file:line:key, exit 2.
a_file = config_file("a_regular_file", "not a directory\n")
p1, p2 = free_port(), free_port()
check_configs = {
    "datacenter listen equal to a forward's": (
        f'[datacenter]\nlisten = "127.0.0.1:{p1}"\n[[branch.forward]]\nlisten = "127.0.0.1:{p1}"\n'
        f'destination = "127.0.0.1:1"\npeer = "127.0.0.1"\n',
        f":4: branch.forward[0].listen: same listen address as datacenter.listen (127.0.0.1:{p1})"),
    "status listen equal to a forward's": (
        f'[[branch.forward]]\nlisten = "127.0.0.1:{p2}"\ndestination = "127.0.0.1:1"\npeer = "127.0.0.1"\n'
        f'[status]\nlisten = "127.0.0.1:{p2}"\n',
        f":6: status.listen: same listen address as branch.forward[0].listen (127.0.0.1:{p2})"),
    "a wildcard covering a forward's address": (
        f'[datacenter]\nlisten = "0.0.0.0:{p1}"\nplaintext_peers = ["198.18.0.0/24"]\n[[branch.forward]]\n'
        f'listen = "127.0.0.1:{p1}"\ndestination = "127.0.0.1:1"\npeer = "127.0.0.1"\n',
        ":5: branch.forward[0].listen: same listen address as datacenter.listen"),
    "a datacenter listener off loopback without [peering] (an open relay)": (
        f'[datacenter]\nlisten = "0.0.0.0:{p1}"\n',
        ":1: datacenter.listen: a listener off loopback needs [peering] (authenticated peers), or "
        "datacenter.plaintext_peers naming the subnets allowed to peer in plaintext"),
    "a datastore under a regular file": (
        f'[dre]\ndatastore = "{a_file}/store"\n[datacenter]\nlisten = "127.0.0.1:{p1}"\n',
        f":2: dre.datastore: '{a_file}/store' cannot be a directory: '{a_file}' is a file, not a directory"),
}
for name, (text, expected) in check_configs.items():
    path = config_file("check_" + name.replace(" ", "_").replace("'", "") + ".toml", text)
    for args in (["run", "--check", "--config", path], ["run", "--config", path]):
        r = run(*args)
        lines = r.stderr.strip().splitlines()
        check(f"{' '.join(args[:-2])}: {name}: exit 2 with one line naming file:line:key",
              r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"wanopt: config error: {path}:")
              and expected in lines[0], repr(r.stderr))
check("a config that uses distinct addresses still passes --check",
      run("run", "--check", "--config", config_file("check_distinct.toml",
          f'[datacenter]\nlisten = "127.0.0.1:{p1}"\n[[branch.forward]]\nlisten = "127.0.0.1:{p2}"\n'
          f'destination = "127.0.0.1:1"\npeer = "127.0.0.1"\n[status]\nlisten = "127.0.0.1:{free_port()}"\n')).returncode == 0)

# A listen address in use fails the start before the datastore directory is made.
with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    fresh = os.path.join(tmp, "fresh-dir")
    path = config_file("in_use.toml", f'[dre]\ndatastore = "{fresh}/store"\n[datacenter]\n'
                                      f'listen = "127.0.0.1:{busy.getsockname()[1]}"\n')
    r = run("run", "--config", path)
    check("address in use: exit 1, says which listener", r.returncode == 1 and "cannot listen" in r.stderr, r.stderr)
    check("address in use: no datastore directory left behind", not os.path.exists(fresh), os.listdir(tmp))

# The same on IPv6: the address is written bracketed, as everywhere else.
with socket.socket(socket.AF_INET6) as busy:
    busy.bind(("::1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    r = run("run", "--config", config_file("in_use6.toml", f'[datacenter]\nlisten = "[::1]:{port}"\n'))
    check("IPv6 address in use: exit 1, the listener's address bracketed",
          r.returncode == 1 and f"cannot listen on [::1]:{port}: " in r.stderr, r.stderr)

# SIGHUP is not a silent exit: the daemon logs it, re-reads its log level, keeps running.
port = free_port()
path = config_file("hup.toml", f'[datacenter]\nlisten = "127.0.0.1:{port}"\n')
daemon = Daemon(path)
try:
    check("SIGHUP: daemon listening", wait_listening(port, daemon.proc))
    daemon.proc.send_signal(signal.SIGHUP)
    check("SIGHUP: logged", daemon.wait_log("SIGHUP: log level info"), daemon.log())
    check("SIGHUP: still running and accepting", daemon.proc.poll() is None and wait_listening(port, daemon.proc))
finally:
    rc = daemon.stop()
check("SIGHUP: SIGTERM afterwards still exits 0", rc == 0, f"rc={rc} {daemon.log()}")


def echo_server():
    """A loopback server echoing every byte back; returns its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept_loop():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=accept_loop, daemon=True).start()
    return server.getsockname()[1]


def descriptors_on_port(pid, port):
    """The descriptor numbers of process `pid`'s TCP sockets whose local port is `port`."""
    by_inode = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            by_inode[target[8:-1]] = int(fd)
    fds = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] in by_inode:
                    fds.append(by_inode[cols[9]])
    return sorted(fds)


def relay_verified(port, size=1 << 20):
    """Sends `size` random bytes through 127.0.0.1:`port` to the echo server; True when they came back intact."""
    payload = os.urandom(size)
    got, n = hashlib.sha256(), 0

    def send(c):
        try:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            threading.Thread(target=send, args=(c,), daemon=True).start()
            while n < size and (chunk := c.recv(65536)):
                got.update(chunk)
                n += len(chunk)
    except OSError:
        return False
    return n == size and got.digest() == hashlib.sha256(payload).digest()


# 400 idle connections to the status port do not starve the data plane: the status
# server holds at most 64 (for 5 s at most) and keeps descriptors in reserve (64, or
# a quarter of the limit): at a limit of 256 the first bound applies, at 100 the second.
echo_port = echo_server()
for nofile, refusal in ((256, "too many status connections open"), (100, "descriptors are short (the rest are kept for the data plane)")):
    dc_port, fwd_port, status_port = free_port(), free_port(), free_port()
    path = config_file("starve.toml", f'[box]\nname = "starve"\n[datacenter]\nlisten = "127.0.0.1:{dc_port}"\n'
                                      f'[[branch.forward]]\nlisten = "127.0.0.1:{fwd_port}"\n'
                                      f'destination = "127.0.0.1:{echo_port}"\npeer = "127.0.0.1:{dc_port}"\n'
                                      f'[status]\nlisten = "127.0.0.1:{status_port}"\n')
    daemon = Daemon(path, nofile=nofile)
    idle = []
    try:
        check(f"fd limit {nofile}: daemon listening",
              wait_listening(fwd_port, daemon.proc) and wait_listening(status_port, daemon.proc))
        for _ in range(400):
            c = socket.socket()
            c.settimeout(5)
            c.connect(("127.0.0.1", status_port))
            idle.append(c)
        check(f"fd limit {nofile}: status connections refused: {refusal}", daemon.wait_log(refusal), daemon.log()[-1000:])
        # The status server's descriptors stop short of the reserve (one more for an
        # instant, while it looks at a connection it is about to close).
        status_fds = descriptors_on_port(daemon.proc.pid, status_port)
        check(f"fd limit {nofile}, 400 idle status connections: at most 64 held, none in the reserve",
              0 < len(status_fds) <= 64 + 1 and max(status_fds) <= nofile - min(64, nofile // 4), status_fds)
        check(f"fd limit {nofile}, 400 idle status connections: a transfer through the forward rule and the "
              "datacenter verifies", relay_verified(fwd_port), daemon.log()[-1000:])
        check(f"fd limit {nofile}, 400 idle status connections: no accept failure on the data plane",
              "Too many open files" not in daemon.log() and daemon.proc.poll() is None, daemon.log()[-1000:])
    finally:
        for c in idle:
            c.close()
        daemon.stop()

# At the descriptor limit, accept failures neither spin a core nor flood the log.
dc_port, status_port = free_port(), free_port()
# (handshake_ms: the idle inner channels below must hold their descriptors for the
# whole test, not be closed at the default 5 s for sending no hello.)
path = config_file("limit.toml", f'[box]\nname = "limit"\n[timeouts]\nhandshake_ms = 600000\n'
                                 f'[datacenter]\nlisten = "127.0.0.1:{dc_port}"\n'
                                 f'[status]\nlisten = "127.0.0.1:{status_port}"\n')
daemon = Daemon(path, nofile=48)
held = []
try:
    check("fd limit 48: daemon listening", wait_listening(dc_port, daemon.proc))
    # Idle inner channels (no hello yet) take the descriptors, then more wait in the
    # listen queues of both listeners: every accept fails with EMFILE. The status
    # connections are made only once the data plane is out of descriptors; made at the
    # same time, the status server could win descriptors below the reserve and serve them.
    def hold(port, n):
        for _ in range(n):
            c = socket.socket()
            c.settimeout(5)
            c.connect(("127.0.0.1", port))
            held.append(c)
    hold(dc_port, 80)
    check("at the limit: accept fails on the data plane", daemon.wait_log("datacenter: accept: Too many open files"),
          daemon.log()[-1000:])
    hold(status_port, 20)
    # Out of descriptors at accept (EMFILE: the spare is given up for it), or accepted
    # into the data plane's reserve: either way closed at once, and said so.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            t in daemon.log() for t in ("status: accept: Too many open files: connection closed at once",
                                        "closed: descriptors are short")):
        time.sleep(0.05)  # polling a condition with a deadline
    check("at the limit: the status server closes what it cannot serve",
          "status: accept: Too many open files: connection closed at once" in daemon.log() or
          "closed: descriptors are short" in daemon.log(), daemon.log()[-1500:])
    lines_before = len(daemon.lines)
    cpu_before, started = cpu_seconds(daemon.proc.pid), time.monotonic()
    deadline = started + 5
    while time.monotonic() < deadline:
        time.sleep(0.1)  # the measurement window itself, not a synchronisation
    cpu = cpu_seconds(daemon.proc.pid) - cpu_before
    window = time.monotonic() - started
    check("at the limit: the daemon uses little CPU (< 2 s in 5 s)", cpu < 2.0, f"{cpu:.2f} CPU-s in {window:.1f} s")
    print(f"at the fd limit: {cpu:.2f} CPU-s in {window:.1f} s")
    accept_lines = [l for l in daemon.lines[lines_before:] if "accept:" in l]
    check("at the limit: accept failures logged a few times a second at most", len(accept_lines) <= 30,
          f"{len(accept_lines)} lines in {window:.1f} s: {accept_lines[:3]}")
    check("at the limit: still running", daemon.proc.poll() is None)
finally:
    for c in held:
        c.close()
    rc = daemon.stop()
check("at the limit: SIGTERM exits 0", rc == 0, f"rc={rc}")

# The lab, as JSON.
r = run("lab", "--json", timeout=120)
check("lab --json exits 0", r.returncode == 0, r.stderr[-2000:])
try:
    report = json.loads(r.stdout)
    transfers = report["transfers"]
    check("lab: two passes", [t["pass"] for t in transfers] == [1, 2], r.stdout)
    check("lab: every transfer verified", all(t["verified"] for t in transfers), r.stdout)
    check("lab: fields", all(set(t) >= {"file", "pass", "lan_bytes", "wan_bytes", "reduction", "seconds", "verified"}
                             for t in transfers) and "status_url" in report, r.stdout)
    check("lab: bytes crossed the WAN", all(t["wan_bytes"] > 0 and t["lan_bytes"] > 0 for t in transfers), r.stdout)
except (ValueError, KeyError) as e:
    check("lab --json is JSON", False, f"{e}: {r.stdout[:500]}")

sample = config_file("sample.bin", "x" * 100000)
r = run("lab", "--file", sample, "--file", sample, timeout=120)
check("lab --file: table with four rows", r.returncode == 0 and r.stdout.count(sample) == 4, r.stdout)
r = run("lab", "--file", os.path.join(tmp, "nonexistent"))
check("lab --file missing exits 2", r.returncode == 2 and "cannot read" in r.stderr, r.stderr)

sys.exit(check.summary())
