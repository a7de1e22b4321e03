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

HERE = os.path.dirname(os.path.abspath(__file__))
SELF = os.path.abspath(__file__)
PY = "/usr/bin/python3"  # Debian's: impacket and samba import there, not in a pyenv build
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

SERVER_IP = "198.18.2.10"
REALM = "WANOPT.TEST"
DOMAIN = "WANOPT"
HOST_NAME = "WSDC"
ADMIN_USER = "Administrator"
ADMIN_PASSWORD = "Wanopt-Adm1n!"

EPM_UUID = "e1af8308-5d1f-11c9-91a4-08002b14a0fa"     # v3.0, TCP 135
SAMR_UUID = "12345778-1234-abcd-ef00-0123456789ac"    # v1.0
LSARPC_UUID = "12345778-1234-abcd-ef00-0123456789ab"  # v0.0
NETLOGON_UUID = "12345678-1234-abcd-ef00-01234567cffb"  # v1.0
DRSUAPI_UUID = "e3514235-4b06-11d1-ab04-00c04fc2dcd2"  # v4.0

# Bump when the provision command or its parameters change: old templates are ignored.
TEMPLATE_FORMAT = 1
TEMPLATE_ROOT = os.environ.get("WANOPT_SAMBA_TEMPLATE", "/var/tmp/wanopt-samba-template")

AUTH_LEVELS = {"none": 1, "connect": 2, "call": 3, "packet": 4, "integrity": 5, "privacy": 6}


class PeerError(RuntimeError):
    """A peer failed to start, or a client call failed (the message says how)."""


def _env():
    return dict(os.environ, PATH=SAFE_PATH, PYTHONDONTWRITEBYTECODE="1")


def _in_ns(ns, cmd):
    return (["ip", "netns", "exec", ns] if ns else []) + list(cmd)


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

    def __init__(self, ns, workdir, ip):
        self.ns, self.workdir, self.ip = ns, os.path.abspath(workdir), ip
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
            f.write(SMB_CONF.format(d=self.workdir, host=HOST_NAME, domain=DOMAIN, realm=REALM, ip=self.ip,
                                    log_level=log_level))
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
        waiter = subprocess.Popen(_in_ns(self.ns, [PY, SELF, "_client", json.dumps(
            {"op": "wait_epm", "server": self.ip, "timeout": timeout})]),
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


def start(ns, workdir, ip=SERVER_IP, timeout=30, log_level=1, log=None):
    """Provisions (or copies the cached template) into workdir (must not exist or be
    empty), starts `samba -i` in network namespace ns (None: this one) listening on ip,
    and returns a SambaPeer once ip:135 answers an ept_map for SAMR. On failure nothing
    is left running (the work dir stays, for its logs)."""
    peer = SambaPeer(ns, workdir, ip)
    try:
        return peer._start(timeout, log_level, log)
    except BaseException:
        peer.stop(keep_workdir=True)
        raise


def stop(peer, keep_workdir=False):
    peer.stop(keep_workdir)


# ---------------------------------------------------------------- clients

def _parse(stdout, rc, op):
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{op}: helper exited {rc} without an answer: {stdout[-500:]}"}


def _client(ns, req, timeout):
    """Runs one client operation with Debian's python3 (and impacket) in namespace ns."""
    cmd = _in_ns(ns, [PY, SELF, "_client", json.dumps(req)])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    except subprocess.TimeoutExpired:
        raise PeerError(f"{req['op']}: no answer within {timeout} s")
    res = _parse(r.stdout, r.returncode, req["op"])
    if not res.get("ok"):
        raise PeerError(f"{req['op']}: {res.get('error')} {r.stderr[-1000:]}".rstrip())
    return res["result"]


def ept_map(server, uuid, version="1.0", ns=None, port=135, max_towers=4, timeout=30, auth_level=None):
    """Asks server:port's endpoint mapper (ept_map, opnum 3, no auth, as impacket and
    rpcclient do) for interface uuid/version over ncacn_ip_tcp. Returns the towers as
    the client received them, as [(tcp_port, ip_address)] from floors 4 and 5 (the AD
    DC says '0.0.0.0'); [] if the interface is not registered. auth_level
    ('integrity', 'privacy'): bind the endpoint mapper with NTLM at that level, as
    the administrator."""
    return [tuple(t) for t in _client(ns, {"op": "ept_map", "server": server, "uuid": uuid, "version": version,
                                           "port": port, "max_towers": max_towers, "auth_level": auth_level},
                                      timeout)]


def hept_map(server, uuid, version="1.0", ns=None, timeout=30):
    """impacket's own epm.hept_map, the code path real impacket tools use: returns the
    string binding it would connect to, e.g. 'ncacn_ip_tcp:198.18.2.10[49154]' (it
    keeps the host it asked and takes only the port from the answer)."""
    return _client(ns, {"op": "hept_map", "server": server, "uuid": uuid, "version": version}, timeout)


def ept_lookup(server, ns=None, port=135, timeout=30):
    """Every endpoint registered at server:port (ept_lookup, opnum 2, until the end of
    the list). Returns [{'uuid', 'version', 'annotation', 'binding', 'protocol',
    'port', 'address'}]; 'port' and 'address' only for ncacn_ip_tcp / ncacn_http."""
    return _client(ns, {"op": "ept_lookup", "server": server, "port": port}, timeout)


def samr_enumerate_domains(server, port, ns=None, auth_level="integrity", user=ADMIN_USER,
                           password=ADMIN_PASSWORD, domain=DOMAIN, timeout=30):
    """impacket: binds SAMR v1.0 over ncacn_ip_tcp directly at server[port] with NTLM
    at auth_level ('none' = unauthenticated bind, 'connect', 'integrity', 'privacy'),
    then SamrConnect + SamrEnumerateDomainsInSamServer. Returns the domain names, e.g.
    ['WANOPT', 'Builtin'] (Samba 4.17 spells it 'BUILTIN'). Raises PeerError on a bind
    nak or a fault (e.g. 'rpc_s_access_denied' at 'connect')."""
    return _client(ns, {"op": "samr", "server": server, "port": port, "auth_level": auth_level, "user": user,
                        "password": password, "domain": domain}, timeout)


def rpcclient_enumdomains(server, ns=None, options="sign", user=ADMIN_USER, password=ADMIN_PASSWORD,
                          domain=DOMAIN, timeout=60):
    """Samba's rpcclient -c enumdomains over 'ncacn_ip_tcp:SERVER[OPTIONS]' with NTLM
    (Kerberos off). It asks SERVER:135 for SAMR's port itself, then binds there:
    options 'sign' = integrity, 'seal' = privacy, '' = no auth at all (even with -U).
    Returns the domain names. A client smb.conf in a temporary dir keeps it out of
    /etc/samba and /var/cache/samba."""
    with tempfile.TemporaryDirectory(prefix="wanopt-rpcclient-") as d:
        conf = os.path.join(d, "smb.conf")
        with open(conf, "w") as f:
            f.write(f"[global]\n\tworkgroup = {domain}\n\trealm = {REALM}\n\tdisable netbios = yes\n")
            for k in ("lock directory", "state directory", "cache directory", "private dir", "pid directory"):
                f.write(f"\t{k} = {d}\n")
            f.write(f"\tncalrpc dir = {d}/ncalrpc\n\tlog file = {d}/log\n")
        binding = f"ncacn_ip_tcp:{server}[{options}]" if options else f"ncacn_ip_tcp:{server}"
        cmd = _in_ns(ns, ["rpcclient", "-s", conf, "--use-kerberos=off", "-U", f"{domain}/{user}%{password}",
                          "-c", "enumdomains", binding])
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PeerError(f"rpcclient: no answer within {timeout} s")
    names = [l.split("name:[", 1)[1].split("]", 1)[0] for l in r.stdout.splitlines() if l.startswith("name:[")]
    if r.returncode != 0 or not names:
        raise PeerError(f"rpcclient {binding} exited {r.returncode}: {(r.stdout + r.stderr).strip()[-1000:]}")
    return names


# ---------------------------------------------------------------- in-namespace helper (Debian python3)

def _walk_tower(octets):
    """Floors of a tower octet string: [(lhs bytes, rhs bytes)], little-endian lengths."""
    import struct
    n = struct.unpack_from("<H", octets, 0)[0]
    off, floors = 2, []
    for _ in range(n):
        ll = struct.unpack_from("<H", octets, off)[0]
        lhs = octets[off + 2:off + 2 + ll]
        off += 2 + ll
        rl = struct.unpack_from("<H", octets, off)[0]
        rhs = octets[off + 2:off + 2 + rl]
        off += 2 + rl
        floors.append((bytes(lhs), bytes(rhs)))
    return floors


def _tower_info(octets):
    import socket
    import struct
    from impacket import uuid as iuuid
    floors = _walk_tower(octets)
    info = {"protocol": None, "port": None, "address": None, "floors": len(floors)}
    if floors and floors[0][0][:1] == b"\x0d" and len(floors[0][0]) >= 19:
        info["uuid"] = iuuid.bin_to_string(floors[0][0][1:17]).lower()
        info["version"] = "%d.%d" % (struct.unpack_from("<H", floors[0][0], 17)[0],
                                     struct.unpack_from("<H", floors[0][1], 0)[0] if len(floors[0][1]) >= 2 else 0)
    for lhs, rhs in floors[3:]:
        kind = lhs[:1]
        if kind in (b"\x07", b"\x1f") and len(rhs) == 2:  # TCP, HTTP: port, big-endian
            info["protocol"] = "ncacn_ip_tcp" if kind == b"\x07" else "ncacn_http"
            info["port"] = struct.unpack("!H", rhs)[0]
        elif kind == b"\x09" and len(rhs) == 4:
            info["address"] = socket.inet_ntoa(rhs)
        elif kind == b"\x0f":
            info["protocol"] = "ncacn_np"
        elif kind == b"\x10":
            info["protocol"] = "ncalrpc"
    return info


def _epm_dce(server, port, auth_level=None):
    from impacket.dcerpc.v5 import epm, transport
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{server}[{port}]")
    t.set_connect_timeout(5)
    if auth_level:
        t.set_credentials(ADMIN_USER, ADMIN_PASSWORD, DOMAIN)
    dce = t.get_dce_rpc()
    if auth_level:
        dce.set_auth_level(AUTH_LEVELS[auth_level])
    dce.connect()
    dce.bind(epm.MSRPC_UUID_PORTMAP)
    return dce


def _op_ept_map(req):
    import socket
    import struct
    from impacket.dcerpc.v5 import epm
    from impacket.dcerpc.v5.rpcrt import DCERPCException
    from impacket.uuid import uuidtup_to_bin
    ifid = uuidtup_to_bin((req["uuid"], req["version"]))
    ndr = uuidtup_to_bin(("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0"))
    interface, rep = epm.EPMRPCInterface(), epm.EPMRPCDataRepresentation()
    interface["InterfaceUUID"], interface["MajorVersion"], interface["MinorVersion"] = \
        ifid[:16], struct.unpack("<H", ifid[16:18])[0], struct.unpack("<H", ifid[18:20])[0]
    rep["DataRepUuid"], rep["MajorVersion"], rep["MinorVersion"] = ndr[:16], 2, 0
    prot = epm.EPMProtocolIdentifier()
    prot["ProtIdentifier"] = epm.FLOOR_RPCV5_IDENTIFIER
    port_floor, host_floor = epm.EPMPortAddr(), epm.EPMHostAddr()
    port_floor["IpPort"] = 0
    host_floor["Ip4addr"] = socket.inet_aton("0.0.0.0")
    tower = epm.EPMTower()
    tower["NumberOfFloors"] = 5
    tower["Floors"] = interface.getData() + rep.getData() + prot.getData() + port_floor.getData() + host_floor.getData()
    request = epm.ept_map()
    request["max_towers"] = req["max_towers"]
    request["map_tower"]["tower_length"] = len(tower)
    request["map_tower"]["tower_octet_string"] = tower.getData()
    request.fields["obj"].fields["ReferentID"] = 1  # as impacket's hept_map (Windows wants these)
    request.fields["map_tower"].fields["ReferentID"] = 2
    dce = _epm_dce(req["server"], req["port"], req.get("auth_level"))
    try:
        resp = dce.request(request)
    except DCERPCException as e:
        if getattr(e, "error_code", None) == 0x16C9A0D6:  # EPT_S_NOT_REGISTERED
            return []
        raise
    finally:
        dce.disconnect()
    out = []
    for i in range(resp["num_towers"]):
        info = _tower_info(b"".join(resp["ITowers"][i]["Data"]["tower_octet_string"]))
        if info["protocol"] == "ncacn_ip_tcp":
            out.append((info["port"], info["address"]))
    return out


def _op_hept_map(req):
    from impacket.dcerpc.v5 import epm
    from impacket.uuid import uuidtup_to_bin
    return epm.hept_map(req["server"], uuidtup_to_bin((req["uuid"], req["version"])), protocol="ncacn_ip_tcp")


def _op_ept_lookup(req):
    from impacket.dcerpc.v5 import epm
    from impacket.dcerpc.v5.rpcrt import DCERPCException
    dce = _epm_dce(req["server"], req["port"])
    out, handle = [], epm.ept_lookup_handle_t()
    try:
        for _ in range(100):
            r = epm.ept_lookup()
            r["inquiry_type"], r["object"], r["Ifid"] = epm.RPC_C_EP_ALL_ELTS, epm.NULL, epm.NULL
            r["vers_option"], r["entry_handle"], r["max_ents"] = epm.RPC_C_VERS_ALL, handle, 500
            try:
                resp = dce.request(r)
            except DCERPCException as e:  # Samba ends the list with EPT_S_NOT_REGISTERED
                if getattr(e, "error_code", None) != 0x16C9A0D6:
                    raise
                resp = epm.ept_lookupResponse(e.get_packet())
            for i in range(resp["num_ents"]):
                en = resp["entries"][i]
                info = _tower_info(b"".join(en["tower"]["tower_octet_string"]))
                info["annotation"] = b"".join(en["annotation"]).rstrip(b"\0").decode(errors="replace")
                info["binding"] = epm.PrintStringBinding(epm.EPMTower(b"".join(en["tower"]["tower_octet_string"]))["Floors"])
                out.append(info)
            handle = resp["entry_handle"]
            if handle.isNull() or resp["num_ents"] == 0:
                break
    finally:
        dce.disconnect()
    return out


def _op_samr(req):
    from impacket.dcerpc.v5 import samr, transport
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{req['server']}[{req['port']}]")
    t.set_connect_timeout(5)
    t.set_credentials(req["user"], req["password"], req["domain"])
    dce = t.get_dce_rpc()
    dce.set_auth_level(AUTH_LEVELS[req["auth_level"]])
    dce.connect()
    try:
        dce.bind(samr.MSRPC_UUID_SAMR)
        handle = samr.hSamrConnect(dce)["ServerHandle"]
        resp = samr.hSamrEnumerateDomainsInSamServer(dce, handle)
        names = [e["Name"] for e in resp["Buffer"]["Buffer"]]
        samr.hSamrCloseHandle(dce, handle)
        return names
    finally:
        dce.disconnect()


def _op_wait_epm(req):
    deadline = time.monotonic() + req["timeout"]
    last = None
    while time.monotonic() < deadline:
        try:
            towers = _op_ept_map({"server": req["server"], "port": 135, "uuid": SAMR_UUID, "version": "1.0",
                                  "max_towers": 1})
            if towers:
                return towers
            last = "SAMR not registered yet"
        except Exception as e:  # refused while samba starts
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.05)
    raise TimeoutError(last)


def _helper(arg):
    req = json.loads(arg)
    ops = {"ept_map": _op_ept_map, "hept_map": _op_hept_map, "ept_lookup": _op_ept_lookup, "samr": _op_samr,
           "wait_epm": _op_wait_epm}
    try:
        print(json.dumps({"ok": True, "result": ops[req["op"]](req)}))
    except Exception as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
    sys.stdout.flush()


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
