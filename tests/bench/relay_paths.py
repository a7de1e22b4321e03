"""relay_bench's paths under test: free loopback ports and readiness probes, the
two-hop socat chain, the wanopt pair, and the goodput phase (interleaved iperf3
runs through each path)."""

import json
import os
import random
import socket
import subprocess
import time

from benchkit import (BenchError, DaemonDied, binary_identity, indent, log, proc_children, proc_cpu_seconds,
                      read_first, tail_file)

LOOPBACK = "127.0.0.1"
ALL_PATHS = ("direct", "socat", "wanopt")
STREAM_COUNTS = (1, 16)

DC_DEVICE_ID = "02:00:00:00:00:02"
BRANCH_DEVICE_ID = "02:00:00:00:00:01"


# ---------------------------------------------------------------------------
# Ports and readiness
# ---------------------------------------------------------------------------


class PortAllocator:
    """Free 127.0.0.1 ports, preferably outside the ephemeral range so that
    outgoing connections cannot occupy them between allocation and use."""

    def __init__(self):
        self.used = set()
        self.rng = random.Random()
        lo, hi = 32768, 60999
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                lo, hi = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
        if lo > 12000:
            self.window = (10000, lo - 1)
        elif hi < 64000:
            self.window = (hi + 1, 65000)
        else:
            self.window = None

    @staticmethod
    def _bindable(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def get(self):
        if self.window is not None:
            for _ in range(500):
                port = self.rng.randint(*self.window)
                if port not in self.used and self._bindable(port):
                    self.used.add(port)
                    return port
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
            s.close()
            if port not in self.used:
                self.used.add(port)
                return port
        raise BenchError("could not find a free TCP port on 127.0.0.1")


def is_listening(port):
    """True if some socket is in LISTEN state on 127.0.0.1/0.0.0.0:port.
    Used for iperf3 servers, where a probe connect would count as a client."""
    want = {"0100007F:%04X" % port, "00000000:%04X" % port}
    want6 = ":%04X" % port
    for fn, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(fn) as f:
                next(f, None)
                for line in f:
                    parts = line.split(None, 4)
                    if len(parts) < 4 or parts[3] != "0A":
                        continue
                    local = parts[1]
                    if (not v6 and local in want) or (v6 and local.endswith(want6)):
                        return True
        except OSError:
            pass
    return False


def wait_listening(port, watch, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        for p in watch:
            p.check_alive()
        if is_listening(port):
            return
        if time.monotonic() > deadline:
            raise BenchError("nothing listening on 127.0.0.1:%d after %.0f s" % (port, timeout))
        time.sleep(0.02)


def wait_tcp_connect(port, watch, timeout=10.0):
    """Poll a TCP connect to 127.0.0.1:port until it succeeds (bounded)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        for p in watch:
            p.check_alive()
        try:
            s = socket.create_connection((LOOPBACK, port), timeout=1.0)
            s.close()
            return
        except OSError as e:
            last = e
        if time.monotonic() > deadline:
            tails = "".join("\n  %s stderr tail:\n%s" % (p.name, indent(p.stderr_tail(), "    "))
                            for p in watch)
            raise DaemonDied("no TCP listener on 127.0.0.1:%d after %.0f s (last error: %s)%s"
                             % (port, timeout, last, tails))
        time.sleep(0.05)



# ---------------------------------------------------------------------------
# Proxies under test
# ---------------------------------------------------------------------------


class SocatChain:
    name = "socat"

    def __init__(self, procs, ports, tmpdir, server_port):
        self.procs = procs
        self.server_port = server_port
        self.port_a = ports.get()
        self.port_b = ports.get()
        self.tmpdir = tmpdir
        self.members = []
        # bind=127.0.0.1 only restricts the listener to loopback; otherwise
        # these are exactly the commands from the benchmark definition.
        self.commands = [
            ["socat", "TCP-LISTEN:%d,bind=%s,reuseaddr,fork" % (self.port_a, LOOPBACK),
             "TCP:%s:%d" % (LOOPBACK, self.port_b)],
            ["socat", "TCP-LISTEN:%d,bind=%s,reuseaddr,fork" % (self.port_b, LOOPBACK),
             "TCP:%s:%d" % (LOOPBACK, self.server_port)],
        ]

    @property
    def client_port(self):
        return self.port_a

    def start(self):
        # Start the far hop first, then the near one; probing the near one
        # forks a child that connects on to B (and, through it, to the not yet
        # running iperf3 port, which is refused) - harmless.
        for idx in (1, 0):
            p = self.procs.start("socat-hop%d" % (idx + 1), self.commands[idx],
                                 stderr_path=os.path.join(self.tmpdir, "socat%d.stderr" % (idx + 1)),
                                 group=True)
            self.members.append(p)
            wait_tcp_connect(self.port_b if idx == 1 else self.port_a, self.members)

    def check_alive(self):
        for p in self.members:
            p.check_alive()

    def cpu_seconds(self):
        # socat forks one child per connection; their CPU time is only visible
        # (in cutime/cstime) after the parent has reaped them.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(proc_children(p.pid) for p in self.members):
            time.sleep(0.05)
        vals = [proc_cpu_seconds(p.pid, children=True) for p in self.members]
        return None if any(v is None for v in vals) else sum(vals)

    def stop(self):
        for p in self.members:
            self.procs.stop(p)


class WanoptPair:
    name = "wanopt"

    def __init__(self, procs, ports, tmpdir, binary, destination_port, tag, nofile=None,
                 policy="T", datastores=False, status=False, dre_lines="", peering_lines=""):
        """policy: what both boxes offer (relay_bench measures the relay itself: T).
        datastores: give each box a fresh DRE datastore under tmpdir (needed for D and F).
        status: give each box a status listener (status_port["branch"|"datacenter"]).
        dre_lines: more [dre] settings for both boxes (with datastores).
        peering_lines: a [peering] section for both boxes (TLS between them); none:
        a plaintext inner channel."""
        self.procs = procs
        self.nofile = nofile
        self.binary = binary
        self.tmpdir = tmpdir
        self.tag = tag
        self.destination_port = destination_port
        self.dc_port = ports.get()
        self.br_port = ports.get()
        self.dc = None
        self.br = None
        self.warnings = []
        self.dc_config = os.path.join(tmpdir, "%s-datacenter.toml" % tag)
        self.br_config = os.path.join(tmpdir, "%s-branch.toml" % tag)
        extra = {}
        self.status_port = {}
        for box in ("datacenter", "branch"):
            text = peering_lines
            if datastores:
                text += '[dre]\ndatastore = "%s"\n%s' % (os.path.join(tmpdir, "%s-%s-store" % (tag, box)), dre_lines)
            if status:
                self.status_port[box] = ports.get()
                text += '[status]\nlisten = "%s:%d"\n' % (LOOPBACK, self.status_port[box])
            extra[box] = text
        with open(self.dc_config, "w") as f:
            f.write('[box]\ndevice_id = "%s"\npolicy = "%s"\n\n[datacenter]\nlisten = "%s:%d"\n\n%s'
                    % (DC_DEVICE_ID, policy, LOOPBACK, self.dc_port, extra["datacenter"]))
        with open(self.br_config, "w") as f:
            f.write('[box]\ndevice_id = "%s"\npolicy = "%s"\n\n[[branch.forward]]\n'
                    'listen = "%s:%d"\ndestination = "%s:%d"\npeer = "%s:%d"\n\n%s'
                    % (BRANCH_DEVICE_ID, policy, LOOPBACK, self.br_port, LOOPBACK,
                       destination_port, LOOPBACK, self.dc_port, extra["branch"]))

    @property
    def client_port(self):
        return self.br_port

    @property
    def members(self):
        return [p for p in (self.dc, self.br) if p is not None]

    def start(self, timeout=10.0):
        # The binary may be rebuilt while a long run is in progress; record
        # exactly what each pair ran.
        self.binary_identity = binary_identity(self.binary)
        t0 = time.monotonic()
        self.dc = self.procs.start(
            "wanopt-datacenter", [str(self.binary), "run", "--config", self.dc_config],
            stderr_path=os.path.join(self.tmpdir, "%s-datacenter.stderr" % self.tag),
            nofile=self.nofile)
        wait_tcp_connect(self.dc_port, [self.dc], timeout)
        self.br = self.procs.start(
            "wanopt-branch", [str(self.binary), "run", "--config", self.br_config],
            stderr_path=os.path.join(self.tmpdir, "%s-branch.stderr" % self.tag),
            nofile=self.nofile)
        wait_tcp_connect(self.br_port, [self.dc, self.br], timeout)
        # Informational only: readiness is decided by the connect probes.
        self.ready_info = {"seconds_to_ready": round(time.monotonic() - t0, 3)}
        for p in (self.dc, self.br):
            with open(p.stderr_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            self.ready_info[p.name + "_listening_lines"] = [
                line for line in text.splitlines() if "listening on" in line]

    def check_alive(self):
        for p in self.members:
            p.check_alive()

    def cpu_seconds(self):
        vals = [proc_cpu_seconds(p.pid) for p in self.members]
        return None if any(v is None for v in vals) else sum(vals)

    def config_text(self):
        out = {}
        for key, path in (("datacenter", self.dc_config), ("branch", self.br_config)):
            with open(path) as f:
                out[key] = f.read()
        return out

    def stderr_tails(self, lines=15):
        return {p.name: p.stderr_tail(lines) for p in self.members}

    def stop(self):
        infos = []
        # Branch first (client side), then the datacenter box.
        for p in (self.br, self.dc):
            if p is not None and p.stop_info is None:
                info = self.procs.stop(p)
                if info is not None:
                    infos.append(info)
                    if info.get("sigterm_ok") is False:
                        self.warnings.append(
                            "%s (%s pair, pid %d) did not exit within 5 s of SIGTERM; killed "
                            "with SIGKILL" % (p.name, self.tag, p.pid))
        return infos


# ---------------------------------------------------------------------------
# Goodput measurement
# ---------------------------------------------------------------------------


def run_iperf(procs, tmpdir, client_port, server_port, seconds, streams, reverse, proxy):
    """One iperf3 run through client_port to a fresh iperf3 server on
    server_port. Returns a sample dict (with 'error' set on failure)."""
    sample = {"bits_per_second": None, "error": None}
    server = procs.start("iperf3-server",
                         ["iperf3", "-s", "-B", LOOPBACK, "-p", str(server_port)],
                         stderr_path=os.path.join(tmpdir, "iperf3-server.stderr"))
    client = None
    try:
        wait_listening(server_port, [server], timeout=10.0)
        if proxy is not None:
            proxy.check_alive()
        cpu0 = proxy.cpu_seconds() if proxy is not None else None
        argv = ["iperf3", "-c", LOOPBACK, "-p", str(client_port), "-t", str(seconds),
                "-P", str(streams), "-J", "--connect-timeout", "5000"]
        if reverse:
            argv.append("-R")
        sample["command"] = " ".join(argv)
        client = procs.start("iperf3-client", argv, stdout=subprocess.PIPE,
                             stderr_path=os.path.join(tmpdir, "iperf3-client.stderr"))
        t0 = time.monotonic()
        try:
            out, _ = client.popen.communicate(timeout=seconds + 20)
        except subprocess.TimeoutExpired:
            procs.stop(client)
            sample["error"] = "iperf3 client timed out after %.0f s" % (time.monotonic() - t0)
            if proxy is not None:
                proxy.check_alive()
                cpu1 = proxy.cpu_seconds()
                if cpu0 is not None and cpu1 is not None:
                    # High values here mean a proxy was busy while moving nothing.
                    sample["proxy_cpu_seconds"] = round(cpu1 - cpu0, 3)
                    sample["error"] += " (proxy CPU during the run: %.1f s)" % (cpu1 - cpu0)
            return sample
        sample["wall_seconds"] = round(time.monotonic() - t0, 3)
        rc = client.popen.returncode
        procs.stop(client)
        if proxy is not None:
            proxy.check_alive()
            cpu1 = proxy.cpu_seconds()
            if cpu0 is not None and cpu1 is not None:
                sample["proxy_cpu_seconds"] = round(cpu1 - cpu0, 3)
        try:
            data = json.loads(out.decode("utf-8", "replace"))
        except ValueError:
            sample["error"] = "iperf3 exit %s, unparsable output; stderr: %s" % (
                rc, tail_file(client.stderr_path, 5))
            return sample
        if data.get("error"):
            sample["error"] = "iperf3: %s" % data["error"]
            return sample
        try:
            recv = data["end"]["sum_received"]
            sent = data["end"]["sum_sent"]
            sample["bits_per_second"] = float(recv["bits_per_second"])
            sample["bytes_received"] = int(recv["bytes"])
            sample["seconds_received"] = float(recv.get("seconds", 0.0))
            sample["retransmits"] = sent.get("retransmits")
            cpu = data["end"].get("cpu_utilization_percent") or {}
            sample["iperf_cpu_host_total"] = cpu.get("host_total")
            sample["iperf_cpu_remote_total"] = cpu.get("remote_total")
        except (KeyError, TypeError, ValueError) as e:
            sample["error"] = "iperf3 output lacks end.sum_received (%s)" % e
        if sample["bits_per_second"] is not None and sample["bits_per_second"] <= 0:
            sample["error"] = "iperf3 reported zero goodput (%s bytes received; proxy CPU %s s)" % (
                sample.get("bytes_received"), sample.get("proxy_cpu_seconds"))
        return sample
    finally:
        if client is not None:
            procs.stop(client)
        procs.stop(server)


def check_binary(results, pair, phase):
    results.setdefault("wanopt_binary_per_phase", {})[phase] = pair.binary_identity
    first = results["machine"].get("wanopt_binary", {}).get("sha256")
    now = pair.binary_identity.get("sha256")
    if first and now != first:
        results["warnings"].append(
            "wanopt binary changed during the run: the %s phase ran sha256 %s (mtime %s), "
            "the run started with %s" % (phase, (now or "?")[:12],
                                         pair.binary_identity.get("mtime_utc"), first[:12]))


def throughput_phase(args, procs, ports, tmpdir, results):
    server_ports = {path: ports.get() for path in args.paths}
    proxies = {}
    client_ports = {}
    if "direct" in args.paths:
        client_ports["direct"] = server_ports["direct"]
    try:
        if "socat" in args.paths:
            chain = SocatChain(procs, ports, tmpdir, server_ports["socat"])
            chain.start()
            proxies["socat"] = chain
            client_ports["socat"] = chain.client_port
            results["config"]["socat_commands"] = [" ".join(c) for c in chain.commands]
        if "wanopt" in args.paths:
            pair = WanoptPair(procs, ports, tmpdir, args.wanopt, server_ports["wanopt"], "tput",
                              args.daemon_nofile)
            pair.start()
            proxies["wanopt"] = pair
            client_ports["wanopt"] = pair.client_port
            results["config"]["wanopt_configs_throughput"] = pair.config_text()
            results["throughput"]["wanopt_ready"] = pair.ready_info
            check_binary(results, pair, "goodput")

        directions = ["forward", "reverse"] if args.reverse else ["forward"]
        total = args.repeats * len(STREAM_COUNTS) * len(directions) * len(args.paths)
        seq = 0
        samples = results["throughput"]["samples"]
        for rep in range(args.repeats):
            # Rotate the path order per repeat so no path is always first.
            order = list(args.paths)
            k = rep % len(order)
            order = order[k:] + order[:k]
            for streams in STREAM_COUNTS:
                for direction in directions:
                    for path in order:
                        seq += 1
                        s = run_iperf(procs, tmpdir, client_ports[path], server_ports[path],
                                      args.seconds, streams, direction == "reverse",
                                      proxies.get(path))
                        s.update(path=path, streams=streams, direction=direction,
                                 repeat=rep + 1, seq=seq,
                                 loadavg=read_first("/proc/loadavg"))
                        samples.append(s)
                        if s["error"]:
                            results["errors"].append("%s P=%d %s rep %d: %s" % (
                                path, streams, direction, rep + 1, s["error"]))
                            log("[%d/%d] %-6s P=%-2d %-7s rep %d: FAILED: %s" % (
                                seq, total, path, streams, direction, rep + 1, s["error"]))
                        else:
                            log("[%d/%d] %-6s P=%-2d %-7s rep %d: %7.2f Gbit/s" % (
                                seq, total, path, streams, direction, rep + 1,
                                s["bits_per_second"] / 1e9))
        if "wanopt" in proxies:
            results["throughput"]["wanopt_stderr_tail"] = proxies["wanopt"].stderr_tails()
    finally:
        for name in ("wanopt", "socat"):
            if name in proxies:
                info = proxies[name].stop()
                if name == "wanopt":
                    results["throughput"]["wanopt_stop"] = info
                    results["warnings"].extend(proxies[name].warnings)
