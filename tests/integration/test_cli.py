"""The command line as a new user meets it (issue 15's rough edges).

- every daemon: --version prints "NAME X.Y.Z" and exits 0; --help starts
  "NAME - summary" (not "NAME - NAME: ...") and lists --version;
- an invalid command line exits 2 before any file is touched: --http
  nonsense, a missing --nats-ca file - in an empty working directory, which
  stays empty (no chunkmill-results.db, no chunkmill-ledger.db);
- "cannot open" errors name the file once (saver --db, fetcher --ledger);
- mapper --help names --transform's values once and CHUNKMILL_TRANSFORM_ARG
  once, and says --version-label is stored with each chunk (chunks.version);
- scripts/*: --help prints the header comment only (no "set -euo
  pipefail"); scripts/run --help names --concurrency and fetcher options
  even before anything is built, each of which the fetcher really has;
- cm_ensure_pkgs (scripts/lib.sh) run by a user without root or sudo names
  the missing packages and how to install them, and fails.
No NATS server needed: nothing here gets as far as connecting.
"""
import os
import re
import shutil
import subprocess
import tempfile

from harness import bin_path, check, finish, tmpdir

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DAEMONS = ["fetcher", "mapper", "saver"]
SCRIPTS = ["run", "test", "bench", "chaos", "fuzz", "image", "test-compose"]


def run(argv, cwd=None, env=None, timeout=30):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("CHUNKMILL_"):
            del e[k]
    e.update(env or {})
    r = subprocess.run(argv, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def version():
    for d in DAEMONS:
        rc, out, err = run([bin_path(d), "--version"])
        assert rc == 0, f"{d} --version: exit {rc}: {err}"
        assert re.fullmatch(rf"{d} \d+\.\d+\.\d+\n", out), f"{d} --version printed {out!r}"


def help_header():
    for d in DAEMONS:
        rc, out, err = run([bin_path(d), "--help"])
        assert rc == 0, f"{d} --help: exit {rc}"
        first = out.splitlines()[0]
        assert first.startswith(f"{d} - "), first
        assert not first.startswith(f"{d} - {d}"), f"{d} --help header names it twice: {first!r}"
        assert re.search(r"^  --version ", out, re.M), f"{d} --help does not list --version"


def invalid_before_files():
    cases = [
        (["--http", "nonsense"], "--http"),
        (["--http", "127.0.0.1:0", "--nats-ca", "/nonexistent/ca.pem"], "--nats-ca"),
    ]
    for d in DAEMONS:
        for args, named in cases:
            cwd = tmpdir(f"cm-cli-{d}-")
            rc, out, err = run([bin_path(d)] + args, cwd=cwd)
            left = os.listdir(cwd)
            assert rc == 2, f"{d} {' '.join(args)}: exit {rc} (want 2): {err.strip()}"
            assert named in err, f"{d} {' '.join(args)}: the error does not name {named}: {err!r}"
            assert not left, f"{d} {' '.join(args)} created {left} before refusing"
            shutil.rmtree(cwd)


def open_errors_once():
    for d, args, path in [
            ("saver", ["--db"], "/nonexistent/dir/results.db"),
            ("fetcher", ["--ledger"], "/nonexistent/dir/ledger.db")]:
        rc, out, err = run([bin_path(d), "--http", "127.0.0.1:0"] + args + [path])
        assert rc == 1, f"{d} {args[0]} {path}: exit {rc}: {err}"
        line = next((x for x in err.splitlines() if x.startswith(f"{d}: ")), "")
        assert path in line and args[0] in line, f"{d}: error line {line!r}"
        assert line.count(path) == 1, f"{d}: the path appears {line.count(path)} times: {line!r}"
        assert line.count("cannot open") <= 1, f"{d}: says it twice: {line!r}"


def mapper_help_once():
    rc, out, err = run([bin_path("mapper"), "--help"])
    assert rc == 0
    lines = {m.group(1): m.group(0) for m in re.finditer(r"^  --([a-z-]+) .*$", out, re.M)}
    t = lines["transform"].split(" (env ")[0]  # the default may repeat a value
    for v in ["identity", "fullname", "burn:", "sleep:", "fail:", "exec:", "plugin:"]:
        assert t.count(v) == 1, f"--transform names {v} {t.count(v)} times: {t!r}"
    a = lines["transform-arg"]
    assert a.count("CHUNKMILL_TRANSFORM_ARG") == 1, f"--transform-arg: {a!r}"
    v = lines["version-label"]
    assert "chunks.version" in v and "heartbeats" in v, f"--version-label: {v!r}"


def scripts_help():
    for name in SCRIPTS:
        rc, out, err = run([os.path.join(ROOT, "scripts", name), "--help"], timeout=60)
        assert rc == 0, f"scripts/{name} --help: exit {rc}: {err[-500:]}"
        assert out.startswith(f"scripts/{name} "), f"scripts/{name} --help starts {out[:60]!r}"
        assert "set -euo pipefail" not in out, f"scripts/{name} --help prints its code"
        assert not re.search(r"^\s*(\. |set |ROOT=|HERE=)", out, re.M), \
            f"scripts/{name} --help prints code:\n{out}"


def run_help_options():
    # As on a fresh clone: no build directory to ask the fetcher.
    rc, out, err = run([os.path.join(ROOT, "scripts", "run"), "--help"],
                       env={"CM_BUILD_DIR": "/nonexistent"})
    assert rc == 0, err
    usage = out[out.index("  scripts/run ["):].split("\n\n", 1)[0]
    assert "--concurrency" in usage, f"the usage line omits --concurrency:\n{usage}"
    fetcher_part = out.split("Every other option", 1)[1]
    named = re.findall(r"^  (--[a-z-]+)", fetcher_part, re.M)
    assert len(named) >= 3, f"no fetcher options in scripts/run --help:\n{out}"
    rc, fh, _ = run([bin_path("fetcher"), "--help"])
    for opt in named:
        assert re.search(rf"^  {opt} ", fh, re.M), f"scripts/run --help names {opt}, fetcher has none"


def run_bad_args():
    # Refused before anything is installed or built: exit 2 naming the option.
    for args, named in [(["--mappers"], "--mappers needs a value"),
                        (["--concurrency"], "--concurrency needs a value"),
                        (["--mappers", "x"], "--mappers must be a positive integer")]:
        rc, out, err = run([os.path.join(ROOT, "scripts", "run")] + args,
                           env={"CM_BUILD_DIR": "/nonexistent"})
        assert rc == 2 and named in err, f"scripts/run {' '.join(args)}: exit {rc}: {err!r}"


def no_root_no_sudo():
    # A user who is not root and has no sudo (as root here: run as nobody,
    # from a folder nobody can reach: $TMPDIR may be under /root).
    base = tempfile.gettempdir()
    p = base
    while p != "/":
        if not os.stat(p).st_mode & 0o001:
            base = "/tmp"
            break
        p = os.path.dirname(p)
    d = tmpdir("cm-cli-nosudo-", parent=base)
    os.chmod(d, 0o755)
    lib = os.path.join(d, "lib.sh")
    shutil.copy(os.path.join(ROOT, "scripts", "lib.sh"), lib)
    os.chmod(lib, 0o644)
    bindir = os.path.join(d, "bin")
    os.mkdir(bindir)
    os.chmod(bindir, 0o755)
    for p in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        if not os.path.isdir(p):
            continue
        for n in os.listdir(p):
            f = os.path.join(p, n)
            if n != "sudo" and os.access(f, os.X_OK) and not os.path.lexists(os.path.join(bindir, n)):
                os.symlink(f, os.path.join(bindir, n))
    argv = ["bash", "-c", '. "$1"; cm_ensure_pkgs bash cm-no-such-package', "scripts/run", lib]
    if os.getuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
    rc, out, err = run(argv, cwd=d, env={"PATH": bindir, "HOME": d})
    assert rc != 0, f"exit 0 with a package missing: {err}"
    assert "command not found" not in err, err
    assert "missing Debian packages: cm-no-such-package" in err, err
    assert "apt-get install -y --no-install-recommends cm-no-such-package" in err, err
    assert "bash" not in err.split("missing Debian packages:")[1].splitlines()[0], \
        f"names an installed package: {err}"


check("--version on every daemon: NAME X.Y.Z, exit 0", version)
check("--help header: 'NAME - summary', lists --version", help_header)
check("invalid --http / --nats-ca: exit 2, nothing created in the working directory",
      invalid_before_files)
check("cannot-open errors name the option and the file once", open_errors_once)
check("mapper --help: --transform values once, CHUNKMILL_TRANSFORM_ARG once, --version-label "
      "names chunks.version", mapper_help_once)
check("scripts/* --help: the header comment, no code", scripts_help)
check("scripts/run --help: --concurrency and real fetcher options before any build",
      run_help_options)
check("scripts/run with a missing or bad value: exit 2 naming the option", run_bad_args)
check("no root and no sudo: missing packages named with the apt-get line, non-zero exit",
      no_root_no_sudo)
finish()
