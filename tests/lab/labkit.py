"""The namespace-lab harness the lab tests share: a netlab with interception, one
`wanopt run` per box namespace, the boxes' status API, an HTTP origin and its file,
tshark on the WAN, and checks that print 'ok:'/'FAIL:' lines and the closing
'N passed, N failed'.

Synchronisation is by polling with deadlines (a status page that answers, a
connection record that ended), never by sleeping a fixed time."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

# Checks comes from tests/testkit.py, shared with the other Python tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testkit  # noqa: E402

Checks = testkit.Checks


# Prints how a plain connect() to argv[1]:argv[2] ends (Lab.connect_outcome).
_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); print("connected")
except Exception as e:
    print(type(e).__name__)
"""


class Lab:
    """One netlab (`netlab up --intercept`) and the processes started in it.

    middle: `up --middle` (a third box between the branch and the WAN). one_arm:
    `up --one-arm` (the boxes "branch" and "dc" hang off the routers "branch-router"
    and "dc-router", which own the WAN and policy-route TCP to them); the box node
    names, addresses of the client and server, and status pages are the same.
    ipv6: `up --ipv6` (dual-stack, in any topology: the client 2001:2:0:1::10 and
    the server 2001:2:0:2::10 beside their IPv4 addresses; interception rules for
    both families)."""

    def __init__(self, prefix, work, wanopt, netlab, delayline, middle=False, delay_ms=10, one_arm=False,
                 ipv6=False):
        self.prefix, self.work, self.middle, self.delay_ms = prefix, work, middle, delay_ms
        self.one_arm, self.ipv6 = one_arm, ipv6
        self.wanopt, self.netlab = wanopt, netlab
        self.procs = {}
        self.env = dict(os.environ, WANOPT_DELAYLINE=delayline)

    def ns(self, node):
        return f"{self.prefix}-{node}"

    def run(self, node, *cmd, timeout=30, check_rc=False):
        r = subprocess.run(["ip", "netns", "exec", self.ns(node), *cmd], capture_output=True, text=True,
                           timeout=timeout)
        if check_rc and r.returncode != 0:
            raise RuntimeError(f"{node}: {' '.join(cmd)}: {r.returncode}: {r.stderr}")
        return r

    def up(self):
        args = [self.netlab, "--prefix", self.prefix, "up", "--delay-ms", str(self.delay_ms), "--intercept"]
        if self.middle:
            args.append("--middle")
        if self.one_arm:
            args.append("--one-arm")
        if self.ipv6:
            args.append("--ipv6")
        r = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"netlab up: {r.stderr}")

    def down(self):
        for name in list(self.procs):
            self.stop(name)
        subprocess.run([self.netlab, "--prefix", self.prefix, "down"], env=self.env, capture_output=True, timeout=60)

    def tun_drops(self):
        """{node: packets} its WAN TUN dropped before the delay line read them, from `netlab status`."""
        r = subprocess.run([self.netlab, "--prefix", self.prefix, "status"], env=self.env, capture_output=True,
                           text=True, timeout=30)
        return {node: dropped for node, (_, dropped) in tun_counters(r.stdout).items()}

    def series(self, node):
        """NODE's box's Prometheus samples: {'name{labels}': value}."""
        r = self.run(node, "curl", "-s", "-m", "3", "http://127.0.0.1:7880/metrics")
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in r.stdout.splitlines()
                if line.startswith("wanopt_") and "{" in line}

    def spawn(self, name, node, *cmd, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(node), *cmd], **kw)
        self.procs[name] = p
        return p

    def stop(self, name):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def box_config(self, box, device_id, cert, ca="ca", extra=""):
        """A box's config: TLS from the lab PKI (work/pki), a DRE store, the status
        page on the namespace's loopback, interception; `extra` is appended."""
        pki = os.path.join(self.work, "pki")
        path = os.path.join(self.work, f"{self.prefix}-{box}.toml")
        with open(path, "w") as f:
            f.write(f"""
[box]
name = "{box}"
device_id = "{device_id}"
threads = 1
log_level = "debug"
[dre]
datastore = "{self.work}/{self.prefix}-{box}-store"
max_size_mb = 64
[status]
listen = "127.0.0.1:7880"
closed_window_s = 3600
[peering]
ca = "{pki}/{ca}.pem"
certificate = "{pki}/{cert}.pem"
key = "{pki}/{cert}.key"
{extra}""")
        return path

    def start_box(self, box, config, node=None):
        """Runs `wanopt run --config config` in node's namespace (default: the box's
        name) and returns once its status page answers."""
        node = node or box
        log = open(os.path.join(self.work, f"{self.prefix}-{box}.log"), "a")
        self.spawn(box, node, self.wanopt, "run", "--config", config, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.procs[box].poll() is not None:
                raise RuntimeError(f"{box} exited: see {log.name}")
            r = self.run(node, "curl", "-s", "-m", "1", "http://127.0.0.1:7880/api/summary")
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{box}: status page never answered")

    def wan_node(self):
        """The namespace that owns the west end of the WAN (wan0, 198.18.0.1)."""
        return "branch-router" if self.one_arm else "mid" if self.middle else "branch"

    def connections(self, node):
        r = self.run(node, "curl", "-s", "-m", "3", "http://127.0.0.1:7880/api/connections", check_rc=True)
        return json.loads(r.stdout)["connections"]

    def connection_to(self, node, port, since_id=0):
        """The newest connection on `node` to the server's `port` with id > since_id."""
        found = [c for c in self.connections(node)
                 if c["server"].endswith(f":{port}") and c["id"] > since_id]
        return found[-1] if found else None

    def wait_ended(self, node, port, since_id, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.connection_to(node, port, since_id)
            if c and c.get("ended"):
                return c
            time.sleep(0.05)
        return self.connection_to(node, port, since_id)

    def last_id(self, node):
        cs = self.connections(node)
        return max([c["id"] for c in cs], default=0)

    def rule_packets(self, node, table, chain, comment, tool="iptables"):
        """Packets counted by the rule in NODE's TABLE CHAIN tagged `-m comment --comment COMMENT`."""
        out = self.run(node, tool, "-w", "5", "-t", table, "-L", chain, "-v", "-x", "-n", check_rc=True).stdout
        counts = [int(line.split()[0]) for line in out.splitlines() if f"/* {comment} */" in line]
        return counts[0] if counts else None

    def print_logs(self):
        for log in sorted(os.listdir(self.work)):
            if log.startswith(self.prefix) and log.endswith(".log"):
                print(f"--- {log} (last 40 lines)")
                with open(os.path.join(self.work, log)) as f:
                    print("".join(f.readlines()[-40:]))

    def connect_outcome(self, host, port, node="client"):
        """How a plain connect() from `node` to host:port ends: "connected" or the
        exception's name (ConnectionRefusedError, TimeoutError, ...)."""
        return self.run(node, "/usr/bin/python3", "-c", _CONNECT, host, str(port)).stdout.strip()

    def curl(self, url, *extra, timeout=60):
        return subprocess.run(["ip", "netns", "exec", self.ns("client"), "curl", "-s", "-S", "-o", "-",
                               "--max-time", "30", *extra, url], capture_output=True, timeout=timeout)


def tun_counters(status_text):
    """{node: (sent, dropped)} of the WAN's TUN devices, from `netlab status`'s output."""
    return {m.group(1): (int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"(\S+) wan0 \(TUN\): sent (\d+) packets .* dropped (\d+) ", status_text)}


def start_http_origin(lab, root, ports, address, stderr=subprocess.DEVNULL):
    """python3's http.server serving directory `root` on address:port in the server
    namespace, one per port (processes "http<port>" of `lab`, "http6-<port>" for an
    IPv6 address); returns once each answers. stderr: where the servers log (each
    request with its source address)."""
    v6 = ":" in address
    for port in ports:
        lab.spawn(f"http6-{port}" if v6 else f"http{port}", "server", "/usr/bin/python3", "-m", "http.server",
                  str(port), "--bind", address, "--directory", root, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    host = f"[{address}]" if v6 else address
    for port in ports:
        while lab.run("server", "curl", "-s", "-o", "/dev/null", "-m", "1", f"http://{host}:{port}/").returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"origin did not start on port {port}")
            time.sleep(0.05)  # polling a condition with a deadline


def seen_from(log_path, tag):
    """The source address python's http.server (start_http_origin's stderr) logged
    for the request whose URL ends in ?tag; None if it logged none."""
    with open(log_path) as f:
        for line in f:
            if f"?{tag} " in line:
                return line.split(" ", 1)[0]
    return None


def make_origin(work):
    """Writes the origin's file.bin into work/www: 2 MiB of text that compresses and
    repeats (so DRE and LZ both have work). Returns (the directory, its SHA-256 hex)."""
    origin = os.path.join(work, "www")
    os.makedirs(origin)
    words = [f"word{i:04d}" for i in range(4000)]
    lines, seed = [], 1
    while sum(len(l) for l in lines) < 2 << 20:
        seed = (seed * 1103515245 + 12345) & 0x7fffffff
        lines.append(" ".join(words[(seed >> (k * 3)) % 4000] for k in range(8)) + "\n")
    data = "".join(lines).encode()
    with open(os.path.join(origin, "file.bin"), "wb") as f:
        f.write(data)
    return origin, hashlib.sha256(data).hexdigest()


class Capture:
    """tshark on `iface` in `node`'s namespace, decoding live with the dissector (the
    shipped deploy/wireshark/wanopt.lua): TCP on `ports` and ICMP, the wanopt inner
    channel decoded on the `decode_as` ports too.

    Lines are read as tshark prints them (-l). Synchronised, not slept on: pings
    from `node` to `peer_ip` cross the WAN until tshark shows one, so no packet
    after the constructor returns is missed. stop() returns the non-ICMP packets,
    each a dict of FIELDS."""
    FIELDS = ["tcp.srcport", "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack", "wanopt.disc.device_id", "wanopt.hello.opener",
              "wanopt.disc.client", "wanopt.disc.client6", "wanopt.disc.answer", "tcp.option_kind", "_ws.col.Protocol", "_ws.col.Info"]

    def __init__(self, lab, node, iface, peer_ip, dissector, ports=(80,), decode_as=()):
        capture_filter = " or ".join([f"tcp port {p}" for p in ports] + ["icmp"])
        # A 64 MiB kernel buffer (the default is 2): decoding with the Lua dissector
        # lags behind a 2 MiB transfer on a loaded machine, and dumpcap drops what
        # does not fit (seen in CI: a whole connection missing from a capture).
        # Out-of-order reassembly: a veth reorders segments when the sender moves to the
        # other CPU (per-CPU backlogs); without it tshark loses the PDU they carry (seen:
        # an SMB2 READ response missing from a capture while the client got it).
        cmd = ["tshark", "-l", "-n", "-B", "64", "-o", "tcp.reassemble_out_of_order:TRUE", "-i", iface,
               "-f", capture_filter, "-X", f"lua_script:{dissector}"]
        for port in decode_as:
            cmd += ["-d", f"tcp.port=={port},wanopt"]
        cmd += ["-T", "fields", "-E", "separator=|"]
        for f in self.FIELDS:
            cmd += ["-e", f]
        self.lab, self.name, self.lines = lab, f"tshark-{node}", []
        self.node, self.peer_ip = node, peer_ip
        self.proc = lab.spawn(self.name, node, *cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.sync()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def sync(self):
        """Returns once tshark has shown a ping sent after this call: every packet
        that crossed the WAN before it has been printed too."""
        seen = sum("ICMP" in l for l in self.lines)
        deadline = time.monotonic() + 30
        while sum("ICMP" in l for l in self.lines) == seen:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("tshark never showed the ping")
            self.lab.run(self.node, "ping", "-c", "1", "-W", "1", self.peer_ip)

    def stop(self):
        self.sync()
        self.lab.stop(self.name)  # SIGTERM; tshark prints what it has
        self.reader.join(10)
        return [dict(zip(self.FIELDS, l.split("|"))) for l in self.lines if "ICMP" not in l]
