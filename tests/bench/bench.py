#!/usr/bin/env python3
"""scripts/bench: the real daemons against a real nats-server on loopback,
with the durability settings they ship with, plus each stage alone on the
same data. One JSON object per line, per scenario and stage, then a summary
object with the ratios. See docs/performance.md.
"""
import argparse
import atexit
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
ap.add_argument("--only", default="", help="comma list of scenarios: a,b,c,d,stages")
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
    raise RuntimeError("nats-server did not start")


def pipeline(name, records, transform, mappers=2, concurrency=None, chunk_size=100):
    d = tmpdir(f"cmbench-{name}-")
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
        with open(f"{d}/fetcher.out") as fh:
            tail = fh.read()[-2000:]
        raise RuntimeError(f"{name}: fetcher exit {rc}, summary {summary}; fetcher output:\n{tail}")
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
        d = tmpdir("cmbench-nats-")
        nats = Child(["nats-server", "-a", "127.0.0.1", "-p", str(port)], f"{d}/nats.log")
        wait_port(port)
        argv += ["--url", f"nats://127.0.0.1:{port}"]
    if kind == "store":
        d = tmpdir("cmbench-store-")
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
emit(summary)
