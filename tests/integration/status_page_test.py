#!/usr/bin/python3
"""The status page and API against a running `wanopt lab`, judged by a real browser.

Usage: status_page_test.py PATH_TO_WANOPT OUTPUT_DIR
Starts `wanopt lab --json --keep-running`, sends a hostile hello (module names that
are HTML) to its datacenter, then checks the JSON API contract, the metrics, the
`wanopt show` tables, and the page: in headless Chromium with JavaScript (the DOM is
dumped after the scripts ran and searched), as served to a browser without
JavaScript, and as screenshots with and without JavaScript, saved in OUTPUT_DIR.
Prints 'N passed, N failed'; exit 1 on failure.
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testkit import Checks  # noqa: E402

WANOPT, OUT = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)
check = Checks(detail_limit=2000)
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>"]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers, r.read().decode()


def hostile_hello_frame(destination_port):
    """A hello whose module names are HTML, framed per wanopt/docs/inner-channel.md."""
    import xxhash  # python3-xxhash, installed by deploy/bootstrap
    payload = b"WOPT" + bytes([1]) + b"F" + bytes([2, 0, 0, 0, 0, 0x66])
    payload += bytes([4, 0]) + struct.pack(">H", destination_port) + socket.inet_aton("127.0.0.1")
    payload += bytes([0, 0, 0, 0])  # no source address
    payload += bytes([len(HOSTILE)]) + b"".join(bytes([len(h)]) + h.encode() for h in HOSTILE)
    payload += bytes([0])  # no DRE section
    head8 = bytes([0x10, 0]) + struct.pack(">H", 0) + struct.pack(">I", len(payload))
    check_value = xxhash.xxh3_64_intdigest(head8 + payload)
    return head8 + struct.pack(">Q", check_value) + payload


def chromium(url, *flags):
    profile = tempfile.mkdtemp(prefix="wanopt-chromium-")
    try:
        r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={profile}", "--window-size=1400,1100", *flags, url],
                           capture_output=True, text=True, timeout=90)
        return r
    finally:
        shutil.rmtree(profile, ignore_errors=True)


lab = subprocess.Popen([WANOPT, "lab", "--json", "--keep-running"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
try:
    line = lab.stdout.readline()  # the report comes before the lab waits for Ctrl-C
    report = json.loads(line)
    url = report["status_url"]
    check("lab reports a status URL", url.startswith("http://127.0.0.1:"), url)
    check("lab transfers verified", all(t["verified"] for t in report["transfers"]), line)

    # A hostile peer: its hello names modules whose names are HTML.
    dc_host, dc_port = report["datacenter"].rsplit(":", 1)
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with socket.create_connection((dc_host, int(dc_port)), timeout=10) as s:
        s.sendall(hostile_hello_frame(closed_port))
        s.settimeout(10)
        ack = b""
        while len(ack) < 16 + 20:  # the hello-ack frame; then we hang up, as a branch would
            chunk = s.recv(4096)
            if not chunk:
                break
            ack += chunk
        check("the datacenter answers the hostile hello with a hello-ack", ack[:1] == b"\x11" and ack[16:20] == b"WOPT",
              ack[:40])

    # ---- API contract ----
    status, headers, body = get(url + "api/connections")
    check("/api/connections is JSON", headers.get("Content-Type", "").startswith("application/json"), headers)
    conns = json.loads(body)["connections"]
    keys = {"id", "client", "server", "peer", "application", "policy", "lan_in", "lan_out", "wan_in", "wan_out",
            "reduction", "state", "started", "notes"}
    check("every connection has the documented fields", conns and all(keys <= set(c) for c in conns), conns[:1])
    check("policy has ours/peer/negotiated/applied",
          all(set(c["policy"]) == {"ours", "peer", "negotiated", "applied"} for c in conns), conns[:1])
    lab_rows = [c for c in conns if c["side"] == "branch" and c["peer"] == "02:00:00:00:00:02"]
    check("the lab's two transfers are listed on the branch, with the peer's id", len(lab_rows) == 2, conns)
    check("the lab's rows carry their byte counts, DRE chunk counts and a reduction",
          all(c["lan_in"] > 0 and c["wan_out"] > 0 and c["reduction"] > 50 and c["chunks_hit"] + c["chunks_missed"] > 0
              for c in lab_rows), lab_rows)
    check("the second pass is almost all references", lab_rows[1]["reduction"] > 99 and lab_rows[1]["chunks_hit"] > 0,
          lab_rows)
    hostile_rows = [c for c in conns if any(HOSTILE[0] in n for n in c["notes"])]
    check("the hostile module names are in the notes, verbatim in JSON", len(hostile_rows) == 1, conns)
    check("JSON escapes < and > so it can't close a script tag", "<script>" not in body, body[:300])

    status, headers, body = get(url + "api/summary")
    summary = json.loads(body)
    check("/api/summary totals", summary["totals"]["connections_total"] >= 5 and summary["totals"]["lan_bytes"] > 0, summary)
    stores = summary["datastore"]
    check("/api/summary: each lab box's datastore with its chunks, its segment files holding them",
          isinstance(stores, list) and {d["box"] for d in stores} == {"lab-branch", "lab-datacenter"}
          and all(d["chunks"] > 0 and d["bytes"] <= d["max_bytes"] and d["disk_bytes"] >= d["bytes"]
                  and d["read_errors"] == 0 and d["corrupt_dropped"] == 0 for d in stores), stores)
    check("/api/summary: each datastore's read cache within its bound ([dre] read_cache_mb, 32 by default), "
          "hits from memory among the hits",
          isinstance(stores, list) and all(d["read_cache_max_bytes"] == 32 << 20 and
                                           0 < d["read_cache_bytes"] <= d["read_cache_max_bytes"] and
                                           0 <= d["memory_hits"] <= d["hits"] for d in stores), stores)
    check("/api/summary has history", len(summary["history"]) >= 2, summary)
    # Each box: what it is and how its inner channels are secured, from its config
    # (the lab's boxes have no [peering]: plaintext, and the surfaces must say so).
    box_keys = {"name", "device_id", "datacenter", "branch_rules", "policy", "started", "uptime_seconds", "roles", "role",
                "interception", "inner_channel_encryption"}
    boxes = {b["name"]: b for b in summary["boxes"]}
    check("/api/summary: every box has the documented fields",
          set(boxes) == {"lab-branch", "lab-datacenter"} and all(box_keys <= set(b) for b in boxes.values()), summary["boxes"])
    check("/api/summary: roles per box", boxes.get("lab-branch", {}).get("roles") == ["branch"]
          and boxes.get("lab-datacenter", {}).get("roles") == ["datacenter"]
          and all(b["interception"] is None for b in boxes.values()), summary["boxes"])
    check("/api/summary: encryption per box, true to the config",
          all(b["inner_channel_encryption"]["mode"] == "none" and b["inner_channel_encryption"]["plaintext_rules"] == []
              and "plaintext" in b["inner_channel_encryption"]["summary"] for b in boxes.values()), summary["boxes"])
    check("/api/summary: uptime counts", all(isinstance(b["uptime_seconds"], int) and b["uptime_seconds"] >= 0
                                             for b in boxes.values()), summary["boxes"])
    check("/api/summary: the old encryption field is a per-box line, never 'none yet'",
          "lab-branch: none" in summary["inner_channel_encryption"] and "none yet" not in body
          and "arrives with" not in body, summary["inner_channel_encryption"])
    status, headers, body = get(url + "api/peers")
    peers = json.loads(body)["peers"]
    check("/api/peers lists each box's peer", {p["id"] for p in peers} >= {"02:00:00:00:00:01", "02:00:00:00:00:02"}, peers)
    check("/api/peers: every peer says what its address is",
          all({"address_kind", "box_address", "via_server"} <= set(p) for p in peers), peers)
    dc_addr = report["datacenter"]
    branch_view = [p for p in peers if p["box"] == "lab-branch" and p["id"] == "02:00:00:00:00:02"]
    check("/api/peers: the branch's peer is the configured datacenter box, at its address",
          len(branch_view) == 1 and branch_view[0]["address_kind"] == "peer" and branch_view[0]["box_address"] == dc_addr
          and branch_view[0]["via_server"] is None, (dc_addr, branch_view))
    dc_view = [p for p in peers if p["box"] == "lab-datacenter" and p["id"] == "02:00:00:00:00:01"]
    check("/api/peers: the datacenter's peer is where its inner channels came from",
          len(dc_view) == 1 and dc_view[0]["address_kind"] == "source" and dc_view[0]["box_address"] is None
          and dc_view[0]["via_server"] is None,
          dc_view)
    status, headers, body = get(url + "api/connections?filter=nothing-matches-this")
    check("filter", json.loads(body)["connections"] == [], body)

    status, headers, metrics = get(url + "metrics")
    lines = [l for l in metrics.splitlines() if l and not l.startswith("#")]
    check("metrics: every sample line is name{labels} value",
          all(len(l.rsplit(" ", 1)) == 2 and l.rsplit(" ", 1)[1].replace(".", "").isdigit() for l in lines), lines[:5])
    check("metrics: per application and per peer",
          'wanopt_application_lan_bytes_total{box="lab-branch",application="TCP"}' in metrics
          and 'peer="02:00:00:00:00:02"' in metrics, metrics[:500])
    check("metrics: the datastore's read errors, none here",
          'wanopt_datastore_read_errors_total{box="lab-branch"} 0' in metrics
          and 'wanopt_datastore_read_errors_total{box="lab-datacenter"} 0' in metrics, metrics[-800:])
    # No interception in this pair: the discovery counters are there, at zero
    # (discovery_test counts real ones).
    check("metrics and totals: discovery probes and their resent SYNs, none here",
          'wanopt_discovery_probes_total{box="lab-branch"} 0' in metrics and
          'wanopt_discovery_syn_retransmissions_total{box="lab-branch",option="with"} 0' in metrics and
          'wanopt_discovery_syn_retransmissions_total{box="lab-branch",option="without"} 0' in metrics and
          all(summary["totals"].get(k) == 0 for k in ("discovery_probes", "probe_syns_resent_with_option",
                                                       "probe_syns_resent_without_option")),
          (summary["totals"], [l for l in lines if "discovery" in l]))
    # The process's memory: the kernel's resident figure (read here too, at about the
    # same moment) and the heap in use and kept free, in /metrics and the summary. A
    # sanitizer build replaces glibc's malloc: then the heap is reported as unknown.
    with open(f"/proc/{lab.pid}/status") as f:
        vm_rss = int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) * 1024
    with open(f"/proc/{lab.pid}/maps") as f:
        glibc_heap = "libasan" not in f.read()
    series = {l.rsplit(" ", 1)[0]: int(l.rsplit(" ", 1)[1]) for l in lines}
    resident, in_use = series.get("wanopt_process_resident_bytes", 0), series.get(
        'wanopt_process_heap_bytes{state="in_use"}')
    memory = summary.get("memory", {})
    heap_ok = (in_use is not None and in_use > 0 and 'wanopt_process_heap_bytes{state="free"}' in series and
               memory.get("heap_in_use_bytes", 0) > 0 if glibc_heap else
               in_use is None and memory.get("heap_in_use_bytes", 0) is None)
    check("metrics and summary: the process's resident memory (as /proc says, within a quarter), its heap in use "
          "and free (%s)" % ("glibc's" if glibc_heap else "unknown under the sanitizer's allocator"),
          abs(resident - vm_rss) < vm_rss / 4 and heap_ok and
          set(memory) == {"resident_bytes", "heap_in_use_bytes", "heap_free_bytes"},
          (vm_rss, [l for l in lines if "process" in l], memory))
    # Where each box's DRE state is: every part listed, the datastore's as /api/datastore
    # says (the lab is idle by now, so the two readings agree).
    parts = {p: {b: series.get(f'wanopt_memory_bytes{{box="{b}",part="{p}"}}') for b in ("lab-branch", "lab-datacenter")}
             for p in ("read_cache", "chunk_index", "index_db", "write_queue", "peerings")}
    _, _, body = get(url + "api/datastore")
    stores = {s["box"]: s for s in json.loads(body)["datastore"]}
    check("metrics: each box's memory by part, the datastore's parts as /api/datastore says",
          all(v is not None for by_box in parts.values() for v in by_box.values()) and
          all(parts["read_cache"][b] == stores[b]["read_cache_bytes"] and
              parts["chunk_index"][b] == stores[b]["index_memory_bytes"] and
              # (RocksDB's own housekeeping may move its figure between the two readings)
              0 < parts["index_db"][b] <= 2 * stores[b]["index_db_memory_bytes"] and parts["peerings"][b] > 0
              for b in stores), (parts, stores))
    try:
        urllib.request.urlopen(urllib.request.Request(url + "api/connections", method="POST", data=b"x"), timeout=5)
        check("read-only: POST refused", False)
    except urllib.error.HTTPError as e:
        check("read-only: POST refused", e.code == 405, e.code)

    # ---- wanopt show ----
    r = subprocess.run([WANOPT, "show", "connections", "--api", url], capture_output=True, text=True, timeout=30)
    check("show connections: a table with the lab's rows", r.returncode == 0 and r.stdout.count("02:00:00:00:00:02") >= 2
          and "STATE" in r.stdout, r.stdout + r.stderr)
    r = subprocess.run([WANOPT, "show", "connections", "--json", "--api", url], capture_output=True, text=True, timeout=30)
    check("show connections --json", r.returncode == 0 and "connections" in json.loads(r.stdout), r.stdout[:300])
    r = subprocess.run([WANOPT, "show", "peers", "--api", url], capture_output=True, text=True, timeout=30)
    check("show peers", r.returncode == 0 and "02:00:00:00:00:01" in r.stdout and "WHERE" in r.stdout
          and "inner channels from" in r.stdout, r.stdout + r.stderr)
    r = subprocess.run([WANOPT, "show", "summary", "--api", url], capture_output=True, text=True, timeout=30)
    check("show summary: each box's role, uptime and encryption",
          r.returncode == 0 and "box lab-branch (02:00:00:00:00:01): branch (1 forward rule), up " in r.stdout
          and "box lab-datacenter (02:00:00:00:00:02): datacenter, up " in r.stdout
          and r.stdout.count("inner channels: none: inner channels are plaintext") == 2, r.stdout + r.stderr)
    check("show summary: the process's memory, the DRE state's share of the heap",
          re.search((r"^memory: resident {0}; heap in use {0} \(DRE state {0}\), freed and held by the allocator up to "
                     r"{0}$" if glibc_heap else r"^memory: resident {0}; DRE state {0} \(no heap figures from this "
                     r"allocator\)$").format(r"[0-9.]+ (?:B|[KMGT]iB)"), r.stdout, re.M), r.stdout)
    r = subprocess.run([WANOPT, "show", "datastore", "--api", url], capture_output=True, text=True, timeout=30)
    check("show datastore lists both stores", r.returncode == 0 and "lab-branch" in r.stdout and "HIT RATE" in r.stdout,
          r.stdout)
    r = subprocess.run([WANOPT, "show", "connections", "--api", "http://127.0.0.1:9"], capture_output=True, text=True,
                       timeout=30)
    check("show: unreachable API is one clear error, exit 1", r.returncode == 1 and "cannot reach" in r.stderr, r.stderr)

    # ---- the page: in a real browser with JavaScript, and as served (what a browser
    # without JavaScript renders: Chromium's --dump-dom itself needs JavaScript) ----
    r = chromium(url, "--dump-dom")
    status, headers, served = get(url)
    check("page is served with a self-only Content-Security-Policy",
          "default-src 'none'" in headers.get("Content-Security-Policy", ""), headers)
    for mode, dom in (("JavaScript on, in Chromium", r.stdout), ("JavaScript off, as served", served)):
        js = mode.startswith("JavaScript on")
        check(f"page ({mode}): rendered", 'id="connections"' in dom, r.stderr[-500:])
        check(f"page ({mode}): {'refreshes itself' if js else 'a plain page'}",
              ('<span id="autorefresh">refreshing every 2 s</span>' in dom) == js, dom[:300])
        check(f"page ({mode}): lists the lab's connections with the peer id",
              dom.count("02:00:00:00:00:02") >= 2 and "lab-branch" in dom, dom[:500])
        check(f"page ({mode}): the chart renders two series",
              dom.count("<polyline") == 2 and 'points=""' not in dom, dom[dom.find("<svg"):dom.find("</svg>")])
        for h in HOSTILE:
            escaped = h.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            check(f"page ({mode}): hostile text shown escaped: {h}", escaped in dom, "")
        check(f"page ({mode}): each box's role and encryption, no 'none yet'",
              'class="role">branch (1 forward rule)</span>' in dom and 'class="role">datacenter</span>' in dom
              and dom.count('class="encryption">none: inner channels are plaintext') == 2 and "none yet" not in dom,
              dom[:1500])
        check(f"page ({mode}): peers say where the peer is", "<th>where</th>" in dom and "inner channels from" in dom,
              dom[dom.find('id="peers"'):dom.find('id="peers"') + 800])
        check(f"page ({mode}): no injected element", "<img" not in dom and "<script>alert" not in dom,
              [l for l in dom.splitlines() if "alert" in l][:3])
    r = chromium(url, f"--screenshot={os.path.join(OUT, 'status-page.png')}")
    shot = os.path.join(OUT, "status-page.png")
    check("screenshot saved", r.returncode == 0 and os.path.exists(shot) and os.path.getsize(shot) > 20000, r.stderr[-300:])
    print(f"screenshot: {shot}")
finally:
    lab.send_signal(signal.SIGINT)
    try:
        lab.wait(timeout=20)
    except subprocess.TimeoutExpired:
        lab.kill()
        lab.wait()

sys.exit(check.summary())
