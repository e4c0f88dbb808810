#!/usr/bin/env python3
"""The fetcher's metrics tell the truth (issue 10, part 7).

- chunkmill_oldest_pending_age_seconds is the age of the chunk that has
  waited longest, not the fetcher's uptime whenever there is a backlog: it
  grows while no mapper takes work, and stays small while a mapper keeps up.
- /status "versions": 18 versions of live mappers in a 16-row table; no
  member is ever counted under another version's name (the excess is
  "other").
- The latency quantiles of the job summary never exceed what a chunk can
  have taken (the job's own duration), even when chunks land in a wide
  histogram bucket ((5, 10] for 2.6-5.3 s chunks reported p99 9.9 s).
"""
import json
import os
import shutil
import time

import rawnats
from harness import (Pipeline, check, dump_logs_on_failure, finish, http_get, parse_prometheus,
                     status, wait_until)


def metrics(port):
    st, body = http_get(port, "/metrics")
    assert st == 200, (st, body)
    return parse_prometheus(body)[0]


P = Pipeline("metrics-truth", records=6000, mappers=0, transform="sleep:200")


def oldest_pending_age():
    P.wait_ready([P.saver])
    P.start_fetcher(["--job", "age"])
    P.wait_ready([P.fetcher])
    # No mapper yet: the first chunk has waited since the job was opened.
    time.sleep(3)
    m = metrics(P.fetcher.port)
    up = status(P.fetcher)["uptime_s"]
    age = m["chunkmill_oldest_pending_age_seconds"]
    assert m["chunkmill_backlog_chunks"] > 0, m
    assert 2.5 <= age <= up + 0.5, (age, up)

    # A mapper keeps up (2 workers, 200 ms a chunk): nothing waits long,
    # although the fetcher has been up for a while and the backlog is big.
    P.start_mapper()
    wait_until(lambda: (status(P.fetcher) or {}).get("job", {}).get("done_chunks", 0) >= 5, 30,
               what="the mapper to be working")
    ages = []
    t_end = time.monotonic() + 3
    while time.monotonic() < t_end:
        m = metrics(P.fetcher.port)
        st = status(P.fetcher)
        if m["chunkmill_backlog_chunks"] > 0 and not st["job"]["complete"]:
            ages.append((m["chunkmill_oldest_pending_age_seconds"], st["uptime_s"]))
        time.sleep(0.25)
    assert len(ages) >= 4, ages
    assert all(up > 3 for _, up in ages), ages
    # A chunk waits at most for a free slot (a few hundred ms here); the
    # margin is for a loaded CI machine.
    assert max(a for a, _ in ages) < 2.0, ages

    wait_until(lambda: status(P.fetcher)["job"]["complete"], 60, interval=0.2,
               what="job complete")
    assert metrics(P.fetcher.port)["chunkmill_oldest_pending_age_seconds"] == 0


def versions_never_mislabelled():
    # 18 live versions (the real mapper's "dev" + 17 announced ones) for 16
    # rows: two of them are counted as "other", none under another's name.
    nats = rawnats.RawNats(P.nats.port, name="fake-mappers")
    fakes = [(f"fake{i}", f"v{i}") for i in range(1, 18)]
    try:
        for mid, ver in fakes:
            nats.pub(f"{P.prefix}.credit",
                     rawnats.credit(mid, f"{P.prefix}.chunk.{mid}", 0, version=ver))
        assert nats.flush(), "no PONG from nats-server"
        time.sleep(0.3)
        for mid, ver in fakes:
            nats.pub(f"{P.prefix}.heartbeat",
                     rawnats.heartbeat(mid, period_ms=60000, version=ver))
        assert nats.flush(), "no PONG from nats-server"
        assert not nats.errors, nats.errors
    finally:
        nats.close()

    def all_joined():
        st = status(P.fetcher)
        ids = {m["id"] for m in st["members"]}
        return st if all(mid in ids for mid, _ in fakes) else None

    st = wait_until(all_joined, 10, what="the announced mappers to join")
    reported = {m["id"]: m["version"] for m in st["members"]}
    for mid, ver in fakes:
        assert reported[mid] == ver, (mid, reported[mid], ver)
    versions = st["versions"]
    assert len(versions) <= 17, versions
    assert "other" in versions, sorted(versions)
    # Each named row counts exactly the members that report that version.
    for name, row in versions.items():
        if name == "other":
            continue
        want = sum(1 for v in reported.values() if v == name)
        assert row["members"] == want, (name, row, want)
    named = sum(row["members"] for name, row in versions.items() if name != "other")
    assert named + versions["other"]["members"] == len(reported), (versions, reported)
    assert versions["other"]["members"] == len(reported) - 16, versions


def fetcher_exits_clean():
    rc = P.fetcher.stop()
    assert rc == 0, (rc, P.fetcher.log()[-3000:])


def stop_first():
    P.stop_all()
    shutil.rmtree(P.workdir, ignore_errors=True)


Q = None


def latency_quantiles_within_job_time():
    # 4 chunks of 2.6 s on 2 workers: two take ~2.6 s, the two prefetched
    # ones ~5.2 s after their dispatch, i.e. in the bucket (5, 10].
    global Q
    Q = Pipeline("latency-truth", records=400, mappers=1, transform="sleep:2600",
                 extra_mapper=["--concurrency", "2", "--prefetch", "2"])
    Q.wait_ready([Q.saver] + Q.mappers)
    f = Q.start_fetcher(["--job", "lat", "--once"])
    assert f.wait(60) == 0, f.log()[-2000:]
    lines = [json.loads(l)["summary"] for l in f.out().splitlines() if l.startswith('{"summary"')]
    assert lines, f.out()
    s = lines[-1]
    assert s["chunks"] == 4 and s["records"] == 400, s
    p50, p99, secs = s["latency_p50_s"], s["latency_p99_s"], s["seconds"]
    # No chunk took longer than the job; every chunk took at least 2.6 s.
    assert p99 <= secs, s
    assert 2.5 <= p50 <= p99, s
    assert p99 >= 5.0, s  # the prefetched chunks did wait for a worker


def stop_second():
    if Q is not None:
        Q.stop_all()
        shutil.rmtree(Q.workdir, ignore_errors=True)


try:
    check("oldest pending age is the oldest chunk's, not the uptime", oldest_pending_age)
    check("18 live versions: none counted under another's name", versions_never_mislabelled)
    check("the fetcher exits 0 on SIGTERM", fetcher_exits_clean)
    stop_first()
    check("latency quantiles never exceed the job's duration", latency_quantiles_within_job_time)
except Exception:
    dump_logs_on_failure(P)
    raise
finally:
    stop_first()
    stop_second()
finish()
