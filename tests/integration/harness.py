"""Integration test harness: real nats-server, real daemons, real SQLite.

Every process a test starts is tracked by PID and stopped at exit (SIGTERM,
then SIGKILL). Servers listen on 127.0.0.1 and free ports only. Every wait is
bounded.

Every file a test writes goes into a directory from tmpdir() (under $TMPDIR;
ctest points it into the build tree), removed at exit however the test ends:
passed, failed, exception, SIGTERM (ctest's timeout) or SIGINT. Set
CM_KEEP_TMP=1 to keep them for a post-mortem (their paths are printed).
CM_TEST_FORCE_FAIL=1 makes every check() fail after its test ran
(tests/integration/test_tmp_cleanup.py proves that a failing run leaves
nothing behind).
"""
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BIN_DIR = os.environ.get("CM_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
_procs = []
_tmpdirs = []
_results = {"passed": 0, "failed": 0}


def tmpdir(prefix="cm-", parent=None):
    """A new private directory under $TMPDIR (or parent), removed at exit (see
    above)."""
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    _tmpdirs.append(d)
    return d


_log_dir = None


def _default_log_dir():
    global _log_dir
    if _log_dir is None:
        _log_dir = tmpdir("cm-logs-")
    return _log_dir


def bin_path(name):
    return os.path.join(BIN_DIR, name, name)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proc:
    """A started process with its log file; stop() by PID."""

    def __init__(self, name, argv, env=None, log_dir=None):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(log_dir or _default_log_dir(), f"{name}.log")
        self.out_path = os.path.join(log_dir or _default_log_dir(), f"{name}.out")
        self._log = open(self.log_path, "ab")
        self._out = open(self.out_path, "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(argv, stdout=self._out, stderr=self._log, env=full_env,
                                  stdin=subprocess.DEVNULL)
        self.pid = self.p.pid
        _procs.append(self)

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10):
        if self.alive():
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                self.wait(5)
        self._log.close()
        self._out.close()
        return self.p.returncode

    def kill9(self):
        self.signal(signal.SIGKILL)
        self.wait(5)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def out(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def _cleanup():
    for p in reversed(_procs):
        try:
            if p.alive():
                p.signal(signal.SIGKILL)
                p.wait(5)
        except Exception:
            pass
    keep = os.environ.get("CM_KEEP_TMP", "") not in ("", "0")
    while _tmpdirs:
        d = _tmpdirs.pop()
        if keep:
            print(f"CM_KEEP_TMP: kept {d}", flush=True)
        else:
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def _on_signal(signum, frame):
    _cleanup()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(port, path, timeout=2.0):
    """Returns (status, body) or (None, error text)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:  # connection refused, timeout
        return None, str(e)


def api_request(port, method, path, body=None, token=None, raw=None, timeout=10):
    """(status, JSON answer) of one request to a fetcher's job API
    (docs/jobs.md): body is sent as JSON (raw: these bytes instead), token
    as "Authorization: Bearer". Error statuses are answers, not exceptions."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Nats:
    def __init__(self, workdir, port=None, extra=()):
        self.port = port or free_port()
        self.mon = free_port()
        self.workdir = workdir
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        self.proc = Proc(f"nats-{self.port}-{int(time.time()*1000)}",
                         ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-m",
                          str(self.mon)] + self.extra, log_dir=self.workdir)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(up, 10, what="nats-server to listen")

    def stop(self):
        self.proc.stop()

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def varz(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mon}/varz", timeout=2) as r:
            return json.loads(r.read())

    def connz(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mon}/connz?subs=1", timeout=2) as r:
            return json.loads(r.read())


class NatsCluster:
    """n nats-servers routed to each other on loopback (cluster "c"): every
    node has its own client, route and monitoring port. `url` is the whole
    list, comma separated, as a user passes it to --nats-url."""

    def __init__(self, workdir, n=3):
        self.workdir = workdir
        self.route_ports = [free_port() for _ in range(n)]
        self.nodes = []
        for i in range(n):
            routes = ",".join(f"nats-route://127.0.0.1:{p}"
                              for j, p in enumerate(self.route_ports) if j != i)
            self.nodes.append(Nats(workdir, extra=[
                "--cluster_name", "c", "--cluster", f"nats://127.0.0.1:{self.route_ports[i]}",
                "--routes", routes]))
        self.wait_routes()

    @property
    def url(self):
        return ",".join(node.url for node in self.nodes)

    def alive(self, i):
        return self.nodes[i].proc.alive()

    def routes(self, i):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.nodes[i].mon}/routez",
                                    timeout=2) as r:
            return json.loads(r.read())["num_routes"]

    def wait_routes(self, timeout=20):
        """Every live node routes to every other live node."""
        live = [i for i in range(len(self.nodes)) if self.alive(i)]

        def meshed():
            try:
                return all(self.routes(i) >= len(live) - 1 for i in live)
            except OSError:
                return False

        wait_until(meshed, timeout, interval=0.1, what="NATS cluster routes")

    def node_of(self, server_url):
        """Index of the node a daemon's /status "nats_server" names, or None."""
        for i, node in enumerate(self.nodes):
            if server_url and server_url.rstrip("/").endswith(f":{node.port}"):
                return i
        return None

    def kill9(self, i):
        self.nodes[i].proc.kill9()

    def freeze_and_kill(self, i, freeze_s):
        """SIGSTOP node i for freeze_s, then SIGKILL it: a node that hangs
        before it dies. What its clients and routes sent it meanwhile sits
        in its socket buffers and is lost, as on a real crash under load."""
        self.nodes[i].proc.signal(signal.SIGSTOP)
        time.sleep(freeze_s)
        self.nodes[i].proc.kill9()

    def start(self, i):
        self.nodes[i].start()

    def stop(self):
        for node in self.nodes:
            if node.proc.alive():
                node.stop()


class Pipeline:
    """nats-server (or a cluster of nats_nodes routed servers) + saver + N
    mappers + fetcher in one temp dir."""

    def __init__(self, name, records=100000, mappers=2, transform="fullname", extra_fetcher=(),
                 extra_mapper=(), workdir=None, prefix=None, chunk_size=100, nats_nodes=1,
                 heartbeat="200ms"):
        self.workdir = workdir or tmpdir(f"cm-{name}-")
        self.nats = Nats(self.workdir) if nats_nodes <= 1 else NatsCluster(self.workdir, nats_nodes)
        self.heartbeat = heartbeat
        self.prefix = prefix or f"t{os.getpid()}"
        self.db = os.path.join(self.workdir, "results.db")
        self.ledger = os.path.join(self.workdir, "ledger.db")
        self.records = records
        self.chunk_size = chunk_size
        self.transform = transform
        self.extra_fetcher = list(extra_fetcher)
        self.extra_mapper = list(extra_mapper)
        self.mappers = []
        self.ports = {}
        self.saver = self.start_saver()
        for i in range(mappers):
            self.start_mapper()
        self.fetcher = None

    def common(self, role, port):
        return ["--nats-url", self.nats.url, "--prefix", self.prefix, "--http",
                f"127.0.0.1:{port}", "--heartbeat", self.heartbeat]

    def start_saver(self, name="saver"):
        port = free_port()
        p = Proc(f"{name}-{port}", [bin_path("saver")] + self.common("saver", port) +
                 ["--db", self.db], log_dir=self.workdir)
        p.port = port
        return p

    def start_mapper(self, extra=()):
        port = free_port()
        i = len(self.mappers)
        p = Proc(f"mapper{i}-{port}", [bin_path("mapper")] + self.common("mapper", port) +
                 ["--transform", self.transform, "--id", f"m{i}-{port}"] + self.extra_mapper +
                 list(extra), log_dir=self.workdir)
        p.port = port
        self.mappers.append(p)
        return p

    def start_fetcher(self, extra=(), name="fetcher"):
        port = free_port()
        p = Proc(f"{name}-{port}-{int(time.time()*1000)}",
                 [bin_path("fetcher")] + self.common("fetcher", port) +
                 ["--records", str(self.records), "--chunk-size", str(self.chunk_size), "--ledger",
                  self.ledger, "--progress", "1s"] + self.extra_fetcher + list(extra),
                 log_dir=self.workdir)
        p.port = port
        self.fetcher = p
        return p

    def wait_ready(self, procs, timeout=20):
        for p in procs:
            wait_until(lambda: http_get(p.port, "/readyz")[0] == 200, timeout,
                       what=f"{p.name} /readyz 200")

    def stop_all(self):
        for p in ([self.fetcher] if self.fetcher else []) + self.mappers + [self.saver]:
            p.stop()
        self.nats.stop()

    def db_query(self, sql, args=()):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()


PROM_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)?\})? '
    r'(-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?[0-9]+)?$')


def parse_prometheus(text):
    """Strict-enough parser of the text format 0.0.4: every line is a comment
    (# HELP / # TYPE), or a valid sample. Returns {name{labels}: value}."""
    samples = {}
    types = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary",
                                                    "untyped"), f"bad TYPE line: {line}"
            assert parts[2] not in types, f"duplicate TYPE for {parts[2]}"
            types[parts[2]] = parts[3]
            continue
        assert not line.startswith("#"), f"unexpected comment: {line}"
        m = PROM_LINE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        key = line.rsplit(" ", 1)[0]
        samples[key] = float(m.group(7))
    return samples, types


def log_lines(proc):
    """The JSON log lines of a daemon, parsed."""
    out = []
    for line in proc.log().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def ts_of(entry):
    """Unix time of a log entry's "ts" (RFC 3339, UTC, milliseconds)."""
    import datetime
    return datetime.datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def status(proc):
    st, body = http_get(proc.port, "/status", timeout=1)
    return json.loads(body) if st == 200 else None


def check(name, fn):
    """Runs one test case, records pass/fail, keeps going."""
    t0 = time.monotonic()
    try:
        fn()
        if os.environ.get("CM_TEST_FORCE_FAIL", "") not in ("", "0"):
            raise AssertionError(f"forced failure (CM_TEST_FORCE_FAIL is set) with {_tmpdirs} "
                                 "in place")
        _results["passed"] += 1
        print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure kind
        _results["failed"] += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        import traceback
        traceback.print_exc()


def remove_workdir(path):
    """At the end of a test script that made its own folder: on failure the
    tails of its logs go to the output; the folder is removed either way
    (CM_KEEP_TMP=1 keeps it)."""
    if _results["failed"] != 0:
        for root, _, files in os.walk(path):
            for name in sorted(f for f in files if f.endswith(".log")):
                with open(os.path.join(root, name), errors="replace") as fh:
                    print(f"---- {name}:", *fh.read().splitlines()[-5:], sep="\n  ")
    if os.environ.get("CM_KEEP_TMP", "") not in ("", "0"):
        print(f"CM_KEEP_TMP: kept {path}", flush=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def finish():
    print(f"{_results['passed']} passed, {_results['failed']} failed", flush=True)
    _cleanup()
    sys.exit(0 if _results["failed"] == 0 and _results["passed"] > 0 else 1)


def dump_logs_on_failure(pipeline):
    for p in [pipeline.fetcher] + pipeline.mappers + [pipeline.saver]:
        if p is None:
            continue
        print(f"---- {p.name} (exit {p.p.returncode}) log tail ----")
        print("\n".join(p.log().splitlines()[-15:]))
        print("\n".join(p.out().splitlines()[-5:]))


@contextlib.contextmanager
def torn_down(pipeline):
    """Runs the with-body on pipeline: if it raises, prints the daemons' log
    tails and re-raises; in every case stops every process of pipeline and
    removes its workdir."""
    try:
        yield pipeline
    except Exception:
        dump_logs_on_failure(pipeline)
        raise
    finally:
        pipeline.stop_all()
        shutil.rmtree(pipeline.workdir, ignore_errors=True)


@contextlib.contextmanager
def kept_on_failure(pipeline, failed):
    """Runs the with-body on pipeline: if it raises, appends pipeline to the
    list failed (the caller dumps its logs later) and re-raises; in every case
    stops every process of pipeline, and removes its workdir unless pipeline
    is in failed."""
    try:
        yield pipeline
    except Exception:
        failed.append(pipeline)
        raise
    finally:
        pipeline.stop_all()
        if pipeline not in failed:
            shutil.rmtree(pipeline.workdir, ignore_errors=True)


@contextlib.contextmanager
def environ_set(env):
    """Sets the variables of env (a dict, or None for none) in os.environ for
    the with-body, so a process started in it inherits them; afterwards each
    is back to its old value, or unset if it was unset."""
    env = env or {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def send_json(handler, code, obj=None, location=None):
    """Answers the request of a BaseHTTPRequestHandler with status code, obj
    as a JSON body (an empty body if obj is None) and, if location is given,
    a Location header."""
    body = json.dumps(obj).encode() if obj is not None else b""
    handler.send_response(code)
    if location:
        handler.send_header("Location", location)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
