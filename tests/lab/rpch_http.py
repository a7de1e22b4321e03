"""The HTTP side of rpch_proxy.py: a request head, then a Content-Length or chunked
body read a piece at a time (never whole: an IN channel says 1 GiB), and whole
DCE/RPC PDUs out of it. Anything that breaks HTTP raises Malformed."""
import rpch_wire as w

MAX_HEAD = 16384
MAX_BODY = 1 << 40  # a Content-Length above this is absurd


class Malformed(Exception):
    pass


def split_host_port(text):
    """"host:port" or "[ipv6]:port" -> (the address, the port, the host as a Host
    header writes it: IPv6 bracketed)."""
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port), host


class HttpStream:
    """A socket with a read buffer: heads, then a Content-Length or chunked body."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""
        self.body_left = 0
        self.chunked = False
        self.chunk_left = 0
        self.body_done = False

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self):
        """(method, target, version, {lower name: value}) or None at EOF before any byte."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise Malformed("HTTP head longer than 16 KiB")
            if not self._fill():
                if self.buf:
                    raise Malformed("connection ended inside the HTTP head")
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if len(head) > MAX_HEAD:
            raise Malformed("HTTP head longer than 16 KiB")
        try:
            lines = head.decode("ascii").split("\r\n")
        except UnicodeDecodeError:
            raise Malformed("HTTP head not ASCII")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            raise Malformed(f"bad request line {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise Malformed(f"bad header line {line[:80]!r}")
            headers[name.lower()] = value.strip()
        return parts[0], parts[1], parts[2], headers

    def start_body(self, headers):
        te = headers.get("transfer-encoding", "").lower()
        if te and te != "chunked":
            raise Malformed(f"Transfer-Encoding {te!r}")
        self.chunked = te == "chunked"
        self.chunk_left, self.body_done = 0, False
        if self.chunked:
            return
        cl = headers.get("content-length", "0")
        if not cl.isdigit() or len(cl) > 15 or int(cl) > MAX_BODY:
            raise Malformed(f"bad Content-Length {cl[:40]!r}")
        self.body_left = int(cl)
        self.body_done = self.body_left == 0

    def _raw(self, n):
        while not self.buf:
            if not self._fill():
                return b""
        b, self.buf = self.buf[:n], self.buf[n:]
        return b

    def _line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1024:
                raise Malformed("chunk size line too long")
            if not self._fill():
                raise Malformed("connection ended inside a chunk size line")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_body(self, n):
        """Up to n body bytes; b'' at the end of the body (or the connection)."""
        if self.body_done:
            return b""
        if not self.chunked:
            b = self._raw(min(n, self.body_left))
            self.body_left -= len(b)
            self.body_done = self.body_left == 0
            return b
        if self.chunk_left == 0:
            if not self.buf and not self._fill():  # the client ended the body between chunks
                self.body_done = True
                return b""
            size = self._line().split(b";", 1)[0].strip()
            try:
                if not size or len(size) > 10:
                    raise ValueError
                self.chunk_left = int(size, 16)
            except ValueError:
                raise Malformed(f"bad chunk size {size[:20]!r}")
            if self.chunk_left == 0:
                self._line()  # the empty trailer
                self.body_done = True
                return b""
        b = self._raw(min(n, self.chunk_left))
        self.chunk_left -= len(b)
        if self.chunk_left == 0 and b:
            if self._line() != b"":
                raise Malformed("chunk data longer than its size")
        return b

    def read_exact(self, n):
        out = b""
        while len(out) < n:
            b = self.read_body(n - len(out))
            if not b:
                break
            out += b
        return out

    def body_pdu(self):
        try:
            return w.read_pdu(self.read_exact)
        except w.WireError as e:
            raise Malformed(str(e))
