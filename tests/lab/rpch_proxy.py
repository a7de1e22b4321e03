#!/usr/bin/python3
"""A small RPC over HTTP v2 (MS-RPCH) proxy for tests: inbound proxy, outbound proxy
and server role at once, over plain HTTP (no TLS). No such server is packaged for
Debian, so the rpch tests bring their own; the clients (impacket, Samba) and the
back end (Samba's RPC servers) stay real.

    rpch_proxy.py --listen ADDR:PORT|[ADDR6]:PORT --backend HOST [--echo-port 6001] [--log FILE]
                  [--path /rpc/rpcproxy.dll] [--window 65536] [--ack-every BYTES]

Prints READY on stdout once listening. One thread per HTTP connection.

  - RPC_IN_DATA / RPC_OUT_DATA to PATH?server:port, HTTP/1.0 or 1.1. An Authorization
    that is not Basic (impacket's NTLM negotiate) or none gets 401 with
    `WWW-Authenticate: Basic realm="rpch"` and the connection stays open for the
    retry; Basic with any user passes. `100 Continue` only when asked.
  - OUT channel: CONN/A1 in a 76-byte body; answered with `HTTP/1.1 200 Success`,
    `Content-Type: application/rpc`, `Content-Length: 1073741824`, then CONN/A3;
    CONN/C2 once the IN channel with the same virtual-connection cookie is there.
  - IN channel: a 1 GiB Content-Length or chunked body, read PDU by PDU; CONN/B1 first
    (or IN_R1/A1|IN_R2/A1 when recycling). RPC PDUs go to the target, RTS PDUs are
    consumed (FlowControlAck from the client: ignored, nothing waits on it; Ping,
    Keep-Alive: absorbed; Echo: echoed on the OUT channel).
  - Target from server:port: 593 -> backend:135, --echo-port -> the echo interface
    served here (bind/alter_context accepted for the first context, each request
    answered with its own stub, fragmented at the client's max_recv_frag), any other
    port -> backend:port. Whole PDUs from the target go out on the OUT channel.
  - Flow control: a FlowControlAck (BytesReceived, window, IN channel cookie) on the
    OUT channel each time the IN channel has consumed half the window (--window, told
    to the client in CONN/C2; or --ack-every bytes) of RPC PDU bytes since the last ack.
    Samba 4.17's client hangs (60 s, then NT_STATUS_IO_TIMEOUT) when a FlowControlAck
    reaches it, and refuses a CONN/C2 window outside 8192..262144: its small calls stay
    far below the default 32 KiB, so leave --ack-every alone for Samba clients.
  - IN channel recycling (IN_R2 as the client sees it; an IN_R1/A1 is taken the same
    way, though a real IN_R1 client may wait for PDUs the proxy does not send):
    IN_R?/A1 on a new IN channel names the virtual connection and the predecessor;
    that channel is plugged (its PDUs wait) and IN_R2/A4 goes out on the OUT channel;
    IN_R?/A5 (the successor cookie) on the old channel makes the new one the default;
    the proxy closes the old one. The target connection is kept.
  - OUT channel recycling (OUT_R2), on request only (impacket refuses it): after an
    echo call with opnum 1 the proxy sends OUT_R2/A2; a new OUT channel starting with
    OUT_R2/A3 (VC, predecessor, successor) gets OUT_R2/A6 on the old one; OUT_R2/A7 on
    the IN channel makes the proxy end the old channel with OUT_R2/B3, send the response
    head on the new one and carry on there, and close the old one.
  - One channel (or the target) closed or reset: everything of the virtual connection
    is closed. A malformed head, body or RTS closes that connection only.

Log (--log, line-buffered), one event a line, `TIME EVENT key=value ...` (TIME: Unix
seconds with milliseconds; spaces in a reason TEXT become '_'):
    listening addr=A:P backend=HOST echo_port=N
    auth conn=N peer=A:P status=401 scheme=NTLM|none
    open conn=N peer=A:P channel=in|out vc=UUID cookie=UUID target=SERVER:PORT
    paired vc=UUID in=UUID out=UUID target=SERVER:PORT via=HOST:PORT|echo
    recycle-requested vc=UUID channel=out   (an echo opnum 1 call: OUT_R2/A2 sent)
    recycle-start vc=UUID channel=in|out predecessor=UUID successor=UUID conn=N
    recycled vc=UUID channel=in|out predecessor=UUID successor=UUID
    flow-ack vc=UUID bytes=N  (every 1 MiB acked, not every ack)
    closed conn=N channel=in|out vc=UUID cookie=UUID reason=TEXT
    closed-vc vc=UUID reason=TEXT
    malformed conn=N peer=A:P reason=TEXT
    error conn=N peer=A:P reason=TEXT     (an unexpected exception: a bug here)
"""
import argparse
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpch_wire as w  # noqa: E402
from rpch_http import HttpStream, Malformed, split_host_port  # noqa: E402

OUT_CONTENT_LENGTH = 1 << 30
OUT_HEAD = b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: %d\r\n\r\n" % OUT_CONTENT_LENGTH


class Log:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1) if path else None

    def __call__(self, event, **kv):
        line = f"{time.time():.3f} {event} " + " ".join(f"{k}={v}" for k, v in kv.items())
        with self.lock:
            if self.f:
                self.f.write(line + "\n")
            else:
                print(line, file=sys.stderr, flush=True)


class Channel:
    """One HTTP connection that became an IN or OUT channel."""

    def __init__(self, conn_id, sock, peer, kind, cookie, target):
        self.conn_id, self.sock, self.peer, self.kind = conn_id, sock, peer, kind
        self.cookie, self.target = cookie, target
        self.retired = False                  # replaced by a successor (recycling): closing it ends nothing else
        self.unplugged = threading.Event()    # a successor IN channel waits on it
        self.bytes_received = 0               # RPC PDU bytes consumed (flow control)
        self.bytes_acked = 0


def _close_sock(sock):
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class VirtualConnection:
    def __init__(self, proxy, cookie):
        self.proxy, self.cookie, self.name = proxy, cookie, w.cookie_str(cookie)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # a successor IN channel joined, or closed
        self.out_lock = threading.Lock()
        self.out = self.in_ = self.successor = self.out_successor = None
        self.backend = self.echo = None
        self.paired = threading.Event()
        self.closed = False

    # ---- set-up
    def attach(self, ch):
        with self.lock:
            if self.closed:
                raise Malformed("virtual connection already closed")
            if getattr(self, "out" if ch.kind == "out" else "in_") is not None:
                raise Malformed(f"a second {ch.kind.upper()} channel for virtual connection {self.name}")
            if ch.kind == "out":
                self.out = ch
            else:
                self.in_ = ch
            ready = self.out is not None and self.in_ is not None
        if ready:
            self._pair()

    def _pair(self):
        server, port = self.in_.target
        log = self.proxy.log
        if port == self.proxy.echo_port:
            self.echo, via = w.EchoServer(), "echo"
        else:
            real = 135 if port == 593 else port
            via = f"{self.proxy.backend}:{real}"
            try:
                self.backend = socket.create_connection((self.proxy.backend, real), timeout=5)
                self.backend.settimeout(None)
            except OSError as e:
                self.close(f"backend {via} unreachable: {e}")
                return
            threading.Thread(target=self._backend_reader, daemon=True).start()
        log("paired", vc=self.name, **{"in": w.cookie_str(self.in_.cookie)}, out=w.cookie_str(self.out.cookie),
            target=f"{server}:{port}", via=via)
        self.send_out(w.conn_c2(self.proxy.window))
        self.paired.set()

    def recycle_start(self, ch, predecessor):
        with self.lock:
            if self.closed or self.in_ is None or self.in_.cookie != predecessor or self.successor is not None:
                raise Malformed("IN_R/A1 names no current IN channel of its virtual connection")
            self.successor = ch
            self.changed.notify_all()
        self.proxy.log("recycle-start", vc=self.name, channel="in", predecessor=w.cookie_str(predecessor),
                       successor=w.cookie_str(ch.cookie), conn=ch.conn_id)
        self.send_out(w.in_r2_a4())  # the client sends IN_R2/A5 on the old channel once it has this

    def recycle_finish(self, old, successor_cookie):
        # The client sends IN_R/A1 on the new channel and IN_R/A5 on the old one back to
        # back: the A5 may be read first. Wait a while for the successor to show up.
        with self.changed:
            self.changed.wait_for(lambda: self.closed or (self.successor is not None and
                                                          self.successor.cookie == successor_cookie), 10)
            new = self.successor
            if new is None or new.cookie != successor_cookie or old is not self.in_:
                raise Malformed("IN_R/A5 names no successor IN channel")
            self.in_, self.successor = new, None
            old.retired = True
        self.proxy.log("recycled", vc=self.name, channel="in", predecessor=w.cookie_str(old.cookie),
                       successor=w.cookie_str(new.cookie))
        new.unplugged.set()
        _close_sock(old.sock)

    def out_recycle_start(self, ch, predecessor):
        """OUT_R2/A3 on a new OUT channel (after our OUT_R2/A2): OUT_R2/A6 on the old one."""
        with self.lock:
            if self.closed or self.out is None or self.out.cookie != predecessor or self.out_successor is not None:
                raise Malformed("OUT_R/A3 names no current OUT channel of its virtual connection")
            self.out_successor = ch
        self.proxy.log("recycle-start", vc=self.name, channel="out", predecessor=w.cookie_str(predecessor),
                       successor=w.cookie_str(ch.cookie), conn=ch.conn_id)
        self.send_out(w.out_r2_a6())

    def out_recycle_finish(self, successor_cookie):
        """OUT_R2/A7 on the IN channel: OUT_R2/B3 ends the old OUT channel, the response
        head opens the new one, which carries everything after."""
        with self.lock, self.out_lock:
            old, new = self.out, self.out_successor
            if new is None or new.cookie != successor_cookie:
                raise Malformed("OUT_R2/A7 names no successor OUT channel")
            try:
                old.sock.sendall(w.out_r2_b3())
            except OSError:
                pass
            new.sock.sendall(OUT_HEAD)
            self.out, self.out_successor = new, None
            old.retired = True
        self.proxy.log("recycled", vc=self.name, channel="out", predecessor=w.cookie_str(old.cookie),
                       successor=w.cookie_str(new.cookie))
        _close_sock(old.sock)

    # ---- data
    def from_client(self, ch, pdu):
        """An RPC (non-RTS) PDU from an IN channel: to the target, then flow control."""
        if not self.paired.wait(30) or self.closed:
            raise Malformed("RPC PDU on an IN channel that was never paired")
        if self.echo is not None:
            try:
                with self.lock:
                    replies = self.echo.feed(pdu)
            except (w.WireError, struct.error, IndexError) as e:
                raise Malformed(f"echo interface: {e}")
            for r in replies:
                self.send_out(r)
            if self.echo.recycle_out_requested:
                self.echo.recycle_out_requested = False
                self.proxy.log("recycle-requested", vc=self.name, channel="out")
                self.send_out(w.out_r2_a2())
        else:
            try:
                self.backend.sendall(pdu)
            except OSError as e:
                self.close(f"backend send failed: {e}")
                return
        ch.bytes_received += len(pdu)
        if ch.bytes_received - ch.bytes_acked >= self.proxy.ack_every:
            mib_before = ch.bytes_acked >> 20
            ch.bytes_acked = ch.bytes_received
            self.send_out(w.flow_ack(ch.bytes_received & 0xFFFFFFFF, self.proxy.window, ch.cookie))
            if ch.bytes_acked >> 20 != mib_before:
                self.proxy.log("flow-ack", vc=self.name, bytes=ch.bytes_received)

    def send_out(self, data):
        out = self.out
        if out is None or self.closed:
            return
        try:
            with self.out_lock:
                out.sock.sendall(data)
        except OSError as e:
            self.close(f"OUT channel send failed: {e}")

    def _backend_reader(self):
        sock = self.backend

        def read_exact(n):
            b = b""
            while len(b) < n:
                d = sock.recv(n - len(b))
                if not d:
                    break
                b += d
            return b
        reason = "backend closed"
        try:
            while not self.closed:
                pdu = w.read_pdu(read_exact)
                if pdu is None:
                    break
                self.send_out(pdu)
        except (OSError, w.WireError) as e:
            reason = f"backend: {e}"
        self.close(reason)

    # ---- tear-down
    def close(self, reason):
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.changed.notify_all()
            chans = [c for c in (self.in_, self.out, self.successor, self.out_successor) if c is not None]
        self.paired.set()
        self.proxy.forget(self)
        self.proxy.log("closed-vc", vc=self.name, reason=reason.replace(" ", "_"))
        for c in chans:
            c.unplugged.set()
            _close_sock(c.sock)
        _close_sock(self.backend)


class Proxy:
    def __init__(self, args):
        self.backend, self.echo_port, self.window = args.backend, args.echo_port, args.window
        self.ack_every = args.ack_every or args.window // 2
        self.path = args.path
        # A proxy that does not notice a lost channel (the rpch test: then only the
        # wanopt boxes can end the other channel).
        self.keep_partner = args.keep_partner
        self.log = Log(args.log)
        self.vcs = {}
        self.lock = threading.Lock()
        self.next_conn = 0

    def vc(self, cookie, create):
        with self.lock:
            v = self.vcs.get(cookie)
            if v is None and create:
                v = self.vcs[cookie] = VirtualConnection(self, cookie)
            return v

    def forget(self, vc):
        with self.lock:
            if self.vcs.get(vc.cookie) is vc:
                del self.vcs[vc.cookie]

    def serve(self, listen):
        host, port, _ = split_host_port(listen)
        ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, port))
        ls.listen(128)
        self.log("listening", addr=listen, backend=self.backend, echo_port=self.echo_port)
        print("READY", flush=True)
        while True:
            sock, peer = ls.accept()
            self.next_conn += 1
            threading.Thread(target=self.connection, args=(self.next_conn, sock, f"{peer[0]}:{peer[1]}"),
                             daemon=True).start()

    def connection(self, conn_id, sock, peer):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream, ch, vc = HttpStream(sock), None, None
        reason = "closed by the client"
        try:
            while True:  # requests on this connection until one becomes a channel
                req = stream.read_head()
                if req is None:
                    return
                method, target, version, headers = req
                kind = {"RPC_IN_DATA": "in", "RPC_OUT_DATA": "out"}.get(method)
                if kind is None:
                    self._respond(sock, "405 Method Not Allowed")
                    raise Malformed(f"method {method[:40]!r}")
                stream.start_body(headers)
                # Authentication before the target: impacket's NTLM negotiate names the bare path.
                auth = headers.get("authorization", "")
                if not auth.lower().startswith("basic "):
                    scheme = auth.split(" ", 1)[0] or "none"
                    self.log("auth", conn=conn_id, peer=peer, status=401, scheme=scheme)
                    more = stream.body_done and version == "HTTP/1.1" and \
                        headers.get("connection", "").lower() != "close"
                    self._respond(sock, "401 Unauthorized", 'WWW-Authenticate: Basic realm="rpch"\r\n' +
                                  ("" if more else "Connection: close\r\n"))
                    if not more:
                        return
                    continue
                path, _, query = target.partition("?")
                server, _, port = query.rpartition(":")
                if path.lower() != self.path.lower() or not server or not port.isdigit() or int(port) > 65535:
                    self._respond(sock, "404 Not Found")
                    raise Malformed(f"target {target[:80]!r}")
                if headers.get("expect", "").lower() == "100-continue":
                    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                break
            pdu = stream.body_pdu()
            if pdu is None:
                raise Malformed(f"{method} body ended before its first RTS PDU")
            try:
                parsed = w.parse_rts(pdu)
            except w.WireError as e:
                raise Malformed(f"first PDU: {e}")
            cmds = [v for _, v in parsed[1]]
            tgt = (server, int(port))
            if kind == "out":
                if w.shape(parsed) == w.SHAPE_CONN_A1:
                    ch = Channel(conn_id, sock, peer, "out", cmds[2], tgt)
                    vc = self.vc(cmds[1], True)
                    self.log("open", conn=conn_id, peer=peer, channel="out", vc=vc.name,
                             cookie=w.cookie_str(ch.cookie), target=f"{server}:{port}")
                    sock.sendall(OUT_HEAD + w.conn_a3())
                    vc.attach(ch)
                elif w.shape(parsed) == w.SHAPE_OUT_R_A3:
                    vc = self.vc(cmds[1], False)
                    if vc is None:
                        raise Malformed("OUT_R/A3 for an unknown virtual connection")
                    ch = Channel(conn_id, sock, peer, "out", cmds[3], tgt)
                    self.log("open", conn=conn_id, peer=peer, channel="out", vc=vc.name,
                             cookie=w.cookie_str(ch.cookie), target=f"{server}:{port}")
                    try:
                        vc.out_recycle_start(ch, cmds[2])
                    except Malformed:
                        vc = None
                        raise
                else:
                    raise Malformed("OUT channel did not start with CONN/A1 or OUT_R/A3")
                # Nothing more may come on an OUT channel (its request body was that one PDU):
                # watch for its end; bytes (pipelined or not) break the protocol.
                if stream.buf or sock.recv(65536):
                    raise Malformed("bytes after the OUT channel's request body")
                reason = "recycled" if ch.retired else reason
                return
            if w.shape(parsed) == w.SHAPE_CONN_B1:
                ch = Channel(conn_id, sock, peer, "in", cmds[2], tgt)
                vc = self.vc(cmds[1], True)
                self.log("open", conn=conn_id, peer=peer, channel="in", vc=vc.name, cookie=w.cookie_str(ch.cookie),
                         target=f"{server}:{port}")
                vc.attach(ch)
            elif w.shape(parsed) == w.SHAPE_IN_R_A1:
                vc = self.vc(cmds[1], False)
                if vc is None:
                    raise Malformed("IN_R/A1 for an unknown virtual connection")
                ch = Channel(conn_id, sock, peer, "in", cmds[3], tgt)
                self.log("open", conn=conn_id, peer=peer, channel="in", vc=vc.name, cookie=w.cookie_str(ch.cookie),
                         target=f"{server}:{port}")
                try:
                    vc.recycle_start(ch, cmds[2])
                except Malformed:
                    vc = None
                    raise
                ch.unplugged.wait()
            else:
                raise Malformed("IN channel did not start with CONN/B1 or IN_R/A1")
            self.in_channel(stream, ch, vc)
            reason = "recycled" if ch.retired else "body ended"
        except Malformed as e:
            reason = f"malformed: {e}"
            self.log("malformed", conn=conn_id, peer=peer, reason=str(e).replace(" ", "_"))
        except OSError as e:
            reason = "recycled" if ch is not None and ch.retired else f"{type(e).__name__}: {e}"
        except Exception as e:  # a bug here must still end this connection (and only it) cleanly
            reason = f"error: {type(e).__name__}: {e}"
            self.log("error", conn=conn_id, peer=peer, reason=reason.replace(" ", "_"))
        finally:
            if ch is not None:
                self.log("closed", conn=conn_id, channel=ch.kind, vc=vc.name if vc else "-",
                         cookie=w.cookie_str(ch.cookie), reason=reason.replace(" ", "_"))
            if vc is not None and not (ch is not None and ch.retired) and not self.keep_partner:
                vc.close(f"{ch.kind.upper()} channel ended ({reason})" if ch else reason)
            _close_sock(sock)

    def in_channel(self, stream, ch, vc):
        while not vc.closed and not ch.retired:
            pdu = stream.body_pdu()
            if pdu is None:
                return
            if pdu[2] != w.PTYPE_RTS:
                vc.from_client(ch, pdu)
                continue
            try:
                parsed = w.parse_rts(pdu)
            except w.WireError as e:
                raise Malformed(f"RTS: {e}")
            s = w.shape(parsed)
            if s == w.SHAPE_SUCCESSOR:
                vc.recycle_finish(ch, parsed[1][0][1])
                return
            if s == w.SHAPE_OUT_R2_A7:
                vc.out_recycle_finish(parsed[1][1][1])
                continue
            if parsed[0] & w.F_ECHO:
                vc.send_out(w.rts(w.F_ECHO, []))
            # FlowControlAck(WithDestination), Ping, Keep-Alive, others: consumed.

    @staticmethod
    def _respond(sock, status, extra=""):
        sock.sendall(f"HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n".encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", required=True, help="ADDR:PORT ([ADDR]:PORT for IPv6)")
    ap.add_argument("--backend", required=True, help="the RPC server's host (ports 135 and dynamic)")
    ap.add_argument("--echo-port", type=int, default=6001)
    ap.add_argument("--log", default=None)
    ap.add_argument("--path", default="/rpc/rpcproxy.dll")
    ap.add_argument("--keep-partner", action="store_true",
                    help="a channel that ends leaves its partner open (only something else may end it)")
    ap.add_argument("--window", type=int, default=65536,
                    help="the IN channel receive window told in CONN/C2 (8192..262144: Samba refuses others)")
    ap.add_argument("--ack-every", type=int, default=0,
                    help="send a FlowControlAck after this many IN channel RPC bytes (default: half the window)")
    args = ap.parse_args()
    if not 8192 <= args.window <= 262144:
        ap.error("--window must be within 8192..262144 (MS-RPCH 2.2.3.5.1)")
    try:
        Proxy(args).serve(args.listen)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
