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

Files: this one (options, machine info, main); relay_paths.py (ports, the socat
chain, the wanopt pair, the goodput phase); relay_idle.py (hold origin, idle
phase); relay_report.py (summary, targets, Markdown); benchkit.py (shared).

Exit status: 0 ok; 1 some measurement failed (results still written);
2 setup error (missing binary/tool, bad option); 3 a proxy daemon died;
130 interrupted.
"""

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # imports from the source tree leave no __pycache__ there
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402
from benchkit import BenchError, log, read_first, run_quiet  # noqa: E402
from relay_idle import idle_phase, origin_main  # noqa: E402
from relay_paths import ALL_PATHS, STREAM_COUNTS, PortAllocator, throughput_phase  # noqa: E402
from relay_report import TARGET_IDLE_CONNS, render_markdown, summarize  # noqa: E402

benchkit.set_log_name("relay_bench")

REPO_ROOT = benchkit.REPO_ROOT
DEFAULT_WANOPT = "build/wanopt/wanopt"
DEFAULT_JSON = "tests/bench/results/relay.json"
DEFAULT_MARKDOWN = "tests/bench/results/relay.md"


def machine_info(wanopt_path):
    info = benchkit.machine_basics()
    info.update(
        cpus_allowed=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        kernel_version=platform.version(), cpu_model=benchkit.cpu_model(),
        git_dirty_entries=benchkit.git_dirty_entries())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    rc, out, err = run_quiet(["iperf3", "--version"])
    info["iperf3_version"] = (out or err).splitlines()[0] if (out or err) else None
    rc, out, err = run_quiet(["socat", "-V"])
    for line in (out + "\n" + err).splitlines():
        if line.startswith("socat version"):
            info["socat_version"] = line.strip()
            break
    if wanopt_path is not None and wanopt_path.is_file():
        info["wanopt_binary"] = benchkit.binary_identity(wanopt_path)
    for key, path in (("somaxconn", "/proc/sys/net/core/somaxconn"),
                      ("tcp_rmem", "/proc/sys/net/ipv4/tcp_rmem"),
                      ("tcp_wmem", "/proc/sys/net/ipv4/tcp_wmem"),
                      ("ip_local_port_range", "/proc/sys/net/ipv4/ip_local_port_range")):
        info[key] = read_first(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    info["rlimit_nofile_initial"] = {"soft": soft, "hard": hard}
    return info


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


def main(argv):
    if len(argv) == 2 and argv[0] == "--origin-mode":
        return origin_main(int(argv[1]))
    args = parse_args(argv)
    benchkit.interrupt_on_signals()
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
    procs = benchkit.ProcSet()
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
        text = benchkit.write_outputs(results, render_markdown(results, args), args.json, args.markdown,
                                      json_indent=2)
        print(text)
        log("wrote %s and %s" % (args.json, args.markdown))
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
