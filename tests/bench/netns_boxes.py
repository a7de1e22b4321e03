"""What the namespace-lab benches (intercept_scale_bench, soak_bench) share: the
intercepting lab with a branch and a datacenter box, an asyncio echo server to
stand behind it, readings of a box process and of its metrics, and keeping the
boxes' logs. The lab itself is tests/lab/labkit.py's."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "tests" / "lab"))
from benchkit import proc_status  # noqa: E402
from labkit import Lab  # noqa: E402

SERVER = "198.18.2.10"
SERVER6 = "2001:2:0:2::10"  # in a lab opened with ipv6=True
IDS = {"branch": "02:00:00:00:0b:01", "dc": "02:00:00:00:0d:01"}


async def echo(reader, writer):
    """An asyncio server's connection handler: sends back what it reads, to EOF."""
    try:
        while True:
            data = await reader.read(4096)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def open_lab(prefix, work, wanopt, delay_ms, ipv6=False, one_arm=False):
    """A Lab (not up yet) for `wanopt`, with the lab PKI made in `work`; dual-stack
    with `ipv6`, the boxes policy-routed by their routers with `one_arm`."""
    subprocess.run([str(REPO / "tests/lab/make-pki"), os.path.join(work, "pki")], check=True, capture_output=True)
    build = Path(wanopt).parent.parent
    return Lab(prefix, work, wanopt, str(REPO / "tests/lab/netlab"), str(build / "tests/lab/wanopt_delayline"),
               delay_ms=delay_ms, ipv6=ipv6, one_arm=one_arm)


def box_config(lab, box, extra, log_level, keepalive_ms=None):
    """labkit's box config with `threads = 2`, `log_level` and, if given, `keepalive_ms`."""
    path = lab.box_config(box, IDS[box], box, extra=extra)
    text = Path(path).read_text().replace("threads = 1", "threads = 2")
    text = text.replace('log_level = "debug"', 'log_level = "%s"' % log_level)
    if keepalive_ms is not None:
        text = text.replace("\n[dre]\n", "\n[timeouts]\nkeepalive_ms = %d\n[dre]\n" % keepalive_ms, 1)
        assert "keepalive_ms" in text, "labkit's box config has no [dre] table to put [timeouts] before"
    Path(path).write_text(text)
    return path


def fd_kinds(pid):
    """A process's open descriptors by kind: socket, pipe, file, anon_inode:[...]."""
    kinds = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target else "file"
        if kind == "anon_inode":
            kind = target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def box_reading(pid):
    """benchkit.proc_status (VmRSS etc. in bytes, fds) and the descriptors by kind."""
    reading = proc_status(pid)
    reading["fd_kinds"] = fd_kinds(pid)
    return reading


def summed(series):
    """Prometheus samples ({'name{labels}': value}, Lab.series) summed by name."""
    vals = {}
    for sample, value in series.items():
        name = sample.split("{")[0]
        vals[name] = vals.get(name, 0) + value
    return vals


def metrics(lab, box):
    """The box's Prometheus metrics, each summed over its labels."""
    return summed(lab.series(box))


def wait_metric(lab, box, name, pred, timeout=60):
    """Polls the metric until pred(value) (bounded); returns the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        v = metrics(lab, box).get(name)
        if v is not None and pred(v):
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(0.2)


def keep_logs(work, dest):
    """Copies the lab's logs (work/*.log) into dest."""
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(work):
        if name.endswith(".log"):
            shutil.copy(os.path.join(work, name), dest)
