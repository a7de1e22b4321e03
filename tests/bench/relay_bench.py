#!/usr/bin/python3
"""Loopback benchmark for the TCP-only wanopt proxy pair.

Measures, side by side in one run:

  1. Goodput (iperf3, received bits/s) for 1 and 16 parallel TCP streams, in
     the forward and (optionally) reverse direction, through
       - direct:  iperf3 client -> iperf3 server
       - socat:   client -> socat -> socat -> iperf3 server (two-hop chain)
       - wanopt:  client -> wanopt branch -> wanopt datacenter -> iperf3 server
     Each configuration is repeated R times, interleaved; medians and all
     samples are reported, together with wanopt/socat and wanopt/direct ratios.

  2. Peak RSS per idle connection: N idle connections (default 10,000) opened
     through a fresh wanopt pair to a local "hold" origin; each connection
     carries exactly one byte, and the origin must receive N bytes in total.

Results: a JSON file (--json) and a Markdown table (stdout and --markdown).
Targets (printed, never asserted): wanopt >= 1.5x the socat chain's goodput;
< 64 KiB per idle connection for both proxies together at 10,000 connections.

Standard library only; run with /usr/bin/python3.  All traffic is on
127.0.0.1.  Every process started here is stopped in a finally block, by PID
(each child runs in its own session, so a socat's forked per-connection
children are signalled through that child's own process group).

Usage:
  /usr/bin/python3 tests/bench/relay_bench.py                # full run
  /usr/bin/python3 tests/bench/relay_bench.py --quick        # smoke run (CI)
  /usr/bin/python3 tests/bench/relay_bench.py --paths direct,socat --idle 0

Exit status: 0 ok; 1 some measurement failed (results still written);
2 setup error (missing binary/tool, bad option); 3 a proxy daemon died;
130 interrupted.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WANOPT = "build/wanopt/wanopt"
DEFAULT_JSON = "tests/bench/results/relay.json"
DEFAULT_MARKDOWN = "tests/bench/results/relay.md"
LOOPBACK = "127.0.0.1"

TARGET_RATIO_VS_SOCAT = 1.5
TARGET_IDLE_BYTES_PER_CONN = 64 * 1024
TARGET_IDLE_CONNS = 10000

PATH_LABELS = {
    "direct": "direct",
    "socat": "socat chain (2 hops)",
    "wanopt": "wanopt pair",
}
ALL_PATHS = ("direct", "socat", "wanopt")
STREAM_COUNTS = (1, 16)

DC_DEVICE_ID = "02:00:00:00:00:02"
BRANCH_DEVICE_ID = "02:00:00:00:00:01"


class BenchError(Exception):
    """Fatal setup/runtime problem; message is shown to the user."""

    exit_code = 2


class DaemonDied(BenchError):
    exit_code = 3


def log(msg):
    print("[relay_bench] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Process management
# ---------------------------------------------------------------------------


def tail_file(path, max_lines=30, max_bytes=16384):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    lines = data.splitlines()
    return "\n".join(lines[-max_lines:])


class Proc:
    def __init__(self, name, popen, stderr_path, group):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.stderr_path = stderr_path
        self.group = group  # signal the child's own process group too
        self.stop_info = None

    def alive(self):
        return self.popen.poll() is None

    def stderr_tail(self, lines=30):
        if self.stderr_path is None:
            return "(stderr not captured)"
        return tail_file(self.stderr_path, lines)

    def check_alive(self):
        rc = self.popen.poll()
        if rc is not None:
            raise DaemonDied(
                "%s (pid %d) exited unexpectedly with status %s; stderr tail:\n%s"
                % (self.name, self.pid, rc, indent(self.stderr_tail())))


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines()) or prefix + "(empty)"


class ProcSet:
    """Starts children in their own session and stops exactly those PIDs."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, stderr_path=None, stdin=subprocess.DEVNULL,
              stdout=subprocess.DEVNULL, group=False, nofile=None):
        if stderr_path is not None:
            err = open(stderr_path, "wb")
        else:
            err = subprocess.DEVNULL
        preexec = None
        if nofile:
            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        try:
            popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err,
                                     start_new_session=True, close_fds=True,
                                     preexec_fn=preexec)
        except (OSError, subprocess.SubprocessError) as e:
            raise BenchError("cannot start %s (%s): %s" % (name, argv[0], e))
        finally:
            if stderr_path is not None:
                err.close()
        proc = Proc(name, popen, stderr_path, group)
        self.procs.append(proc)
        return proc

    def _signal(self, proc, sig):
        # Only while the child is unreaped, so its PID (and PGID == PID, as it
        # is a session leader) cannot have been reused.
        if proc.popen.returncode is not None:
            return
        try:
            if proc.group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass

    def stop(self, proc, timeout=5.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Records how it ended."""
        if proc not in self.procs:
            return proc.stop_info
        info = {"name": proc.name, "pid": proc.pid}
        rc = proc.popen.poll()
        if rc is not None:
            info.update(already_exited=True, returncode=rc)
        else:
            t0 = time.monotonic()
            self._signal(proc, signal.SIGTERM)
            try:
                rc = proc.popen.wait(timeout=timeout)
                info.update(already_exited=False, returncode=rc, sigterm_ok=True,
                            stop_seconds=round(time.monotonic() - t0, 3))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                try:
                    rc = proc.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    rc = None
                info.update(already_exited=False, returncode=rc, sigterm_ok=False,
                            stop_seconds=round(time.monotonic() - t0, 3))
        if proc.group and proc.popen.returncode is not None:
            # Leader reaped; per-connection children of socat got SIGTERM above.
            pass
        for stream in (proc.popen.stdin, proc.popen.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.procs.remove(proc)
        proc.stop_info = info
        return info

    def stop_all(self):
        for proc in list(reversed(self.procs)):
            try:
                self.stop(proc, timeout=3.0)
            except Exception as e:  # keep cleaning up
                log("warning: failed to stop %s (pid %d): %s" % (proc.name, proc.pid, e))


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
# /proc helpers
# ---------------------------------------------------------------------------


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmSize", "VmPeak", "RssAnon", "RssFile"):
                    out[key] = int(val.split()[0]) * 1024
                elif key == "Threads":
                    out[key] = int(val)
    except OSError:
        pass
    try:
        out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        pass
    return out


def proc_nofile_limit(pid):
    try:
        with open("/proc/%d/limits" % pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    parts = line.split()
                    return {"soft": parts[3], "hard": parts[4]}
    except OSError:
        pass
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid, children=False):
    """utime+stime (and reaped children's time if children=True) in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def proc_children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return f.read().split()
    except OSError:
        return []


# ---------------------------------------------------------------------------
# Machine info
# ---------------------------------------------------------------------------


def run_quiet(argv, timeout=10):
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, text=True)
        return r.returncode, r.stdout.strip(), r.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "", str(e)


def read_first(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def binary_identity(path):
    try:
        st = os.stat(path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        return {"path": str(path), "error": str(e)}
    return {
        "path": str(path),
        "sha256": h.hexdigest(),
        "size": st.st_size,
        "mtime_utc": datetime.datetime.fromtimestamp(
            st.st_mtime, datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_info(wanopt_path):
    info = {
        "nproc": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "loadavg_start": read_first("/proc/loadavg"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    rc, out, _ = run_quiet(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    info["git_commit"] = out if rc == 0 and out else None
    rc, out, _ = run_quiet(["git", "-C", str(REPO_ROOT), "status", "--porcelain"])
    info["git_dirty_entries"] = len(out.splitlines()) if rc == 0 else None
    rc, out, err = run_quiet(["iperf3", "--version"])
    info["iperf3_version"] = (out or err).splitlines()[0] if (out or err) else None
    rc, out, err = run_quiet(["socat", "-V"])
    for line in (out + "\n" + err).splitlines():
        if line.startswith("socat version"):
            info["socat_version"] = line.strip()
            break
    if wanopt_path is not None and wanopt_path.is_file():
        info["wanopt_binary"] = binary_identity(wanopt_path)
    for key, path in (("somaxconn", "/proc/sys/net/core/somaxconn"),
                      ("tcp_rmem", "/proc/sys/net/ipv4/tcp_rmem"),
                      ("tcp_wmem", "/proc/sys/net/ipv4/tcp_wmem"),
                      ("ip_local_port_range", "/proc/sys/net/ipv4/ip_local_port_range")):
        info[key] = read_first(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    info["rlimit_nofile_initial"] = {"soft": soft, "hard": hard}
    return info


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

    def __init__(self, procs, ports, tmpdir, binary, destination_port, tag, nofile=None):
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
        with open(self.dc_config, "w") as f:
            # This benchmark measures the relay itself: the TCP-only policy (T).
            f.write('[box]\ndevice_id = "%s"\npolicy = "T"\n\n[datacenter]\nlisten = "%s:%d"\n'
                    % (DC_DEVICE_ID, LOOPBACK, self.dc_port))
        with open(self.br_config, "w") as f:
            f.write('[box]\ndevice_id = "%s"\npolicy = "T"\n\n[[branch.forward]]\n'
                    'listen = "%s:%d"\ndestination = "%s:%d"\npeer = "%s:%d"\n'
                    % (BRANCH_DEVICE_ID, LOOPBACK, self.br_port, LOOPBACK,
                       destination_port, LOOPBACK, self.dc_port))

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


def summarize(results, args):
    samples = results["throughput"]["samples"]
    directions = ["forward", "reverse"] if args.reverse else ["forward"]
    rows = []
    for streams in STREAM_COUNTS:
        for direction in directions:
            med = {}
            for path in args.paths:
                ok = [s["bits_per_second"] for s in samples
                      if s["path"] == path and s["streams"] == streams
                      and s["direction"] == direction and s["bits_per_second"]]
                failed = sum(1 for s in samples if s["path"] == path and s["streams"] == streams
                             and s["direction"] == direction and s["error"])
                m = statistics.median(ok) if ok else None
                med[path] = m
                cpu = [s["proxy_cpu_seconds"] / s["bytes_received"] * 1e9
                       for s in samples if s["path"] == path and s["streams"] == streams
                       and s["direction"] == direction and s.get("proxy_cpu_seconds") is not None
                       and s.get("bytes_received")]
                rows.append({
                    "path": path, "streams": streams, "direction": direction,
                    "n_ok": len(ok), "n_failed": failed,
                    "median_bits_per_second": m,
                    "median_gbit_s": round(m / 1e9, 3) if m else None,
                    "samples_gbit_s": [round(v / 1e9, 3) for v in ok],
                    "min_gbit_s": round(min(ok) / 1e9, 3) if ok else None,
                    "max_gbit_s": round(max(ok) / 1e9, 3) if ok else None,
                    "proxy_cpu_seconds_per_gb_median":
                        round(statistics.median(cpu), 3) if cpu else None,
                })
            for row in rows[-len(args.paths):]:
                m = med[row["path"]]
                row["ratio_vs_socat"] = (round(m / med["socat"], 3)
                                         if m and med.get("socat") else None)
                row["ratio_vs_direct"] = (round(m / med["direct"], 3)
                                          if m and med.get("direct") else None)
    results["throughput"]["summary"] = rows
    ratios = {}
    for row in rows:
        if row["path"] == "wanopt":
            key = "P%d_%s" % (row["streams"], row["direction"])
            ratios[key] = {"wanopt_over_socat": row["ratio_vs_socat"],
                           "wanopt_over_direct": row["ratio_vs_direct"]}
    results["ratios"] = ratios
    tgt = results["targets"]
    tgt["throughput"] = {
        "description": "TCP-only pair goodput >= %.1fx the socat chain's" % TARGET_RATIO_VS_SOCAT,
        "required_ratio": TARGET_RATIO_VS_SOCAT,
        "per_config": {k: (None if v["wanopt_over_socat"] is None
                           else v["wanopt_over_socat"] >= TARGET_RATIO_VS_SOCAT)
                       for k, v in ratios.items()},
    }


# ---------------------------------------------------------------------------
# Idle-connection memory
# ---------------------------------------------------------------------------


def origin_main(port):
    """Hold origin: accepts and holds connections, counts bytes received.
    Protocol on stdin/stdout: prints 'READY' once listening; each 'q' line on
    stdin is answered with 'accepted open closed bytes'."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((LOOPBACK, port))
    lsock.listen(65535)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, "listen")
    sel.register(0, selectors.EVENT_READ, "stdin")
    stats = {"accepted": 0, "open": 0, "closed": 0, "bytes": 0, "accept_errors": 0}
    os.write(1, b"READY\n")
    inbuf = b""
    while True:
        for key, _ in sel.select():
            if key.data == "listen":
                for _ in range(256):
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    except OSError:
                        stats["accept_errors"] += 1
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                    stats["accepted"] += 1
                    stats["open"] += 1
            elif key.data == "stdin":
                chunk = os.read(0, 4096)
                if not chunk:
                    return 0
                inbuf += chunk
                while b"\n" in inbuf:
                    line, inbuf = inbuf.split(b"\n", 1)
                    if line.strip() == b"q":
                        os.write(1, ("%(accepted)d %(open)d %(closed)d %(bytes)d "
                                     "%(accept_errors)d\n" % stats).encode())
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    stats["bytes"] += len(data)
                else:
                    sel.unregister(conn)
                    conn.close()
                    stats["open"] -= 1
                    stats["closed"] += 1


class Origin:
    def __init__(self, procs, port, tmpdir):
        self.port = port
        self.proc = procs.start(
            "hold-origin", [sys.executable, os.path.abspath(__file__), "--origin-mode", str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr_path=os.path.join(tmpdir, "origin.stderr"))
        line = self._readline(10.0)
        if line != "READY":
            raise BenchError("hold origin failed to start (got %r); stderr:\n%s"
                             % (line, indent(self.proc.stderr_tail())))

    def _readline(self, timeout):
        fd = self.proc.popen.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise BenchError("hold origin did not answer within %.0f s" % timeout)
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise BenchError("hold origin exited; stderr:\n%s"
                                     % indent(self.proc.stderr_tail()))
                buf += chunk
        finally:
            sel.close()
        return buf.decode().strip()

    def stats(self):
        self.proc.popen.stdin.write(b"q\n")
        self.proc.popen.stdin.flush()
        a, o, c, b, e = (int(x) for x in self._readline(10.0).split())
        return {"accepted": a, "open": o, "closed": c, "bytes": b, "accept_errors": e}


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard != resource.RLIM_INFINITY and hard < needed:
        # Only possible with CAP_SYS_RESOURCE; fine to fail.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ValueError, OSError):
            pass
    if soft != target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def idle_phase(args, procs, ports, tmpdir, results):
    n = args.idle
    idle = results["idle"]
    idle["connections_requested"] = n
    soft, hard = raise_nofile(n + 256)
    idle["rlimit_nofile_bench"] = {"soft": soft, "hard": hard}
    if soft != resource.RLIM_INFINITY and soft < n + 64:
        raise BenchError("RLIMIT_NOFILE is %d (hard %d); %d idle connections need about %d"
                         % (soft, hard, n, n + 64))
    origin_port = ports.get()
    pair = WanoptPair(procs, ports, tmpdir, args.wanopt, origin_port, "idle", args.daemon_nofile)
    origin = None
    socks = []
    try:
        pair.start()
        results["config"]["wanopt_configs_idle"] = pair.config_text()
        idle["wanopt_ready"] = pair.ready_info
        check_binary(results, pair, "idle-memory")
        # Origin starts after the readiness probes, so probe connections that
        # the pair forwards are refused instead of being counted.
        origin = Origin(procs, origin_port, tmpdir)
        base = origin.stats()
        idle["origin_before"] = base
        before = {p.name: proc_status(p.pid) for p in pair.members}
        idle["daemons_before"] = before
        idle["daemon_nofile_limits"] = {p.name: proc_nofile_limit(p.pid) for p in pair.members}

        t0 = time.monotonic()
        connect_error = None
        for i in range(n):
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as e:
                connect_error = "socket() failed after %d connections: %s" % (i, e)
                break
            socks.append(s)
            s.settimeout(15.0)
            try:
                s.connect((LOOPBACK, pair.client_port))
                s.sendall(b"x")
            except OSError as e:
                connect_error = "connection %d of %d failed: %s" % (i + 1, n, e)
                break
            if i % 500 == 499:
                pair.check_alive()
        idle["connect_seconds"] = round(time.monotonic() - t0, 3)
        pair.check_alive()
        if connect_error:
            raise BenchError(connect_error)

        # All N bytes must arrive at the origin: proof that every connection
        # really went through both proxies.
        # Wait (bounded) until all bytes arrived; give up early after 10 s
        # without progress.
        deadline = time.monotonic() + 30 + n / 500.0
        st = origin.stats()
        last_progress = time.monotonic()
        while st["bytes"] - base["bytes"] < n and time.monotonic() < deadline:
            pair.check_alive()
            if time.monotonic() - last_progress > 10.0:
                break
            time.sleep(0.2)
            prev = st["bytes"]
            st = origin.stats()
            if st["bytes"] != prev:
                last_progress = time.monotonic()
        idle["deliver_seconds"] = round(time.monotonic() - t0, 3)
        idle["origin_after"] = st
        received = st["bytes"] - base["bytes"]
        idle["origin_bytes_received"] = received
        after = {p.name: proc_status(p.pid) for p in pair.members}
        idle["daemons_after"] = after
        pair.check_alive()

        # Client sockets that became readable were closed/reset by the proxy.
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        idle["client_sockets_closed_by_proxy"] = len(sel.select(0))
        sel.close()

        if received != n:
            idle["valid"] = False
            msg = ("origin received %d bytes, expected %d (one per connection); origin stats %s; "
                   "daemon open fds %s; daemon RLIMIT_NOFILE %s"
                   % (received, n, st, {k: v.get("fds") for k, v in after.items()},
                      {p.name: proc_nofile_limit(p.pid) for p in pair.members}))
            limits = {p.name: proc_nofile_limit(p.pid) for p in pair.members}
            for name, lim in limits.items():
                fds = after.get(name, {}).get("fds")
                try:
                    soft_lim = int(lim["soft"])
                except (TypeError, KeyError, ValueError):
                    continue
                if fds is not None and fds >= soft_lim - max(32, soft_lim // 50):
                    msg += ("; %s is at its descriptor limit (%d of %d): with 2 descriptors per "
                            "relayed connection per box, %d connections need more than %d. "
                            "Raise the hard limit (--daemon-nofile N, needs CAP_SYS_RESOURCE) or "
                            "use a smaller --idle" % (name, fds, soft_lim, n, soft_lim))
                    break
            idle["error"] = msg
            results["errors"].append("idle: " + msg)
            log("idle: " + msg)
        else:
            idle["valid"] = True
        rss_before = sum(before[k].get("VmRSS", 0) for k in before)
        hwm_after = sum(after[k].get("VmHWM", 0) for k in after)
        rss_after = sum(after[k].get("VmRSS", 0) for k in after)
        idle["rss_before_bytes_total"] = rss_before
        idle["peak_rss_after_bytes_total"] = hwm_after
        idle["rss_after_bytes_total"] = rss_after
        idle["bytes_per_connection"] = round((hwm_after - rss_before) / n, 1)
        idle["bytes_per_connection_current_rss"] = round((rss_after - rss_before) / n, 1)
        idle["per_daemon_bytes_per_connection"] = {
            k: round((after[k].get("VmHWM", 0) - before[k].get("VmRSS", 0)) / n, 1)
            for k in after}
        idle["stderr_tail"] = pair.stderr_tails()
        log("idle: %d connections, origin got %d bytes, %.0f B/conn (peak RSS delta, both daemons)"
            % (n, received, idle["bytes_per_connection"]))
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        socks.clear()
        idle["wanopt_stop"] = pair.stop()
        results["warnings"].extend(pair.warnings)
        if origin is not None:
            procs.stop(origin.proc)
    tgt = results["targets"]
    tgt["idle_memory"] = {
        "description": "< 64 KiB per idle connection for both proxies together at 10,000 idle"
                       " connections",
        "limit_bytes_per_connection": TARGET_IDLE_BYTES_PER_CONN,
        "connections": n,
        "met": (idle["bytes_per_connection"] < TARGET_IDLE_BYTES_PER_CONN
                if idle.get("valid") else None),
        "note": None if n == TARGET_IDLE_CONNS else
        "measured at %d connections, target is defined at %d" % (n, TARGET_IDLE_CONNS),
    }


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def fmt_ratio(r):
    return "%.2fx" % r if r is not None else "n/a"


def fmt_kib(b):
    return "%.1f KiB" % (b / 1024.0)


def render_markdown(results, args):
    m = results["machine"]
    out = []
    out.append("# wanopt relay benchmark (TCP-only pair, loopback)")
    out.append("")
    out.append("- date: %s, host: %s, nproc: %s, kernel: %s"
               % (m.get("date_utc"), m.get("hostname"), m.get("nproc"), m.get("kernel")))
    out.append("- cpu: %s; git commit: %s (dirty entries: %s)"
               % (m.get("cpu_model"), m.get("git_commit") or "none", m.get("git_dirty_entries")))
    if args.paths:
        out.append("- goodput: %d repeat(s) x %s s per run, interleaved; loadavg at start: %s"
                   % (args.repeats, args.seconds, m.get("loadavg_start")))
    else:
        out.append("- goodput part skipped (--paths none); loadavg at start: %s"
                   % m.get("loadavg_start"))
    out.append("")
    rows = results["throughput"].get("summary") or []
    if rows:
        out.append("| path | streams | direction | median Gbit/s | samples Gbit/s "
                   "| ratio vs socat chain | ratio vs direct | proxy CPU s/GB |")
        out.append("|---|---:|---|---:|---|---:|---:|---:|")
        for r in rows:
            if r["median_gbit_s"] is not None:
                med = "%.2f" % r["median_gbit_s"]
            else:
                med = "FAILED" if r["n_failed"] else "not run"
            samples = ", ".join("%.2f" % v for v in r["samples_gbit_s"]) or "-"
            if r["n_failed"]:
                samples += " (%d failed)" % r["n_failed"]
            cpu = r["proxy_cpu_seconds_per_gb_median"]
            out.append("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                PATH_LABELS[r["path"]], r["streams"], r["direction"], med, samples,
                fmt_ratio(r["ratio_vs_socat"]), fmt_ratio(r["ratio_vs_direct"]),
                "%.2f" % cpu if cpu is not None else "-"))
        out.append("")
        tp = results["targets"].get("throughput")
        if tp and tp["per_config"]:
            parts = []
            for key, met in tp["per_config"].items():
                ratio = results["ratios"][key]["wanopt_over_socat"]
                parts.append("%s %s (%s)" % (key, fmt_ratio(ratio),
                                             "n/a" if met is None else ("met" if met else "NOT met")))
            out.append("Target: wanopt pair >= %.1fx socat chain goodput: %s"
                       % (TARGET_RATIO_VS_SOCAT, "; ".join(parts)))
        elif "wanopt" not in args.paths:
            out.append("Target: wanopt pair >= %.1fx socat chain goodput: not measured "
                       "(wanopt path not selected)" % TARGET_RATIO_VS_SOCAT)
        out.append("")
    idle = results.get("idle") or {}
    if idle.get("bytes_per_connection") is not None:
        per = idle["per_daemon_bytes_per_connection"]
        tgt = results["targets"].get("idle_memory", {})
        met = tgt.get("met")
        verdict = "n/a (invalid run)" if met is None else ("met" if met else "NOT met")
        out.append("Idle memory: %d idle connections: %.0f B/conn (%s) peak-RSS delta for both "
                   "daemons together [branch %s B/conn, datacenter %s B/conn]; "
                   "RSS before %s, peak after %s, RSS after %s; origin received %d/%d bytes. "
                   "Target < 64 KiB/conn at 10,000 connections: %s%s"
                   % (idle["connections_requested"], idle["bytes_per_connection"],
                      fmt_kib(idle["bytes_per_connection"]),
                      per.get("wanopt-branch"), per.get("wanopt-datacenter"),
                      fmt_kib(idle["rss_before_bytes_total"]),
                      fmt_kib(idle["peak_rss_after_bytes_total"]),
                      fmt_kib(idle["rss_after_bytes_total"]),
                      idle.get("origin_bytes_received", 0), idle["connections_requested"],
                      verdict, (" (" + tgt["note"] + ")") if tgt.get("note") else ""))
    elif args.idle and idle:
        out.append("Idle memory: FAILED - %s" % (idle.get("error") or "see errors"))
    elif args.idle:
        out.append("Idle memory: not run (benchmark aborted earlier, see errors)")
    else:
        out.append("Idle memory: not measured (--idle 0)")
    for title, key in (("Errors", "errors"), ("Warnings", "warnings")):
        if results.get(key):
            out.append("")
            out.append(title + ":")
            for e in results[key]:
                out.append("- " + e.replace("\n", " | "))
    out.append("")
    return "\n".join(out)


def write_outputs(results, args):
    text = render_markdown(results, args)
    for path, content in ((args.json, json.dumps(results, indent=2, sort_keys=False) + "\n"),
                          (args.markdown, text)):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(content)
            os.replace(tmp, path)
        except OSError as e:
            log("warning: cannot write %s: %s" % (path, e))
    return text


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def resolve_default(value, default):
    """Defaults are relative to the repo root; user-given paths to the cwd."""
    if value is None:
        return (REPO_ROOT / default).resolve()
    return Path(value).expanduser().resolve()


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Loopback goodput and idle-memory benchmark for the TCP-only wanopt pair.")
    ap.add_argument("--wanopt", default=None,
                    help="wanopt binary (default: <repo>/%s)" % DEFAULT_WANOPT)
    ap.add_argument("--seconds", type=int, default=None, help="iperf3 duration per run (default 5)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per configuration (default 3)")
    ap.add_argument("--reverse", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the reverse direction (iperf3 -R); default on")
    ap.add_argument("--idle", type=int, default=None,
                    help="idle connections for the memory test (default 10000; 0 skips)")
    ap.add_argument("--paths", default=",".join(ALL_PATHS),
                    help="comma-separated subset of %s, or 'none' to skip the goodput part "
                         "(default all)" % ",".join(ALL_PATHS))
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 repeat, 1-second runs, --idle 500 (explicit options win)")
    ap.add_argument("--json", default=None, help="JSON output (default <repo>/%s)" % DEFAULT_JSON)
    ap.add_argument("--markdown", default=None,
                    help="Markdown output (default <repo>/%s)" % DEFAULT_MARKDOWN)
    ap.add_argument("--daemon-nofile", type=int, default=None, metavar="N",
                    help="set RLIMIT_NOFILE (soft and hard) of the wanopt daemons to N before "
                         "exec (raising the hard limit needs root); default: inherit")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temp dir (configs, daemon stderr logs)")
    args = ap.parse_args(argv)
    if args.seconds is None:
        args.seconds = 1 if args.quick else 5
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.idle is None:
        args.idle = 500 if args.quick else TARGET_IDLE_CONNS
    if args.seconds < 1 or args.repeats < 1 or args.idle < 0:
        ap.error("--seconds and --repeats must be >= 1, --idle >= 0")
    paths = [p.strip() for p in args.paths.split(",") if p.strip() and p.strip() != "none"]
    bad = [p for p in paths if p not in ALL_PATHS]
    if bad:
        ap.error("--paths: unknown %s (choose from %s)" % (bad, ",".join(ALL_PATHS)))
    args.paths = [p for p in ALL_PATHS if p in paths]
    args.wanopt = resolve_default(args.wanopt, DEFAULT_WANOPT)
    args.json = resolve_default(args.json, DEFAULT_JSON)
    args.markdown = resolve_default(args.markdown, DEFAULT_MARKDOWN)
    return args


def preflight(args):
    need_wanopt = "wanopt" in args.paths or args.idle > 0
    for tool in ("iperf3", "socat"):
        if tool == "socat" and "socat" not in args.paths:
            continue
        if shutil.which(tool) is None:
            raise BenchError("required tool '%s' not found in PATH" % tool)
    if need_wanopt:
        if not args.wanopt.is_file():
            raise BenchError("wanopt binary not found at %s (build it first, or pass --wanopt "
                             "PATH; use --paths direct,socat --idle 0 to skip wanopt)"
                             % args.wanopt)
        if not os.access(args.wanopt, os.X_OK):
            raise BenchError("wanopt binary %s is not executable" % args.wanopt)
    if args.daemon_nofile:
        # Check in a throwaway child: a hard limit cannot be raised back.
        code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d))"
                % (args.daemon_nofile, args.daemon_nofile))
        rc, _, err = run_quiet([sys.executable, "-c", code])
        if rc != 0:
            raise BenchError("--daemon-nofile %d: cannot set RLIMIT_NOFILE to that value here "
                             "(current hard limit %d; raising it needs CAP_SYS_RESOURCE): %s"
                             % (args.daemon_nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                                err.splitlines()[-1] if err else "failed"))


def _sigterm(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv):
    if len(argv) == 2 and argv[0] == "--origin-mode":
        return origin_main(int(argv[1]))
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)
    results = {
        "schema": "wanopt-relay-bench/1",
        "machine": {},
        "config": {
            "seconds": args.seconds, "repeats": args.repeats, "reverse": args.reverse,
            "idle_connections": args.idle, "paths": args.paths, "streams": list(STREAM_COUNTS),
            "quick": args.quick, "wanopt": str(args.wanopt),
            "daemon_nofile": args.daemon_nofile,
            "goodput_metric": "iperf3 -J end.sum_received.bits_per_second",
        },
        "throughput": {"samples": []},
        "ratios": {},
        "idle": {},
        "targets": {},
        "errors": [],
        "warnings": [],
    }
    exit_code = 0
    procs = ProcSet()
    tmpdir = None
    try:
        preflight(args)
        results["machine"] = machine_info(args.wanopt)
        tmpdir = tempfile.mkdtemp(prefix="relay_bench.")
        ports = PortAllocator()
        log("paths=%s seconds=%d repeats=%d reverse=%s idle=%d; tmp=%s"
            % (",".join(args.paths), args.seconds, args.repeats, args.reverse, args.idle, tmpdir))
        if args.paths:
            throughput_phase(args, procs, ports, tmpdir, results)
        summarize(results, args)
        if args.idle > 0:
            idle_phase(args, procs, ports, tmpdir, results)
        if results["errors"]:
            exit_code = 1
    except BenchError as e:
        log("ERROR: %s" % e)
        results["errors"].append(str(e))
        exit_code = e.exit_code
    except KeyboardInterrupt:
        log("interrupted")
        results["errors"].append("interrupted")
        exit_code = 130
    finally:
        procs.stop_all()
        if tmpdir is not None:
            if args.keep_tmp:
                log("kept temp dir %s" % tmpdir)
            else:
                shutil.rmtree(tmpdir, ignore_errors=True)
    if results["machine"]:
        results["machine"]["loadavg_end"] = read_first("/proc/loadavg")
        if "summary" not in results["throughput"]:
            summarize(results, args)
        results["exit_code"] = exit_code
        text = write_outputs(results, args)
        print(text)
        log("wrote %s and %s" % (args.json, args.markdown))
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
