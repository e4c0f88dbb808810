#!/usr/bin/env python3
"""--protocol app9: each chunkmill daemon replaces one service of the original
example (issue 7), talking to the other roles played by app9_peer, an
independent client implementing the original protocol (tests/app9).

  1. chunkmill fetcher + peer mappers + peer saver
  2. peer fetcher + chunkmill mappers + peer saver
  3. peer fetcher + peer mappers + chunkmill saver
  4. all three chunkmill daemons in app9 mode, a mapper SIGKILLed mid-job and
     the fetcher restarted from its ledger mid-job

100,000 records (1,000 chunks of 100) each: every chunk confirmed, every
record saved exactly once (peer saver: distinct chunks, records and ids;
chunkmill saver: rows, distinct keys and distinct ids in SQLite).
"""
import json
import os
import signal
import subprocess
import time

from harness import (Nats, Proc, bin_path, check, finish, free_port, http_get, status,
                     tmpdir, wait_until)

RECORDS = 100000
CHUNKS = 1000
PEER = os.path.join(os.environ.get("CM_BIN_DIR", os.path.join(os.path.dirname(__file__),
                                                              "../../build")),
                    "tests", "app9", "app9_peer")


class Env:
    """One nats-server and the processes of one scenario."""

    def __init__(self, name):
        self.dir = tmpdir(f"cm-app9-{name}-")
        self.nats = Nats(self.dir)
        self.procs = []
        self.n = 0

    def _proc(self, name, argv):
        self.n += 1
        p = Proc(f"{name}-{self.n}", argv, log_dir=self.dir)
        self.procs.append(p)
        return p

    def daemon(self, role, *extra):
        port = free_port()
        p = self._proc(role, [bin_path(role), "--protocol", "app9", "--nats-url", self.nats.url,
                              "--http", f"127.0.0.1:{port}", "--heartbeat", "200ms"] + list(extra))
        p.port = port
        return p

    def peer(self, role, *extra):
        return self._proc(f"peer-{role}", [PEER, "--role", role, "--nats-url", self.nats.url] +
                          list(extra))

    def ready(self, p, timeout=20):
        wait_until(lambda: http_get(p.port, "/readyz")[0] == 200, timeout,
                   what=f"{p.name} /readyz 200")

    def peer_connected(self, p, timeout=10):
        wait_until(lambda: "connected" in p.log(), timeout, what=f"{p.name} connected")

    def close(self):
        for p in reversed(self.procs):
            p.stop()
        self.nats.stop()

    def dump(self):
        for p in self.procs:
            print(f"---- {p.name} (exit {p.p.returncode}) ----")
            print("\n".join(p.log().splitlines()[-8:]))
            print("\n".join(p.out().splitlines()[-4:]))


def summary(p, timeout=15):
    """The JSON summary line a peer prints on exit (SIGTERM for mappers/savers)."""
    if p.alive():
        p.signal(signal.SIGTERM)
    assert p.wait(timeout) == 0, f"{p.name} exit {p.p.returncode}"
    lines = [l for l in p.out().splitlines() if l.startswith("{")]
    assert lines, f"{p.name}: no summary"
    return json.loads(lines[-1])


def check_peer_saver(s):
    assert s["chunks"] == CHUNKS, s
    assert s["records"] == RECORDS, s
    assert s["distinct_ids"] == RECORDS and s["duplicate_ids"] == 0, s
    assert s["bad_records"] == 0 and s["bad_chunks"] == 0, s
    assert s["max_index"] == CHUNKS - 1, s


def db_query(db, sql, args=()):
    import sqlite3
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def check_db_exact(db):
    q = lambda sql: db_query(db, sql)[0][0]  # noqa: E731
    assert q("SELECT count(*) FROM records") == RECORDS
    assert q("SELECT count(*) FROM records WHERE job='app9'") == RECORDS
    assert q("SELECT count(*) FROM (SELECT DISTINCT job, chunk, idx FROM records)") == RECORDS
    assert q("SELECT count(DISTINCT json_extract(body, '$.id')) FROM records") == RECORDS
    assert q("SELECT count(*) FROM chunks WHERE job='app9'") == CHUNKS
    assert db_query(db, "SELECT min(chunk), max(chunk) FROM records") == [(0, CHUNKS - 1)]
    per = db_query(db, "SELECT min(n), max(n) FROM (SELECT count(*) n FROM records GROUP BY chunk)")
    assert per == [(100, 100)], per


def fetcher_complete(p):
    def done():
        st = status(p)
        return st if st and st["job"]["complete"] else None
    return done


def scenario_chunkmill_fetcher():
    e = Env("fetcher")
    try:
        saver = e.peer("saver")
        mappers = [e.peer("mapper") for _ in range(4)]
        for p in [saver] + mappers:
            e.peer_connected(p)
        f = e.daemon("fetcher", "--records", str(RECORDS), "--ledger",
                     os.path.join(e.dir, "ledger.db"), "--job", "users", "--ack-wait", "2s",
                     "--progress", "1s")
        st = wait_until(fetcher_complete(f), 120, interval=0.2, what="fetcher job complete")
        a9 = st["app9"]
        print(f"  fetcher app9 counters: {a9}")
        assert st["job"]["done_chunks"] == CHUNKS and st["job"]["records_done"] == RECORDS, st
        # One chunk per im_listening: never more sends than invitations.
        assert a9["sent"] <= a9["im_listening"], a9
        assert a9["confirmations"] == CHUNKS, a9
        assert f'job "users" complete: {RECORDS} records in {CHUNKS} chunks' in f.out()
        assert f.stop() == 0
        check_peer_saver(summary(saver))
        for m in mappers:
            summary(m)
    except Exception:
        e.dump()
        raise
    finally:
        e.close()


def scenario_chunkmill_mapper():
    e = Env("mapper")
    try:
        saver = e.peer("saver")
        mappers = [e.daemon("mapper", "--id", f"m{i}") for i in range(3)]
        e.peer_connected(saver)
        for m in mappers:
            e.ready(m)
        f = e.peer("fetcher", "--records", str(RECORDS), "--timeout", "150")
        assert f.wait(160) == 0, f"peer fetcher exit {f.p.returncode}: {f.out()[-300:]}"
        fs = json.loads([l for l in f.out().splitlines() if l.startswith("{")][-1])
        print(f"  peer fetcher: {fs}")
        assert fs["confirmed"] == CHUNKS, fs
        sts = [status(m) for m in mappers]
        print("  chunkmill mappers: " + ", ".join(
            f'ok={s["chunks_ok"]} late={s["late_chunks"]} handed_back={s["handed_back"]} '
            f'draining_subs={s["subscriptions_draining"]}' for s in sts))
        assert sum(s["chunks_ok"] for s in sts) >= CHUNKS
        assert all(s["chunks_failed"] == 0 for s in sts), sts
        assert sum(s["records"] for s in sts) >= RECORDS
        check_peer_saver(summary(saver))
        for m in mappers:
            assert m.stop() == 0, m.name
    except Exception:
        e.dump()
        raise
    finally:
        e.close()


def scenario_chunkmill_saver():
    e = Env("saver")
    db = os.path.join(e.dir, "results.db")
    try:
        saver = e.daemon("saver", "--db", db)
        mappers = [e.peer("mapper") for _ in range(4)]
        e.ready(saver)
        for m in mappers:
            e.peer_connected(m)
        f = e.peer("fetcher", "--records", str(RECORDS), "--timeout", "150")
        assert f.wait(160) == 0, f"peer fetcher exit {f.p.returncode}: {f.out()[-300:]}"
        fs = json.loads([l for l in f.out().splitlines() if l.startswith("{")][-1])
        print(f"  peer fetcher: {fs}")
        assert fs["confirmed"] == CHUNKS, fs
        ss = status(saver)
        print(f"  chunkmill saver: saved={ss['chunks_saved']} duplicates={ss['duplicates']}")
        assert ss["chunks_saved"] == CHUNKS and ss["records_saved"] == RECORDS, ss
        assert ss["errors"] == 0, ss
        # Every duplicate delivery was confirmed too: the peer fetcher saw a
        # confirmation for each chunk it sent more than once.
        assert saver.stop() == 0
        check_db_exact(db)
        for chunk in (0, 517, 999):
            src = subprocess.run([PEER, "--role", "fetcher", "--records", str(RECORDS),
                                  "--dump-chunk", str(chunk)], capture_output=True, text=True,
                                 timeout=30, check=True).stdout
            data = json.loads(src)["data"]
            rows = db_query(db, "SELECT idx, body FROM records WHERE job='app9' AND chunk=? "
                                "ORDER BY idx", (chunk,))
            assert len(rows) == len(data) == 100
            for (idx, body), rec in zip(rows, data):
                want = {"id": rec["uuid"], "name": f'{rec["fn"]} {rec["ln"]}'}
                assert json.loads(body) == want, (chunk, idx, body, want)
    except Exception:
        e.dump()
        raise
    finally:
        e.close()


def scenario_all_chunkmill_with_kill():
    e = Env("all")
    db = os.path.join(e.dir, "results.db")
    ledger = os.path.join(e.dir, "ledger.db")
    fetch_args = ["--records", str(RECORDS), "--ledger", ledger, "--job", "users", "--ack-wait",
                  "2s", "--progress", "1s"]
    try:
        saver = e.daemon("saver", "--db", db)
        mappers = [e.daemon("mapper", "--id", f"m{i}") for i in range(3)]
        for p in [saver] + mappers:
            e.ready(p)
        f = e.daemon("fetcher", *fetch_args)
        e.ready(f)
        wait_until(lambda: (status(f) or {"job": {"done_chunks": 0}})["job"]["done_chunks"] >= 150,
                   60, interval=0.01, what="150 chunks done")
        # SIGKILL a mapper, preferably while it holds a chunk.
        victim = mappers[0]
        for _ in range(300):
            st = status(victim)
            if st and st["state"] == "busy":
                break
        victim.kill9()
        print(f"  killed {victim.name} (last state: {st and st['state']})")
        wait_until(lambda: (status(f) or {"job": {"done_chunks": 0}})["job"]["done_chunks"] >= 500,
                   60, interval=0.01, what="500 chunks done")
        # Restart the fetcher from its ledger: what is confirmed stays done.
        before = status(f)["job"]
        assert f.stop() == 0
        done_at_stop = db_query(ledger, "SELECT count(*) FROM chunks WHERE job='users' AND "
                                        "state=2")[0][0]
        assert done_at_stop >= before["done_chunks"], (done_at_stop, before)
        f2 = e.daemon("fetcher", *fetch_args)
        st = wait_until(fetcher_complete(f2), 120, interval=0.2, what="job complete after restart")
        a9 = st["app9"]
        print(f"  done before restart: {done_at_stop}; second run: {a9}")
        # The second run sends only what was not confirmed (plus re-sends
        # after --ack-wait), never the chunks confirmed before the restart.
        assert a9["sent"] <= CHUNKS - done_at_stop + a9["expired"], (a9, done_at_stop)
        assert st["job"]["done_chunks"] == CHUNKS and st["job"]["records_done"] == RECORDS, st
        ss = status(saver)
        assert ss["chunks_saved"] == CHUNKS and ss["records_saved"] == RECORDS, ss
        assert f2.stop() == 0
        for m in mappers[1:]:
            assert m.stop() == 0
        assert saver.stop() == 0
        check_db_exact(db)
    except Exception:
        e.dump()
        raise
    finally:
        e.close()


def peer_exists():
    assert os.access(PEER, os.X_OK), f"{PEER} not built"


check("app9_peer is built", peer_exists)
check("1. chunkmill fetcher + original mappers and saver (100,000 records)",
      scenario_chunkmill_fetcher)
check("2. chunkmill mappers + original fetcher and saver (100,000 records)",
      scenario_chunkmill_mapper)
check("3. chunkmill saver + original fetcher and mappers (100,000 records)",
      scenario_chunkmill_saver)
check("4. all chunkmill in app9 mode, mapper SIGKILLed, fetcher restarted (100,000 records)",
      scenario_all_chunkmill_with_kill)
finish()
