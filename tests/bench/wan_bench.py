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
Files: this one (options, machine info, main); wan_text.py (the text); wan_lab.py
(profiles, the lab); wan_measure.py (the measurements, one profile's run);
wan_report.py (summary, Markdown); benchkit.py (shared with the other benches).
Exit status: 0 ok; 1 a measurement failed (results still written); 2 setup error;
130 interrupted.
"""


import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # imports from the source tree leave no __pycache__ there
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402
from benchkit import REPO_ROOT, BenchError, log, run, sha256_file, snapshot_binary  # noqa: E402
from wan_lab import ORIGIN_PYTHON, TARGET_FIRST, TARGET_SECOND, TINY_BYTES  # noqa: E402
from wan_measure import run_profile  # noqa: E402
from wan_report import render_markdown, summarize  # noqa: E402
from wan_text import generate_text, zstd_size  # noqa: E402

benchkit.set_log_name("wan_bench")

MAKE_PKI = REPO_ROOT / "tests" / "lab" / "make-pki"
DEFAULT_WANOPT = REPO_ROOT / "build" / "wanopt" / "wanopt"
DEFAULT_DELAYLINE = REPO_ROOT / "build" / "tests" / "lab" / "wanopt_delayline"
DEFAULT_JSON = REPO_ROOT / "tests" / "bench" / "results" / "wan.json"
DEFAULT_MARKDOWN = REPO_ROOT / "tests" / "bench" / "results" / "wan.md"
TEXT_SEED = 20261130


def machine_info(wanopt_identity):
    info = benchkit.machine_basics()
    info["cpu_model"] = benchkit.cpu_model()
    info["git_dirty_entries"] = benchkit.git_dirty_entries()
    info["curl_version"] = run(["curl", "--version"]).stdout.splitlines()[0]
    info["zstd_version"] = run(["zstd", "--version"]).stdout.strip()
    info["origin_python"] = run([ORIGIN_PYTHON, "--version"]).stdout.strip()
    info["wanopt_binary"] = wanopt_identity
    info["tcp_congestion_available"] = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().strip()
    return info


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
    ap.add_argument("--lz-level-max", type=int, default=None,
                    help="[dre] lz_level_max of both boxes (default: the daemon's, adaptive up to 19; "
                         "3 = the fixed level 3 of earlier versions)")
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
    benchkit.interrupt_on_signals()
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
        z9 = zstd_size(os.path.join(www, name), "-9")
        z19 = zstd_size(os.path.join(www, name), "-19", "-T1") if args.size_mib <= 16 else None
        text.update(zstd3_bytes=z3, zstd3_ratio=size / z3 if z3 else None, zstd3_long_bytes=zl,
                    zstd3_long_ratio=size / zl if zl else None, zstd9_bytes=z9,
                    zstd9_ratio=size / z9 if z9 else None, zstd19_bytes=z19,
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
        text = benchkit.write_outputs(results, render_markdown(results), args.json, args.markdown)
        print(text)
        log("wrote %s and %s (%.0f s)" % (args.json, args.markdown, results["wall_seconds"]))
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
