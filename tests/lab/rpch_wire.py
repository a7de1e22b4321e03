"""RPC over HTTP v2 (MS-RPCH) wire pieces shared by the test proxy (rpch_proxy.py)
and the scripted clients (rpch_clients.py): RTS PDUs (PTYPE 20) built and parsed,
the DCE/RPC connection-oriented header, bind / request / response PDUs, and a
blocking reader of whole PDUs from any byte source. Plain Python 3 stdlib.

RTS layout (MS-RPCH 2.2.3.6, the same digest as protocols/common/dcerpc/rts.h): the
16-byte common header (always little-endian, auth_length 0, one fragment), Flags u16,
NumberOfCommands u16, then commands: u32 CommandType and a body the type fixes.
Cookies are 16 raw bytes (a GUID in its little-endian field encoding); uuid.UUID's
bytes_le gives them, str(uuid.UUID(bytes_le=c)) prints them as tshark does.
"""
import struct
import uuid

PTYPE_REQUEST, PTYPE_RESPONSE, PTYPE_FAULT = 0, 2, 3
PTYPE_BIND, PTYPE_BIND_ACK, PTYPE_BIND_NAK = 11, 12, 13
PTYPE_ALTER, PTYPE_ALTER_RESP, PTYPE_RTS = 14, 15, 20
FIRST_FRAG, LAST_FRAG, OBJECT_UUID = 0x01, 0x02, 0x80
HEADER_SIZE = 16

# RTS flags (2.2.3.6.1)
F_NONE, F_PING, F_OTHER_CMD, F_RECYCLE, F_IN, F_OUT, F_EOF, F_ECHO = 0, 1, 2, 4, 8, 0x10, 0x20, 0x40
# RTS command types (2.2.3.5)
(C_RECV_WINDOW, C_FLOW_ACK, C_CONN_TIMEOUT, C_COOKIE, C_LIFETIME, C_KEEPALIVE, C_VERSION, C_EMPTY, C_PADDING,
 C_NEG_ANCE, C_ANCE, C_CLIENT_ADDRESS, C_ASSOC_GROUP, C_DESTINATION, C_PING_TRAFFIC) = range(15)
FD_CLIENT, FD_IN_PROXY, FD_SERVER, FD_OUT_PROXY = 0, 1, 2, 3
MAX_RTS_COMMANDS = 16

NDR_SYNTAX = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860").bytes_le + struct.pack("<I", 2)
# The echo interface the proxy serves on --echo-port (made up for these tests, v1.0).
ECHO_UUID = "6b1f0a53-7b0e-4c3d-9a51-726063686f31"
# Opnum 0 echoes; opnum 1 echoes too, then the proxy starts OUT channel recycling
# (OUT_R2/A2) on that virtual connection: a test's way to ask for it.
ECHO_OPNUM_RECYCLE_OUT = 1
ECHO_SYNTAX = uuid.UUID(ECHO_UUID).bytes_le + struct.pack("<HH", 1, 0)


class WireError(ValueError):
    """Bytes that break the protocol (the message says which rule)."""


def cookie_str(c):
    return str(uuid.UUID(bytes_le=bytes(c)))


def new_cookie():
    return uuid.uuid4().bytes_le


# ---------------------------------------------------------------- common header

def header(ptype, flags, frag_len, call_id=0, auth_len=0):
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, flags, b"\x10\x00\x00\x00", frag_len, auth_len, call_id)


def parse_header(h):
    """(ptype, pfc_flags, frag_length, auth_length, call_id, little_endian) of 16 bytes;
    WireError if it is no DCE/RPC v5 connection-oriented header."""
    if len(h) < HEADER_SIZE:
        raise WireError("short DCE/RPC header")
    vers, minor, ptype, flags = h[0], h[1], h[2], h[3]
    le = (h[4] & 0xF0) == 0x10
    if vers != 5 or minor > 1:
        raise WireError(f"not DCE/RPC v5 (version {vers}.{minor})")
    frag_len, auth_len, call_id = struct.unpack("<HHI" if le else ">HHI", h[8:16])
    if frag_len < HEADER_SIZE:
        raise WireError(f"frag_length {frag_len} below the header size")
    if auth_len + HEADER_SIZE > frag_len:
        raise WireError("auth_length beyond frag_length")
    return ptype, flags, frag_len, auth_len, call_id, le


def read_pdu(read_exact):
    """One whole PDU from read_exact(n) (which returns exactly n bytes, or fewer at the
    end of the stream). Returns None at a clean end (no byte), raises WireError on a
    PDU cut short or a bad header."""
    h = read_exact(HEADER_SIZE)
    if not h:
        return None
    if len(h) < HEADER_SIZE:
        raise WireError("stream ended inside a PDU header")
    frag_len = parse_header(h)[2]
    rest = read_exact(frag_len - HEADER_SIZE)
    if len(rest) < frag_len - HEADER_SIZE:
        raise WireError("stream ended inside a PDU")
    return h + rest


# ---------------------------------------------------------------- RTS

def rts(flags, commands):
    """Builds an RTS PDU; commands: [(type, body bytes)]."""
    body = b"".join(struct.pack("<I", t) + b for t, b in commands)
    return header(PTYPE_RTS, FIRST_FRAG | LAST_FRAG, HEADER_SIZE + 4 + len(body)) + \
        struct.pack("<HH", flags, len(commands)) + body


def cmd_u32(t, v):
    return (t, struct.pack("<I", v))


def cmd_cookie(c, t=C_COOKIE):
    return (t, bytes(c))


def parse_rts(pdu):
    """(flags, [(type, value)]) of an RTS PDU, checked against its frag_length the way
    rts.cc checks it. value: an int for the u32 commands; the 16-byte cookie for Cookie
    and AssociationGroupId; (bytes_received, window, cookie) for FlowControlAck; None
    for Empty, ANCE, NegativeANCE; the raw bytes for Padding and ClientAddress."""
    ptype, _, frag_len, auth_len, _, le = parse_header(pdu)
    if ptype != PTYPE_RTS:
        raise WireError("not an RTS PDU")
    if not le or auth_len:
        raise WireError("RTS PDU big-endian or with an auth trailer")
    if frag_len != len(pdu) or frag_len < HEADER_SIZE + 4:
        raise WireError("RTS frag_length does not match the PDU")
    flags, count = struct.unpack_from("<HH", pdu, 16)
    if count > MAX_RTS_COMMANDS or count * 4 > frag_len - 20:
        raise WireError(f"RTS NumberOfCommands {count} beyond the PDU")
    off, out = 20, []

    def take(n):
        nonlocal off
        if off + n > frag_len:
            raise WireError("RTS command beyond the PDU")
        b = pdu[off:off + n]
        off += n
        return b

    for _ in range(count):
        t = struct.unpack("<I", take(4))[0]
        if t in (C_RECV_WINDOW, C_CONN_TIMEOUT, C_LIFETIME, C_KEEPALIVE, C_VERSION, C_DESTINATION, C_PING_TRAFFIC):
            out.append((t, struct.unpack("<I", take(4))[0]))
        elif t == C_FLOW_ACK:
            n, w = struct.unpack("<II", take(8))
            out.append((t, (n, w, take(16))))
        elif t in (C_COOKIE, C_ASSOC_GROUP):
            out.append((t, take(16)))
        elif t in (C_EMPTY, C_NEG_ANCE, C_ANCE):
            out.append((t, None))
        elif t == C_PADDING:
            out.append((t, take(struct.unpack("<I", take(4))[0])))
        elif t == C_CLIENT_ADDRESS:
            kind = struct.unpack("<I", take(4))[0]
            if kind > 1:
                raise WireError("RTS ClientAddress of an unknown type")
            out.append((t, take(4 if kind == 0 else 16)))
            take(12)
        else:
            raise WireError(f"unknown RTS command type {t}")
    if off != frag_len:
        raise WireError("bytes after the last RTS command")
    return flags, out


def shape(parsed):
    flags, cmds = parsed
    return flags, tuple(t for t, _ in cmds)


SHAPE_CONN_A1 = (F_NONE, (C_VERSION, C_COOKIE, C_COOKIE, C_RECV_WINDOW))
SHAPE_CONN_B1 = (F_NONE, (C_VERSION, C_COOKIE, C_COOKIE, C_LIFETIME, C_KEEPALIVE, C_ASSOC_GROUP))
SHAPE_IN_R_A1 = (F_RECYCLE, (C_VERSION, C_COOKIE, C_COOKIE, C_COOKIE))  # IN_R1/A1 and IN_R2/A1
SHAPE_SUCCESSOR = (F_NONE, (C_COOKIE,))                                 # IN_R1/A5, IN_R2/A5, ...
SHAPE_IN_R2_A4 = (F_NONE, (C_DESTINATION,))                             # IN_R2/A3|A4
SHAPE_OUT_R_A2 = (F_RECYCLE, (C_DESTINATION,))                           # OUT_R1/A1|A2, OUT_R2/A1|A2
SHAPE_OUT_R_A3 = (F_RECYCLE, (C_VERSION, C_COOKIE, C_COOKIE, C_COOKIE, C_RECV_WINDOW))  # OUT_R1/A3, OUT_R2/A3
SHAPE_OUT_R2_A6 = (F_NONE, (C_DESTINATION, C_ANCE))                      # OUT_R2/A5|A6
SHAPE_OUT_R2_A7 = (F_OUT, (C_DESTINATION, C_COOKIE, C_VERSION))
SHAPE_OUT_R2_B3 = (F_EOF, (C_ANCE,))
SHAPE_CONN_A3 = (F_NONE, (C_CONN_TIMEOUT,))
SHAPE_CONN_C2 = (F_NONE, (C_VERSION, C_RECV_WINDOW, C_CONN_TIMEOUT))
SHAPE_FLOW_ACK = (F_OTHER_CMD, (C_FLOW_ACK,))
SHAPE_FLOW_ACK_DEST = (F_OTHER_CMD, (C_DESTINATION, C_FLOW_ACK))


def conn_a1(vc, out_ch, window=65536):
    return rts(F_NONE, [cmd_u32(C_VERSION, 1), cmd_cookie(vc), cmd_cookie(out_ch), cmd_u32(C_RECV_WINDOW, window)])


def conn_b1(vc, in_ch, assoc, lifetime=1 << 30, keepalive=300000):
    return rts(F_NONE, [cmd_u32(C_VERSION, 1), cmd_cookie(vc), cmd_cookie(in_ch), cmd_u32(C_LIFETIME, lifetime),
                        cmd_u32(C_KEEPALIVE, keepalive), cmd_cookie(assoc, C_ASSOC_GROUP)])


def conn_a3(timeout_ms=900000):
    return rts(F_NONE, [cmd_u32(C_CONN_TIMEOUT, timeout_ms)])


def conn_c2(window=65536, timeout_ms=900000):
    return rts(F_NONE, [cmd_u32(C_VERSION, 1), cmd_u32(C_RECV_WINDOW, window), cmd_u32(C_CONN_TIMEOUT, timeout_ms)])


def in_r2_a1(vc, predecessor, successor):
    return rts(F_RECYCLE, [cmd_u32(C_VERSION, 1), cmd_cookie(vc), cmd_cookie(predecessor), cmd_cookie(successor)])


def successor_cookie(successor):  # IN_R2/A5 (and IN_R1/A5)
    return rts(F_NONE, [cmd_cookie(successor)])


def in_r2_a4():
    return rts(F_NONE, [cmd_u32(C_DESTINATION, FD_CLIENT)])


def out_r2_a2():
    return rts(F_RECYCLE, [cmd_u32(C_DESTINATION, FD_CLIENT)])


def out_r2_a3(vc, predecessor, successor, window=262144):
    return rts(F_RECYCLE, [cmd_u32(C_VERSION, 1), cmd_cookie(vc), cmd_cookie(predecessor), cmd_cookie(successor),
                           cmd_u32(C_RECV_WINDOW, window)])


def out_r2_a6():
    return rts(F_NONE, [cmd_u32(C_DESTINATION, FD_CLIENT), (C_ANCE, b"")])


def out_r2_a7(successor):
    return rts(F_OUT, [cmd_u32(C_DESTINATION, FD_SERVER), cmd_cookie(successor), cmd_u32(C_VERSION, 1)])


def out_r2_b3():
    return rts(F_EOF, [(C_ANCE, b"")])


def flow_ack(bytes_received, window, channel):
    return rts(F_OTHER_CMD, [(C_FLOW_ACK, struct.pack("<II", bytes_received, window) + bytes(channel))])


def flow_ack_dest(dest, bytes_received, window, channel):
    return rts(F_OTHER_CMD, [cmd_u32(C_DESTINATION, dest),
                             (C_FLOW_ACK, struct.pack("<II", bytes_received, window) + bytes(channel))])


def ping():
    return rts(F_PING, [])


# ---------------------------------------------------------------- bind, request, response

def bind(call_id, syntax, max_frag=5840, ptype=PTYPE_BIND):
    """A bind (or alter_context) proposing one context (id 0): syntax over NDR."""
    body = struct.pack("<HHI", max_frag, max_frag, 0) + struct.pack("<BBH", 1, 0, 0) + \
        struct.pack("<HBB", 0, 1, 0) + syntax + NDR_SYNTAX
    return header(ptype, FIRST_FRAG | LAST_FRAG, HEADER_SIZE + len(body), call_id) + body


def request_frags(call_id, opnum, stub, max_frag, ctx=0):
    """The request PDUs (FIRST_FRAG ... LAST_FRAG) carrying stub, each at most max_frag."""
    per = max_frag - 24
    out, off = [], 0
    while True:
        chunk = stub[off:off + per]
        flags = (FIRST_FRAG if off == 0 else 0) | (LAST_FRAG if off + per >= len(stub) else 0)
        out.append(header(PTYPE_REQUEST, flags, 24 + len(chunk), call_id) +
                   struct.pack("<IHH", len(stub) - off, ctx, opnum) + chunk)
        off += per
        if off >= len(stub):
            return out


def response_frags(call_id, stub, max_frag, ctx=0):
    per = max_frag - 24
    out, off = [], 0
    while True:
        chunk = stub[off:off + per]
        flags = (FIRST_FRAG if off == 0 else 0) | (LAST_FRAG if off + per >= len(stub) else 0)
        out.append(header(PTYPE_RESPONSE, flags, 24 + len(chunk), call_id) +
                   struct.pack("<IHBB", len(stub) - off, ctx, 0, 0) + chunk)
        off += per
        if off >= len(stub):
            return out


def fault(call_id, status, ctx=0):
    body = struct.pack("<IHBBII", 0, ctx, 0, 0, status, 0)
    return header(PTYPE_FAULT, FIRST_FRAG | LAST_FRAG | 0x20, HEADER_SIZE + len(body), call_id) + body


# ---------------------------------------------------------------- the echo interface (server side)

MAX_ECHO_STUB = 64 << 20


class EchoServer:
    """The echo interface: a DCE/RPC connection-oriented server whose every request is
    answered with its own stub. feed(pdu) returns the PDUs to send back; WireError
    (or struct.error on a PDU shorter than its fields) for what it cannot take."""

    def __init__(self):
        self.max_frag = 5840
        self.contexts = set()
        self.calls = {}
        self.recycle_out_requested = False  # an opnum 1 call was answered: the proxy recycles OUT

    def feed(self, pdu):
        ptype, flags, frag_len, auth_len, call_id, le = parse_header(pdu)
        if not le:
            return [fault(call_id, 0x1C010002)]  # nca_proto_error: big-endian not served
        if ptype in (PTYPE_BIND, PTYPE_ALTER):
            return [self._bind(pdu, ptype, call_id)]
        if ptype == PTYPE_REQUEST:
            alloc_hint, ctx, opnum = struct.unpack_from("<IHH", pdu, 16)
            start = 24 + (16 if flags & OBJECT_UUID else 0)
            stub = pdu[start:frag_len - (auth_len + 8 if auth_len else 0)]
            if ctx not in self.contexts:
                self.calls.pop(call_id, None)
                return [fault(call_id, 0x1C010003, ctx)] if flags & LAST_FRAG else []  # nca_unk_if
            parts = self.calls.setdefault(call_id, [])
            if flags & FIRST_FRAG:
                parts.clear()
            parts.append(stub)
            if sum(len(p) for p in parts) > MAX_ECHO_STUB:
                del self.calls[call_id]
                raise WireError(f"echo call {call_id} above {MAX_ECHO_STUB} bytes")
            if not flags & LAST_FRAG:
                return []
            whole = b"".join(self.calls.pop(call_id))
            if opnum == ECHO_OPNUM_RECYCLE_OUT:
                self.recycle_out_requested = True
            return response_frags(call_id, whole, self.max_frag, ctx)
        if ptype in (PTYPE_RTS,):
            return []
        return []  # auth3, shutdown, co_cancel, orphaned: nothing to answer

    def _bind(self, pdu, ptype, call_id):
        max_xmit, max_recv, assoc = struct.unpack_from("<HHI", pdu, 16)
        self.max_frag = max(min(max_recv, 65535), 1024)  # what the client can receive
        n = pdu[24]
        off, results = 28, []
        for i in range(n):
            ctx, n_ts = struct.unpack_from("<HB", pdu, off)
            syntaxes = [pdu[off + 24 + 20 * k: off + 44 + 20 * k] for k in range(n_ts)]
            off += 24 + 20 * n_ts
            if not results and NDR_SYNTAX in syntaxes:
                self.contexts.add(ctx)
                results.append(struct.pack("<HH", 0, 0) + NDR_SYNTAX)
            else:
                results.append(struct.pack("<HH", 2, 2) + b"\0" * 20)  # provider rejection
        sec = b"6001\0" if ptype == PTYPE_BIND else b""
        body = struct.pack("<HHI", self.max_frag, self.max_frag, assoc or 0x4E5F) + struct.pack("<H", len(sec)) + sec
        body += b"\0" * ((4 - (16 + len(body)) % 4) % 4)
        body += struct.pack("<BBH", len(results), 0, 0) + b"".join(results)
        rtype = PTYPE_BIND_ACK if ptype == PTYPE_BIND else PTYPE_ALTER_RESP
        return header(rtype, FIRST_FRAG | LAST_FRAG, 16 + len(body), call_id) + body
