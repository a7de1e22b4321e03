#!/usr/bin/python3
"""One-arm, policy-routed boxes (issue 15) in the namespace lab, and exact byte
accounting on every status surface with optimized and pass-through traffic mixed.

Usage: one_arm_test.py WANOPT NETLAB DELAYLINE
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure.

The lab is `netlab up --one-arm --intercept`: client -- branch router == WAN == dc
router -- server, each box on a third interface of its router, the routers
policy-routing TCP to it (deploy/README.md), deploy/intercept install in the boxes
without --interface. Real peers only: curl in the client namespace, python3's
http.server in the server namespace (its log says which address each request came
from), tshark on the WAN at the branch router, one `wanopt run` per box, TLS
certificates from make-pki. Every fetch is SHA-256 verified.
  0. netlab: `up --one-arm --middle` refused; a ping (not policy-routed) crosses the
     two routers only (ttl 62).
  1. Optimized fetches: both boxes name each other at the other box's own address
     (status API; the branch's probe, the inner channel, comes from the client's
     address), the server sees the client's address.
  2. tshark on the WAN: option 0x21 on the SYN (offer, the client's address) and on
     the SYN-ACK (the dc's answer).
  3. Pass-through on the branch, mixed with the optimized fetches: an in-path rule
     (port 8082, action = "pass-through"), then the dc box stopped ("no peer"). In
     every case the server sees the client's address (its log says), the branch's
     pass-through probe included (the branch router has the return policy).
  3b. The branch router's return policy removed: the branch's probe from the
     client's address is not answered; it retries from its own address, the fetch
     succeeds, and the server sees the branch box's address, as deploy/README.md
     says; noted "asymmetric routing, or a lost SYN" the first time, "asymmetric
     routing" (remembered) the second time in a row.
  5. IPv6 through the same boxes (the lab is dual-stack), between the IPv4 fetches:
     an optimized fetch (both boxes name each other, the dc lists the client
     bracketed, the server saw the client's IPv6 address), option 0x21 with the
     client's IPv6 address on the SYN on the WAN and the dc's answer on the SYN-ACK,
     and the IPv4 rule's pass-through by port over IPv6. In 3b, the same fallback
     over IPv6 (the IPv6 return policy removed: the server sees the branch box's
     IPv6 address).
  4. Exact reductions, for each box: /api/summary totals equal the sums over
     /api/connections, the Prometheus counters equal them too, `wanopt show summary`
     prints the same bytes and reduction, every pass-through connection has WAN
     bytes equal to its LAN bytes (reduction 0), and the box-wide reduction is
     1 - WAN/LAN of the totals. The branch's `wanopt show summary` is printed.
The lab and every process are removed in a `finally`; `netlab down` leaves no
namespace and no state behind.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labkit import Capture, Checks, Lab, make_origin, seen_from, start_http_origin  # noqa: E402

WANOPT = os.path.abspath(sys.argv[1])
NETLAB = os.path.abspath(sys.argv[2])
DELAYLINE = os.path.abspath(sys.argv[3])
REPO = os.path.abspath(os.path.join(os.path.dirname(NETLAB), "..", ".."))
DISSECTOR = os.path.join(REPO, "deploy", "wireshark", "wanopt.lua")
MAKE_PKI = os.path.join(REPO, "tests", "lab", "make-pki")
SERVER, CLIENT, BRANCH_BOX = "198.18.2.10", "198.18.1.10", "198.18.4.2"
SERVER6, CLIENT6, BRANCH_BOX6 = "2001:2:0:2::10", "2001:2:0:1::10", "2001:2:0:4::2"
IDS = {"branch": "02:00:00:00:0b:01", "dc": "02:00:00:00:0d:01"}
RULES = """
[intercept]
[[intercept.rule]]
ports = "8082"
action = "pass-through"
"""
PORTS = (80, 8082)
API = "http://127.0.0.1:7880"

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)

check = Checks()


class OneArmLab(Lab):
    def __init__(self, prefix, work):
        super().__init__(prefix, work, WANOPT, NETLAB, DELAYLINE, one_arm=True, ipv6=True)

    def start_box(self, box):
        super().start_box(box, self.box_config(box, IDS[box], box, extra=RULES if box == "branch" else "[intercept]\n"))

    def api(self, node, path):
        r = self.run(node, "curl", "-s", "-m", "3", API + path, check_rc=True)
        return r.stdout


def is_set(flag):
    return flag in ("1", "True")


# The status page's own formatting (wanopt/status/model.cc: Bytes, Percent, Reduction).
def fmt_bytes(n):
    units, v, u = ["B", "KiB", "MiB", "GiB", "TiB"], float(n), 0
    while v >= 1024 and u < 4:
        v, u = v / 1024, u + 1
    return f"{v:.0f} {units[u]}" if u == 0 else f"{v:.1f} {units[u]}"


def reduction(lan, wan):
    return 100.0 * (1.0 - wan / lan) if lan and wan else 0.0


def as_json(x):
    """x as the status API writes a double (util/json.h: %.6g)."""
    return float(f"{x:.6g}")


def metric(text, name, box, direction):
    m = re.search(rf'^{name}{{box="{box}",direction="{direction}"}} (\d+)$', text, re.M)
    return int(m.group(1)) if m else None


def accounting(lab, box):
    """Checks every surface of `box` against the others; returns `show summary`'s text."""
    summary = json.loads(lab.api(box, "/api/summary"))
    totals = summary["totals"]
    conns = lab.connections(box)
    open_ = [c for c in conns if not c.get("ended")]
    check(f"{box}: every connection has ended before the accounting", not open_, open_)
    sums = {k: sum(c[k] for c in conns) for k in ("lan_in", "lan_out", "wan_in", "wan_out")}
    lan, wan = sums["lan_in"] + sums["lan_out"], sums["wan_in"] + sums["wan_out"]
    print(f"  {box}: {len(conns)} connections, sums {sums}; summary totals {totals}")
    check(f"{box}: /api/summary LAN bytes = sum over /api/connections ({lan})", totals["lan_bytes"] == lan, totals)
    check(f"{box}: /api/summary WAN bytes = sum over /api/connections ({wan})", totals["wan_bytes"] == wan, totals)
    check(f"{box}: connections since start = connections listed ({len(conns)}), routed pass-through included",
          totals["connections_total"] == len(conns), totals)
    check(f"{box}: box-wide reduction = 1 - WAN/LAN of the totals",
          totals["reduction"] == as_json(reduction(totals["lan_bytes"], totals["wan_bytes"])), totals)
    wrong = [c for c in conns
             if c["reduction"] != as_json(reduction(c["lan_in"] + c["lan_out"], c["wan_in"] + c["wan_out"]))]
    check(f"{box}: every connection's reduction = 1 - WAN/LAN of its bytes", not wrong, wrong)
    metrics = lab.api(box, "/metrics")
    prom = {f"{kind}_{d}": metric(metrics, f"wanopt_{kind}_bytes_total", box, d)
            for kind in ("lan", "wan") for d in ("in", "out")}
    check(f"{box}: Prometheus lan/wan in/out byte counters = the sums over /api/connections", prom == sums,
          (prom, sums))
    r = lab.run(box, WANOPT, "show", "summary", "--api", API, check_rc=True)
    line = next((l for l in r.stdout.splitlines() if l.startswith("LAN ")), "")
    want = f"LAN {fmt_bytes(lan)}, WAN {fmt_bytes(wan)}, reduction {reduction(lan, wan):.1f}%"
    check(f"{box}: `wanopt show summary` prints the same bytes and reduction ({want})", line == want, repr(line))
    passed = [c for c in conns if c["state"] == "pass-through" or any("pass-through" in n for n in c["notes"])]
    for c in passed:
        lan_c, wan_c = c["lan_in"] + c["lan_out"], c["wan_in"] + c["wan_out"]
        check(f"{box}: pass-through connection {c['id']} ({c['server']}): WAN bytes {wan_c} = LAN bytes {lan_c}, "
              "reduction 0", wan_c == lan_c and c["reduction"] == 0, c)
    return summary, conns, passed, r.stdout


def is_syn(p, ack):
    """A SYN (ack False) or a SYN-ACK (ack True) in a Capture's packets."""
    return is_set(p["tcp.flags.syn"]) and is_set(p["tcp.flags.ack"]) == ack


def ipv6_through_one_arm(lab, fetch, server6_log):
    """5: IPv6 through the same policy-routed boxes, the WAN captured."""
    cap = Capture(lab, lab.wan_node(), "wan0", "198.18.0.2", DISSECTOR)
    start_b, start_d = lab.last_id("branch"), lab.last_id("dc")
    fetch(80, "v6-optimized", SERVER6)
    packets = cap.stop()
    b = lab.wait_ended("branch", 80, start_b)
    d = lab.wait_ended("dc", 80, start_d)
    check("IPv6 one-arm: branch optimized with the dc, the server listed bracketed",
          b and b["peer"] == IDS["dc"] and b["server"] == f"[{SERVER6}]:80"
          and not any("pass-through" in n for n in b["notes"]), b)
    check("IPv6 one-arm: dc optimized with the branch, the client's IPv6 address kept and bracketed",
          d and d["peer"] == IDS["branch"] and d["client"].startswith(f"[{CLIENT6}]:"), d)
    check("IPv6 one-arm: the dc names the branch at the branch box's own IPv6 address",
          d and d["peer_address"].startswith(f"[{BRANCH_BOX6}]:"), d and d["peer_address"])
    check("IPv6 one-arm: the server saw the client's IPv6 address",
          seen_from(server6_log, "v6-optimized") == CLIENT6, seen_from(server6_log, "v6-optimized"))
    syn = [p for p in packets if p["tcp.dstport"] == "80" and is_syn(p, False) and f"client {CLIENT6}" in p["_ws.col.Info"]]
    print("  tshark IPv6 SYN:", syn[0]["_ws.col.Info"] if syn else None)
    check("tshark on the WAN: the IPv6 SYN carries option 0x21, the branch's id and the client's IPv6 address",
          syn and syn[0]["wanopt.disc.device_id"] == IDS["branch"] and syn[0]["wanopt.disc.client6"] == CLIENT6
          and "[wanopt offer" in syn[0]["_ws.col.Info"], syn[:1])
    answer = [p for p in packets if syn and p["tcp.srcport"] == "80" and is_syn(p, True)
              and p["tcp.dstport"] == syn[0]["tcp.srcport"]]
    check("tshark on the WAN: the SYN-ACK to it carries the dc's answer",
          answer and answer[0]["wanopt.disc.device_id"] == IDS["dc"] and "[wanopt answer" in answer[0]["_ws.col.Info"],
          answer[:1])
    start_b = lab.last_id("branch")
    fetch(8082, "v6-rule-pass-through", SERVER6)
    b = lab.wait_ended("branch", 8082, start_b)
    check("IPv6 one-arm: the port rule's pass-through applies to IPv6 too, the server saw the client",
          b and any("pass-through" in n for n in b["notes"])
          and seen_from(server6_log, "v6-rule-pass-through") == CLIENT6, b)


def run_lab(work, origin, digest):
    lab = OneArmLab(f"oa{os.getpid() % 100000}", work)
    server_log = os.path.join(work, f"{lab.prefix}-http.log")
    server6_log = os.path.join(work, f"{lab.prefix}-http6.log")
    try:
        r = subprocess.run([NETLAB, "--prefix", lab.prefix, "up", "--one-arm", "--middle"], env=lab.env,
                           capture_output=True, text=True, timeout=60)
        check("netlab up --one-arm --middle: refused, nothing made",
              r.returncode != 0 and "do not go together" in r.stderr
              and not os.path.exists(f"/run/wanopt-lab-{lab.prefix}"), r.stderr)
        lab.up()
        # ICMP is not policy-routed: only the two routers are on its way (ttl 62).
        r = lab.run("client", "ping", "-c", "1", "-W", "2", SERVER)
        check("one-arm lab: client -> server ping crosses the two routers only (ttl=62)", "ttl=62" in r.stdout,
              r.stdout + r.stderr)
        with open(server_log, "w") as log:
            start_http_origin(lab, origin, PORTS, SERVER, stderr=log)
        with open(server6_log, "w") as log:
            start_http_origin(lab, origin, PORTS, SERVER6, stderr=log)
        lab.start_box("branch")
        lab.start_box("dc")

        def fetch(port, tag, server=SERVER):
            host = f"[{server}]" if ":" in server else server
            r = lab.curl(f"http://{host}:{port}/file.bin?{tag}")
            ok = r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == digest
            check(f"fetch {tag} (port {port}): curl succeeds, SHA-256 verified", ok,
                  f"rc={r.returncode} {r.stderr[-300:]!r}")
            return ok

        # 1 and 2: optimized, the first one captured on the WAN.
        cap = Capture(lab, lab.wan_node(), "wan0", "198.18.0.2", DISSECTOR)
        fetch(80, "optimized-1")
        packets = cap.stop()
        b = lab.wait_ended("branch", 80, 0)
        d = lab.wait_ended("dc", 80, 0)
        check("one-arm: branch optimized, its peer is the dc",
              b and b["peer"] == IDS["dc"] and b["state"] == "closed"
              and not any("pass-through" in n for n in b["notes"]), b)
        check("one-arm: dc optimized, its peer is the branch, the client's address kept",
              d and d["peer"] == IDS["branch"] and d["client"].startswith(CLIENT + ":"), d)
        # The inner channel comes from the client's address: the hello names the box.
        peers = json.loads(lab.api("dc", "/api/peers"))["peers"]
        branch_peer = next((p for p in peers if p["id"] == IDS["branch"]), None)
        check("one-arm: the dc lists the branch at the branch box's own address, not the client's",
              d and d["peer_address"].startswith(BRANCH_BOX + ":") and branch_peer
              and branch_peer["address"].startswith(BRANCH_BOX + ":"), (d, branch_peer))
        check("one-arm: TLS 1.3 inner channel", b and any("TLS 1.3" in n for n in b["notes"]), b)
        check("one-arm: the server saw the client's address on the optimized fetch",
              seen_from(server_log, "optimized-1") == CLIENT, seen_from(server_log, "optimized-1"))
        syn = [p for p in packets if p["tcp.dstport"] == "80" and is_syn(p, False)]
        synack = [p for p in packets if p["tcp.srcport"] == "80" and is_syn(p, True)]
        print("  tshark SYN:    ", syn[0]["_ws.col.Info"] if syn else None)
        print("  tshark SYN-ACK:", synack[0]["_ws.col.Info"] if synack else None)
        check("tshark on the WAN: option 0x21 on the SYN, the branch's id and the client's address",
              syn and syn[0]["wanopt.disc.device_id"] == IDS["branch"] and syn[0]["wanopt.disc.client"] == CLIENT
              and "[wanopt offer" in syn[0]["_ws.col.Info"], syn[:1])
        check("tshark on the WAN: option 0x21 on the SYN-ACK, the dc's answer",
              synack and synack[0]["wanopt.disc.device_id"] == IDS["dc"] and "[wanopt answer" in synack[0]["_ws.col.Info"],
              synack[:1])

        # 3. Pass-through on the branch by rule, between optimized fetches.
        start = lab.last_id("branch")
        fetch(8082, "rule-pass-through")
        b = lab.wait_ended("branch", 8082, start)
        check("rule pass-through: the branch names the rule",
              b and any("pass-through" in n for n in b["notes"]), b)
        start = lab.last_id("branch")
        fetch(80, "optimized-2")
        b = lab.wait_ended("branch", 80, start)
        check("second optimized fetch: optimized with the dc", b and b["peer"] == IDS["dc"], b)
        ipv6_through_one_arm(lab, fetch, server6_log)
        lab.wait_ended("dc", 8082, 0)
        accounting(lab, "dc")

        # The dc box stopped: the branch relays as pass-through ("no peer").
        lab.stop("dc")
        start = lab.last_id("branch")
        fetch(80, "no-peer")
        b = lab.wait_ended("branch", 80, start)
        # (The branch saw the dc answer for this server moments ago: "peer gone".)
        check("dc stopped: pass-through over the probe connection, bytes relayed",
              b and not b["peer"] and any(n.startswith("pass-through:") for n in b["notes"]) and b["lan_out"] > 0, b)
        start = lab.last_id("branch")
        lab.start_box("dc")
        fetch(80, "optimized-3")
        b = lab.wait_ended("branch", 80, start)
        check("dc back: optimized again", b and b["peer"] == IDS["dc"], b)

        # 4. The branch's surfaces with optimized and pass-through traffic mixed.
        summary, conns, passed, text = accounting(lab, "branch")
        check("branch: the mix has optimized and pass-through connections",
              passed and any(c["peer"] == IDS["dc"] for c in conns), conns)
        check("branch: a pass-through connection that moved bytes counts them on the WAN too",
              any(c["wan_in"] + c["wan_out"] > 0 for c in passed), passed)
        print("  wanopt show summary (branch, optimized and pass-through mixed):")
        print("".join(f"    {l}\n" for l in text.splitlines()), end="")
        r = lab.run("branch", WANOPT, "show", "connections", "--api", API, check_rc=True)
        print("  wanopt show connections (branch):")
        print("".join(f"    {l}\n" for l in r.stdout.splitlines()), end="")
        accounting(lab, "dc")

        # Transparency: the server saw the client in every case.
        for tag in ("optimized-1", "rule-pass-through", "optimized-2", "no-peer", "optimized-3"):
            check(f"the server saw fetch {tag} from the client's address",
                  seen_from(server_log, tag) == CLIENT, seen_from(server_log, tag))

        # 3b. Without the branch router's return policy the replies to the client's
        # address go round the branch box: it falls back to its own address.
        return_policy = ("iif", "wan0", "ipproto", "tcp", "to", "198.18.1.0/24", "lookup", "200")
        lab.run("branch-router", "ip", "rule", "del", *return_policy, check_rc=True)
        lab.stop("dc")
        # The first time could be a lost SYN (suspected), the second in a row is not.
        for tag, says in (("asymmetric", "asymmetric routing, or a lost SYN (remembered if it happens again)"),
                          ("asymmetric-again", "asymmetric routing: the server's replies")):
            start = lab.last_id("branch")
            fetch(80, tag)
            b = lab.wait_ended("branch", 80, start)
            check(f"no return policy, fetch {tag}: pass-through from the branch box's own address, noted '{says}'",
                  b and not b["peer"] and any(says in n for n in b["notes"]), b)
            check(f"no return policy, fetch {tag}: the server saw the branch box's address (the documented fallback)",
                  seen_from(server_log, tag) == BRANCH_BOX, seen_from(server_log, tag))
        lab.run("branch-router", "ip", "rule", "add", *return_policy, check_rc=True)
        # The same over IPv6, its own return policy removed.
        return_policy6 = ("iif", "wan0", "ipproto", "tcp", "to", "2001:2:0:1::/64", "lookup", "200")
        lab.run("branch-router", "ip", "-6", "rule", "del", *return_policy6, check_rc=True)
        start = lab.last_id("branch")
        fetch(80, "v6-asymmetric", SERVER6)
        b = lab.wait_ended("branch", 80, start)
        check("IPv6, no return policy: pass-through from the branch box's own IPv6 address, noted 'asymmetric "
              "routing, or a lost SYN' (the IPv6 server's first time)",
              b and not b["peer"] and any("asymmetric routing, or a lost SYN" in n for n in b["notes"]), b)
        check("IPv6, no return policy: the server saw the branch box's IPv6 address",
              seen_from(server6_log, "v6-asymmetric") == BRANCH_BOX6, seen_from(server6_log, "v6-asymmetric"))
        lab.run("branch-router", "ip", "-6", "rule", "add", *return_policy6, check_rc=True)
    except Exception:
        lab.print_logs()
        raise
    finally:
        lab.down()
    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if n.startswith(lab.prefix + "-")]
    check("netlab down removes the six namespaces and the state of the one-arm lab",
          not left and not os.path.exists(f"/run/wanopt-lab-{lab.prefix}"), left)
    if check.failed:
        lab.print_logs()


def main():
    with tempfile.TemporaryDirectory(prefix="wanopt-onearm-") as work:
        subprocess.run([MAKE_PKI, os.path.join(work, "pki")], check=True, capture_output=True)
        origin, digest = make_origin(work)
        try:
            run_lab(work, origin, digest)
        except Exception as e:  # a broken lab is a failure, never a skip
            check("one-arm lab ran to the end", False, repr(e))
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
