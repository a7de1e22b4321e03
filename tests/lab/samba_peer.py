#!/usr/bin/python3
"""Real DCE/RPC peers for the MAPI/EPM module's tests: a Samba AD DC as the server
(endpoint mapper on TCP 135, SAMR and friends on dynamic ports) and python3-impacket
and Samba's rpcclient as clients, each in a network namespace of the lab.

Library (import it; the caller may be any python3, only the helpers need Debian's):

    import samba_peer as sp
    peer = sp.start("PFX-server", "/tmp/work/samba")   # SambaPeer; 135 answers ept_map
    try:
        towers = sp.ept_map("198.18.2.10", sp.SAMR_UUID, "1.0", ns="PFX-client")
        port = towers[0][0]                           # [(49154, '0.0.0.0')]
        sp.samr_enumerate_domains("198.18.2.10", port, ns="PFX-client")  # ['WANOPT', 'Builtin']
        sp.rpcclient_enumdomains("198.18.2.10", ns="PFX-client")         # ['WANOPT', 'Builtin']
    finally:
        peer.stop()                                   # process group gone, workdir removed

CLI (root):
    samba_peer.py selftest [--prefix ws] [--netlab PATH] [--delayline PATH]
        a plainly routed netlab (no wanopt), samba in PFX-server, impacket and
        rpcclient in PFX-client; prints 'N passed, N failed'; removes everything.
    samba_peer.py template       provision the cached template now (CI warm-up)
    samba_peer.py serve NS DIR   run the DC in NS until Ctrl-C (manual poking)

The server: `samba-tool domain provision` (realm WANOPT.TEST, domain WANOPT,
--dns-backend=NONE, host WSDC) takes 8-16 s on this 2-core machine, so it is done once
into a template cached under /var/tmp/wanopt-samba-template/<samba version>-<params
hash>/ ($WANOPT_SAMBA_TEMPLATE overrides the parent dir) and copied per run (~0.1 s).
Copying is safe: the only file that names the provision directory is etc/smb.conf,
which is not in the template and is written fresh per run; with --dns-backend=NONE
nothing in the databases names the host address either; samba never runs on the
template itself (only on copies); a template is published by an atomic rename after
a successful provision, under an exclusive flock, so a half-provisioned one is never
used. Every copy shares the domain SID, machine password and keys - fine for
throwaway tests.

The clients (impacket and rpcclient calls, the in-namespace helper) are in
samba_clients.py; every public name of it is re-exported here.

It runs as `samba -i -M single` (foreground, one process, output and log in
DIR/log/samba.stdout) with `server services = rpc` only: the endpoint mapper and
every ncacn_ip_tcp RPC server (samr, lsarpc, netlogon, drsuapi, ...) live in the rpc
service, and NTLM logons are checked in-process against sam.ldb, so smbd (s3fs), ldap, cldap, kdc, dns,
nbt, wrepl, drepl, kcc, dnsupdate, ntp_signd and winbindd are not needed. Its stdin
is a pipe we hold: samba -i exits when it closes, so a test that dies takes its DC
with it. All paths (private, lock, state, cache, pid, ncalrpc, binddns, winbindd
socket, log) are in the work dir, nothing in /var/lib/samba, /run/samba or
/var/log/samba.

Facts measured against Samba 4.17.12 (Debian 12) and impacket 0.10.0:
  - SAMR over TCP: auth levels none (anonymous bind), integrity and privacy work;
    connect (2) binds but the first call faults with access denied. LSARPC over TCP
    faults with access denied at every level (Samba allows lsa only on pipes/ncalrpc).
  - impacket's ept_map and rpcclient's both bind the endpoint mapper without auth
    (auth_length 0). rpcclient always asks 135 first, even when the binding names a
    port; 'ncacn_ip_tcp:HOST' alone binds SAMR without auth, [sign] at integrity (5),
    [seal] at privacy (6).
  - The AD DC answers with 0.0.0.0 in the IP floor; both clients ignore it.
"""
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# The clients (and the names they share with the server), re-exported: samba_peer is the API.
from samba_clients import (ADMIN_PASSWORD, ADMIN_USER, AUTH_LEVELS, DOMAIN, DRSUAPI_UUID, EPM_UUID,  # noqa: F401
                           LSARPC_UUID, NETLOGON_UUID, PY, REALM, SAFE_PATH, SAMR_UUID, SERVER_IP, PeerError,
                           _env, _helper, _helper_cmd, _in_ns, _parse, ept_lookup, ept_map, hept_map,
                           rpcclient_enumdomains, samr_enumerate_domains)

HERE = os.path.dirname(os.path.abspath(__file__))
HOST_NAME = "WSDC"  # the DC's NetBIOS name (the server's only)


# Bump when the provision command or its parameters change: old templates are ignored.
TEMPLATE_FORMAT = 1
TEMPLATE_ROOT = os.environ.get("WANOPT_SAMBA_TEMPLATE", "/var/tmp/wanopt-samba-template")


# ---------------------------------------------------------------- template

def samba_version():
    r = subprocess.run(["samba", "-V"], capture_output=True, text=True, env=_env(), check=True)
    return r.stdout.strip().replace("Version ", "")


def _provision_args(target):
    return ["samba-tool", "domain", "provision", f"--realm={REALM}", f"--domain={DOMAIN}",
            f"--adminpass={ADMIN_PASSWORD}", "--server-role=dc", "--dns-backend=NONE",
            f"--host-name={HOST_NAME}", f"--host-ip={SERVER_IP}", f"--targetdir={target}",
            # --targetdir moves private/state/cache/lock/binddns, not these:
            f"--option=pid directory={target}/run", f"--option=ncalrpc dir={target}/run/ncalrpc",
            f"--option=log file={target}/log/provision.log", "--option=interfaces=127.0.0.1",
            "--option=bind interfaces only=yes"]


def template_dir():
    """The cached template's path for this Samba version and these parameters."""
    key = json.dumps([TEMPLATE_FORMAT, REALM, DOMAIN, HOST_NAME, ADMIN_PASSWORD, SERVER_IP])
    return os.path.join(TEMPLATE_ROOT, f"{samba_version()}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")


def ensure_template(log=None):
    """Returns (template dir, seconds spent provisioning or 0.0 if it was cached)."""
    path = template_dir()
    if os.path.exists(os.path.join(path, "COMPLETE")):
        return path, 0.0
    os.makedirs(TEMPLATE_ROOT, exist_ok=True)
    with open(os.path.join(TEMPLATE_ROOT, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one provision at a time; others wait, then reuse
        if os.path.exists(os.path.join(path, "COMPLETE")):
            return path, 0.0
        shutil.rmtree(path, ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".tmp-", dir=TEMPLATE_ROOT)
        try:
            t0 = time.monotonic()
            r = subprocess.run(_provision_args(tmp), capture_output=True, text=True, env=_env(), timeout=600)
            took = time.monotonic() - t0
            if r.returncode != 0:
                raise PeerError(f"samba-tool domain provision failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
            # smb.conf names this directory: keep it for reference only, start() writes its own.
            os.rename(os.path.join(tmp, "etc", "smb.conf"), os.path.join(tmp, "smb.conf.provisioned"))
            shutil.rmtree(os.path.join(tmp, "run"), ignore_errors=True)
            with open(os.path.join(tmp, "COMPLETE"), "w") as f:
                f.write(f"{samba_version()} provisioned in {took:.1f} s\n")
            os.rename(tmp, path)  # atomic publish
            if log:
                log(f"provisioned template {path} in {took:.1f} s")
            return path, took
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- server

SMB_CONF = """\
# Written by tests/lab/samba_peer.py: every path inside {d}.
[global]
	netbios name = {host}
	workgroup = {domain}
	realm = {realm}
	server role = active directory domain controller
	# the endpoint mapper and all ncacn_ip_tcp RPC servers; NTLM is checked in-process
	server services = rpc
	interfaces = {ip}
	bind interfaces only = yes
	disable netbios = yes
	private dir = {d}/private
	binddns dir = {d}/bind-dns
	lock directory = {d}/lock
	state directory = {d}/state
	cache directory = {d}/cache
	pid directory = {d}/run
	ncalrpc dir = {d}/run/ncalrpc
	winbindd socket directory = {d}/run/winbindd
	ntp signd socket directory = {d}/run/ntp_signd
	log file = {d}/log/samba.log
	log level = {log_level}
	max log size = 0
	panic action =
	load printers = no
	printcap name = /dev/null
	disable spoolss = yes
"""


def _group_members(pgid):
    """PIDs (not zombies) whose process group is pgid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] != "Z" and int(rest[2]) == pgid:
            out.append(int(name))
    return out


class SambaPeer:
    """A running `samba -i` in a namespace. Attributes: ns, workdir, ip, pid (also its
    process group id), log (samba's output: -i logs to stdout), template, provision_s (0.0 if cached),
    copy_s, ready_s (from exec to the first ept_map answer), start_s (all of start)."""

    def __init__(self, ns, workdir, ip, also=()):
        self.ns, self.workdir, self.ip, self.also = ns, os.path.abspath(workdir), ip, tuple(also)
        self.proc = None
        self.pid = None
        self.log = os.path.join(self.workdir, "log", "samba.stdout")  # -i logs to stdout
        self.template, self.provision_s, self.copy_s, self.ready_s, self.start_s = None, 0.0, 0.0, 0.0, 0.0

    def _start(self, timeout, log_level, log):
        t0 = time.monotonic()
        self.template, self.provision_s = ensure_template(log)
        t1 = time.monotonic()
        if os.path.exists(self.workdir) and os.listdir(self.workdir):
            raise PeerError(f"{self.workdir} exists and is not empty")
        os.makedirs(os.path.dirname(self.workdir) or ".", exist_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.copytree(self.template, self.workdir, symlinks=True)  # keeps modes (and xattrs where it can)
        for sub in ("etc", "lock", "cache", "run", "log"):
            os.makedirs(os.path.join(self.workdir, sub), exist_ok=True)
        conf = os.path.join(self.workdir, "etc", "smb.conf")
        with open(conf, "w") as f:
            f.write(SMB_CONF.format(d=self.workdir, host=HOST_NAME, domain=DOMAIN, realm=REALM,
                                    ip=" ".join((self.ip,) + self.also), log_level=log_level))
        self.copy_s = time.monotonic() - t1
        t2 = time.monotonic()
        out = open(self.log, "w")
        # `ip netns exec` execs samba: same PID, a session and process group of its own.
        self.proc = subprocess.Popen(_in_ns(self.ns, ["samba", "-i", "-M", "single", "-s", conf]),
                                     stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=_env())
        out.close()
        self.pid = self.proc.pid
        # Ready when the endpoint mapper maps SAMR to a TCP port (one helper, polling inside).
        waiter = subprocess.Popen(_helper_cmd(self.ns, {"op": "wait_epm", "server": self.ip, "timeout": timeout}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        deadline = time.monotonic() + timeout + 5
        while waiter.poll() is None:
            if self.proc.poll() is not None:
                waiter.kill()
                waiter.wait()
                raise PeerError(f"samba exited with {self.proc.returncode} while starting:\n{self.tail()}")
            if time.monotonic() > deadline:
                waiter.kill()
                waiter.wait()
                break
            time.sleep(0.05)
        res = _parse(waiter.communicate()[0], waiter.returncode, "wait_epm")
        if not res.get("ok"):
            raise PeerError(f"{self.ip}:135 never answered an ept_map for SAMR within {timeout} s "
                            f"({res.get('error')}):\n{self.tail()}")
        self.ready_s = time.monotonic() - t2
        self.start_s = time.monotonic() - t0
        return self

    def tail(self, n=30):
        text = ""
        for path in (self.log, os.path.join(self.workdir, "log", "samba.log")):
            try:
                with open(path, errors="replace") as f:
                    text += f"--- {path}\n" + "".join(f.readlines()[-n:])
            except OSError:
                pass
        return text

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, keep_workdir=False):
        """Ends samba and everything in its process group (stdin EOF, SIGTERM, then
        SIGKILL after 10 s), reaps it, removes the work dir. Safe to call twice."""
        if self.proc is not None:
            try:
                self.proc.stdin.close()  # samba -i: "EOF on stdin - terminating"
            except OSError:
                pass
            for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    self.proc.poll()
                    if self.proc.returncode is not None and not _group_members(self.pid):
                        break
                    time.sleep(0.05)
                else:
                    continue
                break
            self.proc.wait()
            left = _group_members(self.pid)
            self.proc = None
            if left:
                raise PeerError(f"samba processes {left} survived SIGKILL")
        if not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(ns, workdir, ip=SERVER_IP, timeout=30, log_level=1, log=None, also=()):
    """Provisions (or copies the cached template) into workdir (must not exist or be
    empty), starts `samba -i` in network namespace ns (None: this one) listening on ip
    (and on the addresses in `also`, e.g. an IPv6 one), and returns a SambaPeer once
    ip:135 answers an ept_map for SAMR. On failure nothing is left running (the work
    dir stays, for its logs)."""
    peer = SambaPeer(ns, workdir, ip, also)
    try:
        return peer._start(timeout, log_level, log)
    except BaseException:
        peer.stop(keep_workdir=True)
        raise


def stop(peer, keep_workdir=False):
    peer.stop(keep_workdir)


# ---------------------------------------------------------------- self-test

def selftest(prefix, netlab, delayline):
    if os.geteuid() != 0:
        print("SKIP: the namespace lab needs root")
        return 77
    passed = failed = 0

    def check(name, cond, detail=""):
        nonlocal passed, failed
        if cond:
            passed += 1
            print(f"ok: {name}")
        else:
            failed += 1
            print(f"FAIL: {name} {detail}")
        return cond

    def timed(fn, *a, **kw):
        t0 = time.monotonic()
        try:
            return fn(*a, **kw), time.monotonic() - t0
        except PeerError as e:
            return e, time.monotonic() - t0

    env = dict(os.environ)
    if delayline:
        env["WANOPT_DELAYLINE"] = delayline
    client, server = f"{prefix}-client", f"{prefix}-server"
    work = tempfile.mkdtemp(prefix="wanopt-samba-selftest-")
    peer = None
    try:
        t0 = time.monotonic()
        r = subprocess.run([netlab, "--prefix", prefix, "up", "--delay-ms", "5"], env=env, capture_output=True,
                           text=True, timeout=60)
        if not check("netlab up (plainly routed, 5 ms one way, no wanopt)", r.returncode == 0, r.stderr[-500:]):
            return 1
        print(f"  netlab up: {time.monotonic() - t0:.2f} s")
        peer = start(server, os.path.join(work, "dc"), log=lambda m: print("  " + m))
        print(f"  samba: template {'provisioned in %.1f s' % peer.provision_s if peer.provision_s else 'cached'}, "
              f"copy {peer.copy_s:.2f} s, exec to first ept_map answer {peer.ready_s:.2f} s, start() {peer.start_s:.2f} s")
        check(f"samba -i running in {server} (pid {peer.pid}), 135 answers ept_map", peer.running())

        towers, t = timed(ept_map, SERVER_IP, SAMR_UUID, "1.0", ns=client)
        print(f"  ept_map(SAMR) from {client}: {towers} ({t:.2f} s)")
        ok = check("ept_map for SAMR returns one ncacn_ip_tcp tower with a dynamic port",
                   isinstance(towers, list) and len(towers) == 1 and 49152 <= towers[0][0] <= 65535, towers)
        port = towers[0][0] if ok else 0
        check("the AD DC's IP floor is 0.0.0.0", ok and towers[0][1] == "0.0.0.0", towers)

        binding, t = timed(hept_map, SERVER_IP, SAMR_UUID, "1.0", ns=client)
        print(f"  impacket hept_map(SAMR): {binding} ({t:.2f} s)")
        check("impacket's hept_map resolves SAMR to the asked host and the mapped port",
              binding == f"ncacn_ip_tcp:{SERVER_IP}[{port}]", binding)

        none, t = timed(ept_map, SERVER_IP, "a4f1db00-ca47-1067-b31f-00dd010662da", "0.81", ns=client)
        print(f"  ept_map(EMSMDB, not served by Samba): {none} ({t:.2f} s)")
        check("ept_map for an interface Samba does not serve returns no tower", none == [], none)

        for level in ("integrity", "privacy", "none"):
            names, t = timed(samr_enumerate_domains, SERVER_IP, port, ns=client, auth_level=level)
            print(f"  samr_enumerate_domains({SERVER_IP}, {port}, auth_level={level!r}): {names} ({t:.2f} s)")
            check(f"impacket SAMR over ncacn_ip_tcp at {SERVER_IP}[{port}], auth {level}: WANOPT and Builtin",
                  isinstance(names, list) and sorted(n.upper() for n in names) == ["BUILTIN", DOMAIN], names)
        err, t = timed(samr_enumerate_domains, SERVER_IP, port, ns=client, auth_level="connect")
        print(f"  samr_enumerate_domains(auth_level='connect'): {err} ({t:.2f} s)")
        check("Samba refuses SAMR at auth level connect (access denied)",
              isinstance(err, PeerError) and "access_denied" in str(err), err)
        err, t = timed(samr_enumerate_domains, SERVER_IP, port, ns=client, password="wrong-password")
        check("a wrong password is refused", isinstance(err, PeerError), err)

        for opts in ("sign", "seal", ""):
            names, t = timed(rpcclient_enumdomains, SERVER_IP, ns=client, options=opts)
            print(f"  rpcclient 'ncacn_ip_tcp:{SERVER_IP}[{opts}]' -c enumdomains: {names} ({t:.2f} s)")
            check(f"rpcclient enumdomains over ncacn_ip_tcp [{opts}] (it asks 135 itself)",
                  isinstance(names, list) and sorted(n.upper() for n in names) == ["BUILTIN", DOMAIN], names)

        eps, t = timed(ept_lookup, SERVER_IP, ns=client)
        if isinstance(eps, list):
            tcp = sorted({(e["port"], e["annotation"], e["uuid"], e["version"]) for e in eps
                          if e["protocol"] == "ncacn_ip_tcp"})
            print(f"  ept_lookup: {len(eps)} entries ({t:.2f} s); ncacn_ip_tcp:")
            for p, ann, u, v in tcp:
                print(f"    {p:5d}  {ann:10s} {u} v{v}")
            by = {e["annotation"]: e["port"] for e in eps if e["protocol"] == "ncacn_ip_tcp"}
            check("ept_lookup lists samr, lsarpc, netlogon, drsuapi and epmapper on TCP; samr at the mapped port",
                  by.get("samr") == port and by.get("epmapper") == 135 and
                  all(k in by for k in ("lsarpc", "netlogon", "drsuapi")), by)
            print(f"  samr and lsarpc share a port: {by.get('samr') == by.get('lsarpc')} "
                  f"(samr {by.get('samr')}, lsarpc {by.get('lsarpc')}, netlogon {by.get('netlogon')})")
        else:
            check("ept_lookup", False, eps)

        pid = peer.pid
        t0 = time.monotonic()
        peer.stop()
        print(f"  stop(): {time.monotonic() - t0:.2f} s")
        check("stop(): no process of samba's group is left, the work dir is gone",
              not _group_members(pid) and not os.path.exists(peer.workdir))
        peer = None
        r = subprocess.run(_in_ns(server, ["ss", "-Htln", "sport = :135"]), capture_output=True, text=True)
        check("nothing listens on 135 any more", r.returncode == 0 and not r.stdout.strip(), r.stdout)
    except Exception as e:  # a broken lab is a failure, never a skip
        check("self-test ran to the end", False, repr(e))
    finally:
        if peer is not None:
            try:
                peer.stop()
            except PeerError as e:
                check("samba stopped", False, e)
        subprocess.run([netlab, "--prefix", prefix, "down"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv):
    import argparse
    if len(argv) >= 2 and argv[0] == "_client":
        _helper(argv[1])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("selftest", help="netlab + samba + impacket + rpcclient; 'N passed, N failed'")
    st.add_argument("--prefix", default="ws")
    st.add_argument("--netlab", default=os.path.join(HERE, "netlab"))
    st.add_argument("--delayline", default=None, help="wanopt_delayline (default: netlab's search)")
    sub.add_parser("template", help="provision the cached template if it is missing; print its path")
    sv = sub.add_parser("serve", help="run the DC in a namespace until Ctrl-C")
    sv.add_argument("ns")
    sv.add_argument("workdir")
    sv.add_argument("--ip", default=SERVER_IP)
    a = ap.parse_args(argv)
    if a.cmd == "selftest":
        return selftest(a.prefix, a.netlab, a.delayline)
    if a.cmd == "template":
        path, took = ensure_template()
        print(f"{path} ({'provisioned in %.1f s' % took if took else 'cached'})")
        return 0
    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)  # `kill PID` stops it cleanly, as Ctrl-C does
    peer = start(a.ns, a.workdir, ip=a.ip)
    print(f"samba pid {peer.pid} ready in {peer.start_s:.2f} s; Ctrl-C stops it", flush=True)
    try:
        while peer.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
