"""A throwaway PostgreSQL server for tests (Debian's postgresql package).

PgServer() runs initdb + pg_ctl from /usr/lib/postgresql/<N>/bin on a free
loopback port with its data directory in a new temporary folder, as an
unprivileged user (initdb refuses root: when run as root, the server runs as
`nobody` through runuser). Host connections need the password (scram); the
folder is removed by stop(), at exit, or on SIGTERM of the test.

    python3 pg.py exec -- CMD ARGS...   runs CMD with CM_TEST_PG_DSN set to a
                                        fresh database on a fresh server;
                                        exits 77 (ctest SKIP) when PostgreSQL
                                        is not installed.
"""
import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
PASSWORD = "cm-test-secret"


def bin_dir():
    """The newest /usr/lib/postgresql/N/bin with initdb, or None."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(dirs[-1]) if dirs else None


def skip_reason():
    """None when a server can be started here, else why not."""
    if bin_dir() is None:
        return "PostgreSQL is not installed (Debian package postgresql, in CM_TEST_PKGS)"
    if shutil.which("psql") is None:
        return "psql is not installed (Debian package postgresql-client)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL unprivileged"
    return None


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_servers = []


def _reachable_tmp():
    """The folder for a server's files: $TMPDIR, unless it runs as root and
    `nobody` (who runs the server) cannot reach $TMPDIR (a build tree under
    /root, mode 700): then /tmp. The folder is removed when the server stops
    or the test exits."""
    d = tempfile.gettempdir()
    if os.geteuid() != 0:
        return d
    r = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-x", d],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return d if r.returncode == 0 else "/tmp"


class PgServer:
    def __init__(self, fsync=False, extra_conf=()):
        self.bin = bin_dir()
        self.port = _free_port()
        self.tmp = tempfile.mkdtemp(prefix="cm-pg-", dir=_reachable_tmp())
        self.data = os.path.join(self.tmp, "data")
        self.log = os.path.join(self.tmp, "postgres.log")
        self.user = None
        os.chmod(self.tmp, 0o755)
        if os.geteuid() == 0:
            self.user = "nobody"
            shutil.chown(self.tmp, user="nobody")
        _servers.append(self)
        pwfile = os.path.join(self.tmp, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if self.user:
            shutil.chown(pwfile, user="nobody")
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                   "-E", "UTF8", "--locale=C", "--auth-local=trust",
                   "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-N"], timeout=120)
        os.unlink(pwfile)
        conf = [f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{self.tmp}'", f"fsync = {'on' if fsync else 'off'}",
                "synchronous_commit = on", "max_connections = 50", "shared_buffers = 32MB",
                "log_min_messages = warning", "log_connections = off"] + list(extra_conf)
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            f.write("\n".join(conf) + "\n")
        self.start()

    def _run(self, argv, timeout=60, check=True):
        if self.user:
            argv = ["runuser", "-u", self.user, "--"] + argv
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           cwd=self.tmp, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"{argv[-1] if argv else ''}: exit {r.returncode}: "
                               f"{r.stdout.decode(errors='replace')[-2000:]}")
        return r

    def start(self):
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-w",
                   "-t", "60", "start"], timeout=90)

    def crash(self):
        """Stops the server the hard way (no checkpoint: recovery at start)."""
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w",
                   "stop"], timeout=60, check=False)

    def stop(self):
        if self in _servers:
            _servers.remove(self)
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate",
                       "-w", "-t", "20", "stop"], timeout=40, check=False)
        self._kill_leftover()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _kill_leftover(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def dsn(self, db="postgres", password=True):
        pw = f":{PASSWORD}" if password else ""
        return f"postgresql://postgres{pw}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db="postgres", timeout=60):
        """Runs sql; returns stdout (unaligned, tuples only)."""
        env = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="5")
        r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.decode(errors='replace').strip()}")
        return r.stdout.decode().strip()

    def rows(self, sql, db="postgres"):
        out = self.psql(sql, db)
        return [tuple(line.split("|")) for line in out.splitlines()] if out else []

    def create_db(self, name):
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def wait_up(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.psql("SELECT 1", timeout=5)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                time.sleep(0.2)
        raise AssertionError("PostgreSQL did not come up")


def _cleanup():
    for s in list(_servers):
        try:
            s.stop()
        except Exception:
            pass


atexit.register(_cleanup)


def _main(argv):
    if len(argv) < 3 or argv[1] != "exec" or argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    why = skip_reason()
    if why:
        print(f"SKIP: {why}", flush=True)
        return SKIP
    srv = PgServer()
    try:
        dsn = srv.create_db("cmtest")
        env = dict(os.environ, CM_TEST_PG_DSN=dsn)
        return subprocess.call(argv[3:], env=env)
    finally:
        srv.stop()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda s, f: (_cleanup(), sys.exit(128 + s)))
    sys.exit(_main(sys.argv))
