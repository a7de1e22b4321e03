#!/usr/bin/python3
"""The namespace lab (tests/lab/netlab) and its delay line, end to end.

Usage: netlab_test.py PATH_TO_WANOPT_DELAYLINE PATH_TO_NETLAB
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure. Takes about 20 s.

Six labs, each with its own prefix (wt<PID>a, b, c, m, 6, n) so they never meet another run's:
  a: 20 ms one way. The median of 5 pings client -> server must be in [40, 55] ms:
     40 ms is the floor the delay line imposes (2 x 20 ms; less means packets skip
     it), and 15 ms above it is room for a busy 2-core VM (timer wakeups, ping
     itself, other builds); a median of 5 ignores one slow sample. Also: TTL 62 (both
     boxes route), the interception hooks, status, IPv6 disabled (no --ipv6), a
     second `up` with the same prefix refused without harming the running lab, `exec
     mid` refused (no --middle), `up --queue` without --intercept and `up --middle`
     with --one-arm refused. Under eight iperf3 streams for 3 s (unlimited rate), `status`
     shows that neither TUN dropped a packet at its transmit queue.
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
  m: `up --middle --intercept`, 20 ms one way: five namespaces, a box between the
     branch and the WAN, deploy/intercept's rules in all three boxes and no daemon.
     Median of 5 pings in [40, 55] ms and ttl=61 (three routers). Fail open: a TCP
     echo client -> server works and every box's SYN queue rule counted the SYN
     (--queue-bypass let it through). deploy/intercept itself: install again gives
     exactly one copy of each of its 15 rules (9 in its chains, 6 jumps) and no
     second ip rule (the lab's own hook stays the only one); remove twice leaves no
     chain, rule or jump of it and keeps the lab's hook; in a namespace without the
     hook (the client's) install adds `fwmark 0x1 lookup 100` and the table-100
     route (proto 87) and remove takes both away; IPv6 is disabled in this lab, so
     install there notes it and installs IPv4 only; --dry-run, as root or not,
     prints the commands (IPv6's too, none with --ipv4-only) and changes nothing;
     install --interface nosuch (a name the box does not have) exits 2 with a
     one-line error and installs nothing.
     Then the verdict marks, with a
     minimal netlink-queue reader in the branch (nfqueue_verdict.py): no
     verdict holds the SYN; 0x2200 reaches the server; 0x2300 makes the branch
     answer with a reset (connection refused in well under a second); 0x2100
     lands on a transparent listener on port 7801 that sees the client's address
     and the server's as its own.
  6: `up --ipv6 --intercept`, 20 ms one way: dual-stack. ping -6 client -> server
     (2001:2:0:2::10): median of 5 in [40, 55] ms (the delay line carries IPv6),
     hop limit 62; IPv4 still works; the IPv6 hooks (ip -6 rule fwmark 0x1 lookup
     100, local ::/0 in table 100) in both boxes; status shows ipv6=1. deploy/intercept
     made both families' rules (the same in both) and its
     status says both are installed; fail open over IPv6 (TCP echo, the IPv6 queue
     rule counted the SYN); verdict 0x2100 on an IPv6 SYN (the same queue 7821)
     lands on an IPv6 transparent listener on [::]:7801 with the original addresses;
     remove takes both families away and keeps the lab's hooks; in the client's
     namespace install adds the IPv6 rule and route (proto 87) and remove takes them.
  n: `up --middle --ipv6`, 5 ms one way: ping -6 and ping client -> server both
     answered through three routers (hop limit 61); the branch reaches the dc's
     IPv6 WAN address from its own (2001:2:0:3::1); the mid box has the IPv6 hook;
     status shows mid's IPv6 addresses.
Each lab is taken down in a `finally`, after which no namespace of it may remain, its
state dir must be gone and its delay line PID must have exited; `down` again is a
no-op. Last, an `up` whose delay line fails must leave nothing behind. Labs m and 6
run the checks in netlab_intercept_checks.py.
"""
import json
import os
import re
import select
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testkit import Checks  # noqa: E402
from labkit import tun_counters  # noqa: E402
from netlab_intercept_checks import SERVER, SERVER6, Tools, ipv6_lab, middle_lab  # noqa: E402

DELAYLINE = os.path.abspath(sys.argv[1])
NETLAB = os.path.abspath(sys.argv[2])
INTERCEPT = os.path.join(os.path.dirname(NETLAB), "..", "..", "deploy", "intercept")
BASE = f"wt{os.getpid()}"
ENV = dict(os.environ, WANOPT_DELAYLINE=DELAYLINE)
check = Checks()

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)
if not os.path.exists("/dev/net/tun"):
    print("SKIP: no /dev/net/tun")
    sys.exit(77)


def netlab(*args, timeout=30):
    return subprocess.run([NETLAB, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def lab_namespaces(prefix):
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines()
            if re.match(rf"{re.escape(prefix)}-(client|branch|mid|dc|server)\b", l)]


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

    def start(self, node, *cmd, ready, wait_s=10):
        """Popen CMD in NODE and wait for a line starting with READY; (proc, output)."""
        proc = self.popen(node, *cmd)
        seen = b""
        deadline = time.monotonic() + wait_s
        while not re.search(rb"(^|\n)" + ready.encode(), seen) and time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.2)
            if r:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
        return proc, seen.decode(errors="replace")

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


def ping(lab, count, interval, dest=SERVER):
    r = lab.exec("client", "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", dest,
                 timeout=count * interval + 20)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return r, rtts, sent, received


def iperf_goodput(lab, seconds, streams=1):
    """TCP goodput client -> server in Mbit/s over STREAMS connections, or None with the reason printed."""
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
        r = lab.exec("client", "iperf3", "-c", SERVER, "-t", str(seconds), "-P", str(streams), "-J",
                     timeout=seconds + 20)
        try:
            return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        except (ValueError, KeyError) as e:
            print(f"iperf3 client: {e}: {r.stdout[-500:]} {r.stderr[-500:]}")
            return None
    finally:
        server.kill()  # our own child: netlab exec execs ip netns exec, which execs iperf3
        server.wait(timeout=5)


TOOLS = Tools(check, ping, netlab, lab_namespaces, INTERCEPT)
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
        # An unlimited WAN loses nothing under load: eight streams at once, and neither
        # TUN's transmit queue dropped a packet before the delay line read it (at the
        # kernel's default depth of 500 a fifth were).
        mbit = iperf_goodput(a, 3, streams=8)
        r = netlab("--prefix", a.prefix, "status")
        tuns = tun_counters(r.stdout)
        print(f"unlimited WAN, iperf3 -P 8 for 3 s: {mbit} Mbit/s, TUN (sent, dropped): {tuns}")
        check("unlimited WAN under eight iperf3 streams: both TUNs carried packets and dropped none",
              mbit is not None and set(tuns) == {"branch", "dc"} and
              all(sent > 10000 and dropped == 0 for sent, dropped in tuns.values()), r.stdout[-600:])
        r = netlab("--prefix", a.prefix, "up", "--delay-ms", "5")
        check("a second up with the same prefix is refused", r.returncode != 0 and "already up" in r.stderr,
              r.stdout + r.stderr)
        r, rtts, _, received = ping(a, 1, 0.2)
        check("... and the running lab still works", received == 1 and rtts and rtts[0] >= 40, r.stdout)
        r = a.exec("mid", "true")
        check("exec mid in a lab without --middle: clear error", r.returncode != 0 and "no mid box" in r.stderr,
              r.stdout + r.stderr)
        r = netlab("--prefix", a.prefix + "q", "up", "--queue", "5")
        check("up --queue without --intercept is refused", r.returncode != 0 and "--intercept" in r.stderr,
              r.stdout + r.stderr)
        r = netlab("--prefix", a.prefix + "q", "up", "--one-arm", "--middle")
        check("up --one-arm --middle is refused", r.returncode != 0 and "do not go together" in r.stderr
              and not lab_namespaces(a.prefix + "q"), r.stdout + r.stderr)
        r = a.exec("client", "sh", "-c", "cat /proc/sys/net/ipv6/conf/all/disable_ipv6; ip -6 addr")
        check("without --ipv6, IPv6 is disabled (no IPv6 address)", r.stdout.strip() == "1", r.stdout + r.stderr)

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
    with Lab("m", "--delay-ms", "20", "--middle", "--intercept") as m:
        middle_lab(m, TOOLS)
    with Lab("6", "--delay-ms", "20", "--ipv6", "--intercept") as l6:
        ipv6_lab(l6, TOOLS)
    with Lab("n", "--delay-ms", "5", "--middle", "--ipv6") as m6:
        for family, dest in (("IPv6", SERVER6), ("IPv4", SERVER)):
            r, rtts, _, received = ping(m6, 2, 0.2, dest)
            check(f"--middle --ipv6: {family} ping client -> server answered, three routers (ttl=61)",
                  received == 2 and "ttl=61" in r.stdout and rtts and min(rtts) >= 10, r.stdout + r.stderr)
        r = m6.exec("branch", "ping", "-n", "-c", "1", "-W", "2", "2001:2::2")
        check("--middle --ipv6: branch (2001:2:0:3::1) reaches dc's WAN address", " 0% packet loss" in r.stdout,
              r.stdout + r.stderr)
        r = m6.exec("mid", "ip", "-6", "rule")
        check("--middle --ipv6: mid has the IPv6 interception hook", "fwmark 0x1 lookup 100" in r.stdout, r.stdout)
        r = netlab("--prefix", m6.prefix, "status")
        check("--middle --ipv6: status shows mid's IPv6 addresses",
              r.returncode == 0 and "2001:2:0:3::2" in r.stdout and "a = mid wan0" in r.stdout, r.stdout + r.stderr)
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
print(f"took {elapsed:.1f} s")
sys.exit(check.summary())
