"""Namespace plumbing the WCCP lab tests share (wccp_cluster_test.py): namespaces
of one test's own, veths between them, processes started in them and stopped by
PID, the WCCP router and its data plane (wccp_router.py, wccp_forward.py), wanopt
boxes registering with it, and the router's state file read back.

Synchronisation is by polling with deadlines, never by sleeping a fixed time."""
import json
import os
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
PSK = 'psk_identity = "lab"\npsk = "00112233445566778899aabbccddeeff"\n'


def sh(*cmd, check_rc=True, timeout=30):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.returncode}: {r.stderr}")
    return r


def wait_for(what, timeout=20, every=0.1):
    """Polls what() until it is truthy or timeout seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def buckets(state_path, service):
    """{cache: buckets} of the router's accepted (not stale) hash assignment."""
    a = read_json(state_path).get("services", {}).get(str(service), {}).get("assignment") or {}
    return {} if a.get("stale") or a.get("method") != "hash" else a.get("buckets_per_cache", {})


class NetnsLab:
    """Namespaces PREFIX-NODE and the processes started in them (by name)."""

    def __init__(self, prefix, work, wanopt=None):
        self.prefix, self.work, self.wanopt = prefix, work, wanopt
        self.nodes, self.procs = [], {}

    def ns(self, node):
        return f"{self.prefix}-{node}"

    def run(self, node, *cmd, **kw):
        return sh("ip", "netns", "exec", self.ns(node), *cmd, **kw)

    def add(self, node, forwarding=False):
        self.nodes.append(node)  # before it exists: down() must not miss it
        sh("ip", "netns", "add", self.ns(node))
        self.run(node, "ip", "link", "set", "lo", "up")
        if forwarding:
            self.run(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            for key in ("all", "default"):
                self.run(node, "sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0")

    def veth(self, node, ifname, addrs, peer, peer_name, peer_addr=None):
        """A veth from node (ifname, with the addresses addrs) to peer (peer_name,
        with peer_addr if given), both up."""
        tmp = f"{self.prefix}{len(self.nodes)}{ifname[:4]}"[:15]
        sh("ip", "link", "add", tmp, "netns", self.ns(node), "type", "veth", "peer", "name", peer_name,
           "netns", self.ns(peer))
        self.run(node, "ip", "link", "set", tmp, "name", ifname)
        for a in ([addrs] if isinstance(addrs, str) else addrs):
            self.run(node, "ip", "addr", "add", a, "dev", ifname)
        self.run(node, "ip", "link", "set", ifname, "up")
        if peer_addr:
            self.run(peer, "ip", "addr", "add", peer_addr, "dev", peer_name)
        self.run(peer, "ip", "link", "set", peer_name, "up")

    def spawn(self, name, node, *cmd, **kw):
        self.procs[name] = subprocess.Popen(["ip", "netns", "exec", self.ns(node), *cmd], **kw)
        return self.procs[name]

    def start_ready(self, name, node, *cmd, log):
        """Starts a helper that prints READY once it listens (wccp_router, wccp_forward)."""
        p = self.spawn(name, node, *cmd, stdout=subprocess.PIPE, stderr=open(log, "a"), text=True)
        line = p.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"{name} did not start: {line!r} (see {log})")

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def down(self):
        for name in list(self.procs):
            self.stop(name)
        for node in self.nodes:
            subprocess.run(["ip", "netns", "del", self.ns(node)], capture_output=True)

    def api(self, node, path):
        r = self.run(node, "curl", "-s", "-m", "3", "http://127.0.0.1:7880" + path, check_rc=False)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {}

    def start_wanopt(self, name, config, node=None):
        """`wanopt run --config config` in node (default: name); returns once its status
        page answers."""
        node = node or name
        log = open(os.path.join(self.work, f"{name}.log"), "a")
        p = self.spawn(name, node, self.wanopt, "run", "--config", config, stdout=log, stderr=subprocess.STDOUT)
        ok = wait_for(lambda: p.poll() is not None or self.run(node, "curl", "-s", "-m", "1",
                                                               "http://127.0.0.1:7880/api/summary",
                                                               check_rc=False).returncode == 0, timeout=15)
        if not ok or p.poll() is not None:
            raise RuntimeError(f"{name} did not start: see {log.name}")

    def install_intercept(self, node):
        out = self.run(node, os.path.join(REPO, "deploy", "intercept"), "install", check_rc=False)
        if out.returncode != 0:
            raise RuntimeError(f"deploy/intercept install in {node}: {out.stderr}")


def box_config(work, name, device_id, extra=""):
    """A wanopt box's config: interception, PSK peering shared by every lab box, a DRE
    store in work, the status page on the namespace's loopback; extra appended."""
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(f"""
[box]
name = "{name}"
device_id = "{device_id}"
threads = 1
[dre]
datastore = "{work}/{name}-store"
max_size_mb = 64
[status]
listen = "127.0.0.1:7880"
closed_window_s = 3600
[peering]
{PSK}[intercept]
{extra}""")
    return path


def wccp_section(address, router, forwarding="gre", ret="l2"):
    return f"""[wccp]
address = "{address}"
routers = ["{router}"]
password = "wanopt"
forwarding = "{forwarding}"
return = "{ret}"
assignment = "hash"
here_i_am_interval_ms = 1000
"""
