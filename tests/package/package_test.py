#!/usr/bin/python3
"""The Debian package: built by cpack from this build tree, lintian without errors,
the files where Debian puts them, the units as packaged, and wanopt running from
the extracted files. Nothing is installed on this machine: the package is extracted
into a temporary directory, and the maintainer scripts run in a private mount
namespace whose /etc, /var/lib and /var/log are throwaway copies.

Usage: package_test.py PATH_TO_WANOPT BUILD_DIR SOURCE_DIR CPACK
Needs root (unshare, mount); exits 77 otherwise. Prints 'N passed, N failed'.
"""
import glob
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testkit import Checks  # noqa: E402

WANOPT, BUILD, SOURCE, CPACK = sys.argv[1:5]
check = Checks(detail_limit=4000)
started = time.monotonic()

if os.geteuid() != 0:
    print("skipped: needs root (maintainer scripts in a private mount namespace)")
    sys.exit(77)


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)


tmp = tempfile.mkdtemp(prefix="wanopt-package-")
version = run(WANOPT, "--version").stdout.split()[-1]
arch = run("dpkg", "--print-architecture").stdout.strip()
check("wanopt --version prints a version", re.fullmatch(r"\d+\.\d+\.\d+", version), version)

# ------------------------------------------------------------------ build
# cpack from this build tree's config, staging and output in the temp directory.
r = run(CPACK, "--config", os.path.join(BUILD, "CPackConfig.cmake"), "-G", "DEB", "-B", tmp, timeout=120)
deb = os.path.join(tmp, f"wanopt_{version}_{arch}.deb")
if not check(f"cpack builds wanopt_{version}_{arch}.deb", r.returncode == 0 and os.path.exists(deb),
             r.stdout + r.stderr):
    sys.exit(check.summary())
fields = {}
for line in run("dpkg-deb", "-f", deb).stdout.splitlines():
    if ":" in line and not line.startswith(" "):
        key, _, value = line.partition(":")
        fields[key] = value.strip()
check("control: Version is the project's version (what wanopt --version prints)",
      fields.get("Version") == version, fields)
depends = fields.get("Depends", "")
for dep in ["adduser", "iptables", "iproute2", "libc6", "libssl3", "libzstd1", "libnetfilter-queue1"]:
    check(f"control: Depends on {dep}", re.search(rf"(^|, ){re.escape(dep)}\b", depends), depends)

# ------------------------------------------------------------------ lintian
r = run("lintian", deb, timeout=60)
print("lintian:\n" + (r.stdout + r.stderr).strip(), flush=True)
errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
check("lintian: no errors", not errors and "E:" not in r.stderr, "\n".join(errors) + r.stderr)

# ------------------------------------------------------------------ files
root = os.path.join(tmp, "root")
r = run("dpkg-deb", "-x", deb, root)
check("dpkg-deb -x extracts the package", r.returncode == 0, r.stderr)
listing = run("dpkg-deb", "-c", deb).stdout
paths = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
expected = [
    "/usr/bin/wanopt", "/usr/sbin/wanopt-intercept",
    "/lib/systemd/system/wanopt.service", "/lib/systemd/system/wanopt-intercept.service",
    "/usr/share/doc/wanopt/README.md", "/usr/share/doc/wanopt/deploy/README.md",
    "/usr/share/doc/wanopt/copyright", "/usr/share/doc/wanopt/changelog.gz",
    "/usr/share/wanopt/wanopt.lua",
    "/usr/share/man/man1/wanopt.1.gz", "/usr/share/man/man8/wanopt-intercept.8.gz",
] + [f"/usr/share/doc/wanopt/examples/{os.path.basename(p)}"
     for p in sorted(glob.glob(os.path.join(SOURCE, "deploy/examples/*.toml")))]
for path in expected:
    check(f"package holds {path}", path in paths, listing)
stray = sorted(p for p in paths if p.rstrip("/") and not p.startswith(("/usr/", "/lib/systemd/system/"))
               and p not in ("/usr/", "/lib/", "/lib/systemd/"))
check("package holds nothing outside /usr and /lib/systemd/system", not stray, stray)
check("nothing under /usr/local or /etc", not any(p.startswith(("/usr/local", "/etc")) for p in paths))


def mode(rel):
    return os.stat(os.path.join(root, rel)).st_mode & 0o7777


check("wanopt-intercept is executable (0755)", mode("usr/sbin/wanopt-intercept") == 0o755,
      oct(mode("usr/sbin/wanopt-intercept")))
check("wanopt is executable (0755)", mode("usr/bin/wanopt") == 0o755)
sections = run("readelf", "-S", os.path.join(root, "usr/bin/wanopt")).stdout
check("wanopt is stripped (no .symtab)", ".text" in sections and ".symtab" not in sections)
with open(os.path.join(SOURCE, "deploy/intercept"), "rb") as a, \
        open(os.path.join(root, "usr/sbin/wanopt-intercept"), "rb") as b:
    check("wanopt-intercept is deploy/intercept", a.read() == b.read())

# ------------------------------------------------------------------ units


def unit(path):
    """[(key, value)] of a unit file's directives, in order (comments dropped)."""
    pairs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, _, value = line.partition("=")
                pairs.append((key, value))
    return pairs


daemon = unit(os.path.join(root, "lib/systemd/system/wanopt.service"))
intercept = unit(os.path.join(root, "lib/systemd/system/wanopt-intercept.service"))
d = dict(daemon)
check("wanopt.service: User=wanopt, Group=wanopt", d.get("User") == "wanopt" and d.get("Group") == "wanopt", d)
check("wanopt.service: no DynamicUser", "DynamicUser" not in d)
caps = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
for key in ["AmbientCapabilities", "CapabilityBoundingSet"]:
    check(f"wanopt.service: {key} = {' '.join(sorted(caps))}", set(d.get(key, "").split()) == caps, d.get(key))
check("wanopt.service: StateDirectory=wanopt", d.get("StateDirectory") == "wanopt")
check("wanopt.service: runs /usr/bin/wanopt with /etc/wanopt/wanopt.toml",
      d.get("ExecStart") == "/usr/bin/wanopt run --config /etc/wanopt/wanopt.toml"
      and d.get("ExecStartPre") == "/usr/bin/wanopt run --config /etc/wanopt/wanopt.toml --check", d)
# Every other directive of the source unit (hardening, restart policy) is kept as it is.
replaced = {"ExecStart", "ExecStartPre", "DynamicUser", "AmbientCapabilities", "CapabilityBoundingSet",
            "Documentation"}
source = unit(os.path.join(SOURCE, "deploy/systemd/wanopt.service"))
kept = [(k, v) for k, v in source if k not in replaced]
missing = [f"{k}={v}" for k, v in kept if (k, v) not in daemon]
check("wanopt.service keeps every other directive of deploy/systemd/wanopt.service", kept and not missing, missing)
i = dict(intercept)
check("wanopt-intercept.service: runs /usr/sbin/wanopt-intercept",
      i.get("ExecStart", "").startswith("/usr/sbin/wanopt-intercept install")
      and i.get("ExecStop") == "/usr/sbin/wanopt-intercept remove", i)
for name, pairs in [("wanopt.service", daemon), ("wanopt-intercept.service", intercept)]:
    for key, value in pairs:
        if key.startswith("Exec"):
            exe = value.split()[0]
            check(f"{name}: {key} runs a file the package holds ({exe})", exe in paths, exe)
# systemd-analyze (deploy/bootstrap: systemd) with the extracted tree as root: what it
# says about missing targets and commands concerns that root, not the units.
for name in ["wanopt.service", "wanopt-intercept.service"]:
    r = run("systemd-analyze", "verify", f"--root={root}", os.path.join(root, "lib/systemd/system", name))
    out = r.stdout + r.stderr
    bad = [line for line in out.splitlines()
           if re.search(r"Unknown (key|section)|Failed to parse|[Ii]nvalid|not a valid", line)]
    check(f"systemd-analyze verify: {name} has no unknown or malformed directives",
          not bad, bad)

# ------------------------------------------------------------------ documents
with gzip.open(os.path.join(root, "usr/share/doc/wanopt/changelog.gz"), "rt") as f:
    first = f.readline()
check(f"changelog.gz: its latest entry is wanopt ({version})", first.startswith(f"wanopt ({version})"), first)
with open(os.path.join(root, "usr/share/doc/wanopt/copyright")) as f:
    copyright_text = f.read()
check("copyright: machine-readable (DEP-5)",
      copyright_text.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
      and re.search(r"^Files: \*$", copyright_text, re.M) and re.search(r"^License: \S+", copyright_text, re.M),
      copyright_text)
check("copyright: no unexpanded @VARIABLE@", "@" not in copyright_text.replace("@wanopt.invalid", ""))
with gzip.open(os.path.join(root, "usr/share/man/man1/wanopt.1.gz"), "rt") as f:
    man = f.read()
check(f"man page: version {version}", f'"wanopt {version}"' in man, man[:400])
# Every command and option the help texts name is in the man page.
help_text = "".join(run(WANOPT, *args).stdout for args in
                    [("--help",), ("run", "--help"), ("lab", "--help"), ("show", "--help")])
words = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text)) | {"run", "lab", "show"}
absent = sorted(w for w in words if w.replace("-", "\\-") not in man)
check("man page: every command and option of the --help texts", len(words) > 8 and not absent, absent)
for page in ["usr/share/man/man1/wanopt.1.gz", "usr/share/man/man8/wanopt-intercept.8.gz"]:
    r = run("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", os.path.join(root, page))
    check(f"man --warnings: {page} renders without warnings",
          r.returncode == 0 and r.stdout and not r.stderr.strip(), r.stderr)

with open(os.path.join(SOURCE, "README.md")) as f:
    readme = f.read()
check(f"README.md: apt install ./wanopt_{version}_{arch}.deb (the current version)",
      f"apt install ./wanopt_{version}_{arch}.deb" in readme)

# ------------------------------------------------------------------ wanopt from the package
packaged = os.path.join(root, "usr/bin/wanopt")
r = run(packaged, "--version")
check("packaged wanopt --version", r.returncode == 0 and r.stdout.strip() == f"wanopt {version}", r.stdout + r.stderr)
for example in sorted(glob.glob(os.path.join(root, "usr/share/doc/wanopt/examples/*.toml"))):
    r = run(packaged, "run", "--check", "--config", example)
    check(f"packaged wanopt run --check accepts examples/{os.path.basename(example)}",
          r.returncode == 0 and ": ok: " in r.stdout, r.stdout + r.stderr)

# ------------------------------------------------------------------ maintainer scripts
control = os.path.join(tmp, "control")
run("dpkg-deb", "-e", deb, control)
for script in ["postinst", "postrm"]:
    path = os.path.join(control, script)
    check(f"{script}: 0755", os.path.exists(path) and mode(path) == 0o755)
    r = run("sh", "-n", path)
    check(f"{script}: sh -n", r.returncode == 0, r.stderr)
    with open(path) as f:
        text = f.read()
    check(f"{script}: enables and starts nothing",
          not re.search(r"systemctl|deb-systemd|invoke-rc\.d|update-rc\.d", text), text)
with open(os.path.join(control, "postinst")) as f:
    check("postinst: adduser --system --group --no-create-home --home /var/lib/wanopt",
          re.search(r"adduser --system --group .*--no-create-home --home /var/lib/wanopt", f.read()))

# Run them for real, in a private mount namespace over copies of /etc, /var/lib and
# /var/log (adduser writes /etc/passwd and friends by renaming files in /etc, so the
# copy is bound over the whole directory). The marker proves the copy is in place
# before anything runs; the real /etc/passwd and /etc/group are compared afterwards.
fake = os.path.join(tmp, "fake")
for sub in ["etc", "varlib", "varlog"]:
    os.makedirs(os.path.join(fake, sub))
subprocess.run(["cp", "-a", "/etc/.", os.path.join(fake, "etc")], check=True)
real_before = {p: open(p, "rb").read() for p in ["/etc/passwd", "/etc/group"]}
script = f"""set -e
mount --bind {fake}/etc /etc
mount --bind {fake}/varlib /var/lib
mount --bind {fake}/varlog /var/log
touch /etc/.wanopt-package-test
test -e {fake}/etc/.wanopt-package-test
{control}/postinst configure
{control}/postinst configure
echo "user: $(getent passwd wanopt)"
echo "group: $(getent group wanopt)"
echo "etc: $(stat -c '%U:%G %a' /etc/wanopt)"
echo "state: $(stat -c '%U:%G %a' /var/lib/wanopt)"
{control}/postrm remove
echo "after remove: $(getent passwd wanopt | cut -d: -f1) $(test -d /var/lib/wanopt && echo state-kept)"
{control}/postrm purge
echo "after purge: user=$(getent passwd wanopt | cut -d: -f1) group=$(getent group wanopt | cut -d: -f1)\
 state=$(test -e /var/lib/wanopt && echo present || echo absent)"
"""
r = run("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
out = r.stdout
print(out, end="", flush=True)
check("maintainer scripts ran in the private namespace", r.returncode == 0, out + r.stderr)
user = re.search(r"^user: (.*)$", out, re.M)
fields_user = user.group(1).split(":") if user else []
check("postinst (twice): system user wanopt, home /var/lib/wanopt, no login shell",
      len(fields_user) == 7 and fields_user[0] == "wanopt" and int(fields_user[2]) < 1000
      and fields_user[5] == "/var/lib/wanopt" and fields_user[6].endswith("nologin"), out)
check("postinst: group wanopt", re.search(r"^group: wanopt:", out, re.M), out)
check("postinst: /etc/wanopt root:wanopt 0750", "etc: root:wanopt 750" in out, out)
check("postinst: /var/lib/wanopt wanopt:wanopt 0750", "state: wanopt:wanopt 750" in out, out)
check("postrm remove: keeps the user and the state", "after remove: wanopt state-kept" in out, out)
check("postrm purge: user, group and /var/lib/wanopt gone",
      "after purge: user= group= state=absent" in out, out)
check("the real /etc/passwd and /etc/group are untouched",
      all(open(p, "rb").read() == before for p, before in real_before.items()))

shutil.rmtree(tmp)
elapsed = time.monotonic() - started
check(f"the test took under 60 s ({elapsed:.1f} s)", elapsed < 60)
sys.exit(check.summary())
