#!/usr/bin/python3
"""A real SMB2/3 file server and real clients for the smb2 tests, in the namespace lab:
Samba's smbd (standalone, a throwaway directory) in one namespace, and smbget,
python3-impacket and smbclient in another.

Library (any python3 may import it; the impacket client runs under /usr/bin/python3):

    import smbd_peer as sp
    server = sp.start("PFX-server", "/tmp/work/smbd", signing="disabled", encrypt="off")
    try:
        server.write("f.bin", data)
        r = sp.smbget("PFX-client", sp.SERVER_IP, "f.bin", "/tmp/work/out.bin")
        # r.ok, r.seconds, r.output; the file is at /tmp/work/out.bin
    finally:
        server.stop()            # smbd's process group gone, the directory removed

Server settings (smb.conf): `signing` is `server signing` (disabled, auto, mandatory),
`encrypt` is `smb encrypt` (off, desired, required). The share is `share`, served
from DIR/share; the user is root with password PASSWORD (smbpasswd in DIR's own
passdb, nothing in /var/lib/samba).

Clients, as peers.md measured them: smbget reads serially in 64000-byte READs,
impacket's getFile serially in 1 MiB READs (SMB 3.0), smbclient pipelines
server-max-read READs.
"""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from samba_peer import _group_members  # noqa: E402  (one copy: the process-group walk)

SELF = os.path.abspath(__file__)
PY = "/usr/bin/python3"  # Debian's: impacket imports there, not in a pyenv build
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SERVER_IP = "198.18.2.10"
SHARE = "share"
USER, PASSWORD = "root", "wanopt-smb"

SMB_CONF = """[global]
server role = standalone server
interfaces = {ip}
bind interfaces only = yes
smb ports = {port}
disable netbios = yes
map to guest = Bad User
load printers = no
disable spoolss = yes
printcap name = /dev/null
passdb backend = tdbsam:{d}/passdb.tdb
lock directory = {d}/lock
state directory = {d}/state
cache directory = {d}/cache
pid directory = {d}/pid
private dir = {d}/private
ncalrpc dir = {d}/ncalrpc
log file = {d}/log/smbd.log
log level = {log_level}
server signing = {signing}
smb encrypt = {encrypt}
{extra}
[{share}]
path = {d}/share
read only = no
guest ok = yes
"""


class PeerError(RuntimeError):
    """smbd failed to start or to stop (the message says how, with its log)."""


def _in_ns(ns, cmd):
    return (["ip", "netns", "exec", ns] if ns else []) + list(cmd)


def _env():
    return dict(os.environ, PATH=SAFE_PATH, PYTHONDONTWRITEBYTECODE="1")


class SmbdPeer:
    """A running `smbd -F` in a namespace; smbd makes itself a session and process
    group leader, so its PID is the group every child of it is in."""

    def __init__(self, ns, workdir, ip, port, ip6=None):
        self.ns, self.workdir, self.ip, self.port, self.ip6 = ns, os.path.abspath(workdir), ip, port, ip6
        self.proc = None
        self.share_dir = os.path.join(self.workdir, "share")
        self.log = os.path.join(self.workdir, "log", "smbd.log")

    def _start(self, signing, encrypt, extra, log_level, timeout, extra_ports=()):
        if os.path.exists(self.workdir) and os.listdir(self.workdir):
            raise PeerError(f"{self.workdir} exists and is not empty")
        for sub in ("share", "lock", "state", "cache", "pid", "private", "ncalrpc", "log"):
            os.makedirs(os.path.join(self.workdir, sub), exist_ok=True)
        self.conf = os.path.join(self.workdir, "smb.conf")
        with open(self.conf, "w") as f:
            ports = " ".join(str(p) for p in (self.port, *extra_ports))
            interfaces = self.ip + (f" {self.ip6}" if self.ip6 else "")
            f.write(SMB_CONF.format(d=self.workdir, ip=interfaces, port=ports, signing=signing, encrypt=encrypt,
                                    extra=extra, log_level=log_level, share=SHARE))
        r = subprocess.run(["smbpasswd", "-c", self.conf, "-s", "-a", USER], input=f"{PASSWORD}\n{PASSWORD}\n",
                           capture_output=True, text=True, env=_env(), timeout=30)
        if r.returncode != 0:
            raise PeerError(f"smbpasswd: {r.stderr.strip()}")
        out = open(os.path.join(self.workdir, "log", "smbd.stdout"), "w")
        # Not in a new session: smbd -F calls setsid itself, which fails in a session leader.
        self.proc = subprocess.Popen(_in_ns(self.ns, ["smbd", "-F", "-s", self.conf]), stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, env=_env())
        out.close()
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.proc.poll() is not None:
                raise PeerError(f"smbd exited with {self.proc.returncode} while starting:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise PeerError(f"smbd did not listen on {self.ip}:{self.port} within {timeout} s:\n{self.tail()}")
            time.sleep(0.05)  # polling a condition with a deadline
        return self

    def _listening(self):
        r = subprocess.run(_in_ns(self.ns, ["ss", "-Htln", f"sport = :{self.port}"]), capture_output=True, text=True)
        return r.returncode == 0 and f"{self.ip}:{self.port}" in r.stdout and (
            not self.ip6 or f"[{self.ip6}]:{self.port}" in r.stdout)

    def write(self, name, data):
        """Puts `data` in the share as `name` (replacing it); returns its SHA-256."""
        path = os.path.join(self.share_dir, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest()

    def tail(self, n=30):
        text = ""
        for path in (os.path.join(self.workdir, "log", "smbd.stdout"), self.log):
            try:
                with open(path, errors="replace") as f:
                    text += f"--- {path}\n" + "".join(f.readlines()[-n:])
            except OSError:
                pass
        return text

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, keep_workdir=False):
        """Ends smbd and its children (SIGTERM, then SIGKILL after 10 s), reaps it,
        removes the work dir. Safe to call twice."""
        if self.proc is not None:
            pgid = self.proc.pid
            for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    if self.proc.poll() is not None and not _group_members(pgid):
                        break
                    time.sleep(0.05)  # polling a condition with a deadline
                else:
                    continue
                break
            self.proc.wait()
            self.proc = None
            left = _group_members(pgid)
            if left:
                raise PeerError(f"smbd processes {left} survived SIGKILL")
        if not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start(ns, workdir, ip=SERVER_IP, port=445, signing="disabled", encrypt="off", extra="", log_level=1,
          timeout=30, extra_ports=(), ip6=None):
    """Starts smbd in namespace `ns` serving DIR/share at ip:port (and `extra_ports`,
    e.g. (139,) for the NetBIOS session service; and at [ip6]:port too if given);
    returns a SmbdPeer once it listens on `port`. On failure nothing is left running
    (the work dir stays, for its logs)."""
    peer = SmbdPeer(ns, workdir, ip, port, ip6)
    try:
        return peer._start(signing, encrypt, extra, log_level, timeout, extra_ports)
    except BaseException:
        peer.stop(keep_workdir=True)
        raise


# ---------------------------------------------------------------- clients

@dataclass
class Fetch:
    ok: bool          # the client exited 0 and the output file exists
    seconds: float    # wall time of the whole client run (set-up included)
    output: str       # what the client printed (stdout and stderr)


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _run(ns, cmd, out_path, timeout):
    if os.path.exists(out_path):
        os.unlink(out_path)
    t0 = time.monotonic()
    try:
        r = subprocess.run(_in_ns(ns, cmd), capture_output=True, text=True, env=_env(), timeout=timeout)
        rc, text = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = -1, f"timed out after {timeout} s: {e.stdout or ''}{e.stderr or ''}"
    return Fetch(rc == 0 and os.path.exists(out_path), time.monotonic() - t0, text[-2000:])


def smbget(ns, ip, name, out_path, port=445, options=(), timeout=300):
    """smbget (serial 64000-byte READs); `options` e.g. ("--encrypt",). `ip` may be
    an IPv6 address: libsmbclient's URLs take none in brackets ("smbc_open: Invalid
    argument"), so it goes in Samba's ipv6-literal.net form, which Samba decodes
    itself (no DNS)."""
    host = ip.replace(":", "-") + ".ipv6-literal.net" if ":" in ip else ip
    url = f"smb://{host}{'' if port == 445 else ':%d' % port}/{SHARE}/{name}"
    return _run(ns, ["smbget", "-q", "-U", f"{USER}%{PASSWORD}", "-o", out_path, *options, url], out_path, timeout)


def smbclient(ns, ip, name, out_path, port=445, options=(), timeout=300):
    """smbclient -c 'get' (pipelined READs of the server's max read size)."""
    return _run(ns, ["smbclient", f"//{ip}/{SHARE}", "-p", str(port), "-U", f"{USER}%{PASSWORD}", *options,
                     "-c", f"get {name} {out_path}"], out_path, timeout)


def impacket_get(ns, ip, name, out_path, port=445, timeout=300):
    """python3-impacket SMBConnection.getFile (serial 1 MiB READs, SMB 3.0)."""
    return _run(ns, [PY, SELF, "_impacket_get", ip, str(port), name, out_path], out_path, timeout)


def _impacket_get(ip, port, name, out_path):
    from impacket.smbconnection import SMBConnection
    c = SMBConnection(ip, ip, sess_port=int(port))
    c.login(USER, PASSWORD)
    with open(out_path, "wb") as f:
        c.getFile(SHARE, name, f.write)
    print(f"dialect 0x{c.getDialect():x}, signing required {c.isSigningRequired()}")
    c.logoff()
    return 0


class SteppedReader:
    """impacket reading `name` block by block on one open handle, a block when told:
    read(i) returns block i's bytes. The handle allows other openers to write."""

    def __init__(self, ns, ip, name, block, port=445):
        self.proc = subprocess.Popen(_in_ns(ns, [PY, SELF, "_impacket_steps", ip, str(port), name, str(block)]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=_env())

    def read(self, i, timeout=60):
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()  # the reader answers every line, or exits
        if not line.startswith("block "):
            raise PeerError(f"stepped reader: {line!r} {self.proc.stderr.read() if self.proc.poll() is not None else ''}")
        return bytes.fromhex(line.split()[2])

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _impacket_steps(ip, port, name, block):
    from impacket.smbconnection import SMBConnection
    c = SMBConnection(ip, ip, sess_port=int(port))
    c.login(USER, PASSWORD)
    tid = c.connectTree(SHARE)
    fid = c.openFile(tid, name, desiredAccess=0x80000000, shareMode=7)  # GENERIC_READ; share read/write/delete
    block = int(block)
    for line in sys.stdin:
        i = int(line)
        data = c.readFile(tid, fid, i * block, block)
        print(f"block {i} {data.hex()}", flush=True)
    c.closeFile(tid, fid)
    c.logoff()
    return 0


def smbclient_put(ns, ip, local_path, name, port=445, timeout=120):
    """Another client replaces `name` on the share with `local_path`'s bytes."""
    r = subprocess.run(_in_ns(ns, ["smbclient", f"//{ip}/{SHARE}", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                                   "-c", f"put {local_path} {name}"]),
                       capture_output=True, text=True, env=_env(), timeout=timeout)
    return r.returncode == 0, r.stdout + r.stderr


def test_file(size, seed=1):
    """Deterministic bytes: the first half text-like (compressible), the second
    pseudo-random (not), as the issue's benchmark asks."""
    import random
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(2000)]
    text = bytearray()
    while len(text) < size // 2:
        text += b" ".join(rng.choice(words) for _ in range(12)) + b".\n"
    return bytes(text[:size // 2]) + rng.randbytes(size - size // 2)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "_impacket_get":
        sys.exit(_impacket_get(*sys.argv[2:]))
    if len(sys.argv) == 6 and sys.argv[1] == "_impacket_steps":
        sys.exit(_impacket_steps(*sys.argv[2:]))
    print(__doc__)
    sys.exit(2)
