#!/usr/bin/python3
"""The namespace lab (tests/lab/netlab) and its delay line, end to end.

Usage: netlab_test.py PATH_TO_WANOPT_DELAYLINE PATH_TO_NETLAB
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure. Takes about 8 s.

Three labs, each with its own prefix (wt<PID>a, b, c) so they never meet another run's:
  a: 20 ms one way. The median of 5 pings client -> server must be in [40, 55] ms:
     40 ms is the floor the delay line imposes (2 x 20 ms; less means packets skip
     it), and 15 ms above it is room for a busy 2-core VM (timer wakeups, ping
     itself, other builds); a median of 5 ignores one slow sample. Also: TTL 62 (both
     boxes route), the interception hooks, status, a second `up` with the same
     prefix refused without harming the running lab.
  b: 20 ms one way and 20 Mbit/s, up while lab a is still up (two labs coexist).
     iperf3 TCP goodput client -> server over 3 s must be in [12, 21] Mbit/s: the
     ceiling is 20 Mbit/s of IP bytes, i.e. 19.3 Mbit/s of TCP payload (1448 of 1500
     bytes), minus slow start at 40 ms RTT; the upper bound catches a rate limit
     not applied (unlimited gives hundreds of Mbit/s), the lower one leaves room for
     a loaded machine.
  c: 5 ms one way and 10% loss. The delay line drops 10% in EACH direction
     independently, so a ping round trip is lost with probability 1 - 0.9^2 = 19%.
     200 pings at 10 ms: ping loss must be in [8%, 32%] (binomial sd 2.8%, so about
     4 sd each way), and each direction's own loss from the delay line's counters
     in [3%, 20%] (about 200 packets each, sd 2.1%).
Each lab is taken down in a `finally`, after which no namespace of it may remain, its
state dir must be gone and its delay line PID must have exited; `down` again is a
no-op. Last, an `up` whose delay line fails must leave nothing behind.
"""
import json
import os
import re
import select
import statistics
import subprocess
import sys
import time

DELAYLINE = os.path.abspath(sys.argv[1])
NETLAB = os.path.abspath(sys.argv[2])
BASE = f"wt{os.getpid()}"
ENV = dict(os.environ, WANOPT_DELAYLINE=DELAYLINE)
SERVER = "198.18.2.10"
passed = failed = 0

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)
if not os.path.exists("/dev/net/tun"):
    print("SKIP: no /dev/net/tun")
    sys.exit(77)


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok: {name}")
    else:
        failed += 1
        print(f"FAIL: {name} {detail}")
    return condition


def netlab(*args, timeout=30):
    return subprocess.run([NETLAB, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def lab_namespaces(prefix):
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines()
            if re.match(rf"{re.escape(prefix)}-(client|branch|dc|server)\b", l)]


def process_gone(pid, wait_s=3.0):
    """True once pid has exited (a zombie awaiting its reaper counts as exited)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


class Lab:
    def __init__(self, suffix, *up_args):
        self.prefix = BASE + suffix
        self.up_args = up_args
        self.pid = None

    def __enter__(self):
        r = netlab("--prefix", self.prefix, "up", *self.up_args)
        state = f"/run/wanopt-lab-{self.prefix}"
        if not check(f"{self.prefix}: up {' '.join(self.up_args)}", r.returncode == 0,
                     r.stdout + r.stderr):
            self.down_and_check()
            raise RuntimeError(f"lab {self.prefix} did not come up")
        with open(f"{state}/delayline.pid") as f:
            self.pid = int(f.read().split()[0])
        return self

    def exec(self, node, *cmd, timeout=30):
        return subprocess.run([NETLAB, "--prefix", self.prefix, "exec", node, *cmd], env=ENV,
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, node, *cmd):
        return subprocess.Popen([NETLAB, "--prefix", self.prefix, "exec", node, *cmd], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def delayline_counters(self):
        """{'a->b': {'read': n, 'lost': n, ...}, 'b->a': {...}} from `status`."""
        r = netlab("--prefix", self.prefix, "status")
        out = {}
        for line in r.stdout.splitlines():
            m = re.match(r"\s*(a->b|b->a) \S+ (.*)", line)
            if m:
                words = m.group(2).split()
                out[m.group(1)] = {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1)
                                   if re.fullmatch(r"[a-z_]+", words[i]) and words[i + 1].isdigit()}
        return r, out

    def down_and_check(self):
        r = netlab("--prefix", self.prefix, "down")
        check(f"{self.prefix}: down", r.returncode == 0, r.stdout + r.stderr)
        check(f"{self.prefix}: delay line log clean (no sanitizer report)",
              "Sanitizer" not in r.stdout and "runtime error" not in r.stdout, r.stdout)
        left = lab_namespaces(self.prefix)
        check(f"{self.prefix}: no namespace left", not left, str(left))
        check(f"{self.prefix}: state dir removed",
              not os.path.exists(f"/run/wanopt-lab-{self.prefix}"))
        if self.pid is not None:
            check(f"{self.prefix}: delay line PID {self.pid} gone", process_gone(self.pid))
        r = netlab("--prefix", self.prefix, "down")
        check(f"{self.prefix}: down again is a no-op", r.returncode == 0 and "not up" in r.stdout,
              r.stdout + r.stderr)

    def __exit__(self, *exc):
        self.down_and_check()
        return False


def ping(lab, count, interval):
    r = lab.exec("client", "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", SERVER,
                 timeout=count * interval + 20)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return r, rtts, sent, received


def iperf_goodput(lab, seconds):
    """TCP goodput client -> server in Mbit/s, or None with the reason printed."""
    server = lab.popen("server", "iperf3", "-s", "-1", "-B", SERVER, "--forceflush")
    try:
        deadline = time.monotonic() + 10
        seen = b""  # raw reads: a buffered readline() would hide data from select()
        while b"Server listening" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([server.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(server.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
        if b"Server listening" not in seen:
            print(f"iperf3 server did not start: {seen}")
            return None
        r = lab.exec("client", "iperf3", "-c", SERVER, "-t", str(seconds), "-J",
                     timeout=seconds + 20)
        try:
            return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        except (ValueError, KeyError) as e:
            print(f"iperf3 client: {e}: {r.stdout[-500:]} {r.stderr[-500:]}")
            return None
    finally:
        server.kill()  # our own child: netlab exec execs ip netns exec, which execs iperf3
        server.wait(timeout=5)


started = time.monotonic()
try:
    with Lab("a", "--delay-ms", "20") as a:
        r, rtts, sent, received = ping(a, 5, 0.2)
        median = statistics.median(rtts) if rtts else None
        print(f"RTT (20 ms one way): median {median} ms of {rtts}")
        check("5 pings client -> server all answered", sent == 5 and received == 5, r.stdout + r.stderr)
        check("median RTT in [40, 55] ms", median is not None and 40.0 <= median <= 55.0, f"{median}")
        check("server is two routed hops away (ttl=62)", "ttl=62" in r.stdout, r.stdout)
        for box in ("branch", "dc"):
            rules = a.exec(box, "ip", "rule").stdout
            table = a.exec(box, "ip", "route", "show", "table", "100").stdout
            check(f"{box}: interception hooks (fwmark 0x1 -> table 100, local default)",
                  "fwmark 0x1 lookup 100" in rules and "local default dev lo" in table, rules + table)
        r = netlab("--prefix", a.prefix, "status")
        check("status shows topology and delay line counters",
              r.returncode == 0 and SERVER in r.stdout and "a->b" in r.stdout and "b->a" in r.stdout,
              r.stdout + r.stderr)
        r = netlab("--prefix", a.prefix, "up", "--delay-ms", "5")
        check("a second up with the same prefix is refused", r.returncode != 0 and "already up" in r.stderr,
              r.stdout + r.stderr)
        r, rtts, _, received = ping(a, 1, 0.2)
        check("... and the running lab still works", received == 1 and rtts and rtts[0] >= 40, r.stdout)

        with Lab("b", "--delay-ms", "20", "--rate-mbit", "20") as b:
            mbit = iperf_goodput(b, 3)
            print(f"goodput (20 Mbit/s, 20 ms one way, 3 s): {mbit} Mbit/s")
            check("iperf3 goodput in [12, 21] Mbit/s", mbit is not None and 12 <= mbit <= 21, f"{mbit}")

    with Lab("c", "--delay-ms", "5", "--loss-pct", "10") as c:
        r, _, sent, received = ping(c, 200, 0.01)
        loss = 100.0 * (sent - received) / sent if sent else None
        print(f"ping loss (10% each way, 200 pings): {loss}% ({sent} sent, {received} received)")
        check("ping loss in [8, 32] % (19% expected)", loss is not None and 8 <= loss <= 32, r.stdout[-300:])
        r, counters = c.delayline_counters()
        for d in ("a->b", "b->a"):
            st = counters.get(d, {})
            pct = 100.0 * st["lost"] / st["read"] if st.get("read") else None
            print(f"delay line {d}: {st.get('lost')} lost of {st.get('read')} ({pct}%)")
            check(f"delay line {d} loss in [3, 20] %", pct is not None and 3 <= pct <= 20, r.stdout)
except Exception as e:  # a lab that did not come up has been checked and taken down already
    check("no exception", False, repr(e))

# A failing `up` (here: a delay line that exits at once) must remove everything it made.
prefix = BASE + "f"
r = netlab("--prefix", prefix, "up", "--delayline", "/bin/false")
check("up with a failing delay line fails", r.returncode != 0, r.stdout + r.stderr)
check("... and leaves no namespace", not lab_namespaces(prefix), str(lab_namespaces(prefix)))
check("... and no state dir", not os.path.exists(f"/run/wanopt-lab-{prefix}"))

elapsed = time.monotonic() - started
check("whole test under 60 s", elapsed < 60, f"{elapsed:.1f} s")
print(f"{passed} passed, {failed} failed ({elapsed:.1f} s)")
sys.exit(1 if failed else 0)
