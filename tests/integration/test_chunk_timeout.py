#!/usr/bin/env python3
"""--chunk-timeout: a transform that never returns cannot hold its chunk
forever (issue 10, part 3).

A plugin (examples/plugin/hang.c) loops forever on the one record that
contains "hang":true (record 250, chunk 2 of 5). With --chunk-timeout 1s and
--max-deliver 2:
- the job completes (exit 0 with --allow-dead): chunk 2 is dead after its
  two attempts, the other 400 records are saved exactly (each row checked
  against its input);
- chunkmill_mapper_chunk_timeouts_total is 2 and
  chunkmill_mapper_stuck_workers 2: both attempts landed on the mapper's
  two workers, which stay stuck (a thread cannot be interrupted);
- /healthz is 503 once both workers are stuck, naming the reason;
- SIGTERM still stops the mapper promptly with exit 0.
With 3 workers and one stuck, /healthz stays 200. In --protocol app9 (one
chunk at a time, no NAK) the stuck mapper drops the chunk and is not alive
(503); the fetcher's resend reaches a second mapper and the job is exact.
"""
import json
import os
import shutil
import signal
import sqlite3
import tempfile
import time

from harness import (BIN_DIR, Nats, Pipeline, Proc, bin_path, check, finish, free_port,
                     http_get, log_lines, parse_prometheus, status, torn_down, wait_until)

HANG = os.path.join(BIN_DIR, "examples", "plugin", "hang.so")
N = 500


def hung_plugin():
    P = Pipeline("chunk-timeout", records=0, mappers=1, transform=f"plugin:{HANG}",
                 extra_mapper=["--concurrency", "2", "--chunk-timeout", "1s"])
    with torn_down(P):
        path = os.path.join(P.workdir, "in.ndjson")
        with open(path, "w") as fh:
            for i in range(1, N + 1):
                r = {"i": i, "hang": True} if i == 250 else {"i": i}
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
        P.wait_ready([P.saver] + P.mappers)
        m = P.mappers[0]
        f = P.start_fetcher(["--once", "--job", "ct", "--source", f"file:{path}",
                             "--max-deliver", "2", "--allow-dead", "--ack-wait", "60s"])
        rc = f.wait(60)
        assert rc == 0, (rc, f.log()[-1500:])
        rows = P.db_query("SELECT chunk, idx, body FROM records ORDER BY chunk, idx")
        assert len(rows) == 400, len(rows)
        for c, i, b in rows:
            assert c != 2 and json.loads(b) == {"i": c * 100 + i + 1}, (c, i, b)
        dead = [e["msg"] for e in log_lines(f) if "is dead after 2 deliveries" in e["msg"]]
        assert len(dead) == 1 and "chunk 2 " in dead[0], dead
        fails = [e["msg"] for e in log_lines(f) if "failed on" in e["msg"]]
        assert sum("did not finish within --chunk-timeout (1000 ms)" in x for x in fails) == 2, fails
        s, _ = parse_prometheus(http_get(m.port, "/metrics")[1])
        assert s["chunkmill_mapper_chunk_timeouts_total"] == 2, s
        assert s["chunkmill_mapper_stuck_workers"] == 2, s
        st, body = http_get(m.port, "/healthz")
        assert st == 503 and "all 2 workers stuck" in body, (st, body)
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        assert m.wait(15) == 0, m.log()[-800:]
        assert time.monotonic() - t0 < 10


def one_stuck_still_healthy():
    # 3 workers, --max-deliver 1: the hanging chunk is tried once and dead;
    # one worker stays stuck and /healthz stays 200 (two still work).
    P = Pipeline("chunk-timeout-1", records=0, mappers=1, transform=f"plugin:{HANG}",
                 extra_mapper=["--concurrency", "3", "--chunk-timeout", "1s"])
    with torn_down(P):
        path = os.path.join(P.workdir, "in.ndjson")
        with open(path, "w") as fh:
            for i in range(1, 201):
                r = {"i": i, "hang": True} if i == 150 else {"i": i}
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
        P.wait_ready([P.saver] + P.mappers)
        m = P.mappers[0]
        f = P.start_fetcher(["--once", "--job", "ct1", "--source", f"file:{path}",
                             "--max-deliver", "1", "--allow-dead"])
        assert f.wait(60) == 0, f.log()[-800:]
        assert P.db_query("SELECT count(*) FROM records") == [(100,)]
        wait_until(lambda: parse_prometheus(http_get(m.port, "/metrics")[1])[0]
                   .get("chunkmill_mapper_stuck_workers") == 1, 10, what="one stuck worker")
        assert http_get(m.port, "/healthz")[0] == 200


def app9_mode():
    # --protocol app9 (one chunk at a time, no NAK): the stuck mapper drops
    # the chunk and reports 503; the fetcher sends it again after
    # --ack-wait to a second mapper (whose plugin has no trigger), and the
    # job completes exactly.
    workdir = tempfile.mkdtemp(prefix="cm-ct-app9-")
    nats = Nats(workdir)
    procs = []

    def daemon(role, *extra):
        port = free_port()
        p = Proc(f"{role}-{port}", [bin_path(role), "--protocol", "app9", "--nats-url", nats.url,
                                    "--http", f"127.0.0.1:{port}", "--heartbeat", "200ms"] +
                 list(extra), log_dir=workdir)
        p.port = port
        procs.append(p)
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 20, what=f"{role} ready")
        return p

    try:
        path = os.path.join(workdir, "in.ndjson")
        with open(path, "w") as fh:
            for i in range(1, N + 1):
                r = {"i": i, "hang": True} if i == 250 else {"i": i}
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
        db = os.path.join(workdir, "r.db")
        daemon("saver", "--db", db)
        m1 = daemon("mapper", "--transform", f"plugin:{HANG}", "--chunk-timeout", "1s", "--id",
                    "m1")
        f = daemon("fetcher", "--source", f"file:{path}", "--ledger",
                   os.path.join(workdir, "l.db"), "--job", "a9", "--ack-wait", "2s")
        wait_until(lambda: http_get(m1.port, "/healthz")[0] == 503, 20, what="m1 stuck")
        st, body = http_get(m1.port, "/healthz")
        assert "stuck in a transform past --chunk-timeout" in body, body
        s, _ = parse_prometheus(http_get(m1.port, "/metrics")[1])
        assert s["chunkmill_mapper_chunk_timeouts_total"] == 1, s
        daemon("mapper", "--transform", f"plugin:{HANG}", "--transform-arg", "no-such-text",
               "--id", "m2")
        wait_until(lambda: (status(f) or {"job": {"complete": False}})["job"]["complete"], 60,
                   interval=0.2, what="job complete")
        con = sqlite3.connect(db, timeout=10)
        try:
            rows = con.execute("SELECT chunk, idx, body FROM records").fetchall()
        finally:
            con.close()
        assert len(rows) == N, len(rows)
        assert sorted(json.loads(b)["i"] for _, _, b in rows) == list(range(1, N + 1))
        t0 = time.monotonic()
        m1.signal(signal.SIGTERM)
        assert m1.wait(15) == 0, m1.log()[-800:]
        assert time.monotonic() - t0 < 10
    finally:
        for p in reversed(procs):
            p.stop()
        nats.stop()
        shutil.rmtree(workdir, ignore_errors=True)


check("chunk-timeout: a plugin that never returns: job completes, chunk dead, /healthz 503",
      hung_plugin)
check("chunk-timeout: one stuck worker of three: /healthz stays 200", one_stuck_still_healthy)
check("chunk-timeout: app9 mode: stuck mapper 503, chunk sent again, job exact", app9_mode)
finish()
