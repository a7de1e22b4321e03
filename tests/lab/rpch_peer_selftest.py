#!/usr/bin/python3
"""Proves the RPC over HTTP v2 test peers work, without any wanopt box.

Usage: rpch_peer_selftest.py [--prefix P] [--netlab PATH] [--delayline PATH]
Needs root (exits 77 otherwise). Prints 'N passed, N failed'; exit 1 on failure.

A plainly routed netlab (no --intercept, no wanopt: the box namespaces just
forward, 5 ms one way), Samba's AD DC (samba_peer) and the proxy (rpch_proxy.py on
198.18.2.10:80, back end 198.18.2.10) in the server namespace, the clients
(rpch_clients.py) in the client namespace; tshark on the server's eth0.
  1. impacket: ept_map for SAMR through the proxy (ncacn_http:WSDC[593]) gives the
     port the endpoint mapper gives directly; SamrEnumerateDomainsInSamServer at
     ncacn_http:WSDC[that port] through the proxy: WANOPT and BUILTIN.
  2. Samba's own ncacn_http client (RpcProxy=, HTTP/1.0, Basic): mgmt inq_if_ids
     and epm_Lookup.
  3. tshark saw RTS PDUs (dcerpc.pkt_type == 20: CONN/A1 to the proxy, CONN/A3 from
     it) and a bind at the start of an IN channel segment.
  4. The scripted client: 4 MiB echoed identically, with flow control acks; IN
     channel recycling between calls, then OUT channel recycling, each old channel
     closed by the proxy, calls after them identical; the log names the virtual
     connection and cookies. A chunked IN body and HTTP/1.0 channels work too.
  5. A channel reset (IN, then OUT): the proxy ends the other within 10 s.
  6. Hostile inputs: each connection ended by the proxy; a good client still works.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from labkit import Capture, Checks, Lab  # noqa: E402

SERVER = "198.18.2.10"
CLIENT_IP = "198.18.1.10"
PROXY = f"{SERVER}:80"
NAME = "WSDC"  # the server name clients put in the URL (the DC's NetBIOS name)


class RtsCapture(Capture):
    """labkit's Capture (ping-synchronised tshark), with DCE/RPC fields."""
    FIELDS = ["tcp.srcport", "tcp.dstport", "dcerpc.pkt_type", "tcp.payload", "_ws.col.Protocol", "_ws.col.Info"]


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return repr(e)


def wait_log(path, needle, timeout=10):
    import rpch_clients
    return rpch_clients.log_has(path, *needle, timeout=timeout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefix", default=f"rp{os.getpid() % 10000}")
    ap.add_argument("--netlab", default=os.path.join(HERE, "netlab"))
    ap.add_argument("--delayline", default=None)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: the namespace lab needs root")
        return 77
    import rpch_clients as rc
    import samba_peer

    check = Checks(detail_limit=3000)
    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="wanopt-rpch-selftest-")
    # No wanopt here (Lab's spawn/stop/down only); an empty delay line path lets netlab search the build dirs.
    lab = Lab(a.prefix, work, None, a.netlab, a.delayline or os.environ.get("WANOPT_DELAYLINE", ""))
    log = os.path.join(work, "proxy.log")
    peer = None
    client = lab.ns("client")

    def timed(what, fn, *args, **kw):
        t0 = time.monotonic()
        try:
            res = fn(*args, **kw)
        except rc.PeerError as e:
            res = e
        print(f"  {what}: {time.monotonic() - t0:.2f} s")
        return res

    try:
        r = subprocess.run([a.netlab, "--prefix", a.prefix, "up", "--delay-ms", "5"], env=lab.env, capture_output=True,
                           text=True, timeout=60)
        if not check("netlab up (plainly routed, no wanopt)", r.returncode == 0, r.stderr[-800:]):
            return check.summary()
        peer = timed("samba start", samba_peer.start, lab.ns("server"), os.path.join(work, "samba"))
        proxy = rc.start_proxy(lab, log, listen=PROXY, backend=SERVER)
        check("the proxy printed READY", proxy.poll() is None, read(log))
        cap = RtsCapture(lab, "server", "eth0", CLIENT_IP, os.path.join(HERE, "../../deploy/wireshark/wanopt.lua"))

        # 1. impacket through the proxy.
        direct = samba_peer.ept_map(SERVER, samba_peer.SAMR_UUID, "1.0", ns=client)
        towers = timed("impacket ept_map via proxy", rc.call, client,
                       {"op": "impacket_ept_map", "proxy": PROXY, "server": NAME, "uuid": samba_peer.SAMR_UUID})
        ok = check("impacket ept_map(SAMR) over ncacn_http via the proxy: the port the endpoint mapper gives directly",
                   isinstance(towers, list) and towers and tuple(towers[0]) == tuple(direct[0]), (towers, direct))
        port = towers[0][0] if ok else 0
        check("proxy log: the EPM virtual connection paired to the back end's 135",
              wait_log(log, ("paired ", f"target={NAME}:593", f"via={SERVER}:135")), read(log))
        names = timed("impacket SAMR via proxy", rc.call, client,
                      {"op": "impacket_samr", "proxy": PROXY, "server": NAME, "port": port})
        check("impacket SamrEnumerateDomainsInSamServer via the proxy at the mapped port: WANOPT and BUILTIN",
              isinstance(names, list) and sorted(n.upper() for n in names) == ["BUILTIN", "WANOPT"], names)
        check("proxy log: the SAMR virtual connection went to the dynamic port",
              wait_log(log, ("paired ", f"via={SERVER}:{port}")), read(log))

        # 2. Samba's own client.
        res = timed("samba mgmt via proxy", rc.call, client, {"op": "samba_mgmt", "proxy": PROXY, "server": NAME})
        check("Samba's ncacn_http client (RpcProxy, Basic) via the proxy: mgmt inq_if_ids lists the endpoint mapper",
              isinstance(res, dict) and any(i.startswith(samba_peer.EPM_UUID) for i in res["if_ids"]), res)
        res = timed("samba epm_Lookup via proxy", rc.call, client,
                    {"op": "samba_epm_lookup", "proxy": PROXY, "server": NAME})
        check("Samba's ncacn_http client via the proxy: epm_Lookup lists samr and epmapper",
              isinstance(res, dict) and res["status"] == 0 and {"samr", "epmapper"} <= set(res["annotations"]), res)
        small = rc.call(client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 4096})
        check("a small echo (for the capture)", small["identical"], small)

        # 3. What tshark saw.
        pkts = cap.stop()
        rts_in = [p for p in pkts if p["dcerpc.pkt_type"] == "20" and p["tcp.dstport"] == "80"]
        rts_out = [p for p in pkts if p["dcerpc.pkt_type"] == "20" and p["tcp.srcport"] == "80"]
        check("tshark: RTS PDUs (dcerpc.pkt_type == 20) to the proxy, CONN/A1 among them",
              any("CONN/A1" in p["_ws.col.Info"] for p in rts_in), [p["_ws.col.Info"] for p in rts_in])
        check("tshark: RTS PDUs from the proxy, CONN/A3 among them",
              any("CONN/A3" in p["_ws.col.Info"] for p in rts_out), [p["_ws.col.Info"] for p in rts_out])
        check("tshark: an IN channel segment starting with a bind (05 00 0b) reached the proxy",
              any(p["tcp.dstport"] == "80" and p["tcp.payload"].startswith("05000b") for p in pkts),
              len(pkts))

        # 4. The scripted client: big echo, recycling.
        res = timed("echo 4 MiB", rc.call, client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 4 << 20,
                                                    "seed": 7}, timeout=120)
        ok = check("scripted client: 4 MiB echoed identically, flow control acks received",
                   isinstance(res, dict) and res["identical"] and res["calls"] == 1 and res["flow_acks_received"] > 0,
                   res)
        if ok:
            check("proxy log: the echo virtual connection paired with its IN and OUT cookies",
                  wait_log(log, ("paired ", f"vc={res['vc']}", f"in={res['in']}", f"out={res['out']}", "via=echo")),
                  read(log))
        res = timed("echo with IN then OUT recycling", rc.call, client,
                    {"op": "echo", "proxy": PROXY, "server": NAME, "size": 1 << 20, "calls": 1, "recycle_after": 1,
                     "recycle_out": True, "calls_after_recycle": 2}, timeout=120)
        ok = check("IN channel recycling mid-session: the old channel closed by the proxy, calls after it identical",
                   isinstance(res, dict) and res["identical"] and res["calls"] >= 3 and
                   res["recycle"]["old_channel_ended"] in ("eof", "reset"), res)
        ok_out = check("OUT channel recycling (OUT_R2) after it: the old OUT closed by the proxy, calls after identical",
                       ok and res["calls"] == 5 and res["recycle_out"]["old_channel_ended"] in ("eof", "reset"), res)
        for which, rec, good in (("in", ok and res["recycle"], ok), ("out", ok_out and res["recycle_out"], ok_out)):
            if good:
                check(f"proxy log: {which.upper()} recycled (predecessor, successor), the old channel closed as recycled",
                      wait_log(log, ("recycled ", f"vc={res['vc']}", f"channel={which}",
                                     f"predecessor={rec['predecessor']}", f"successor={rec['successor']}")) and
                      wait_log(log, ("closed ", f"channel={which}", f"cookie={rec['predecessor']}", "reason=recycled")),
                      read(log))

        for variant in ("chunked", "http10"):
            res = timed(f"echo 256 KiB, {variant}", rc.call, client,
                        {"op": "echo", "proxy": PROXY, "server": NAME, "size": 256 << 10, variant: True})
            check(f"scripted client, IN channel {variant}: echoed identically", isinstance(res, dict) and
                  res["identical"], res)

        # 5. One channel reset: the other goes too.
        for which in ("in", "out"):
            res = timed(f"kill {which}", rc.call, client, {"op": "echo", "proxy": PROXY, "server": NAME,
                                                           "size": 65536, "kill": which, "kill_deadline": 10})
            ok = check(f"{which.upper()} channel reset: the proxy ends the other channel within 10 s",
                       isinstance(res, dict) and res["kill"]["other"] in ("eof", "reset"), res)
            if ok:
                check(f"proxy log: the {which.upper()} channel ended by a reset, then its virtual connection",
                      wait_log(log, ("closed ", f"channel={which}", f"vc={res['vc']}", "ConnectionResetError")) and
                      wait_log(log, ("closed-vc ", f"vc={res['vc']}")), read(log))

        # 6. Hostile inputs.
        res = timed("hostile", rc.call, client, {"op": "hostile", "proxy": PROXY, "server": NAME, "deadline": 5})
        if check("hostile sender ran", isinstance(res, list) and len(res) >= 8, res):
            for case in res:
                check(f"hostile {case['name']}: the proxy ended the connection", case["ended"] in ("eof", "reset"), case)
            n_bad = sum(" malformed " in line for line in read(log).splitlines())
            check("proxy log: a 'malformed' line per hostile connection", n_bad >= len(res), n_bad)
        good = rc.call(client, {"op": "echo", "proxy": PROXY, "server": NAME, "size": 1 << 20, "seed": 3})
        towers = rc.call(client, {"op": "impacket_ept_map", "proxy": PROXY, "server": NAME, "uuid": samba_peer.SAMR_UUID})
        check("after the hostile inputs the proxy still serves: echo and impacket ept_map",
              good["identical"] and towers and towers[0][0] == port and proxy.poll() is None, (good, towers))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = read(log).splitlines()
            paired = {l.split(" vc=", 1)[1].split()[0] for l in lines if " paired " in l}
            closed = {l.split(" vc=", 1)[1].split()[0] for l in lines if " closed-vc " in l}
            if paired <= closed:
                break
            time.sleep(0.05)
        check("every paired virtual connection was closed in the end (none half-alive)", paired <= closed,
              paired - closed)
    except Exception as e:  # a broken lab is a failure, never a skip
        check("self-test ran to the end", False, repr(e))
    finally:
        if check.failed:
            print("--- proxy log (last 40 lines)\n" + "\n".join(read(log).splitlines()[-40:]))
            if peer and not isinstance(peer, Exception):
                print("--- samba\n" + peer.tail(20))
        if peer and not isinstance(peer, Exception):
            peer.stop()
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    print(f"  self-test: {time.monotonic() - t_start:.1f} s")
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
