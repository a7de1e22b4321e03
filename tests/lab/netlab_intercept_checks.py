"""deploy/intercept in the namespace lab: netlab_test.py's labs m (`up --middle
--intercept`) and 6 (`up --ipv6 --intercept`); that file's header says what each
checks. The rules deploy/intercept installs, fail open with no daemon, the verdict
marks (nfqueue_verdict.py gives a queued SYN its mark), the transparent listener,
install and remove in both families, and the command's errors.

Each lab function takes the lab and `t`, netlab_test's tools: t.check, t.ping,
t.netlab, t.lab_namespaces and t.intercept (the deploy/intercept path)."""
import os
import re
import statistics
import subprocess
import sys
from collections import namedtuple

Tools = namedtuple("Tools", "check ping netlab lab_namespaces intercept")
VERDICT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nfqueue_verdict.py")
SERVER = "198.18.2.10"
CLIENT6, SERVER6 = "2001:2:0:1::10", "2001:2:0:2::10"  # with up --ipv6

# What deploy/intercept install makes (iptables-save lines): 12 rules in its chains, 6 jumps: 18 lines
# (nat WANOPT_MAPI is empty until a daemon's mapi module fills it).
INTERCEPT_RULES = [
    "-A PREROUTING -j WANOPT_PRE",
    "-A WANOPT_PRE ! -i lo -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m mark --mark 0x0 -m addrtype ! --dst-type LOCAL -j NFQUEUE --queue-num 7821 --queue-bypass",
    "-A PREROUTING -j WANOPT_TPROXY",
    "-A WANOPT_TPROXY -p tcp -m socket --transparent --restore-skmark -m mark --mark 0x2400/0xfc00 -j WANOPT_DIVERT",
    "-A WANOPT_TPROXY -p tcp -m connmark --mark 0x2100 -m socket --transparent -j WANOPT_DIVERT",
    "-A WANOPT_TPROXY -p tcp -m mark --mark 0x2100 -j CONNMARK --set-xmark 0x2100/0xffffffff",
    "-A WANOPT_TPROXY -p tcp -m mark --mark 0x2100 -j TPROXY --on-port 7801 --on-ip 0.0.0.0 --tproxy-mark 0x1/0xffffffff",
    "-A WANOPT_DIVERT -j MARK --set-xmark 0x1/0xffffffff",
    "-A WANOPT_DIVERT -j ACCEPT",
    "-A OUTPUT -j WANOPT_OUT",
    "-A WANOPT_OUT -p tcp -m tcp --tcp-flags SYN,RST,ACK SYN -m mark --mark 0x2400/0xfc00 -j CONNMARK --set-xmark 0x2100/0xffffffff",
    "-A WANOPT_OUT -p tcp -m tcp --tcp-flags SYN,RST,ACK SYN -m mark --mark 0x2400 -j NFQUEUE --queue-num 7821 --queue-bypass",
    "-A WANOPT_OUT -p tcp -m tcp --tcp-flags SYN,RST,ACK SYN,ACK -m mark --mark 0x2500 -j NFQUEUE --queue-num 7821 --queue-bypass",
    "-A INPUT -j WANOPT_IN",
    "-A WANOPT_IN ! -i lo -p tcp -m tcp --tcp-flags SYN,RST,ACK SYN,ACK -j NFQUEUE --queue-num 7821 --queue-bypass",
    "-A PREROUTING -j WANOPT_MAPI",
    "-A FORWARD -j WANOPT_FWD",
    "-A WANOPT_FWD -p tcp -m mark --mark 0x2300 -j REJECT --reject-with tcp-reset",
]
# ip6tables-save lines: the same, but for TPROXY's address.
INTERCEPT_RULES6 = [l.replace("--on-ip 0.0.0.0", "--on-ip ::") for l in INTERCEPT_RULES]
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


def middle_lab(m, t):
    r, rtts, sent, received = t.ping(m, 5, 0.2)
    median = statistics.median(rtts) if rtts else None
    print(f"RTT through 5 namespaces (20 ms one way): median {median} ms of {rtts}")
    t.check("--middle: 5 pings client -> server all answered", sent == 5 and received == 5, r.stdout + r.stderr)
    t.check("--middle: median RTT in [40, 55] ms", median is not None and 40.0 <= median <= 55.0, f"{median}")
    t.check("--middle: three routers on the way (ttl=61)", "ttl=61" in r.stdout, r.stdout)
    r = m.exec("branch", "ping", "-n", "-c", "1", "-W", "2", "198.18.0.2")
    t.check("--middle: branch (198.18.3.1) reaches dc's WAN address", " 0% packet loss" in r.stdout, r.stdout)
    rules, table = m.exec("mid", "ip", "rule").stdout, m.exec("mid", "ip", "route", "show", "table", "100").stdout
    t.check("--middle: mid has the interception hooks",
          "fwmark 0x1 lookup 100" in rules and "local default dev lo" in table, rules + table)
    r = t.netlab("--prefix", m.prefix, "status")
    t.check("--middle: status shows the mid box", r.returncode == 0 and f"{m.prefix}-mid" in r.stdout
          and "198.18.3.2" in r.stdout and "a = mid wan0" in r.stdout, r.stdout + r.stderr)

    # Fail open: rules in all three boxes, no daemon.
    for box in ("branch", "mid", "dc"):
        got = ours(iptables_save(m, box))
        t.check(f"--intercept: {box} has the 18 rules", sorted(got) == sorted(INTERCEPT_RULES), "\n".join(got))
    server, out = m.start("server", "python3", "-c", ECHO_SERVER, ready="listening")
    try:
        t.check("echo server listens", "listening" in out, out)
        result = echo(m)
        print(f"fail open, 3 boxes with rules and no daemon: {result}")
        t.check("fail open: TCP echo client -> server through 3 boxes with no daemon", result.startswith("echoed"), result)
        for box in ("branch", "mid", "dc"):
            r = m.exec(box, t.intercept, "status")
            pre = re.search(r"raw PREROUTING -> WANOPT_PRE.*\n.*\n\s*(\d+)", r.stdout)
            t.check(f"fail open: {box} queue rule counted the SYN and no process is bound",
                  r.returncode == 0 and pre and int(pre.group(1)) >= 1 and "no process bound" in r.stdout, r.stdout)

        # The verdict marks, with this script as a minimal queue reader in the branch.
        def with_verdict(mark, client_timeout=5):
            helper, out = m.start("branch", sys.executable, VERDICT, "7821", mark,
                                  ready="bound")
            try:
                status = m.exec("branch", t.intercept, "status").stdout
                result = echo(m, client_timeout)
                helper.wait(timeout=10)
                return result, out + helper.stdout.read().decode(errors="replace"), status
            finally:
                if helper.poll() is None:
                    helper.kill()
                    helper.wait()

        result, out, status = with_verdict("hold", 1)
        print(f"verdict: none -> {result}; {out.strip()}")
        t.check("status sees the process bound to the queue", "queue 7821: bound by netlink port" in status, status)
        t.check("a bound queue holds the SYN (client times out)",
              result.startswith("TimeoutError") and "queued 198.18.1.10:" in out and "-> 198.18.2.10:7000 flags 0x02" in out,
              result + out)
        result, out, _ = with_verdict("0x2200")
        print(f"verdict 0x2200 bypass -> {result}")
        t.check("verdict 0x2200 (bypass): the connection reaches the server", result.startswith("echoed"), result + out)
        result, out, _ = with_verdict("0x2300")
        print(f"verdict 0x2300 deny -> {result}")
        t.check("verdict 0x2300 (deny): the branch resets it (refused in < 0.5 s)",
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
        t.check("verdict 0x2100 (intercept): TPROXY hands it to the transparent listener, original addresses kept",
              re.search(r"accepted 198\.18\.1\.10:\d+ as 198\.18\.2\.10:7000", lout) is not None, lout + result + out)
    finally:
        server.kill()
        server.wait(timeout=5)

    # install again: still exactly one copy of each rule, and of the ip rule.
    r = m.exec("mid", t.intercept, "install")
    got = ours(iptables_save(m, "mid"))
    t.check("install twice: exit 0", r.returncode == 0, r.stdout + r.stderr)
    t.check("install where IPv6 is disabled: a note, IPv4 only (no ip6tables rule)",
          "IPv6 skipped: IPv6 is disabled here" in r.stderr and "installed (IPv4)" in r.stdout
          and "WANOPT" not in ip6tables_save(m, "mid"), r.stdout + r.stderr)
    t.check("install twice: exactly one copy of each of the 18 rules",
          len(got) == 18 and sorted(got) == sorted(INTERCEPT_RULES), "\n".join(got))
    rules = m.exec("mid", "ip", "rule").stdout
    t.check("install twice: one `fwmark 0x1 lookup 100` (the lab's; none added)",
          rules.count("fwmark 0x1 lookup 100") == 1, rules)
    r = m.exec("mid", t.intercept, "status")
    t.check("status: installed, exit 0", r.returncode == 0 and r.stdout.rstrip().endswith("installed"), r.stdout)
    for i in (1, 2):
        r = m.exec("mid", t.intercept, "remove")
        t.check(f"remove #{i}: exit 0", r.returncode == 0, r.stdout + r.stderr)
    save = iptables_save(m, "mid")
    t.check("remove twice: no chain, rule or jump of it left", "WANOPT" not in save, save)
    rules, table = m.exec("mid", "ip", "rule").stdout, m.exec("mid", "ip", "route", "show", "table", "100").stdout
    t.check("remove: the lab's own hook (not install's) is kept",
          "fwmark 0x1 lookup 100" in rules and "local default dev lo" in table, rules + table)
    r = m.exec("mid", t.intercept, "status")
    t.check("status: not installed, exit 3", r.returncode == 3 and "not installed" in r.stdout, r.stdout)

    # An interface the box does not have is refused (exit 2, one line naming it), and
    # nothing is installed: it would have queued nothing while status said "installed".
    rules_before = m.exec("mid", "ip", "rule").stdout
    for extra in ((), ("--dry-run",)):
        r = m.exec("mid", t.intercept, "install", "--interface", "nosuch", *extra)
        t.check(f"install --interface nosuch{''.join(' ' + e for e in extra)}: exit 2, one-line error naming it",
              r.returncode == 2 and r.stderr.count("\n") == 1 and "--interface nosuch: no such interface" in r.stderr
              and not r.stdout, r.stdout + r.stderr)
    save = iptables_save(m, "mid")
    rules = m.exec("mid", "ip", "rule").stdout
    t.check("install --interface nosuch: no chain, rule or ip rule left", "WANOPT" not in save and rules == rules_before,
          save + rules)
    r = m.exec("mid", t.intercept, "install", "--interface", "lan0", "--interface", "nosuch")
    t.check("install --interface lan0 --interface nosuch: refused too, nothing installed",
          r.returncode == 2 and "WANOPT" not in iptables_save(m, "mid"), r.stdout + r.stderr)
    r = m.exec("mid", t.intercept, "status")
    t.check("status after the refused installs: not installed, exit 3", r.returncode == 3, r.stdout)

    # A namespace without the hook: install adds it (proto 87), remove takes it away.
    m.exec("client", t.intercept, "install")
    rules = m.exec("client", "ip", "-d", "rule").stdout
    table = m.exec("client", "ip", "route", "show", "table", "100").stdout
    t.check("install adds `fwmark 0x1 lookup 100` and the table-100 route where missing",
          "fwmark 0x1 lookup 100 proto 87" in rules and "local default dev lo proto 87" in table, rules + table)
    m.exec("client", t.intercept, "remove")
    m.exec("client", t.intercept, "remove")
    rules = m.exec("client", "ip", "rule").stdout
    table = m.exec("client", "ip", "route", "show", "table", "100").stdout
    save = iptables_save(m, "client")
    t.check("remove takes away the ip rule and route it added",
          "lookup 100" not in rules and not table.strip() and "WANOPT" not in save, rules + table + save)

    # --dry-run prints and changes nothing, as root and as nobody.
    before = (iptables_save(m, "server"), m.exec("server", "ip", "rule").stdout,
              m.exec("server", "sysctl", "-n", "net.ipv4.ip_forward").stdout)
    r = m.exec("server", t.intercept, "install", "--dry-run", "--queue", "9", "--port", "9000", "--interface", "eth0")
    after = (iptables_save(m, "server"), m.exec("server", "ip", "rule").stdout,
             m.exec("server", "sysctl", "-n", "net.ipv4.ip_forward").stdout)
    t.check("--dry-run install prints the commands",
          r.returncode == 0 and "-t raw -N WANOPT_PRE" in r.stdout and "-i eth0 -m addrtype \\! --dst-type LOCAL -j NFQUEUE --queue-num 9 --queue-bypass" in r.stdout
          and "TPROXY --on-port 9000" in r.stdout and "ip rule add fwmark 0x1 lookup 100" in r.stdout, r.stdout + r.stderr)
    t.check("--dry-run changes nothing (rules, ip rules, sysctls)", before == after, f"{before} {after}")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", t.intercept, "remove", "--dry-run"],
                       capture_output=True, text=True, timeout=30)
    t.check("--dry-run works as non-root", r.returncode == 0 and "-X WANOPT_PRE" in r.stdout, r.stdout + r.stderr)
    if os.path.exists("/proc/sys/net/ipv6/conf/lo") and open("/proc/sys/net/ipv6/conf/lo/disable_ipv6").read().strip() == "0":
        t.check("--dry-run remove (IPv6 on here) prints the IPv6 commands too, WANOPT_MAPI's with them",
              "ip6tables-nft -w 5 -t raw -n -L WANOPT_PRE && ip6tables-nft -w 5 -t raw -X WANOPT_PRE" in r.stdout
              and "ip -6 rule del fwmark 0x1 lookup 100 protocol 87" in r.stdout
              and "ip6tables-nft -w 5 -t nat -n -L WANOPT_MAPI && ip6tables-nft -w 5 -t nat -X WANOPT_MAPI" in r.stdout,
              r.stdout)
        r = subprocess.run([t.intercept, "install", "--dry-run", "--port", "9000"], capture_output=True, text=True)
        t.check("--dry-run install prints IPv6's TPROXY, hook and sysctl",
              "ip6tables-nft -w 5 -t mangle -A WANOPT_TPROXY -p tcp -m mark --mark 0x2100 -j TPROXY --on-port 9000 --on-ip :: --tproxy-mark 0x1/0xffffffff" in r.stdout
              and "ip -6 route add local ::/0 dev lo table 100 proto 87" in r.stdout
              and "sysctl -q -w net.ipv6.conf.all.forwarding=1" in r.stdout, r.stdout + r.stderr)
    r = subprocess.run([t.intercept, "install", "--dry-run", "--ipv4-only"], capture_output=True, text=True)
    t.check("--dry-run --ipv4-only: no IPv6 command", r.returncode == 0 and "-N WANOPT_PRE" in r.stdout
          and "ip6tables" not in r.stdout and "ip -6" not in r.stdout and "ipv6" not in r.stdout, r.stdout + r.stderr)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", t.intercept, "install"],
                       capture_output=True, text=True, timeout=30)
    t.check("install as non-root: one-line error", r.returncode == 1 and r.stderr.count("\n") == 1
          and "must run as root" in r.stderr, r.stderr)
    r = subprocess.run([t.intercept, "install", "--queue", "70000", "--dry-run"], capture_output=True, text=True)
    t.check("bad number: one-line error", r.returncode == 1 and "--queue: '70000' is not a number" in r.stderr, r.stderr)


def ipv6_lab(l6, t):
    r, rtts, sent, received = t.ping(l6, 5, 0.2, SERVER6)
    median = statistics.median(rtts) if rtts else None
    print(f"IPv6 RTT (20 ms one way): median {median} ms of {rtts}")
    t.check("--ipv6: 5 pings -6 client -> server all answered", sent == 5 and received == 5, r.stdout + r.stderr)
    t.check("--ipv6: median RTT in [40, 55] ms (IPv6 crosses the delay line)",
          median is not None and 40.0 <= median <= 55.0, f"{median}")
    t.check("--ipv6: two routers on the way (hop limit 62)", "ttl=62" in r.stdout, r.stdout)
    r, rtts, _, received = t.ping(l6, 1, 0.2)
    t.check("--ipv6: IPv4 still works in the same lab", received == 1 and rtts and rtts[0] >= 40, r.stdout + r.stderr)
    for box in ("branch", "dc"):
        rules = l6.exec(box, "ip", "-6", "rule").stdout
        table = l6.exec(box, "ip", "-6", "route", "show", "table", "100").stdout
        t.check(f"--ipv6: {box} has the IPv6 interception hooks",
              "fwmark 0x1 lookup 100" in rules and "local default dev lo" in table, rules + table)
    r = t.netlab("--prefix", l6.prefix, "status")
    t.check("--ipv6: status shows ipv6=1 and the IPv6 addresses",
          r.returncode == 0 and "ipv6=1" in r.stdout and SERVER6 in r.stdout and "2001:2::1/64" in r.stdout,
          r.stdout + r.stderr)

    # deploy/intercept made both families' rules (no --ipv4-only with --ipv6).
    for box in ("branch", "dc"):
        got4, got6 = ours(iptables_save(l6, box)), ours(ip6tables_save(l6, box))
        t.check(f"--ipv6 --intercept: {box} has the 18 iptables and 18 ip6tables rules",
              sorted(got4) == sorted(INTERCEPT_RULES) and sorted(got6) == sorted(INTERCEPT_RULES6),
              "\n".join(got4 + got6))
    server, out = l6.start("server", "python3", "-c", ECHO_SERVER, SERVER6, ready="listening")
    try:
        t.check("IPv6 echo server listens", "listening" in out, out)
        result = echo(l6, server=SERVER6)
        print(f"IPv6 fail open, rules and no daemon: {result}")
        t.check("IPv6 fail open: TCP echo client -> server with no daemon", result.startswith("echoed"), result)
        r = l6.exec("branch", t.intercept, "status")
        v6 = r.stdout[r.stdout.find("IPv6 ("):]
        pre = re.search(r"raw PREROUTING -> WANOPT_PRE.*\n.*\n\s*(\d+)", v6)
        t.check("status: both families installed, exit 0",
              r.returncode == 0 and "IPv4: installed" in r.stdout and "IPv6: installed" in r.stdout
              and r.stdout.rstrip().endswith("installed"), r.stdout)
        t.check("IPv6 fail open: the IPv6 queue rule counted the SYN", pre is not None and int(pre.group(1)) >= 1, v6)

        # Verdict 0x2100 on an IPv6 SYN, read from the same queue: TPROXY to [::]:7801.
        listener, lout = l6.start("branch", "python3", "-c", TPROXY_LISTENER, "6", ready="listening")
        helper, hout = l6.start("branch", sys.executable, VERDICT, "7821", "0x2100",
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
        t.check("IPv6 verdict 0x2100 (intercept): TPROXY hands it to the IPv6 transparent listener, original addresses kept",
              re.search(rf"accepted {re.escape(CLIENT6)}:\d+ as {re.escape(SERVER6)}:7000", lout) is not None,
              lout + result + hout)
    finally:
        server.kill()
        server.wait(timeout=5)

    # remove: both families gone, the lab's hooks kept.
    r = l6.exec("dc", t.intercept, "remove")
    save = iptables_save(l6, "dc") + ip6tables_save(l6, "dc")
    rules = l6.exec("dc", "ip", "-6", "rule").stdout
    table = l6.exec("dc", "ip", "-6", "route", "show", "table", "100").stdout
    t.check("IPv6 remove: no chain, rule or jump of either family left, the lab's IPv6 hook kept",
          r.returncode == 0 and "WANOPT" not in save and "fwmark 0x1 lookup 100" in rules
          and "local default dev lo" in table, r.stdout + r.stderr + save + rules + table)
    r = l6.exec("dc", t.intercept, "status")
    t.check("IPv6 status after remove: not installed, exit 3", r.returncode == 3 and "IPv6: not installed" in r.stdout,
          r.stdout)
    r = l6.exec("dc", t.intercept, "install", "--ipv4-only")
    r = l6.exec("dc", t.intercept, "status")
    t.check("IPv4 only installed (install --ipv4-only): status partly, exit 1",
          r.returncode == 1 and "IPv4: installed" in r.stdout and "IPv6: not installed" in r.stdout, r.stdout)
    r = l6.exec("dc", t.intercept, "status", "--ipv4-only")
    t.check("... and status --ipv4-only: installed, exit 0", r.returncode == 0 and "IPv6: not checked" in r.stdout,
          r.stdout)

    # The client's namespace has no hook: install adds the IPv6 one too (proto 87), remove takes it.
    l6.exec("client", t.intercept, "install")
    rules = l6.exec("client", "ip", "-6", "-d", "rule").stdout
    table = l6.exec("client", "ip", "-6", "route", "show", "table", "100").stdout
    t.check("install adds `ip -6 rule fwmark 0x1 lookup 100` and the IPv6 table-100 route where missing",
          "fwmark 0x1 lookup 100 proto 87" in rules and "local default dev lo proto 87" in table, rules + table)
    l6.exec("client", t.intercept, "remove")
    rules = l6.exec("client", "ip", "-6", "rule").stdout
    table = l6.exec("client", "ip", "-6", "route", "show", "table", "100").stdout
    t.check("remove takes away the IPv6 rule and route it added",
          "lookup 100" not in rules and not table.strip() and "WANOPT" not in ip6tables_save(l6, "client"),
          rules + table)
