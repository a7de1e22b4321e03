#!/usr/bin/python3
"""The namespace lab (tests/lab/netlab) and its delay line, end to end.

Usage: netlab_test.py PATH_TO_WANOPT_DELAYLINE PATH_TO_NETLAB
       (netlab_test.py --verdict QUEUE MARK: the queue reader lab m runs)
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure. Takes about 20 s.

Five labs, each with its own prefix (wt<PID>a, b, c, m, 6) so they never meet another run's:
  a: 20 ms one way. The median of 5 pings client -> server must be in [40, 55] ms:
     40 ms is the floor the delay line imposes (2 x 20 ms; less means packets skip
     it), and 15 ms above it is room for a busy 2-core VM (timer wakeups, ping
     itself, other builds); a median of 5 ignores one slow sample. Also: TTL 62 (both
     boxes route), the interception hooks, status, IPv6 disabled (no --ipv6), a
     second `up` with the same prefix refused without harming the running lab, `exec
     mid` refused (no --middle), `up --queue` without --intercept and `up --ipv6`
     with --middle or --one-arm refused.
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
     minimal netlink-queue reader in the branch (this script with --verdict): no
     verdict holds the SYN; 0x2200 reaches the server; 0x2300 makes the branch
     answer with a reset (connection refused in well under a second); 0x2100
     lands on a transparent listener on port 7801 that sees the client's address
     and the server's as its own.
  6: `up --ipv6 --intercept`, 20 ms one way: dual-stack. ping -6 client -> server
     (2001:2:0:2::10): median of 5 in [40, 55] ms (the delay line carries IPv6),
     hop limit 62; IPv4 still works; the IPv6 hooks (ip -6 rule fwmark 0x1 lookup
     100, local ::/0 in table 100) in both boxes; status shows ipv6=1. deploy/intercept
     made both families' rules (15 iptables, 14 ip6tables: no WANOPT_MAPI) and its
     status says both are installed; fail open over IPv6 (TCP echo, the IPv6 queue
     rule counted the SYN); verdict 0x2100 on an IPv6 SYN (the same queue 7821)
     lands on an IPv6 transparent listener on [::]:7801 with the original addresses;
     remove takes both families away and keeps the lab's hooks; in the client's
     namespace install adds the IPv6 rule and route (proto 87) and remove takes them.
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testkit import Checks  # noqa: E402
from nfqueue_verdict import verdict_helper  # noqa: E402  (the queue reader of lab m: --verdict)

if len(sys.argv) == 4 and sys.argv[1] == "--verdict":
    verdict_helper(int(sys.argv[2]), sys.argv[3])
    sys.exit(0)

DELAYLINE = os.path.abspath(sys.argv[1])
NETLAB = os.path.abspath(sys.argv[2])
INTERCEPT = os.path.join(os.path.dirname(NETLAB), "..", "..", "deploy", "intercept")
BASE = f"wt{os.getpid()}"
ENV = dict(os.environ, WANOPT_DELAYLINE=DELAYLINE)
SERVER = "198.18.2.10"
CLIENT6, SERVER6 = "2001:2:0:1::10", "2001:2:0:2::10"  # with up --ipv6
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


# What deploy/intercept install makes (iptables-save lines): 9 rules in its chains, 6 jumps
# (nat WANOPT_MAPI is empty until a daemon's mapi module fills it).
INTERCEPT_RULES = [
    "-A PREROUTING -j WANOPT_PRE",
    "-A WANOPT_PRE ! -i lo -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m mark --mark 0x0 -m addrtype ! --dst-type LOCAL -j NFQUEUE --queue-num 7821 --queue-bypass",
    "-A PREROUTING -j WANOPT_TPROXY",
    "-A WANOPT_TPROXY -p tcp -m socket --transparent -j WANOPT_DIVERT",
    "-A WANOPT_TPROXY -p tcp -m mark --mark 0x2100 -j TPROXY --on-port 7801 --on-ip 0.0.0.0 --tproxy-mark 0x1/0xffffffff",
    "-A WANOPT_DIVERT -j MARK --set-xmark 0x1/0xffffffff",
    "-A WANOPT_DIVERT -j ACCEPT",
    "-A OUTPUT -j WANOPT_OUT",
    "-A WANOPT_OUT -p tcp -m tcp --tcp-flags SYN,RST,ACK SYN -m mark --mark 0x2400 -j NFQUEUE --queue-num 7821 --queue-bypass",
    "-A WANOPT_OUT -p tcp -m tcp --tcp-flags SYN,RST,ACK SYN,ACK -m mark --mark 0x2500 -j NFQUEUE --queue-num 7821 --queue-bypass",
    "-A INPUT -j WANOPT_IN",
    "-A WANOPT_IN ! -i lo -p tcp -m tcp --tcp-flags SYN,RST,ACK SYN,ACK -j NFQUEUE --queue-num 7821 --queue-bypass",
    "-A PREROUTING -j WANOPT_MAPI",
    "-A FORWARD -j WANOPT_FWD",
    "-A WANOPT_FWD -p tcp -m mark --mark 0x2300 -j REJECT --reject-with tcp-reset",
]
# ip6tables-save lines: the same, but for TPROXY's address and without WANOPT_MAPI (IPv4 only).
INTERCEPT_RULES6 = [l.replace("--on-ip 0.0.0.0", "--on-ip ::") for l in INTERCEPT_RULES if "WANOPT_MAPI" not in l]
# The echo server and client take the server's address (default 198.18.2.10).
ECHO_SERVER = """
import socket, sys, threading
a = sys.argv[1] if len(sys.argv) > 1 else "198.18.2.10"
s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((a, 7000)); s.listen(16); print("listening", flush=True)
def serve(c):
    with c:
        while (d := c.recv(65536)):
            c.sendall(d)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""
ECHO_CLIENT = """
import socket, sys, time
t = time.monotonic()
try:
    a = sys.argv[2] if len(sys.argv) > 2 else "198.18.2.10"
    with socket.create_connection((a, 7000), timeout=float(sys.argv[1])) as s:
        s.sendall(b"x" * 100000); s.shutdown(socket.SHUT_WR)
        got = b""
        while (d := s.recv(65536)):
            got += d
    print("echoed" if got == b"x" * 100000 else f"short {len(got)}", end=" ")
except OSError as e:
    print(type(e).__name__, end=" ")
print(f"{time.monotonic() - t:.3f}")
"""
TPROXY_LISTENER = """
import socket, sys
if sys.argv[1:] == ["6"]:  # IPv6: IPV6_TRANSPARENT (75), which Python does not name
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, 75, 1); a = "::"
else:
    s = socket.socket(); s.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1); a = "0.0.0.0"
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(10)
s.bind((a, 7801)); s.listen(); print("listening", flush=True)
c, peer = s.accept()
print(f"accepted {peer[0]}:{peer[1]} as {c.getsockname()[0]}:{c.getsockname()[1]}", flush=True)
c.sendall(b"intercepted"); c.close()
"""


def iptables_save(lab, node):
    return lab.exec(node, "iptables-save").stdout


def ip6tables_save(lab, node):
    return lab.exec(node, "ip6tables-save").stdout


def ours(save):
    return [l for l in save.splitlines() if l.startswith("-A") and "WANOPT" in l]


def echo(lab, timeout=5, server=SERVER):
    r = lab.exec("client", "python3", "-c", ECHO_CLIENT, str(timeout), server, timeout=timeout + 10)
    return r.stdout.strip() + r.stderr.strip()


def middle_lab(m):
    r, rtts, sent, received = ping(m, 5, 0.2)
    median = statistics.median(rtts) if rtts else None
    print(f"RTT through 5 namespaces (20 ms one way): median {median} ms of {rtts}")
    check("--middle: 5 pings client -> server all answered", sent == 5 and received == 5, r.stdout + r.stderr)
    check("--middle: median RTT in [40, 55] ms", median is not None and 40.0 <= median <= 55.0, f"{median}")
    check("--middle: three routers on the way (ttl=61)", "ttl=61" in r.stdout, r.stdout)
    r = m.exec("branch", "ping", "-n", "-c", "1", "-W", "2", "198.18.0.2")
    check("--middle: branch (198.18.3.1) reaches dc's WAN address", " 0% packet loss" in r.stdout, r.stdout)
    rules, table = m.exec("mid", "ip", "rule").stdout, m.exec("mid", "ip", "route", "show", "table", "100").stdout
    check("--middle: mid has the interception hooks",
          "fwmark 0x1 lookup 100" in rules and "local default dev lo" in table, rules + table)
    r = netlab("--prefix", m.prefix, "status")
    check("--middle: status shows the mid box", r.returncode == 0 and f"{m.prefix}-mid" in r.stdout
          and "198.18.3.2" in r.stdout and "a = mid wan0" in r.stdout, r.stdout + r.stderr)

    # Fail open: rules in all three boxes, no daemon.
    for box in ("branch", "mid", "dc"):
        got = ours(iptables_save(m, box))
        check(f"--intercept: {box} has the 15 rules", sorted(got) == sorted(INTERCEPT_RULES), "\n".join(got))
    server, out = m.start("server", "python3", "-c", ECHO_SERVER, ready="listening")
    try:
        check("echo server listens", "listening" in out, out)
        result = echo(m)
        print(f"fail open, 3 boxes with rules and no daemon: {result}")
        check("fail open: TCP echo client -> server through 3 boxes with no daemon", result.startswith("echoed"), result)
        for box in ("branch", "mid", "dc"):
            r = m.exec(box, INTERCEPT, "status")
            pre = re.search(r"raw PREROUTING -> WANOPT_PRE.*\n.*\n\s*(\d+)", r.stdout)
            check(f"fail open: {box} queue rule counted the SYN and no process is bound",
                  r.returncode == 0 and pre and int(pre.group(1)) >= 1 and "no process bound" in r.stdout, r.stdout)

        # The verdict marks, with this script as a minimal queue reader in the branch.
        def with_verdict(mark, client_timeout=5):
            helper, out = m.start("branch", sys.executable, os.path.abspath(__file__), "--verdict", "7821", mark,
                                  ready="bound")
            try:
                status = m.exec("branch", INTERCEPT, "status").stdout
                result = echo(m, client_timeout)
                helper.wait(timeout=10)
                return result, out + helper.stdout.read().decode(errors="replace"), status
            finally:
                if helper.poll() is None:
                    helper.kill()
                    helper.wait()

        result, out, status = with_verdict("hold", 1)
        print(f"verdict: none -> {result}; {out.strip()}")
        check("status sees the process bound to the queue", "queue 7821: bound by netlink port" in status, status)
        check("a bound queue holds the SYN (client times out)",
              result.startswith("TimeoutError") and "queued 198.18.1.10:" in out and "-> 198.18.2.10:7000 flags 0x02" in out,
              result + out)
        result, out, _ = with_verdict("0x2200")
        print(f"verdict 0x2200 bypass -> {result}")
        check("verdict 0x2200 (bypass): the connection reaches the server", result.startswith("echoed"), result + out)
        result, out, _ = with_verdict("0x2300")
        print(f"verdict 0x2300 deny -> {result}")
        check("verdict 0x2300 (deny): the branch resets it (refused in < 0.5 s)",
              result.startswith("ConnectionRefusedError") and float(result.split()[-1]) < 0.5, result + out)
        listener, lout = m.start("branch", "python3", "-c", TPROXY_LISTENER, ready="listening")
        try:
            result, out, _ = with_verdict("0x2100")
            listener.wait(timeout=10)
            lout += listener.stdout.read().decode(errors="replace")
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
        print(f"verdict 0x2100 intercept -> {result}; {lout.strip()}")
        check("verdict 0x2100 (intercept): TPROXY hands it to the transparent listener, original addresses kept",
              re.search(r"accepted 198\.18\.1\.10:\d+ as 198\.18\.2\.10:7000", lout) is not None, lout + result + out)
    finally:
        server.kill()
        server.wait(timeout=5)

    # install again: still exactly one copy of each rule, and of the ip rule.
    r = m.exec("mid", INTERCEPT, "install")
    got = ours(iptables_save(m, "mid"))
    check("install twice: exit 0", r.returncode == 0, r.stdout + r.stderr)
    check("install where IPv6 is disabled: a note, IPv4 only (no ip6tables rule)",
          "IPv6 skipped: IPv6 is disabled here" in r.stderr and "installed (IPv4)" in r.stdout
          and "WANOPT" not in ip6tables_save(m, "mid"), r.stdout + r.stderr)
    check("install twice: exactly one copy of each of the 15 rules",
          len(got) == 15 and sorted(got) == sorted(INTERCEPT_RULES), "\n".join(got))
    rules = m.exec("mid", "ip", "rule").stdout
    check("install twice: one `fwmark 0x1 lookup 100` (the lab's; none added)",
          rules.count("fwmark 0x1 lookup 100") == 1, rules)
    r = m.exec("mid", INTERCEPT, "status")
    check("status: installed, exit 0", r.returncode == 0 and r.stdout.rstrip().endswith("installed"), r.stdout)
    for i in (1, 2):
        r = m.exec("mid", INTERCEPT, "remove")
        check(f"remove #{i}: exit 0", r.returncode == 0, r.stdout + r.stderr)
    save = iptables_save(m, "mid")
    check("remove twice: no chain, rule or jump of it left", "WANOPT" not in save, save)
    rules, table = m.exec("mid", "ip", "rule").stdout, m.exec("mid", "ip", "route", "show", "table", "100").stdout
    check("remove: the lab's own hook (not install's) is kept",
          "fwmark 0x1 lookup 100" in rules and "local default dev lo" in table, rules + table)
    r = m.exec("mid", INTERCEPT, "status")
    check("status: not installed, exit 3", r.returncode == 3 and "not installed" in r.stdout, r.stdout)

    # An interface the box does not have is refused (exit 2, one line naming it), and
    # nothing is installed: it would have queued nothing while status said "installed".
    rules_before = m.exec("mid", "ip", "rule").stdout
    for extra in ((), ("--dry-run",)):
        r = m.exec("mid", INTERCEPT, "install", "--interface", "nosuch", *extra)
        check(f"install --interface nosuch{''.join(' ' + e for e in extra)}: exit 2, one-line error naming it",
              r.returncode == 2 and r.stderr.count("\n") == 1 and "--interface nosuch: no such interface" in r.stderr
              and not r.stdout, r.stdout + r.stderr)
    save = iptables_save(m, "mid")
    rules = m.exec("mid", "ip", "rule").stdout
    check("install --interface nosuch: no chain, rule or ip rule left", "WANOPT" not in save and rules == rules_before,
          save + rules)
    r = m.exec("mid", INTERCEPT, "install", "--interface", "lan0", "--interface", "nosuch")
    check("install --interface lan0 --interface nosuch: refused too, nothing installed",
          r.returncode == 2 and "WANOPT" not in iptables_save(m, "mid"), r.stdout + r.stderr)
    r = m.exec("mid", INTERCEPT, "status")
    check("status after the refused installs: not installed, exit 3", r.returncode == 3, r.stdout)

    # A namespace without the hook: install adds it (proto 87), remove takes it away.
    m.exec("client", INTERCEPT, "install")
    rules = m.exec("client", "ip", "-d", "rule").stdout
    table = m.exec("client", "ip", "route", "show", "table", "100").stdout
    check("install adds `fwmark 0x1 lookup 100` and the table-100 route where missing",
          "fwmark 0x1 lookup 100 proto 87" in rules and "local default dev lo proto 87" in table, rules + table)
    m.exec("client", INTERCEPT, "remove")
    m.exec("client", INTERCEPT, "remove")
    rules = m.exec("client", "ip", "rule").stdout
    table = m.exec("client", "ip", "route", "show", "table", "100").stdout
    save = iptables_save(m, "client")
    check("remove takes away the ip rule and route it added",
          "lookup 100" not in rules and not table.strip() and "WANOPT" not in save, rules + table + save)

    # --dry-run prints and changes nothing, as root and as nobody.
    before = (iptables_save(m, "server"), m.exec("server", "ip", "rule").stdout,
              m.exec("server", "sysctl", "-n", "net.ipv4.ip_forward").stdout)
    r = m.exec("server", INTERCEPT, "install", "--dry-run", "--queue", "9", "--port", "9000", "--interface", "eth0")
    after = (iptables_save(m, "server"), m.exec("server", "ip", "rule").stdout,
             m.exec("server", "sysctl", "-n", "net.ipv4.ip_forward").stdout)
    check("--dry-run install prints the commands",
          r.returncode == 0 and "-t raw -N WANOPT_PRE" in r.stdout and "-i eth0 -m addrtype \\! --dst-type LOCAL -j NFQUEUE --queue-num 9 --queue-bypass" in r.stdout
          and "TPROXY --on-port 9000" in r.stdout and "ip rule add fwmark 0x1 lookup 100" in r.stdout, r.stdout + r.stderr)
    check("--dry-run changes nothing (rules, ip rules, sysctls)", before == after, f"{before} {after}")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", INTERCEPT, "remove", "--dry-run"],
                       capture_output=True, text=True, timeout=30)
    check("--dry-run works as non-root", r.returncode == 0 and "-X WANOPT_PRE" in r.stdout, r.stdout + r.stderr)
    if os.path.exists("/proc/sys/net/ipv6/conf/lo") and open("/proc/sys/net/ipv6/conf/lo/disable_ipv6").read().strip() == "0":
        check("--dry-run remove (IPv6 on here) prints the IPv6 commands too",
              "ip6tables-nft -w 5 -t raw -n -L WANOPT_PRE && ip6tables-nft -w 5 -t raw -X WANOPT_PRE" in r.stdout
              and "ip -6 rule del fwmark 0x1 lookup 100 protocol 87" in r.stdout
              and "ip6tables-nft -w 5 -t nat" not in r.stdout, r.stdout)
        r = subprocess.run([INTERCEPT, "install", "--dry-run", "--port", "9000"], capture_output=True, text=True)
        check("--dry-run install prints IPv6's TPROXY, hook and sysctl",
              "ip6tables-nft -w 5 -t mangle -A WANOPT_TPROXY -p tcp -m mark --mark 0x2100 -j TPROXY --on-port 9000 --on-ip :: --tproxy-mark 0x1/0xffffffff" in r.stdout
              and "ip -6 route add local ::/0 dev lo table 100 proto 87" in r.stdout
              and "sysctl -q -w net.ipv6.conf.all.forwarding=1" in r.stdout, r.stdout + r.stderr)
    r = subprocess.run([INTERCEPT, "install", "--dry-run", "--ipv4-only"], capture_output=True, text=True)
    check("--dry-run --ipv4-only: no IPv6 command", r.returncode == 0 and "-N WANOPT_PRE" in r.stdout
          and "ip6tables" not in r.stdout and "ip -6" not in r.stdout and "ipv6" not in r.stdout, r.stdout + r.stderr)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", INTERCEPT, "install"],
                       capture_output=True, text=True, timeout=30)
    check("install as non-root: one-line error", r.returncode == 1 and r.stderr.count("\n") == 1
          and "must run as root" in r.stderr, r.stderr)
    r = subprocess.run([INTERCEPT, "install", "--queue", "70000", "--dry-run"], capture_output=True, text=True)
    check("bad number: one-line error", r.returncode == 1 and "--queue: '70000' is not a number" in r.stderr, r.stderr)


def ipv6_lab(l6):
    r, rtts, sent, received = ping(l6, 5, 0.2, SERVER6)
    median = statistics.median(rtts) if rtts else None
    print(f"IPv6 RTT (20 ms one way): median {median} ms of {rtts}")
    check("--ipv6: 5 pings -6 client -> server all answered", sent == 5 and received == 5, r.stdout + r.stderr)
    check("--ipv6: median RTT in [40, 55] ms (IPv6 crosses the delay line)",
          median is not None and 40.0 <= median <= 55.0, f"{median}")
    check("--ipv6: two routers on the way (hop limit 62)", "ttl=62" in r.stdout, r.stdout)
    r, rtts, _, received = ping(l6, 1, 0.2)
    check("--ipv6: IPv4 still works in the same lab", received == 1 and rtts and rtts[0] >= 40, r.stdout + r.stderr)
    for box in ("branch", "dc"):
        rules = l6.exec(box, "ip", "-6", "rule").stdout
        table = l6.exec(box, "ip", "-6", "route", "show", "table", "100").stdout
        check(f"--ipv6: {box} has the IPv6 interception hooks",
              "fwmark 0x1 lookup 100" in rules and "local default dev lo" in table, rules + table)
    r = netlab("--prefix", l6.prefix, "status")
    check("--ipv6: status shows ipv6=1 and the IPv6 addresses",
          r.returncode == 0 and "ipv6=1" in r.stdout and SERVER6 in r.stdout and "2001:2::1/64" in r.stdout,
          r.stdout + r.stderr)

    # deploy/intercept made both families' rules (no --ipv4-only with --ipv6).
    for box in ("branch", "dc"):
        got4, got6 = ours(iptables_save(l6, box)), ours(ip6tables_save(l6, box))
        check(f"--ipv6 --intercept: {box} has the 15 iptables and 14 ip6tables rules",
              sorted(got4) == sorted(INTERCEPT_RULES) and sorted(got6) == sorted(INTERCEPT_RULES6),
              "\n".join(got4 + got6))
    server, out = l6.start("server", "python3", "-c", ECHO_SERVER, SERVER6, ready="listening")
    try:
        check("IPv6 echo server listens", "listening" in out, out)
        result = echo(l6, server=SERVER6)
        print(f"IPv6 fail open, rules and no daemon: {result}")
        check("IPv6 fail open: TCP echo client -> server with no daemon", result.startswith("echoed"), result)
        r = l6.exec("branch", INTERCEPT, "status")
        v6 = r.stdout[r.stdout.find("IPv6 ("):]
        pre = re.search(r"raw PREROUTING -> WANOPT_PRE.*\n.*\n\s*(\d+)", v6)
        check("status: both families installed, exit 0",
              r.returncode == 0 and "IPv4: installed" in r.stdout and "IPv6: installed" in r.stdout
              and r.stdout.rstrip().endswith("installed"), r.stdout)
        check("IPv6 fail open: the IPv6 queue rule counted the SYN", pre is not None and int(pre.group(1)) >= 1, v6)

        # Verdict 0x2100 on an IPv6 SYN, read from the same queue: TPROXY to [::]:7801.
        listener, lout = l6.start("branch", "python3", "-c", TPROXY_LISTENER, "6", ready="listening")
        helper, hout = l6.start("branch", sys.executable, os.path.abspath(__file__), "--verdict", "7821", "0x2100",
                                ready="bound")
        try:
            result = echo(l6, server=SERVER6)
            listener.wait(timeout=10)
            helper.wait(timeout=10)
            lout += listener.stdout.read().decode(errors="replace")
        finally:
            for p in (listener, helper):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        print(f"IPv6 verdict 0x2100 intercept -> {result}; {lout.strip()}")
        check("IPv6 verdict 0x2100 (intercept): TPROXY hands it to the IPv6 transparent listener, original addresses kept",
              re.search(rf"accepted {re.escape(CLIENT6)}:\d+ as {re.escape(SERVER6)}:7000", lout) is not None,
              lout + result + hout)
    finally:
        server.kill()
        server.wait(timeout=5)

    # remove: both families gone, the lab's hooks kept.
    r = l6.exec("dc", INTERCEPT, "remove")
    save = iptables_save(l6, "dc") + ip6tables_save(l6, "dc")
    rules = l6.exec("dc", "ip", "-6", "rule").stdout
    table = l6.exec("dc", "ip", "-6", "route", "show", "table", "100").stdout
    check("IPv6 remove: no chain, rule or jump of either family left, the lab's IPv6 hook kept",
          r.returncode == 0 and "WANOPT" not in save and "fwmark 0x1 lookup 100" in rules
          and "local default dev lo" in table, r.stdout + r.stderr + save + rules + table)
    r = l6.exec("dc", INTERCEPT, "status")
    check("IPv6 status after remove: not installed, exit 3", r.returncode == 3 and "IPv6: not installed" in r.stdout,
          r.stdout)
    r = l6.exec("dc", INTERCEPT, "install", "--ipv4-only")
    r = l6.exec("dc", INTERCEPT, "status")
    check("IPv4 only installed (install --ipv4-only): status partly, exit 1",
          r.returncode == 1 and "IPv4: installed" in r.stdout and "IPv6: not installed" in r.stdout, r.stdout)
    r = l6.exec("dc", INTERCEPT, "status", "--ipv4-only")
    check("... and status --ipv4-only: installed, exit 0", r.returncode == 0 and "IPv6: not checked" in r.stdout,
          r.stdout)

    # The client's namespace has no hook: install adds the IPv6 one too (proto 87), remove takes it.
    l6.exec("client", INTERCEPT, "install")
    rules = l6.exec("client", "ip", "-6", "-d", "rule").stdout
    table = l6.exec("client", "ip", "-6", "route", "show", "table", "100").stdout
    check("install adds `ip -6 rule fwmark 0x1 lookup 100` and the IPv6 table-100 route where missing",
          "fwmark 0x1 lookup 100 proto 87" in rules and "local default dev lo proto 87" in table, rules + table)
    l6.exec("client", INTERCEPT, "remove")
    rules = l6.exec("client", "ip", "-6", "rule").stdout
    table = l6.exec("client", "ip", "-6", "route", "show", "table", "100").stdout
    check("remove takes away the IPv6 rule and route it added",
          "lookup 100" not in rules and not table.strip() and "WANOPT" not in ip6tables_save(l6, "client"),
          rules + table)


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
        r = a.exec("mid", "true")
        check("exec mid in a lab without --middle: clear error", r.returncode != 0 and "no mid box" in r.stderr,
              r.stdout + r.stderr)
        r = netlab("--prefix", a.prefix + "q", "up", "--queue", "5")
        check("up --queue without --intercept is refused", r.returncode != 0 and "--intercept" in r.stderr,
              r.stdout + r.stderr)
        r = netlab("--prefix", a.prefix + "q", "up", "--ipv6", "--middle")
        check("up --ipv6 --middle is refused", r.returncode != 0 and "does not go with --middle" in r.stderr
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
        middle_lab(m)
    with Lab("6", "--delay-ms", "20", "--ipv6", "--intercept") as l6:
        ipv6_lab(l6)
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
