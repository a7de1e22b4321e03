#!/usr/bin/python3
"""WAN benchmark of transparent interception: the namespace lab with an emulated WAN.

    client -- branch box == WAN (wanopt_delayline) == datacenter box -- server

For each WAN profile (a: 20 ms one way = 40 ms RTT, 20 Mbit/s; b: 50 ms one way =
100 ms RTT, 2 Mbit/s; `netlab up --delay-ms D --rate-mbit R --intercept`):

  1. Transfer: curl in the client namespace fetches a generated text file (100 MiB;
     8 MiB with --quick) from python3's http.server in the server namespace, three
     ways, each SHA-256 verified:
       direct  no wanopt daemon running: the interception rules fail open
               (--queue-bypass), the boxes are plain routers
       first   through the pair with fresh (wiped) datastores on both boxes
       second  the same file again, same daemons, same stores
     Repeats are interleaved (direct, first, second, direct, first, ...); each repeat
     restarts both boxes with wiped stores, so every "first" is a real first pass.
  2. Connection set-up: curl's time_connect and time_starttransfer of a tiny file,
     direct vs through the pair (after the passes, warm boxes), in blocks inside each
     repeat, so both paths see the same machine load.

The text is an order-2 word Markov chain trained on the text files of this machine's
/usr/share/doc and /usr/share/common-licenses (lines de-duplicated), seeded: real
words and local phrases, but no file-sized repeats for DRE to find on a first pass.
Its `zstd -3` ratio is reported so the first-pass figure can be judged.

WAN bytes: per connection from the branch box's status API (/api/connections:
lan_in/lan_out/wan_in/wan_out, the inner channel's payload), and for every run
(direct too) the delay line's own counters (IP bytes forwarded, both directions).

Targets (reported, never asserted): first pass >= 3x faster than direct; second
pass >= 50x faster than direct; discovery adds no round trip to the connect
(median time_connect through the pair within half an RTT of direct).

Usage (root; standard library only):
  /usr/bin/python3 tests/bench/wan_bench.py [--profile a|b|all] [--quick]
Results: tests/bench/results/wan.json and wan.md (--json/--markdown to change).
Every process started here is stopped by PID and every lab taken down in a finally.
Exit status: 0 ok; 1 a measurement failed (results still written); 2 setup error;
130 interrupted.
"""

import argparse
import datetime
import gzip
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NETLAB = REPO_ROOT / "tests" / "lab" / "netlab"
MAKE_PKI = REPO_ROOT / "tests" / "lab" / "make-pki"
DEFAULT_WANOPT = REPO_ROOT / "build" / "wanopt" / "wanopt"
DEFAULT_DELAYLINE = REPO_ROOT / "build" / "tests" / "lab" / "wanopt_delayline"
DEFAULT_JSON = REPO_ROOT / "tests" / "bench" / "results" / "wan.json"
DEFAULT_MARKDOWN = REPO_ROOT / "tests" / "bench" / "results" / "wan.md"
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
TEXT_SEED = 20261130
TINY_BYTES = 512

CURL_FORMAT = ('{"http_code":%{http_code},"time_connect":%{time_connect},'
               '"time_starttransfer":%{time_starttransfer},"time_total":%{time_total},'
               '"size_download":%{size_download},"speed_download":%{speed_download},'
               '"local_port":%{local_port},"num_connects":%{num_connects}}')


class BenchError(Exception):
    exit_code = 2


def log(msg):
    print("[wan_bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(argv, timeout=60, check=False, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise BenchError("%s: exit %d: %s" % (" ".join(map(str, argv)), r.returncode, r.stderr.strip()[-500:]))
    return r


# ---------------------------------------------------------------------------
# The text: an order-2 word Markov chain trained on this machine's documentation
# ---------------------------------------------------------------------------


def corpus_paths():
    paths = []
    for base in ("/usr/share/doc", "/usr/share/common-licenses"):
        for root, dirs, files in os.walk(base):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(root, f)
                low = f.lower()
                if not (base.endswith("licenses") or low == "copyright"
                        or low.startswith(("changelog", "readme", "news"))
                        or low.endswith((".txt", ".md", ".rst", ".txt.gz", ".md.gz", ".rst.gz"))):
                    continue
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                paths.append(p)
    return paths


def generate_text(out_path, size, seed):
    """Writes `size` bytes of Markov text to out_path; returns what it was made from."""
    t0 = time.monotonic()
    paths = corpus_paths()
    seen, lines, used = set(), [], 0
    h = hashlib.sha256()
    for p in paths:
        try:
            with open(p, "rb") as f:
                b = f.read()
            if p.endswith(".gz"):
                b = gzip.decompress(b)
            s = b.decode("utf-8")
        except (OSError, ValueError, EOFError):
            continue
        if "\0" in s:
            continue
        used += 1
        for line in s.split("\n"):
            line = line.strip()
            if len(line) < 8 or line in seen:
                continue
            seen.add(line)
            lines.append(line)
            h.update(line.encode() + b"\n")
    del seen
    words = []
    for line in lines:
        words.extend(line.split())
    corpus_bytes = sum(len(l) + 1 for l in lines)
    succ = {}
    for a, b, c in zip(words, words[1:], words[2:]):
        succ.setdefault((a, b), []).append(c)
    keys = list(succ)
    rng = random.Random(seed)
    state = keys[rng.randrange(len(keys))]
    chunks, buf, col, total = [], [], 0, 0
    while total < size:
        nxt = succ.get(state)
        if not nxt:  # end of the corpus: jump somewhere else
            state = keys[rng.randrange(len(keys))]
            continue
        w = nxt[rng.randrange(len(nxt))] if len(nxt) > 1 else nxt[0]
        state = (state[1], w)
        buf.append(w)
        col += len(w) + 1
        if col > 72:
            s = " ".join(buf) + "\n"
            if rng.random() < 0.08:
                s += "\n"
            chunks.append(s)
            total += len(s)
            buf, col = [], 0
    data = "".join(chunks).encode()[:size]
    with open(out_path, "wb") as f:
        f.write(data)
    return {
        "generator": "order-2 word Markov chain, lines wrapped at ~72 columns, blank line with p=0.08",
        "seed": seed,
        "corpus": "/usr/share/doc (copyright, changelog*, README*, NEWS*, *.txt, *.md, *.rst, gz decompressed) "
                  "and /usr/share/common-licenses; lines of 8+ characters, de-duplicated",
        "corpus_files_listed": len(paths),
        "corpus_files_used": used,
        "corpus_distinct_lines": len(lines),
        "corpus_bytes": corpus_bytes,
        "corpus_words": len(words),
        "corpus_sha256": h.hexdigest(),
        "model_states": len(keys),
        "generate_seconds": round(time.monotonic() - t0, 1),
    }


def zstd_size(path, *args):
    p = subprocess.Popen(["zstd", "-q", "-c", *args, str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    n = 0
    while True:
        b = p.stdout.read(1 << 20)
        if not b:
            break
        n += len(b)
    p.wait()
    return n if p.returncode == 0 else None


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Binaries: copied once, so a rebuild during the run changes nothing
# ---------------------------------------------------------------------------


def snapshot_binary(src, dst, timeout=600):
    """Waits until src exists, is older than 5 s and runs; copies it to dst."""
    deadline = time.monotonic() + timeout
    warned = False
    while True:
        try:
            st = os.stat(src)
            if time.time() - st.st_mtime > 5:
                shutil.copy2(src, dst)
                if os.stat(src).st_mtime == st.st_mtime:
                    r = run([str(dst), "--help"], timeout=10)
                    if r.returncode in (0, 1, 2):
                        h = hashlib.sha256(Path(dst).read_bytes()).hexdigest()
                        return {"path": str(src), "sha256": h, "size": st.st_size,
                                "mtime_utc": datetime.datetime.fromtimestamp(
                                    st.st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")}
        except (OSError, subprocess.SubprocessError):
            pass
        if time.monotonic() > deadline:
            raise BenchError("binary %s missing or changing for %d s" % (src, timeout))
        if not warned:
            log("waiting for %s (missing or just rebuilt)" % src)
            warned = True
        time.sleep(3)


# ---------------------------------------------------------------------------
# The lab
# ---------------------------------------------------------------------------


class Lab:
    def __init__(self, prefix, work, wanopt, delayline, profile, log_level):
        self.prefix, self.work, self.wanopt = prefix, work, wanopt
        self.profile, self.log_level = profile, log_level
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
[status]
listen = "127.0.0.1:7880"
closed_window_s = 3600
[peering]
ca = "{pki}/ca.pem"
certificate = "{pki}/{box}.pem"
key = "{pki}/{box}.key"
[intercept]
option_drop_memory_s = 600
""".format(box=box, id=IDS[box], level=self.log_level, rate=r, rtt=2 * d, pki=pki,
           store=self.store(box))
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
            try:
                with open("/proc/%d/stat" % p.pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[box] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, AttributeError, IndexError, ValueError):
                out[box] = None
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


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def counters_delta(before, after):
    out = {}
    for k in after:
        if k in before:
            out[k] = {f: after[k][f] - before[k][f] for f in ("packets", "bytes", "lost", "queue_drops",
                                                                "overflow_drops")}
            out[k]["link"] = "%s->%s" % (after[k]["from"], after[k]["to"])
    return out


def transfer(lab, path_kind, pass_kind, repeat, file_info, max_time, shm, results):
    """One fetch of the big file; returns the sample dict."""
    out = os.path.join(shm, "fetch.out")
    if os.path.exists(out):
        os.unlink(out)
    before = lab.wan_counters()
    cpu0 = lab.box_cpu() if path_kind == "pair" else None
    m = lab.curl("http://%s/%s" % (SERVER, file_info["name"]), out, max_time)
    cpu1 = lab.box_cpu() if path_kind == "pair" else None
    after = lab.wan_counters()
    sample = {"profile": lab.profile["name"], "path": path_kind, "pass": pass_kind, "repeat": repeat,
              "seconds": m.get("time_total"), "curl": m}
    sample["wan_ip"] = counters_delta(before, after)
    sample["wan_ip_bytes"] = sum(v["bytes"] for v in sample["wan_ip"].values()) if sample["wan_ip"] else None
    if cpu0 and cpu1:
        sample["box_cpu_seconds"] = {b: (round(cpu1[b] - cpu0[b], 2) if cpu1[b] is not None and cpu0[b] is not None
                                         else None) for b in cpu0}
    ok = m.get("curl_rc") == 0 and m.get("http_code") == 200
    if ok:
        digest = sha256_file(out)
        sample["sha256_ok"] = digest == file_info["sha256"]
        if not sample["sha256_ok"]:
            ok = False
            sample["error"] = "sha256 mismatch: got %s" % digest
    else:
        sample["sha256_ok"] = False
        sample["error"] = m.get("error") or "http %s" % m.get("http_code")
    if os.path.exists(out):
        os.unlink(out)
    if path_kind == "pair" and m.get("local_port"):
        b = lab.connection_of("branch", m["local_port"])
        d = lab.connection_of("dc", m["local_port"], timeout=5)
        sample["branch_connection"] = b
        sample["dc_connection"] = d
        if b:
            sample["lan_bytes"] = b["lan_in"] + b["lan_out"]
            sample["wan_bytes"] = b["wan_in"] + b["wan_out"]
            sample["reduction"] = 1 - sample["wan_bytes"] / sample["lan_bytes"] if sample["lan_bytes"] else None
            sample["optimized"] = bool(b.get("peer") == IDS["dc"] and not any(
                "pass-through" in n for n in b.get("notes", [])))
            if not sample["optimized"]:
                results["warnings"].append("profile %s repeat %d %s pass: NOT optimized: peer %r, notes %r"
                                           % (lab.profile["name"], repeat, pass_kind, b.get("peer"), b.get("notes")))
        else:
            sample["optimized"] = None
            results["warnings"].append("profile %s repeat %d %s pass: connection not found in the branch's "
                                       "status API" % (lab.profile["name"], repeat, pass_kind))
        for box in ("branch", "dc"):
            if not lab.box_alive(box):
                raise BenchError("the %s box died during the %s pass (see its log)" % (box, pass_kind))
    if not ok:
        results["errors"].append("profile %s repeat %d %s %s: %s" % (lab.profile["name"], repeat, path_kind,
                                                                     pass_kind, sample.get("error")))
    log("  %-6s %-6s %8.2f s  %s  WAN IP %s B%s" % (
        path_kind, pass_kind, sample["seconds"] or -1, "sha256 ok" if sample["sha256_ok"] else "FAILED",
        sample["wan_ip_bytes"],
        ("  branch lan %d wan %d (%.2f%%)" % (sample["lan_bytes"], sample["wan_bytes"], 100 * sample["reduction"])
         if sample.get("lan_bytes") else "")))
    return sample


def setup_block(lab, path_kind, repeat, count, results):
    samples = []
    for i in range(count):
        m = lab.curl("http://%s/tiny.txt" % SERVER, "/dev/null", 30)
        s = {"profile": lab.profile["name"], "path": path_kind, "repeat": repeat, "index": i,
             "time_connect": m.get("time_connect"), "time_starttransfer": m.get("time_starttransfer"),
             "time_total": m.get("time_total"), "local_port": m.get("local_port"),
             "ok": m.get("curl_rc") == 0 and m.get("http_code") == 200 and m.get("size_download") == TINY_BYTES}
        if not s["ok"]:
            s["error"] = m.get("error") or "http %s size %s" % (m.get("http_code"), m.get("size_download"))
            results["errors"].append("profile %s setup %s #%d: %s" % (lab.profile["name"], path_kind, i, s["error"]))
        samples.append(s)
        time.sleep(0.2)
    if path_kind == "pair":
        for s in samples:
            if s.get("local_port"):
                b = lab.connection_of("branch", s["local_port"], timeout=5)
                s["optimized"] = bool(b and b.get("peer") == IDS["dc"] and not any(
                    "pass-through" in n for n in b.get("notes", [])))
                s["branch_notes"] = b.get("notes") if b else None
                if not s["optimized"]:
                    results["warnings"].append("profile %s setup connection %d not optimized: %r"
                                               % (lab.profile["name"], s["index"], b))
    c = [s["time_connect"] for s in samples if s["ok"]]
    t = [s["time_starttransfer"] for s in samples if s["ok"]]
    log("  set-up %-6s x%d: connect median %.1f ms, starttransfer median %.1f ms" % (
        path_kind, count, 1000 * (median(c) or -1), 1000 * (median(t) or -1)))
    return samples


def capture_setup(lab, work):
    """The WAN packets of one tiny fetch through the pair (tshark on the branch's wan0):
    shows which round trips a new connection costs."""
    if shutil.which("tshark") is None:
        return {"error": "tshark not installed"}
    err_path = os.path.join(work, "tshark.err")
    with open(err_path, "wb") as err:
        p = subprocess.Popen(["ip", "netns", "exec", lab.ns("branch"), "tshark", "-l", "-n", "-i", "wan0", "-f",
                              "tcp port 80", "-T", "fields", "-E", "separator=|", "-e", "frame.time_epoch",
                              "-e", "ip.src", "-e", "tcp.len", "-e", "tcp.flags.str"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                             start_new_session=True)
    lab.procs["tshark"] = p
    try:
        deadline = time.monotonic() + 20
        while b"Capturing on" not in Path(err_path).read_bytes():
            if time.monotonic() > deadline or p.poll() is not None:
                return {"error": "tshark did not start: " + Path(err_path).read_text()[-300:]}
            time.sleep(0.1)
        time.sleep(0.5)
        t0 = time.time()
        m = lab.curl("http://%s/tiny.txt" % SERVER, "/dev/null", 30)
        time.sleep(1.0)
    finally:
        lab.stop("tshark")
    rtt = 2 * lab.profile["delay_ms"] / 1000
    packets, first = [], None
    for line in p.stdout.read().splitlines():
        f = line.split("|")
        if len(f) < 4:
            continue
        try:
            first = float(f[0]) if first is None else first
            t = float(f[0]) - first
        except ValueError:
            continue
        packets.append({"t_ms": round(1000 * t, 1), "t_rtt": round(t / rtt, 2),
                        "dir": "branch->dc" if f[1] == BRANCH_WAN else "dc->branch",
                        "payload": int(f[2] or 0), "flags": f[3].replace("\u00b7", "").replace("·", "").strip()})
    return {"curl": m, "rtt_s": rtt, "packets": packets,
            "curl_start_to_first_packet_ms": round(1000 * (first - t0), 1) if first else None,
            "note": "t from the first packet (the branch's probe SYN); tshark on the branch's wan0 (port 80: "
                    "the probe connection is the inner channel)"}


def log_findings(lab):
    """warn/error lines and pass-through reasons from both boxes' logs."""
    out = {}
    for box in ("branch", "dc"):
        try:
            with open(lab.log_path(box), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        lines = text.splitlines()
        bad = [l for l in lines if re.search(r"\b(warn|warning|error|fatal)\b", l, re.I)]
        passes = [l for l in lines if "pass-through" in l or "pass through" in l]
        uniq = []
        for l in bad + passes:
            key = re.sub(r"\d+", "N", l)
            if key not in [re.sub(r"\d+", "N", u) for u in uniq]:
                uniq.append(l)
        out[box] = {"lines": len(lines), "bytes": len(text), "warn_error_lines": len(bad),
                    "pass_through_lines": len(passes), "distinct_examples": uniq[:25]}
    return out


def run_profile(args, pname, work, shm, wanopt, delayline, file_info, results):
    profile = PROFILES[pname]
    repeats = args.repeats if args.repeats else (1 if args.quick or pname == "b" else 3)
    per_block = max(1, -(-args.connections // repeats))
    rate_bps = profile["rate_mbit"] * 1e6
    direct_estimate = file_info["size"] * 8 / rate_bps
    max_time = int(3 * direct_estimate + 120)
    prof = {"profile": profile, "repeats": repeats, "setup_connections_per_block": per_block,
            "curl_max_time_s": max_time, "transfers": [], "setup": [], "prefix": args.prefix}
    results["profiles"][pname] = prof
    lab = Lab(args.prefix, work, wanopt, delayline, profile, args.log_level)
    t_profile = time.monotonic()
    try:
        log("profile %s: netlab up --delay-ms %d --rate-mbit %s --intercept (prefix %s)"
            % (pname, profile["delay_ms"], profile["rate_mbit"], args.prefix))
        prof["netlab_up"] = lab.up().strip().splitlines()
        lab.start_origin(os.path.join(work, "www"))
        r = lab.run("client", "ping", "-c", "5", "-i", "0.2", "-q", SERVER, timeout=30)
        m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", r.stdout)
        prof["ping_rtt_ms"] = {"min": float(m.group(1)), "avg": float(m.group(2)), "max": float(m.group(3))} if m else None
        # Is the origin fast enough not to matter? Fetch the file from the dc
        # namespace (one veth hop, no WAN, no daemon).
        t0 = time.monotonic()
        r = lab.run("dc", "curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                    "http://%s/%s" % (SERVER, file_info["name"]), timeout=120)
        try:
            secs, size = r.stdout.split()
            prof["origin_check"] = {"from": "dc namespace (LAN veth, no WAN, no daemon)", "seconds": float(secs),
                                    "bytes": int(size), "MB_per_s": round(int(size) / float(secs) / 1e6, 1)}
        except ValueError:
            prof["origin_check"] = {"error": r.stderr.strip()}
        log("profile %s: ping %s ms; origin alone %s MB/s" % (
            pname, prof["ping_rtt_ms"], prof["origin_check"].get("MB_per_s")))
        for rep in range(1, repeats + 1):
            log("profile %s repeat %d/%d" % (pname, rep, repeats))
            # direct: no daemon bound to the queue, the rules let everything pass
            prof["transfers"].append(transfer(lab, "direct", "-", rep, file_info, max_time, shm, results))
            prof["setup"] += setup_block(lab, "direct", rep, per_block, results)
            lab.start_boxes(wipe=True)
            prof["transfers"].append(transfer(lab, "pair", "first", rep, file_info, max_time, shm, results))
            prof["transfers"].append(transfer(lab, "pair", "second", rep, file_info, max_time, shm, results))
            prof["setup"] += setup_block(lab, "pair", rep, per_block, results)
            if rep == repeats and args.capture:
                prof["setup_capture"] = capture_setup(lab, work)
            ds = lab.run("branch", "curl", "-s", "-m", "5", STATUS + "/api/datastore")
            try:
                prof.setdefault("datastore_branch", []).append(json.loads(ds.stdout))
            except ValueError:
                pass
            prof.setdefault("box_stops", []).append(lab.stop_boxes())
        prof["box_configs"] = {box: lab.box_config(box)[1] for box in ("branch", "dc")}
    finally:
        try:
            lab.stop_boxes()
            prof["log_findings"] = log_findings(lab)
            for box in ("branch", "dc"):
                src = lab.log_path(box)
                if args.keep_logs and os.path.exists(src):
                    dst = os.path.join(args.keep_logs, os.path.basename(src))
                    shutil.copy(src, dst)
        finally:
            prof["netlab_down"] = lab.down().splitlines()
            prof["wall_seconds"] = round(time.monotonic() - t_profile, 1)
            log("profile %s: lab down after %.0f s" % (pname, prof["wall_seconds"]))


# ---------------------------------------------------------------------------
# Summary and output
# ---------------------------------------------------------------------------


def summarize(results):
    summ = {}
    for pname, prof in results["profiles"].items():
        rtt = 2 * prof["profile"]["delay_ms"] / 1000
        rows = {}
        for key in (("direct", "-"), ("pair", "first"), ("pair", "second")):
            ss = [s for s in prof["transfers"] if (s["path"], s["pass"]) == key and s.get("sha256_ok")]
            allss = [s for s in prof["transfers"] if (s["path"], s["pass"]) == key]
            rows["%s/%s" % key] = {
                "n_ok": len(ss), "n": len(allss),
                "seconds_median": median([s["seconds"] for s in ss]),
                "seconds_samples": [s["seconds"] for s in allss],
                "starttransfer_median": median([s["curl"].get("time_starttransfer") for s in ss]),
                "wan_ip_bytes_median": median([s.get("wan_ip_bytes") for s in ss]),
                "lan_bytes_median": median([s.get("lan_bytes") for s in ss]),
                "wan_bytes_median": median([s.get("wan_bytes") for s in ss]),
                "reduction_median": median([s.get("reduction") for s in ss]),
                "optimized_all": all(s.get("optimized") for s in ss) if key[0] == "pair" and ss else None,
                "box_cpu_seconds_median": {b: median([(s.get("box_cpu_seconds") or {}).get(b) for s in ss])
                                           for b in ("branch", "dc")} if key[0] == "pair" else None,
            }
        d = rows["direct/-"]["seconds_median"]
        d_ip = rows["direct/-"]["wan_ip_bytes_median"]
        for key, target in (("pair/first", TARGET_FIRST), ("pair/second", TARGET_SECOND)):
            r = rows[key]
            r["speedup_vs_direct"] = d / r["seconds_median"] if d and r["seconds_median"] else None
            r["wan_ip_reduction_vs_direct"] = (1 - r["wan_ip_bytes_median"] / d_ip
                                               if d_ip and r["wan_ip_bytes_median"] else None)
            r["target_speedup"] = target
            r["met"] = None if r["speedup_vs_direct"] is None else r["speedup_vs_direct"] >= target
        setup = {}
        for path in ("direct", "pair"):
            ss = [s for s in prof["setup"] if s["path"] == path and s["ok"]]
            setup[path] = {"n": len(ss),
                           "time_connect_median": median([s["time_connect"] for s in ss]),
                           "time_starttransfer_median": median([s["time_starttransfer"] for s in ss]),
                           "time_connect_min": min([s["time_connect"] for s in ss], default=None),
                           "time_connect_max": max([s["time_connect"] for s in ss], default=None),
                           "time_starttransfer_min": min([s["time_starttransfer"] for s in ss], default=None),
                           "time_starttransfer_max": max([s["time_starttransfer"] for s in ss], default=None)}
        for k in ("time_connect", "time_starttransfer"):
            a, b = setup["direct"][k + "_median"], setup["pair"][k + "_median"]
            setup[k + "_ratio"] = b / a if a and b else None
            setup[k + "_extra_rtts"] = (b - a) / rtt if a is not None and b is not None else None
        setup["no_extra_round_trip_on_connect"] = (None if setup["time_connect_extra_rtts"] is None
                                                  else setup["time_connect_extra_rtts"] < 0.5)
        firsts = [s for s in prof["transfers"] if s["pass"] == "first" and s.get("curl")]
        setup["first_connection_after_fresh_start"] = {
            "time_connect": [s["curl"].get("time_connect") for s in firsts],
            "time_starttransfer": [s["curl"].get("time_starttransfer") for s in firsts]}
        summ[pname] = {"transfer": rows, "setup": setup}
    results["summary"] = summ


def fmt_s(v):
    return "-" if v is None else ("%.2f" % v if v < 100 else "%.1f" % v)


def fmt_b(v):
    return "-" if v is None else "{:,}".format(int(v))


def fmt_x(v):
    return "-" if v is None else ("%.2fx" % v if v < 100 else "%.0fx" % v)


def fmt_pct(v):
    return "-" if v is None else "%.2f%%" % (100 * v)


def fmt_ms(v):
    return "-" if v is None else "%.1f" % (1000 * v)


def render_markdown(results):
    m = results["machine"]
    t = results.get("text", {})
    out = ["# wanopt WAN benchmark (interception and auto-discovery, namespace lab)", ""]
    out.append("- date: %s, host: %s, nproc: %s, kernel: %s, cpu: %s" % (
        m.get("date_utc"), m.get("hostname"), m.get("nproc"), m.get("kernel"), m.get("cpu_model")))
    out.append("- git commit: %s (dirty entries: %s); wanopt binary sha256 %s (built %s)" % (
        m.get("git_commit"), m.get("git_dirty_entries"), (m.get("wanopt_binary") or {}).get("sha256", "?")[:16],
        (m.get("wanopt_binary") or {}).get("mtime_utc")))
    out.append("- run: `%s`; %s; whole run %.0f s (%.1f min); loadavg start %s, end %s" % (
        results["config"]["command"], "QUICK smoke run" if results["config"]["quick"] else "full run",
        results.get("wall_seconds", 0), results.get("wall_seconds", 0) / 60, m.get("loadavg_start"),
        m.get("loadavg_end")))
    out.append("")
    out.append("## Method")
    out.append("")
    out.append("`tests/bench/wan_bench.py`: the namespace lab (`tests/lab/netlab up --delay-ms D --rate-mbit R "
               "--intercept`, client -- branch == WAN == dc -- server), one `wanopt run` per box namespace with "
               "the configs of `tests/lab/discovery_test.py` (TLS peering with the lab PKI of `tests/lab/make-pki`, "
               "`[intercept]` auto-discovery, `threads = 1`, policy F) plus `[wan] congestion = \"bbr\"`, "
               "`bandwidth_mbit`/`rtt_ms` = the profile, and `[dre] max_size_mb = 1024`. The origin is "
               "`python3 -m http.server` in the server namespace; curl in the client namespace fetches "
               "into tmpfs, and every fetch is SHA-256 verified.")
    out.append("")
    out.append("- **direct**: no daemon running; the interception rules fail open (`--queue-bypass`), "
               "the boxes are plain routers.")
    out.append("- **first pass**: both boxes restarted with wiped datastores just before; **second pass**: the "
               "same file again, same daemons and stores.")
    out.append("- Repeats interleaved (direct, first, second, direct, ...); seconds = curl's `time_total`, median "
               "over repeats. WAN bytes = the branch status API's `wan_in + wan_out` for the connection (inner "
               "channel payload) against `lan_in + lan_out`; WAN IP bytes = the delay line's forwarded bytes, "
               "both directions, headers and TLS included (direct too).")
    out.append("- Set-up: curl's `time_connect` and `time_starttransfer` for a %d-byte file, one new connection "
               "each, direct (daemons stopped) and through the pair (warm, after the passes), in blocks inside "
               "each repeat." % TINY_BYTES)
    if t:
        out.append("- Text: %s MiB (%s bytes, sha256 %s...), %s, seed %s, trained on %s distinct lines (%s "
                   "bytes) from %s files of this machine's %s. **`zstd -3` ratio %.2fx** (%s bytes); "
                   "`zstd -3 --long=27` %.2fx (long-range repeats would show here); `zstd -19` %.2fx." % (
                       t["size"] >> 20, fmt_b(t["size"]), t["sha256"][:16], t["generator"], t["seed"],
                       fmt_b(t["corpus_distinct_lines"]), fmt_b(t["corpus_bytes"]), t["corpus_files_used"],
                       t["corpus"], t["zstd3_ratio"], fmt_b(t["zstd3_bytes"]), t.get("zstd3_long_ratio") or 0,
                       t.get("zstd19_ratio") or 0))
    for pname, prof in results["profiles"].items():
        oc = prof.get("origin_check", {})
        out.append("- Profile %s: ping client -> server %s ms (min/avg/max); origin alone (curl from the dc "
                   "namespace) %s MB/s; %d repeat(s)." % (
                       pname, "/".join("%.1f" % prof["ping_rtt_ms"][k] for k in ("min", "avg", "max"))
                       if prof.get("ping_rtt_ms") else "?", oc.get("MB_per_s"), prof["repeats"]))
    out.append("")
    out.append("## Transfer of the text file")
    out.append("")
    out.append("| profile | path | pass | seconds (median) | samples | first byte s | speed-up vs direct | LAN bytes "
               "| WAN bytes (inner channel) | reduction | WAN IP bytes (delay line) | vs direct | box CPU s "
               "(branch/dc) | target | met |")
    out.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for pname, s in results.get("summary", {}).items():
        label = PROFILES[pname]["label"]
        for key, path, pas in (("direct/-", "direct", "-"), ("pair/first", "**wanopt pair**", "first"),
                               ("pair/second", "**wanopt pair**", "second")):
            r = s["transfer"][key]
            samples = ", ".join(fmt_s(v) for v in r["seconds_samples"])
            if key == "direct/-":
                out.append("| %s | %s | %s | %s | %s | %s | 1.00x | - | - | - | %s | 1.00x | - | - | - |" % (
                    label, path, pas, fmt_s(r["seconds_median"]), samples, fmt_s(r["starttransfer_median"]),
                    fmt_b(r["wan_ip_bytes_median"])))
            else:
                met = "-" if r["met"] is None else ("**yes**" if r["met"] else "**NO**")
                wan_ip_ratio = (r["wan_ip_bytes_median"] / s["transfer"]["direct/-"]["wan_ip_bytes_median"]
                                if r["wan_ip_bytes_median"] and s["transfer"]["direct/-"]["wan_ip_bytes_median"]
                                else None)
                cpu = r.get("box_cpu_seconds_median") or {}
                out.append("| %s | %s | %s | %s | %s | %s | **%s** | %s | %s | %s | %s | %s | %s | >= %.0fx | %s |" % (
                    label, path, pas, fmt_s(r["seconds_median"]), samples, fmt_s(r["starttransfer_median"]),
                    fmt_x(r["speedup_vs_direct"]),
                    fmt_b(r["lan_bytes_median"]), fmt_b(r["wan_bytes_median"]), fmt_pct(r["reduction_median"]),
                    fmt_b(r["wan_ip_bytes_median"]), "%.4fx" % wan_ip_ratio if wan_ip_ratio else "-",
                    "%s / %s" % (fmt_s(cpu.get("branch")), fmt_s(cpu.get("dc"))), r["target_speedup"], met))
    out.append("")
    out.append("## Connection set-up")
    out.append("")
    out.append("| profile | path | connections | time_connect ms (median) | min-max | vs direct | "
               "time_starttransfer ms (median) | min-max | vs direct |")
    out.append("|---|---|---:|---:|---|---:|---:|---|---:|")
    for pname, s in results.get("summary", {}).items():
        st = s["setup"]
        for path in ("direct", "pair"):
            r = st[path]
            if path == "direct":
                rc, rt = "1.00x", "1.00x"
            else:
                rc = "**%s** (%+.2f RTT)" % (fmt_x(st["time_connect_ratio"]), st["time_connect_extra_rtts"]) \
                    if st["time_connect_ratio"] else "-"
                rt = "%s (%+.2f RTT)" % (fmt_x(st["time_starttransfer_ratio"]), st["time_starttransfer_extra_rtts"]) \
                    if st["time_starttransfer_ratio"] else "-"
            out.append("| %s | %s | %d | %s | %s-%s | %s | %s | %s-%s | %s |" % (
                PROFILES[pname]["label"], "direct" if path == "direct" else "**wanopt pair**", r["n"],
                fmt_ms(r["time_connect_median"]), fmt_ms(r["time_connect_min"]), fmt_ms(r["time_connect_max"]), rc,
                fmt_ms(r["time_starttransfer_median"]), fmt_ms(r["time_starttransfer_min"]),
                fmt_ms(r["time_starttransfer_max"]), rt))
    out.append("")
    caps = [(pname, prof["setup_capture"]) for pname, prof in results["profiles"].items()
            if prof.get("setup_capture", {}).get("packets")]
    for pname, cap in caps:
        out.append("WAN packets of one %d-byte fetch through the pair, profile %s (tshark on the branch's wan0; "
                   "t from the branch's probe SYN; curl: connect %s ms, first byte %s ms, from its start):" % (
                       TINY_BYTES, pname, fmt_ms(cap["curl"].get("time_connect")),
                       fmt_ms(cap["curl"].get("time_starttransfer"))))
        out.append("")
        out.append("| # | t ms | t in RTTs | direction | TCP payload bytes | flags |")
        out.append("|---:|---:|---:|---|---:|---|")
        for i, pk in enumerate(cap["packets"], 1):
            out.append("| %d | %.1f | %.2f | %s | %d | %s |" % (i, pk["t_ms"], pk["t_rtt"], pk["dir"], pk["payload"],
                                                             pk["flags"]))
        out.append("")
    out.append("## Targets")
    out.append("")
    for pname, s in results.get("summary", {}).items():
        for key, what in (("pair/first", "first pass"), ("pair/second", "second pass")):
            r = s["transfer"][key]
            verdict = "n/a" if r["met"] is None else ("met" if r["met"] else "NOT met")
            extra = ""
            if r["met"] is False and r["speedup_vs_direct"]:
                extra = " (short by %.2fx, %.0f%% of the target)" % (
                    r["target_speedup"] - r["speedup_vs_direct"], 100 * r["speedup_vs_direct"] / r["target_speedup"])
            out.append("- Profile %s, %s >= %.0fx faster than direct: %s, %s%s" % (
                pname, what, r["target_speedup"], fmt_x(r["speedup_vs_direct"]), verdict, extra))
            d = s["transfer"]["direct/-"]
            if r["lan_bytes_median"] and r["wan_bytes_median"] and r["seconds_median"] and d["seconds_median"]:
                rtt = 2 * PROFILES[pname]["delay_ms"] / 1000
                t = results.get("text") or {}
                line = ("  - LAN/WAN bytes %.2fx (zstd -3 of the file alone: %.2fx); first byte after %.3f s "
                        "(%.1f RTT; direct %.3f s), the rest %.3f s (direct %.3f s)" % (
                            r["lan_bytes_median"] / r["wan_bytes_median"], t.get("zstd3_ratio") or 0,
                            r["starttransfer_median"] or 0, (r["starttransfer_median"] or 0) / rtt,
                            d["starttransfer_median"] or 0, r["seconds_median"] - (r["starttransfer_median"] or 0),
                            d["seconds_median"] - (d["starttransfer_median"] or 0)))
                rate = PROFILES[pname]["rate_mbit"] * 1e6
                if r["wan_ip_bytes_median"]:
                    line += ("; its %s WAN IP bytes take %.2f s at %g Mbit/s (direct: %s bytes, %.2f s)" % (
                        fmt_b(r["wan_ip_bytes_median"]), r["wan_ip_bytes_median"] * 8 / rate,
                        PROFILES[pname]["rate_mbit"], fmt_b(d["wan_ip_bytes_median"]),
                        (d["wan_ip_bytes_median"] or 0) * 8 / rate))
                after = r["seconds_median"] - (r["starttransfer_median"] or 0)
                if after > 0:
                    line += "; after the first byte %.0f MB/s" % (r["lan_bytes_median"] / after / 1e6)
                if r["met"] is False:
                    best = d["seconds_median"] / r["target_speedup"]
                    line += "; the target needs <= %.2f s in all" % best
                out.append(line)
        st = s["setup"]
        v = st["no_extra_round_trip_on_connect"]
        out.append("- Profile %s, discovery adds no round trip to the connect (median within 0.5 RTT of direct): "
                   "%s (%s, %+.2f RTT)" % (pname, "n/a" if v is None else ("met" if v else "NOT met"),
                                           fmt_x(st["time_connect_ratio"]), st["time_connect_extra_rtts"] or 0))
    notes = results.get("notes") or []
    if notes:
        out.append("")
        out.append("## Notes")
        out.append("")
        out.extend("- " + n for n in notes)
    for title, key in (("Errors", "errors"), ("Warnings", "warnings")):
        if results.get(key):
            out.append("")
            out.append("## " + title)
            out.append("")
            out.extend("- " + e.replace("\n", " | ") for e in results[key])
    out.append("")
    out.append("Every figure (each sample, curl's timings, the status API's records of each connection, delay-line "
               "counters, box CPU seconds, configs, log findings): [wan.json](wan.json).")
    out.append("")
    return "\n".join(out)


def machine_info(wanopt_identity):
    info = {"nproc": os.cpu_count(), "kernel": platform.release(), "machine": platform.machine(),
            "hostname": platform.node(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0]}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
            break
    info["loadavg_start"] = Path("/proc/loadavg").read_text().strip()
    r = run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    info["git_commit"] = r.stdout.strip() or None
    r = run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"])
    info["git_dirty_entries"] = len(r.stdout.splitlines()) if r.returncode == 0 else None
    info["curl_version"] = run(["curl", "--version"]).stdout.splitlines()[0]
    info["zstd_version"] = run(["zstd", "--version"]).stdout.strip()
    info["origin_python"] = run([ORIGIN_PYTHON, "--version"]).stdout.strip()
    info["wanopt_binary"] = wanopt_identity
    info["tcp_congestion_available"] = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().strip()
    return info


def write_outputs(results, args):
    text = render_markdown(results)
    for path, content in ((args.json, json.dumps(results, indent=1) + "\n"), (args.markdown, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
    return text


def parse_args(argv):
    ap = argparse.ArgumentParser(description="WAN benchmark of interception in the namespace lab (root).")
    ap.add_argument("--profile", default="all", choices=("a", "b", "all"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 MiB, 1 repeat, 5 set-up connections")
    ap.add_argument("--size-mib", type=int, default=None, help="text file size (default 100; 8 with --quick)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="repeats (default: profile a 3, profile b 1; 1 with --quick)")
    ap.add_argument("--connections", type=int, default=None,
                    help="set-up connections per path and profile (default 15; 5 with --quick)")
    ap.add_argument("--prefix", default="wb", help="netlab prefix (default wb)")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"))
    ap.add_argument("--wanopt", default=str(DEFAULT_WANOPT))
    ap.add_argument("--delayline", default=str(DEFAULT_DELAYLINE))
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    ap.add_argument("--markdown", default=str(DEFAULT_MARKDOWN))
    ap.add_argument("--capture", action=argparse.BooleanOptionalAction, default=True,
                    help="tshark the WAN packets of one set-up connection through the pair (default on)")
    ap.add_argument("--keep-logs", default=None, metavar="DIR", help="copy the box logs to DIR")
    ap.add_argument("--render-from", metavar="JSON", help="print the Markdown of an earlier run's JSON and exit")
    ap.add_argument("--generate-text", nargs=3, metavar=("OUT", "SIZE", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.size_mib is None:
        args.size_mib = 8 if args.quick else 100
    if args.connections is None:
        args.connections = 5 if args.quick else 15
    args.json, args.markdown = Path(args.json).resolve(), Path(args.markdown).resolve()
    return args


def _sigterm(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv):
    args = parse_args(argv)
    if args.render_from:
        with open(args.render_from) as f:
            results = json.load(f)
        print(render_markdown(results), end="")
        return 0
    if args.generate_text:
        out, size, seed = args.generate_text
        print(json.dumps(generate_text(out, int(size), int(seed))))
        return 0
    if os.geteuid() != 0:
        print("wan_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)
    t_start = time.monotonic()
    profiles = ["a", "b"] if args.profile == "all" else [args.profile]
    results = {"schema": "wanopt-wan-bench/1", "machine": {},
               "config": {"command": "wan_bench.py " + " ".join(argv), "quick": args.quick,
                          "profiles": profiles, "size_mib": args.size_mib, "connections": args.connections,
                          "repeats_override": args.repeats, "prefix": args.prefix, "log_level": args.log_level,
                          "targets": {"first_pass_speedup": TARGET_FIRST, "second_pass_speedup": TARGET_SECOND,
                                      "connect_extra_rtt_below": 0.5}},
               "text": {}, "profiles": {}, "errors": [], "warnings": [], "notes": []}
    exit_code = 0
    work = tempfile.mkdtemp(prefix="wan_bench.")
    shm = tempfile.mkdtemp(prefix="wan_bench.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        for tool in ("curl", "zstd", "ip", "openssl", "ping"):
            if shutil.which(tool) is None:
                raise BenchError("required tool '%s' not found" % tool)
        wanopt = os.path.join(work, "wanopt")
        delayline = os.path.join(work, "wanopt_delayline")
        ident = snapshot_binary(args.wanopt, wanopt)
        results["config"]["delayline_binary"] = snapshot_binary(args.delayline, delayline)
        results["machine"] = machine_info(ident)
        run([str(MAKE_PKI), os.path.join(work, "pki")], check=True)
        www = os.path.join(work, "www")
        os.makedirs(www)
        size = args.size_mib << 20
        name = "text-%dMiB.txt" % args.size_mib
        log("generating %d MiB of text (seed %d) ..." % (args.size_mib, TEXT_SEED))
        r = run([sys.executable, os.path.abspath(__file__), "--generate-text", os.path.join(www, name), str(size),
                 str(TEXT_SEED)], timeout=1800, check=True)
        text = json.loads(r.stdout)
        text.update(name=name, size=size, sha256=sha256_file(os.path.join(www, name)))
        z3 = zstd_size(os.path.join(www, name), "-3")
        zl = zstd_size(os.path.join(www, name), "-3", "--long=27")
        z19 = zstd_size(os.path.join(www, name), "-19", "-T1") if args.size_mib <= 16 else None
        text.update(zstd3_bytes=z3, zstd3_ratio=size / z3 if z3 else None, zstd3_long_bytes=zl,
                    zstd3_long_ratio=size / zl if zl else None, zstd19_bytes=z19,
                    zstd19_ratio=size / z19 if z19 else None)
        if z19 is None:
            # -19 on 100 MiB takes minutes of CPU: judged on the first 16 MiB instead.
            head = os.path.join(work, "head16.txt")
            with open(os.path.join(www, name), "rb") as f, open(head, "wb") as g:
                g.write(f.read(16 << 20))
            z = zstd_size(head, "-19", "-T1")
            text.update(zstd19_ratio=(16 << 20) / z if z else None, zstd19_note="on the first 16 MiB")
            os.unlink(head)
        with open(os.path.join(www, "tiny.txt"), "wb") as f:
            f.write((b"wanopt wan_bench tiny file\n" * 40)[:TINY_BYTES])
        results["text"] = text
        log("text: %s, zstd -3 ratio %.2fx, --long %.2fx, generated in %.0f s" % (
            text["sha256"][:16], text["zstd3_ratio"], text["zstd3_long_ratio"], text["generate_seconds"]))
        for pname in profiles:
            try:
                run_profile(args, pname, work, shm, wanopt, delayline, text, results)
            except BenchError as e:
                log("ERROR in profile %s: %s" % (pname, e))
                results["errors"].append("profile %s: %s" % (pname, e))
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
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    results["wall_seconds"] = round(time.monotonic() - t_start, 1)
    if results["machine"]:
        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
        summarize(results)
        results["exit_code"] = exit_code
        text = write_outputs(results, args)
        print(text)
        log("wrote %s and %s (%.0f s)" % (args.json, args.markdown, results["wall_seconds"]))
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
