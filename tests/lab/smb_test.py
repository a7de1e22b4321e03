#!/usr/bin/python3
"""SMB2/3 through the pair with real peers, in the namespace lab, the smb2 module on
both boxes (its default: every module, on port 445).

Usage: smb_test.py WANOPT NETLAB DELAYLINE
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure.

Samba's smbd (standalone, tests/lab/smbd_peer.py) serves a share on 198.18.2.10:445
in the server namespace; smbget (serial 64000-byte READs), python3-impacket
(serial 1 MiB READs, SMB 3.0) and smbclient (pipelined) fetch a file in the client
namespace; a branch and a datacenter box intercept between them (F: DRE and LZ).
For each server setting (signing disabled, signing mandatory, encryption required):
  1. every client's copy is byte-identical (SHA-256), through optimized
     connections (the branch lists port 445 with the dc as peer);
  2. read-ahead: the serial readers' READs answered at the branch when the session
     neither signs nor encrypts (the branch's figures), stepped aside with the reason
     otherwise; smbclient (pipelining) is said not to need it;
  3. a second fetch crosses the WAN reduced by DRE, except when encrypted;
  4. the file rewritten on the server between two fetches: the second gets the new bytes;
  5. tshark on the server's LAN confirms the setting the peers used.
With signing disabled, also:
  6. tshark on both LANs during a read-ahead fetch: every request the client sent
     got exactly one answer with its MessageId, the server saw no MessageId twice,
     and the client was granted no more credits than the server granted;
  7. a file rewritten by another client while a reader holds it open, between two
     of its READs (blocks already read ahead): the reader gets the new bytes;
  8. smbget killed mid-read while the branch keeps answers for it: the branch's
     kept bytes (/metrics, wanopt_module_gauge) go back to where they were;
  9. smbget over the NetBIOS session service (port 139): byte-identical, read ahead.
 10. over IPv6 (the lab is dual-stack, smbd also on 2001:2:0:2::10): smbget,
     impacket and smbclient byte-identical, optimized with the dc (the branch lists
     the server bracketed), the serial readers' READs answered at the branch.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from labkit import Capture, Checks, Lab  # noqa: E402
import smbd_peer  # noqa: E402

WANOPT, NETLAB, DELAYLINE = (os.path.abspath(a) for a in sys.argv[1:4])
DISSECTOR = os.path.join(HERE, "..", "..", "deploy", "wireshark", "wanopt.lua")
IDS = {"branch": "02:00:00:00:0b:01", "dc": "02:00:00:00:0d:01"}
SIZE = 4 << 20
SERVER6 = "2001:2:0:2::10"  # the lab is dual-stack

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)

check = Checks()
CLIENTS = {"smbget": smbd_peer.smbget, "impacket": smbd_peer.impacket_get, "smbclient": smbd_peer.smbclient}
SETTINGS = [("signing disabled", dict(signing="disabled", encrypt="off"), None),
            ("signing mandatory", dict(signing="mandatory", encrypt="off"), "read-ahead off: the server requires signing"),
            ("encryption required", dict(signing="auto", encrypt="required"), "read-ahead off: encrypted")]


class SmbCapture(Capture):
    """tshark on a LAN, one line per frame; a frame may carry several SMB2 messages."""
    FIELDS = ["smb2.cmd", "smb2.flags.response", "smb2.flags.signature", "smb2.nt_status", "smb2.msg_id",
              "smb2.credits.granted", "smb2.header.transform.msg_size", "_ws.col.Protocol", "frame.number",
              "tcp.srcport", "tcp.len", "tcp.seq", "_ws.col.Info"]


def messages(packets):
    """Every SMB2 message tshark printed, as dicts (command, response, signed, status,
    msg_id, granted)."""
    out = []
    for p in packets:
        if not p["smb2.cmd"]:
            continue
        cols = {k: p[f].split(",") for k, f in (("cmd", "smb2.cmd"), ("response", "smb2.flags.response"),
                                                  ("signed", "smb2.flags.signature"), ("status", "smb2.nt_status"),
                                                  ("id", "smb2.msg_id"), ("granted", "smb2.credits.granted"))}
        for i, c in enumerate(cols["cmd"]):
            def at(k):
                return cols[k][i] if i < len(cols[k]) else ""
            response = at("response") in ("1", "True")
            status = int(at("status"), 0) if response and at("status") else 0
            out.append(dict(cmd=int(c), response=response, signed=at("signed") in ("1", "True"), status=status,
                            id=int(at("id") or -1), granted=int(at("granted") or 0) if response else 0))
    return out


def wire_view(packets):
    """(READ responses with data, of them signed, transform headers). Interim
    responses (STATUS_PENDING) are never signed: not counted."""
    ms = messages(packets)
    reads = [m for m in ms if m["cmd"] == 8 and m["response"] and m["status"] == 0]
    transforms = sum(len([x for x in p["smb2.header.transform.msg_size"].split(",") if x]) for p in packets)
    return len(reads), sum(m["signed"] for m in reads), transforms


def fetch(lab, work, client, name, expected, label, ip=smbd_peer.SERVER_IP):
    out = os.path.join(work, f"out-{client}.bin")
    since = lab.last_id("branch")
    r = CLIENTS[client](lab.ns("client"), ip, name, out)
    same = r.ok and smbd_peer.sha256_file(out) == expected
    check(f"{label}: {client} gets a byte-identical copy ({r.seconds:.2f} s)", same, r.output)
    conn = lab.wait_ended("branch", 445, since)
    check(f"{label}: {client}: the branch optimized it with the dc",
          conn is not None and conn["peer"] == IDS["dc"] and conn["state"] != "pass-through", conn)
    dc = lab.connection_to("dc", 445)
    return conn or {}, dc or {}


def notes(conn):
    return " | ".join(conn.get("notes", []))


def check_read_ahead(label, client, branch, dc, aside):
    if client == "smbclient":
        check(f"{label}: smbclient: the dc says why it reads no further ahead ({notes(dc)})",
              "read-ahead not used: " in notes(dc) or (aside and aside in notes(dc)), dc)
    elif aside is None:
        served = [n for n in branch.get("notes", []) if n.startswith("read-ahead: ")]
        ok = served and " 0 of " not in served[0] and "hit rate 100%" in served[0]
        check(f"{label}: {client}: READs answered at the branch ({served[0] if served else 'no figures'})", ok, branch)
        check(f"{label}: {client}: the application is SMB3", branch.get("application") == "SMB3", branch)
    else:
        check(f"{label}: {client}: read-ahead stepped aside, and the dc says why ({aside})", aside in notes(dc), dc)


def around(packets, ids):
    """The frames near those carrying any of `ids` (to tell a capture gap from a lost answer)."""
    hits = [n for n, p in enumerate(packets) if ids & {int(i) for i in p["smb2.msg_id"].split(",") if i.isdigit()}]
    return [packets[n] for n in sorted({m for h in hits for m in range(h - 2, h + 12) if 0 <= m < len(packets)})]


def wire_consistency(lab, work, data_digest):
    """6: both LANs during one read-ahead fetch by smbget."""
    client_cap = SmbCapture(lab, "client", "eth0", "198.18.1.1", DISSECTOR, ports=(445,))
    server_cap = SmbCapture(lab, "server", "eth0", "198.18.2.1", DISSECTOR, ports=(445,))
    branch, _ = fetch(lab, work, "smbget", "f.bin", data_digest, "signing disabled, both LANs captured")
    client_packets = client_cap.stop()
    client_ms, server_ms = messages(client_packets), messages(server_cap.stop())
    requests = [m["id"] for m in client_ms if not m["response"] and m["cmd"] != 12]  # CANCEL reuses an id
    finals = [m["id"] for m in client_ms if m["response"] and m["status"] != 0x103 and m["id"] != 2**64 - 1]
    odd = set(requests) ^ set(finals)
    check(f"client's LAN: each of the client's {len(requests)} requests got exactly one final answer",
          sorted(requests) == sorted(finals) and len(set(requests)) == len(requests),
          (sorted(odd), len(requests), len(finals),
           around(client_packets, odd)))
    server_requests = [m["id"] for m in server_ms if not m["response"] and m["cmd"] != 12]
    check(f"server's LAN: no MessageId used twice ({len(server_requests)} requests, read-ahead's included)",
          len(server_requests) == len(set(server_requests)) and len(server_requests) >= len(requests),
          len(server_requests))
    granted_client = sum(m["granted"] for m in client_ms if m["response"])
    granted_server = sum(m["granted"] for m in server_ms if m["response"])
    check(f"credits: the client was granted {granted_client}, the server granted {granted_server}",
          0 < granted_client <= granted_server, (granted_client, granted_server))
    check("both LANs: the READs the client saw answered at the branch",
          "answered here" in notes(branch), branch)


def rewritten_while_open(lab, work, server):
    """7: blocks read ahead, then the file replaced by another client."""
    block = 64000
    old = smbd_peer.test_file(1 << 20, seed=7)
    new = smbd_peer.test_file(1 << 20, seed=8)
    server.write("open.bin", old)
    local_new = os.path.join(work, "new.bin")
    with open(local_new, "wb") as f:
        f.write(new)
    reader = smbd_peer.SteppedReader(lab.ns("client"), smbd_peer.SERVER_IP, "open.bin", block)
    try:
        first = [reader.read(i) for i in range(3)]
        check("open file: the first three blocks are the old bytes",
              first == [old[i * block:(i + 1) * block] for i in range(3)])
        ok, output = smbd_peer.smbclient_put(lab.ns("client"), smbd_peer.SERVER_IP, local_new, "open.bin")
        check("open file: another client replaced it", ok, output)
        later = [reader.read(i) for i in range(3, 6)]
        check("open file: the next blocks, read ahead before the change, are the new bytes",
              later == [new[i * block:(i + 1) * block] for i in range(3, 6)],
              [b[:8].hex() for b in later])
    finally:
        reader.close()
    readers = [c for c in lab.connections("dc") if "open.bin" in notes(c) and "read-ahead:" in notes(c)]
    for c in readers:
        print(f"  open file: dc notes: {notes(c)}")
    check("open file: the dc read ahead for the reader, and stopped when the file's oplock broke",
          any("read-ahead stopped on open.bin: its oplock broken" in notes(c) for c in readers),
          [notes(c) for c in lab.connections("dc")][-3:])


def smb2_gauge(lab, node, name):
    r = lab.run(node, "curl", "-s", "-m", "3", "http://127.0.0.1:7880/metrics")
    m = re.search(r'wanopt_module_gauge\{box="%s",module="smb2",name="%s"\} (\d+)' % (node, name), r.stdout)
    return int(m.group(1)) if m else None


def aborted_reader(lab, work, server):
    """8: a reader killed while answers wait for it at the branch."""
    server.write("big.bin", smbd_peer.test_file(32 << 20, seed=9))
    before = smb2_gauge(lab, "branch", "kept_bytes")
    check(f"/metrics: the branch's smb2 kept_bytes gauge ({before})", before is not None)
    out = os.path.join(work, "big.out")
    url = f"smb://{smbd_peer.SERVER_IP}/{smbd_peer.SHARE}/big.bin"
    reader = lab.spawn("smbget-big", "client", "smbget", "-q", "-U", f"{smbd_peer.USER}%{smbd_peer.PASSWORD}",
                       "-o", out, url, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=dict(os.environ, PATH=smbd_peer.SAFE_PATH))
    peak, deadline = 0, time.monotonic() + 60
    while reader.poll() is None and time.monotonic() < deadline and peak == 0:
        peak = max(peak, smb2_gauge(lab, "branch", "kept_bytes") or 0)
        time.sleep(0.02)  # polling a condition with a deadline
    killed = reader.poll() is None
    reader.send_signal(signal.SIGKILL)
    reader.wait()
    lab.procs.pop("smbget-big", None)
    check(f"aborted reader: killed mid-read while the branch kept {peak} bytes for it", killed and peak > 0,
          (killed, peak))
    deadline, after = time.monotonic() + 15, None
    while time.monotonic() < deadline:
        after = smb2_gauge(lab, "branch", "kept_bytes")
        if after == before and smb2_gauge(lab, "branch", "connections") == 0:
            break
        time.sleep(0.05)  # polling a condition with a deadline
    check(f"aborted reader: the branch's kept bytes back to {before} ({after}), no SMB connection left",
          after == before and smb2_gauge(lab, "branch", "connections") == 0, after)


def netbios_fetch(lab, work, digest):
    """9: port 139, a NetBIOS session request first."""
    out = os.path.join(work, "out-139.bin")
    since = lab.last_id("branch")
    r = smbd_peer.smbget(lab.ns("client"), smbd_peer.SERVER_IP, "f.bin", out, port=139)
    check(f"port 139: smbget gets a byte-identical copy ({r.seconds:.2f} s)",
          r.ok and smbd_peer.sha256_file(out) == digest, r.output)
    conn = lab.wait_ended("branch", 139, since) or {}
    check(f"port 139: READs answered at the branch ({notes(conn)})",
          "answered here" in notes(conn) and "hit rate 100%" in notes(conn), conn)


def ipv6_fetches(lab, work, digest):
    """10: every client over IPv6."""
    for client in CLIENTS:
        branch, dc = fetch(lab, work, client, "f.bin", digest, "IPv6", ip=SERVER6)
        check(f"IPv6: {client}: the branch lists the server bracketed", branch.get("server") == f"[{SERVER6}]:445",
              branch)
        check_read_ahead("IPv6", client, branch, dc, None)


def main():
    with tempfile.TemporaryDirectory(prefix="wanopt-smb-") as work:
        subprocess.run([os.path.join(HERE, "make-pki"), os.path.join(work, "pki")], check=True, capture_output=True)
        lab = Lab(f"ws{os.getpid() % 100000}", work, WANOPT, NETLAB, DELAYLINE, ipv6=True)
        server = None
        try:
            lab.up()
            for box in ("branch", "dc"):
                lab.start_box(box, lab.box_config(box, IDS[box], box, "ca", "[intercept]\n"))
            for label, setting, aside in SETTINGS:
                server = smbd_peer.start(lab.ns("server"), os.path.join(work, "smbd"), **setting,
                                         extra_ports=(139,) if aside is None else (),
                                         ip6=SERVER6 if aside is None else None)
                data = smbd_peer.test_file(SIZE, seed=len(label))
                digest = server.write("f.bin", data)
                capture = SmbCapture(lab, "server", "eth0", "198.18.2.1", DISSECTOR, ports=(445,))
                for client in CLIENTS:
                    branch, dc = fetch(lab, work, client, "f.bin", digest, label)
                    print(f"  {label}: {client}: branch: {notes(branch)}\n  {label}: {client}: dc: {notes(dc)}")
                    check_read_ahead(label, client, branch, dc, aside)
                reads, signed, transforms = wire_view(capture.stop())
                if setting["encrypt"] == "required":
                    check(f"{label}: on the server's LAN, no READ in the clear, {transforms} transform headers",
                          reads == 0 and transforms > 100, (reads, signed, transforms))
                elif setting["signing"] == "mandatory":
                    check(f"{label}: on the server's LAN, all {reads} READ responses signed",
                          reads > 10 and signed == reads, (reads, signed, transforms))
                else:
                    check(f"{label}: on the server's LAN, none of {reads} READ responses signed",
                          reads > 10 and signed == 0 and transforms == 0, (reads, signed, transforms))
                # Fetched before by every client: the dc's store has every chunk.
                warm, _ = fetch(lab, work, "smbget", "f.bin", digest, f"{label}, again")
                wan = warm.get("wan_in", 0) + warm.get("wan_out", 0)
                lan = warm.get("lan_in", 0) + warm.get("lan_out", 0)
                if setting["encrypt"] == "required":
                    check(f"{label}: the second fetch is not reduced (encrypted: {wan} WAN / {lan} LAN bytes)",
                          wan > lan * 0.9, warm)
                else:
                    check(f"{label}: the second fetch crosses the WAN at < 20% of its LAN bytes ({wan} / {lan})",
                          0 < wan < lan * 0.2, warm)
                if aside is None:
                    wire_consistency(lab, work, digest)
                    rewritten_while_open(lab, work, server)
                    aborted_reader(lab, work, server)
                    netbios_fetch(lab, work, digest)
                    ipv6_fetches(lab, work, digest)
                changed = smbd_peer.test_file(SIZE, seed=100 + len(label))
                digest = server.write("f.bin", changed)
                fetch(lab, work, "smbget", "f.bin", digest, f"{label}, rewritten on the server")
                server.stop()
                server = None
        except Exception as e:  # a broken lab is a failure, never a skip
            check("the test ran to the end", False, repr(e))
        finally:
            if server is not None:
                print(server.tail())
                server.stop()
            if check.failed:
                lab.print_logs()
            lab.down()
    sys.exit(check.summary())


if __name__ == "__main__":
    main()
