#!/usr/bin/python3
"""A scripted WCCPv2 cache for the router selftest: sends Here_I_Am every
--interval seconds and, when it is the designated cache (lowest IP in the router's
view) and the view's change number moved, answers at once with a Redirect_Assign.

Why it exists: Debian's Squid 5.7 never accepts an I_See_You (Squid bug 5179,
"huge IP address count", and the CheckFieldDataLength offset bug fixed by squid
PR #2484), so it never sends a Redirect_Assign; this peer drives the router's
assignment code instead. It is NOT independent of wccp_wire.py (it uses it);
tshark decoding its messages is the independent check. Its assignments follow
what Squid's source does: hash buckets round-robin (bucket i -> cache i mod n),
mask 0x1741 on the hashed field with 64 values round-robin over the caches.

  wccp_cache_peer.py --router IP --me IP --service N [--flags src_ip_hash]
                     [--assignment hash|mask] [--password PW] [--interval S]
Prints one line per event on stdout ("ASSIGN change=N ...")."""
import argparse
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wccp_wire as w  # noqa: E402

MASK = 0x1741


def mask_values(n_caches):
    vals, v = [], 0
    while len(vals) < 64:
        if v & MASK == v:
            vals.append(v)
        v += 1
    return vals


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--router", required=True)
    p.add_argument("--me", required=True)
    p.add_argument("--service", type=int, required=True)
    p.add_argument("--flags", default="src_ip_hash")
    p.add_argument("--assignment", choices=("hash", "mask"), default="hash")
    p.add_argument("--password")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--shutdown-after", type=float,
                   help="then send a Here_I_Am with a shutdown Command Extension, await the response, exit")
    a = p.parse_args()
    flags = w.SERVICE_FLAGS[a.flags] | w.SERVICE_FLAGS["ports_defined"]
    svc = {"type": "dynamic", "id": a.service, "priority": 34, "protocol": 6, "flags": flags, "ports": [80, 443]}
    field = "src_ip" if "src" in a.flags else "dst_ip"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((a.me, w.PORT))
    receive_id, assigned_change, key_change = 0, None, 0

    def send(mtype, comps):
        msg = w.build_message(mtype, [w.component(w.SECURITY_INFO, w.security_body(a.password)),
                                      w.component(w.SERVICE_INFO, w.service_body(svc))] + comps)
        if a.password:
            msg = w.sign(msg, a.password)
        sock.sendto(msg, (a.router, w.PORT))

    def here_i_am(extra=()):
        if a.assignment == "hash":
            ident = {"ip": a.me, "flags": 0, "data": "hash", "buckets": [], "weight": 0, "status": 0}
        else:
            m = {"src_ip": 0, "dst_ip": 0, "src_port": 0, "dst_port": 0}
            m[field] = MASK
            ident = {"ip": a.me, "flags": w.WC_FLAG_MASK_DATA, "data": "mask",
                     "mask_sets": [{"mask": m, "values": []}], "weight": 0, "status": 0}
        view = (struct.pack("!II", 1, 1) + w.ip2b(a.router) + struct.pack("!II", receive_id, 0))
        caps = {w.CAP_FORWARDING: w.METHOD_GRE, w.CAP_RETURN: w.METHOD_GRE,
                w.CAP_ASSIGNMENT: w.ASSIGN_HASH if a.assignment == "hash" else w.ASSIGN_MASK}
        send(w.HERE_I_AM, [w.component(w.WC_ID_INFO, w.wc_identity_element(ident)),
                           w.component(w.WC_VIEW_INFO, view),
                           w.component(w.CAPABILITY_INFO, w.capabilities_body(caps)), *extra])

    def assign(change, caches):
        nonlocal key_change
        key_change += 1
        base = {"key_ip": a.me, "key_change": key_change,
                "routers": [{"ip": a.router, "receive_id": receive_id, "change_number": change}]}
        if a.assignment == "hash":
            base.update(method="hash", caches=caches, buckets=[i % len(caches) for i in range(w.N_BUCKETS)])
            comp = w.component(w.ASSIGNMENT_INFO, w.assignment_info_body(base))
        else:
            m = {"src_ip": 0, "dst_ip": 0, "src_port": 0, "dst_port": 0}
            m[field] = MASK
            values = []
            for i, v in enumerate(mask_values(len(caches))):
                val = {"src_ip": 0, "dst_ip": 0, "src_port": 0, "dst_port": 0, "cache": caches[i % len(caches)]}
                val[field] = v
                values.append(val)
            base.update(method="mask", mask_sets=[{"mask": m, "values": values}])
            comp = w.component(w.ALT_ASSIGNMENT, w.alt_assignment_body(base))
        send(w.REDIRECT_ASSIGN, [comp])
        print(f"ASSIGN change={change} caches={','.join(caches)}", flush=True)

    print("READY", flush=True)
    next_hia, start, shutdown_sent = 0.0, time.monotonic(), None
    while True:
        now = time.monotonic()
        if a.shutdown_after is not None and shutdown_sent is None and now - start >= a.shutdown_after:
            here_i_am([w.component(w.COMMAND_EXTENSION, w.command_extension_body(w.COMMAND_SHUTDOWN, a.me))])
            shutdown_sent, next_hia = now, now + 3600
            print("SHUTDOWN_SENT", flush=True)
        if shutdown_sent is not None and now - shutdown_sent > 3:
            print("SHUTDOWN_UNANSWERED", flush=True)
            return 1
        if now >= next_hia:
            here_i_am()
            next_hia = now + a.interval
        r, _, _ = select.select([sock], [], [], max(0.0, next_hia - time.monotonic()))
        if not r:
            continue
        data, _ = sock.recvfrom(65535)
        try:
            mtype, _, comps = w.parse_message(data)
            if a.password and not w.verify(data, a.password):
                print("BAD_MD5", flush=True)
                continue
            if mtype != w.I_SEE_YOU:
                print(f"MESSAGE type={mtype}", flush=True)
                continue
            rid = w.parse_router_identity(w.one(comps, w.ROUTER_ID_INFO))
            view = w.parse_router_view(w.one(comps, w.RTR_VIEW_INFO))
        except w.WireError as e:
            print(f"MALFORMED {e}", flush=True)
            continue
        cmd = w.one(comps, w.COMMAND_EXTENSION, required=False)
        if shutdown_sent is not None:
            if cmd is not None and w.parse_command_extension(cmd) == {
                    "command": w.COMMAND_SHUTDOWN_RESPONSE, "cache": a.me}:
                print("SHUTDOWN_ACK", flush=True)
                return 0
            continue
        receive_id = rid["receive_id"]
        caches = sorted((c["ip"] for c in view["caches"]), key=socket.inet_aton)
        if caches and caches[0] == a.me and view["change_number"] != assigned_change:
            assigned_change = view["change_number"]
            assign(view["change_number"], caches)


if __name__ == "__main__":
    sys.exit(main())
