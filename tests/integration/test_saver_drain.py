#!/usr/bin/env python3
"""Saver shutdown drains (issue 10 part 6): SIGTERM to a saver under a
steady stream of save requests. Every request it received is committed and
answered, so no mapper waits --save-timeout (60 s here) for a reply that
will never come; a new saver takes over at once and the job ends exact.
Three SIGTERMs in one job, each with thousands of requests a second. A
dropped request shows as the job ending a save timeout (60 s) late."""
import shutil
import time

from harness import (Pipeline, check, dump_logs_on_failure, finish, kept_on_failure, log_lines,
                     status, wait_until)

failed = []


def done_chunks(P):
    return ((status(P.fetcher) or {}).get("job") or {}).get("done_chunks", 0)


def saver_sigterm_under_load(P):
    P.wait_ready([P.saver] + P.mappers)
    f = P.start_fetcher(["--once", "--max-deliver", "1"])
    waits = []
    for target in (600, 1400, 2200):
        wait_until(lambda: done_chunks(P) >= target, 60, interval=0.02, what=f"{target} chunks")
        old = P.saver
        old.signal(15)
        rc = old.wait(15)
        assert rc == 0, f"saver exit {rc}"
        assert any("saver drained" in e["msg"] for e in log_lines(old)), old.log()[-500:]
        t0 = time.monotonic()
        P.saver = P.start_saver(name=f"saver-after-{target}")
        P.wait_ready([P.saver])
        waits.append(t0)
    rc = f.wait(120)
    took = time.monotonic() - waits[-1]
    assert rc == 0, (rc, f.out()[-500:])
    print(f"  job finished {took:.2f} s after the last saver restart")
    # The rest of the job takes a few seconds (more under ASan); a request
    # the old saver dropped holds its chunk for the whole 60 s timeout.
    assert took < 30, f"a save request waited for its timeout: job ended {took:.1f} s after restart"
    assert P.db_query("SELECT count(*) FROM records") == [(30000,)]
    assert P.db_query("SELECT count(*) FROM chunks") == [(3000,)]


def run():
    P = Pipeline("sdrain", records=30000, chunk_size=10, mappers=3, transform="identity",
                 extra_mapper=["--save-timeout", "60s", "--concurrency", "2"])
    with kept_on_failure(P, failed):
        saver_sigterm_under_load(P)


check("SIGTERM to the saver under load 3 times: every received request answered, exact", run)
for P in failed:
    dump_logs_on_failure(P)
    shutil.rmtree(P.workdir, ignore_errors=True)
finish()
