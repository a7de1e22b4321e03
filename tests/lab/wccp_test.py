#!/usr/bin/python3
"""wanopt's WCCPv2 client against the test router (tests/lab/wccp_router.py), in
network namespaces of its own.

Usage: wccp_test.py WANOPT
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure.

A router namespace with a bridge (198.18.60.1) and one namespace per box on it
(198.18.60.2, .3, .4), each box a real `wanopt run` with [intercept] and [wccp]
(service groups 61 and 62, MD5, Here_I_Am every second so that the test is short;
the router drops a cache after 3 s of silence). tshark on the router's bridge.
  1. Two boxes register: the router lists both in 61 and 62, the lowest address is
     designated, and the assignment it sent the router splits the 256 buckets
     128/128; `wanopt show wccp` on each box says so (the designated one shows the
     split, the other who made it); /metrics has the buckets.
  2. The designated box stopped: the router drops it, the other becomes designated
     and its assignment holds all 256 buckets.
  3. It comes back: the split is 128/128 again, made by it.
  Lost I_See_You: the router frozen, the boxes mark it unusable after 3
     intervals, and use it again when it answers.
  4. The router restarts: both register again, and the split is back.
  5. A box with the wrong password: the router counts bad MD5 and never lists it;
     the box says the router is not heard from.
  6. Mask assignment: the boxes restarted with assignment = "mask": the router
     takes a mask assignment whose 64 values are split 32/32.
  GRE: a redirected SYN sent to box a in GRE (0x883E and the redirect header) is
     unwrapped and handed to the kernel through the TUN device wccp0; a GRE packet
     of another protocol type is refused and counted.
  7. tshark decodes every WCCP message on the bridge (Here_I_Am, I_See_You,
     Redirect_Assign) with no malformed packet.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from labkit import Checks  # noqa: E402

WANOPT = os.path.abspath(sys.argv[1])
PY = "/usr/bin/python3"
ROUTER = "198.18.60.1"
BOXES = {"a": "198.18.60.2", "b": "198.18.60.3", "c": "198.18.60.4"}
PREFIX = f"ww{os.getpid() % 100000}"

if os.geteuid() != 0:
    print("SKIP: network namespaces need root")
    sys.exit(77)

check = Checks(detail_limit=2500)
procs = {}


def ns(name):
    return f"{PREFIX}-{name}"


def sh(*cmd, check_rc=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.returncode}: {r.stderr}")
    return r


def run_in(node, *cmd, **kw):
    return sh("ip", "netns", "exec", ns(node), *cmd, **kw)


def up():
    sh("ip", "netns", "add", ns("r"))
    run_in("r", "ip", "link", "set", "lo", "up")
    run_in("r", "ip", "link", "add", "br0", "type", "bridge")
    run_in("r", "ip", "addr", "add", f"{ROUTER}/24", "dev", "br0")
    run_in("r", "ip", "link", "set", "br0", "up")
    for name, ip in BOXES.items():
        sh("ip", "netns", "add", ns(name))
        run_in(name, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", f"{PREFIX}{name}", "netns", ns(name), "type", "veth", "peer", "name", f"p{name}",
           "netns", ns("r"))
        run_in(name, "ip", "link", "set", f"{PREFIX}{name}", "name", "eth0")
        run_in(name, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        run_in(name, "ip", "link", "set", "eth0", "up")
        run_in("r", "ip", "link", "set", f"p{name}", "master", "br0")
        run_in("r", "ip", "link", "set", f"p{name}", "up")


def down():
    for name in list(procs):
        stop(name)
    for name in ["r", *BOXES]:
        subprocess.run(["ip", "netns", "del", ns(name)], capture_output=True)


def spawn(name, node, *cmd, **kw):
    procs[name] = subprocess.Popen(["ip", "netns", "exec", ns(node), *cmd], **kw)
    return procs[name]


def stop(name, sig=signal.SIGTERM):
    p = procs.pop(name, None)
    if p and p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start_router(work, assignment="both"):
    state = os.path.join(work, "router.json")
    if os.path.exists(state):
        os.remove(state)
    p = spawn("router", "r", PY, os.path.join(HERE, "wccp_router.py"), "--listen", ROUTER, "--password", "wanopt",
              "--service", "61", "--service", "62", "--forwarding", "both", "--return", "both",
              "--assignment", assignment, "--timeout-s", "3", "--state", state,
              "--log", os.path.join(work, "router.log"), stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if line != "READY":
        raise RuntimeError(f"router did not start: {line!r}")
    return state


def box_config(work, name, password="wanopt", assignment="hash"):
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(f"""
[box]
name = "{name}"
device_id = "02:00:00:00:60:0{ord(name) - 96}"
threads = 1
[status]
listen = "127.0.0.1:7880"
[peering]
psk_identity = "lab"
psk = "00112233445566778899aabbccddeeff"
[intercept]
[wccp]
address = "{BOXES[name]}"
routers = ["{ROUTER}"]
password = "{password}"
forwarding = "any"
return = "any"
assignment = "{assignment}"
here_i_am_interval_ms = 1000
""")
    return path


def start_box(work, name, **kw):
    log = open(os.path.join(work, f"{name}.log"), "a")
    p = spawn(name, name, WANOPT, "run", "--config", box_config(work, name, **kw), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"box {name} exited: see {log.name}")
        if run_in(name, "curl", "-s", "-m", "1", "http://127.0.0.1:7880/api/summary", check_rc=False).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"box {name}: status page never answered")


def router_state(state):
    try:
        with open(state) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def wait_for(what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def split(state, service, method="hash"):
    """{cache: buckets (hash) or values (mask)} of the router's accepted assignment."""
    g = router_state(state).get("services", {}).get(str(service), {})
    a = g.get("assignment") or {}
    if a.get("stale") or a.get("method") != method:
        return {}
    return a.get("buckets_per_cache" if method == "hash" else "values_per_cache_count", {})


def show(name):
    return run_in(name, WANOPT, "show", "wccp", check_rc=False).stdout


# From the router's namespace: a redirected SYN wrapped in GRE (0x883E, redirect
# header) to box a, and a GRE packet of an unknown protocol type.
GRE_SEND = r"""
import socket, struct, sys
def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
src, dst = socket.inet_aton("198.18.70.10"), socket.inet_aton("198.18.72.10")
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0, src, dst)
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
s.sendto(struct.pack("!HH", 0, 0x883E) + bytes([0x01, 61, 0, 17]) + ip + tcp, (sys.argv[1], 0))
s.sendto(struct.pack("!HH", 0, 0x1234) + ip + tcp, (sys.argv[1], 0))
"""


class Tshark:
    def __init__(self, work):
        self.lines = []
        self.proc = spawn("tshark", "r", "tshark", "-l", "-n", "-i", "br0", "-f", "udp port 2048", "-T", "fields",
                          "-E", "separator=|", "-e", "wccp.message", "-e", "_ws.malformed", "-e", "_ws.expert.severity",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=lambda: [self.lines.append(l.rstrip("\n")) for l in self.proc.stdout],
                                       daemon=True)
        self.reader.start()
        # tshark prints "Capturing on 'br0'" to stderr once it listens.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "Capturing on" in self.proc.stderr.readline():
                return
        raise RuntimeError("tshark never started capturing")


def main():
    work = tempfile.mkdtemp(prefix="wanopt-wccp-")
    try:
        up()
        cap = Tshark(work)
        state = start_router(work)
        start_box(work, "a")
        start_box(work, "b")
        a, b = BOXES["a"], BOXES["b"]

        # 1. Two boxes, one split.
        for service in (61, 62):
            got = wait_for(lambda: split(state, service) == {a: 128, b: 128} and split(state, service))
            g = router_state(state).get("services", {}).get(str(service), {})
            check(f"service {service}: both boxes in the router's view, {a} designated, buckets split 128/128",
                  got == {a: 128, b: 128} and g.get("designated") == a, g)
        text_a, text_b = show("a"), show("b")
        print(f"--- wanopt show wccp on box a\n{text_a}--- wanopt show wccp on box b\n{text_b}")
        check("box a: show wccp names itself designated and the split it sent",
              f"designated: {a} (this box)" in text_a and f"{a} 128 buckets, {b} 128 buckets" in text_a, text_a)
        check("box b: show wccp names the designated cache, its router usable",
              f"designated: {a}\n" in text_b and "made by the designated cache" in text_b and
              f"router {ROUTER}: usable" in text_b, text_b)
        api = json.loads(run_in("a", "curl", "-s", "http://127.0.0.1:7880/api/wccp").stdout)
        groups = api["boxes"][0]["service_groups"]
        check("box a: /api/wccp has both service groups, GRE or L2 negotiated, no errors",
              [g["service"] for g in groups] == [61, 62] and
              all(g["routers"][0]["forwarding"] == "l2" and g["messages"]["bad_security"] == 0 for g in groups), api)
        page = run_in("a", "curl", "-s", "http://127.0.0.1:7880/").stdout
        check("box a: the status page has the WCCP section with the split",
              "<h2>WCCP</h2>" in page and f"{a} 128 buckets, {b} 128 buckets" in page, page[-1500:])
        metrics = run_in("a", "curl", "-s", "http://127.0.0.1:7880/metrics").stdout
        check("box a: /metrics has the buckets per cache",
              f'wanopt_wccp_buckets{{box="a",service="61",cache="{b}"}} 128' in metrics,
              [l for l in metrics.splitlines() if "wccp" in l])

        # GRE: a redirected packet unwrapped and handed to the kernel, a bad one refused.
        run_in("r", PY, "-c", GRE_SEND, a)
        gre = wait_for(lambda: (lambda g: g if g and g["packets"] >= 1 and g["refused"] >= 1 else None)(
            json.loads(run_in("a", "curl", "-s", "http://127.0.0.1:7880/api/wccp").stdout)["boxes"][0]["gre"]))
        check("box a: a GRE-redirected SYN is unwrapped into wccp0, a GRE packet of another type refused",
              gre and gre["tun"] == "wccp0", gre)

        # 2. The designated box stops: the other takes every bucket.
        stop("a")
        got = wait_for(lambda: split(state, 61) == {b: 256} and split(state, 61))
        check("box a stopped: the router drops it, box b becomes designated with all 256 buckets", got == {b: 256},
              router_state(state).get("services", {}).get("61"))
        check("box b: show wccp says it is designated now",
              wait_for(lambda: f"designated: {b} (this box)" in show("b") and f"{b} 256 buckets" in show("b")), show("b"))

        # 3. It comes back.
        start_box(work, "a")
        got = wait_for(lambda: split(state, 61) == {a: 128, b: 128} and split(state, 61))
        check("box a back: the split is 128/128 again, made by box a",
              got == {a: 128, b: 128} and router_state(state)["services"]["61"]["assignment"]["from"] == a,
              router_state(state).get("services", {}).get("61"))

        # Lost I_See_You: the router frozen (SIGSTOP) for longer than 3 intervals.
        procs["router"].send_signal(signal.SIGSTOP)
        lost = wait_for(lambda: "no I_See_You for 3 s" in show("b") and show("b"))
        check("router silent: box b marks it not usable (no I_See_You for 3 s) and empties its view",
              lost and "caches: (none yet)" in lost, lost)
        procs["router"].send_signal(signal.SIGCONT)
        back = wait_for(lambda: f"router {ROUTER}: usable" in show("b") and show("b"))
        check("router answering again: box b uses it again", back, show("b"))

        # 4. The router restarts.
        stop("router")
        state = start_router(work)
        got = wait_for(lambda: split(state, 62) == {a: 128, b: 128} and split(state, 62))
        check("router restarted: both boxes register again and the split is back", got == {a: 128, b: 128},
              router_state(state))

        # 5. The wrong password.
        start_box(work, "c", password="guess")
        bad = wait_for(lambda: router_state(state).get("services", {}).get("61", {}).get("counts", {})
                       .get("errors", {}).get("bad_md5", 0) or router_state(state).get("counts", {})
                       .get("errors", {}).get("bad_md5", 0))
        listed = [c.get("ip") for c in router_state(state).get("services", {}).get("61", {}).get("caches", [])]
        check("a box with the wrong password: the router counts bad MD5 and never lists it",
              bad and BOXES["c"] not in listed, router_state(state))
        text_c = show("c")
        check("that box: show wccp says the router is not heard from", "not usable" in text_c and "heard never" in text_c,
              text_c)
        stop("c")

        # 6. Mask assignment.
        stop("a")
        stop("b")
        start_box(work, "a", assignment="mask")
        start_box(work, "b", assignment="mask")
        got = wait_for(lambda: split(state, 61, "mask") == {a: 32, b: 32} and split(state, 61, "mask"), timeout=25)
        check("mask assignment: the router takes 64 mask values split 32/32", got == {a: 32, b: 32},
              router_state(state).get("services", {}).get("61"))

        # 7. tshark.
        stop("tshark")
        cap.reader.join(5)
        messages = [l.split("|") for l in cap.lines if l]
        kinds = {m[0] for m in messages}
        malformed = [m for m in messages if len(m) > 1 and (m[1] or "error" in (m[2] if len(m) > 2 else ""))]
        check("tshark decoded Here_I_Am (10), I_See_You (11) and Redirect_Assign (12), nothing malformed",
              {"10", "11", "12"} <= kinds and not malformed and len(messages) > 20, (kinds, malformed[:5], len(messages)))
    except Exception as e:  # a broken lab is a failure, never a skip
        check("the lab ran to the end", False, repr(e))
    finally:
        if check.failed:
            for log in sorted(os.listdir(work)):
                if log.endswith(".log"):
                    with open(os.path.join(work, log)) as f:
                        print(f"--- {log} (last 30 lines)\n" + "".join(f.readlines()[-30:]))
        down()
        shutil.rmtree(work, ignore_errors=True)
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
