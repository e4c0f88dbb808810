#!/usr/bin/env python3
"""Mapper shutdown (issue 10, parts 2 and 6).

- SIGTERM to a mapper with an exec: transform while its nats-server stops
  at the same moment, 30 times in native and 30 times in app9 mode: exit 0
  every time (it crashed with SIGSEGV in a nats.c thread posting to a
  handoff that was already gone).
- SIGTERM to saver, mapper and fetcher at once while chunks are in flight,
  the saver gone first: the mapper hands its chunks back and exits within
  a few seconds (not the 25 s drain), and its log says that it handed them
  back instead of claiming it drained.
"""
import os
import shutil
import signal
import tempfile
import time

from harness import (Nats, Pipeline, Proc, bin_path, check, finish, free_port,
                     http_get, log_lines, torn_down, wait_until)

ROUNDS = 30
PARALLEL = 5
# Sanitizer builds: LeakSanitizer reports with full stacks and its own exit
# status, so that one leak of nats.c itself can be told apart (see
# nats_leak_only). Ignored by normal builds.
LEAK_EXIT = 23
SAN_ENV = {"ASAN_OPTIONS": ":".join(filter(None, [os.environ.get("ASAN_OPTIONS", ""),
                                                  f"exitcode={LEAK_EXIT}",
                                                  "fast_unwind_on_malloc=0"]))}


def nats_leak_only(log):
    """True when a sanitizer build's report is exactly the leak nats.c 3.4
    has when the connection closes while the server goes away: messages its
    reader thread created (natsConn_processMsg) that it never frees. It
    happens with or without this project's code on that path (measured: 4
    of 60 such shutdowns of the mapper before the fix as after), so it is
    tolerated here, and only it: any other report fails the test."""
    if "ERROR: LeakSanitizer" not in log or "ERROR: AddressSanitizer" in log:
        return False
    leaks = log.split("leak of ")[1:]
    return bool(leaks) and all("natsConn_processMsg" in b.split("\n\n")[0] for b in leaks)


def one_round(workdir, protocol, k):
    """PARALLEL pairs of nats-server + mapper, stopped together. Returns the
    mappers' exit codes."""
    def start_mapper(nats, j, attempt):
        port = free_port()
        m = Proc(f"mapper-{protocol}-{k}-{j}" + (f"-retry{attempt}" if attempt else ""),
                 [bin_path("mapper"), "--nats-url", nats.url, "--prefix", f"s{k}{j}",
                  "--http", f"127.0.0.1:{port}", "--heartbeat", "100ms", "--protocol",
                  protocol, "--transform", "exec:cat",
                  "--concurrency", "1"], env=SAN_ENV, log_dir=workdir)
        m.port = port
        return m

    def ready(m):
        # Alive and answering on its port: a free port taken by another
        # process between free_port() and the bind must not pass for ready.
        return m.alive() and http_get(m.port, "/readyz", timeout=1)[0] == 200

    pairs = []
    for j in range(PARALLEL):
        nats = Nats(workdir)
        pairs.append((nats, start_mapper(nats, j, 0)))
    for i, (nats, m) in enumerate(pairs):
        for attempt in range(1, 4):
            wait_until(lambda: ready(m) or not m.alive(), 20, what=f"{m.name} ready")
            if m.alive():
                break
            # The port was taken before the mapper bound it (another test
            # process on this machine): not what this test is about, retry.
            assert "address already in use" in m.log(), m.log()[-2000:]
            m.stop()
            m = start_mapper(nats, i, attempt)
            pairs[i] = (nats, m)
        assert ready(m), f"{m.name} not ready"
    # the same moment: both signals back to back
    for nats, m in pairs:
        os.kill(m.pid, signal.SIGTERM)
        os.kill(nats.proc.pid, signal.SIGTERM)
    codes = []
    for nats, m in pairs:
        rc = m.wait(30)
        m.stop()
        nats.stop()
        if rc == LEAK_EXIT and nats_leak_only(m.log()):
            print(f"  note: {m.name}: nats.c's own message leak at close (tolerated)")
            rc = 0
        codes.append(rc)
    return codes


def stop_with_server(protocol):
    workdir = tempfile.mkdtemp(prefix=f"cm-shutdown-{protocol}-")
    codes = []
    try:
        for k in range(ROUNDS // PARALLEL):
            codes += one_round(workdir, protocol, k)
        bad = [c for c in codes if c != 0]
        if bad:
            for name in sorted(os.listdir(workdir)):
                if name.startswith("mapper-") and name.endswith(".log"):
                    with open(os.path.join(workdir, name), errors="replace") as fh:
                        tail = fh.read().splitlines()[-3:]
                    print(f"---- {name}:", *tail, sep="\n  ")
        assert not bad, f"{len(bad)} of {len(codes)} exits not 0: {codes}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def no_saver_left(kill_saver):
    """sleep:300 per chunk, 2 workers: chunks are mapping and saving when
    the signals land. kill_saver: the saver is killed -9 first (answers
    nothing); else saver, fetcher and mapper get SIGTERM at the same moment."""
    P = Pipeline("all-at-once", records=20000, mappers=1, transform="sleep:300",
                 extra_mapper=["--concurrency", "2", "--save-timeout", "10s"])
    with torn_down(P):
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--job", "aao"])
        m = P.mappers[0]
        wait_until(lambda: P.db_query("SELECT count(*) FROM records")[0][0] >= 200, 30,
                   what="some chunks saved")
        if kill_saver:
            P.saver.kill9()
        t0 = time.monotonic()
        for p in ([] if kill_saver else [P.saver]) + [m, f]:
            p.signal(signal.SIGTERM)
        rc = m.wait(20)
        took = time.monotonic() - t0
        assert rc == 0, (rc, m.log()[-1500:])
        assert took < 10, f"mapper took {took:.1f} s to stop"
        msgs = [e["msg"] for e in log_lines(m)]
        assert not any("drain timeout" in x for x in msgs), msgs[-10:]
        last = msgs[-1]
        if kill_saver:
            assert "handed back to the fetcher because no saver confirmed them" in last, msgs[-6:]
            assert "mapper drained" not in "\n".join(msgs), msgs[-6:]
        else:
            assert ("handed back to the fetcher because no saver confirmed them" in last or
                    last == "mapper drained: no chunk in hand"), msgs[-6:]


check(f"mapper exec: SIGTERM while nats-server stops, native x{ROUNDS}: exit 0",
      lambda: stop_with_server("native"))
check(f"mapper exec: SIGTERM while nats-server stops, app9 x{ROUNDS}: exit 0",
      lambda: stop_with_server("app9"))
check("mapper: saver killed, SIGTERM: chunks handed back at once, log says so",
      lambda: no_saver_left(True))
check("mapper: SIGTERM to saver, mapper and fetcher at once: mapper exits promptly",
      lambda: no_saver_left(False))
finish()
