#!/usr/bin/python3
"""The command line as a user meets it: help, version, config errors, run, lab.

Usage: cli_test.py PATH_TO_WANOPT SOURCE_DIR. Prints 'N passed, N failed'; exit 1 on failure.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

WANOPT = sys.argv[1]
SOURCE = sys.argv[2]
passed = failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name} {detail}")


def run(*args, timeout=60):
    return subprocess.run([WANOPT, *args], capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc):
    """True once `port` accepts connections; False if `proc` exits or 10 s pass."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)  # polling a condition with a deadline, not a synchronisation sleep
    return False


tmp = tempfile.mkdtemp(prefix="wanopt-cli-")


def config_file(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


r = run("--version")
check("--version", r.returncode == 0 and r.stdout.startswith("wanopt "), r.stdout)
for args in (["--help"], ["run", "--help"], ["lab", "--help"]):
    r = run(*args)
    check(" ".join(args), r.returncode == 0 and "usage: wanopt" in r.stdout, r.stdout + r.stderr)
r = run("frobnicate")
check("unknown command exits 2", r.returncode == 2 and "unknown command" in r.stderr, r.stderr)
r = run("run")
check("run without --config exits 2", r.returncode == 2 and "--config FILE is required" in r.stderr, r.stderr)

port = free_port()
bad_configs = {
    "unknown key": (f'[datacenter]\nlisten = "127.0.0.1:{port}"\nlisen = 1\n', "datacenter.lisen: unknown key"),
    "bad address": ('[datacenter]\nlisten = "127.0.0.1:99999"\n', "datacenter.listen: '127.0.0.1:99999' is not an address:port"),
    "missing destination": ('[[branch.forward]]\nlisten = "127.0.0.1:1"\npeer = "127.0.0.1"\n',
                            "branch.forward[0].destination: is required"),
    "syntax": ("[datacenter\n", "TOML syntax"),
    "unknown module": (f'[datacenter]\nlisten = "127.0.0.1:{port}"\nmodules = ["nope"]\n', "unknown module 'nope'"),
}
for name, (text, expected) in bad_configs.items():
    path = config_file(name.replace(" ", "_") + ".toml", text)
    r = run("run", "--config", path)
    lines = r.stderr.strip().splitlines()
    check(f"bad config ({name}) exits 2", r.returncode == 2, f"rc={r.returncode}")
    check(f"bad config ({name}) prints one line", len(lines) == 1, repr(r.stderr))
    check(f"bad config ({name}) names the file, line and key", lines and path in lines[0] and expected in lines[0],
          repr(r.stderr))
r = run("run", "--config", os.path.join(tmp, "missing.toml"))
check("missing config file exits 2", r.returncode == 2 and "cannot open" in r.stderr, r.stderr)

# Every shipped example config is valid.
examples = os.path.join(SOURCE, "deploy", "examples")
for name in sorted(os.listdir(examples)):
    r = run("run", "--check", "--config", os.path.join(examples, name))
    check(f"example {name} is valid", r.returncode == 0 and ": ok: " in r.stdout, r.stdout + r.stderr)
r = run("run", "--check", "--config", config_file("check_bad.toml", "[box]\nname = 1\n"))
check("--check on a bad config exits 2", r.returncode == 2, r.stderr)

# Nothing was started by the bad configs: the port they named is still free.
with socket.socket() as s:
    check("bad config started nothing", s.connect_ex(("127.0.0.1", port)) != 0)

# A good config runs until SIGTERM and exits 0.
path = config_file("good.toml", f'[box]\ndevice_id = "02:00:00:00:00:09"\n[datacenter]\nlisten = "127.0.0.1:{port}"\n')
daemon = subprocess.Popen([WANOPT, "run", "--config", path], stderr=subprocess.PIPE, text=True)
try:
    check("run: listens on the configured port", wait_listening(port, daemon))
    daemon.send_signal(signal.SIGTERM)
    rc = daemon.wait(timeout=10)
    err = daemon.stderr.read()
    check("run: SIGTERM stops it with exit 0", rc == 0, f"rc={rc} {err}")
    check("run: logs that it listens", "datacenter listening on 127.0.0.1:%d" % port in err, err)
finally:
    if daemon.poll() is None:
        daemon.kill()
        daemon.wait()

# The status server of a daemon: token enforced, read-only.
status_port = free_port()
path = config_file("status.toml", f'[box]\nname = "tokened"\n[datacenter]\nlisten = "127.0.0.1:{free_port()}"\n'
                                  f'[status]\nlisten = "127.0.0.1:{status_port}"\ntoken = "s3cret-token-for-tests"\n')
daemon = subprocess.Popen([WANOPT, "run", "--config", path], stderr=subprocess.PIPE, text=True)
try:
    check("status: listening", wait_listening(status_port, daemon))
    import urllib.request, urllib.error
    base = f"http://127.0.0.1:{status_port}"
    try:
        urllib.request.urlopen(base + "/api/summary", timeout=5)
        check("status: no token -> 401", False)
    except urllib.error.HTTPError as e:
        check("status: no token -> 401", e.code == 401, e.code)
    req = urllib.request.Request(base + "/api/summary", headers={"Authorization": "Bearer s3cret-token-for-tests"})
    with urllib.request.urlopen(req, timeout=5) as r:
        check("status: bearer token -> 200 and the box's name", r.status == 200 and b'"tokened"' in r.read())
    with urllib.request.urlopen(base + "/?token=s3cret-token-for-tests", timeout=5) as r:
        check("status: ?token= works for the page", r.status == 200 and b"<table" in r.read())
    r = run("show", "summary", "--api", base)
    check("show without the token says so", r.returncode == 1 and "needs its access token" in r.stderr, r.stderr)
    r = run("show", "summary", "--api", base, "--token", "s3cret-token-for-tests")
    check("show with the token", r.returncode == 0 and "box tokened" in r.stdout, r.stdout + r.stderr)
finally:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=10)
r = run("run", "--check", "--config", config_file("open_status.toml",
        '[datacenter]\nlisten = "127.0.0.1:1"\n[status]\nlisten = "0.0.0.0:7880"\n'))
check("status on a non-loopback address without a token is refused", r.returncode == 2 and "status.token" in r.stderr,
      r.stderr)

# The lab, as JSON.
r = run("lab", "--json", timeout=120)
check("lab --json exits 0", r.returncode == 0, r.stderr[-2000:])
try:
    report = json.loads(r.stdout)
    transfers = report["transfers"]
    check("lab: two passes", [t["pass"] for t in transfers] == [1, 2], r.stdout)
    check("lab: every transfer verified", all(t["verified"] for t in transfers), r.stdout)
    check("lab: fields", all(set(t) >= {"file", "pass", "lan_bytes", "wan_bytes", "reduction", "seconds", "verified"}
                             for t in transfers) and "status_url" in report, r.stdout)
    check("lab: bytes crossed the WAN", all(t["wan_bytes"] > 0 and t["lan_bytes"] > 0 for t in transfers), r.stdout)
except (ValueError, KeyError) as e:
    check("lab --json is JSON", False, f"{e}: {r.stdout[:500]}")

sample = config_file("sample.bin", "x" * 100000)
r = run("lab", "--file", sample, "--file", sample, timeout=120)
check("lab --file: table with four rows", r.returncode == 0 and r.stdout.count(sample) == 4, r.stdout)
r = run("lab", "--file", os.path.join(tmp, "nonexistent"))
check("lab --file missing exits 2", r.returncode == 2 and "cannot read" in r.stderr, r.stderr)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
