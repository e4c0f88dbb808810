#!/usr/bin/env python3
"""The fetcher's memory does not grow with the size of the job (issue 16).

Two jobs of the same shape on the same pipeline (identity, 2 mappers, one
record per chunk so that a short job has many chunks): 1,000 chunks and
80,000 chunks. The fetcher's peak RSS (VmHWM, read while it is still up
after the job completed) may differ by at most 1 MiB. Before the fix it grew
by ~4 MiB: a table of first-dispatch times indexed by `index % 65536` (2 MiB
once a job passes 65,536 chunks) and SQLite's default 2 MiB page cache
filling with the ledger's cold pages as the file grew.
Both jobs' results are counted exactly in the results database.

Not run under ASan: its allocator quarantines freed memory, so RSS there
follows the number of allocations, not what the fetcher holds.
"""
import json

from harness import Pipeline, check, finish, http_get, torn_down, wait_until

SMALL, BIG = 1000, 80000
GROWTH_LIMIT_KB = 1024
peaks = {}


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def run(chunks):
    P = Pipeline(f"fetchmem-{chunks}", records=chunks, mappers=2, transform="identity",
                 chunk_size=1)
    with torn_down(P):
        P.wait_ready([P.saver] + P.mappers)
        P.start_fetcher(["--job", "mem", "--progress", "0"])  # no --once: read it while up

        def complete():
            st, body = http_get(P.fetcher.port, "/status")
            return st == 200 and json.loads(body)["job"]["complete"]

        wait_until(complete, 240, interval=0.2, what=f"job of {chunks} chunks complete")
        peaks[chunks] = vm_hwm_kb(P.fetcher.pid)
        assert P.db_query("SELECT count(*), count(DISTINCT chunk) FROM records") == \
            [(chunks, chunks)]
        assert P.db_query("SELECT count(*) FROM chunks WHERE job='mem'") == [(chunks,)]
    print(f"fetcher peak RSS after {chunks} chunks: {peaks[chunks]} KiB", flush=True)


def flat():
    run(SMALL)
    run(BIG)
    growth = peaks[BIG] - peaks[SMALL]
    assert growth <= GROWTH_LIMIT_KB, \
        (f"fetcher peak RSS grew by {growth} KiB from {SMALL} to {BIG} chunks "
         f"({peaks[SMALL]} -> {peaks[BIG]} KiB), more than {GROWTH_LIMIT_KB} KiB")


check("fetcher peak RSS flat from 1,000 to 80,000 chunks", flat)
finish()
