#!/usr/bin/python3
"""SMB read benchmark over the emulated WAN: the smb2 module's read-ahead, in the
namespace lab (`netlab up --delay-ms 20 --rate-mbit 100 --intercept`: 40 ms RTT,
100 Mbit/s).

    client -- branch box == WAN (wanopt_delayline) == datacenter box -- server (smbd)

Samba's smbd (tests/lab/smbd_peer.py; signing disabled, encryption off) serves one
file in the server namespace: 64 MiB (8 MiB with --quick), half text, half random
(smbd_peer.test_file), written once. Each client reads it in the client namespace,
SHA-256 verified every run, three ways:

    direct  no wanopt daemon running: the interception rules fail open and the
            boxes route
    cold    through the pair, both boxes just restarted with wiped stores
            (the smb2 module is on by default: the dc predicts READs, the
            branch answers them)
    warm    the same file again, same daemons: DRE has the bytes

Clients: smbget (serial 64000-byte READs), impacket getFile (serial 1 MiB READs),
smbclient (pipelined READs). Times are the wall time of the whole client run,
session set-up included. Repeats (default 2) are interleaved: for each repeat, for
each client: direct, cold, warm, then a 1-byte file through the pair (the session's
set-up time) and the boxes stopped.

Reported: medians, every sample, the ratio vs direct per client and mode, the
target (serial readers: cold >= 5x, warm >= 20x; smbclient no slower than direct)
and whether it was met, and beside each ratio a floor: the best ratio physically
reachable, direct time / (set-up time + the run's WAN bytes / link rate), the WAN
bytes being the branch's /api/connections wan_in + wan_out of that run (median over
the repeats). Also the kernel's congestion control in the server namespace (BBR
slows a direct serial reader: /work/shared/brief/benchmarks.md), the branch's notes
for each pair run (the "read-ahead: ... hit rate N%" figures), the dc's notes, and
`wanopt show connections` lines of the SMB connections as the branch prints them.

Usage (root; standard library and the lab helpers):
  /usr/bin/python3 tests/bench/smb_bench.py [--quick] [--repeats N] [--size-mib N]
      [--clients smbget,impacket,smbclient] [--wanopt PATH] [--delayline PATH]
      [--prefix sb] [--json PATH] [--markdown PATH] [--keep-logs DIR]
      [--render-from JSON]
Results: tests/bench/results/smb.json and smb.md.
Every process started here is stopped by PID (smbd by its process group) and the lab
is always taken down in a finally.
Exit status: 0 ok; 1 a measurement failed (results still written); 2 setup error;
130 interrupted.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True  # imports from the source tree leave no __pycache__ there
sys.path.insert(0, str(REPO_ROOT / "tests" / "lab"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "bench"))
import labkit  # noqa: E402
import smbd_peer  # noqa: E402
import benchkit  # noqa: E402
from benchkit import BenchError, fmt_b, fmt_s, fmt_x, log, median, snapshot_binary  # noqa: E402

benchkit.set_log_name("smb_bench")

NETLAB = REPO_ROOT / "tests" / "lab" / "netlab"
MAKE_PKI = REPO_ROOT / "tests" / "lab" / "make-pki"
# Mirrors wan_bench.py; pass --wanopt/--delayline for another build (e.g. build-release).
DEFAULT_WANOPT = REPO_ROOT / "build" / "wanopt" / "wanopt"
DEFAULT_DELAYLINE = REPO_ROOT / "build" / "tests" / "lab" / "wanopt_delayline"
DEFAULT_JSON = REPO_ROOT / "tests" / "bench" / "results" / "smb.json"
DEFAULT_MARKDOWN = REPO_ROOT / "tests" / "bench" / "results" / "smb.md"

IDS = {"branch": "02:00:00:00:0b:01", "dc": "02:00:00:00:0d:01"}
DELAY_MS, RATE_MBIT = 20, 100
CLIENTS = {"smbget": smbd_peer.smbget, "impacket": smbd_peer.impacket_get, "smbclient": smbd_peer.smbclient}
SERIAL = ("smbget", "impacket")
TARGETS = {"cold": 5.0, "warm": 20.0}  # serial readers; smbclient: >= 1.0 (no slower than direct)
FILE_SEED = 1
NAME, ONE = "f.bin", "one.bin"
MODES = ("direct", "cold", "warm")


def target_of(client, mode):
    return TARGETS[mode] if client in SERIAL else 1.0


class BenchLab(labkit.Lab):
    """labkit's Lab with a rate-limited WAN, boxes restarted with wiped stores, and
    the status API read without raising (a measurement, not a check)."""

    def __init__(self, prefix, work, wanopt, delayline):
        super().__init__(prefix, work, str(wanopt), str(NETLAB), str(delayline), delay_ms=DELAY_MS)
        self.box_starts = 0

    def up(self):
        if os.path.isdir("/run/wanopt-lab-%s" % self.prefix):  # left by an interrupted run of ours
            subprocess.run([self.netlab, "--prefix", self.prefix, "down"], env=self.env, capture_output=True,
                           timeout=90)
        r = subprocess.run([self.netlab, "--prefix", self.prefix, "up", "--delay-ms", str(DELAY_MS),
                            "--rate-mbit", str(RATE_MBIT), "--intercept"], env=self.env, capture_output=True,
                           text=True, timeout=90)
        if r.returncode != 0:
            raise BenchError("netlab up: %s" % r.stderr.strip()[-800:])

    def bench_config(self, box):
        """labkit's config with "[intercept]" (every module on, smb2 included), a
        store that holds the file many times over, and info logging (debug logs
        every READ and would cost the boxes CPU)."""
        path = self.box_config(box, IDS[box], box, "ca", "[intercept]\n")
        text = Path(path).read_text()
        text = text.replace("max_size_mb = 64", "max_size_mb = 1024").replace('log_level = "debug"',
                                                                                 'log_level = "info"')
        Path(path).write_text(text)
        return path, text

    def store(self, box):
        return os.path.join(self.work, "%s-%s-store" % (self.prefix, box))

    def start_boxes(self):
        """Both boxes on fresh (wiped) stores; returns their configs."""
        self.box_starts += 1
        configs = {}
        for box in ("dc", "branch"):
            shutil.rmtree(self.store(box), ignore_errors=True)
            path, configs[box] = self.bench_config(box)
            with open(os.path.join(self.work, "%s-%s.log" % (self.prefix, box)), "a") as f:
                f.write("\n==== smb_bench: start %d, store wiped ====\n" % self.box_starts)
            try:
                self.start_box(box, path)
            except RuntimeError as e:
                raise BenchError(str(e))
        return configs

    def stop_boxes(self):
        for box in ("branch", "dc"):
            self.stop(box)

    def conns(self, node):
        r = self.run(node, "curl", "-s", "-m", "5", "http://127.0.0.1:7880/api/connections")
        try:
            return json.loads(r.stdout)["connections"] if r.returncode == 0 else []
        except (ValueError, KeyError):
            return []

    def last_conn_id(self, node):
        return max([c["id"] for c in self.conns(node)], default=0)

    def smb_conns_since(self, node, since, timeout=15):
        """The connections on `node` to port 445 with id > since, once all ended
        (or what there is at the deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.conns(node) if c.get("server", "").endswith(":445") and c["id"] > since]
            if (found and all(c.get("ended") for c in found)) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)  # polling a condition with a deadline


def fetch(lab, work, client, name, digest, timeout):
    out = os.path.join(work, "out-%s.bin" % client)
    r = CLIENTS[client](lab.ns("client"), smbd_peer.SERVER_IP, name, out, timeout=timeout)
    ok = r.ok and smbd_peer.sha256_file(out) == digest
    if os.path.exists(out):
        os.unlink(out)
    return {"seconds": round(r.seconds, 3), "ok": ok, "client_ok": r.ok,
            "output": None if ok else r.output[-600:]}


HIT_RE = re.compile(r"hit rate (\d+)%")


def pair_fetch(lab, work, client, name, digest, timeout):
    """A fetch through the pair, with what the boxes recorded of it."""
    since_b, since_d = lab.last_conn_id("branch"), lab.last_conn_id("dc")
    m = fetch(lab, work, client, name, digest, timeout)
    branch = lab.smb_conns_since("branch", since_b)
    dc = lab.smb_conns_since("dc", since_d, timeout=5)
    m["connections"] = len(branch)
    m["wan_bytes"] = sum(c.get("wan_in", 0) + c.get("wan_out", 0) for c in branch)
    m["lan_bytes"] = sum(c.get("lan_in", 0) + c.get("lan_out", 0) for c in branch)
    m["optimized"] = bool(branch) and all(c.get("peer") == IDS["dc"] and c.get("state") != "pass-through"
                                          for c in branch)
    m["branch_notes"] = [n for c in branch for n in c.get("notes", [])]
    m["dc_notes"] = [n for c in dc for n in c.get("notes", [])]
    m["application"] = sorted({c.get("application") or "" for c in branch})
    ra = [n for n in m["branch_notes"] if n.startswith("read-ahead")]
    m["read_ahead_note"] = ra[0] if ra else None
    hit = HIT_RE.search(ra[0]) if ra else None
    m["hit_rate_pct"] = int(hit.group(1)) if hit else None
    m["show_line"] = show_line(lab, [c.get("client", "") for c in branch])
    return m


def show_line(lab, clients):
    """The branch's `wanopt show connections` line of one of these connections (it
    reads the status page at its default address, 127.0.0.1:7880, the lab's)."""
    r = lab.run("branch", lab.wanopt, "show", "connections", "--filter", ":445", timeout=15)
    lines = r.stdout.splitlines()
    for c in clients:
        for line in lines:
            if c and c in line:
                return {"header": lines[0] if lines else "", "line": line}
    return {"header": lines[0] if lines else "", "line": lines[-1] if len(lines) > 1 else None,
            "rc": r.returncode, "stderr": r.stderr.strip()[-300:]}


def measure(args, work, wanopt, delayline, results):
    lab = BenchLab(args.prefix, work, wanopt, delayline)
    server = None
    size = args.size_mib << 20
    timeout = max(300, args.size_mib * 10)
    samples = results["samples"]
    try:
        log("lab up: %d ms one way, %d Mbit/s" % (DELAY_MS, RATE_MBIT))
        lab.up()
        cc = {}
        for node in ("server", "client", "branch", "dc"):
            r = lab.run(node, "sysctl", "-n", "net.ipv4.tcp_congestion_control")
            cc[node] = r.stdout.strip() or None
        results["congestion_control"] = cc
        server = smbd_peer.start(lab.ns("server"), os.path.join(work, "smbd"), signing="disabled", encrypt="off")
        digest = server.write(NAME, smbd_peer.test_file(size, seed=FILE_SEED))
        one_digest = server.write(ONE, b"x")
        results["file"] = {"name": NAME, "size": size, "sha256": digest, "seed": FILE_SEED,
                           "content": "smbd_peer.test_file: first half text-like, second half pseudo-random"}
        for rep in range(1, args.repeats + 1):
            for client in args.clients:
                log("repeat %d/%d, %s: direct" % (rep, args.repeats, client))
                s = fetch(lab, work, client, NAME, digest, timeout)
                s.update(repeat=rep, client=client, mode="direct")
                samples.append(s)
                s = fetch(lab, work, client, ONE, one_digest, 120)
                s.update(repeat=rep, client=client, mode="setup-direct")
                samples.append(s)
                results["box_configs"] = lab.start_boxes()
                try:
                    for mode in ("cold", "warm"):
                        log("repeat %d/%d, %s: %s" % (rep, args.repeats, client, mode))
                        s = pair_fetch(lab, work, client, NAME, digest, timeout)
                        s.update(repeat=rep, client=client, mode=mode)
                        samples.append(s)
                        log("  %.2f s, %s, WAN %d bytes, %s" % (s["seconds"], "ok" if s["ok"] else "FAILED",
                                                             s["wan_bytes"], s["read_ahead_note"]))
                    s = pair_fetch(lab, work, client, ONE, one_digest, 120)
                    s.update(repeat=rep, client=client, mode="setup-pair")
                    samples.append(s)
                finally:
                    lab.stop_boxes()
        for s in samples:
            if not s["ok"]:
                results["errors"].append("repeat %d, %s, %s: the copy failed or differs: %s" % (
                    s["repeat"], s["client"], s["mode"], (s.get("output") or "").replace("\n", " | ")[-300:]))
            elif s["mode"] in ("cold", "warm", "setup-pair") and not s.get("optimized"):
                results["warnings"].append("repeat %d, %s, %s: not optimized by the pair (%d connections)" % (
                    s["repeat"], s["client"], s["mode"], s.get("connections", 0)))
    finally:
        if server is not None:
            server.stop()
        if args.keep_logs:
            os.makedirs(args.keep_logs, exist_ok=True)
            for f in os.listdir(work):
                if f.endswith(".log"):
                    shutil.copy2(os.path.join(work, f), args.keep_logs)
        lab.down()


def summarize(results):
    rate = RATE_MBIT * 1e6 / 8  # bytes per second
    summary = {}
    for client in results["config"]["clients"]:
        def of(mode, key="seconds"):
            return [s[key] for s in results["samples"] if s["client"] == client and s["mode"] == mode and s["ok"]]
        direct = median(of("direct"))
        setup = median(of("setup-pair"))
        rows = {"direct": {"seconds_median": direct, "samples": of("direct"), "ratio": 1.0 if direct else None},
                "setup": {"pair_median": setup, "pair_samples": of("setup-pair"),
                          "direct_median": median(of("setup-direct")), "direct_samples": of("setup-direct")}}
        for mode in ("cold", "warm"):
            t = median(of(mode))
            wan = median(of(mode, "wan_bytes"))
            ratio = direct / t if direct and t else None
            floor_s = setup + wan / rate if setup is not None and wan is not None else None
            floor = direct / floor_s if direct and floor_s else None
            target = target_of(client, mode)
            hits = of(mode, "hit_rate_pct")
            rows[mode] = {"seconds_median": t, "samples": of(mode), "ratio": ratio, "wan_bytes_median": wan,
                          "lan_bytes_median": median(of(mode, "lan_bytes")), "floor_seconds": floor_s,
                          "floor_ratio": floor, "target": target,
                          "met": None if ratio is None else ratio >= target,
                          "target_above_floor": None if floor is None else target > floor,
                          "hit_rate_pct": hits}
        summary[client] = rows
    results["summary"] = summary


def render_markdown(results):
    cfg = results["config"]
    cc = results.get("congestion_control", {})
    m = results.get("machine", {})
    out = ["# SMB read-ahead over the emulated WAN", ""]
    if cfg.get("quick"):
        out += ["**Smoke run (--quick): a small file, one repeat; not the benchmark's figures.**", ""]
    out.append("`%s` on %s (%s cores, kernel %s), %s; wanopt %s. Lab: %d ms one way (%d ms RTT), %d Mbit/s; "
               "file %s MiB (half text, half random); repeats %d, interleaved; smbd signing disabled, encryption off."
               % (cfg["command"], m.get("hostname", "?"), m.get("nproc", "?"), m.get("kernel", "?"),
                  m.get("date_utc", "?"), (m.get("wanopt_binary") or {}).get("path", "?"), DELAY_MS, 2 * DELAY_MS,
                  RATE_MBIT, cfg["size_mib"], cfg["repeats"]))
    out.append("")
    out.append("Congestion control (net.ipv4.tcp_congestion_control): server namespace **%s** (client %s, "
               "branch %s, dc %s). With BBR a direct serial reader is slower than with cubic "
               "(each reply paced from an idle start)." % (cc.get("server"), cc.get("client"), cc.get("branch"),
                                                             cc.get("dc")))
    out.append("")
    out.append("Times: wall seconds of the whole client run (session set-up included), SHA-256 verified. "
               "Floor: the best ratio reachable = direct / (set-up through the pair + the run's WAN bytes at "
               "%d Mbit/s); WAN bytes: the branch's wan_in + wan_out." % RATE_MBIT)
    out.append("")
    out.append("| client | mode | median s | samples s | vs direct | floor | target | met | WAN bytes | "
               "read-ahead hit rate |")
    out.append("|---|---|---:|---|---:|---:|---:|---|---:|---|")
    for client, rows in results.get("summary", {}).items():
        d = rows["direct"]
        out.append("| %s | direct | %s | %s | 1.00x | - | - | - | - | - |" % (
            client, fmt_s(d["seconds_median"]), ", ".join(fmt_s(x) for x in d["samples"])))
        for mode in ("cold", "warm"):
            r = rows[mode]
            met = "n/a" if r["met"] is None else ("met" if r["met"] else "**NOT met**")
            if r["target_above_floor"]:
                met += " (target above the floor)"
            out.append("| %s | %s | %s | %s | **%s** | %s | >= %.0fx | %s | %s | %s |" % (
                client, mode, fmt_s(r["seconds_median"]), ", ".join(fmt_s(x) for x in r["samples"]),
                fmt_x(r["ratio"]), fmt_x(r["floor_ratio"]), r["target"], met, fmt_b(r["wan_bytes_median"]),
                ", ".join("-" if h is None else "%d%%" % h for h in r["hit_rate_pct"]) or "-"))
    out.append("")
    out.append("## Session set-up (a 1-byte file)")
    out.append("")
    out.append("| client | direct median s | samples | through the pair median s | samples |")
    out.append("|---|---:|---|---:|---|")
    for client, rows in results.get("summary", {}).items():
        st = rows["setup"]
        out.append("| %s | %s | %s | %s | %s |" % (client, fmt_s(st["direct_median"]),
                                                    ", ".join(fmt_s(x) for x in st["direct_samples"]),
                                                    fmt_s(st["pair_median"]),
                                                    ", ".join(fmt_s(x) for x in st["pair_samples"])))
    out.append("")
    out.append("## What the boxes said (first repeat)")
    out.append("")
    shown = None
    for s in results.get("samples", []):
        if s["repeat"] != 1 or s["mode"] not in ("cold", "warm"):
            continue
        out.append("- %s, %s: branch: %s; dc: %s" % (s["client"], s["mode"], " | ".join(s.get("branch_notes") or [])
                                                     or "(no notes)", " | ".join(s.get("dc_notes") or []) or
                                                     "(no notes)"))
        sl = s.get("show_line") or {}
        if shown is None and sl.get("line") and s["client"] in SERIAL:
            shown = sl
    if shown:
        out.append("")
        out.append("One SMB connection as `wanopt show connections` prints it on the branch:")
        out.append("")
        out.append("```")
        out.append(shown["header"])
        out.append(shown["line"])
        out.append("```")
    for title, key in (("Errors", "errors"), ("Warnings", "warnings")):
        if results.get(key):
            out.append("")
            out.append("## " + title)
            out.append("")
            out.extend("- " + e.replace("\n", " | ") for e in results[key])
    out.append("")
    out.append("Every sample (times, WAN/LAN bytes, the boxes' notes, `wanopt show` lines), the box configs and "
               "the machine: [smb.json](smb.json).")
    out.append("")
    return "\n".join(out)


def machine_info(wanopt_identity):
    info = benchkit.machine_basics()
    info["wanopt_binary"] = wanopt_identity
    for tool, argv in (("smbd", ["smbd", "--version"]), ("smbclient", ["smbclient", "--version"])):
        r = subprocess.run(argv, capture_output=True, text=True)
        info[tool + "_version"] = r.stdout.strip() or None
    return info


def parse_args(argv):
    ap = argparse.ArgumentParser(description="SMB read-ahead benchmark in the namespace lab (root).")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 MiB, 1 repeat")
    ap.add_argument("--size-mib", type=int, default=None, help="file size (default 64; 8 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats (default 2; 1 with --quick)")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated, of " + ", ".join(CLIENTS))
    ap.add_argument("--prefix", default="sb", help="netlab prefix (default sb)")
    ap.add_argument("--wanopt", default=str(DEFAULT_WANOPT))
    ap.add_argument("--delayline", default=str(DEFAULT_DELAYLINE))
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    ap.add_argument("--markdown", default=str(DEFAULT_MARKDOWN))
    ap.add_argument("--keep-logs", default=None, metavar="DIR", help="copy the box logs to DIR")
    ap.add_argument("--render-from", metavar="JSON", help="print the Markdown of an earlier run's JSON and exit")
    args = ap.parse_args(argv)
    if args.size_mib is None:
        args.size_mib = 8 if args.quick else 64
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    args.clients = [c for c in args.clients.split(",") if c]
    bad = [c for c in args.clients if c not in CLIENTS]
    if bad:
        ap.error("unknown clients: %s" % ", ".join(bad))
    args.json, args.markdown = Path(args.json).resolve(), Path(args.markdown).resolve()
    return args


def main(argv):
    args = parse_args(argv)
    if args.render_from:
        with open(args.render_from) as f:
            print(render_markdown(json.load(f)), end="")
        return 0
    if os.geteuid() != 0:
        print("smb_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    benchkit.interrupt_on_signals()
    t_start = time.monotonic()
    results = {"schema": "wanopt-smb-bench/1", "machine": {},
               "config": {"command": "smb_bench.py " + " ".join(argv), "quick": args.quick,
                          "size_mib": args.size_mib, "repeats": args.repeats, "clients": args.clients,
                          "prefix": args.prefix, "delay_ms_one_way": DELAY_MS, "rate_mbit": RATE_MBIT,
                          "targets": {"serial_cold": TARGETS["cold"], "serial_warm": TARGETS["warm"],
                                      "smbclient": 1.0}},
               "samples": [], "errors": [], "warnings": []}
    exit_code = 0
    work = tempfile.mkdtemp(prefix="smb_bench.")
    try:
        for tool in ("curl", "ip", "smbd", "smbget", "smbclient", "smbpasswd", "openssl"):
            if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
                raise BenchError("required tool '%s' not found" % tool)
        wanopt = os.path.join(work, "wanopt")
        delayline = os.path.join(work, "wanopt_delayline")
        ident = snapshot_binary(args.wanopt, wanopt)
        results["config"]["delayline_binary"] = snapshot_binary(args.delayline, delayline)
        results["machine"] = machine_info(ident)
        r = subprocess.run([str(MAKE_PKI), os.path.join(work, "pki")], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError("make-pki: %s" % r.stderr.strip()[-500:])
        measure(args, work, wanopt, delayline, results)
        if results["errors"]:
            exit_code = 1
    except (BenchError, smbd_peer.PeerError, RuntimeError, subprocess.SubprocessError) as e:
        log("ERROR: %s" % e)
        results["errors"].append(str(e))
        exit_code = getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        log("interrupted")
        results["errors"].append("interrupted")
        exit_code = 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["wall_seconds"] = round(time.monotonic() - t_start, 1)
    if results["machine"]:
        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
        summarize(results)
        results["exit_code"] = exit_code
        text = benchkit.write_outputs(results, render_markdown(results), args.json, args.markdown)
        print(text)
        log("wrote %s and %s (%.0f s)" % (args.json, args.markdown, results["wall_seconds"]))
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
