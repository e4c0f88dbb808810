#!/usr/bin/env python3
"""Chunks that keep failing go dead after --max-deliver, with their reason;
the exit status says so; --replay-dead brings them back. Records the
transform rejects and source lines that are not JSON become dead-letter rows
while every good record of their chunks is saved."""
import json
import os
import subprocess

from harness import (Pipeline, bin_path, check, dump_logs_on_failure, finish, http_get,
                     log_lines, parse_prometheus)

failed = []


def dead_chunks_then_replay():
    P = Pipeline("dead", records=2000, mappers=2, transform="fail:3,7",
                 extra_fetcher=["--job", "d", "--max-deliver", "3"])
    try:
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once"])
        rc = f.wait(120)
        assert rc == 3, (rc, f.log()[-800:])
        out = f.out()
        assert 'job "d" complete with dead chunks: 1800 records in 18 chunks, 2 dead chunks' in out, out
        dead = [e for e in log_lines(f) if "is dead after 3 deliveries" in e["msg"]]
        assert sorted(e["msg"].split()[1] for e in dead) == ["3", "7"], dead
        assert all("fails on purpose" in e["msg"] for e in dead)
        assert P.db_query("SELECT count(*) FROM records") == [(1800,)]
        assert P.db_query("SELECT count(*) FROM records WHERE chunk IN (3, 7)") == [(0,)]
        # The ledger keeps the reason.
        import sqlite3
        con = sqlite3.connect(P.ledger)
        rows = con.execute("SELECT idx, reason FROM chunks WHERE state=3 ORDER BY idx").fetchall()
        con.close()
        assert [r[0] for r in rows] == [3, 7] and all("on purpose" in r[1] for r in rows), rows

        # --allow-dead: the same finished job exits 0.
        f = P.start_fetcher(["--once", "--allow-dead"])
        assert f.wait(60) == 0, f.log()[-800:]

        # Mappers that can handle them now; replay the dead chunks.
        for m in P.mappers:
            m.stop()
        P.mappers = []
        P.transform = "identity"
        P.start_mapper()
        P.wait_ready(P.mappers)
        f = P.start_fetcher(["--once", "--replay-dead"])
        rc = f.wait(120)
        assert rc == 0, (rc, f.log()[-800:])
        assert "replayed 2 dead chunks" in f.out()
        assert P.db_query("SELECT count(*) FROM records") == [(2000,)]
        assert P.db_query("SELECT count(DISTINCT chunk) FROM records") == [(20,)]
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def poison_records():
    P = Pipeline("poison", records=0, mappers=2, transform="fullname")
    path = os.path.join(P.workdir, "users.ndjson")
    bad_json, missing = [], []
    with open(path, "w") as fh:
        for i in range(1, 1001):  # line numbers are 1-based
            if i % 97 == 0:
                fh.write('{"uuid": "broken", "fn": \n')
                bad_json.append(i)
            elif i % 101 == 0:
                fh.write(json.dumps({"uuid": f"u{i}", "ln": f"L{i}"}) + "\n")
                missing.append(i)
            else:
                fh.write(json.dumps({"uuid": f"u{i}", "fn": f"F{i}", "ln": f"L{i}",
                                     "friends": []}) + "\n")
    good = 1000 - len(bad_json) - len(missing)
    try:
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once", "--source", f"file:{path}", "--job", "p"])
        rc = f.wait(120)
        assert rc == 0, (rc, f.log()[-800:])
        assert P.db_query("SELECT count(*) FROM records") == [(good,)]
        dl = P.db_query("SELECT chunk, idx, reason, record FROM dead_letters ORDER BY chunk, idx")
        assert len(dl) == len(bad_json) + len(missing), dl
        src_dead = [r for r in dl if r[1] < 0]
        assert sorted(-r[1] for r in src_dead) == bad_json, src_dead
        assert all("invalid JSON" in r[2] for r in src_dead)
        rec_dead = [r for r in dl if r[1] >= 0]
        assert sorted(r[0] * 100 + r[1] + 1 for r in rec_dead) == missing, rec_dead
        assert all('"fn"' in r[2] for r in rec_dead), rec_dead
        # The good records of the chunks that held poison are all there.
        for line in missing + bad_json:
            chunk = (line - 1) // 100
            n = P.db_query("SELECT count(*) FROM records WHERE chunk=?", (chunk,))[0][0]
            bad_here = sum(1 for x in missing + bad_json if (x - 1) // 100 == chunk)
            assert n == 100 - bad_here, (chunk, n, bad_here)
        row = P.db_query("SELECT body FROM records WHERE chunk=0 AND idx=0")[0][0]
        assert json.loads(row) == {"id": "u1", "name": "F1 L1"}
        ss, _ = parse_prometheus(http_get(P.saver.port, "/metrics")[1])
        assert ss["chunkmill_saver_dead_letters_total"] == len(dl)
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def bad_command_lines():
    r = subprocess.run([bin_path("fetcher"), "--chunk-size", "zero"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "--chunk-size" in r.stderr, r
    r = subprocess.run([bin_path("fetcher"), "--source", "file:/nonexistent/x.ndjson"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "/nonexistent/x.ndjson" in r.stderr, r
    r = subprocess.run([bin_path("mapper"), "--transform", "frobnicate"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "frobnicate" in r.stderr, r
    r = subprocess.run([bin_path("saver"), "--db", "/nonexistent/dir/x.db"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1 and "/nonexistent/dir/x.db" in r.stderr, r


check("failing chunks go dead (exit 3), --allow-dead, --replay-dead", dead_chunks_then_replay)
check("poison records and invalid source lines become dead letters", poison_records)
check("bad command lines: clear errors naming the option", bad_command_lines)
for P in failed:
    dump_logs_on_failure(P)
finish()
