#!/usr/bin/python3
"""The shipped Wireshark dissector reads what the pair puts on the wire.

Usage: dissector_test.py PATH_TO_WANOPT SOURCE_DIR
       dissector_test.py --option-only SOURCE_DIR   (the first part alone; no root)
First, the auto-discovery TCP option 0x21 (no root, no network): writes a pcap file
by hand (Ethernet, IPv4, TCP) holding a branch's SYN with an offer (policy F,
CLIENT_V4, PLAINTEXT), the SYN-ACK answer of a datacenter (D), a relayed answer, a
SYN with a kind-33 option of another magic (OpenNOP's), a SYN-ACK without the
option, an option of version 2, one whose length contradicts its flags and an
ANSWER on a SYN, and checks every wanopt.disc field, the info column and the
expert messages tshark prints for each.
Then runs a datacenter and a branch proxy (DRE on) on 127.0.0.1, captures the inner
channel with tshark while two transfers cross it, then decodes the capture with
deploy/wireshark/wanopt.lua and checks the frames it names.
Prints 'N passed, N failed'; exit 1 on failure.
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testkit import Checks, free_port, wait_listening  # noqa: E402

WANOPT, SOURCE = sys.argv[1], sys.argv[2]
OPTION_ONLY = WANOPT == "--option-only"
LUA = os.path.join(SOURCE, "deploy", "wireshark", "wanopt.lua")
check = Checks(detail_limit=3000)


# ---------------------------------------------------------------- TCP option 0x21

def inet_checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet_ipv4_tcp(src, dst, sport, dport, flags, seq, ack, options):
    """One Ethernet frame: IPv4 (DF, ttl 64) and a TCP header with OPTIONS (padded
    with EOL to a multiple of 4 bytes), both checksums right, no payload."""
    options += b"\0" * (-len(options) % 4)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (20 + len(options)) // 4 << 4, flags,
                      64240, 0, 0) + options
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", inet_checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    return bytes.fromhex("02000000000b 02000000000a 0800") + ip + tcp


def discovery_option(flags, device, client=None, version=1):
    """Kind 0x21 as wanopt/docs/inner-channel.md lays it out, then one NOP."""
    body = bytes([0x57, version, flags]) + bytes.fromhex(device.replace(":", ""))
    if client:
        body += socket.inet_aton(client)
    return bytes([0x21, 2 + len(body)]) + body + b"\x01"


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # v2.4, LINKTYPE_ETHERNET
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(frame), len(frame)) + frame)


def option_test(tmp):
    F, D = 0x03, 0x02
    ANSWER, CLIENT_V4, PLAINTEXT, RELAYED = 0x04, 0x08, 0x10, 0x20
    mss = b"\x02\x04\x05\xb4"
    syn_options = mss + b"\x04\x02" + b"\x08\x0a" + struct.pack("!II", 1000, 0) + b"\x01\x03\x03\x07"
    branch, server = "198.18.3.1", "198.18.2.10"
    frames = [
        # 1: the branch's probe SYN: offers F, names the client, asks for plaintext (36 option bytes).
        ethernet_ipv4_tcp(branch, server, 40001, 80, 0x02, 100, 0,
                          syn_options + discovery_option(F | CLIENT_V4 | PLAINTEXT, "02:00:5e:00:00:01", "198.18.1.10")),
        # 2: a datacenter's answer, policy D.
        ethernet_ipv4_tcp(server, branch, 80, 40001, 0x12, 500, 101,
                          mss + discovery_option(D | ANSWER, "02:00:5e:00:00:02")),
        # 3: an answer a middle box relays, plaintext agreed.
        ethernet_ipv4_tcp(server, branch, 80, 40002, 0x12, 700, 201,
                          mss + discovery_option(F | ANSWER | PLAINTEXT | RELAYED, "02:00:5e:00:00:03")),
        # 4: kind 33 with another magic (OpenNOP uses kind 33 too).
        ethernet_ipv4_tcp(branch, server, 40003, 80, 0x02, 300, 0, mss + bytes.fromhex("210a0102030405060708")),
        # 5: a SYN-ACK with no answer (no peer on the way).
        ethernet_ipv4_tcp(server, branch, 80, 40003, 0x12, 900, 301, mss),
        # 6: our magic, version 2: not ours either.
        ethernet_ipv4_tcp(branch, server, 40004, 80, 0x02, 400, 0,
                          mss + discovery_option(F, "02:00:5e:00:00:01", version=2)),
        # 7: CLIENT_V4 set but length 11: malformed.
        ethernet_ipv4_tcp(branch, server, 40005, 80, 0x02, 500, 0,
                          mss + discovery_option(F | CLIENT_V4, "02:00:5e:00:00:09")),
        # 8: ANSWER on a SYN: decoded, with a warning.
        ethernet_ipv4_tcp(branch, server, 40006, 80, 0x02, 600, 0,
                          mss + discovery_option(F | ANSWER, "02:00:5e:00:00:0a")),
    ]
    pcap = os.path.join(tmp, "option.pcap")
    write_pcap(pcap, frames)
    fields = ["frame.number", "wanopt.disc.version", "wanopt.disc.flags", "wanopt.disc.policy",
              "wanopt.disc.answer", "wanopt.disc.plaintext", "wanopt.disc.relayed", "wanopt.disc.device_id",
              "wanopt.disc.client", "wanopt.disc.magic", "_ws.col.Info", "_ws.expert.message"]
    args = ["tshark", "-r", pcap, "-X", f"lua_script:{LUA}", "-T", "fields", "-E", "separator=|"]
    for name in fields:
        args += ["-e", name]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    check("option: tshark reads the pcap with the dissector", r.returncode == 0 and "Lua" not in r.stderr, r.stderr)
    rows = {}
    for line in r.stdout.splitlines():
        values = dict(zip(fields, line.split("|")))
        rows[values["frame.number"]] = values
    print("\n".join(r.stdout.splitlines()))

    def truth(value):  # FT_BOOLEAN prints 1/0 in tshark 4.0, True/False later
        return {"1": True, "True": True, "0": False, "False": False}.get(value)

    def expect(frame, what, **want):
        row = rows.get(str(frame), {})
        got = {k: (truth(row.get(f"wanopt.disc.{k}")) if isinstance(v, bool) else row.get(f"wanopt.disc.{k}"))
               for k, v in want.items()}
        check(f"option frame {frame} ({what}): fields", got == want, f"{got} != {want}; row {row}")
        return row.get("_ws.col.Info", ""), row.get("_ws.expert.message", "")

    info, experts = expect(1, "offer", version="1", flags="0x1b", policy="F", answer=False, plaintext=True,
                           relayed=False, device_id="02:00:5e:00:00:01", client="198.18.1.10")
    check("option frame 1: info column",
          info.endswith("[wanopt offer F id 02:00:5e:00:00:01 client 198.18.1.10 plaintext]"), info)
    check("option frame 1: no wanopt expert message", "wanopt" not in experts, experts)
    info, experts = expect(2, "answer", version="1", flags="0x06", policy="D", answer=True, plaintext=False,
                           relayed=False, device_id="02:00:5e:00:00:02", client="")
    check("option frame 2: info column", info.endswith("[wanopt answer D id 02:00:5e:00:00:02]"), info)
    check("option frame 2: no wanopt expert message", "wanopt" not in experts, experts)
    info, _ = expect(3, "relayed answer", flags="0x37", policy="F", answer=True, plaintext=True, relayed=True,
                     device_id="02:00:5e:00:00:03")
    check("option frame 3: info column", info.endswith("[wanopt answer F id 02:00:5e:00:00:03 plaintext relayed]"), info)
    info, _ = expect(4, "foreign magic", version="", policy="", device_id="", magic="0x01")
    check("option frame 4: shown as not wanopt", info.endswith("[option 33: not wanopt]") and "wanopt offer" not in info, info)
    info, _ = expect(5, "no option", version="", magic="", device_id="")
    check("option frame 5: nothing of ours in the info column", "wanopt" not in info and "option 33" not in info, info)
    info, experts = expect(6, "version 2", version="2", policy="", device_id="")
    check("option frame 6: unknown version, not decoded further",
          "unknown version" in experts and "wanopt offer" not in info, info + experts)
    info, experts = expect(7, "length contradicts CLIENT_V4", policy="F", client="")
    check("option frame 7: malformed", "length 11, expected 15" in experts and "malformed" in info, info + experts)
    info, experts = expect(8, "ANSWER on a SYN", answer=True, device_id="02:00:5e:00:00:0a")
    check("option frame 8: warned", "ANSWER/RELAYED on a SYN" in experts, info + experts)
    r = subprocess.run(["tshark", "-r", pcap, "-X", f"lua_script:{LUA}", "-Y", "wanopt.disc.answer == 1 && tcp.flags.ack == 1"],
                       capture_output=True, text=True, timeout=60)
    check("option: display filter wanopt.disc.answer == 1 && tcp.flags.ack == 1 selects the two answers",
          len(r.stdout.splitlines()) == 2, r.stdout + r.stderr)


option_tmp = tempfile.mkdtemp(prefix="wanopt-dissector-option-")
try:
    option_test(option_tmp)
finally:
    shutil.rmtree(option_tmp, ignore_errors=True)
if OPTION_ONLY:
    sys.exit(check.summary())

# ---------------------------------------------------------------- the inner channel, live

# An echo origin.
origin = socket.socket()
origin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
origin.bind(("127.0.0.1", 0))
origin.listen(8)
origin_port = origin.getsockname()[1]


def serve():
    while True:
        try:
            conn, _ = origin.accept()
        except OSError:
            return
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)


threading.Thread(target=serve, daemon=True).start()

tmp = tempfile.mkdtemp(prefix="wanopt-dissector-")
dc_port, branch_port = free_port(), free_port()
with open(os.path.join(tmp, "dc.toml"), "w") as f:
    f.write(f'[box]\ndevice_id = "02:00:00:00:00:02"\n[datacenter]\nlisten = "127.0.0.1:{dc_port}"\n'
            f'[dre]\ndatastore = "{tmp}/dc-store"\nmax_size_mb = 64\n')
with open(os.path.join(tmp, "branch.toml"), "w") as f:
    f.write(f'[box]\ndevice_id = "02:00:00:00:00:01"\n[dre]\ndatastore = "{tmp}/branch-store"\nmax_size_mb = 64\n'
            f'[[branch.forward]]\nlisten = "127.0.0.1:{branch_port}"\ndestination = "127.0.0.1:{origin_port}"\n'
            f'peer = "127.0.0.1:{dc_port}"\n')
pcap = os.path.join(tmp, "inner.pcapng")
procs = []
try:
    dc = subprocess.Popen([WANOPT, "run", "--config", os.path.join(tmp, "dc.toml")], stderr=subprocess.DEVNULL)
    procs.append(dc)
    branch = subprocess.Popen([WANOPT, "run", "--config", os.path.join(tmp, "branch.toml")], stderr=subprocess.DEVNULL)
    procs.append(branch)
    check("proxies listen", wait_listening(dc_port, dc, timeout=15) and wait_listening(branch_port, branch, timeout=15))

    tshark = subprocess.Popen(["tshark", "-i", "lo", "-f", f"tcp port {dc_port}", "-w", pcap],
                              stderr=subprocess.PIPE, text=True)
    procs.append(tshark)
    started = False
    for line in tshark.stderr:  # tshark says when its capture process runs
        if "Capture started" in line:
            started = True
            break
    check("tshark captures", started)

    text = (open("/usr/share/common-licenses/GPL-3", "rb").read() * 8)[:300000]
    for _ in range(2):  # the second transfer is mostly references
        with socket.create_connection(("127.0.0.1", branch_port), timeout=10) as s:
            s.sendall(text)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                data = s.recv(65536)
                if not data:
                    break
                got += data
        check("transfer verified", got == text, len(got))
    # Stop the capture once it holds both inner channels' ends (4 FINs): dumpcap
    # writes in batches, so the file is read back until they are there.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        fins = subprocess.run(["tshark", "-r", pcap, "-Y", "tcp.flags.fin == 1"], capture_output=True, text=True)
        if len(fins.stdout.splitlines()) >= 4:
            break
        time.sleep(0.2)  # polling a condition with a deadline
    tshark.send_signal(signal.SIGINT)
    tshark.wait(timeout=20)

    r = subprocess.run(["tshark", "-r", pcap, "-X", f"lua_script:{LUA}", "-d", f"tcp.port=={dc_port},wanopt",
                        "-T", "fields", "-e", "wanopt.type", "-e", "wanopt.hello.policy", "-e", "wanopt.hello.applied",
                        "-e", "wanopt.dre.compressed", "-e", "_ws.expert.message"],
                       capture_output=True, text=True, timeout=60)
    check("tshark reads the capture with the dissector", r.returncode == 0, r.stderr)
    types = set()
    for line in r.stdout.splitlines():
        for value in line.split("\t")[0].split(","):
            if value:
                types.add(int(value, 16))
    check("hello and hello-ack decoded", {0x10, 0x11} <= types, types)
    check("DRE frames decoded", 0x06 in types, types)
    check("half-closes decoded", 0x02 in types, types)
    check("hello offers F and the ack applies F", "\tF\t" in r.stdout and "F\tF" in r.stdout, r.stdout[:2000])
    check("nothing malformed", "Malformed" not in r.stdout and "Malformed" not in r.stderr, r.stdout[:2000])
    info = subprocess.run(["tshark", "-r", pcap, "-X", f"lua_script:{LUA}", "-d", f"tcp.port=={dc_port},wanopt",
                           "-Y", "wanopt"], capture_output=True, text=True, timeout=60)
    print("\n".join(info.stdout.splitlines()[:6]))
    check("the info column names the frames", "hello, offers F" in info.stdout and "hello-ack ok, applies F" in info.stdout,
          info.stdout[:2000])
finally:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    origin.close()
    if os.environ.get("KEEP"):
        print("kept", tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)

sys.exit(check.summary())
