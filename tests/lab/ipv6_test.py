#!/usr/bin/python3
"""Transparent interception and auto-discovery over IPv6, beside IPv4 on the same boxes.

Usage: ipv6_test.py WANOPT NETLAB DELAYLINE
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure.

The dual-stack lab (`netlab up --ipv6 --intercept`: client 2001:2:0:1::10 and
198.18.1.10 -- branch == WAN, 10 ms == dc -- server 2001:2:0:2::10 and 198.18.2.10),
one `wanopt run` per box with the rules of deploy/intercept for both families. Real
peers only: curl in the client namespace, python3's http.server in the server
namespace (one per family), tshark on the WAN link with the shipped dissector.
  1. curl -6 fetches a 2 MiB file: bytes verified; both boxes show the connection
     optimized, each naming the other's device id, TLS 1.3; the dc lists the client
     as [2001:2:0:1::10]:port; the server saw the client's IPv6 address.
  2. tshark: the probe SYN carries option 0x21 with the client's IPv6 address (28
     bytes: the SYN's timestamps made room for it), an IPv6 SYN-ACK the dc's answer.
  3. The same file over IPv4 through the same boxes at the same time: optimized too.
  4. Rules over IPv6: pass-through (routed, not proxied), fixed-target to a peer at
     an IPv6 address (configured bracketed; an IPv4 connection through it too; the
     server sees the dc's own address, as over any explicit channel),
     deny (refused), a closed port (refused, as without the boxes).
  5. The hard cases over IPv6, each fetch verified: option 0x21 stripped in the WAN
     both ways (ip6tables TCPOPTSTRIP): pass-through naming the stripped option and
     the dc, the server saw the client; asymmetric routing (the server's replies to
     the client's address dropped before the dc): the dc connects from its own IPv6
     address, says why, and the server saw that address.
  6. The dc box stopped: curl -6 still succeeds, pass-through ("peer gone": it
     answered for this server a moment ago).
  7. A fake dc (certificate from another CA) over IPv6: pass-through "failed
     authentication", remembered for the next connection; it served nothing
     optimized. Then (branch restarted, so it forgets) a server dropping IPv6 SYNs
     that carry option 33: two SYNs with the option (ip6tables counts them), then
     retried without; one with the option the second time in a row, remembered;
     passed by at once the third, none with the option; the server saw the client
     every time.
Lab 2, three boxes (`netlab up --middle --ipv6 --intercept`: client -- branch --
mid == WAN == dc -- server), IPv6 and IPv4 fetches at the same time:
  8. Both verified; only the outer two optimize: the branch pairs with the dc, the
     dc with the branch (the client bracketed), mid relays with "middle box" naming
     both and lists the client bracketed too.
  9. tshark between the branch and mid: the IPv6 SYN carries the branch's offer
     and the client's IPv6 address, its SYN-ACK the dc's answer marked relayed (mid
     passed it on).
Every lab and process is removed in a `finally`.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labkit import Capture, Checks, Lab, make_origin, seen_from  # noqa: E402

WANOPT = os.path.abspath(sys.argv[1])
NETLAB = os.path.abspath(sys.argv[2])
DELAYLINE = os.path.abspath(sys.argv[3])
REPO = os.path.abspath(os.path.join(os.path.dirname(NETLAB), "..", ".."))
DISSECTOR = os.path.join(REPO, "deploy", "wireshark", "wanopt.lua")
MAKE_PKI = os.path.join(REPO, "tests", "lab", "make-pki")
SERVER6, CLIENT6, SERVER4 = "2001:2:0:2::10", "2001:2:0:1::10", "198.18.2.10"
IDS = {"branch": "02:00:00:00:0b:06", "dc": "02:00:00:00:0d:06", "mid": "02:00:00:00:0e:06",
       "fake": "02:00:00:00:0f:06"}
# A WAN middlebox stripping TCP option 33 both ways, on the branch's wan0 (ip6tables, mangle).
STRIP6 = [("POSTROUTING", "-o", "wan0", "-p", "tcp", "-j", "TCPOPTSTRIP", "--strip-options", "33"),
          ("PREROUTING", "-i", "wan0", "-p", "tcp", "-j", "TCPOPTSTRIP", "--strip-options", "33")]
DROP_OPTION6 = ("INPUT", "-p", "tcp", "--syn", "-m", "tcp", "--tcp-option", "33",
                "-m", "comment", "--comment", "option-dropper", "-j", "DROP")
RULES = """
[intercept]
[[intercept.rule]]
ports = "8081"
action = "deny"
[[intercept.rule]]
destination = "2001:2:0:2::/64"
ports = "8082"
action = "pass-through"
[[intercept.rule]]
ports = "8083"
action = "fixed-target"
peer = "[2001:2::2]:7800"
"""
DC_LISTEN = '[datacenter]\nlisten = "[2001:2::2]:7800"\n'  # the fixed-target rule's peer
PORTS = (80, 8082, 8083)  # the origin's ports in each family (8081: denied by a rule)

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)

check = Checks()


def start_origins(lab, root, log):
    """http.server on each port in each family; returns once every one answers."""
    for family, address in (("4", SERVER4), ("6", SERVER6)):
        for port in PORTS:
            lab.spawn(f"http{family}-{port}", "server", "/usr/bin/python3", "-m", "http.server", str(port), "--bind",
                      address, "--directory", root, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    for url in [f"http://{SERVER4}:{p}/" for p in PORTS] + [f"http://[{SERVER6}]:{p}/" for p in PORTS]:
        while lab.run("server", "curl", "-s", "-o", "/dev/null", "-m", "1", url).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"origin did not start: {url}")
            time.sleep(0.05)  # polling a condition with a deadline


def both_families(lab, iface, tag6, tag4):
    """curl -6 and curl of file.bin at the same time, tshark on the branch's `iface`;
    returns (the IPv6 result, the IPv4 one or None if it did not end, the packets)."""
    cap = Capture(lab, "branch", iface, "198.18.0.2", DISSECTOR, ports=(80,))
    results = {}
    v4 = threading.Thread(target=lambda: results.update(v4=lab.curl(f"http://{SERVER4}/file.bin?{tag4}")))
    v4.start()
    r6 = lab.curl(f"http://[{SERVER6}]/file.bin?{tag6}")
    v4.join(90)
    return r6, results.get("v4"), cap.stop()


def fetched(r, digest):
    return r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == digest


def lab_one(work, origin, digest):
    lab = Lab(f"w6{os.getpid() % 100000}", work, WANOPT, NETLAB, DELAYLINE, ipv6=True)
    server_log = os.path.join(work, f"{lab.prefix}-http.log")
    try:
        lab.up()
        with open(server_log, "w") as log:
            start_origins(lab, origin, log)
        for box in ("branch", "dc"):
            lab.start_box(box, lab.box_config(box, IDS[box], box, extra=RULES + (DC_LISTEN if box == "dc" else "")))

        # 1-3: IPv6 and IPv4 fetches at the same time, the WAN captured.
        r6, r4, packets = both_families(lab, "wan0", "v6-optimized", "v4")
        check("IPv6: curl -6 succeeds, bytes verified", fetched(r6, digest), f"rc={r6.returncode} {r6.stderr[-300:]!r}")
        check("IPv4 at the same time through the same boxes: bytes verified", r4 and fetched(r4, digest),
              r4 and r4.stderr[-300:])
        ended = {box: [c for c in lab.connections(box) if c.get("ended") and c["server"].endswith(":80")]
                 for box in ("branch", "dc")}
        b6 = next((c for c in ended["branch"] if c["server"] == f"[{SERVER6}]:80"), None)
        d6 = next((c for c in ended["dc"] if c["server"] == f"[{SERVER6}]:80"), None)
        b4 = next((c for c in ended["branch"] if c["server"] == f"{SERVER4}:80"), None)
        check("IPv6, branch: optimized with the dc's id, TLS 1.3, the WAN carried less than the LAN",
              b6 and b6["peer"] == IDS["dc"] and any("TLS 1.3" in n for n in b6["notes"]) and
              b6["wan_in"] < b6["lan_out"] and not any("pass-through" in n for n in b6["notes"]), b6)
        check("IPv6, dc: optimized with the branch's id, the client listed bracketed",
              d6 and d6["peer"] == IDS["branch"] and d6["client"].startswith(f"[{CLIENT6}]:"), d6)
        check("IPv6, the branch lists the dc box at its own IPv6 address",
              b6 and b6["peer_address"].startswith("[2001:2::2]:"), b6 and b6["peer_address"])
        check("IPv4 beside it: optimized with the dc's id", b4 and b4["peer"] == IDS["dc"], b4)
        check("IPv6: the server saw the client's own address", seen_from(server_log, "v6-optimized") == CLIENT6,
              seen_from(server_log, "v6-optimized"))
        syn = [p for p in packets if p["tcp.dstport"] == "80" and p["tcp.flags.syn"] in ("1", "True") and
               p["tcp.flags.ack"] in ("0", "False") and f"client {CLIENT6}" in p["_ws.col.Info"]]
        synack = [p for p in packets if p["tcp.srcport"] == "80" and p["tcp.flags.syn"] in ("1", "True") and
                  p["tcp.flags.ack"] in ("1", "True") and "[wanopt answer" in p["_ws.col.Info"]]
        print("  tshark SYN:    ", syn[0]["_ws.col.Info"] if syn else None, syn[0]["tcp.option_kind"] if syn else "")
        print("  tshark SYN-ACK:", synack[0]["_ws.col.Info"] if synack else None)
        check("tshark: the IPv6 SYN carries option 0x21, the branch's id and the client's IPv6 address",
              syn and syn[0]["wanopt.disc.device_id"] == IDS["branch"] and "[wanopt offer F" in syn[0]["_ws.col.Info"]
              and syn[0]["wanopt.disc.client6"] == CLIENT6,
              syn[:1])
        # (tshark lists the options it decodes itself: ours goes to the dissector.)
        check("tshark: that SYN gave up its timestamps for it (MSS, SACK permitted, window scale; no kind 8)",
              syn and syn[0]["tcp.option_kind"].split(",")[:4] == ["2", "4", "1", "3"] and
              "8" not in syn[0]["tcp.option_kind"].split(","), syn and syn[0]["tcp.option_kind"])
        answer = [p for p in synack if syn and p["tcp.dstport"] == syn[0]["tcp.srcport"]]
        check("tshark: the SYN-ACK to that IPv6 SYN carries the dc's answer, without timestamps either",
              answer and answer[0]["wanopt.disc.device_id"] == IDS["dc"] and
              "8" not in answer[0]["tcp.option_kind"].split(","), answer[:1] or synack[:2])

        # 4. Rules over IPv6.
        start = lab.last_id("branch")
        r = lab.curl(f"http://[{SERVER6}]:8082/file.bin?v6-rule-pass-through")
        b = lab.wait_ended("branch", 8082, start)
        check("IPv6 rule pass-through (a destination /64): routed, not proxied, the server saw the client",
              fetched(r, digest) and b and any("intercept.rule[1]: pass-through" in n for n in b["notes"]) and
              b["lan_in"] == 0 and seen_from(server_log, "v6-rule-pass-through") == CLIENT6, b)
        r = lab.curl(f"http://{SERVER4}:8082/file.bin?v4-not-that-rule")
        b = lab.wait_ended("branch", 8082, start)
        check("IPv4 to the same port: the IPv6 subnet's rule does not apply, optimized",
              fetched(r, digest) and b and b["peer"] == IDS["dc"], b)
        # A fixed-target peer at an IPv6 address, for both families' connections.
        for family, url in (("IPv6", f"http://[{SERVER6}]:8083/file.bin?v6-fixed"),
                            ("IPv4", f"http://{SERVER4}:8083/file.bin?v4-over-v6-fixed")):
            start = lab.last_id("branch")
            r = lab.curl(url)
            b = lab.wait_ended("branch", 8083, start)
            # An explicit channel: the dc connects to the server from its own address.
            dc_address = "2001:2:0:2::1" if family == "IPv6" else "198.18.2.1"
            seen = seen_from(server_log, url.rsplit("?", 1)[1])
            check(f"fixed-target peer [2001:2::2]:7800, an {family} connection: optimized through it, TLS 1.3, "
                  "the server saw the dc's own address",
                  fetched(r, digest) and b and b["peer"] == IDS["dc"] and b["peer_address"] == "[2001:2::2]:7800" and
                  any("fixed-target" in n for n in b["notes"]) and any("TLS 1.3" in n for n in b["notes"]) and
                  seen == dc_address, (b, seen))
        outcome = lab.connect_outcome(SERVER6, 8081)
        check("IPv6 rule deny: the client's connect() is refused", outcome == "ConnectionRefusedError", outcome)
        outcome = lab.connect_outcome(SERVER6, 81)
        check("IPv6 closed port: the client's connect() is refused, as without the boxes",
              outcome == "ConnectionRefusedError", outcome)

        # 5. The hard cases over IPv6.
        hard_cases(lab, server_log, digest)

        # 6. No box on the server's side.
        lab.stop("dc")
        start = lab.last_id("branch")
        r = lab.curl(f"http://[{SERVER6}]/file.bin?v6-no-peer")
        b = lab.wait_ended("branch", 80, start)
        check("IPv6, dc stopped: curl still succeeds, pass-through 'peer gone' (it answered a moment ago), "
              "the server saw the client",
              fetched(r, digest) and b and any("peer gone" in n and IDS["dc"] in n for n in b["notes"]) and
              seen_from(server_log, "v6-no-peer") == CLIENT6, b)

        # 7. A fake dc, then a server that drops SYNs with options.
        fake_peer_and_option_dropper(lab, server_log, digest)
    finally:
        if check.failed:
            lab.print_logs()
        lab.down()


def fetch6(lab, tag, port=80):
    """curl -6 of file.bin?tag; returns (the result, the branch's entry for it)."""
    start = lab.last_id("branch")
    r = lab.curl(f"http://[{SERVER6}]:{port}/file.bin?{tag}")
    return r, lab.wait_ended("branch", port, start)


def hard_cases(lab, server_log, digest):
    for rule in STRIP6:
        lab.run("branch", "ip6tables", "-t", "mangle", "-I", *rule, check_rc=True)
    r, b = fetch6(lab, "v6-option-stripped")
    for rule in STRIP6:
        lab.run("branch", "ip6tables", "-t", "mangle", "-D", *rule, check_rc=True)
    check("IPv6, option stripped in the WAN: curl succeeds, pass-through naming the stripped option and the dc, "
          "the server saw the client",
          fetched(r, digest) and b and any("option stripped" in n and IDS["dc"] in n for n in b["notes"]) and
          seen_from(server_log, "v6-option-stripped") == CLIENT6, b)

    # The server's replies to the client's address do not come back through the dc.
    asym = ("PREROUTING", "-s", SERVER6, "-d", CLIENT6, "-p", "tcp", "-j", "DROP")
    lab.run("dc", "ip6tables", "-t", "raw", "-I", *asym, check_rc=True)
    start = lab.last_id("dc")
    r, _ = fetch6(lab, "v6-asymmetric")
    d = lab.wait_ended("dc", 80, start)
    lab.run("dc", "ip6tables", "-t", "raw", "-D", *asym, check_rc=True)
    check("IPv6, asymmetric routing: curl succeeds, the dc connects from its own IPv6 address and says why",
          fetched(r, digest) and d and
          any("asymmetric routing, or a lost SYN (remembered if it happens again)" in n for n in d["notes"]) and
          seen_from(server_log, "v6-asymmetric") == "2001:2:0:2::1", (d, seen_from(server_log, "v6-asymmetric")))


def fake_peer_and_option_dropper(lab, server_log, digest):
    lab.start_box("fake", lab.box_config("fake", IDS["fake"], "rogue", ca="rogue-ca", extra=RULES), node="dc")
    r, b = fetch6(lab, "v6-fake")
    check("IPv6, fake dc: curl succeeds, pass-through 'failed authentication'",
          fetched(r, digest) and b and not b["peer"] and any("failed authentication" in n for n in b["notes"]), b)
    r, b = fetch6(lab, "v6-fake-again")
    check("IPv6, fake dc, next connection: passed by at once, the failure remembered",
          fetched(r, digest) and b and any("failed authentication" in n and "remembered" in n for n in b["notes"]), b)
    served = [c for c in lab.connections("dc") if c["peer"] or c["state"] == "optimized"]  # the fake runs in dc
    check("IPv6, fake dc: served no optimized connection", not served, served)
    lab.stop("fake")
    lab.stop("branch")  # what it learned lives in memory: a restart forgets it
    lab.start_box("branch", lab.box_config("branch", IDS["branch"], "branch", extra=RULES))

    lab.run("server", "ip6tables", "-I", *DROP_OPTION6, check_rc=True)
    def dropped():  # IPv6 SYNs with option 33 the server has dropped so far
        return lab.rule_packets("server", "filter", "INPUT", "option-dropper", tool="ip6tables")
    r, b = fetch6(lab, "v6-option-dropped")
    first = dropped()
    check("IPv6, option-dropping server: curl succeeds (retried without), two SYNs with the option dropped, "
          "not remembered after one",
          first == 2 and fetched(r, digest) and b and
          any("retransmission without it" in n and "remembered if it happens again" in n for n in b["notes"]),
          (first, b))
    r, b = fetch6(lab, "v6-option-dropped-twice")
    second = dropped()
    check("IPv6, option-dropping server, twice in a row: one SYN with the option (suspected), remembered",
          second == first + 1 and fetched(r, digest) and b and
          any("twice in a row: remembered for" in n for n in b["notes"]), (second, b))
    r, b = fetch6(lab, "v6-option-dropped-again")
    check("IPv6, option-dropping server, next connection: passed by at once as remembered, no SYN with the option",
          dropped() == second and fetched(r, digest) and b and
          any("drops SYNs carrying TCP options" in n for n in b["notes"]), b)
    lab.run("server", "ip6tables", "-D", *DROP_OPTION6, check_rc=True)
    for tag in ("v6-fake", "v6-fake-again", "v6-option-dropped", "v6-option-dropped-twice", "v6-option-dropped-again"):
        check(f"IPv6: the server saw fetch {tag} from the client's address", seen_from(server_log, tag) == CLIENT6,
              seen_from(server_log, tag))


def lab_two(work, origin, digest):
    lab = Lab(f"w7{os.getpid() % 100000}", work, WANOPT, NETLAB, DELAYLINE, middle=True, ipv6=True)
    try:
        lab.up()
        with open(os.path.join(work, f"{lab.prefix}-http.log"), "w") as log:
            start_origins(lab, origin, log)
        for box in ("branch", "mid", "dc"):
            lab.start_box(box, lab.box_config(box, IDS[box], box, extra=RULES))
        r6, r4, packets = both_families(lab, "mid0", "three-v6", "three-v4")
        check("three boxes, IPv6: curl -6 succeeds, bytes verified", fetched(r6, digest),
              f"rc={r6.returncode} {r6.stderr[-300:]!r}")
        check("three boxes, IPv4 at the same time: bytes verified", r4 and fetched(r4, digest), r4 and r4.stderr[-300:])
        six = {}
        for box in ("branch", "mid", "dc"):
            ended = [c for c in lab.connections(box) if c.get("ended") and c["server"] == f"[{SERVER6}]:80"]
            six[box] = ended[0] if len(ended) == 1 else ended
        b, m, d = six["branch"], six["mid"], six["dc"]
        check("three boxes, IPv6: the branch pairs with the dc", isinstance(b, dict) and b["peer"] == IDS["dc"], b)
        check("three boxes, IPv6: the dc pairs with the branch, the client bracketed",
              isinstance(d, dict) and d["peer"] == IDS["branch"] and d["client"].startswith(f"[{CLIENT6}]:"), d)
        check("three boxes, IPv6: mid relays ('middle box' naming both), the client bracketed",
              isinstance(m, dict) and not m["peer"] and m["client"].startswith(f"[{CLIENT6}]:") and
              any("middle box" in n and IDS["branch"] in n and IDS["dc"] in n for n in m["notes"]), m)
        four = [c for c in lab.connections("mid") if c.get("ended") and c["server"] == f"{SERVER4}:80"]
        check("three boxes, IPv4 beside it: mid relays that one too",
              len(four) == 1 and any("middle box" in n for n in four[0]["notes"]), four)
        syn = [p for p in packets if p["tcp.dstport"] == "80" and p["tcp.flags.syn"] in ("1", "True") and
               p["tcp.flags.ack"] in ("0", "False") and f"client {CLIENT6}" in p["_ws.col.Info"]]
        check("tshark branch -> mid: the IPv6 SYN carries the branch's offer and the client's IPv6 address",
              syn and syn[0]["wanopt.disc.device_id"] == IDS["branch"] and syn[0]["wanopt.disc.client6"] == CLIENT6,
              syn[:1])
        answer = [p for p in packets if syn and p["tcp.srcport"] == "80" and p["tcp.dstport"] == syn[0]["tcp.srcport"]
                  and p["tcp.flags.syn"] in ("1", "True") and p["tcp.flags.ack"] in ("1", "True")]
        print("  tshark SYN-ACK (mid -> branch):", answer[0]["_ws.col.Info"] if answer else None)
        check("tshark mid -> branch: that SYN-ACK carries the dc's answer, marked relayed",
              answer and answer[0]["wanopt.disc.device_id"] == IDS["dc"] and "relayed" in answer[0]["_ws.col.Info"],
              answer[:1])
    finally:
        if check.failed:
            lab.print_logs()
        lab.down()


def main():
    with tempfile.TemporaryDirectory(prefix="wanopt-ipv6-") as work:
        subprocess.run([MAKE_PKI, os.path.join(work, "pki")], check=True, capture_output=True)
        origin, digest = make_origin(work)
        for name, fn in (("lab 1", lab_one), ("lab 2", lab_two)):
            try:
                fn(work, origin, digest)
            except Exception as e:  # a broken lab is a failure, never a skip
                check(f"{name} ran to the end", False, repr(e))
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
