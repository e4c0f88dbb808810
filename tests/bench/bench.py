#!/usr/bin/env python3
"""scripts/bench: the real daemons against a real nats-server on loopback,
with the durability settings they ship with, plus each stage alone on the
same data, and (with --original PATH) the original Node.js example run side
by side in the same session. See README.md, "Performance".

stdout: one JSON object per line (each run, then one "aggregate" object per
scenario with min/median/max, then a "summary"). stderr: a short table.

Nothing is remembered from an earlier run: every ratio is between two
scenarios measured in this run. Every chunkmill run is checked against its
results database (rows, distinct record keys, chunk markers, dead letters)
and the original against its saver's log (every package received once or
more, 100 records each); a mismatch stops the bench with exit status 1.
"""
import argparse
import atexit
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


class BenchError(Exception):
    """A run that did not do exactly what it was asked: the bench fails."""


# GOMAXPROCS of every nats-server the bench starts (--nats-gomaxprocs; None:
# Go's default, one per core).
NATS_GOMAXPROCS = None

# A failed run's directory (logs, results database) is kept for a look,
# unless --discard-failed (the ctest): then its logs' last lines go into the
# error and the directory is removed.
DISCARD_FAILED = False


def failed_run(d, msg):
    """The BenchError for a run that failed in directory d."""
    if not DISCARD_FAILED:
        return BenchError(f"{msg}; logs in {d}")
    tails = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if name.endswith((".log", ".out")):
            with open(os.path.join(d, name), errors="replace") as fh:
                last = fh.readlines()[-3:]
            tails.append(f"--- {name}:\n" + "".join(last))
    shutil.rmtree(d, ignore_errors=True)
    return BenchError(msg + ("\n" + "".join(tails) if tails else ""))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Child:
    def __init__(self, argv, log, cwd=None, env=None):
        self.argv = argv
        self.f = open(log, "wb")
        self.p = subprocess.Popen(argv, stdout=self.f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=cwd, env=env)
        self.ru = None
        self.rc = None
        self.hwm_kb = None
        with _children_lock:
            _children.append(self)

    def sample(self):
        """Peak RSS as the kernel reports it for this process (VmHWM). Not
        ru_maxrss: on Linux a child's ru_maxrss starts from the parent's
        high-water mark inherited across fork+exec, so small daemons all
        report the Python parent's size. VmHWM only grows, so the last sample
        before exit is the peak (to within the sampling period)."""
        if self.ru is not None:
            return
        try:
            with open(f"/proc/{self.p.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        if self.hwm_kb is None or kb > self.hwm_kb:
                            self.hwm_kb = kb
                        break
        except (OSError, ValueError):
            pass

    def reap(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sample()  # a zombie has no VmHWM: sample before reaping
            pid, status, ru = os.wait4(self.p.pid, os.WNOHANG)
            if pid == self.p.pid:
                self.ru, self.rc = ru, os.waitstatus_to_exitcode(status)
                self.p.returncode = self.rc
                return self.rc
            time.sleep(0.005)
        return None

    def stop(self):
        if self.ru is None:
            try:
                self.p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.reap(30) is None:
                self.p.kill()
                self.reap(5)
        if not self.f.closed:
            self.f.close()

    def cpu(self):
        return round(self.ru.ru_utime + self.ru.ru_stime, 3) if self.ru else None

    def peak_mb(self):
        return round(self.hwm_kb / 1024.0, 1) if self.hwm_kb is not None else None


_children = []
_children_lock = threading.Lock()


def _sampler():
    while True:
        with _children_lock:
            live = [c for c in _children if c.ru is None]
            _children[:] = live
        for c in live:
            c.sample()
        time.sleep(0.02)


def stop_all():
    with _children_lock:
        live = list(_children)
    for c in live:
        c.stop()

_tmpdirs = []


def tmpdir(prefix):
    """A private directory under $TMPDIR, removed at exit however the run ends
    (a 1M-record store is ~600 MB)."""
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def _cleanup():
    with _children_lock:
        left = [c for c in _children if c.ru is None]
    for c in left:
        try:
            c.p.kill()
            c.p.wait(5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    while _tmpdirs:
        shutil.rmtree(_tmpdirs.pop(), ignore_errors=True)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def wait_port(port, timeout=10):
    t = time.time()
    while time.time() - t < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise BenchError(f"nats-server did not listen on port {port} within {timeout} s")


def start_nats(d, jetstream=False):
    """A nats-server on a free loopback port, with its monitoring port (used
    to wait for the original's clients). Returns (child, url, monitor port)."""
    port, mon = free_port(), free_port()
    argv = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-m", str(mon)]
    if jetstream:
        argv += ["-js", "-sd", f"{d}/js"]
    env = None
    if NATS_GOMAXPROCS:
        env = dict(os.environ, GOMAXPROCS=str(NATS_GOMAXPROCS))
    nats = Child(argv, f"{d}/nats.log", env=env)
    wait_port(port)
    return nats, f"nats://127.0.0.1:{port}", mon


# ---- exact checks ---------------------------------------------------------

# The JSON field that identifies a record in each transform's output.
RECORD_KEY = {"fullname": "$.id", "identity": "$.uuid"}


def record_key(transform):
    return RECORD_KEY.get(transform, RECORD_KEY["identity"])  # sleep:/burn: keep the record


def check_saved(db, records, chunk_size, transform, name="run"):
    """Counts what the saver stored in the results database and raises
    BenchError unless it is exactly the job: `records` rows, as many distinct
    record keys, one marker per chunk whose counts add up, no dead letter.
    Returns the counts."""
    if not os.path.exists(db):
        raise BenchError(f"{name}: results database {db} does not exist")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows, keys = con.execute(
            "SELECT count(*), count(DISTINCT body ->> ?) FROM records",
            (record_key(transform),)).fetchone()
        nchunks, chunk_rows, chunk_dead = con.execute(
            "SELECT count(*), coalesce(sum(records), 0), coalesce(sum(dead), 0) FROM chunks"
        ).fetchone()
        dead = con.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    finally:
        con.close()
    return exact(db, (rows, keys, nchunks, chunk_rows, dead + chunk_dead), records, chunk_size,
                 name)


def exact(where, counts, records, chunk_size, name):
    """counts: (rows, distinct record keys, chunk markers, sum of the
    markers' records, dead letters) as counted in a results database; raises
    BenchError unless they are exactly the job's. Returns them as a dict."""
    chunks = (records + chunk_size - 1) // chunk_size
    got = dict(zip(("rows", "distinct_keys", "chunks", "chunk_records", "dead_letters"),
                   (int(c) for c in counts)))
    want = {"rows": records, "distinct_keys": records, "chunks": chunks,
            "chunk_records": records, "dead_letters": 0}
    bad = [f"{k} {got[k]} (expected {want[k]})" for k in want if got[k] != want[k]]
    if bad:
        raise BenchError(f"{name}: results database {where} is not exact: " + ", ".join(bad))
    return got


def check_saved_pg(srv, dbname, records, chunk_size, transform, name="run"):
    """check_saved for a PostgreSQL results database (pg.PgServer srv,
    database dbname): the same counts, the same verdict."""
    key = record_key(transform)[2:]  # "$.uuid" -> uuid
    out = srv.psql(
        "SELECT (SELECT count(*) FROM records),"
        f" (SELECT count(DISTINCT body::jsonb ->> '{key}') FROM records),"
        " (SELECT count(*) FROM chunks), (SELECT coalesce(sum(records), 0) FROM chunks),"
        " (SELECT count(*) FROM dead_letters) + (SELECT coalesce(sum(dead), 0) FROM chunks)",
        dbname)
    return exact(f"PostgreSQL {dbname}", out.split("|"), records, chunk_size, name)


# ---- chunkmill --------------------------------------------------------------

class SqliteSink:
    """The savers' results in a SQLite file in the run's directory."""
    kind = "sqlite"

    def start(self, d):
        """Before the run: returns the savers' --db."""
        self.path = f"{d}/results.db"
        return self.path

    def check(self, records, chunk_size, transform, name):
        return check_saved(self.path, records, chunk_size, transform, name)

    def cpu(self):
        """CPU seconds spent outside the daemons for this run (none)."""
        return {}


class PgSink:
    """The savers' results in database "bench" of a throwaway PostgreSQL
    server (pg.PgServer srv), made anew for each run; the server's CPU
    seconds during the run are counted with the daemons'."""
    kind = "postgres"

    def __init__(self, srv):
        self.srv = srv

    def start(self, d):
        self.srv.psql("DROP DATABASE IF EXISTS bench")
        dsn = self.srv.create_db("bench")
        with open(os.path.join(self.srv.data, "postmaster.pid")) as fh:
            self.pm = int(fh.readline())
        self.cpu0 = pg_cpu_s(self.pm)
        return dsn

    def check(self, records, chunk_size, transform, name):
        return check_saved_pg(self.srv, "bench", records, chunk_size, transform, name)

    def cpu(self):
        return {"postgres": round(pg_cpu_s(self.pm) - self.cpu0, 3)}


def pipeline(cfg, name, records, transform, mappers=2, concurrency=None, chunk_size=100,
             sink=None, savers=1):
    """One run of the whole pipeline on its own nats-server: `savers`
    savers on `sink` (default: a SQLite file), `mappers` mappers, and the
    fetcher until it exits (--once), timed from the first daemon's start.
    The rows are counted exactly in the sink (BenchError if not). CPU
    seconds per process ("saver": all savers together). Returns the run's
    JSON object."""
    sink = sink or SqliteSink()
    d = tmpdir(f"cmbench-{name}-")
    try:
        db = sink.start(d)
        nats, url, _ = start_nats(d)
        common = ["--nats-url", url, "--prefix", "bench"]
        t0 = time.time()
        svs = [Child([f"{cfg.bin}/saver/saver", *common, "--http", f"127.0.0.1:{free_port()}",
                      "--id", f"s{i}", "--db", db], f"{d}/saver{i}.log") for i in range(savers)]
        ms = []
        for i in range(mappers):
            a = [f"{cfg.bin}/mapper/mapper", *common, "--http", f"127.0.0.1:{free_port()}",
                 "--transform", transform, "--id", f"m{i}"]
            if concurrency:
                a += ["--concurrency", str(concurrency)]
            ms.append(Child(a, f"{d}/mapper{i}.log"))
        fout = f"{d}/fetcher.out"
        fetcher = Child([f"{cfg.bin}/fetcher/fetcher", *common, "--http",
                         f"127.0.0.1:{free_port()}", "--records", str(records), "--chunk-size",
                         str(chunk_size), "--ledger", f"{d}/ledger.db", "--once", "--progress",
                         "0"], fout)
        rc = fetcher.reap(3600)
        seconds = time.time() - t0
        for c in ms + svs:
            c.stop()
        nats.stop()
        fetcher.stop()
        if rc != 0:
            raise failed_run(d, f"{name}: fetcher exit status {rc}")
        summary = {}
        with open(fout) as fh:
            for line in fh:
                if line.startswith('{"summary"'):
                    summary = json.loads(line)["summary"]
        try:
            saved = sink.check(records, chunk_size, transform, name)
        except BenchError as e:
            raise failed_run(d, str(e)) from None
        cpu = {"fetcher": fetcher.cpu(), "mappers": round(sum(m.cpu() for m in ms), 3),
               "saver": round(sum(x.cpu() for x in svs), 3), "nats_server": nats.cpu(),
               **sink.cpu()}
        out = {
            "scenario": name, "sink": sink.kind, "savers": savers, "records": records,
            "transform": transform, "mappers": mappers,
            "seconds": round(seconds, 3), "records_per_s": round(records / seconds),
            "cpu_s": cpu,
            "cpu_us_per_record": round(sum(cpu.values()) * 1e6 / records, 2),
            "saver_cpu_us_per_record": round(cpu["saver"] * 1e6 / records, 2),
            "peak_rss_mb": {"fetcher": fetcher.peak_mb(),
                            "mapper_max": max((m.peak_mb() or 0) for m in ms),
                            "saver": max((x.peak_mb() or 0) for x in svs),
                            "nats_server": nats.peak_mb()},
            "latency_p50_s": summary.get("latency_p50_s"),
            "latency_p99_s": summary.get("latency_p99_s"),
            "redeliveries": summary.get("redeliveries"),
            "saved": saved,
        }
    except BaseException:
        stop_all()
        if DISCARD_FAILED:
            shutil.rmtree(d, ignore_errors=True)
        raise
    shutil.rmtree(d, ignore_errors=True)
    return out


def stage(cfg, kind, transform, records, **kw):
    argv = [f"{cfg.bin}/bench/cmbench", kind, "--transform", transform, "--records", str(records)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    nats = None
    d = tmpdir(f"cmbench-{kind}-")
    try:
        if kind in ("nats", "jetstream"):
            nats, url, _ = start_nats(d, jetstream=kind == "jetstream")
            argv += ["--url", url]
        if kind == "store":
            argv += ["--db", f"{d}/store.db"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise BenchError(f"cmbench {kind} failed (exit {p.returncode}): {p.stderr.strip()}")
        r = json.loads(p.stdout)
    finally:
        if nats:
            nats.stop()
        shutil.rmtree(d, ignore_errors=True)  # a 1M-record store is ~600 MB
    if nats:
        r["nats_server_cpu_s"] = nats.cpu()
        if kind == "jetstream":
            r["cpu_us_per_record"] = round((r["cpu_s"] + r["nats_server_cpu_s"]) * 1e6
                                           / records, 2)
    return r


# ---- PostgreSQL -------------------------------------------------------------

def pg_cpu_s(postmaster_pid):
    """CPU seconds of a PostgreSQL server so far: the postmaster, its live
    children (background workers, backends) and the children it reaped
    (backends of closed connections, counted in its cutime/cstime)."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(pid):
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return int(f[1]), [int(x) for x in f[11:15]]  # ppid, utime stime cutime cstime

    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ppid, t = stat(pid)
        except (OSError, ValueError, IndexError):
            continue
        if int(pid) == postmaster_pid:
            total += sum(t)
        elif ppid == postmaster_pid:
            total += t[0] + t[1]
    return total / tick


def pg_import():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "integration"))
    import pg
    return pg


def pg_run(cfg, srv, n_savers, records, transform="identity"):
    """One run of scenario pg: the pipeline with n_savers savers on
    PostgreSQL (fsync and synchronous_commit on), or with one SQLite saver
    for n_savers == 0 (the baseline, same run)."""
    sink = PgSink(srv) if n_savers else SqliteSink()
    return pipeline(cfg, f"pg-{sink.kind}-{max(1, n_savers)}", records, transform, sink=sink,
                    savers=max(1, n_savers))


# ---- the original Node.js example ------------------------------------------

# The original mapper's artificial per-chunk sleep, the only line the bench
# changes (in its own copy): up to 10 s per chunk would measure the sleep.
ORIGINAL_SLEEP = re.compile(r"await simpleWait\(Math\.random\(\) \* 10000\)")
ORIGINAL_CHUNKS, ORIGINAL_CHUNK_RECORDS = 1000, 100  # fixed in its fetcher/mock_api.js


def prepare_original(path, work):
    """Copies the app9 checkout at `path` to `work` (node_modules left
    behind), removes the mapper's sleep in the copy and installs each part's
    npm dependencies there. The checkout itself is not changed."""
    parts = ("fetcher", "mapper", "saver")
    for p in parts:
        if not os.path.isfile(os.path.join(path, p, "index.js")):
            raise BenchError(f"--original {path}: no {p}/index.js there; expected a checkout "
                             "of the example's app9 folder (fetcher/, mapper/, saver/)")
    shutil.copytree(path, work, ignore=shutil.ignore_patterns("node_modules", ".git"))
    mjs = os.path.join(work, "mapper", "index.js")
    with open(mjs) as fh:
        src = fh.read()
    src, n = ORIGINAL_SLEEP.subn("/* sleep removed by scripts/bench */", src)
    if n != 1:
        raise BenchError(f"--original {path}: mapper/index.js has {n} copies of the line "
                         f"'{ORIGINAL_SLEEP.pattern}' (expected 1): not the app9 mapper the "
                         "bench knows how to patch")
    with open(mjs, "w") as fh:
        fh.write(src)
    for p in parts:
        cwd = os.path.join(work, p)
        cmd = "ci" if os.path.exists(os.path.join(cwd, "package-lock.json")) else "install"
        r = subprocess.run(["npm", cmd, "--no-audit", "--no-fund", "--loglevel=error"], cwd=cwd,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise BenchError(f"npm {cmd} in {cwd} failed: {r.stderr.strip()[-800:]}")


def check_original_log(text, name="original"):
    """What the original "saves": its saver logs each package it received.
    Raises BenchError unless every package 0..999 is there, each with 100
    records (a package may arrive twice: its fetcher re-sends until acked).
    Returns the number of distinct packages."""
    got, short = set(), 0
    for m in re.finditer(r"Received package (\d+)\. And data of length: (\d+)", text):
        got.add(int(m.group(1)))
        short += int(m.group(2)) != ORIGINAL_CHUNK_RECORDS
    want = set(range(ORIGINAL_CHUNKS))
    if got != want or short:
        missing, extra = sorted(want - got), sorted(got - want)
        raise BenchError(f"{name}: its saver log is not exact: {len(missing)} of "
                         f"{ORIGINAL_CHUNKS} packages missing {missing[:5]}, {len(extra)} "
                         f"unexpected {extra[:5]}, {short} not of {ORIGINAL_CHUNK_RECORDS} "
                         "records")
    return len(got)


def wait_connections(mon, n, timeout=30):
    t = time.time()
    while time.time() - t < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mon}/connz", timeout=1) as r:
                if json.load(r).get("num_connections", 0) >= n:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"original: {n} clients did not connect to nats-server within {timeout} s")


def original(cfg, mappers):
    """The original, its sleep removed: saver and mappers started and
    connected first, then the fetcher; timed from starting the fetcher to
    its "DONE WITH ALL DATA" line (node's start is included, as the
    chunkmill daemons' start is in theirs)."""
    name = f"original-{mappers}"
    d = tmpdir(f"cmbench-{name}-")
    env = dict(os.environ)
    try:
        nats, url, mon = start_nats(d)
        env["NATS_URL"] = url
        w = cfg.original_work
        saver = Child(["node", "index.js"], f"{d}/saver.log", cwd=f"{w}/saver", env=env)
        ms = [Child(["node", "index.js"], f"{d}/mapper{i}.log", cwd=f"{w}/mapper", env=env)
              for i in range(mappers)]
        wait_connections(mon, 1 + mappers)
        flog = f"{d}/fetcher.log"
        t0 = time.time()
        fetcher = Child(["node", "index.js"], flog, cwd=f"{w}/fetcher", env=env)
        done, deadline, pos, buf = None, t0 + 600, 0, b""
        with open(flog, "rb") as fh:
            while done is None:
                chunk = fh.read()
                if chunk:
                    buf += chunk
                    if b"DONE WITH ALL DATA" in buf:
                        done = time.time()
                        break
                    buf = buf[-64:]
                elif fetcher.p.poll() is not None:
                    raise failed_run(d, f"{name}: the fetcher exited ({fetcher.p.returncode}) "
                                        "before DONE WITH ALL DATA")
                elif time.time() > deadline:
                    raise failed_run(d, f"{name}: no DONE WITH ALL DATA within 600 s")
                else:
                    time.sleep(0.002)
        seconds = done - t0
        for c in [fetcher] + ms + [saver]:
            c.stop()
        nats.stop()
        with open(f"{d}/saver.log", errors="replace") as fh:
            try:
                got = check_original_log(fh.read(), name)
            except BenchError as e:
                raise failed_run(d, str(e)) from None
        records = ORIGINAL_CHUNKS * ORIGINAL_CHUNK_RECORDS
        cpu = {"fetcher": fetcher.cpu(), "mappers": round(sum(m.cpu() for m in ms), 3),
               "saver": saver.cpu(), "nats_server": nats.cpu()}
        out = {"scenario": name, "records": records, "transform": "fullname (node)",
               "mappers": mappers, "seconds": round(seconds, 3),
               "records_per_s": round(records / seconds), "cpu_s": cpu,
               "cpu_us_per_record": round(sum(cpu.values()) * 1e6 / records, 2),
               "peak_rss_mb": {"fetcher": fetcher.peak_mb(),
                               "mapper_max": max((m.peak_mb() or 0) for m in ms),
                               "saver": saver.peak_mb(), "nats_server": nats.peak_mb()},
               "saved": {"packages": got}}
    except BaseException:
        stop_all()
        if DISCARD_FAILED:
            shutil.rmtree(d, ignore_errors=True)
        raise
    shutil.rmtree(d, ignore_errors=True)
    return out


# ---- report -----------------------------------------------------------------

def emit(obj):
    print(json.dumps(obj), flush=True)


def aggregate(name, runs):
    rps = [r["records_per_s"] for r in runs]
    sec = [r["seconds"] for r in runs]
    agg = {"kind": "aggregate", "scenario": name, "runs": len(runs), "records": runs[0]["records"],
           "records_per_s": {"min": min(rps), "median": round(statistics.median(rps)),
                             "max": max(rps)},
           "seconds": {"min": min(sec), "median": round(statistics.median(sec), 3),
                       "max": max(sec)}}
    cpu = [r["cpu_us_per_record"] for r in runs if "cpu_us_per_record" in r]
    if cpu:
        agg["cpu_us_per_record_median"] = round(statistics.median(cpu), 2)
    sv = [r["saver_cpu_us_per_record"] for r in runs if "saver_cpu_us_per_record" in r]
    if sv:
        agg["saver_cpu_us_per_record_median"] = round(statistics.median(sv), 2)
    # Each process's CPU per record (the stable figure on a shared machine).
    procs = runs[0].get("cpu_s")
    if isinstance(procs, dict):
        agg["cpu_us_per_record_by_process_median"] = {
            p: round(statistics.median(r["cpu_s"][p] for r in runs) * 1e6 / runs[0]["records"], 2)
            for p in procs if all(r["cpu_s"].get(p) is not None for r in runs)}
    return agg


def table(aggs, summary, machine):
    w = sys.stderr.write
    w(f"\nload average {machine['loadavg_start']} at start, {machine.get('loadavg_end')} at end\n")
    w(f"{'scenario':<22} {'records':>10} {'runs':>4}  {'records/s min / median / max':>32}"
      f"  {'CPU µs/rec':>10}\n")
    for a in aggs:
        r = a["records_per_s"]
        rng = f"{r['min']:,} / {r['median']:,} / {r['max']:,}"
        cpu = a.get("cpu_us_per_record_median")
        w(f"{a['scenario']:<22} {a['records']:>10,} {a['runs']:>4}  {rng:>32}"
          f"  {'' if cpu is None else cpu:>10}\n")
        byp = a.get("cpu_us_per_record_by_process_median")
        if byp:
            w("    CPU µs/rec by process: " + ", ".join(f"{k} {v}" for k, v in byp.items()) + "\n")
    for k, v in summary.items():
        if k != "kind":
            w(f"{k}: {v}\n")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--only", default="",
                    help="comma list of scenarios: a,b,c,d,stages,js,pg (original runs with a)")
    ap.add_argument("--original", metavar="PATH",
                    help="a checkout of the original example's app9 folder: run it side by side")
    ap.add_argument("--original-mappers", default="1,2",
                    help="mapper counts for the original (default 1,2)")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions of a, b, c, js, pg and the original (default 3, --quick 1)")
    ap.add_argument("--discard-failed", action="store_true",
                    help="remove a failed run's directory (its logs' last lines go into the error)")
    ap.add_argument("--nats-gomaxprocs", type=int, default=1, metavar="N",
                    help="GOMAXPROCS of nats-server, as scripts/run starts it (default 1; 0 = Go's "
                         "default, one per core)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply b's and d-big's record counts (a reduced run on a loaded machine)")
    args = ap.parse_args(argv)
    global DISCARD_FAILED, NATS_GOMAXPROCS
    DISCARD_FAILED = args.discard_failed
    NATS_GOMAXPROCS = args.nats_gomaxprocs or None

    class Cfg:
        pass
    cfg = Cfg()
    cfg.bin = args.bin_dir
    only = set(filter(None, args.only.split(",")))
    want = lambda n: not only or n in only  # noqa: E731
    q = args.quick
    reps = args.reps or (1 if q else 3)

    for b in ("fetcher/fetcher", "mapper/mapper", "saver/saver", "bench/cmbench"):
        if not os.access(os.path.join(cfg.bin, b), os.X_OK):
            raise BenchError(f"--bin-dir {cfg.bin}: no executable {b} there (build first)")
    threading.Thread(target=_sampler, daemon=True).start()
    machine = {"kind": "machine", "cores": os.cpu_count(),
               "cpu": platform.processor() or platform.machine(), "kernel": platform.release(),
               "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
               "quick": q, "reps": reps, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
               "nats_gomaxprocs": NATS_GOMAXPROCS or "go default"}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    machine["cpu"] = line.split(":", 1)[1].strip()
                    break
        machine["nats_server"] = subprocess.run(["nats-server", "--version"], capture_output=True,
                                                text=True).stdout.strip()
    except OSError:
        pass
    orig_mappers = [int(x) for x in args.original_mappers.split(",") if x]
    work = None
    try:
        if args.original:
            machine["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                             text=True).stdout.strip()
            work = tmpdir("cmbench-original-")
            cfg.original_work = f"{work}/app9"
            prepare_original(os.path.abspath(args.original), cfg.original_work)
        emit(machine)
        return run_all(cfg, args, want, q, reps, machine, orig_mappers)
    finally:
        stop_all()
        if work:
            shutil.rmtree(work, ignore_errors=True)


def run_all(cfg, args, want, q, reps, machine, orig_mappers):
    runs = {}  # scenario -> its runs (dicts keep the order of first appearance)

    def record(r):
        runs.setdefault(r["scenario"], []).append(r)
        emit(r)

    summary = {"kind": "summary"}
    # With the original, a does the original's job (100,000 records) even
    # with --quick: the ratio compares the same work.
    na = 20000 if q and not args.original else 100000
    nb = int((100000 if q else 1000000) * args.scale)
    chunks_c = 200 if q else 1000
    workers = 40
    js_ok = None
    if want("js") and not q:
        js_ok = jetstream_available()
        if js_ok is not True:
            summary["js"] = f"skipped: {js_ok}"
    # Scenario pg: b's job (smaller with --quick) with 1, 2, 4 savers on one
    # throwaway PostgreSQL server, next to one SQLite saver.
    pg_srv, pg_savers = None, [1, 2] if q else [1, 2, 4]
    npg = int((20000 if q else 1000000) * args.scale)
    if want("pg"):
        pg = pg_import()
        why = pg.skip_reason()
        if why:
            summary["pg"] = f"skipped: {why}"
        else:
            pg_srv = pg.PgServer(fsync=True)
    try:
        return _run_reps(cfg, args, want, q, reps, machine, orig_mappers, runs, record, summary,
                         na, nb, chunks_c, workers, js_ok, pg_srv, pg_savers, npg)
    finally:
        if pg_srv is not None:
            pg_srv.stop()


def _run_reps(cfg, args, want, q, reps, machine, orig_mappers, runs, record, summary, na, nb,
              chunks_c, workers, js_ok, pg_srv, pg_savers, npg):
    # Interleaved: each repetition runs every repeated scenario once, so a
    # change in the machine's load hits all of them alike.
    for rep in range(reps):
        if args.original and (want("a") or want("original")):
            for m in orig_mappers:
                record(original(cfg, m))
        if want("a"):
            record(pipeline(cfg, "a", na, "fullname"))
        if want("b"):
            record(pipeline(cfg, "b", nb, "identity"))
        if want("c"):
            c = pipeline(cfg, "c", chunks_c * 100, "sleep:100", mappers=2,
                         concurrency=workers // 2)
            ideal = chunks_c * 0.1 / workers
            c["ideal_seconds"] = round(ideal, 3)
            # Process start is part of "seconds"; efficiency is measured on it.
            c["parallel_efficiency"] = round(ideal / c["seconds"], 3)
            record(c)
        if js_ok is True:
            r = stage(cfg, "jetstream", "identity", nb)
            r["scenario"] = "js"
            record(r)
        if pg_srv is not None:
            for n_savers in [0] + pg_savers:
                record(pg_run(cfg, pg_srv, n_savers, npg))
    if want("stages") and (want("a") or want("b")):
        for sc, tr, n in (("a", "fullname", na), ("b", "identity", nb)):
            if not want(sc):
                continue
            st = [stage(cfg, "transform", tr, n, threads=2), stage(cfg, "store", tr, n),
                  stage(cfg, "nats", tr, n)]
            for s in st:
                s["scenario"] = f"{sc}-stage-{s['stage']}"
                emit(s)
            slow = min(st, key=lambda s: s["records_per_s"])
            med = statistics.median(r["records_per_s"] for r in runs[sc])
            summary[f"{sc}_slowest_stage"] = slow["stage"]
            summary[f"{sc}_fraction_of_slowest_stage"] = round(med / slow["records_per_s"], 3)
    if want("d"):
        small, big = (100000, 1000000) if q else (100000, int(10000000 * args.scale))
        d1 = pipeline(cfg, "d-small", small, "fullname")
        record(d1)
        d2 = pipeline(cfg, "d-big", big, "fullname")
        record(d2)
        summary["d_fetcher_peak_rss_mb"] = [d1["peak_rss_mb"]["fetcher"],
                                            d2["peak_rss_mb"]["fetcher"]]
        # Target: flat within 1 MB (reported, not asserted).
        summary["d_fetcher_peak_rss_growth_mb"] = round(
            d2["peak_rss_mb"]["fetcher"] - d1["peak_rss_mb"]["fetcher"], 1)
        summary["d_saver_peak_rss_mb"] = [d1["peak_rss_mb"]["saver"], d2["peak_rss_mb"]["saver"]]
        summary["d_records"] = [small, big]

    aggs = [aggregate(k, v) for k, v in runs.items()]
    for a in aggs:
        emit(a)
    med = {a["scenario"]: a["records_per_s"]["median"] for a in aggs}
    for k in ("a", "b"):
        if k in med:
            summary[f"{k}_records_per_s_median"] = med[k]
    if "a" in med:
        origs = [k for k in med if k.startswith("original-")]
        if origs:
            for k in origs:
                summary[f"original_{k.split('-')[1]}_mappers_records_per_s_median"] = med[k]
                summary[f"a_vs_original_{k.split('-')[1]}_mappers"] = round(med["a"] / med[k], 2)
        else:
            summary["original"] = "not measured (scripts/bench --original PATH)"
    if "c" in runs:
        summary["c_parallel_efficiency_median"] = statistics.median(
            r["parallel_efficiency"] for r in runs["c"])
    if "pg-sqlite-1" in med:
        summary["pg_records_per_s_median"] = {str(n): med[f"pg-postgres-{n}"] for n in pg_savers}
        summary["pg_1_saver_vs_sqlite"] = round(med["pg-postgres-1"] / med["pg-sqlite-1"], 2)
    if "js" in med:
        summary["js_records_per_s_median"] = med["js"]
        if "b" in med:
            summary["b_vs_js"] = round(med["b"] / med["js"], 3)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summary["loadavg_start"] = machine["loadavg_start"]
    summary["loadavg_end"] = machine["loadavg_end"]
    emit(summary)
    table(aggs, summary, machine)
    return 0


def jetstream_available():
    """True, or the reason this nats-server cannot run JetStream."""
    d = tmpdir("cmbench-jscheck-")
    try:
        nats, _, mon = start_nats(d, jetstream=True)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mon}/jsz", timeout=2) as r:
                js = json.load(r)
            if js.get("disabled") or "config" not in js:
                return "nats-server reports JetStream disabled"
            return True
        except OSError as e:
            return f"nats-server has no JetStream monitoring endpoint ({e})"
        finally:
            nats.stop()
    except BenchError as e:
        return f"nats-server -js did not start: {e}"
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
