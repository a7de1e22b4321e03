"""wan_bench's lab: the WAN profiles and targets, and the namespace lab
(tests/lab/netlab) with its origin, its two boxes, their status API, the delay
line's counters and curl in the client namespace."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

from benchkit import REPO_ROOT, BenchError, proc_cpu_seconds, run

NETLAB = REPO_ROOT / "tests" / "lab" / "netlab"
ORIGIN_PYTHON = "/usr/bin/python3"

CLIENT, SERVER = "198.18.1.10", "198.18.2.10"
BRANCH_WAN, DC_WAN = "198.18.0.1", "198.18.0.2"
IDS = {"branch": "02:00:00:00:0b:01", "dc": "02:00:00:00:0d:01"}
STATUS = "http://127.0.0.1:7880"

PROFILES = {
    "a": {"name": "a", "delay_ms": 20, "rate_mbit": 20, "label": "a: 40 ms RTT, 20 Mbit/s"},
    "b": {"name": "b", "delay_ms": 50, "rate_mbit": 2, "label": "b: 100 ms RTT, 2 Mbit/s"},
}
TARGET_FIRST = 3.0
TARGET_SECOND = 50.0
TINY_BYTES = 512

CURL_FORMAT = ('{"http_code":%{http_code},"time_connect":%{time_connect},'
               '"time_starttransfer":%{time_starttransfer},"time_total":%{time_total},'
               '"size_download":%{size_download},"speed_download":%{speed_download},'
               '"local_port":%{local_port},"num_connects":%{num_connects}}')


class Lab:
    """One profile's namespace lab; every process it spawns is kept by name and stopped by PID."""

    def __init__(self, prefix, work, wanopt, delayline, profile, log_level, lz_level_max=None):
        self.prefix, self.work, self.wanopt = prefix, work, wanopt
        self.profile, self.log_level = profile, log_level
        self.lz_level_max = lz_level_max  # None: the daemon's default (adaptive up to 19)
        self.env = dict(os.environ, WANOPT_DELAYLINE=str(delayline))
        self.procs = {}
        self.is_up = False
        self.box_starts = 0

    def ns(self, node):
        return "%s-%s" % (self.prefix, node)

    def run(self, node, *cmd, timeout=30, check=False):
        return run(["ip", "netns", "exec", self.ns(node), *cmd], timeout=timeout, check=check)

    def up(self):
        self.down_quietly()  # a lab left over from an interrupted run of ours
        r = run([str(NETLAB), "--prefix", self.prefix, "up", "--delay-ms", str(self.profile["delay_ms"]),
                 "--rate-mbit", str(self.profile["rate_mbit"]), "--intercept"], timeout=90, env=self.env)
        if r.returncode != 0:
            raise BenchError("netlab up: %s" % r.stderr.strip()[-800:])
        self.is_up = True
        return r.stdout

    def down_quietly(self):
        if os.path.isdir("/run/wanopt-lab-%s" % self.prefix):
            run([str(NETLAB), "--prefix", self.prefix, "down"], timeout=90, env=self.env)

    def down(self):
        for name in list(self.procs):
            self.stop(name)
        r = run([str(NETLAB), "--prefix", self.prefix, "down"], timeout=90, env=self.env)
        self.is_up = False
        return (r.stdout + r.stderr).strip()

    def spawn(self, name, node, *cmd, stdout=subprocess.DEVNULL):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(node), *cmd], stdin=subprocess.DEVNULL,
                             stdout=stdout, stderr=subprocess.STDOUT if stdout is not subprocess.DEVNULL
                             else subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = p
        return p

    def stop(self, name, timeout=15):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return None
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)  # ip netns exec execs: p.pid is the program itself
        try:
            p.wait(timeout)
            return {"sigterm_ok": True, "seconds": round(time.monotonic() - t0, 2), "rc": p.returncode}
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return {"sigterm_ok": False, "seconds": round(time.monotonic() - t0, 2), "rc": p.returncode}

    # ---- delay line counters (netlab status sends SIGUSR1 to our delay line)
    STATS_RE = re.compile(r"(\S+) (\S+)->(\S+) read (\d+) \((\d+) bytes\) forwarded (\d+) \((\d+) bytes\) "
                          r"lost (\d+) queue_drops (\d+) overflow_drops (\d+)")

    def wan_counters(self):
        r = run([str(NETLAB), "--prefix", self.prefix, "status"], timeout=30, env=self.env)
        out = {}
        for m in self.STATS_RE.finditer(r.stdout):
            out[m.group(1)] = {"from": m.group(2), "to": m.group(3), "packets": int(m.group(6)),
                               "bytes": int(m.group(7)), "lost": int(m.group(8)),
                               "queue_drops": int(m.group(9)), "overflow_drops": int(m.group(10))}
        return out

    # ---- origin
    def start_origin(self, root):
        self.spawn("origin", "server", ORIGIN_PYTHON, "-m", "http.server", "80", "--bind", SERVER,
                   "--directory", str(root))
        deadline = time.monotonic() + 15
        while self.run("server", "curl", "-s", "-o", "/dev/null", "-m", "1",
                       "http://%s/tiny.txt" % SERVER).returncode != 0:
            if time.monotonic() > deadline or self.procs["origin"].poll() is not None:
                raise BenchError("the origin (http.server) did not start")
            time.sleep(0.1)

    # ---- boxes
    def box_config(self, box):
        pki = os.path.join(self.work, "pki")
        d, r = self.profile["delay_ms"], self.profile["rate_mbit"]
        path = os.path.join(self.work, "%s-%s.toml" % (self.prefix, box))
        text = """[box]
name = "{box}"
device_id = "{id}"
threads = 1
log_level = "{level}"
[timeouts]
connect_ms = 3000
[wan]
congestion = "bbr"
bandwidth_mbit = {rate}
rtt_ms = {rtt}
[dre]
datastore = "{store}"
max_size_mb = 1024
{lz_level_max}[status]
listen = "127.0.0.1:7880"
closed_window_s = 3600
[peering]
ca = "{pki}/ca.pem"
certificate = "{pki}/{box}.pem"
key = "{pki}/{box}.key"
[intercept]
option_drop_memory_s = 600
""".format(box=box, id=IDS[box], level=self.log_level, rate=r, rtt=2 * d, pki=pki,
           store=self.store(box),
           lz_level_max="" if self.lz_level_max is None else "lz_level_max = %d\n" % self.lz_level_max)
        with open(path, "w") as f:
            f.write(text)
        return path, text

    def store(self, box):
        return os.path.join(self.work, "%s-%s-store" % (self.prefix, box))

    def log_path(self, box):
        return os.path.join(self.work, "%s-%s.log" % (self.prefix, box))

    def start_boxes(self, wipe=True):
        self.box_starts += 1
        for box in ("dc", "branch"):
            if wipe:
                shutil.rmtree(self.store(box), ignore_errors=True)
            config, _ = self.box_config(box)
            logf = open(self.log_path(box), "ab")
            logf.write(("\n==== wan_bench: start %d of %s (profile %s, stores %s) ====\n"
                        % (self.box_starts, box, self.profile["name"], "wiped" if wipe else "kept")).encode())
            logf.flush()
            try:
                self.spawn(box, box, str(self.wanopt), "run", "--config", config, stdout=logf)
            finally:
                logf.close()
        for box in ("dc", "branch"):
            deadline = time.monotonic() + 20
            while True:
                if self.procs[box].poll() is not None:
                    raise BenchError("%s box exited at start: see %s" % (box, self.log_path(box)))
                if self.run(box, "curl", "-s", "-m", "1", STATUS + "/api/summary").returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise BenchError("%s box: status API never answered" % box)
                time.sleep(0.05)

    def stop_boxes(self):
        infos = {}
        for box in ("branch", "dc"):
            info = self.stop(box)
            if info is not None:
                infos[box] = info
        return infos

    def box_alive(self, box):
        p = self.procs.get(box)
        return p is not None and p.poll() is None

    def box_cpu(self):
        out = {}
        for box in ("branch", "dc"):
            p = self.procs.get(box)
            out[box] = proc_cpu_seconds(p.pid) if p is not None else None
        return out

    def connections(self, node):
        r = self.run(node, "curl", "-s", "-m", "5", STATUS + "/api/connections")
        if r.returncode != 0:
            return []
        try:
            return json.loads(r.stdout)["connections"]
        except (ValueError, KeyError):
            return []

    def connection_of(self, node, local_port, timeout=15):
        """The connection on `node` from the client's port, once ended."""
        want = "%s:%d" % (CLIENT, local_port)
        deadline = time.monotonic() + timeout
        found = None
        while True:
            found = [c for c in self.connections(node) if c.get("client") == want]
            if found and found[-1].get("ended"):
                return found[-1]
            if time.monotonic() > deadline:
                return found[-1] if found else None
            time.sleep(0.1)

    # ---- curl from the client
    def curl(self, url, out, max_time):
        t0 = time.monotonic()
        r = self.run("client", "curl", "-s", "-S", "-o", out, "-w", CURL_FORMAT, "--max-time", str(max_time), url,
                     timeout=max_time + 30)
        wall = time.monotonic() - t0
        try:
            m = json.loads(r.stdout)
        except ValueError:
            m = {}
        m["wall_seconds"] = round(wall, 3)
        m["curl_rc"] = r.returncode
        if r.returncode != 0:
            m["error"] = "curl exit %d: %s" % (r.returncode, r.stderr.strip()[-300:])
        return m
