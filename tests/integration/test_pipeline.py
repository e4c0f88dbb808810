#!/usr/bin/env python3
"""End to end: 100,000 gen:users records, fullname, 4 mappers.

The results database must hold exactly 100,000 records in 1,000 chunks, each
(job, chunk, idx) once, and sampled records must equal what fullname gives
for the generated input. All three daemons answer /healthz and /readyz 200
while connected, /metrics parses as Prometheus text and its counters match
the job, and every daemon exits 0 on SIGTERM. The mappers are labelled v1 and v2
(--version-label): every chunks row names one of them, as many times as that
version's mappers had chunks confirmed by the saver.
"""
import json
import signal
import subprocess

from harness import (Pipeline, bin_path, check, dump_logs_on_failure, finish, http_get,
                     parse_prometheus, wait_until)

RECORDS = 100000
VERSIONS = ("v1", "v2", "v1", "v2")
P = Pipeline("pipeline", records=RECORDS, mappers=0, transform="fullname")
for _v in VERSIONS:
    P.start_mapper(["--version-label", _v])


def run_job():
    P.wait_ready([P.saver] + P.mappers)
    P.start_fetcher(["--job", "users"])  # no --once: stays up and ready
    P.wait_ready([P.fetcher])

    def complete():
        st, body = http_get(P.fetcher.port, "/status")
        return st == 200 and json.loads(body)["job"]["complete"]

    wait_until(complete, 240, interval=0.2, what="job complete")
    out = P.fetcher.out()
    assert 'job "users" complete: 100000 records in 1000 chunks' in out, out[-500:]


def exact_rows():
    assert P.db_query("SELECT count(*) FROM records")[0][0] == RECORDS
    assert P.db_query("SELECT count(*) FROM (SELECT DISTINCT job, chunk, idx FROM records)")[0][0] == RECORDS
    assert P.db_query("SELECT count(DISTINCT chunk) FROM records")[0][0] == 1000
    assert P.db_query("SELECT count(*) FROM chunks WHERE job='users'")[0][0] == 1000
    per_chunk = P.db_query("SELECT min(n), max(n) FROM (SELECT count(*) n FROM records GROUP BY chunk)")
    assert per_chunk == [(100, 100)], per_chunk
    assert P.db_query("SELECT min(idx), max(idx) FROM records") == [(0, 99)]
    assert P.db_query("SELECT min(chunk), max(chunk) FROM records") == [(0, 999)]


def sampled_records_match_fullname():
    for chunk in (0, 1, 417, 999):
        src = subprocess.run([bin_path("fetcher"), "--records", str(RECORDS), "--print-chunk",
                              str(chunk), "--job", "users"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        data = json.loads(src)["data"]
        assert len(data) == 100
        rows = P.db_query("SELECT idx, body FROM records WHERE job='users' AND chunk=? ORDER BY idx",
                          (chunk,))
        assert len(rows) == 100
        for (idx, body), rec in zip(rows, data):
            got = json.loads(body)
            want = {"id": rec["uuid"], "name": f'{rec["fn"]} {rec["ln"]}'}
            assert got == want, (chunk, idx, got, want)


def probes_and_metrics():
    for p in [P.fetcher, P.saver] + P.mappers:
        assert http_get(p.port, "/healthz")[0] == 200, p.name
        st, body = http_get(p.port, "/readyz")
        assert st == 200, (p.name, st, body)
        st, status = http_get(p.port, "/status")
        assert st == 200 and json.loads(status)["nats_connected"] is True
        assert http_get(p.port, "/nope")[0] == 404
    fs, ftypes = parse_prometheus(http_get(P.fetcher.port, "/metrics")[1])
    ss, _ = parse_prometheus(http_get(P.saver.port, "/metrics")[1])
    assert ss["chunkmill_saver_records_saved_total"] == RECORDS, ss
    assert ss["chunkmill_saver_chunks_saved_total"] == 1000
    assert fs["chunkmill_fetcher_records_acked_total"] == RECORDS
    assert fs["chunkmill_fetcher_chunks_acked_total"] == 1000
    assert fs["chunkmill_fetcher_done_chunks"] == 1000
    assert fs["chunkmill_backlog_chunks"] == 0
    assert fs["chunkmill_fetcher_job_complete"] == 1
    assert ftypes["chunkmill_fetcher_chunk_latency_seconds"] == "histogram"
    assert fs["chunkmill_fetcher_chunk_latency_seconds_count"] == 1000
    ok = {v: 0 for v in set(VERSIONS)}
    for m, v in zip(P.mappers, VERSIONS):
        ms, _ = parse_prometheus(http_get(m.port, "/metrics")[1])
        ok[v] += ms[f'chunkmill_mapper_chunks_total{{version="{v}",result="ok"}}']
    # chunks.version: the label of the mapper whose chunk was saved first.
    # With no chunk saved twice or leased again, each version's rows equal
    # its mappers' confirmed chunks exactly; each duplicate or redelivery
    # may move one chunk between the two counts.
    redelivered = fs["chunkmill_fetcher_redeliveries_total"]
    slack = ss["chunkmill_saver_duplicate_chunks_total"] + redelivered
    rows = dict(P.db_query("SELECT coalesce(version, 'NULL'), count(*) FROM chunks GROUP BY 1"))
    assert set(rows) == set(ok), (rows, ok)
    for v in ok:
        assert abs(rows[v] - ok[v]) <= slack, (v, rows, ok, slack)
    assert sum(ok.values()) >= 1000, ok


def sigterm_exits_zero():
    for p in [P.fetcher] + P.mappers + [P.saver]:
        p.signal(signal.SIGTERM)
        rc = p.wait(30)
        assert rc == 0, (p.name, rc)
        assert "received SIGTERM" in p.log()


check("100k records through 4 mappers complete", run_job)
check("exactly 100000 rows, 1000 chunks, no key twice", exact_rows)
check("sampled rows equal fullname(generated input)", sampled_records_match_fullname)
check("probes 200, metrics match the job, chunks.version = mapper label", probes_and_metrics)
check("SIGTERM: every daemon exits 0", sigterm_exits_zero)
if __import__("harness")._results["failed"]:
    dump_logs_on_failure(P)
P.stop_all()
finish()
