#!/usr/bin/python3
"""The shipped Wireshark dissector reads what the pair puts on the wire.

Usage: dissector_test.py PATH_TO_WANOPT SOURCE_DIR
Runs a datacenter and a branch proxy (DRE on) on 127.0.0.1, captures the inner
channel with tshark while two transfers cross it, then decodes the capture with
deploy/wireshark/wanopt.lua and checks the frames it names.
Prints 'N passed, N failed'; exit 1 on failure.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

WANOPT, SOURCE = sys.argv[1], sys.argv[2]
LUA = os.path.join(SOURCE, "deploy", "wireshark", "wanopt.lua")
passed = failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name} {str(detail)[:3000]}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)  # polling a condition with a deadline
    return False


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
    check("proxies listen", wait_listening(dc_port, dc) and wait_listening(branch_port, branch))

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

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
