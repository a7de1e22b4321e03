"""wan_bench's measurements: one fetch of the big file, a block of set-up
connections, the WAN packets of one set-up (tshark), the boxes' log findings,
and one profile's whole run (lab up, interleaved repeats, lab down)."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from benchkit import BenchError, log, median, sha256_file
from wan_lab import DC_WAN, IDS, PROFILES, SERVER, STATUS, TINY_BYTES, Lab


def counters_delta(before, after):
    out = {}
    for k in after:
        if k in before:
            out[k] = {f: after[k][f] - before[k][f] for f in ("packets", "bytes", "lost", "queue_drops",
                                                                "overflow_drops")}
            out[k]["link"] = "%s->%s" % (after[k]["from"], after[k]["to"])
    return out


def transfer(lab, path_kind, pass_kind, repeat, file_info, max_time, shm, results):
    """One fetch of the big file; returns the sample dict."""
    out = os.path.join(shm, "fetch.out")
    if os.path.exists(out):
        os.unlink(out)
    before = lab.wan_counters()
    cpu0 = lab.box_cpu() if path_kind == "pair" else None
    m = lab.curl("http://%s/%s" % (SERVER, file_info["name"]), out, max_time)
    cpu1 = lab.box_cpu() if path_kind == "pair" else None
    after = lab.wan_counters()
    sample = {"profile": lab.profile["name"], "path": path_kind, "pass": pass_kind, "repeat": repeat,
              "seconds": m.get("time_total"), "curl": m}
    sample["wan_ip"] = counters_delta(before, after)
    sample["wan_ip_bytes"] = sum(v["bytes"] for v in sample["wan_ip"].values()) if sample["wan_ip"] else None
    if cpu0 and cpu1:
        sample["box_cpu_seconds"] = {b: (round(cpu1[b] - cpu0[b], 2) if cpu1[b] is not None and cpu0[b] is not None
                                         else None) for b in cpu0}
    ok = m.get("curl_rc") == 0 and m.get("http_code") == 200
    if ok:
        digest = sha256_file(out)
        sample["sha256_ok"] = digest == file_info["sha256"]
        if not sample["sha256_ok"]:
            ok = False
            sample["error"] = "sha256 mismatch: got %s" % digest
    else:
        sample["sha256_ok"] = False
        sample["error"] = m.get("error") or "http %s" % m.get("http_code")
    if os.path.exists(out):
        os.unlink(out)
    if path_kind == "pair" and m.get("local_port"):
        b = lab.connection_of("branch", m["local_port"])
        d = lab.connection_of("dc", m["local_port"], timeout=5)
        sample["branch_connection"] = b
        sample["dc_connection"] = d
        if d:
            # The datacenter box encodes the download: the zstd level its governor chose.
            sample["dc_lz_level"], sample["dc_lz_level_peak"] = d.get("lz_level"), d.get("lz_level_peak")
        if b:
            sample["lan_bytes"] = b["lan_in"] + b["lan_out"]
            sample["wan_bytes"] = b["wan_in"] + b["wan_out"]
            sample["reduction"] = 1 - sample["wan_bytes"] / sample["lan_bytes"] if sample["lan_bytes"] else None
            sample["optimized"] = bool(b.get("peer") == IDS["dc"] and not any(
                "pass-through" in n for n in b.get("notes", [])))
            if not sample["optimized"]:
                results["warnings"].append("profile %s repeat %d %s pass: NOT optimized: peer %r, notes %r"
                                           % (lab.profile["name"], repeat, pass_kind, b.get("peer"), b.get("notes")))
        else:
            sample["optimized"] = None
            results["warnings"].append("profile %s repeat %d %s pass: connection not found in the branch's "
                                       "status API" % (lab.profile["name"], repeat, pass_kind))
        for box in ("branch", "dc"):
            if not lab.box_alive(box):
                raise BenchError("the %s box died during the %s pass (see its log)" % (box, pass_kind))
    if not ok:
        results["errors"].append("profile %s repeat %d %s %s: %s" % (lab.profile["name"], repeat, path_kind,
                                                                     pass_kind, sample.get("error")))
    log("  %-6s %-6s %8.2f s  %s  WAN IP %s B%s%s" % (
        path_kind, pass_kind, sample["seconds"] or -1, "sha256 ok" if sample["sha256_ok"] else "FAILED",
        sample["wan_ip_bytes"],
        ("  branch lan %d wan %d (%.2f%%)" % (sample["lan_bytes"], sample["wan_bytes"], 100 * sample["reduction"])
         if sample.get("lan_bytes") else ""),
        ("  dc zstd level %s (peak %s)" % (sample["dc_lz_level"], sample["dc_lz_level_peak"])
         if sample.get("dc_lz_level_peak") else "")))
    return sample


def setup_block(lab, path_kind, repeat, count, results):
    samples = []
    for i in range(count):
        m = lab.curl("http://%s/tiny.txt" % SERVER, "/dev/null", 30)
        s = {"profile": lab.profile["name"], "path": path_kind, "repeat": repeat, "index": i,
             "time_connect": m.get("time_connect"), "time_starttransfer": m.get("time_starttransfer"),
             "time_total": m.get("time_total"), "local_port": m.get("local_port"),
             "ok": m.get("curl_rc") == 0 and m.get("http_code") == 200 and m.get("size_download") == TINY_BYTES}
        if not s["ok"]:
            s["error"] = m.get("error") or "http %s size %s" % (m.get("http_code"), m.get("size_download"))
            results["errors"].append("profile %s setup %s #%d: %s" % (lab.profile["name"], path_kind, i, s["error"]))
        samples.append(s)
        time.sleep(0.2)
    if path_kind == "pair":
        for s in samples:
            if s.get("local_port"):
                b = lab.connection_of("branch", s["local_port"], timeout=5)
                s["optimized"] = bool(b and b.get("peer") == IDS["dc"] and not any(
                    "pass-through" in n for n in b.get("notes", [])))
                s["branch_notes"] = b.get("notes") if b else None
                if not s["optimized"]:
                    results["warnings"].append("profile %s setup connection %d not optimized: %r"
                                               % (lab.profile["name"], s["index"], b))
    c = [s["time_connect"] for s in samples if s["ok"]]
    t = [s["time_starttransfer"] for s in samples if s["ok"]]
    log("  set-up %-6s x%d: connect median %.1f ms, starttransfer median %.1f ms" % (
        path_kind, count, 1000 * (median(c) or -1), 1000 * (median(t) or -1)))
    return samples


def capture_setup(lab, work):
    """The WAN packets of one tiny fetch through the pair (tshark on the branch's wan0):
    shows which round trips a new connection costs."""
    if shutil.which("tshark") is None:
        return {"error": "tshark not installed"}
    err_path = os.path.join(work, "tshark.err")
    with open(err_path, "wb") as err:
        p = subprocess.Popen(["ip", "netns", "exec", lab.ns("branch"), "tshark", "-l", "-n", "-i", "wan0", "-f",
                              "tcp port 80", "-T", "fields", "-E", "separator=|", "-e", "frame.time_epoch",
                              "-e", "ip.src", "-e", "tcp.len", "-e", "tcp.flags.str"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                             start_new_session=True)
    lab.procs["tshark"] = p
    try:
        deadline = time.monotonic() + 20
        while b"Capturing on" not in Path(err_path).read_bytes():
            if time.monotonic() > deadline or p.poll() is not None:
                return {"error": "tshark did not start: " + Path(err_path).read_text()[-300:]}
            time.sleep(0.1)
        time.sleep(0.5)
        t0 = time.time()
        m = lab.curl("http://%s/tiny.txt" % SERVER, "/dev/null", 30)
        time.sleep(1.0)
    finally:
        lab.stop("tshark")
    rtt = 2 * lab.profile["delay_ms"] / 1000
    packets, first = [], None
    for line in p.stdout.read().splitlines():
        f = line.split("|")
        if len(f) < 4:
            continue
        try:
            first = float(f[0]) if first is None else first
            t = float(f[0]) - first
        except ValueError:
            continue
        packets.append({"t_ms": round(1000 * t, 1), "t_rtt": round(t / rtt, 2),
                        # The probe leaves from the client's address (transparent): the
                        # datacenter's side is the server's address or its own.
                        "dir": "dc->branch" if f[1] in (SERVER, DC_WAN) else "branch->dc",
                        "payload": int(f[2] or 0), "flags": f[3].replace("\u00b7", "").replace("·", "").strip()})
    return {"curl": m, "rtt_s": rtt, "packets": packets,
            "curl_start_to_first_packet_ms": round(1000 * (first - t0), 1) if first else None,
            "note": "t from the first packet (the branch's probe SYN); tshark on the branch's wan0 (port 80: "
                    "the probe connection is the inner channel)"}


def log_findings(lab):
    """warn/error lines and pass-through reasons from both boxes' logs."""
    out = {}
    for box in ("branch", "dc"):
        try:
            with open(lab.log_path(box), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        lines = text.splitlines()
        bad = [l for l in lines if re.search(r"\b(warn|warning|error|fatal)\b", l, re.I)]
        passes = [l for l in lines if "pass-through" in l or "pass through" in l]
        uniq = []
        for l in bad + passes:
            key = re.sub(r"\d+", "N", l)
            if key not in [re.sub(r"\d+", "N", u) for u in uniq]:
                uniq.append(l)
        out[box] = {"lines": len(lines), "bytes": len(text), "warn_error_lines": len(bad),
                    "pass_through_lines": len(passes), "distinct_examples": uniq[:25]}
    return out


def run_profile(args, pname, work, shm, wanopt, delayline, file_info, results):
    profile = PROFILES[pname]
    repeats = args.repeats if args.repeats else (1 if args.quick or pname == "b" else 3)
    per_block = max(1, -(-args.connections // repeats))
    rate_bps = profile["rate_mbit"] * 1e6
    direct_estimate = file_info["size"] * 8 / rate_bps
    max_time = int(3 * direct_estimate + 120)
    prof = {"profile": profile, "repeats": repeats, "setup_connections_per_block": per_block,
            "curl_max_time_s": max_time, "transfers": [], "setup": [], "prefix": args.prefix}
    results["profiles"][pname] = prof
    lab = Lab(args.prefix, work, wanopt, delayline, profile, args.log_level, args.lz_level_max)
    t_profile = time.monotonic()
    try:
        log("profile %s: netlab up --delay-ms %d --rate-mbit %s --intercept (prefix %s)"
            % (pname, profile["delay_ms"], profile["rate_mbit"], args.prefix))
        prof["netlab_up"] = lab.up().strip().splitlines()
        lab.start_origin(os.path.join(work, "www"))
        r = lab.run("client", "ping", "-c", "5", "-i", "0.2", "-q", SERVER, timeout=30)
        m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", r.stdout)
        prof["ping_rtt_ms"] = {"min": float(m.group(1)), "avg": float(m.group(2)), "max": float(m.group(3))} if m else None
        # Is the origin fast enough not to matter? Fetch the file from the dc
        # namespace (one veth hop, no WAN, no daemon).
        t0 = time.monotonic()
        r = lab.run("dc", "curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                    "http://%s/%s" % (SERVER, file_info["name"]), timeout=120)
        try:
            secs, size = r.stdout.split()
            prof["origin_check"] = {"from": "dc namespace (LAN veth, no WAN, no daemon)", "seconds": float(secs),
                                    "bytes": int(size), "MB_per_s": round(int(size) / float(secs) / 1e6, 1)}
        except ValueError:
            prof["origin_check"] = {"error": r.stderr.strip()}
        log("profile %s: ping %s ms; origin alone %s MB/s" % (
            pname, prof["ping_rtt_ms"], prof["origin_check"].get("MB_per_s")))
        for rep in range(1, repeats + 1):
            log("profile %s repeat %d/%d" % (pname, rep, repeats))
            # direct: no daemon bound to the queue, the rules let everything pass
            prof["transfers"].append(transfer(lab, "direct", "-", rep, file_info, max_time, shm, results))
            prof["setup"] += setup_block(lab, "direct", rep, per_block, results)
            lab.start_boxes(wipe=True)
            prof["transfers"].append(transfer(lab, "pair", "first", rep, file_info, max_time, shm, results))
            prof["transfers"].append(transfer(lab, "pair", "second", rep, file_info, max_time, shm, results))
            prof["setup"] += setup_block(lab, "pair", rep, per_block, results)
            if rep == repeats and args.capture:
                prof["setup_capture"] = capture_setup(lab, work)
            ds = lab.run("branch", "curl", "-s", "-m", "5", STATUS + "/api/datastore")
            try:
                prof.setdefault("datastore_branch", []).append(json.loads(ds.stdout))
            except ValueError:
                pass
            prof.setdefault("box_stops", []).append(lab.stop_boxes())
        prof["box_configs"] = {box: lab.box_config(box)[1] for box in ("branch", "dc")}
    finally:
        try:
            lab.stop_boxes()
            prof["log_findings"] = log_findings(lab)
            for box in ("branch", "dc"):
                src = lab.log_path(box)
                if args.keep_logs and os.path.exists(src):
                    os.makedirs(args.keep_logs, exist_ok=True)
                    dst = os.path.join(args.keep_logs, os.path.basename(src))
                    shutil.copy(src, dst)
        finally:
            prof["netlab_down"] = lab.down().splitlines()
            prof["wall_seconds"] = round(time.monotonic() - t_profile, 1)
            log("profile %s: lab down after %.0f s" % (pname, prof["wall_seconds"]))
