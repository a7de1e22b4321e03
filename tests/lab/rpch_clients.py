#!/usr/bin/python3
"""RPC over HTTP v2 clients for the rpch tests, each run as a helper inside a network
namespace the way samba_clients.py does it:

    ip netns exec NS /usr/bin/python3 rpch_clients.py '<json request>'

prints one JSON line, {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
From Python, call(ns, req, timeout) runs one and returns its result (PeerError if
it failed); start_proxy(lab, log) runs rpch_proxy.py in the lab's server namespace
and log_has(log, *needles) polls its log. Every request names the proxy as "proxy": "ADDR:PORT" (HTTP, no TLS) and
the RPC server as "server" (the name in the URL's query, any string the proxy takes).

Operations ("op"):
  impacket_ept_map   {proxy, server, uuid, version} -> [[port, ip], ...]
                     impacket's ncacn_http:SERVER[593] through the proxy, ept_map (no
                     RPC auth), HTTP auth NTLM first then Basic as the administrator.
  impacket_samr      {proxy, server, port, auth_level="integrity"} -> ["WANOPT", "Builtin"]
                     ncacn_http:SERVER[port] through the proxy, SAMR bound with NTLM
                     at auth_level, SamrConnect + SamrEnumerateDomainsInSamServer.
  samba_mgmt         {proxy, server} -> {"binding": ..., "if_ids": [...]}
                     Samba's own client (python3-samba) over
                     ncacn_http:SERVER[593,RpcProxy=ADDR:PORT,HttpUseTls=false,HttpAuthOption=basic]
                     with the administrator's credentials: mgmt inq_if_ids.
  samba_epm_lookup   {proxy, server} -> {"binding": ..., "entries": N, "annotations": [...]}
                     the same binding, epmapper epm_Lookup (first batch).
  echo               {proxy, server, port=6001, size=4194304, seed=1, calls=1,
                      recycle_after=null, recycle_out=false, calls_after_recycle=1,
                      kill=null|"in"|"out", kill_deadline=10, http10=false, chunked=false}
                     the scripted client (rpch_script.py, see EchoClient there): opens
                     a virtual connection to the echo port, binds, echoes `size` bytes
                     (random.Random(seed)) `calls` times; recycle_after set: then IN
                     channel recycling and calls_after_recycle more calls; recycle_out:
                     then OUT channel recycling and calls_after_recycle more calls;
                     kill: then that channel reset (SO_LINGER 0), and how the other
                     ended. -> {vc, in, out, bytes, sha256, calls, identical,
                     flow_acks_received, elapsed_s, [recycle: {predecessor, successor,
                     old_channel_ended: eof|reset|open, after_s}, in_after_recycle],
                     [recycle_out: {...}, out_after_recycle],
                     [kill: {killed, other: eof|reset|open, after_s}]}
  hostile            {proxy, server, port=6001, deadline=5} -> [{name, answer, ended, after_s}]
                     malformed inputs each on its own connection (rpch_script.hostile).
"""
import contextlib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from samba_clients import (ADMIN_PASSWORD, ADMIN_USER, AUTH_LEVELS, DOMAIN, PY, REALM, SAMR_UUID,  # noqa: E402,F401
                           PeerError, _env, _in_ns, _parse)
import samba_clients  # noqa: E402

SELF = os.path.abspath(__file__)


def call(ns, req, timeout=60):
    """Runs one helper operation with Debian's python3 in namespace ns; its result."""
    import subprocess
    cmd = _in_ns(ns, [PY, SELF, json.dumps(req)])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    except subprocess.TimeoutExpired:
        raise PeerError(f"{req['op']}: no answer within {timeout} s")
    res = _parse(r.stdout, r.returncode, req["op"])
    if not res.get("ok"):
        raise PeerError(f"{req['op']}: {res.get('error')} {r.stderr[-1500:]}".rstrip())
    return res["result"]


def start_proxy(lab, log, node="server", listen="198.18.2.10:80", backend="198.18.2.10", extra=(), timeout=10,
                name="rpch-proxy"):
    """Starts rpch_proxy.py in `node`'s namespace of labkit Lab `lab` (process `name`,
    stopped by lab.stop or lab.down) logging to `log`; returns the Popen once it has
    printed READY. Raises PeerError if it exits or stays silent. `listen` may be
    "[ipv6]:port"."""
    import select
    import subprocess
    import time
    proc = lab.spawn(name, node, PY, os.path.join(HERE, "rpch_proxy.py"), "--listen", listen,
                     "--backend", backend, "--log", log, *extra,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line = proc.stdout.readline()
            if line.strip() == "READY":
                return proc
            if not line:
                break
    raise PeerError(f"rpch_proxy.py did not get ready on {listen} in {node} (exit {proc.poll()})")


def log_has(log, *needles, timeout=10):
    """True once a line of the proxy's log contains every one of needles (polls)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(log) as f:
                if any(all(n in line for n in needles) for line in f):
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# ---------------------------------------------------------------- impacket

def _impacket_http_dce(req, port):
    from impacket.dcerpc.v5 import transport
    t = transport.DCERPCTransportFactory(f"ncacn_http:{req['server']}[{port}]")
    t.set_rpc_proxy_url(f"http://{req['proxy']}/rpc/rpcproxy.dll")
    t.set_credentials(req.get("user", ADMIN_USER), req.get("password", ADMIN_PASSWORD), req.get("domain", DOMAIN))
    t.set_connect_timeout(10)
    return t.get_dce_rpc()


@contextlib.contextmanager
def _epm_over_http(req):
    """samba_clients._op_ept_map builds the ept_map request and reads the towers; here
    its endpoint-mapper connection is the one through the proxy."""
    from impacket.dcerpc.v5 import epm

    def dce_factory(server, port, auth_level=None):
        dce = _impacket_http_dce(req, 593)
        dce.connect()
        dce.bind(epm.MSRPC_UUID_PORTMAP)
        return dce
    saved = samba_clients._epm_dce
    samba_clients._epm_dce = dce_factory
    try:
        yield
    finally:
        samba_clients._epm_dce = saved


def _op_impacket_ept_map(req):
    with _epm_over_http(req):
        return samba_clients._op_ept_map({"server": req["server"], "port": 593, "uuid": req.get("uuid", SAMR_UUID),
                                          "version": req.get("version", "1.0"), "max_towers": 4})


def _op_impacket_samr(req):
    from impacket.dcerpc.v5 import samr
    dce = _impacket_http_dce(req, req["port"])
    dce.set_auth_level(AUTH_LEVELS[req.get("auth_level", "integrity")])
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


# ---------------------------------------------------------------- Samba's own ncacn_http client

@contextlib.contextmanager
def _samba_ctx(req):
    """(binding, lp, creds) with a client smb.conf in a temporary dir (nothing in /etc/samba)."""
    from samba import credentials, param
    with tempfile.TemporaryDirectory(prefix="wanopt-rpch-samba-") as d:
        conf = os.path.join(d, "smb.conf")
        with open(conf, "w") as f:
            f.write(f"[global]\n\tworkgroup = {DOMAIN}\n\trealm = {REALM}\n\tdisable netbios = yes\n")
            for k in ("lock directory", "state directory", "cache directory", "private dir", "pid directory"):
                f.write(f"\t{k} = {d}\n")
            f.write(f"\tncalrpc dir = {d}/ncalrpc\n\tlog file = {d}/log\n")
        lp = param.LoadParm(conf)
        creds = credentials.Credentials()
        creds.guess(lp)
        creds.set_username(req.get("user", ADMIN_USER))
        creds.set_password(req.get("password", ADMIN_PASSWORD))
        creds.set_domain(req.get("domain", DOMAIN))
        creds.set_kerberos_state(credentials.DONT_USE_KERBEROS)
        binding = (f"ncacn_http:{req['server']}[593,RpcProxy={req['proxy']},HttpUseTls=false,"
                   f"HttpAuthOption=basic]")
        yield binding, lp, creds


def _op_samba_mgmt(req):
    from samba.dcerpc import mgmt
    with _samba_ctx(req) as (binding, lp, creds):
        conn = mgmt.mgmt(binding, lp, creds)
        ids = conn.inq_if_ids()
        return {"binding": binding, "if_ids": ["%s v%d.%d" % (i.id.uuid, i.id.if_version & 0xFFFF, i.id.if_version >> 16)
                                               for i in (ids.if_id if ids else [])]}


def _op_samba_epm_lookup(req):
    from samba.dcerpc import epmapper, misc
    with _samba_ctx(req) as (binding, lp, creds):
        conn = epmapper.epmapper(binding, lp, creds)
        handle = misc.policy_handle()
        _, entries, status = conn.epm_Lookup(0, None, None, 0, handle, 50)  # (entry_handle, entries, result)
        return {"binding": binding, "entries": len(entries), "status": status,
                "annotations": sorted({e.annotation for e in entries})}


# ---------------------------------------------------------------- scripted client, hostile sender

def _op_echo(req):
    import rpch_script
    return rpch_script.echo(req)


def _op_hostile(req):
    import rpch_script
    return rpch_script.hostile(req)


def _helper(arg):
    req = json.loads(arg)
    ops = {"impacket_ept_map": _op_impacket_ept_map, "impacket_samr": _op_impacket_samr,
           "samba_mgmt": _op_samba_mgmt, "samba_epm_lookup": _op_samba_epm_lookup,
           "echo": _op_echo, "hostile": _op_hostile}
    try:
        print(json.dumps({"ok": True, "result": ops[req["op"]](req)}))
    except Exception as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
    sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: rpch_clients.py JSON", file=sys.stderr)
        sys.exit(2)
    _helper(sys.argv[1])
