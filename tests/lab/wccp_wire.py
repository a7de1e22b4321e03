"""WCCPv2 wire format (draft-wilson-wrec-wccp-v2, draft-mclaggan-wccp-v2rev1):
encode/decode of the message header and the components a router and a cache
exchange. Written from the drafts for the router simulator (wccp_router.py).

Every decoder is strict: a length that does not match its contents exactly raises
WireError (the router counts those as "malformed"). IPv4 only (as Squid and the
v2 drafts' original components). Addresses are dotted strings."""
import hashlib
import socket
import struct

VERSION = 0x0200
PORT = 2048

# Message types (draft 5.5).
HERE_I_AM, I_SEE_YOU, REDIRECT_ASSIGN, REMOVAL_QUERY = 10, 11, 12, 13
MESSAGE_NAMES = {HERE_I_AM: "here_i_am", I_SEE_YOU: "i_see_you",
                 REDIRECT_ASSIGN: "redirect_assign", REMOVAL_QUERY: "removal_query"}

# Component types (draft 5.6; 13..15 from rev1).
SECURITY_INFO, SERVICE_INFO, ROUTER_ID_INFO, WC_ID_INFO = 0, 1, 2, 3
RTR_VIEW_INFO, WC_VIEW_INFO, ASSIGNMENT_INFO, QUERY_INFO = 4, 5, 6, 7
CAPABILITY_INFO, ALT_ASSIGNMENT, ASSIGN_MAP, COMMAND_EXTENSION = 8, 13, 14, 15

NO_SECURITY, MD5_SECURITY = 0, 1
SERVICE_STANDARD, SERVICE_DYNAMIC = 0, 1

# Service flags (draft 5.6.2).
SERVICE_FLAGS = {
    "src_ip_hash": 0x1, "dst_ip_hash": 0x2, "src_port_hash": 0x4, "dst_port_hash": 0x8,
    "ports_defined": 0x10, "ports_source": 0x20,
    "src_ip_alt_hash": 0x100, "dst_ip_alt_hash": 0x200,
    "src_port_alt_hash": 0x400, "dst_port_alt_hash": 0x800,
}

# Capability element types and values (draft 5.7.5).
CAP_FORWARDING, CAP_ASSIGNMENT, CAP_RETURN = 1, 2, 3
METHOD_GRE, METHOD_L2 = 0x1, 0x2
ASSIGN_HASH, ASSIGN_MASK = 0x1, 0x2
# Alternate Assignment's assignment types (rev1).
ALT_HASH, ALT_MASK = 0, 1
# Web-Cache Identity Element flags (rev1): U (hash info not used), and "the
# assignment data is a Mask Assignment Data Element" (what Squid sets).
WC_FLAG_U, WC_FLAG_MASK_DATA = 0x8000, 0x0002

# An empty component of a type no draft assigns: the router's --squid-compat
# padding (parsers skip unknown components; Wireshark decodes it cleanly).
COMPAT_GAP = 0xFFFF

COMMAND_SHUTDOWN, COMMAND_SHUTDOWN_RESPONSE = 1, 2
UNASSIGNED_BUCKET = 0xFF
N_BUCKETS = 256


class WireError(ValueError):
    """A message or component that does not follow the drafts (length, count, type)."""


def ip2b(ip):
    return socket.inet_aton(ip)


def b2ip(b):
    return socket.inet_ntoa(b)


class Reader:
    """Cursor over one component body; every read checks it stays inside."""

    def __init__(self, data, what):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise WireError(f"{self.what}: truncated (need {n} at {self.pos} of {len(self.data)})")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def u32(self):
        return struct.unpack("!I", self.take(4))[0]

    def ip(self):
        return b2ip(self.take(4))

    def count(self, elem_size):
        """A 32-bit element count, checked against what is left (no huge loops)."""
        n = self.u32()
        if n * elem_size > len(self.data) - self.pos:
            raise WireError(f"{self.what}: count {n} exceeds the component")
        return n

    def end(self):
        if self.pos != len(self.data):
            raise WireError(f"{self.what}: {len(self.data) - self.pos} trailing octets")


# ---- message ---------------------------------------------------------------

def parse_message(data):
    """-> (type, version, [(component type, body bytes)]). Raises WireError, or
    VersionError for a header with another version."""
    if len(data) < 8:
        raise WireError("message shorter than its header")
    mtype, version, length = struct.unpack("!IHH", data[:8])
    if version != VERSION:
        raise VersionError(version)
    if length != len(data) - 8:
        raise WireError(f"header length {length} but {len(data) - 8} octets follow")
    comps, pos = [], 8
    while pos < len(data):
        if pos + 4 > len(data):
            raise WireError("truncated component header")
        ctype, clen = struct.unpack("!HH", data[pos:pos + 4])
        if pos + 4 + clen > len(data):
            raise WireError(f"component {ctype} length {clen} overruns the message")
        comps.append((ctype, data[pos + 4:pos + 4 + clen]))
        pos += 4 + clen
    return mtype, version, comps


class VersionError(WireError):
    def __init__(self, version):
        super().__init__(f"version 0x{version:04x}")
        self.version = version


def component(ctype, body):
    return struct.pack("!HH", ctype, len(body)) + body


def build_message(mtype, components):
    body = b"".join(components)
    if len(body) > 0xFFFF:
        raise WireError("message too long")
    return struct.pack("!IHH", mtype, VERSION, len(body)) + body


def one(comps, ctype, required=True):
    """The single component of ctype (WireError if repeated, or missing when required)."""
    found = [b for t, b in comps if t == ctype]
    if len(found) > 1:
        raise WireError(f"component {ctype} repeated")
    if not found:
        if required:
            raise WireError(f"component {ctype} missing")
        return None
    return found[0]


# ---- security (5.6.1) --------------------------------------------------------

def security_body(password):
    """No security (option only), or MD5 with a zero digest to be signed later."""
    if password is None:
        return struct.pack("!I", NO_SECURITY)
    return struct.pack("!I", MD5_SECURITY) + bytes(16)


def parse_security(body):
    r = Reader(body, "security info")
    option = r.u32()
    if option == NO_SECURITY:
        r.end()
        return option, None
    if option == MD5_SECURITY:
        digest = r.take(16)
        r.end()
        return option, digest
    raise WireError(f"security option {option}")


def _md5_offset(msg):
    """Offset of the 16-octet MD5 digest in a built message (the first component
    that is Security Info with option MD5), or None."""
    pos = 8
    while pos + 4 <= len(msg):
        ctype, clen = struct.unpack("!HH", msg[pos:pos + 4])
        if ctype == SECURITY_INFO and clen == 20 and \
                struct.unpack("!I", msg[pos + 4:pos + 8])[0] == MD5_SECURITY:
            return pos + 8
        pos += 4 + clen
    return None


def md5_digest(msg_zeroed, password):
    """The drafts' MD5: the password NUL-padded (or cut) to 8 octets, then the whole
    message with the digest field zero."""
    pw = password.encode()[:8].ljust(8, b"\0")
    return hashlib.md5(pw + msg_zeroed).digest()


def sign(msg, password):
    off = _md5_offset(msg)
    if off is None:
        return msg
    zeroed = msg[:off] + bytes(16) + msg[off + 16:]
    return msg[:off] + md5_digest(zeroed, password) + msg[off + 16:]


def verify(msg, password):
    """True if msg carries an MD5 Security Info whose digest matches password."""
    off = _md5_offset(msg)
    if off is None:
        return False
    zeroed = msg[:off] + bytes(16) + msg[off + 16:]
    return md5_digest(zeroed, password) == msg[off:off + 16]


# ---- service info (5.6.2) ----------------------------------------------------

def parse_service(body):
    r = Reader(body, "service info")
    stype, sid, prio, proto = struct.unpack("!BBBB", r.take(4))
    flags = r.u32()
    ports = list(struct.unpack("!8H", r.take(16)))
    r.end()
    if stype not in (SERVICE_STANDARD, SERVICE_DYNAMIC):
        raise WireError(f"service type {stype}")
    return {"type": "dynamic" if stype else "standard", "id": sid, "priority": prio,
            "protocol": proto, "flags": flags,
            "flag_names": [n for n, v in SERVICE_FLAGS.items() if flags & v],
            "ports": [p for p in ports if p]}


def service_body(svc):
    ports = (list(svc["ports"]) + [0] * 8)[:8]
    return struct.pack("!BBBBI8H", 1 if svc["type"] == "dynamic" else 0, svc["id"],
                       svc["priority"], svc["protocol"], svc["flags"], *ports)


# ---- web-cache identity (5.6.4 / 5.7.2) --------------------------------------

def _parse_mask_sets(r):
    sets = []
    for _ in range(r.count(16)):
        sip, dip, sp, dp = r.u32(), r.u32(), r.u16(), r.u16()
        values = []
        for _ in range(r.count(16)):
            vs, vd, vsp, vdp = r.u32(), r.u32(), r.u16(), r.u16()
            values.append({"src_ip": vs, "dst_ip": vd, "src_port": vsp, "dst_port": vdp,
                           "cache": r.ip()})
        sets.append({"mask": {"src_ip": sip, "dst_ip": dip, "src_port": sp, "dst_port": dp},
                     "values": values})
    return sets


def _mask_sets_body(sets):
    out = [struct.pack("!I", len(sets))]
    for s in sets:
        m = s["mask"]
        out.append(struct.pack("!IIHHI", m["src_ip"], m["dst_ip"], m["src_port"],
                               m["dst_port"], len(s["values"])))
        for v in s["values"]:
            out.append(struct.pack("!IIHH", v["src_ip"], v["dst_ip"], v["src_port"],
                                   v["dst_port"]) + ip2b(v["cache"]))
    return b"".join(out)


def parse_wc_identity_element(r):
    ip, hash_rev, flags = r.ip(), r.u16(), r.u16()
    ident = {"ip": ip, "hash_revision": hash_rev, "flags": flags}
    if flags & WC_FLAG_MASK_DATA:
        ident["data"] = "mask"
        ident["mask_sets"] = _parse_mask_sets(r)
    else:
        ident["data"] = "hash"
        bits = r.take(32)
        ident["buckets"] = [i for i in range(N_BUCKETS) if bits[i // 8] & (0x80 >> (i % 8))]
    ident["weight"], ident["status"] = r.u16(), r.u16()
    return ident


def wc_identity_element(ident):
    head = ip2b(ident["ip"]) + struct.pack("!HH", ident.get("hash_revision", 0), ident["flags"])
    if ident["data"] == "mask":
        data = _mask_sets_body(ident.get("mask_sets", []))
    else:
        bits = bytearray(32)
        for b in ident.get("buckets", []):
            bits[b // 8] |= 0x80 >> (b % 8)
        data = bytes(bits)
    return head + data + struct.pack("!HH", ident.get("weight", 0), ident.get("status", 0))


def parse_wc_identity(body):
    r = Reader(body, "web-cache identity info")
    ident = parse_wc_identity_element(r)
    r.end()
    return ident


# ---- views and identities ----------------------------------------------------

def parse_wc_view(body):
    """Web-Cache View Info (5.6.6), sent by a cache."""
    r = Reader(body, "web-cache view info")
    change = r.u32()
    routers = [{"ip": r.ip(), "receive_id": r.u32()} for _ in range(r.count(8))]
    caches = [r.ip() for _ in range(r.count(4))]
    r.end()
    return {"change_number": change, "routers": routers, "caches": caches}


def router_identity_body(router_ip, receive_id, sent_to, received_from):
    """Router Identity Info (5.6.3)."""
    return (ip2b(router_ip) + struct.pack("!I", receive_id) + ip2b(sent_to)
            + struct.pack("!I", len(received_from)) + b"".join(ip2b(i) for i in received_from))


def parse_router_identity(body):
    r = Reader(body, "router identity info")
    out = {"ip": r.ip(), "receive_id": r.u32(), "sent_to": r.ip()}
    out["received_from"] = [r.ip() for _ in range(r.count(4))]
    r.end()
    return out


def router_view_body(change, key_ip, key_change, routers, cache_idents):
    """Router View Info (5.6.5): change number, assignment key, routers, caches."""
    return (struct.pack("!I", change) + ip2b(key_ip) + struct.pack("!I", key_change)
            + struct.pack("!I", len(routers)) + b"".join(ip2b(i) for i in routers)
            + struct.pack("!I", len(cache_idents))
            + b"".join(wc_identity_element(c) for c in cache_idents))


def parse_router_view(body):
    r = Reader(body, "router view info")
    out = {"change_number": r.u32(), "key_ip": r.ip(), "key_change": r.u32()}
    out["routers"] = [r.ip() for _ in range(r.count(4))]
    out["caches"] = [parse_wc_identity_element(r) for _ in range(r.count(4))]
    r.end()
    return out


# ---- assignments (5.6.7, 5.6.10) ---------------------------------------------

def _parse_key_and_routers(r):
    out = {"key_ip": r.ip(), "key_change": r.u32()}
    out["routers"] = [{"ip": r.ip(), "receive_id": r.u32(), "change_number": r.u32()}
                      for _ in range(r.count(12))]
    return out


def _parse_hash_assignment(r):
    out = _parse_key_and_routers(r)
    out["caches"] = [r.ip() for _ in range(r.count(4))]
    out["buckets"] = list(r.take(N_BUCKETS))
    out["method"] = "hash"
    return out


def parse_assignment_info(body):
    """Assignment Info (type 6): hash assignment."""
    r = Reader(body, "assignment info")
    out = _parse_hash_assignment(r)
    r.end()
    return out


def parse_alt_assignment(body):
    """Alternate Assignment (type 13): a typed hash or mask assignment."""
    r = Reader(body, "alternate assignment")
    atype, alen = r.u16(), r.u16()
    inner = Reader(r.take(alen), "alternate assignment data")
    r.end()
    if atype == ALT_HASH:
        out = _parse_hash_assignment(inner)
    elif atype == ALT_MASK:
        out = _parse_key_and_routers(inner)
        out["mask_sets"] = _parse_mask_sets(inner)
        out["method"] = "mask"
    else:
        raise WireError(f"alternate assignment type {atype}")
    inner.end()
    return out


def _key_and_routers_body(a):
    return (ip2b(a["key_ip"]) + struct.pack("!II", a["key_change"], len(a["routers"]))
            + b"".join(ip2b(x["ip"]) + struct.pack("!II", x["receive_id"], x["change_number"])
                       for x in a["routers"]))


def assignment_info_body(a):
    return (_key_and_routers_body(a) + struct.pack("!I", len(a["caches"]))
            + b"".join(ip2b(c) for c in a["caches"]) + bytes(a["buckets"]))


def alt_assignment_body(a):
    if a["method"] == "hash":
        atype, data = ALT_HASH, assignment_info_body(a)
    else:
        atype, data = ALT_MASK, _key_and_routers_body(a) + _mask_sets_body(a["mask_sets"])
    return struct.pack("!HH", atype, len(data)) + data


# ---- query, capabilities, command extension -----------------------------------

def query_body(router_ip, receive_id, sent_to, target):
    """Router Query Info (5.6.8), carried by Removal_Query."""
    return ip2b(router_ip) + struct.pack("!I", receive_id) + ip2b(sent_to) + ip2b(target)


def parse_query(body):
    r = Reader(body, "router query info")
    out = {"router": r.ip(), "receive_id": r.u32(), "sent_to": r.ip(), "target": r.ip()}
    r.end()
    return out


def capabilities_body(caps):
    """caps: {capability type: 32-bit value}."""
    return b"".join(struct.pack("!HHI", t, 4, v) for t, v in sorted(caps.items()))


def capabilities_body_squid_compat(caps):
    """Capabilities for Squid 5.x-7.x on 64-bit hosts, which step 12 octets per
    capability element (not 8) and want 4 spare octets after the last: each real
    element is followed by an empty unknown element; the last by an unknown element
    whose 12-octet value holds what Squid reads as a type-4 element (which it
    ignores) plus the spare octets. A strict parser sees the three real elements and
    three unknown ones; Squid sees the three real ones and a type 4."""
    items = sorted(caps.items())
    out = []
    for i, (t, v) in enumerate(items):
        out.append(struct.pack("!HHI", t, 4, v))
        if i < len(items) - 1:
            out.append(struct.pack("!HH", COMPAT_GAP, 0))
    out.append(struct.pack("!HH", COMPAT_GAP, 12) + struct.pack("!HHI", 4, 4, 0) + bytes(4))
    return b"".join(out)


def parse_capabilities(body):
    r = Reader(body, "capability info")
    caps = {}
    while r.pos < len(body):
        ctype, clen = r.u16(), r.u16()
        value = r.take(clen)
        if ctype in (CAP_FORWARDING, CAP_ASSIGNMENT, CAP_RETURN):
            if clen != 4:
                raise WireError(f"capability {ctype} length {clen}")
            if ctype in caps:
                raise WireError(f"capability {ctype} repeated")
            caps[ctype] = struct.unpack("!I", value)[0]
    return caps


def parse_command_extension(body):
    r = Reader(body, "command extension")
    ctype, clen = r.u16(), r.u16()
    data = r.take(clen)
    r.end()
    out = {"command": ctype}
    if ctype in (COMMAND_SHUTDOWN, COMMAND_SHUTDOWN_RESPONSE):
        if clen != 4:
            raise WireError(f"command {ctype} length {clen}")
        out["cache"] = b2ip(data)
    return out


def command_extension_body(ctype, cache_ip):
    return struct.pack("!HH", ctype, 4) + ip2b(cache_ip)
