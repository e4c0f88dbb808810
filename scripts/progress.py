#!/usr/bin/env python3
"""scripts/progress.py URL [OUT [DONE]] - scripts/run's live progress line on a terminal.

Polls the fetcher's /status at URL every 0.1 s and redraws one line in place
(carriage return, erase to end of line) on stdout: chunks done of the total,
records, records/s, in flight, backlog, dead chunks, mappers. Runs until
the file DONE exists (scripts/run creates it when the fetcher has exited) or
SIGTERM (scripts/run's fallback, or an interrupt); then ends the line
with a newline so the summary starts on a line of its own. A job can end
between two polls (or before the first): the last frame is then drawn from
the {"summary":...} line the fetcher printed into OUT (its stdout), if any.
A fetcher not answering yet is drawn as "waiting for the fetcher".
"""
import json
import os
import signal
import sys
import time
import urllib.request

INTERVAL = 0.1


def line(st, rate, elapsed):
    job = st.get("job") or {}
    done, total = job.get("done_chunks", 0), job.get("total_chunks", -1)
    mappers = sum(1 for m in st.get("members", []) if m.get("role") == "mapper")
    if total is not None and total >= 0:
        pct = 100.0 * done / total if total else 100.0
        width = 20
        fill = int(width * pct / 100)
        head = f"[{'#' * fill}{'.' * (width - fill)}] {done}/{total} chunks ({pct:.1f}%)"
    else:
        head = f"{done} chunks done (source {'read' if job.get('source_done') else 'reading'})"
    return (f"{head}, {job.get('records_done', 0)} records, {rate:.0f} records/s, "
            f"in flight {job.get('inflight', 0)}, backlog {job.get('backlog', 0)}, "
            f"dead {job.get('dead_chunks', 0)}, mappers {mappers}, {elapsed:.1f} s")


def main():
    if len(sys.argv) not in (2, 3, 4):
        print("usage: scripts/progress.py STATUS_URL [FETCHER_STDOUT [DONE_FILE]]",
              file=sys.stderr)
        return 2
    url = sys.argv[1]
    drawn = [False]

    def final_frame():
        try:
            with open(sys.argv[2]) as f:
                for text in f:
                    if text.startswith('{"summary"'):
                        s = json.loads(text)["summary"]
                        return (f"[{'#' * 20}] {s['chunks'] + s['dead_chunks']}/"
                                f"{s['chunks'] + s['dead_chunks']} chunks (100.0%), "
                                f"{s['records']} records, {s['records_per_s']:.0f} records/s, "
                                f"dead {s['dead_chunks']}, {s['seconds']:.2f} s")
        except (IndexError, OSError, ValueError, KeyError):
            pass
        return None

    def stop(signum, frame):
        last = final_frame()
        if last:
            sys.stdout.write("\r\033[K" + last)
            drawn[0] = True
        if drawn[0]:
            sys.stdout.write("\n")
            sys.stdout.flush()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    t0 = time.monotonic()
    samples = []  # (time, records_done), the last ~2 s: the rate is over those
    done_file = sys.argv[3] if len(sys.argv) > 3 else None
    while True:
        if done_file and os.path.exists(done_file):
            stop(None, None)
        now = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                st = json.loads(r.read())
            records = (st.get("job") or {}).get("records_done", 0)
            samples = [s for s in samples if now - s[0] <= 2.0] + [(now, records)]
            dt = samples[-1][0] - samples[0][0]
            rate = (samples[-1][1] - samples[0][1]) / dt if dt > 0 else 0.0
            text = line(st, rate, now - t0)
        except (OSError, ValueError):
            text = f"waiting for the fetcher ({now - t0:.1f} s)"
        sys.stdout.write("\r\033[K" + text)
        sys.stdout.flush()
        drawn[0] = True
        time.sleep(INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
