#!/usr/bin/python3
"""A WCCPv2 router simulator: the router side of draft-wilson-wrec-wccp-v2 /
draft-mclaggan-wccp-v2rev1, as a test peer for WCCP clients (Squid, wanopt).

It answers each cache's Here_I_Am with I_See_You per service group, keeps the view
(caches heard within --timeout-s; every membership change bumps the change number),
accepts Redirect_Assign from the designated cache (lowest IP in the view) after
checking it against the view, and writes what it knows to a JSON state file
(rewritten atomically on every change) for tests to read. One log line per event.

  wccp_router.py --listen ADDR [--password PW] [--service N ...]
                 [--forwarding gre|l2|both] [--return gre|l2|both]
                 [--assignment hash|mask|both] [--timeout-s S] [--state F] [--log F]
                 [--squid-compat]
  wccp_router.py --lookup STATE --service N --src IP --dst IP [--sport P --dport P]
     prints the cache a packet would be redirected to ("none" if not redirected).

No data plane: redirect_target() is the helper a later GRE forwarder can use.

--squid-compat pads the router's messages so Squid 5.x (Debian's 5.7) parses them:
its parser steps 4 octets too far after every component and capability element
(squid PR #2484). The padding is empty components/elements of an unassigned type,
which draft-conformant parsers (and Wireshark) skip. Off by default: the default
output is what the drafts say."""
import argparse
import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wccp_wire as w  # noqa: E402

METHOD_BITS = {"gre": w.METHOD_GRE, "l2": w.METHOD_L2, "both": w.METHOD_GRE | w.METHOD_L2}
ASSIGN_BITS = {"hash": w.ASSIGN_HASH, "mask": w.ASSIGN_MASK, "both": w.ASSIGN_HASH | w.ASSIGN_MASK}
# Defaults when a cache sends no Capabilities Info (the drafts: GRE, hash, GRE).
DEFAULT_CAPS = {w.CAP_FORWARDING: w.METHOD_GRE, w.CAP_ASSIGNMENT: w.ASSIGN_HASH,
                w.CAP_RETURN: w.METHOD_GRE}
ERRORS = ("bad_md5", "security_mismatch", "version_mismatch", "malformed", "unknown_service",
          "service_mismatch", "capability_mismatch", "not_designated", "bad_assignment",
          "unexpected_message")


def ipkey(ip):
    return socket.inet_aton(ip)


def method_names(bits, table):
    return [n for n, v in table.items() if n != "both" and bits & v]


def new_counts():
    return {"received": {}, "sent": {}, "errors": {e: 0 for e in ERRORS}}


class Group:
    """One service group as the router sees it."""

    def __init__(self, service):
        self.service = service
        self.change = 0          # member change number
        self.receive_id = 0      # incremented for every I_See_You sent
        self.caches = {}         # ip -> dict (first_seen, last_seen, caps, identity, ...)
        self.assignment = None
        self.assignments_accepted = 0
        self.counts = new_counts()

    def designated(self):
        return min(self.caches, key=ipkey) if self.caches else None


class Router:
    def __init__(self, args):
        self.addr = args.listen
        self.password = args.password
        self.services = set(args.service or [])   # empty: learn any
        self.caps = {w.CAP_FORWARDING: METHOD_BITS[args.forwarding],
                     w.CAP_ASSIGNMENT: ASSIGN_BITS[args.assignment],
                     w.CAP_RETURN: METHOD_BITS[getattr(args, "return")]}
        self.timeout = args.timeout_s
        self.squid_compat = args.squid_compat
        self.state_path, self.log_file = args.state, None
        if args.log:
            self.log_file = open(args.log, "a", buffering=1)
        self.groups = {}
        self.counts = new_counts()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.addr, w.PORT))

    # ---- bookkeeping ----
    def log(self, line):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        if self.log_file:
            self.log_file.write(f"{stamp} {line}\n")

    def count(self, kind, key, group=None):
        for c in (self.counts, group.counts if group else None):
            if c is not None:
                d = c[kind]
                d[str(key)] = d.get(str(key), 0) + 1

    def error(self, name, line, group=None):
        self.counts["errors"][name] += 1
        if group:
            group.counts["errors"][name] += 1
        self.log(line)
        self.write_state()

    def write_state(self):
        if not self.state_path:
            return
        state = {"router": self.addr, "updated": time.time(), "md5": self.password is not None,
                 "timeout_s": self.timeout,
                 "capabilities": {"forwarding": method_names(self.caps[w.CAP_FORWARDING], METHOD_BITS),
                                  "assignment": method_names(self.caps[w.CAP_ASSIGNMENT], ASSIGN_BITS),
                                  "return": method_names(self.caps[w.CAP_RETURN], METHOD_BITS)},
                 "counts": self.counts, "services": {}}
        for sid, g in sorted(self.groups.items()):
            state["services"][str(sid)] = {
                "service": g.service, "change_number": g.change, "receive_id": g.receive_id,
                "designated": g.designated(),
                "caches": [{k: v for k, v in c.items() if k != "identity"}
                           for _, c in sorted(g.caches.items(), key=lambda kv: ipkey(kv[0]))],
                "assignment": g.assignment, "assignments_accepted": g.assignments_accepted,
                "counts": g.counts}
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
        os.replace(tmp, self.state_path)

    # ---- receive ----
    def handle(self, data, src):
        ip = src[0]
        try:
            mtype, _, comps = w.parse_message(data)
        except w.VersionError as e:
            return self.error("version_mismatch", f"version mismatch from {ip}: {e}")
        except w.WireError as e:
            return self.error("malformed", f"malformed from {ip}: {e}")
        self.count("received", mtype)
        try:
            sec_option, _ = w.parse_security(w.one(comps, w.SECURITY_INFO))
            if mtype == w.REMOVAL_QUERY:
                q = w.parse_query(w.one(comps, w.QUERY_INFO))
                return self.error("unexpected_message",
                                  f"removal_query from {ip} (a router->cache message) target={q['target']}")
            svc = w.parse_service(w.one(comps, w.SERVICE_INFO))
        except w.WireError as e:
            return self.error("malformed", f"malformed from {ip}: {e}")
        group = self.groups.get(svc["id"])
        if self.password is not None:
            if sec_option != w.MD5_SECURITY or not w.verify(data, self.password):
                return self.error("bad_md5", f"bad MD5 from {ip} service={svc['id']}", group)
        elif sec_option != w.NO_SECURITY:
            return self.error("security_mismatch", f"security mismatch from {ip} service={svc['id']}"
                              f" option={sec_option}", group)
        if self.services and svc["id"] not in self.services:
            return self.error("unknown_service", f"unknown service {svc['id']} from {ip}")
        try:
            if mtype == w.HERE_I_AM:
                self.here_i_am(ip, src, comps, svc)
            elif mtype == w.REDIRECT_ASSIGN:
                self.redirect_assign(ip, comps, svc)
            else:
                self.error("unexpected_message", f"unexpected message type {mtype} from {ip}", group)
        except w.WireError as e:
            self.error("malformed", f"malformed from {ip}: {e}", group)

    def here_i_am(self, ip, src, comps, svc):
        ident = w.parse_wc_identity(w.one(comps, w.WC_ID_INFO))
        w.parse_wc_view(w.one(comps, w.WC_VIEW_INFO))
        capbody = w.one(comps, w.CAPABILITY_INFO, required=False)
        caps = dict(DEFAULT_CAPS)
        if capbody is not None:
            caps.update(w.parse_capabilities(capbody))
        cmd = w.one(comps, w.COMMAND_EXTENSION, required=False)
        group = self.groups.get(svc["id"])
        if group is None:
            group = self.groups[svc["id"]] = Group(svc)
            self.log(f"service learned id={svc['id']} type={svc['type']} priority={svc['priority']} "
                     f"protocol={svc['protocol']} flags={','.join(svc['flag_names'])} "
                     f"ports={','.join(map(str, svc['ports']))} from {ip}")
        group.counts["received"][str(w.HERE_I_AM)] = group.counts["received"].get(str(w.HERE_I_AM), 0) + 1
        if svc != group.service:
            return self.error("service_mismatch", f"service mismatch from {ip} service={svc['id']}: "
                              f"{svc} != {group.service}", group)
        if ident["ip"] != ip:
            self.log(f"identity {ident['ip']} differs from source {ip}")
        bad = [n for t, n in ((w.CAP_FORWARDING, "forwarding"), (w.CAP_ASSIGNMENT, "assignment"),
                              (w.CAP_RETURN, "return")) if not caps[t] & self.caps[t]]
        wanted = {"forwarding": method_names(caps[w.CAP_FORWARDING], METHOD_BITS),
                  "assignment": method_names(caps[w.CAP_ASSIGNMENT], ASSIGN_BITS),
                  "return": method_names(caps[w.CAP_RETURN], METHOD_BITS)}
        now = time.time()
        shutdown = False
        if bad:
            self.error("capability_mismatch", f"capability mismatch from {ip} service={svc['id']}: "
                       f"{','.join(bad)} {wanted}", group)
        elif cmd is not None and w.parse_command_extension(cmd)["command"] == w.COMMAND_SHUTDOWN:
            # rev1 Command Extension: the cache is leaving; drop it now and
            # acknowledge with a shutdown response in this I_See_You.
            shutdown = True
            self.remove(group, ip, "shutdown")
        else:
            c = group.caches.get(ip)
            if c is None:
                c = group.caches[ip] = {"ip": ip, "first_seen": now, "here_i_am": 0}
                group.change += 1
                self.log(f"join {ip} service={svc['id']} change={group.change} "
                         f"designated={group.designated()}")
                self.mark_stale(group)
            c.update(last_seen=now, capabilities=wanted, weight=ident["weight"],
                     assignment_data=ident["data"], identity=ident, removal_query_sent=False)
            c["here_i_am"] += 1
        self.log(f"here_i_am from {ip} service={svc['id']}")
        self.i_see_you(group, ip, src, shutdown_ack=shutdown)
        self.write_state()

    def mark_stale(self, group):
        if group.assignment and not group.assignment.get("stale"):
            group.assignment["stale"] = True

    def remove(self, group, ip, why):
        if group.caches.pop(ip, None) is not None:
            group.change += 1
            self.mark_stale(group)
            self.log(f"{why} {ip} service={group.service['id']} change={group.change} "
                     f"designated={group.designated()}")
            self.write_state()

    # ---- send ----
    def send(self, mtype, comps, dest, group):
        comps = [w.component(w.SECURITY_INFO, w.security_body(self.password))] + comps
        if self.squid_compat:
            # Squid 5.x-7.x on 64-bit hosts skip 4 octets after every component
            # they parse (CheckFieldDataLength uses sizeof(pointer); fixed by squid
            # PR #2484): follow each with an empty component they then skip over.
            comps = [c + w.component(w.COMPAT_GAP, b"") for c in comps]
        msg = w.build_message(mtype, comps)
        if self.password is not None:
            msg = w.sign(msg, self.password)
        self.sock.sendto(msg, dest)
        self.count("sent", mtype, group)

    def cache_idents(self, group):
        """Web-cache identity elements for the Router View: what each cache sent, with
        the buckets it holds in the active hash assignment."""
        owned = (group.assignment or {}).get("buckets", {}) if (group.assignment or {}).get("method") == "hash" else {}
        out = []
        for ip in sorted(group.caches, key=ipkey):
            ident = dict(group.caches[ip]["identity"], ip=ip)
            if ident["data"] == "hash":
                ident["buckets"] = owned.get(ip, [])
            out.append(ident)
        return out

    def i_see_you(self, group, ip, dest, shutdown_ack=False):
        group.receive_id += 1
        key = group.assignment or {}
        in_view = sorted(group.caches, key=ipkey)
        comps = [
            w.component(w.SERVICE_INFO, w.service_body(group.service)),
            w.component(w.ROUTER_ID_INFO, w.router_identity_body(self.addr, group.receive_id, self.addr, in_view)),
            w.component(w.RTR_VIEW_INFO, w.router_view_body(
                group.change, key.get("key", {}).get("ip", "0.0.0.0"), key.get("key", {}).get("change", 0),
                [self.addr], self.cache_idents(group))),
            w.component(w.CAPABILITY_INFO, (w.capabilities_body_squid_compat if self.squid_compat
                                            else w.capabilities_body)(self.caps)),
        ]
        if shutdown_ack:
            comps.append(w.component(w.COMMAND_EXTENSION,
                                     w.command_extension_body(w.COMMAND_SHUTDOWN_RESPONSE, ip)))
        self.send(w.I_SEE_YOU, comps, dest, group)
        self.log(f"i_see_you to {ip} service={group.service['id']} change={group.change} "
                 f"receive_id={group.receive_id} caches={','.join(in_view) or '-'}")

    # ---- assignments ----
    def redirect_assign(self, ip, comps, svc):
        group = self.groups.get(svc["id"])
        if group is None:
            return self.error("unknown_service", f"redirect_assign for unknown service {svc['id']} from {ip}")
        group.counts["received"][str(w.REDIRECT_ASSIGN)] = group.counts["received"].get(str(w.REDIRECT_ASSIGN), 0) + 1
        a6 = w.one(comps, w.ASSIGNMENT_INFO, required=False)
        a13 = w.one(comps, w.ALT_ASSIGNMENT, required=False)
        if (a6 is None) == (a13 is None):
            raise w.WireError("redirect_assign needs exactly one of Assignment Info / Alternate Assignment")
        a = w.parse_assignment_info(a6) if a6 is not None else w.parse_alt_assignment(a13)
        sid = svc["id"]
        if ip != group.designated():
            return self.error("not_designated", f"redirect_assign from {ip} service={sid} but designated is "
                              f"{group.designated()}", group)
        problem = self.check_assignment(group, a, ip)
        if problem:
            return self.error("bad_assignment", f"bad assignment from {ip} service={sid}: {problem}", group)
        rec = {"method": a["method"], "from": ip, "key": {"ip": a["key_ip"], "change": a["key_change"]},
               "change_number": group.change, "received_at": time.time(), "stale": False}
        if a["method"] == "hash":
            per, alt, unassigned = {c: [] for c in a["caches"]}, 0, []
            for b, v in enumerate(a["buckets"]):
                if v == w.UNASSIGNED_BUCKET:
                    unassigned.append(b)
                    continue
                per[a["caches"][v & 0x7F]].append(b)
                alt += 1 if v & 0x80 else 0
            rec.update(caches=a["caches"], bucket_table=a["buckets"], buckets=per,
                       buckets_per_cache={c: len(v) for c, v in per.items()},
                       unassigned=unassigned, alternate_flagged=alt)
            summary = ",".join(f"{c}:{len(v)}" for c, v in per.items())
        else:
            sets, per_count = [], {}
            for s in a["mask_sets"]:
                by_cache = {}
                for v in s["values"]:
                    by_cache.setdefault(v["cache"], []).append(
                        {k: v[k] for k in ("src_ip", "dst_ip", "src_port", "dst_port")})
                    per_count[v["cache"]] = per_count.get(v["cache"], 0) + 1
                sets.append({"mask": s["mask"], "values_per_cache": by_cache})
            rec.update(mask_sets=sets, values_per_cache_count=per_count)
            summary = ",".join(f"{c}:{n}" for c, n in per_count.items())
        group.assignment = rec
        group.assignments_accepted += 1
        self.log(f"assign from {ip} service={sid} method={a['method']} change={group.change} "
                 f"key={a['key_ip']}/{a['key_change']} split={summary}")
        self.write_state()

    def check_assignment(self, group, a, ip):
        method_bit = w.ASSIGN_HASH if a["method"] == "hash" else w.ASSIGN_MASK
        if not self.caps[w.CAP_ASSIGNMENT] & method_bit:
            return f"{a['method']} assignment not offered"
        if a["key_ip"] != ip:
            return f"assignment key ip {a['key_ip']} is not the sender"
        mine = [r for r in a["routers"] if r["ip"] == self.addr]
        if not mine:
            return "this router is not in the assignment"
        r = mine[0]
        if r["change_number"] != group.change:
            return f"change number {r['change_number']} != view {group.change}"
        if not 1 <= r["receive_id"] <= group.receive_id:
            return f"receive id {r['receive_id']} never sent (last {group.receive_id})"
        if a["method"] == "hash":
            if sorted(a["caches"], key=ipkey) != sorted(group.caches, key=ipkey):
                return f"caches {a['caches']} != view {sorted(group.caches, key=ipkey)}"
            for v in a["buckets"]:
                if v != w.UNASSIGNED_BUCKET and (v & 0x7F) >= len(a["caches"]):
                    return f"bucket names cache index {v & 0x7F} of {len(a['caches'])}"
        else:
            if not a["mask_sets"]:
                return "no mask/value sets"
            for s in a["mask_sets"]:
                m = s["mask"]
                bits = sum(bin(x).count("1") for x in (m["src_ip"], m["dst_ip"], m["src_port"], m["dst_port"]))
                if bits > 7:
                    return f"mask has {bits} bits (at most 7)"
                for v in s["values"]:
                    if v["cache"] not in group.caches:
                        return f"value names {v['cache']}, not in the view"
                    if any(v[k] & ~m[k] for k in m):
                        return f"value {v} outside mask {m}"
        return None

    # ---- timers and loop ----
    def expire(self):
        now = time.time()
        for sid, g in self.groups.items():
            for ip, c in list(g.caches.items()):
                idle = now - c["last_seen"]
                if idle > self.timeout:
                    self.remove(g, ip, "timeout")
                elif idle > 0.8 * self.timeout and not c["removal_query_sent"]:
                    # Ask before dropping it (the drafts' Removal_Query); see report.
                    c["removal_query_sent"] = True
                    self.send(w.REMOVAL_QUERY, [
                        w.component(w.SERVICE_INFO, w.service_body(g.service)),
                        w.component(w.QUERY_INFO, w.query_body(self.addr, g.receive_id, self.addr, ip))],
                        (ip, w.PORT), g)
                    self.log(f"removal_query to {ip} service={sid} idle={idle:.1f}s")

    def run(self):
        self.log(f"listening {self.addr}:{w.PORT} md5={self.password is not None} "
                 f"services={sorted(self.services) or 'any'} timeout={self.timeout}s")
        self.write_state()
        print("READY", flush=True)
        while True:
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if ready:
                data, src = self.sock.recvfrom(65535)
                self.handle(data, src)
            self.expire()


# ---- redirection lookup (for a later data plane) ------------------------------

def bucket_hash(flags, src, dst, sport=0, dport=0, alternate=False):
    """Bucket index 0..255: XOR of the fields the service flags select (primary or
    alternate), folded to 8 bits. A service with no hash flags hashes the
    destination address (the standard web-cache service).

    Interpretation: the drafts define which fields feed the hash (the service
    flags) and the 256-bucket table, not the function's arithmetic, which is the
    router's own business (caches only assign buckets), so any fixed function
    interoperates. This XOR-fold is ours, not Cisco's."""
    f = w.SERVICE_FLAGS
    if alternate:
        sel = [(f["src_ip_alt_hash"], src), (f["dst_ip_alt_hash"], dst),
               (f["src_port_alt_hash"], sport), (f["dst_port_alt_hash"], dport)]
    else:
        sel = [(f["src_ip_hash"], src), (f["dst_ip_hash"], dst),
               (f["src_port_hash"], sport), (f["dst_port_hash"], dport)]
    h, any_flag = 0, False
    for bit, value in sel:
        if flags & bit:
            h ^= value
            any_flag = True
    if not any_flag:
        h = dst
    h ^= h >> 16
    h ^= h >> 8
    return h & 0xFF


def redirect_target(state, service_id, src, dst, sport=0, dport=0):
    """The cache IP a packet src->dst would be redirected to under the state file's
    active assignment for service_id, or None (no group/assignment, unassigned)."""
    g = state["services"].get(str(service_id))
    if not g or not g.get("assignment"):
        return None
    a, flags = g["assignment"], g["service"]["flags"]
    s, d = int.from_bytes(socket.inet_aton(src), "big"), int.from_bytes(socket.inet_aton(dst), "big")
    if a["method"] == "hash":
        v = a["bucket_table"][bucket_hash(flags, s, d, sport, dport)]
        if v != w.UNASSIGNED_BUCKET and v & 0x80:
            v = a["bucket_table"][bucket_hash(flags, s, d, sport, dport, alternate=True)] & 0x7F
        if v == w.UNASSIGNED_BUCKET:
            return None
        return a["caches"][v & 0x7F]
    for mset in a["mask_sets"]:
        m = mset["mask"]
        key = {"src_ip": s & m["src_ip"], "dst_ip": d & m["dst_ip"],
               "src_port": sport & m["src_port"], "dst_port": dport & m["dst_port"]}
        for cache, values in mset["values_per_cache"].items():
            if key in values:
                return cache
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen")
    p.add_argument("--password")
    p.add_argument("--service", type=int, action="append")
    p.add_argument("--forwarding", choices=METHOD_BITS, default="both")
    p.add_argument("--return", choices=METHOD_BITS, default="both")
    p.add_argument("--assignment", choices=ASSIGN_BITS, default="both")
    p.add_argument("--timeout-s", type=float, default=25.0,
                   help="drop a cache after this long without Here_I_Am (2.5 x HERE_I_AM_T)")
    p.add_argument("--squid-compat", action="store_true",
                   help="pad components so Squid 5.x-7.x (64-bit) can parse I_See_You")
    p.add_argument("--state")
    p.add_argument("--log")
    p.add_argument("--lookup", metavar="STATE", help="print the cache a packet goes to, then exit")
    p.add_argument("--src")
    p.add_argument("--dst")
    p.add_argument("--sport", type=int, default=0)
    p.add_argument("--dport", type=int, default=0)
    args = p.parse_args()
    if args.lookup:
        if not (args.service and args.src and args.dst):
            p.error("--lookup needs --service, --src and --dst")
        with open(args.lookup) as f:
            print(redirect_target(json.load(f), args.service[0], args.src, args.dst,
                                  args.sport, args.dport) or "none")
        return 0
    if not args.listen:
        p.error("--listen is required")
    Router(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
