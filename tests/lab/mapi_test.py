#!/usr/bin/python3
"""The MAPI/EPM module against real peers, in the namespace lab.

Usage: mapi_test.py WANOPT NETLAB DELAYLINE
Needs root (exits 77, which ctest reports as skipped, otherwise). Prints
'N passed, N failed'; exit 1 on failure.

Samba (an AD DC provisioned in a throwaway directory, tests/lab/samba_peer.py)
serves its endpoint mapper on 198.18.2.10:135 in the server namespace; the clients
are python3-impacket and Samba's rpcclient in the client namespace; a branch and a
datacenter box intercept between them, both running the "mapi" module. Samba is no
Exchange server, so the branch is told to remap SAMR (remap_interfaces) as it would
EMSMDB; LSARPC is not remapped.
  1. impacket's ept_map for SAMR through the boxes: the client is told 7830 (the
     proxy port), for LSARPC the real port; directly at the server (no module in the
     way: the dc's own namespace) SAMR's real port.
  2. impacket binds SAMR at server:7830 and calls SamrEnumerateDomainsInSamServer:
     the right domains; the branch shows the EPM connection and the remapped
     connection (optimized, peer = the dc, "remapped: told port 7830").
  3. rpcclient (which asks 135 itself, then connects to what it is told):
     enumdomains gives the same domains through the proxies.
  4. An endpoint mapper bound with integrity: the port is left as the server says.
     4b. The lab is dual-stack: over IPv6 the branch remaps too. impacket asks at
     [2001:2:0:2::10]:135, is told 7830 and calls there (the tower carries IPv4
     only; impacket keeps the address it asked at): the branch redirects the
     connection to the real port, optimized; the binding is in the state file
     under the IPv6 address, and its DNAT rule in ip6tables' WANOPT_MAPI; `wanopt
     show modules`, /api/modules and the status page list both bindings.
  5. Restart: the branch keeps the binding in its state file and has a DNAT rule for
     it in nat WANOPT_MAPI; restarted, it restores both bindings (log line), and a
     call through server:7830 is again optimized and redirected by the daemon; the
     DNAT rule counted no packet while the daemon ran (it leaves intercepted SYNs
     alone).
  6. Fail-open: the branch stopped, the call through server:7830 still answers (the
     kernel's DNAT rule counted it), over IPv4 and over IPv6; with the rules
     flushed it is refused (so the rules are what made it work); restarted, the
     daemon puts both rules back.
  7. mode = "no-remap" on the branch: the client sees the real port and the call
     still goes through the proxies (optimized, peer = the dc).
  8. Expiry: with binding_ttl_s = 3 the binding's DNAT rule and state-file line go
     once it has expired (at the next connection through the branch).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from labkit import Checks, Lab  # noqa: E402

WANOPT, NETLAB, DELAYLINE = (os.path.abspath(a) for a in sys.argv[1:4])
SERVER = "198.18.2.10"
SERVER6 = "2001:2:0:2::10"  # the same server in the dual-stack lab
IDS = {"branch": "02:00:00:00:0b:01", "dc": "02:00:00:00:0d:01"}

if os.geteuid() != 0:
    print("SKIP: the namespace lab needs root")
    sys.exit(77)

import samba_peer  # noqa: E402  (imports impacket helpers lazily)

check = Checks()
EXPECTED = {"WANOPT", "BUILTIN"}


def module_config(lab, box, mode, extra):
    return f"""
[intercept]
[modules.mapi]
mode = "{mode}"
remap_interfaces = ["{samba_peer.SAMR_UUID}"]
state_file = "{state_file(lab, box)}"
{extra}
"""


def state_file(lab, box):
    return os.path.join(lab.work, f"{box}-mapi-bindings")


def start_boxes(lab, mode, extra=""):
    for box in ("branch", "dc"):
        lab.stop(box)
        lab.start_box(box, lab.box_config(box, IDS[box], box, "ca", module_config(lab, box, mode, extra)))


def restart_branch(lab):
    lab.stop("branch")
    lab.start_box("branch", os.path.join(lab.work, f"{lab.prefix}-branch.toml"))


def mapi_rules(lab, iptables="iptables-nft"):
    """The branch's nat WANOPT_MAPI chain, with packet counters (ip6tables-nft: IPv6's)."""
    return lab.run("branch", iptables, "-w", "5", "-t", "nat", "-L", "WANOPT_MAPI", "-v", "-n", "-x").stdout


def dnat_packets(lab, iptables="iptables-nft"):
    return sum(int(line.split()[0]) for line in mapi_rules(lab, iptables).splitlines() if " DNAT " in line)


def eventually(condition, timeout=5.0):
    """condition() once it holds, or its last value after `timeout` s: the branch
    writes its bindings (state file, DNAT rules) on a thread of its own, just after
    the answer that made them has gone to the client."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return repr(e)


def poke(lab, port):
    """A TCP connection from the client to the server's `port` through the branch
    (whatever answers): the branch's mapi box sees a new flow."""
    code = f"import socket; socket.create_connection(('{SERVER}', {port}), timeout=3).close()"
    lab.run("client", "python3", "-c", code)


def main():
    with tempfile.TemporaryDirectory(prefix="wanopt-mapi-") as work:
        subprocess.run([os.path.join(HERE, "make-pki"), os.path.join(work, "pki")], check=True, capture_output=True)
        lab = Lab(f"wp{os.getpid() % 100000}", work, WANOPT, NETLAB, DELAYLINE, ipv6=True)
        peer = None
        try:
            lab.up()
            peer = samba_peer.start(lab.ns("server"), os.path.join(work, "samba"), also=[SERVER6])
            client = lab.ns("client")
            # The server's own view, from the dc's namespace (no module on that path).
            direct = samba_peer.ept_map(SERVER, samba_peer.SAMR_UUID, "1.0", ns=lab.ns("dc"))
            real_samr = direct[0][0] if direct else None
            check("Samba's endpoint mapper answers with SAMR's real port", real_samr and real_samr != 7830, direct)
            start_boxes(lab, "remap")

            # 1. Remapped for SAMR, not for LSARPC.
            towers = samba_peer.ept_map(SERVER, samba_peer.SAMR_UUID, "1.0", ns=client)
            check("ept_map through the boxes: SAMR is told at 7830", towers and towers[0][0] == 7830, towers)
            epm = lab.wait_ended("branch", 135, 0)
            check("branch: the EPM connection, optimized by the dc, classified EPM, the rewrite noted",
                  epm and epm["application"] == "EPM" and epm["peer"] == IDS["dc"] and
                  any(f"SAMR at port {real_samr}, told as 7830" in n for n in epm["notes"]), epm)
            lsa = samba_peer.ept_map(SERVER, samba_peer.LSARPC_UUID, "0.0", ns=client)
            lsa_direct = samba_peer.ept_map(SERVER, samba_peer.LSARPC_UUID, "0.0", ns=lab.ns("dc"))
            check("ept_map through the boxes: LSARPC (not remapped) keeps its real port",
                  lsa and lsa == lsa_direct and lsa[0][0] != 7830, (lsa, lsa_direct))

            # 2. impacket through the remapped port.
            names = samba_peer.samr_enumerate_domains(SERVER, 7830, ns=client)
            check("impacket: SamrEnumerateDomainsInSamServer at server:7830 answers through the proxies",
                  set(names) == EXPECTED, names)
            remapped = lab.wait_ended("branch", real_samr, 0)
            check("branch: the remapped connection goes to the real port, optimized by the dc",
                  remapped and remapped["peer"] == IDS["dc"] and
                  any("remapped: the client was told port 7830" in n for n in remapped["notes"]), remapped)
            dc_side = lab.wait_ended("dc", real_samr, 0)
            check("dc: connected to the real dynamic port for the branch", dc_side and dc_side["peer"] == IDS["branch"],
                  dc_side)
            show = lab.run("branch", WANOPT, "show", "connections", check_rc=True).stdout
            print(show)
            check("wanopt show: the EPM line and the remapped line", ":135 " in show and f":{real_samr} " in show, show)

            # 3. Samba's rpcclient.
            start = lab.last_id("branch")
            names = samba_peer.rpcclient_enumdomains(SERVER, ns=client)
            check("rpcclient: enumdomains through the proxies", set(names) == EXPECTED, names)
            remapped = lab.wait_ended("branch", real_samr, start)
            check("rpcclient's SAMR connection was remapped too",
                  remapped and any("told port 7830" in n for n in remapped["notes"]), remapped)

            # 4. An endpoint mapper bound with integrity: never rewritten.
            start = lab.last_id("branch")
            towers = samba_peer.ept_map(SERVER, samba_peer.SAMR_UUID, "1.0", ns=client, auth_level="integrity")
            epm = lab.wait_ended("branch", 135, start)
            check("EPM with integrity: the client sees the real port, untouched",
                  towers and towers[0][0] == real_samr and epm and
                  any("integrity or privacy" in n for n in epm["notes"]), (towers, epm))

            # 4b. The same endpoint mapper over IPv6: remapped too, the binding kept
            # for the IPv6 address asked (impacket connects to the address it asked
            # with the port it is told).
            start = lab.last_id("branch")
            towers = samba_peer.ept_map(SERVER6, samba_peer.SAMR_UUID, "1.0", ns=client)
            epm = lab.wait_ended("branch", 135, start)
            check("IPv6: ept_map through the boxes: SAMR is told at 7830",
                  towers and towers[0][0] == 7830 and epm and epm["peer"] == IDS["dc"] and
                  epm["server"].startswith(f"[{SERVER6}]") and
                  any(f"SAMR at port {real_samr}, told as 7830" in n for n in epm["notes"]), (towers, epm))
            names = samba_peer.samr_enumerate_domains(SERVER6, 7830, ns=client)
            samr6 = lab.wait_ended("branch", real_samr, start)
            check("IPv6: the call at [server]:7830 answers, redirected to the real port, optimized by the dc",
                  set(names) == EXPECTED and samr6 and samr6["peer"] == IDS["dc"] and
                  samr6["server"] == f"[{SERVER6}]:{real_samr}" and
                  any("remapped: the client was told port 7830" in n for n in samr6["notes"]), (names, samr6))
            check("IPv6: the binding is in the state file under the IPv6 address",
                  eventually(lambda: f"{SERVER6} 7830 {real_samr} SAMR " in read(state_file(lab, "branch"))),
                  read(state_file(lab, "branch")))
            check("IPv6: its DNAT rule in ip6tables' nat WANOPT_MAPI",
                  eventually(lambda: f"to:[{SERVER6}]:{real_samr}" in mapi_rules(lab, "ip6tables-nft")),
                  mapi_rules(lab, "ip6tables-nft"))
            # What the branch tells clients, for the operator: both bindings.
            shown = lab.run("branch", WANOPT, "show", "modules", check_rc=True).stdout
            print(shown)
            rows = [" ".join(line.split()[:4]) for line in shown.splitlines()]
            check("wanopt show modules: the branch's port bindings, IPv4 and IPv6",
                  f"{SERVER} 7830 {real_samr} SAMR" in rows and f"{SERVER6} 7830 {real_samr} SAMR" in rows, shown)
            api = json.loads(lab.run("branch", WANOPT, "show", "modules", "--json", check_rc=True).stdout)
            bindings = [m for m in api["modules"] if m["module"] == "mapi"][0]["tables"]["port_bindings"]
            check("/api/modules: the bindings as objects, ports as numbers, expiring within the TTL",
                  {(b["server"], b["proxy_port"], b["real_port"]) for b in bindings} ==
                  {(SERVER, 7830, real_samr), (SERVER6, 7830, real_samr)} and
                  all(0 < b["expires_in_s"] <= 7200 for b in bindings), api)
            page = lab.run("branch", "curl", "-s", "--max-time", "10", "http://127.0.0.1:7880/").stdout
            modules = page[page.find('<pre id="modules">'):]
            modules = modules[:modules.find("</pre>")]
            check("the status page's Modules section shows both bindings, one a line",
                  "port_bindings: 2 rows\n" in modules and "&#xfffd;" not in modules and
                  any(line.split()[:1] == [SERVER] for line in modules.splitlines()) and
                  any(line.split()[:1] == [SERVER6] for line in modules.splitlines()),
                  modules or page[-3000:])

            # 5. Restart: the binding comes back from the state file.
            eventually(lambda: f"{SERVER} 7830 {real_samr} SAMR " in read(state_file(lab, "branch")))
            state = read(state_file(lab, "branch"))
            check("branch: the binding is in its state file", f"{SERVER} 7830 {real_samr} SAMR " in state, state)
            rules = mapi_rules(lab)
            check("branch: a DNAT rule for the binding in nat WANOPT_MAPI, inert at its expiry",
                  "tcp dpt:7830 mark match ! 0x1 TIME until date" in " ".join(rules.split()) and
                  f"to:{SERVER}:{real_samr}" in rules, rules)
            restart_branch(lab)
            t = time.monotonic()
            names = samba_peer.samr_enumerate_domains(SERVER, 7830, ns=client)
            print(f"branch restarted: SAMR call through server:7830 in {time.monotonic() - t:.2f} s")
            remapped = lab.wait_ended("branch", real_samr, 0)
            check("restarted branch: the call through server:7830 answers, redirected by the daemon, optimized",
                  set(names) == EXPECTED and remapped and remapped["peer"] == IDS["dc"] and
                  any("remapped: the client was told port 7830" in n for n in remapped["notes"]), (names, remapped))
            log = read(os.path.join(lab.work, f"{lab.prefix}-branch.log"))
            check("restarted branch: 'restored 2 port bindings' logged (IPv4 and IPv6)",
                  "restored 2 port bindings" in log, log[-2000:])
            names = samba_peer.samr_enumerate_domains(SERVER6, 7830, ns=client)
            check("restarted branch: the call through [server]:7830 answers", set(names) == EXPECTED, names)
            check("the DNAT rules were not used while the daemon ran (intercepted SYNs carry mark 0x1)",
                  dnat_packets(lab) == 0 and dnat_packets(lab, "ip6tables-nft") == 0,
                  mapi_rules(lab) + mapi_rules(lab, "ip6tables-nft"))

            # 6. Fail-open: the branch stopped, the kernel translates 7830.
            lab.stop("branch")
            t = time.monotonic()
            names = samba_peer.samr_enumerate_domains(SERVER, 7830, ns=client)
            print(f"branch stopped: SAMR call through server:7830 in {time.monotonic() - t:.2f} s")
            check("branch stopped: the call through server:7830 still answers", set(names) == EXPECTED, names)
            check("branch stopped: the kernel's DNAT rule carried it", dnat_packets(lab) >= 1, mapi_rules(lab))
            names = samba_peer.samr_enumerate_domains(SERVER6, 7830, ns=client)
            check("branch stopped: the call through [server]:7830 answers, carried by ip6tables' DNAT rule",
                  set(names) == EXPECTED and dnat_packets(lab, "ip6tables-nft") >= 1,
                  (names, mapi_rules(lab, "ip6tables-nft")))
            for iptables, server, what in (("iptables-nft", SERVER, "the rule, the same call"),
                                           ("ip6tables-nft", SERVER6, "the IPv6 rule, the call through [server]:7830")):
                lab.run("branch", iptables, "-w", "5", "-t", "nat", "-F", "WANOPT_MAPI", check_rc=True)
                try:
                    names = samba_peer.samr_enumerate_domains(server, 7830, ns=client, timeout=15)
                except samba_peer.PeerError as e:
                    names = repr(e)
                check(f"control: without {what} fails", set(names) != EXPECTED, names)
            restart_branch(lab)
            names = samba_peer.samr_enumerate_domains(SERVER, 7830, ns=client)
            check("restarted again: the call works and the daemon put both rules back",
                  set(names) == EXPECTED and eventually(lambda: f"to:{SERVER}:{real_samr}" in mapi_rules(lab)) and
                  eventually(lambda: f"to:[{SERVER6}]:{real_samr}" in mapi_rules(lab, "ip6tables-nft")),
                  (names, mapi_rules(lab), mapi_rules(lab, "ip6tables-nft")))

            # 7. Port remap off.
            start_boxes(lab, "no-remap")
            towers = samba_peer.ept_map(SERVER, samba_peer.SAMR_UUID, "1.0", ns=client)
            check("no-remap: the client is told the real port", towers and towers[0][0] == real_samr, towers)
            names = samba_peer.samr_enumerate_domains(SERVER, real_samr, ns=client)
            c = lab.wait_ended("branch", real_samr, 0)
            check("no-remap: the call at the real port goes through the proxies",
                  set(names) == EXPECTED and c and c["peer"] == IDS["dc"], (names, c))

            # 8. Expiry: the rule and the file line go once the binding has expired.
            start_boxes(lab, "remap", "binding_ttl_s = 3")
            towers = samba_peer.ept_map(SERVER, samba_peer.SAMR_UUID, "1.0", ns=client)
            check("ttl 3 s: told 7830, with a DNAT rule", towers and towers[0][0] == 7830 and
                  eventually(lambda: f"to:{SERVER}:{real_samr}" in mapi_rules(lab)), (towers, mapi_rules(lab)))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and f"to:{SERVER}" in mapi_rules(lab):
                poke(lab, 80)
                time.sleep(0.5)
            check("ttl 3 s: the expired binding's DNAT rule is removed", f"to:{SERVER}" not in mapi_rules(lab),
                  mapi_rules(lab))
            check("ttl 3 s: and its state-file line", f"{SERVER} 7830" not in read(state_file(lab, "branch")),
                  read(state_file(lab, "branch")))
        except Exception as e:  # a broken lab is a failure, never a skip
            check("the lab ran to the end", False, repr(e))
        finally:
            if check.failed:
                lab.print_logs()
                if peer:
                    print("--- samba\n" + peer.tail(30))
            if peer:
                peer.stop()
            lab.down()
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
