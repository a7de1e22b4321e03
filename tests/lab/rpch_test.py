#!/usr/bin/python3
"""The rpch module (RPC over HTTP v2, MAPI over HTTP) against real peers, in the
namespace lab.

Usage: rpch_test.py WANOPT NETLAB DELAYLINE
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure.

The server namespace runs Samba's AD DC (samba_peer) and the test RPC proxy
(rpch_proxy.py on 198.18.2.10:80, bridging to Samba's endpoint mapper and SAMR
ports, with an echo interface of its own); the proxy runs with --keep-partner, so a
channel it loses never makes it close the other one: what ends that is the boxes.
The clients (rpch_clients.py) run in the client namespace: python3-impacket's rpch
transport, Samba's own ncacn_http client and a scripted client. A branch and a
datacenter box intercept between them, both running every module.
  1. impacket: ept_map for SAMR through the proxy and the pair gives the real port;
     SamrEnumerateDomainsInSamServer through them answers. On both boxes the two
     channels of that virtual connection are two connections, optimized, whose lines
     name the same virtual connection (the proxy's cookie) and both channels, bound
     SAMR; `wanopt show connections` lists them.
     SAMR sealed (packet privacy) answers too, noted as encrypted.
  2. Samba's ncacn_http client (HTTP/1.0, Basic): mgmt inq_if_ids through the pair.
  3. The scripted client echoes 4 MiB through the echo interface, then again in a
     new virtual connection: identical both times; the second one's channels reduce
     by 90 % or more (its IN and OUT channels together, on each box). A chunked IN
     body and HTTP/1.0 channels echo and pair too.
  4. Recycling mid-session (IN, then OUT): the calls after it are identical, the
     branch names the recycled channels, /metrics counts them.
  5. One channel killed (the client resets its IN channel): the box resets the OUT
     channel (the client sees a reset), on the branch and the dc.
  6. A lone OUT channel (CONN/A1, no IN channel ever): reset by the box after the
     pairing timeout.
  7. Hostile HTTP and RTS through the pair: every such connection ends; the boxes
     still serve (an echo after them is identical) and still run.
  8. MAPI over HTTP (a small server on port 8080, also an RPC proxy port in the
     config): request types reported, a repeated 1 MiB body reduced, PENDING
     streamed.
  9. tshark on the server's LAN reads RTS PDUs (dcerpc.pkt_type == 20) that crossed
     the pair, CONN/A1 among them.
 10. Over IPv6 (the lab is dual-stack; a second proxy on [2001:2:0:2::10]:80): the
     scripted client's 4 MiB echo twice, identical; on the branch both channels of
     the second virtual connection optimized with the dc, named one virtual
     connection, the server listed bracketed, reduced by 90 % or more.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from labkit import Capture, Checks, Lab  # noqa: E402

WANOPT, NETLAB, DELAYLINE = (os.path.abspath(a) for a in sys.argv[1:4])
SERVER = "198.18.2.10"
CLIENT_IP = "198.18.1.10"
PROXY = f"{SERVER}:80"
PROXY6 = "[2001:2:0:2::10]:80"
NAME = "WSDC"
IDS = {"branch": "02:00:00:00:0b:01", "dc": "02:00:00:00:0d:01"}
PY = "/usr/bin/python3"

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)

import rpch_clients as rc  # noqa: E402
import samba_peer  # noqa: E402

check = Checks(detail_limit=3000)

MODULE_CONFIG = """
[intercept]
[modules.rpch]
ports = ["80", "8080"]
pairing_timeout_ms = 2000
"""

# A MAPI over HTTP server, enough for the module: answers every POST with its body,
# a NotificationWait with a chunked PENDING then DONE (MS-OXCMAPIHTTP's keep-alive).
MAPI_SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("X-ResponseCode", "0")
        self.send_header("Content-Type", "application/mapi-http")
        if self.headers.get("X-RequestType") == "NotificationWait":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"PENDING\r\n", b"PENDING\r\n", b"DONE\r\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
s = http.server.ThreadingHTTPServer((sys.argv[1], 8080), H)
print("READY", flush=True)
s.serve_forever()
"""

# A lone OUT channel: RPC_OUT_DATA and CONN/A1, then how the connection ends.
LONE_OUT = r"""
import json, socket, sys, time
sys.path.insert(0, sys.argv[1])
import rpch_wire as w
s = socket.create_connection((sys.argv[2], 80), timeout=5)
s.sendall(b"RPC_OUT_DATA /rpc/rpcproxy.dll?WSDC:6001 HTTP/1.1\r\nHost: x\r\n"
          b"Authorization: Basic eDp5\r\nContent-Length: 76\r\n\r\n" + w.conn_a1(w.new_cookie(), w.new_cookie()))
t0, how = time.monotonic(), "open"
s.settimeout(1)
while time.monotonic() - t0 < 20:
    try:
        if not s.recv(65536):
            how = "eof"; break
    except socket.timeout:
        continue
    except ConnectionResetError:
        how = "reset"; break
print(json.dumps({"ended": how, "after_s": round(time.monotonic() - t0, 2)}))
"""


class RtsCapture(Capture):
    """labkit's Capture (ping-synchronised tshark), with DCE/RPC fields."""
    FIELDS = ["tcp.srcport", "tcp.dstport", "dcerpc.pkt_type", "tcp.payload", "_ws.col.Protocol", "_ws.col.Info"]


def vc_connections(lab, box, vc):
    """The connections on `box` whose notes name virtual connection `vc`."""
    return [c for c in lab.connections(box) if any(f"virtual connection {vc}" in n for n in c["notes"])]


def wait_for(what, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def channel_note(c):
    return next((n for n in c["notes"] if n.startswith("virtual connection")), "")


def reduction(c):
    lan, wan = c["lan_in"] + c["lan_out"], c["wan_in"] + c["wan_out"]
    return 1 - wan / lan if lan else 0


def ended_pair(lab, box, vc, since):
    """Both channels of virtual connection `vc` on `box` (ids above `since`) once both
    ended, and their LAN and WAN bytes together."""
    lines = wait_for(lambda: [c for c in vc_connections(lab, box, vc) if c["id"] > since]
                     if sum(1 for c in vc_connections(lab, box, vc) if c.get("ended")) == 2 else [])
    lan = sum(c["lan_in"] + c["lan_out"] for c in lines)
    wan = sum(c["wan_in"] + c["wan_out"] for c in lines)
    return lines, lan, wan


def ipv6_echo(lab, client):
    first = rc.call(client, {"op": "echo", "proxy": PROXY6, "server": NAME, "size": 4 << 20, "seed": 11})
    since = lab.last_id("branch")
    second = rc.call(client, {"op": "echo", "proxy": PROXY6, "server": NAME, "size": 4 << 20, "seed": 11})
    check("IPv6: 4 MiB echoed identically through the pair, twice",
          first["identical"] and second["identical"] and first["sha256"] == second["sha256"], (first, second))
    vc = second["vc"]
    lines, lan, wan = ended_pair(lab, "branch", vc, since)
    print(f"  IPv6: the second 4 MiB echo, virtual connection {vc}: LAN {lan} bytes, WAN {wan}")
    check("IPv6, branch: both channels of the virtual connection optimized with the dc, the server bracketed, "
          "reduced by 90 % or more",
          len(lines) == 2 and all(c["peer"] == IDS["dc"] and c["server"] == PROXY6 and c["application"] == "RPC-OA"
                                  for c in lines) and lan and 1 - wan / lan >= 0.90, lines)


def main():
    with tempfile.TemporaryDirectory(prefix="wanopt-rpch-") as work:
        subprocess.run([os.path.join(HERE, "make-pki"), os.path.join(work, "pki")], check=True, capture_output=True)
        lab = Lab(f"wr{os.getpid() % 100000}", work, WANOPT, NETLAB, DELAYLINE, ipv6=True)
        peer = None
        log = os.path.join(work, "proxy.log")
        client = lab.ns("client")
        try:
            lab.up()
            peer = samba_peer.start(lab.ns("server"), os.path.join(work, "samba"))
            rc.start_proxy(lab, log, listen=PROXY, backend=SERVER, extra=("--keep-partner",))
            rc.start_proxy(lab, os.path.join(work, "proxy6.log"), listen=PROXY6, backend=SERVER, name="rpch-proxy6")
            for box in ("branch", "dc"):
                lab.start_box(box, lab.box_config(box, IDS[box], box, "ca", MODULE_CONFIG))
            cap = RtsCapture(lab, "server", "eth0", CLIENT_IP, os.path.join(HERE, "../../deploy/wireshark/wanopt.lua"))

            # 1. impacket through the proxy and the pair.
            direct = samba_peer.ept_map(SERVER, samba_peer.SAMR_UUID, "1.0", ns=lab.ns("dc"))
            towers = rc.call(client, {"op": "impacket_ept_map", "proxy": PROXY, "server": NAME,
                                      "uuid": samba_peer.SAMR_UUID})
            check("impacket ept_map(SAMR) over RPC over HTTP through the pair: the real port",
                  direct and towers and towers[0][0] == direct[0][0], (towers, direct))
            start = {box: lab.last_id(box) for box in ("branch", "dc")}
            names = rc.call(client, {"op": "impacket_samr", "proxy": PROXY, "server": NAME, "port": direct[0][0]})
            check("impacket SamrEnumerateDomainsInSamServer over RPC over HTTP through the pair",
                  {n.upper() for n in names} == {"WANOPT", "BUILTIN"}, names)
            needles = ("paired", f"target={NAME}:{direct[0][0]}")
            rc.log_has(log, *needles)
            with open(log) as f:
                paired = next((line for line in f if all(n in line for n in needles)), None)
            vc = paired.split("vc=")[1].split()[0] if paired else None
            check("proxy: the SAMR virtual connection was paired", vc, paired)
            for box in ("branch", "dc"):
                lines = wait_for(lambda: [c for c in vc_connections(lab, box, vc) if c["id"] > start[box]
                                          and "bound: SAMR" in channel_note(c)] if vc else [])
                ins = [c for c in lines if any("IN channel (RPC_IN_DATA" in n for n in c["notes"])]
                outs = [c for c in lines if any("OUT channel (RPC_OUT_DATA" in n for n in c["notes"])]
                peer_id = IDS["dc" if box == "branch" else "branch"]
                check(f"{box}: the IN and OUT channels are one virtual connection ({vc}), both optimized, bound SAMR",
                      len(ins) == 1 and len(outs) == 1 and all(c["peer"] == peer_id and c["application"] == "RPC-OA"
                                                               for c in lines) and
                      f"IN #{ins[0]['id']}, OUT #{outs[0]['id']}" in channel_note(outs[0]), lines)
            show = lab.run("branch", WANOPT, "show", "connections", check_rc=True).stdout
            check("wanopt show connections lists RPC-OA lines", "RPC-OA" in show, show)

            # SAMR sealed (packet privacy): classified, and said to gain little.
            since = lab.last_id("branch")
            names = rc.call(client, {"op": "impacket_samr", "proxy": PROXY, "server": NAME, "port": direct[0][0],
                                     "auth_level": "privacy"})
            sealed = wait_for(lambda: [c for c in lab.connections("branch") if c["id"] > since and
                                       any("packet privacy inside RPC over HTTP" in n for n in c["notes"])])
            check("impacket SAMR with packet privacy through the pair: answered, noted as encrypted (DRE gains little)",
                  {n.upper() for n in names} == {"WANOPT", "BUILTIN"} and sealed, (names, sealed))

            # 2. Samba's own client.
            res = rc.call(client, {"op": "samba_mgmt", "proxy": PROXY, "server": NAME})
            check("Samba's ncacn_http client: mgmt inq_if_ids through the pair",
                  any(i.startswith("e1af8308") for i in res["if_ids"]), res)

            # 3. The same 4 MiB twice, each time in a new virtual connection.
            first = rc.call(client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 4 << 20, "seed": 7})
            since = {box: lab.last_id(box) for box in ("branch", "dc")}
            second = rc.call(client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 4 << 20, "seed": 7})
            check("4 MiB echoed identically through the pair, twice",
                  first["identical"] and second["identical"] and first["sha256"] == second["sha256"], (first, second))
            vc2 = second["vc"]
            # The call is its request (IN channel) and its answer (OUT channel): the
            # virtual connection's bytes together, on each box.
            for box in ("branch", "dc"):
                lines, lan, wan = ended_pair(lab, box, vc2, since[box])
                r = 1 - wan / lan if lan else 0
                print(f"  {box}: the second 4 MiB echo, virtual connection {vc2}: LAN {lan} bytes, WAN {wan}, "
                      f"reduction {r:.1%}")
                check(f"{box}: the repeated 4 MiB call (IN and OUT channels) reduced by 90 % or more",
                      len(lines) == 2 and r >= 0.90, lines)
            for box in ("branch", "dc"):
                pair = vc_connections(lab, box, vc2)
                print(f"  {box}: virtual connection {vc2}:")
                for c in pair:
                    print(f"    #{c['id']} {c['client']} -> {c['server']} {c['application']} peer {c['peer']} "
                          f"LAN {c['lan_in'] + c['lan_out']} WAN {c['wan_in'] + c['wan_out']} "
                          f"reduction {reduction(c):.1%}: {channel_note(c)}")
            print(lab.run("branch", WANOPT, "show", "connections", check_rc=True).stdout)

            # Other channel shapes: a chunked IN body, HTTP/1.0 channels.
            for variant in ({"chunked": True}, {"http10": True}):
                res = rc.call(client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 256 << 10, "seed": 9,
                                       **variant})
                lines = wait_for(lambda: vc_connections(lab, "branch", res["vc"]))
                check(f"{list(variant)[0]} channels through the pair: echoed identically, paired on the branch",
                      res["identical"] and len(lines) == 2, (res, lines))

            # 4. Recycling, IN then OUT, mid-session.
            res = rc.call(client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 256 << 10, "seed": 3,
                                   "recycle_after": 1, "recycle_out": True, "calls_after_recycle": 2})
            check("recycling (IN, then OUT) mid-session through the pair: the calls after it identical",
                  res["identical"] and res.get("recycle") and res.get("recycle_out"), res)
            recycled = wait_for(lambda: [c for c in vc_connections(lab, "branch", res["vc"])
                                         if "recycled 2x" in channel_note(c)])
            check("branch: the virtual connection names both recycled channels (IN #a -> #b, OUT #c -> #d)",
                  recycled and "IN #" in channel_note(recycled[-1]) and "OUT #" in channel_note(recycled[-1]).split("recycled")[1],
                  [channel_note(c) for c in vc_connections(lab, "branch", res["vc"])])
            metrics = lab.run("branch", "curl", "-s", "http://127.0.0.1:7880/metrics").stdout
            gauge = [l for l in metrics.splitlines() if 'module="rpch"' in l and 'name="recycles"' in l]
            check("/metrics: the rpch recycles gauge counts them", gauge and int(gauge[0].split()[-1]) >= 2, gauge)

            # 5. One channel killed: the boxes reset the other.
            since = {box: lab.last_id(box) for box in ("branch", "dc")}
            res = rc.call(client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 64 << 10, "seed": 4,
                                   "kill": "in", "kill_deadline": 10})
            check("IN channel reset by the client: the OUT channel is reset (the proxy keeps it: the boxes did)",
                  res.get("kill", {}).get("other") == "reset", res)
            # The branch resets it; the dc's OUT channel goes by the branch's reset
            # (peer reset, module) or by its own module, whichever comes first.
            for box, why in (("branch", ("lost its IN channel",)), ("dc", ("lost its IN channel", "peer reset (module)"))):
                outs = wait_for(lambda: [c for c in vc_connections(lab, box, res["vc"]) if c["id"] > since[box] and
                                         c["state"] == "reset" and any("OUT channel (RPC_" in n for n in c["notes"]) and
                                         any(w in n for n in c["notes"] for w in why)])
                check(f"{box}: the OUT channel was reset for its lost IN channel", outs, vc_connections(lab, box, res["vc"]))

            # 6. A lone OUT channel.
            r = lab.run("client", PY, "-c", LONE_OUT, HERE, SERVER, timeout=40)
            lone = json.loads(r.stdout) if r.returncode == 0 else r.stderr
            check("a lone OUT channel is reset by the box after the pairing timeout (2 s)",
                  isinstance(lone, dict) and lone["ended"] == "reset" and 1.5 <= lone["after_s"] < 15, lone)
            reset_by = wait_for(lambda: [c for c in lab.connections("branch") + lab.connections("dc")
                                         if any("found no IN channel" in n for n in c["notes"])])
            check("a box noted why it reset the lone channel", reset_by, lone)

            # 7. Hostile input through the pair.
            res = rc.call(client, {"op": "hostile", "proxy": PROXY, "server": NAME, "deadline": 5}, timeout=120)
            check("hostile HTTP and RTS through the pair: every such connection ended",
                  isinstance(res, list) and len(res) >= 8 and all(c["ended"] in ("eof", "reset") for c in res), res)
            after = rc.call(client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 64 << 10, "seed": 5})
            check("after them the pair still serves RPC over HTTP (echo identical) and both boxes run",
                  after["identical"] and all(lab.procs[b].poll() is None for b in ("branch", "dc")), after)
            untouched = [n for c in lab.connections("branch") for n in c["notes"] if n.startswith("rpch: ")]
            check("branch: the hostile connections are noted (the module stepped aside)", untouched, untouched)

            # 8. MAPI over HTTP.
            lab.spawn("mapi-http", "server", PY, "-c", MAPI_SERVER, SERVER, stdout=subprocess.PIPE, text=True)
            check("the MAPI over HTTP server started", lab.procs["mapi-http"].stdout.readline().strip() == "READY")
            body = os.path.join(work, "mapi-body")
            with open(body, "wb") as f:
                f.write(os.urandom(1 << 20))
            url = f"http://{SERVER}:8080/mapi/emsmdb/?MailboxId=user@wanopt.lab"
            headers = ["-H", "Content-Type: application/mapi-http", "-H", "X-ClientInfo: {2F94A2BF}:1"]
            out = []
            for i in range(2):
                since = lab.last_id("branch")
                r = lab.run("client", "curl", "-s", "-S", "-o", "/dev/null", "-w", "%{size_download}", *headers,
                            "-H", "X-RequestType: Execute", "--data-binary", f"@{body}", url, timeout=60)
                out.append(r.stdout)
                c = lab.wait_ended("branch", 8080, since)
                if i == 1:
                    ok = c and c["application"] == "MAPI-HTTP" and any(
                        "MAPI over HTTP (emsmdb) requests: Execute 1" in n for n in c["notes"])
                    check("MAPI over HTTP: classified, its request type reported", ok, c)
                    print(f"  MAPI over HTTP, the repeated 1 MiB Execute: reduction {reduction(c):.1%}")
                    check("MAPI over HTTP: the repeated 1 MiB body reduced by 90 % or more", c and reduction(c) >= 0.9, c)
            check("MAPI over HTTP: both answers whole", out == [str(1 << 20)] * 2, out)
            r = lab.run("client", "curl", "-s", "-S", "-N", *headers, "-H", "X-RequestType: NotificationWait",
                        "--data-binary", "x", url)
            check("MAPI over HTTP: the PENDING keep-alive streamed through, then DONE",
                  r.stdout == "PENDING\nPENDING\nDONE\n", repr(r.stdout + r.stderr))  # text mode: CRLF read as LF

            # 9. tshark on the server's side.
            pkts = cap.stop()
            rts_in = [p for p in pkts if p["dcerpc.pkt_type"] == "20" and p["tcp.dstport"] == "80"]
            check("tshark on the server's LAN: RTS PDUs (dcerpc.pkt_type == 20) came through the pair, CONN/A1 among them",
                  any("CONN/A1" in p["_ws.col.Info"] for p in rts_in), [p["_ws.col.Info"] for p in rts_in][:20])

            # 10. Over IPv6.
            ipv6_echo(lab, client)
        except Exception as e:  # a broken lab is a failure, never a skip
            check("the lab ran to the end", False, repr(e))
        finally:
            if check.failed:
                lab.print_logs()
                print("--- proxy log (last 40 lines)")
                try:
                    with open(log) as f:
                        print("".join(f.readlines()[-40:]))
                except OSError:
                    pass
                if peer:
                    print("--- samba\n" + peer.tail(30))
            if peer:
                peer.stop()
            lab.down()
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
