"""What the Python test scripts share (tests/integration, tests/lab, tests/bench):
checks that print 'ok:'/'FAIL:' lines and the closing 'N passed, N failed', a free
loopback port, and polling a condition with a deadline.

A script imports it with the tests/ directory on its path, computed from its own
location:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from testkit import Checks, free_port, wait_listening, wait_until

Synchronisation is by polling with deadlines, never by sleeping a fixed time."""
import socket
import time


class Checks:
    """check(name, condition, detail): counts and prints one line per check
    ('ok: NAME' or 'FAIL: NAME DETAIL', flushed so it interleaves with the output of
    the processes a test runs); returns the condition. `detail_limit` cuts a long
    detail to that many characters. summary() prints 'N passed, N failed' and
    returns the exit code (1 if any check failed)."""

    def __init__(self, detail_limit=None):
        self.passed = self.failed = 0
        self.detail_limit = detail_limit

    def __call__(self, name, condition, detail=""):
        if condition:
            self.passed += 1
            print(f"ok: {name}", flush=True)
        else:
            self.failed += 1
            detail = str(detail)
            if self.detail_limit is not None:
                detail = detail[:self.detail_limit]
            print(f"FAIL: {name} {detail}", flush=True)
        return condition

    def summary(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0


def free_port():
    """A TCP port on 127.0.0.1 nothing listened on a moment ago (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, seconds):
    """True once cond() holds, polled until `seconds` pass; then cond() one last time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)  # polling a condition with a deadline, not a synchronisation sleep
    return cond()


def listening(port):
    """True if 127.0.0.1:`port` accepts a connection now."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(port, proc=None, timeout=10):
    """True once 127.0.0.1:`port` accepts connections; False after `timeout` s, or as
    soon as `proc` (a subprocess.Popen, if given) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        if listening(port):
            return True
        time.sleep(0.05)  # polling a condition with a deadline, not a synchronisation sleep
    return False
