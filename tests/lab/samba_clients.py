#!/usr/bin/python3
"""The client side of samba_peer: DCE/RPC calls against a peer, each run as a helper
with Debian's python3 (impacket imports there) inside a network namespace, and
Samba's rpcclient. samba_peer re-exports every public name here; import that.

The helper is this file run as `samba_clients.py _client JSON` (samba_peer.py
accepts the same): it prints one JSON line, {"ok": true, "result": ...} or
{"ok": false, "error": "..."}. The domain's names and the administrator's password
are here too, as the clients log on with them and the server provisions them.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

SELF = os.path.abspath(__file__)
PY = "/usr/bin/python3"  # Debian's: impacket and samba import there, not in a pyenv build
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

SERVER_IP = "198.18.2.10"
REALM = "WANOPT.TEST"
DOMAIN = "WANOPT"
ADMIN_USER = "Administrator"
ADMIN_PASSWORD = "Wanopt-Adm1n!"

EPM_UUID = "e1af8308-5d1f-11c9-91a4-08002b14a0fa"     # v3.0, TCP 135
SAMR_UUID = "12345778-1234-abcd-ef00-0123456789ac"    # v1.0
LSARPC_UUID = "12345778-1234-abcd-ef00-0123456789ab"  # v0.0
NETLOGON_UUID = "12345678-1234-abcd-ef00-01234567cffb"  # v1.0
DRSUAPI_UUID = "e3514235-4b06-11d1-ab04-00c04fc2dcd2"  # v4.0

AUTH_LEVELS = {"none": 1, "connect": 2, "call": 3, "packet": 4, "integrity": 5, "privacy": 6}


class PeerError(RuntimeError):
    """A peer failed to start, or a client call failed (the message says how)."""


def _env():
    return dict(os.environ, PATH=SAFE_PATH, PYTHONDONTWRITEBYTECODE="1")


def _in_ns(ns, cmd):
    return (["ip", "netns", "exec", ns] if ns else []) + list(cmd)


# ---------------------------------------------------------------- clients

def _parse(stdout, rc, op):
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{op}: helper exited {rc} without an answer: {stdout[-500:]}"}


def _helper_cmd(ns, req):
    """The argv that runs one helper operation with Debian's python3 in namespace ns."""
    return _in_ns(ns, [PY, SELF, "_client", json.dumps(req)])


def _client(ns, req, timeout):
    """Runs one client operation with Debian's python3 (and impacket) in namespace ns."""
    cmd = _helper_cmd(ns, req)
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

if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "_client":
        _helper(sys.argv[2])
        sys.exit(0)
    print("usage: samba_clients.py _client JSON (a helper; import samba_peer instead)", file=sys.stderr)
    sys.exit(2)
