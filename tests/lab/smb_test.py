#!/usr/bin/python3
"""SMB2/3 through the pair with real peers, in the namespace lab.

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
  2. a second fetch of the same file crosses the WAN reduced by DRE, except when
     encrypted (the bytes differ every time: nothing to find);
  3. the file rewritten on the server between two fetches: the second fetch gets
     the new bytes;
  4. tshark on the server's LAN confirms the setting is what the peers did: READ
     responses unsigned, all signed, or no READ in the clear (SMB3 transform headers).
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from labkit import Capture, Checks, Lab  # noqa: E402
import smbd_peer  # noqa: E402

WANOPT, NETLAB, DELAYLINE = (os.path.abspath(a) for a in sys.argv[1:4])
DISSECTOR = os.path.join(HERE, "..", "..", "deploy", "wireshark", "wanopt.lua")
IDS = {"branch": "02:00:00:00:0b:01", "dc": "02:00:00:00:0d:01"}
SIZE = 4 << 20

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)

check = Checks()
CLIENTS = {"smbget": smbd_peer.smbget, "impacket": smbd_peer.impacket_get, "smbclient": smbd_peer.smbclient}
SETTINGS = [("signing disabled", dict(signing="disabled", encrypt="off"), False),
            ("signing mandatory", dict(signing="mandatory", encrypt="off"), False),
            ("encryption required", dict(signing="auto", encrypt="required"), True)]


class SmbCapture(Capture):
    """tshark on the server's LAN, one line per SMB2 message (a frame may carry several)."""
    FIELDS = ["smb2.cmd", "smb2.flags.response", "smb2.flags.signature", "smb2.nt_status",
              "smb2.header.transform.msg_size", "_ws.col.Protocol"]


def wire_view(packets):
    """(READ responses with data, of them signed, transform headers) in what tshark
    printed. Interim responses (STATUS_PENDING) are never signed: not counted."""
    reads = signed = transforms = 0
    for p in packets:
        commands = p["smb2.cmd"].split(",") if p["smb2.cmd"] else []
        responses = p["smb2.flags.response"].split(",")
        signatures = p["smb2.flags.signature"].split(",")
        statuses = p["smb2.nt_status"].split(",")
        for i, c in enumerate(commands):
            if c == "8" and i < len(responses) and responses[i] in ("1", "True") and \
                    i < len(statuses) and int(statuses[i], 0) == 0:
                reads += 1
                signed += i < len(signatures) and signatures[i] in ("1", "True")
        transforms += len([x for x in p["smb2.header.transform.msg_size"].split(",") if x])
    return reads, signed, transforms


def fetch(lab, work, client, name, expected, label):
    out = os.path.join(work, f"out-{client}.bin")
    since = lab.last_id("branch")
    r = CLIENTS[client](lab.ns("client"), smbd_peer.SERVER_IP, name, out)
    same = r.ok and smbd_peer.sha256_file(out) == expected
    check(f"{label}: {client} gets a byte-identical copy ({r.seconds:.2f} s)", same, r.output)
    conn = lab.wait_ended("branch", 445, since)
    check(f"{label}: {client}: the branch optimized it with the dc",
          conn is not None and conn["peer"] == IDS["dc"] and conn["state"] != "pass-through", conn)
    return conn


def main():
    with tempfile.TemporaryDirectory(prefix="wanopt-smb-") as work:
        subprocess.run([os.path.join(HERE, "make-pki"), os.path.join(work, "pki")], check=True, capture_output=True)
        lab = Lab(f"ws{os.getpid() % 100000}", work, WANOPT, NETLAB, DELAYLINE)
        server = None
        try:
            lab.up()
            for box in ("branch", "dc"):
                lab.start_box(box, lab.box_config(box, IDS[box], box, "ca", "[intercept]\n"))
            for label, setting, encrypted in SETTINGS:
                server = smbd_peer.start(lab.ns("server"), os.path.join(work, "smbd"), **setting)
                data = smbd_peer.test_file(SIZE, seed=len(label))
                digest = server.write("f.bin", data)
                capture = SmbCapture(lab, "server", "eth0", "198.18.2.1",
                                     DISSECTOR, ports=(445,))
                for client in CLIENTS:
                    fetch(lab, work, client, "f.bin", digest, label)
                reads, signed, transforms = wire_view(capture.stop())
                if encrypted:
                    check(f"{label}: on the server's LAN, no READ in the clear, {transforms} transform headers",
                          reads == 0 and transforms > 100, (reads, signed, transforms))
                elif setting["signing"] == "mandatory":
                    check(f"{label}: on the server's LAN, all {reads} READ responses signed",
                          reads > 60 and signed == reads, (reads, signed, transforms))
                else:
                    check(f"{label}: on the server's LAN, none of {reads} READ responses signed",
                          reads > 60 and signed == 0 and transforms == 0, (reads, signed, transforms))
                # Fetched before by every client: the dc's store has every chunk.
                warm = fetch(lab, work, "smbget", "f.bin", digest, f"{label}, again")
                if warm:
                    wan = warm["wan_in"] + warm["wan_out"]
                    lan = warm["lan_in"] + warm["lan_out"]
                    if encrypted:
                        check(f"{label}: the second fetch is not reduced (encrypted: {wan} WAN / {lan} LAN bytes)",
                              wan > lan * 0.9, warm)
                    else:
                        check(f"{label}: the second fetch crosses the WAN at < 20% of its LAN bytes "
                              f"({wan} / {lan})", wan < lan * 0.2, warm)
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
