#!/usr/bin/python3
"""Reused 4-tuples: a box's TIME_WAIT sockets neither swallow the packets of a
connection it routes nor delay one it intercepts.

Usage: time_wait_test.py WANOPT NETLAB DELAYLINE
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure.

A box that closed a connection first keeps a transparent socket in TIME_WAIT for 60 s
under the client's or the server's address and port. Clients reuse ports, so a new
connection can carry the same 4-tuple; it once met that socket on the box: its
server's SYN-ACK (or its SYN) was delivered to the TIME_WAIT socket, which answered
with a stale ACK, and the connection waited a second for a retransmission (seen in
the scale benchmark: 933 of 3,000 pass-through connections). The rules of
deploy/intercept now deliver locally only to the daemon's live sockets and to the
connections it intercepted, and turn early demux off (else the kernel drops a
forwarded packet that early demux matched to a local TIME_WAIT socket).

The dual-stack lab (`netlab up --ipv6 --intercept`), each check over IPv4 and IPv6.
A server in the server namespace: port 7000 reads to the end, then answers 64 KiB
and closes; port 7001 sends 64 KiB at once and closes first. Each client connection
binds a fixed port; iptables counters in the client and server namespaces count the
SYNs and SYN-ACKs (one each means nobody waited for a retransmission).
  1. Routed past a TIME_WAIT socket (no daemons, the box a router): the dc holds a
     TIME_WAIT socket from the client's address and port Q to the server, made as
     the daemon's probes are (transparent, socket mark 0x2400, closed first); the
     client connects from Q: bytes verified, the server sent one SYN-ACK, the TIME_WAIT
     socket still there.
  2. Intercepted, then the port reused (both daemons): the client fetches from port
     7001 from port P, the server closes first, so the branch holds the TIME_WAIT
     socket; again from P: optimized both times, one SYN each.
  3. A probe on the client connection's own 4-tuple (the branch's port range cut to
     the client's port, so the probe's connect must take it): the two share a
     conntrack entry, and the client's handshake must still reach the branch:
     optimized, bytes verified, one SYN. (It passes on the rules before the
     daemon's own SYNs were marked too: taking turns, the two connections let
     conntrack re-sync. The interleaving that failed, one in ~66,000, shows only in
     tests/bench/sustained_rate_bench.py.)
  4. The branch daemon stopped, port P once more: routed through the branch past its
     TIME_WAIT socket, bytes verified, one SYN.
The lab and every process are removed in a `finally`.
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labkit import Checks, Lab  # noqa: E402

WANOPT = os.path.abspath(sys.argv[1])
NETLAB = os.path.abspath(sys.argv[2])
DELAYLINE = os.path.abspath(sys.argv[3])
MAKE_PKI = os.path.join(os.path.dirname(NETLAB), "make-pki")
FAMILIES = {"IPv4": ("198.18.1.10", "198.18.2.10", "iptables"),
            "IPv6": ("2001:2:0:1::10", "2001:2:0:2::10", "ip6tables")}
IDS = {"branch": "02:00:00:00:0b:11", "dc": "02:00:00:00:0d:11"}
ANSWER = 65536

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)

check = Checks()

SERVER = f"""
import socket, sys, threading
def serve(family, address, port, first):
    l = socket.socket(family); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((address, port)); l.listen(64)
    while True:
        c, _ = l.accept()
        threading.Thread(target=talk, args=(c, first), daemon=True).start()
def talk(c, first):
    with c:
        if not first:
            while c.recv(65536): pass
        c.sendall(b"a" * {ANSWER})
for family, address in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    for port, first in ((7000, False), (7001, True)):
        threading.Thread(target=serve, args=(family, address, port, first), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""

# From argv[1] port argv[2] to argv[3] port argv[4]: sends 1000 bytes unless the
# server speaks first, reads to the end, prints the byte count.
CLIENT = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(20)
s.bind((sys.argv[1], int(sys.argv[2]))); s.connect((sys.argv[3], int(sys.argv[4])))
if sys.argv[4] == "7000":
    s.sendall(b"q" * 1000); s.shutdown(socket.SHUT_WR)
n = 0
while True:
    b = s.recv(65536)
    if not b: break
    n += len(b)
s.close(); print(n)
"""

# In a box: a TIME_WAIT socket as the daemon's probe leaves one (transparent, mark
# 0x2400, bound to the client's address and port argv[2], closed first).
TIME_WAIT = """
import socket, sys
v6 = ":" in sys.argv[1]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
s.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.SOL_IP, 75 if v6 else 19, 1)  # IPV6_/IP_TRANSPARENT
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x2400); s.settimeout(20)
s.bind((sys.argv[1], int(sys.argv[2]))); s.connect((sys.argv[3], 7000)); s.shutdown(socket.SHUT_WR)
while s.recv(65536): pass
s.close()
"""


def time_wait_sockets(lab, node, local, port):
    """TIME_WAIT sockets on `node` whose local or peer end is local:port."""
    out = lab.run(node, "ss", "-Htan", "state", "time-wait").stdout
    host = f"[{local}]" if ":" in local else local
    return [l for l in out.splitlines() if f"{host}:{port} " in l + " "]


class Counter:
    """An iptables rule in `node`'s OUTPUT chain that counts the TCP packets `match`
    describes (no target: it only counts), found again by its comment."""

    def __init__(self, lab, node, tool, *match):
        self.lab, self.node, self.tool = lab, node, tool
        self.tag = "tw-count-" + "-".join(m.strip("-").replace(",", "") for m in match)
        lab.run(node, tool, "-w", "5", "-A", "OUTPUT", "-p", "tcp", *match, "-m", "comment", "--comment", self.tag,
                check_rc=True)

    def packets(self):
        r = self.lab.run(self.node, self.tool, "-w", "5", "-v", "-x", "-n", "-L", "OUTPUT", check_rc=True)
        lines = [l for l in r.stdout.splitlines() if f"/* {self.tag} */" in l]
        return int(lines[0].split()[0]) if len(lines) == 1 else None


def syn_counter(lab, tool, port):
    """The client's SYNs from `port` (a retransmission counts again)."""
    return Counter(lab, "client", tool, "--sport", str(port), "--tcp-flags", "SYN,ACK,RST,FIN", "SYN")


def connect(lab, client, port, server, server_port):
    r = lab.run("client", "/usr/bin/python3", "-c", CLIENT, client, str(port), server, str(server_port))
    return int(r.stdout) if r.returncode == 0 and r.stdout.strip().isdigit() else r.stderr.strip()[-200:]


def routed_past_time_wait(lab, name, client, server, tool, port):
    lab.run("dc", "/usr/bin/python3", "-c", TIME_WAIT, client, str(port), server, check_rc=True)
    before = time_wait_sockets(lab, "dc", client, port)
    synacks = Counter(lab, "server", tool, "--sport", "7000", "--dport", str(port), "--tcp-flags", "SYN,ACK,RST",
                      "SYN,ACK")
    got = connect(lab, client, port, server, 7000)
    after = time_wait_sockets(lab, "dc", client, port)
    sent = synacks.packets()
    check(f"{name} routed past the dc's TIME_WAIT socket for its 4-tuple: bytes verified, one SYN-ACK",
          got == ANSWER and sent == 1 and before and after, (got, sent, before, after))


def reused_port(lab, name, client, server, tool, port):
    syns = syn_counter(lab, tool, port)
    start = lab.last_id("branch")
    first = connect(lab, client, port, server, 7001)
    # The client's FIN reaches the branch just after the client's close: poll for it.
    deadline = time.monotonic() + 5
    while not (held := time_wait_sockets(lab, "branch", client, port)) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = connect(lab, client, port, server, 7001)
    lab.wait_ended("branch", 7001, start)  # the second, so both
    ended = [c for c in lab.connections("branch") if c["id"] > start and c["server"].endswith(":7001")]
    optimized = [c["peer"] == IDS["dc"] and c["client"].endswith(f":{port}") and bool(c["ended"]) for c in ended]
    sent = syns.packets()
    check(f"{name} intercepted, then the same port again past the branch's TIME_WAIT socket: "
          "both optimized, bytes verified, one SYN each",
          first == second == ANSWER and held and optimized == [True, True] and sent == 2, (first, second, held, sent, ended))
    return syns


def shared_tuple(lab, name, client, server, tool, port):
    syns = syn_counter(lab, tool, port)
    saved = lab.run("branch", "sysctl", "-n", "net.ipv4.ip_local_port_range").stdout.split()
    start = lab.last_id("branch")
    # Only while the client connects: the status API's curl needs ports too.
    lab.run("branch", "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={port} {port}", check_rc=True)
    try:
        got = connect(lab, client, port, server, 7001)
    finally:
        lab.run("branch", "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={' '.join(saved)}", check_rc=True)
    c = lab.wait_ended("branch", 7001, start)
    # The dc names the probe's source as the client: the same port, so the same 4-tuple.
    d = lab.connection_to("dc", 7001)
    sent = syns.packets()
    check(f"{name} a probe on the client connection's own 4-tuple (the dc saw port {port}): optimized, "
          "bytes verified, one SYN",
          got == ANSWER and c and c["peer"] == IDS["dc"] and c["client"].endswith(f":{port}") and
          d and d["client"].endswith(f":{port}") and sent == 1, (got, c, d, sent))


def main():
    with tempfile.TemporaryDirectory(prefix="wanopt-tw-") as work:
        subprocess.run([MAKE_PKI, os.path.join(work, "pki")], check=True, capture_output=True)
        lab = Lab(f"tw{os.getpid() % 100000}", work, WANOPT, NETLAB, DELAYLINE, ipv6=True, delay_ms=2)
        try:
            lab.up()
            for node in ("branch", "dc"):
                demux = lab.run(node, "sysctl", "-n", "net.ipv4.tcp_early_demux").stdout.strip()
                check(f"{node}: deploy/intercept turned early demux off", demux == "0", demux)
            server = lab.spawn("server", "server", "/usr/bin/python3", "-c", SERVER, FAMILIES["IPv4"][1],
                               FAMILIES["IPv6"][1], stdout=subprocess.PIPE, text=True)
            if server.stdout.readline().strip() != "listening":
                raise RuntimeError("the server did not start")
            for i, (name, (client, srv, tool)) in enumerate(FAMILIES.items()):
                routed_past_time_wait(lab, name, client, srv, tool, 41000 + i)
            for box in ("branch", "dc"):
                config = lab.box_config(box, IDS[box], box, extra="[intercept]\n")
                lab.start_box(box, config)
            syns = {}
            for i, (name, (client, srv, tool)) in enumerate(FAMILIES.items()):
                syns[name] = reused_port(lab, name, client, srv, tool, 42000 + i)
            for i, (name, (client, srv, tool)) in enumerate(FAMILIES.items()):
                shared_tuple(lab, name, client, srv, tool, 43001 + 2 * i)
            lab.stop("branch")
            for i, (name, (client, srv, tool)) in enumerate(FAMILIES.items()):
                port = 42000 + i
                held = time_wait_sockets(lab, "branch", client, port)
                got = connect(lab, client, port, srv, 7001)
                check(f"{name} the branch stopped: routed past its TIME_WAIT socket, bytes verified, one SYN",
                      got == ANSWER and held and syns[name].packets() == 3, (got, held, syns[name].packets()))
        except Exception as e:  # a broken lab is a failure, never a skip
            check("the lab ran to the end", False, repr(e))
        finally:
            if check.failed:
                lab.print_logs()
            lab.down()
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
