#!/usr/bin/env python3
"""Failures on purpose: a mapper killed, the saver killed and restarted,
nats-server stopped and restarted, a mapper drained with SIGTERM while it
holds chunks. Each time: exactly N records, every key once."""
import signal
import time

from harness import (Pipeline, check, dump_logs_on_failure, finish, http_get, log_lines,
                     parse_prometheus, status, ts_of, wait_until)

HB_S = 0.2  # the harness runs every daemon with --heartbeat 200ms
failed_pipelines = []


def exact(P, n):
    assert P.db_query("SELECT count(*) FROM records") == [(n,)], P.db_query("SELECT count(*) FROM records")
    assert P.db_query("SELECT count(*) FROM (SELECT DISTINCT job, chunk, idx FROM records)") == [(n,)]
    chunks = (n + P.chunk_size - 1) // P.chunk_size
    assert P.db_query("SELECT count(*) FROM chunks") == [(chunks,)]
    assert P.nats.varz()["slow_consumers"] == 0


def done_chunks(P):
    s = status(P.fetcher)
    return s["job"]["done_chunks"] if s else 0


def run(name, fn, **kw):
    P = Pipeline(name, **kw)
    try:
        fn(P)
    except Exception:
        failed_pipelines.append(P)
        raise
    finally:
        P.stop_all()


def mapper_killed(P):
    P.wait_ready([P.saver] + P.mappers)
    f = P.start_fetcher(["--once", "--ack-wait", "60s"])
    wait_until(lambda: done_chunks(P) >= 60, 60, interval=0.02, what="40% of the job")
    victim = P.mappers[1]
    held = status(victim)["slots_used"]
    t_kill = time.time()
    victim.kill9()
    rc = f.wait(120)
    assert rc == 0, (rc, f.log()[-1500:])
    exact(P, 15000)
    gone = [e for e in log_lines(f) if "missed 3 heartbeats" in e["msg"] and victim.name.split("-")[0][6:] in e["msg"] or
            ("missed 3 heartbeats" in e["msg"] and "m1-" in e["msg"])]
    assert gone, "the fetcher never declared the killed mapper gone"
    delay = ts_of(gone[0]) - t_kill
    # 3 missed heartbeats plus one fetcher tick and scheduling slack; far
    # below the 60 s ack wait.
    assert delay <= 3 * HB_S + 0.6, f"re-dispatch took {delay:.2f}s"
    print(f"  killed mapper held {held} chunks; declared gone {delay:.2f}s after kill -9")
    fs, _ = parse_prometheus(http_get(f.port, "/metrics")[1]) if f.alive() else ({}, {})


def saver_killed(P):
    P.wait_ready([P.saver] + P.mappers)
    f = P.start_fetcher(["--once"])
    wait_until(lambda: done_chunks(P) >= 150, 60, interval=0.02, what="30% of the job")
    P.saver.kill9()
    time.sleep(1.5)
    assert f.alive()
    P.saver = P.start_saver("saver2")
    rc = f.wait(120)
    assert rc == 0, (rc, f.log()[-1500:])
    exact(P, 50000)
    # A save sent again after its timeout, or answered "no responders"
    # (no saver subscribed) and retried.
    retries = sum(parse_prometheus(http_get(m.port, "/metrics")[1])[0][k]
                  for m in P.mappers for k in ("chunkmill_mapper_save_retries_total",
                                               "chunkmill_mapper_save_no_responders_total"))
    assert retries > 0, "mappers never had to retry a save: the saver was not really down"


def nats_restarted(P):
    P.wait_ready([P.saver] + P.mappers)
    f = P.start_fetcher(["--once"])
    wait_until(lambda: done_chunks(P) >= 100, 60, interval=0.02, what="part of the job")
    P.nats.stop()
    for p in [f, P.saver] + P.mappers:
        wait_until(lambda: http_get(p.port, "/readyz")[0] == 503, 5, what=f"{p.name} 503")
    time.sleep(2)
    assert f.alive()
    P.nats.start()
    for p in [P.saver] + P.mappers:
        wait_until(lambda: http_get(p.port, "/readyz")[0] == 200, 20, what=f"{p.name} 200 again")
    rc = f.wait(120)
    assert rc == 0, (rc, f.log()[-1500:])
    exact(P, 40000)
    # Our own outage is not a mapper death storm: nobody was declared gone.
    gone = [e["msg"] for e in log_lines(f) if "missed 3 heartbeats" in e["msg"]]
    assert not gone, gone


def mapper_drained(P):
    P.wait_ready([P.saver] + P.mappers)
    f = P.start_fetcher(["--ack-wait", "60s"])
    m = P.mappers[0]
    wait_until(lambda: (status(m) or {}).get("slots_used", 0) >= 4, 30, what="mapper holding 4 chunks")
    t0 = time.time()
    m.signal(signal.SIGTERM)
    wait_until(lambda: http_get(m.port, "/readyz")[0] in (503, None), 2, what="readiness 503 at once")
    rc = m.wait(10)
    took = time.time() - t0
    assert rc == 0, rc
    assert took < 5, took
    fs, _ = parse_prometheus(http_get(f.port, "/metrics")[1])
    assert fs["chunkmill_fetcher_handbacks_total"] >= 2, fs["chunkmill_fetcher_handbacks_total"]
    assert fs["chunkmill_fetcher_lease_expired_total"] == 0
    wait_until(lambda: (status(f) or {}).get("job", {}).get("complete"), 120, interval=0.2,
               what="job complete")
    exact(P, 4000)


def second_sigterm(P):
    P.wait_ready([P.saver] + P.mappers)
    f = P.start_fetcher(["--ack-wait", "60s"])
    m = P.mappers[0]
    wait_until(lambda: (status(m) or {}).get("busy_workers", 0) >= 2, 30, what="mapper busy")
    m.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert m.alive(), "the first SIGTERM must wait for the running transforms"
    t0 = time.time()
    m.signal(signal.SIGTERM)
    rc = m.wait(5)
    took = time.time() - t0
    assert rc == 0, rc
    assert took < 2.0, f"second SIGTERM took {took:.2f}s"
    # Everything it held came back at once: the job completes without any
    # lease waiting for --ack-wait.
    wait_until(lambda: (status(f) or {}).get("job", {}).get("complete"), 120, interval=0.2,
               what="job complete")
    fs, _ = parse_prometheus(http_get(f.port, "/metrics")[1])
    assert fs["chunkmill_fetcher_lease_expired_total"] == 0
    exact(P, 2000)


check("kill -9 one of 4 mappers: re-dispatched within 3 heartbeats, exact",
      lambda: run("mkill", mapper_killed, records=15000, mappers=4, transform="sleep:40",
                  extra_mapper=["--concurrency", "2"]))
check("kill -9 the saver and restart it: exact",
      lambda: run("skill", saver_killed, records=50000, mappers=2, transform="sleep:10",
                  extra_mapper=["--save-timeout", "1s"]))
check("nats-server stopped and restarted: 503 then 200, exact",
      lambda: run("nats", nats_restarted, records=40000, mappers=2, transform="sleep:10",
                  extra_mapper=["--concurrency", "4"]))
check("SIGTERM a mapper holding chunks: exits 0, hands back, exact",
      lambda: run("drain", mapper_drained, records=4000, mappers=2, transform="sleep:700",
                  extra_mapper=["--concurrency", "2"]))
check("second SIGTERM stops a draining mapper promptly, nothing lost",
      lambda: run("sigterm2", second_sigterm, records=2000, mappers=2, transform="sleep:5000",
                  extra_mapper=["--concurrency", "2"]))
for P in failed_pipelines:
    dump_logs_on_failure(P)
finish()
