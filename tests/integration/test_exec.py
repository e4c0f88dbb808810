#!/usr/bin/env python3
"""exec:COMMAND end to end: real mapper children, NATS, saver.

- a shell one-liner (sed) upper-cases names: every record mapped, in order;
- a python3 child answers {"error": ...} or a non-JSON line for chosen
  records: exactly those become dead_letters rows, the rest is saved, and
  its counter:NAME,N stderr lines show up in /metrics;
- a child that crashes on one chunk and hangs on another (--exec-timeout):
  those chunks are NAKed, go dead after --max-deliver 2, the mapper stays
  up and keeps mapping with restarted children, and the job ends.
"""
import json
import os

from harness import (Pipeline, check, dump_logs_on_failure, finish, http_get, log_lines,
                     parse_prometheus)

failed = []


def write_input(P, n):
    path = os.path.join(P.workdir, "in.ndjson")
    with open(path, "w") as fh:
        for i in range(1, n + 1):
            fh.write(json.dumps({"i": i, "fn": f"ada{i}", "ln": f"lovelace{i}"}) + "\n")
    return path


def run(name, transform, n, extra_mapper=(), extra_fetcher=(), mappers=2, chunk_size=100):
    P = Pipeline(name, records=0, mappers=mappers, transform=transform,
                 extra_mapper=list(extra_mapper), chunk_size=chunk_size)
    try:
        path = write_input(P, n)
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once", "--job", name, "--source", f"file:{path}"] +
                            list(extra_fetcher))
        rc = f.wait(180)
        return P, f, rc
    except Exception:
        failed.append(P)
        raise


def sed_uppercase():
    # GNU sed: \U upper-cases the rest of the replacement; -u: unbuffered
    P, f, rc = run("sed", "exec:sh -c 'sed -u -E \"s/(\\\"fn\\\": *\\\")([^\\\"]*)/\\1\\U\\2/\"'",
                   1000)
    try:
        assert rc == 0, (rc, f.log()[-800:])
        rows = P.db_query("SELECT chunk, idx, body FROM records ORDER BY chunk, idx")
        assert len(rows) == 1000
        for c, i, b in rows:
            n = c * 100 + i + 1
            assert json.loads(b) == {"i": n, "fn": f"ADA{n}", "ln": f"lovelace{n}"}, (c, i, b)
        assert P.db_query("SELECT count(*) FROM dead_letters") == [(0,)]
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


ERRORS = r'''
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    sys.stderr.write("counter:seen,1\n")
    if r["i"] % 50 == 0:
        print(json.dumps({"error": "no multiples of 50: %d" % r["i"]}))
    elif r["i"] % 77 == 0:
        print("this is not json")
    else:
        print(json.dumps({"i": r["i"], "name": r["fn"] + " " + r["ln"]}))
    sys.stdout.flush()
'''


def error_records():
    cmd = "exec:" + json.dumps(["python3", "-u", "-c", ERRORS])
    P, f, rc = run("errors", cmd, 500)
    try:
        assert rc == 0, (rc, f.log()[-800:])
        fifty = list(range(50, 501, 50))
        sevens = list(range(77, 501, 77))
        assert P.db_query("SELECT count(*) FROM records") == [(500 - len(fifty) - len(sevens),)]
        dl = P.db_query("SELECT chunk, idx, reason, record FROM dead_letters ORDER BY chunk, idx")
        got = sorted(c * 100 + i + 1 for c, i, _, _ in dl)
        assert got == sorted(fifty + sevens), got
        for c, i, reason, rec in dl:
            n = c * 100 + i + 1
            assert json.loads(rec)["i"] == n
            if n % 50 == 0:
                assert reason == f"exec: no multiples of 50: {n}", reason
            else:
                assert "not valid JSON" in reason, reason
        seen = 0
        for m in P.mappers:
            s, _ = parse_prometheus(http_get(m.port, "/metrics")[1])
            seen += s.get('chunkmill_exec_counter_total{name="seen"}', 0)
        assert seen == 500, seen
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


CRASH_HANG = r'''
import json, sys, time
for line in sys.stdin:
    r = json.loads(line)
    if r["i"] == 250:
        sys.exit(3)          # chunk 2 crashes the child
    if r["i"] == 150:
        time.sleep(3600)     # chunk 1 hangs it
    print(line.strip())
    sys.stdout.flush()
'''


def crash_and_hang():
    cmd = "exec:" + json.dumps(["python3", "-u", "-c", CRASH_HANG])
    P, f, rc = run("crash", cmd, 500, extra_mapper=["--exec-timeout", "2s"], mappers=1,
                   extra_fetcher=["--max-deliver", "2", "--allow-dead"])
    try:
        assert rc == 0, (rc, f.log()[-1500:])
        assert "2 dead chunks" in f.out(), f.out()[-500:]
        assert P.db_query("SELECT DISTINCT chunk FROM records ORDER BY chunk") == [(0,), (3,), (4,)]
        assert P.db_query("SELECT count(*) FROM records") == [(300,)]
        m = P.mappers[0]
        assert m.alive(), "the mapper died"
        msgs = [e["msg"] for e in log_lines(m)]
        assert any("exited with status 3" in x for x in msgs), msgs[-20:]
        assert any("timed out after 2000 ms" in x for x in msgs), msgs[-20:]
        dead = [e["msg"] for e in log_lines(f) if "is dead after 2 deliveries" in e["msg"]]
        assert len(dead) == 2, dead
        s, _ = parse_prometheus(http_get(m.port, "/metrics")[1])
        assert s["chunkmill_exec_restarts_total"] >= 4, s.get("chunkmill_exec_restarts_total")
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


check("exec: sed one-liner upper-cases names", sed_uppercase)
check("exec: {\"error\"} and non-JSON lines are dead letters; counters", error_records)
check("exec: crash and hang -> NAK, dead after max-deliver, mapper survives", crash_and_hang)
for p in failed:
    dump_logs_on_failure(p)
finish()
