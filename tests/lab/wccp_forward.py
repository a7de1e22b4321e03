#!/usr/bin/python3
"""The data plane of the WCCPv2 test router (tests/lab/wccp_router.py): GRE or L2
redirection.

  wccp_forward.py --state STATE --router-ip ADDR --lan IFACE --wan IFACE
                  [--box-iface IFACE] [--lan-service N] [--wan-service N] [--mtu BYTES]
                  [--no-redirect ADDR ...] [--counts FILE] [--log FILE]

Run in the router's namespace next to wccp_router.py (whose --state it reads). It
captures the IPv4 TCP packets the router receives on the LAN interface (service
group --lan-service, default 61: WAAS, hash on the source address) and on the WAN
interface (--wan-service, default 62: hash on the destination) with AF_PACKET
sockets, taking only frames addressed to this host (pkttype PACKET_HOST), never the
ones it sends. For each it asks redirect_target() which cache gets it under the
router's current assignment (the state file is re-read whenever it is replaced):

  a cache   -> sent to it as GRE (protocol type 0x883E) with the 4-octet WCCPv2
               redirect header (flags 0x01 dynamic, service id, alternate bucket 0,
               primary bucket), by a raw IPPROTO_GRE socket bound to --router-ip:
               the kernel adds the outer header (router-ip -> cache) and fragments
               it when the result exceeds the box segment's MTU;
               or, when the router offers L2 forwarding and the cache asked for it
               (its Here_I_Am capabilities in the state file), and --box-iface names
               the caches' segment: L2, the packet unchanged (TTL too) in a frame to
               the cache's MAC address (from the neighbour table, which the router's
               WCCP messages to the cache fill), by an AF_PACKET socket on that
               interface
  no cache  -> forwarded as a router would (fail open): TTL decremented and written
               back through a raw IP_HDRINCL socket, which the kernel routes as a
               locally generated packet (OUTPUT, not FORWARD)

The caller must keep the kernel from forwarding the originals too, because an
AF_PACKET socket only taps them: in the router's namespace
  iptables -A FORWARD -i LAN -p tcp -j DROP;  iptables -A FORWARD -i WAN -p tcp -j DROP
What the caches send back by plain IP (the box segment) the kernel forwards itself.
GRE the caches return to --router-ip (WCCP "GRE return" of packets they bypass) is
decapsulated and forwarded the same way as unassigned packets.

Two things a real router gets from hardware and this one must do itself: the TCP
checksum of a packet that came over a veth is often only the pseudo-header sum
(checksum offload: CHECKSUM_PARTIAL), and a sender with TSO hands over segments of up
to 64 KiB. So every TCP packet sent on is re-segmented to --mtu (default 1500) and its
checksums recomputed.

--no-redirect ADDR (repeatable): packets to or from ADDR are never redirected, only
forwarded, as an IOS redirect-list that denies them would. For the caches' own
addresses: the inner channel between a cache and its WAN peer must reach that cache,
not whichever one owns the bucket its address hashes to.

A cache that left the router's view (timed out) gets nothing even while the
assignment naming it is still the latest (stale): its buckets are forwarded normally
until the designated cache sends a new one, as a router does with a lost cache's.

Counts (--counts, JSON, rewritten atomically at most twice a second and on exit), in
packets sent on (after re-segmenting): redirected packets/bytes per cache and
packets per service, forwarded (no cache), returned (GRE from a cache), dropped
(TTL, send errors, malformed). Log: one line per event (state
reload, first packet to each cache, errors). SIGTERM/SIGINT: write counts, exit 0."""
import argparse
import array
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wccp_router  # noqa: E402
import wccp_wire as w  # noqa: E402

ETH_P_IP = 0x0800
PACKET_HOST = 0
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0  # <linux/in.h>; the socket module lacks them
GRE_PROTO_WCCP = 0x883E
WCCP_FLAG_DYNAMIC = 0x01
IPPROTO_TCP = 6


def checksum(data):
    """The Internet checksum (RFC 1071) of data."""
    if len(data) % 2:
        data += b"\0"
    s = sum(array.array("H", data))  # native order; the fold is order-independent
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    s = ~s & 0xFFFF
    return socket.htons(s) if sys.byteorder == "little" else s


def ip_with_checksum(hdr):
    hdr = bytearray(hdr)
    hdr[10:12] = b"\0\0"
    hdr[10:12] = struct.pack("!H", checksum(bytes(hdr)))
    return bytes(hdr)


def tcp_segments(pkt, mtu):
    """The IPv4 TCP packet pkt as packets of at most mtu octets with correct IP and TCP
    checksums (one when it fits). Offloaded senders leave the TCP checksum partial."""
    ihl = (pkt[0] & 0x0F) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    pkt = pkt[:total]
    iph, tcp = pkt[:ihl], pkt[ihl:]
    thl = (tcp[12] >> 4) * 4
    th, payload = tcp[:thl], tcp[thl:]
    mss = max(mtu - ihl - thl, 8)
    chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)] or [b""]
    seq = struct.unpack_from("!I", th, 4)[0]
    ident = struct.unpack_from("!H", iph, 4)[0]
    out = []
    for n, chunk in enumerate(chunks):
        t = bytearray(th)
        struct.pack_into("!I", t, 4, (seq + n * mss) & 0xFFFFFFFF)
        if n < len(chunks) - 1:
            t[13] &= ~0x09 & 0xFF      # FIN and PSH only on the last segment
        if n > 0:
            t[13] &= ~0x80 & 0xFF      # CWR only on the first
        t[16:18] = b"\0\0"
        seg = bytes(t) + chunk
        pseudo = iph[12:20] + struct.pack("!BBH", 0, IPPROTO_TCP, len(seg))
        t[16:18] = struct.pack("!H", checksum(pseudo + seg))
        h = bytearray(iph)
        struct.pack_into("!HH", h, 2, ihl + len(seg), (ident + n) & 0xFFFF)
        out.append(ip_with_checksum(h) + bytes(t) + chunk)
    return out


def local_addresses():
    r = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True)
    return {line.split()[3].split("/")[0] for line in r.stdout.splitlines()}


class Forwarder:
    def __init__(self, args):
        self.state_path, self.router_ip, self.mtu = args.state, args.router_ip, args.mtu
        self.counts_path = args.counts
        self.no_redirect = set(args.no_redirect)
        self.log_file = open(args.log, "a", buffering=1) if args.log else None
        self.local = local_addresses()
        self.state, self.state_id, self.state_checked = {}, None, 0.0
        self.counts = {"redirected": {}, "redirected_bytes": {}, "by_service": {}, "by_method": {}, "forwarded": 0,
                       "returned": 0, "dropped": {"ttl": 0, "send_error": 0, "malformed": 0}}
        self.dirty, self.counts_written = True, 0.0
        self.taps = {}
        for iface, service in ((args.lan, args.lan_service), (args.wan, args.wan_service)):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((iface, ETH_P_IP))
            self.taps[s] = (iface, service)
        self.gre = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
        self.gre.bind((self.router_ip, 0))
        self.gre.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        self.box_iface = args.box_iface
        self.l2 = None
        if self.box_iface:
            # Protocol 0 and unbound: it only sends (sendto names the interface and
            # the protocol); bound to ETH_P_IP it would also receive every frame.
            self.l2 = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        self.macs = {}  # cache address -> MAC, from the neighbour table

    def log(self, line):
        if self.log_file:
            self.log_file.write(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) +
                                f".{int(time.time() * 1000) % 1000:03d}Z {line}\n")

    def reload_state(self):
        """Re-reads the router's state file when it was replaced (checked every 50 ms)."""
        now = time.monotonic()
        if now - self.state_checked < 0.05:
            return
        self.state_checked = now
        try:
            st = os.stat(self.state_path)
        except OSError:
            return
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        if ident == self.state_id:
            return
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return  # replaced atomically, so a torn read is a race with a delete: retry
        self.state_id = ident
        old = self.summary(self.state)
        self.state = state
        new = self.summary(state)
        if new != old:
            self.log(f"assignment {new or 'none'}")
        # The caches it may redirect to now, in the counts at once: a test that reads
        # them empty knows every redirect so far is counted there.
        in_view = sorted({c.get("ip") for g in state.get("services", {}).values() for c in g.get("caches", [])} - {None})
        if in_view != self.counts.get("caches_in_view"):
            self.counts["caches_in_view"] = in_view
            self.macs.clear()  # a cache that came back may have another MAC address
            self.dirty = True
            self.write_counts(force=True)

    @staticmethod
    def summary(state):
        parts = []
        for sid, g in sorted(state.get("services", {}).items()):
            a = g.get("assignment") or {}
            split = a.get("buckets_per_cache") or a.get("values_per_cache_count") or {}
            parts.append(f"{sid}:{a.get('method', '-')}:" + ",".join(f"{c}={n}" for c, n in split.items()))
        return " ".join(parts)

    def method(self, service, cache):
        """'l2' when the router offers L2 forwarding, the cache asked for it and the
        caches' segment is known; else 'gre' (L2 when both can, as a cache picks)."""
        g = self.state.get("services", {}).get(str(service), {})
        asked = next((c.get("capabilities", {}).get("forwarding", []) for c in g.get("caches", [])
                      if c.get("ip") == cache), [])
        offered = self.state.get("capabilities", {}).get("forwarding", [])
        return "l2" if self.l2 and "l2" in asked and "l2" in offered else "gre"

    def mac(self, cache):
        """The cache's MAC address on --box-iface, or None (not in the neighbour table)."""
        if cache not in self.macs:
            with open("/proc/net/arp") as f:
                for line in f.read().splitlines()[1:]:
                    cols = line.split()
                    if len(cols) >= 6 and cols[0] == cache and cols[5] == self.box_iface and cols[3] != "00:00:00:00:00:00":
                        self.macs[cache] = bytes.fromhex(cols[3].replace(":", ""))
        return self.macs.get(cache)

    def decide(self, service, src, dst, sport, dport):
        """(cache, primary bucket) for a packet of service, or None: not redirected."""
        if src in self.no_redirect or dst in self.no_redirect:
            return None
        g = self.state.get("services", {}).get(str(service))
        if not g or not g.get("assignment"):
            return None
        svc = g["service"]
        if svc.get("protocol", IPPROTO_TCP) not in (0, IPPROTO_TCP):
            return None
        if svc["flags"] & w.SERVICE_FLAGS["ports_defined"]:
            port = sport if svc["flags"] & w.SERVICE_FLAGS["ports_source"] else dport
            if port not in svc["ports"]:
                return None
        cache = wccp_router.redirect_target(self.state, service, src, dst, sport, dport)
        if cache not in {c["ip"] for c in g.get("caches", [])}:
            return None  # unassigned, or its cache left the view (timed out): not redirected
        bucket = 0
        if g["assignment"]["method"] == "hash":
            s, d = (int.from_bytes(socket.inet_aton(a), "big") for a in (src, dst))
            bucket = wccp_router.bucket_hash(svc["flags"], s, d, sport, dport)
        return cache, bucket

    def count(self, key, n=1):
        self.counts[key] += n
        self.dirty = True

    def forward(self, pkt, kind="forwarded"):
        """Sends pkt on as a router would: TTL minus one, routed by the kernel."""
        if pkt[8] <= 1:
            self.counts["dropped"]["ttl"] += 1
            self.dirty = True
            return
        pkt = bytearray(pkt)
        pkt[8] -= 1
        dst = socket.inet_ntoa(bytes(pkt[16:20]))
        pieces = tcp_segments(bytes(pkt), self.mtu) if pkt[9] == IPPROTO_TCP else [ip_with_checksum(
            pkt[:(pkt[0] & 0xF) * 4]) + bytes(pkt[(pkt[0] & 0xF) * 4:])]
        for p in pieces:
            try:
                self.raw.sendto(p, (dst, 0))
                self.count(kind)
            except OSError as e:
                self.counts["dropped"]["send_error"] += 1
                self.log(f"forward to {dst} failed: {e}")

    def redirect(self, pkt, service, cache, bucket):
        method = self.method(service, cache)
        mac = self.mac(cache) if method == "l2" else None
        if method == "l2" and mac is None:
            self.counts["dropped"]["send_error"] += 1
            self.log(f"L2 to {cache}: no MAC address for it on {self.box_iface}")
            return
        header = struct.pack("!HHBBBB", 0, GRE_PROTO_WCCP, WCCP_FLAG_DYNAMIC, service, 0, bucket)
        for p in tcp_segments(pkt, self.mtu):
            try:
                if mac:
                    self.l2.sendto(p, (self.box_iface, ETH_P_IP, 0, 0, mac))
                else:
                    self.gre.sendto(header + p, (cache, 0))
            except OSError as e:
                self.counts["dropped"]["send_error"] += 1
                self.log(f"{method} to {cache} failed: {e}")
                continue
            if cache not in self.counts["redirected"]:
                self.log(f"first packet redirected to {cache} by {method} service={service} bucket={bucket}")
            self.counts["by_method"][method] = self.counts["by_method"].get(method, 0) + 1
            for key, n in (("redirected", 1), ("redirected_bytes", len(p))):
                self.counts[key][cache] = self.counts[key].get(cache, 0) + n
            self.counts["by_service"][str(service)] = self.counts["by_service"].get(str(service), 0) + 1
        self.dirty = True

    def tapped(self, sock):
        pkt, addr = sock.recvfrom(262144)
        if addr[2] != PACKET_HOST or len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] != IPPROTO_TCP:
            return  # not received by this host, not IPv4 TCP: the kernel's business
        src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
        if dst in self.local:
            return  # for the router itself
        ihl = (pkt[0] & 0xF) * 4
        if len(pkt) < ihl + 20 or struct.unpack_from("!H", pkt, 6)[0] & 0x1FFF:
            self.counts["dropped"]["malformed"] += 1  # short, or a non-first fragment
            return
        sport, dport = struct.unpack_from("!HH", pkt, ihl)
        _, service = self.taps[sock]
        self.reload_state()
        target = self.decide(service, src, dst, sport, dport)
        if target:
            self.redirect(pkt, service, *target)
        else:
            self.forward(pkt)

    def returned(self):
        """GRE a cache sent back to the router: decapsulate, forward normally."""
        pkt = self.gre.recv(262144)
        ihl = (pkt[0] & 0xF) * 4
        if socket.inet_ntoa(pkt[16:20]) != self.router_ip or len(pkt) < ihl + 4:
            return
        flags, proto = struct.unpack_from("!HH", pkt, ihl)
        off = ihl + 4 + 4 * bin(flags & 0xB000).count("1")  # checksum, key, sequence words
        if proto == GRE_PROTO_WCCP:
            off += 4
        elif proto != ETH_P_IP:
            return
        inner = pkt[off:]
        if len(inner) < 20 or inner[0] >> 4 != 4:
            self.counts["dropped"]["malformed"] += 1
            return
        self.forward(inner, "returned")

    def write_counts(self, force=False):
        now = time.monotonic()
        if not self.counts_path or not self.dirty or (not force and now - self.counts_written < 0.5):
            return
        tmp = self.counts_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(self.counts, updated=time.time()), f, indent=1, sort_keys=True)
        os.replace(tmp, self.counts_path)
        self.dirty, self.counts_written = False, now

    def run(self):
        self.reload_state()
        self.log(f"forwarding: router {self.router_ip}, taps " +
                 ", ".join(f"{i}=service {s}" for i, s in self.taps.values()) + f", mtu {self.mtu}")
        self.write_counts(force=True)
        print("READY", flush=True)
        socks = [*self.taps, self.gre]
        try:
            while True:
                ready, _, _ = select.select(socks, [], [], 0.2)
                for s in ready:
                    self.returned() if s is self.gre else self.tapped(s)
                self.reload_state()
                self.write_counts()
        finally:
            self.dirty = True
            self.write_counts(force=True)
            self.log("stopped")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state", required=True, help="wccp_router.py's --state file")
    p.add_argument("--router-ip", required=True, help="the router's address on the caches' segment")
    p.add_argument("--lan", required=True, help="interface towards the clients")
    p.add_argument("--wan", required=True, help="interface towards the servers")
    p.add_argument("--lan-service", type=int, default=61)
    p.add_argument("--wan-service", type=int, default=62)
    p.add_argument("--box-iface", help="the caches' segment: L2 forwarding goes out there (without it, GRE only)")
    p.add_argument("--mtu", type=int, default=1500, help="largest inner packet sent on")
    p.add_argument("--no-redirect", action="append", default=[], metavar="ADDR",
                   help="never redirect packets to or from ADDR (repeatable)")
    p.add_argument("--counts")
    p.add_argument("--log")
    args = p.parse_args()

    def stop(*_):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    Forwarder(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
