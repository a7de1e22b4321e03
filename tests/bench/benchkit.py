"""Shared machinery of the Python benchmarks (relay_bench, wan_bench, smb_bench).

One copy of each helper the benches had repeated: the log line, the fatal
error, running a command, children started in their own session and stopped by
PID, /proc readings, the machine and binary identity, a binary snapshot taken
once it is stable, median and number formats, and writing the JSON and the
Markdown of a run. Standard library only; imported from the benches' directory.
"""

import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

_log_name = ["bench"]


class BenchError(Exception):
    """Fatal setup/runtime problem; message is shown to the user."""

    exit_code = 2


class DaemonDied(BenchError):
    exit_code = 3


def set_log_name(name):
    """The tag of every log line: the bench's script name."""
    _log_name[0] = name


def log(msg):
    print("[%s %s] %s" % (_log_name[0], time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def _sigterm(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def interrupt_on_signals():
    """SIGTERM and SIGHUP end a run like ^C: the finally blocks clean up."""
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)


# ---------------------------------------------------------------------------
# Running commands
# ---------------------------------------------------------------------------


def run(argv, timeout=60, check=False, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise BenchError("%s: exit %d: %s" % (" ".join(map(str, argv)), r.returncode, r.stderr.strip()[-500:]))
    return r


def run_quiet(argv, timeout=10):
    """run() for probes that may fail: (returncode or None, stdout, stderr), stripped."""
    try:
        r = run(argv, timeout=timeout)
        return r.returncode, r.stdout.strip(), r.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "", str(e)


# ---------------------------------------------------------------------------
# Children in their own session, stopped by PID
# ---------------------------------------------------------------------------


def tail_file(path, max_lines=30, max_bytes=16384):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    lines = data.splitlines()
    return "\n".join(lines[-max_lines:])


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines()) or prefix + "(empty)"


class Proc:
    def __init__(self, name, popen, stderr_path, group):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.stderr_path = stderr_path
        self.group = group  # signal the child's own process group too
        self.stop_info = None

    def alive(self):
        return self.popen.poll() is None

    def stderr_tail(self, lines=30):
        if self.stderr_path is None:
            return "(stderr not captured)"
        return tail_file(self.stderr_path, lines)

    def check_alive(self):
        rc = self.popen.poll()
        if rc is not None:
            raise DaemonDied(
                "%s (pid %d) exited unexpectedly with status %s; stderr tail:\n%s"
                % (self.name, self.pid, rc, indent(self.stderr_tail())))


class ProcSet:
    """Starts children in their own session and stops exactly those PIDs."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, stderr_path=None, stdin=subprocess.DEVNULL,
              stdout=subprocess.DEVNULL, group=False, nofile=None):
        if stderr_path is not None:
            err = open(stderr_path, "wb")
        else:
            err = subprocess.DEVNULL
        preexec = None
        if nofile:
            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        try:
            popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err,
                                     start_new_session=True, close_fds=True,
                                     preexec_fn=preexec)
        except (OSError, subprocess.SubprocessError) as e:
            raise BenchError("cannot start %s (%s): %s" % (name, argv[0], e))
        finally:
            if stderr_path is not None:
                err.close()
        proc = Proc(name, popen, stderr_path, group)
        self.procs.append(proc)
        return proc

    def _signal(self, proc, sig):
        # Only while the child is unreaped, so its PID (and PGID == PID, as it
        # is a session leader) cannot have been reused.
        if proc.popen.returncode is not None:
            return
        try:
            if proc.group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass

    def stop(self, proc, timeout=5.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Records how it ended."""
        if proc not in self.procs:
            return proc.stop_info
        info = {"name": proc.name, "pid": proc.pid}
        rc = proc.popen.poll()
        if rc is not None:
            info.update(already_exited=True, returncode=rc)
        else:
            t0 = time.monotonic()
            self._signal(proc, signal.SIGTERM)
            try:
                rc = proc.popen.wait(timeout=timeout)
                info.update(already_exited=False, returncode=rc, sigterm_ok=True,
                            stop_seconds=round(time.monotonic() - t0, 3))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                try:
                    rc = proc.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    rc = None
                info.update(already_exited=False, returncode=rc, sigterm_ok=False,
                            stop_seconds=round(time.monotonic() - t0, 3))
        for stream in (proc.popen.stdin, proc.popen.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.procs.remove(proc)
        proc.stop_info = info
        return info

    def stop_all(self):
        for proc in list(reversed(self.procs)):
            try:
                self.stop(proc, timeout=3.0)
            except Exception as e:  # keep cleaning up
                log("warning: failed to stop %s (pid %d): %s" % (proc.name, proc.pid, e))


# ---------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------


def read_first(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmSize", "VmPeak", "RssAnon", "RssFile"):
                    out[key] = int(val.split()[0]) * 1024
                elif key == "Threads":
                    out[key] = int(val)
    except OSError:
        pass
    try:
        out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        pass
    return out


def proc_nofile_limit(pid):
    try:
        with open("/proc/%d/limits" % pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    parts = line.split()
                    return {"soft": parts[3], "hard": parts[4]}
    except OSError:
        pass
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid, children=False):
    """utime+stime (and reaped children's time if children=True) in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def proc_children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return f.read().split()
    except OSError:
        return []


# ---------------------------------------------------------------------------
# The machine and the binaries
# ---------------------------------------------------------------------------


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def _mtime_utc(st):
    return datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")


def binary_identity(path):
    try:
        st = os.stat(path)
        digest = sha256_file(path)
    except OSError as e:
        return {"path": str(path), "error": str(e)}
    return {"path": str(path), "sha256": digest, "size": st.st_size, "mtime_utc": _mtime_utc(st)}


def snapshot_binary(src, dst, timeout=600):
    """Waits until src exists, is older than 5 s and runs; copies it to dst, so a
    rebuild during the run changes nothing. Returns src's identity."""
    deadline = time.monotonic() + timeout
    warned = False
    while True:
        try:
            st = os.stat(src)
            if time.time() - st.st_mtime > 5:
                shutil.copy2(src, dst)
                if os.stat(src).st_mtime == st.st_mtime:
                    r = run([str(dst), "--help"], timeout=10)
                    if r.returncode in (0, 1, 2):
                        return {"path": str(src), "sha256": sha256_file(dst), "size": st.st_size,
                                "mtime_utc": _mtime_utc(st)}
        except (OSError, subprocess.SubprocessError):
            pass
        if time.monotonic() > deadline:
            raise BenchError("binary %s missing or changing for %d s" % (src, timeout))
        if not warned:
            log("waiting for %s (missing or just rebuilt)" % src)
            warned = True
        time.sleep(3)


def machine_basics():
    """What every bench records of the machine; each adds its own tools' versions."""
    info = {"nproc": os.cpu_count(), "kernel": platform.release(), "machine": platform.machine(),
            "hostname": platform.node(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "loadavg_start": read_first("/proc/loadavg")}
    rc, out, _ = run_quiet(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    info["git_commit"] = out if rc == 0 and out else None
    return info


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def git_dirty_entries():
    rc, out, _ = run_quiet(["git", "-C", str(REPO_ROOT), "status", "--porcelain"])
    return len(out.splitlines()) if rc == 0 else None


# ---------------------------------------------------------------------------
# Figures and output
# ---------------------------------------------------------------------------


def median(values):
    """The median of the values that are not None; None if there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_s(v):
    return "-" if v is None else ("%.2f" % v if v < 100 else "%.1f" % v)


def fmt_b(v):
    return "-" if v is None else "{:,}".format(int(v))


def fmt_x(v):
    return "-" if v is None else ("%.2fx" % v if v < 100 else "%.0fx" % v)


def write_outputs(results, text, json_path, markdown_path, json_indent=1):
    """The run's JSON and Markdown, each written whole (tmp + rename); a path
    that cannot be written is logged, the other is still written."""
    for path, content in ((json_path, json.dumps(results, indent=json_indent) + "\n"), (markdown_path, text)):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(content)
            os.replace(tmp, path)
        except OSError as e:
            log("warning: cannot write %s: %s" % (path, e))
    return text
