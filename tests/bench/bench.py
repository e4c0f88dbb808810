#!/usr/bin/env python3
"""scripts/bench: the real daemons against a real nats-server on loopback,
with the durability settings they ship with, plus each stage alone on the
same data. One JSON object per line, per scenario and stage, then a summary
object with the ratios. See README.md "Performance".
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--bin-dir", required=True)
ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
ap.add_argument("--only", default="", help="comma list of scenarios: a,b,c,d,stages,pg")
args = ap.parse_args()
BIN = args.bin_dir
only = set(filter(None, args.only.split(",")))


def want(name):
    return not only or name in only


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Child:
    def __init__(self, argv, log):
        self.argv = argv
        self.f = open(log, "wb")
        self.p = subprocess.Popen(argv, stdout=self.f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
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
            time.sleep(0.01)
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


threading.Thread(target=_sampler, daemon=True).start()


def wait_port(port, timeout=10):
    t = time.time()
    while time.time() - t < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nats-server did not start")


def pipeline(name, records, transform, mappers=2, concurrency=None, chunk_size=100):
    d = tempfile.mkdtemp(prefix=f"cmbench-{name}-")
    port = free_port()
    nats = Child(["nats-server", "-a", "127.0.0.1", "-p", str(port)], f"{d}/nats.log")
    wait_port(port)
    url = f"nats://127.0.0.1:{port}"
    common = ["--nats-url", url, "--prefix", "bench"]
    t0 = time.time()
    saver = Child([f"{BIN}/saver/saver", *common, "--http", f"127.0.0.1:{free_port()}", "--db",
                   f"{d}/results.db"], f"{d}/saver.log")
    ms = []
    for i in range(mappers):
        a = [f"{BIN}/mapper/mapper", *common, "--http", f"127.0.0.1:{free_port()}", "--transform",
             transform, "--id", f"m{i}"]
        if concurrency:
            a += ["--concurrency", str(concurrency)]
        ms.append(Child(a, f"{d}/mapper{i}.log"))
    fout = f"{d}/fetcher.out"
    fetcher = Child([f"{BIN}/fetcher/fetcher", *common, "--http", f"127.0.0.1:{free_port()}",
                     "--records", str(records), "--chunk-size", str(chunk_size), "--ledger",
                     f"{d}/ledger.db", "--once", "--progress", "0"], fout)
    rc = fetcher.reap(3600)
    seconds = time.time() - t0
    for c in ms + [saver]:
        c.stop()
    nats.stop()
    fetcher.f.close()
    summary = {}
    with open(fout) as fh:
        for line in fh:
            if line.startswith('{"summary"'):
                summary = json.loads(line)["summary"]
    if rc != 0 or summary.get("records") != records:
        raise RuntimeError(f"{name}: fetcher exit {rc}, summary {summary}; see {d}")
    out = {
        "scenario": name, "records": records, "transform": transform, "mappers": mappers,
        "seconds": round(seconds, 3), "records_per_s": round(records / seconds),
        "cpu_s": {"fetcher": fetcher.cpu(), "mappers": round(sum(m.cpu() for m in ms), 3),
                  "saver": saver.cpu(), "nats_server": nats.cpu()},
        "peak_rss_mb": {"fetcher": fetcher.peak_mb(), "mapper_max": max((m.peak_mb() or 0) for m in ms),
                        "saver": saver.peak_mb(), "nats_server": nats.peak_mb()},
        "latency_p50_s": summary.get("latency_p50_s"), "latency_p99_s": summary.get("latency_p99_s"),
        "redeliveries": summary.get("redeliveries"),
    }
    shutil.rmtree(d, ignore_errors=True)
    return out


def stage(kind, transform, records, **kw):
    argv = [f"{BIN}/bench/cmbench", kind, "--transform", transform, "--records", str(records)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    nats = None
    d = None
    if kind == "nats":
        port = free_port()
        d = tempfile.mkdtemp(prefix="cmbench-nats-")
        nats = Child(["nats-server", "-a", "127.0.0.1", "-p", str(port)], f"{d}/nats.log")
        wait_port(port)
        argv += ["--url", f"nats://127.0.0.1:{port}"]
    if kind == "store":
        d = tempfile.mkdtemp(prefix="cmbench-store-")
        argv += ["--db", f"{d}/store.db"]
    try:
        r = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True,
                                      timeout=600).stdout)
    finally:
        if nats:
            nats.stop()
        if d:
            shutil.rmtree(d, ignore_errors=True)  # a 1M-record store is ~600 MB
    return r


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


def pg_scenario(records, saver_counts, mappers=2, transform="identity", chunk_size=100):
    """Scenario "pg": the pipeline with its savers on PostgreSQL (fsync on,
    synchronous_commit on), for each count in saver_counts, next to the same
    job with one SQLite saver, in the same run. Rows per second and CPU
    seconds per process, the PostgreSQL server's included."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
    import pg
    why = pg.skip_reason()
    if why:
        return [{"scenario": "pg", "skipped": why}]
    rows = []
    srv = pg.PgServer(fsync=True)
    try:
        for n_savers in [0] + list(saver_counts):  # 0: the SQLite baseline
            d = tempfile.mkdtemp(prefix="cmbench-pg-")
            if n_savers:
                srv.psql("DROP DATABASE IF EXISTS bench")
                dsn = srv.create_db("bench")
            port = free_port()
            nats = Child(["nats-server", "-a", "127.0.0.1", "-p", str(port)], f"{d}/nats.log")
            wait_port(port)
            common = ["--nats-url", f"nats://127.0.0.1:{port}", "--prefix", "bench"]
            with open(os.path.join(srv.data, "postmaster.pid")) as fh:
                pm = int(fh.readline())
            pg0 = pg_cpu_s(pm)
            t0 = time.time()
            savers = [Child([f"{BIN}/saver/saver", *common, "--http", f"127.0.0.1:{free_port()}",
                             "--id", f"s{i}", "--db", dsn if n_savers else f"{d}/results.db"],
                            f"{d}/saver{i}.log") for i in range(max(1, n_savers))]
            ms = [Child([f"{BIN}/mapper/mapper", *common, "--http", f"127.0.0.1:{free_port()}",
                         "--transform", transform, "--id", f"m{i}"], f"{d}/mapper{i}.log")
                  for i in range(mappers)]
            fetcher = Child([f"{BIN}/fetcher/fetcher", *common, "--http", f"127.0.0.1:{free_port()}",
                             "--records", str(records), "--chunk-size", str(chunk_size), "--ledger",
                             f"{d}/ledger.db", "--once", "--progress", "0"], f"{d}/fetcher.out")
            rc = fetcher.reap(3600)
            seconds = time.time() - t0
            for c in ms + savers:
                c.stop()
            nats.stop()
            fetcher.f.close()
            saved = int(srv.psql("SELECT count(*) FROM records", "bench")) if n_savers else None
            if rc != 0 or (n_savers and saved != records):
                raise RuntimeError(f"pg scenario with {n_savers} savers: fetcher exit {rc}, "
                                   f"{saved} rows; see {d}")
            rows.append({
                "scenario": "pg", "sink": "postgres" if n_savers else "sqlite",
                "savers": max(1, n_savers), "records": records, "transform": transform,
                "mappers": mappers, "seconds": round(seconds, 3),
                "records_per_s": round(records / seconds),
                "cpu_s": {"fetcher": fetcher.cpu(), "mappers": round(sum(m.cpu() for m in ms), 3),
                          "savers": round(sum(x.cpu() for x in savers), 3),
                          "nats_server": nats.cpu(),
                          "postgres": round(pg_cpu_s(pm) - pg0, 3) if n_savers else None},
            })
            shutil.rmtree(d, ignore_errors=True)
    finally:
        srv.stop()
    return rows


def emit(obj):
    print(json.dumps(obj), flush=True)


q = args.quick
machine = {"kind": "machine", "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
           "kernel": platform.release(), "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
           "quick": q}
try:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                machine["cpu"] = line.split(":", 1)[1].strip()
                break
except OSError:
    pass
emit(machine)
summary = {"kind": "summary"}
ORIGINAL = 23300.0  # records/s of the original Node.js example on this machine kind

if want("a"):
    n = 20000 if q else 100000
    a = pipeline("a", n, "fullname")
    emit(a)
    summary["a_records_per_s"] = a["records_per_s"]
    summary["a_vs_original"] = round(a["records_per_s"] / ORIGINAL, 2)
    if want("stages") or not only:
        st = [stage("transform", "fullname", n, threads=2), stage("store", "fullname", n),
              stage("nats", "fullname", n)]
        for s in st:
            s["scenario"] = "a"
            emit(s)
        slow = min(st, key=lambda s: s["records_per_s"])
        summary["a_slowest_stage"] = slow["stage"]
        summary["a_fraction_of_slowest_stage"] = round(a["records_per_s"] / slow["records_per_s"], 3)
if want("b"):
    n = 100000 if q else 1000000
    b = pipeline("b", n, "identity")
    emit(b)
    summary["b_records_per_s"] = b["records_per_s"]
    if want("stages") or not only:
        st = [stage("transform", "identity", n, threads=2), stage("store", "identity", n),
              stage("nats", "identity", n)]
        for s in st:
            s["scenario"] = "b"
            emit(s)
        slow = min(st, key=lambda s: s["records_per_s"])
        summary["b_slowest_stage"] = slow["stage"]
        summary["b_fraction_of_slowest_stage"] = round(b["records_per_s"] / slow["records_per_s"], 3)
if want("c"):
    chunks = 200 if q else 1000
    workers = 40
    c = pipeline("c", chunks * 100, "sleep:100", mappers=2, concurrency=workers // 2)
    ideal = chunks * 0.1 / workers
    c["ideal_seconds"] = round(ideal, 3)
    # Process start is part of "seconds"; efficiency is measured on it.
    c["parallel_efficiency"] = round(ideal / c["seconds"], 3)
    emit(c)
    summary["c_parallel_efficiency"] = c["parallel_efficiency"]
if want("d"):
    small, big = (100000, 1000000) if q else (100000, 10000000)
    d1 = pipeline("d-small", small, "fullname")
    d2 = pipeline("d-big", big, "fullname")
    emit(d1)
    emit(d2)
    summary["d_fetcher_peak_rss_mb"] = [d1["peak_rss_mb"]["fetcher"], d2["peak_rss_mb"]["fetcher"]]
    summary["d_saver_peak_rss_mb"] = [d1["peak_rss_mb"]["saver"], d2["peak_rss_mb"]["saver"]]
    summary["d_records"] = [small, big]
if want("pg"):
    pr = pg_scenario(100000 if q else 1000000, [1, 2, 4])
    for r in pr:
        emit(r)
    base = [r for r in pr if r.get("sink") == "sqlite"]
    if base:
        summary["pg_records_per_s"] = {str(r["savers"]): r["records_per_s"] for r in pr
                                       if r.get("sink") == "postgres"}
        summary["pg_1_saver_vs_sqlite"] = round(
            summary["pg_records_per_s"]["1"] / base[0]["records_per_s"], 2)
emit(summary)
