"""The scripted RPC over HTTP v2 client and the hostile sender of rpch_clients.py
(plain sockets, stdlib only).

EchoClient: one virtual connection to the proxy's echo interface. open() sends the
IN head (Basic auth, Content-Length 1 GiB, Expect: 100-continue and waits for it;
HTTP/1.0 without Expect if http10) and the OUT head (Content-Length 76), CONN/A1 and
CONN/B1, and waits for 200, CONN/A3 and CONN/C2. A reader thread takes the OUT body
apart: FlowControlAcks for the current IN channel open the send window (CONN/C2's
ReceiveWindowSize, honoured: the client never has more unacknowledged RPC bytes in
flight on its IN channel), other RTS PDUs are counted, RPC PDUs queued for call().
The client acks the OUT direction too (FlowControlAckWithDestination to the outbound
proxy every half window), as impacket does.

recycle_in(): IN channel recycling as IN_R2: a new IN channel whose first PDU is
IN_R2/A1 (VC, predecessor, successor); once IN_R2/A4 arrives on the OUT channel,
IN_R2/A5 (the successor cookie) as the last PDU on the old channel; the old one is
then expected to be closed by the proxy; later calls go on the new one.

recycle_out(): OUT channel recycling as OUT_R2, asked for with an echo opnum 1 call:
OUT_R2/A2 arrives; a new OUT channel with OUT_R2/A3 (VC, predecessor, successor,
window); OUT_R2/A6 arrives on the old one; OUT_R2/A7 on the IN channel; OUT_R2/B3
ends the old OUT channel, the reader reads the new one's response head and goes on
there; the old one is expected to be closed by the proxy.

kill(which): the IN or OUT socket closed with SO_LINGER 0 (an RST); then waits for
the proxy to end the other channel.
"""
import hashlib
import queue
import random
import socket
import struct
import threading
import time

import rpch_wire as w
from rpch_http import split_host_port


def _basic(user, password, domain):
    import base64
    return base64.b64encode(f"{domain}\\{user}:{password}".encode()).decode()


def _read_head(sock, buf=b"", deadline=10):
    sock.settimeout(deadline)
    while b"\r\n\r\n" not in buf:
        d = sock.recv(4096)
        if not d:
            raise ConnectionError(f"connection ended before a full HTTP head: {buf[:200]!r}")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    sock.settimeout(None)
    return head.decode("latin-1"), rest


def wait_end(sock, deadline):
    """How sock ended: 'eof' (FIN), 'reset', or 'open' if neither within deadline s."""
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < deadline:
            sock.settimeout(max(0.05, deadline - (time.monotonic() - t0)))
            try:
                d = sock.recv(65536)
            except socket.timeout:
                continue
            if not d:
                return "eof", time.monotonic() - t0
    except (ConnectionResetError, BrokenPipeError):
        return "reset", time.monotonic() - t0
    except OSError as e:
        return f"error:{e.errno}", time.monotonic() - t0
    return "open", time.monotonic() - t0


class EchoClient:
    def __init__(self, req):
        self.req = req
        host, port, self.host_header = split_host_port(req["proxy"])
        self.addr = (host, port)
        self.query = f"{req['server']}:{req.get('port', 6001)}"
        self.vc, self.assoc = w.new_cookie(), w.new_cookie()
        self.out_cookie = w.new_cookie()
        self.in_cookie = w.new_cookie()
        self.window = 65536           # the proxy's, from CONN/C2
        self.sent = 0                 # RPC bytes sent on the current IN channel
        self.acked = 0                # BytesReceived of the last ack for it
        self.cv = threading.Condition()
        self.send_lock = threading.Lock()
        self.pdus = queue.Queue()
        self.rts_seen = {}
        self.out_received = 0
        self.out_acked = 0
        self.reader_end = None        # how the OUT body ended, set by the reader
        self.call_id = 0
        self.out_next = self.out_old = None  # OUT recycling: the successor (sock, cookie); the predecessor
        self.max_frag = 5840

    # ---- channels
    def _in_channel(self, cookie_first_pdu):
        s = socket.create_connection(self.addr, timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        auth = _basic(self.req.get("user", "Administrator"), self.req.get("password", "x"), self.req.get("domain", "WANOPT"))
        if self.req.get("http10"):
            head = (f"RPC_IN_DATA /rpc/rpcproxy.dll?{self.query} HTTP/1.0\r\nUser-Agent: MSRPC\r\n"
                    f"Content-Length: 1073741824\r\nAuthorization: Basic {auth}\r\n\r\n")
        else:
            te = "Transfer-Encoding: chunked\r\n" if self.req.get("chunked") else "Content-Length: 1073741824\r\n"
            head = (f"RPC_IN_DATA /rpc/rpcproxy.dll?{self.query} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                    f"User-Agent: MSRPC\r\nAccept: application/rpc\r\nConnection: Keep-Alive\r\n{te}"
                    f"Expect: 100-continue\r\nAuthorization: Basic {auth}\r\n\r\n")
        s.sendall(head.encode())
        if not self.req.get("http10"):
            h, rest = _read_head(s)
            if not h.startswith("HTTP/1.1 100 ") or rest:
                raise ConnectionError(f"IN channel: expected 100 Continue, got {h[:80]!r}")
        s.settimeout(None)
        self._send(s, cookie_first_pdu)
        return s

    def _send(self, s, data):
        if self.req.get("chunked"):
            data = b"%x\r\n" % len(data) + data + b"\r\n"
        with self.send_lock:  # the reader thread sends FlowControlAcks on the IN channel too
            s.sendall(data)

    def open(self):
        self.in_sock = self._in_channel(w.conn_b1(self.vc, self.in_cookie, self.assoc))
        o = self._out_request(w.conn_a1(self.vc, self.out_cookie, 262144))
        h, rest = _read_head(o)
        if not h.startswith("HTTP/1.1 200 ") or "content-length: 1073741824" not in h.lower():
            raise ConnectionError(f"OUT channel: {h[:200]!r}")
        self.out_sock, self.out_buf = o, rest
        self.reader = threading.Thread(target=self._reader, daemon=True)
        self.reader.start()
        self._wait(lambda: self.rts_seen.get("CONN/C2"), 10, "CONN/C2")
        if not self.rts_seen.get("CONN/A3"):
            raise ConnectionError("no CONN/A3 before CONN/C2")

    def _out_request(self, first_pdu):
        o = socket.create_connection(self.addr, timeout=10)
        o.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        auth = _basic(self.req.get("user", "Administrator"), self.req.get("password", "x"), self.req.get("domain", "WANOPT"))
        ver = "1.0" if self.req.get("http10") else "1.1"
        o.sendall((f"RPC_OUT_DATA /rpc/rpcproxy.dll?{self.query} HTTP/{ver}\r\nHost: {self.host_header}\r\n"
                   f"User-Agent: MSRPC\r\nAccept: application/rpc\r\nContent-Length: {len(first_pdu)}\r\n"
                   f"Authorization: Basic {auth}\r\n\r\n").encode() + first_pdu)
        return o

    def _reader(self):
        buf = self.out_buf

        def read_exact(n):
            nonlocal buf
            while len(buf) < n:
                d = self.out_sock.recv(65536)
                if not d:
                    break
                buf += d
            b, buf = buf[:n], buf[n:]
            return b
        try:
            while True:
                pdu = w.read_pdu(read_exact)
                if pdu is None:
                    self.reader_end = "eof"
                    break
                if pdu[2] == w.PTYPE_RTS:
                    if self._rts(pdu) == "OUT_R2/B3":  # the last PDU on this OUT channel
                        if buf:
                            raise w.WireError("bytes after OUT_R2/B3 on the old OUT channel")
                        buf = self._switch_out()
                    continue
                self.pdus.put(pdu)
                self.out_received += len(pdu)
                if self.out_received - self.out_acked >= 131072:
                    self.out_acked = self.out_received
                    self._send(self.in_sock, w.flow_ack_dest(w.FD_OUT_PROXY, self.out_received, 262144,
                                                             self.out_cookie))
        except (ConnectionResetError, BrokenPipeError):
            self.reader_end = "reset"
        except (OSError, w.WireError) as e:
            self.reader_end = f"error: {e}"
        with self.cv:
            self.cv.notify_all()
        self.pdus.put(None)

    def _rts(self, pdu):
        parsed = w.parse_rts(pdu)
        s = w.shape(parsed)
        name = {w.SHAPE_CONN_A3: "CONN/A3", w.SHAPE_CONN_C2: "CONN/C2", w.SHAPE_FLOW_ACK: "FlowControlAck",
                w.SHAPE_IN_R2_A4: "IN_R2/A4", w.SHAPE_OUT_R_A2: "OUT_R2/A2", w.SHAPE_OUT_R2_A6: "OUT_R2/A6",
                w.SHAPE_OUT_R2_B3: "OUT_R2/B3"}.get(s, "other")
        with self.cv:
            self.rts_seen[name] = self.rts_seen.get(name, 0) + 1
            if s == w.SHAPE_CONN_C2:
                self.window = parsed[1][1][1]
            elif s == w.SHAPE_FLOW_ACK:
                n, window, cookie = parsed[1][0][1]
                if cookie == self.in_cookie:
                    self.acked, self.window = n, window
            self.cv.notify_all()
        return name

    def _switch_out(self):
        """Reader thread, after OUT_R2/B3: the successor OUT channel (opened by
        recycle_out) becomes the one read; returns what followed its response head."""
        with self.cv:
            sock, cookie = self.out_next
        head, rest = _read_head(sock)
        if not head.startswith("HTTP/1.1 200 "):
            raise w.WireError(f"successor OUT channel answered {head[:80]!r}")
        with self.cv:
            self.out_old, self.out_sock, self.out_cookie, self.out_next = self.out_sock, sock, cookie, None
            self.out_received = self.out_acked = 0
            self.cv.notify_all()
        return rest

    def _wait(self, cond, timeout, what):
        with self.cv:
            if not self.cv.wait_for(lambda: cond() or self.reader_end, timeout) or not cond():
                raise TimeoutError(f"waiting for {what}: OUT channel {self.reader_end or 'silent'}")

    def _send_rpc(self, pdu):
        self._wait(lambda: self.sent + len(pdu) - self.acked <= self.window, 30, "a FlowControlAck")
        self._send(self.in_sock, pdu)
        self.sent += len(pdu)

    # ---- RPC
    def _recv_pdu(self, timeout=60):
        pdu = self.pdus.get(timeout=timeout)
        if pdu is None:
            raise ConnectionError(f"OUT channel ended ({self.reader_end})")
        return pdu

    def bind(self):
        self.call_id += 1
        self._send_rpc(w.bind(self.call_id, w.ECHO_SYNTAX))
        ack = self._recv_pdu()
        if ack[2] != w.PTYPE_BIND_ACK:
            raise ConnectionError(f"bind answered with PTYPE {ack[2]}")
        self.max_frag = min(5840, struct.unpack_from("<H", ack, 18)[0])  # the server's max_recv_frag
        sec_len = struct.unpack_from("<H", ack, 24)[0]
        off = 26 + sec_len
        off += (4 - off % 4) % 4
        if ack[off] < 1 or struct.unpack_from("<H", ack, off + 4)[0] != 0:
            raise ConnectionError("bind_ack rejected the echo context")

    def call(self, stub, opnum=0):
        self.call_id += 1
        for frag in w.request_frags(self.call_id, opnum, stub, self.max_frag):
            self._send_rpc(frag)
        parts = []
        while True:
            pdu = self._recv_pdu()
            if pdu[2] != w.PTYPE_RESPONSE or struct.unpack_from("<I", pdu, 12)[0] != self.call_id:
                raise ConnectionError(f"unexpected PDU type {pdu[2]} in the answer to call {self.call_id}")
            parts.append(pdu[24:])
            if pdu[3] & w.LAST_FRAG:
                return b"".join(parts)

    def recycle_in(self, deadline=10):
        old, old_cookie = self.in_sock, self.in_cookie
        new_cookie = w.new_cookie()
        a4 = self.rts_seen.get("IN_R2/A4", 0)
        new = self._in_channel(w.in_r2_a1(self.vc, old_cookie, new_cookie))
        self._wait(lambda: self.rts_seen.get("IN_R2/A4", 0) > a4, deadline, "IN_R2/A4")
        self._send(old, w.successor_cookie(new_cookie))
        with self.cv:
            self.in_sock, self.in_cookie, self.sent, self.acked = new, new_cookie, 0, 0
        ended, after = wait_end(old, deadline)
        old.close()
        return {"predecessor": w.cookie_str(old_cookie), "successor": w.cookie_str(new_cookie),
                "old_channel_ended": ended, "after_s": round(after, 3)}

    def recycle_out(self, deadline=10):
        """OUT_R2 from the client's side, asked for with an echo opnum 1 call."""
        a2 = self.rts_seen.get("OUT_R2/A2", 0)
        self.call(b"recycle", opnum=w.ECHO_OPNUM_RECYCLE_OUT)
        self._wait(lambda: self.rts_seen.get("OUT_R2/A2", 0) > a2, deadline, "OUT_R2/A2")
        old_cookie, new_cookie = self.out_cookie, w.new_cookie()
        o = self._out_request(w.out_r2_a3(self.vc, old_cookie, new_cookie))
        with self.cv:
            self.out_next = (o, new_cookie)
        self._wait(lambda: self.rts_seen.get("OUT_R2/A6"), deadline, "OUT_R2/A6")
        self._send(self.in_sock, w.out_r2_a7(new_cookie))
        self._wait(lambda: self.out_cookie == new_cookie, deadline, "OUT_R2/B3 and the successor's response head")
        ended, after = wait_end(self.out_old, deadline)
        self.out_old.close()
        return {"predecessor": w.cookie_str(old_cookie), "successor": w.cookie_str(new_cookie),
                "old_channel_ended": ended, "after_s": round(after, 3)}

    def kill(self, which, deadline):
        victim = self.in_sock if which == "in" else self.out_sock
        victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t0 = time.monotonic()
        if which == "out":
            # The reader thread sits in recv on it, and close() only really closes (and
            # sends the RST) once that recv returns: wake it first (SHUT_RD sends nothing).
            victim.shutdown(socket.SHUT_RD)
            self.reader.join(5)
        victim.close()
        if which == "in":
            with self.cv:
                self.cv.wait_for(lambda: self.reader_end, deadline)
            return {"killed": "in", "other": self.reader_end or "open", "after_s": round(time.monotonic() - t0, 3)}
        ended, after = wait_end(self.in_sock, deadline)
        return {"killed": "out", "other": ended, "after_s": round(after, 3)}

    def close(self):
        for s in (getattr(self, "in_sock", None), getattr(self, "out_sock", None)):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def blob(size, seed):
    return random.Random(seed).randbytes(size)


def echo(req):
    c = EchoClient(req)
    t0 = time.monotonic()
    try:
        c.open()
        c.bind()
        data = blob(req.get("size", 4 << 20), req.get("seed", 1))
        res = {"vc": w.cookie_str(c.vc), "in": w.cookie_str(c.in_cookie), "out": w.cookie_str(c.out_cookie),
               "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "calls": 0, "identical": True}

        def calls(n):
            for _ in range(n):
                back = c.call(data)
                res["calls"] += 1
                res["identical"] = res["identical"] and back == data
        calls(req.get("calls", 1))
        if req.get("recycle_after") is not None:
            res["recycle"] = c.recycle_in()
            res["in_after_recycle"] = w.cookie_str(c.in_cookie)
            calls(req.get("calls_after_recycle", 1))
        if req.get("recycle_out"):
            res["recycle_out"] = c.recycle_out()
            res["out_after_recycle"] = w.cookie_str(c.out_cookie)
            calls(req.get("calls_after_recycle", 1))
        res["flow_acks_received"] = c.rts_seen.get("FlowControlAck", 0)
        res["elapsed_s"] = round(time.monotonic() - t0, 3)
        if req.get("kill"):
            res["kill"] = c.kill(req["kill"], req.get("kill_deadline", 10))
        return res
    finally:
        c.close()


# ---------------------------------------------------------------- hostile sender

def hostile(req):
    """Malformed inputs, each on a connection of its own; how each ended."""
    host, port, _ = split_host_port(req["proxy"])
    q = f"/rpc/rpcproxy.dll?{req['server']}:{req.get('port', 6001)}"
    auth = "Authorization: Basic " + _basic("Administrator", "x", "WANOPT") + "\r\n"
    vc, ch, assoc = w.new_cookie(), w.new_cookie(), w.new_cookie()
    b1 = w.conn_b1(vc, ch, assoc)
    lying_len = b1[:8] + struct.pack("<H", 40) + b1[10:]       # frag_length 40: cuts CONN/B1's commands
    a1 = w.conn_a1(vc, ch)
    lying_count = a1[:18] + struct.pack("<H", 200) + a1[20:]  # NumberOfCommands 200 in 76 bytes
    in_head = f"RPC_IN_DATA {q} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1073741824\r\n\r\n"
    out_head = f"RPC_OUT_DATA {q} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 76\r\n\r\n"
    cases = [
        ("truncated_head", f"RPC_IN_DATA {q} HTTP/1.1\r\nHost: x\r\nContent-Len".encode(), True),
        ("head_too_long", f"RPC_IN_DATA {q} HTTP/1.1\r\n".encode() + b"X-Junk: " + b"a" * 40000 + b"\r\n", False),
        ("absurd_content_length",
         f"RPC_IN_DATA {q} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 99999999999999999999999\r\n\r\n".encode(), False),
        ("bad_chunk_size",
         f"RPC_IN_DATA {q} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\nzz9\r\n".encode() + b1, False),
        ("rts_lying_frag_length", in_head.encode() + lying_len, False),
        ("rts_lying_command_count",
         f"RPC_OUT_DATA {q} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 76\r\n\r\n".encode() + lying_count, False),
        ("in_channel_not_rts", in_head.encode() + w.bind(1, w.ECHO_SYNTAX), False),
        ("pipelined_garbage_after_401",
         f"RPC_IN_DATA {q} HTTP/1.1\r\nHost: x\r\nAuthorization: NTLM TlRMTVNTUAAB\r\nContent-Length: 0\r\n\r\n"
         .encode() + b"\x00\xff\xfeGARBAGE \x01\x02\r\n\r\n", False),
        ("wrong_method", f"GET {q} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), False),
        ("in_garbage_after_conn_b1",
         in_head.encode() + w.conn_b1(w.new_cookie(), w.new_cookie(), w.new_cookie()) + b"GARBAGE-NOT-A-PDU\r\n", False),
        ("out_pipelined_after_conn_a1", out_head.encode() + w.conn_a1(w.new_cookie(), w.new_cookie()) +
         f"RPC_OUT_DATA {q} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), False),
    ]
    out = []
    for name, data, half_close in cases:
        s = socket.create_connection((host, port), timeout=5)
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            got, ended, after = b"", "open", 0.0
            t0 = time.monotonic()
            s.settimeout(0.2)
            while time.monotonic() - t0 < req.get("deadline", 5):
                try:
                    d = s.recv(65536)
                except socket.timeout:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    ended = "reset"
                    break
                if not d:
                    ended = "eof"
                    break
                got += d
            after = time.monotonic() - t0
            answers = [l.decode("latin-1") for l in got.split(b"\r\n") if l.startswith(b"HTTP/1.")]
            out.append({"name": name, "answer": answers, "ended": ended, "after_s": round(after, 3)})
        finally:
            s.close()
    return out
