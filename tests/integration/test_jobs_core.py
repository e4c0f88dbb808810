#!/usr/bin/env python3
"""The fetcher as a job service, without its HTTP API (docs/jobs.md): jobs
live in the ledger and `--serve` resumes each in its stored state.

1. A job killed half-way (kill -9 of a `--serve` fetcher) is resumed by the
   next `--serve` fetcher, which also submits a second job from its
   --source; both run at once (fair share measured from their done counts)
   and each lands exactly once in the saver's database under its own name.
2. A job whose stored state is `paused` (what the API's pause writes) stays
   paused across a restart: no chunk of it is leased and its done count does
   not move, while another job runs to completion next to it.
3. Redo by version end to end (`--redo V`, what the API's redo does): a job
   saved by mappers labelled v1, then mappers v2 and `--redo v1`: every
   chunk of the saver's database is v2's, its rows exactly once, and the
   ledger has every chunk done again by v2 at redo generation 1."""
import json
import sqlite3
import time

from harness import (Pipeline, check, finish, http_get, parse_prometheus, status, torn_down,
                     wait_until)

JOB_RECORDS = {"big": 40000, "small": 20000, "held": 30000, "other": 5000}
SEEDS = {"big": 1, "small": 2, "held": 3, "other": 4}
# 3 ms per chunk and a small window keep each job at a few seconds, long
# enough to watch two of them share the mappers.
P = Pipeline("jobs", records=1000, mappers=2, transform="sleep:3",
             extra_fetcher=["--max-inflight", "4"])


def job_args(name):
    return ["--job", name, "--source", "gen:users", "--records", str(JOB_RECORDS[name]),
            "--seed", str(SEEDS[name])]


def jobs_of(f):
    st = status(f)
    return {j["job"]: j for j in st["jobs"]} if st else {}


def exact(name):
    n = JOB_RECORDS[name]
    got = P.db_query("SELECT count(*), count(DISTINCT chunk * 1000000 + idx) FROM records "
                     "WHERE job = ?", (name,))
    assert got == [(n, n)], (name, got)
    assert P.db_query("SELECT count(*) FROM chunks WHERE job = ?", (name,)) == [(n // 100,)], name


def ledger_exec(sql, args=()):
    con = sqlite3.connect(P.ledger, timeout=10)
    try:
        with con:
            return con.execute(sql, args).fetchall()
    finally:
        con.close()


def two_jobs_resume_and_share():
    P.wait_ready([P.saver] + P.mappers)
    f = P.start_fetcher(["--serve"] + job_args("big"), name="serve1")
    wait_until(lambda: jobs_of(f).get("big", {}).get("chunks", {}).get("done", 0) >= 40, 60,
               interval=0.02, what="big job under way")
    f.kill9()
    assert ledger_exec("SELECT state FROM jobs WHERE name = 'big'") == [(1,)]  # running

    # The next --serve fetcher resumes "big" from the ledger alone (its
    # spec is stored) and submits "small" from its own --source.
    f = P.start_fetcher(["--serve"] + job_args("small"), name="serve2")
    wait_until(lambda: "big" in jobs_of(f) and "small" in jobs_of(f), 20, what="both jobs listed")
    j = jobs_of(f)
    big0 = j["big"]["chunks"]["done"]
    assert j["big"]["state"] == "running" and j["small"]["state"] == "running", j
    shares = []

    def both_progress():
        js = jobs_of(f)
        b, s = js["big"], js["small"]
        if b["state"] != "running" or s["state"] != "running":
            raise AssertionError(f"a job finished before both had shared: {js}")
        db, ds = b["chunks"]["done"] - big0, s["chunks"]["done"]
        shares.append((db, ds))
        return ds >= 60 and db >= 1

    wait_until(both_progress, 60, interval=0.05, what="both jobs progress")
    db, ds = shares[-1]
    # Equal priorities: equal shares of the mappers' credit (generous margin
    # for a busy machine: one job may momentarily have nothing due).
    assert 0.5 <= db / ds <= 2.0, shares[-10:]
    wait_until(lambda: all(x["state"] == "complete" for x in jobs_of(f).values()), 120,
               what="both jobs complete")
    js = jobs_of(f)
    assert js["big"]["records_saved"] == JOB_RECORDS["big"], js
    assert js["small"]["chunks"] == {"total": 200, "done": 200, "leased": 0, "pending": 0,
                                     "dead": 0}, js
    assert js["small"]["finished_at"] is not None and js["small"]["last_error"] is None, js
    # /status keeps the single "job" object for --job's job
    assert status(f)["job"]["name"] == "small" and status(f)["job"]["complete"] is True
    # per-job series next to the single-job ones (those follow --job's job)
    m, _ = parse_prometheus(http_get(f.port, "/metrics")[1])
    assert m['chunkmill_job_done_chunks{job="big"}'] == 400, m
    assert m['chunkmill_job_records_saved{job="small"}'] == JOB_RECORDS["small"], m
    assert m['chunkmill_job_running{job="big"}'] == 0 and m["chunkmill_fetcher_done_chunks"] == 200
    assert f.stop() == 0
    exact("big")
    exact("small")
    assert ledger_exec("SELECT name, state FROM jobs ORDER BY name") == [("big", 3), ("small", 3)]


def paused_stays_paused():
    # "held" half done, then its stored state set to paused (2), as the
    # job API's pause stores it.
    f = P.start_fetcher(["--once"] + job_args("held"), name="once")
    wait_until(lambda: (status(f) or {}).get("job", {}).get("done_chunks", 0) >= 30, 60,
               interval=0.02, what="held job under way")
    f.kill9()
    ledger_exec("UPDATE jobs SET state = 2 WHERE name = 'held'")
    done_before = ledger_exec("SELECT done_chunks FROM jobs WHERE name = 'held'")[0][0]
    # What the mappers held at the kill is still saved: wait until the
    # saver's count stops moving.
    seen = []

    def settled():
        seen.append(P.db_query("SELECT count(*) FROM chunks WHERE job = 'held'")[0][0])
        return len(seen) >= 5 and len(set(seen[-5:])) == 1

    wait_until(settled, 20, interval=0.1, what="the killed fetcher's leases drained")
    saved_before = seen[-1]

    f = P.start_fetcher(["--serve"] + job_args("other"), name="serve3")
    wait_until(lambda: jobs_of(f).get("other", {}).get("state") == "complete", 60,
               what="the other job completes")
    js = jobs_of(f)
    assert js["held"]["state"] == "paused", js["held"]
    assert js["held"]["chunks"]["leased"] == 0, js["held"]
    assert js["held"]["chunks"]["done"] == done_before, (js["held"], done_before)
    m, _ = parse_prometheus(http_get(f.port, "/metrics")[1])
    assert m['chunkmill_job_running{job="held"}'] == 0, m
    assert m['chunkmill_job_backlog_chunks{job="held"}'] == 0, m  # waits for the operator
    assert js["big"]["state"] == "complete" and js["small"]["state"] == "complete", js
    time.sleep(0.5)  # nothing of "held" on its way either
    assert P.db_query("SELECT count(*) FROM chunks WHERE job = 'held'")[0][0] == saved_before
    assert f.stop() == 0
    exact("other")
    assert ledger_exec("SELECT state FROM jobs WHERE name = 'held'") == [(2,)]


def redo_by_version():
    R = Pipeline("jredo", records=3000, mappers=0, transform="identity")
    with torn_down(R):
        R.start_mapper(["--version-label", "v1"])
        R.wait_ready([R.saver] + R.mappers)
        args = ["--once", "--job", "rv"]
        f = R.start_fetcher(args)
        assert f.wait(60) == 0, f.log()[-1500:]
        assert R.db_query("SELECT version, count(*) FROM chunks GROUP BY version") == [("v1", 30)]
        for m in R.mappers:
            m.stop()
        R.mappers = []
        R.transform = "fullname"  # v2 writes other rows: {"id","name"}
        R.start_mapper(["--version-label", "v2"])
        R.wait_ready(R.mappers)
        f = R.start_fetcher(args + ["--redo", "v1"])
        assert f.wait(60) == 0, f.log()[-1500:]
        assert 'redo of version v1: 30 chunks of job "rv" are pending again' in f.out(), f.out()
        assert R.db_query("SELECT version, count(*) FROM chunks GROUP BY version") == [("v2", 30)]
        assert R.db_query("SELECT count(*), count(DISTINCT chunk * 1000 + idx) FROM records") == \
            [(3000, 3000)]
        bodies = [json.loads(b) for (b,) in R.db_query("SELECT body FROM records")]
        assert all(set(b) == {"id", "name"} for b in bodies), bodies[:3]
        con = sqlite3.connect(R.ledger)
        try:
            assert con.execute("SELECT version, redo, count(*) FROM chunks GROUP BY 1, 2").fetchall() \
                == [("v2", 1, 30)]
            assert con.execute("SELECT state, done_chunks, records_done, redo_gen, redo_chunks, "
                               "redo_done, redo_version FROM jobs").fetchall() == \
                [(3, 30, 3000, 1, 30, 30, "v1")]
        finally:
            con.close()
        # nothing saved by v1 any more: a second redo of v1 finds nothing
        f = R.start_fetcher(args + ["--redo", "v1"])
        assert f.wait(60) == 0, f.log()[-1500:]
        assert 'redo of version v1: 0 chunks' in f.out(), f.out()


with torn_down(P):
    check("a killed --serve job is resumed next to a new one; both exact, sharing", two_jobs_resume_and_share)
    check("a paused job stays paused across a restart", paused_stays_paused)
check("redo by version: v1's chunks redone by v2, exact", redo_by_version)
finish()
