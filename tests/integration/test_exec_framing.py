#!/usr/bin/env python3
"""exec: a child that is out of step never gets its lines saved under
another record's key (issue 10, part 2).

Each case maps a 500-record file (5 chunks of 100) through a misbehaving
python3 child and then checks EVERY saved row against the transform of its
own input record (input i sits at chunk (i-1)//100, idx (i-1)%100):

- a banner line at start-up;
- one extra line 50 ms after its last answer (a timer in the child, which
  is slow on each chunk's first record, so the late line lands in the next
  chunk when nothing catches it);
- two lines for one record, 100 ms apart;
- stdout closed half-way through one chunk (the child keeps running).

Chunks whose every attempt is out of step end dead after --max-deliver 2
(the job still completes, --allow-dead); all other chunks are saved whole.
They run with the default framing (a child per chunk, read to EOF), again
with --exec-framing lines (long-lived children, answers counted, settle
time), and the tagged framing (every line carries the record's sequence
number) with its own children. The NAK reasons quote the stray line.
"""
import json
import os

from harness import Pipeline, check, finish, log_lines, torn_down

N = 500

PRELUDE = r'''
import json, os, sys, threading, time
def answer(r):
    return json.dumps({"i": r["i"], "up": r["fn"].upper()})
'''

BANNER = PRELUDE + r'''
print("mapper v1.2 starting up", flush=True)
for line in sys.stdin:
    print(answer(json.loads(line)), flush=True)
'''

TRAILING = PRELUDE + r'''
lock = threading.Lock()
timer = None
def extra():
    with lock:
        print("trailing debug line", flush=True)
for line in sys.stdin:
    r = json.loads(line)
    if r["i"] % 100 == 1:
        time.sleep(0.1)  # slow on a chunk's first record: a late line lands in the next chunk
    with lock:
        if timer is not None:
            timer.cancel()
        print(answer(r), flush=True)
        timer = threading.Timer(0.05, extra)  # not a daemon: it runs before exit too
        timer.start()
'''

DOUBLE = PRELUDE + r'''
for line in sys.stdin:
    r = json.loads(line)
    print(answer(r), flush=True)
    if r["i"] == 237:
        time.sleep(0.1)
        print(answer(r), flush=True)
'''

EARLY_CLOSE = PRELUDE + r'''
for line in sys.stdin:
    r = json.loads(line)
    if r["i"] == 350:
        sys.stdout.flush()
        os.close(1)
        time.sleep(3600)
    print(answer(r), flush=True)
'''

GOOD = PRELUDE + r'''
for line in sys.stdin:
    print(answer(json.loads(line)), flush=True)
'''


TAGGED_PRELUDE = PRELUDE + r'''
def read():
    for line in sys.stdin:
        tag, rec = line.rstrip("\n").split("\t", 1)
        yield tag, json.loads(rec)
'''

TAGGED_GOOD = TAGGED_PRELUDE + r'''
for tag, r in read():
    print(tag + "\t" + answer(r), flush=True)
'''

TAGGED_DOUBLE = TAGGED_PRELUDE + r'''
for tag, r in read():
    print(tag + "\t" + answer(r), flush=True)
    if r["i"] == 237:
        time.sleep(0.1)
        print(tag + "\t" + answer(r), flush=True)
'''

TAGGED_TRAILING = TAGGED_PRELUDE + r'''
lock = threading.Lock()
timer = None
last = ["0"]
def extra():
    with lock:
        print(last[0] + "\t" + "{}", flush=True)   # repeats the last tag
for tag, r in read():
    with lock:
        if timer is not None:
            timer.cancel()
        print(tag + "\t" + answer(r), flush=True)
        last[0] = tag
        timer = threading.Timer(0.05, extra)
        timer.daemon = True
        timer.start()
'''


def expected(i):
    return {"i": i, "up": f"ADA{i}"}


def run_case(name, script, framing=None, dead_chunks=None, reason_has=None, settle="200ms"):
    """framing None: the default (no --exec-framing flag)."""
    P = Pipeline(name, records=0, mappers=1,
                 transform="exec:" + json.dumps(["python3", "-u", "-c", script]),
                 extra_mapper=["--exec-settle", settle, "--exec-timeout", "20s",
                               "--concurrency", "2"] +
                 (["--exec-framing", framing] if framing else []))
    with torn_down(P):
        path = os.path.join(P.workdir, "in.ndjson")
        with open(path, "w") as fh:
            for i in range(1, N + 1):
                fh.write(json.dumps({"i": i, "fn": f"ada{i}"}) + "\n")
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once", "--job", name, "--source", f"file:{path}",
                             "--max-deliver", "2", "--allow-dead"])
        rc = f.wait(150)
        assert rc == 0, (rc, f.log()[-1500:])
        rows = P.db_query("SELECT chunk, idx, body FROM records ORDER BY chunk, idx")
        wrong = [(c, i, b) for c, i, b in rows if json.loads(b) != expected(c * 100 + i + 1)]
        assert not wrong, f"{len(wrong)} of {len(rows)} rows misfiled, e.g. {wrong[:3]}"
        saved = sorted({c for c, _, _ in rows})
        for c in saved:  # a saved chunk is saved whole
            assert sum(1 for r in rows if r[0] == c) == 100, c
        dead = [e["msg"] for e in log_lines(f) if "is dead after 2 deliveries" in e["msg"]]
        assert len(saved) + len(dead) == N // 100, (saved, dead)
        if dead_chunks is not None:
            assert sorted(set(range(N // 100)) - set(saved)) == dead_chunks, (saved, dead)
        if reason_has is not None:
            fails = [e["msg"] for e in log_lines(f) if "failed on" in e["msg"]]
            assert any(reason_has in m for m in fails), (reason_has, fails[:5])
        m = P.mappers[0]
        assert m.alive(), "the mapper died"
        return P, m


def banner(framing=None):
    # Every child prints it, so every attempt of every chunk fails.
    run_case("banner", BANNER, framing, dead_chunks=[0, 1, 2, 3, 4],
             reason_has='first line "mapper v1.2 starting up"')


def trailing_line(framing=None):
    # The trailing line comes 50 ms after each chunk's last answer. Default
    # framing: before the child exits, so inside what is read to EOF.
    # lines: inside the settle time (1 s: margin for a loaded machine).
    # Every attempt fails; never misfiled. (Were it missed in lines mode, it
    # would land in the next chunk ahead of that chunk's first, slow answer:
    # caught by count.)
    run_case("trailing", TRAILING, framing, dead_chunks=[0, 1, 2, 3, 4],
             reason_has='extra line "trailing debug line"', settle="1s")


def double_answer(framing=None):
    run_case("double", DOUBLE, framing, dead_chunks=[2],
             reason_has="is out of step: more output")


def early_close(framing=None):
    run_case("early-close", EARLY_CLOSE, framing, dead_chunks=[3],
             reason_has="closed its stdout after 49 of 100 answer lines")


def good_child_every_framing():
    for framing in (None, "lines", "chunk"):
        run_case(f"good-{framing}", GOOD, framing, dead_chunks=[])


def lines_framing():
    for case in (banner, trailing_line, double_answer, early_close):
        case("lines")


def tagged():
    run_case("tagged-good", TAGGED_GOOD, framing="tagged", dead_chunks=[])
    run_case("tagged-banner", BANNER, framing="tagged", dead_chunks=[0, 1, 2, 3, 4],
             reason_has='should start with "1<TAB>": "mapper v1.2 starting up"')
    run_case("tagged-double", TAGGED_DOUBLE, framing="tagged", dead_chunks=[2],
             reason_has="is out of step: answer line 38 should start with")
    # A late line carrying a stale tag: the chunk before it stands (its
    # answers were tagged right); the next one never takes it as an answer.
    run_case("tagged-trailing", TAGGED_TRAILING, framing="tagged")


check("exec: a banner line is never taken as an answer", banner)
check("exec: a line 50 ms after the last answer fails that chunk", trailing_line)
check("exec: two lines for one record fail the chunk", double_answer)
check("exec: stdout closed early fails the chunk at once", early_close)
check("exec: well-behaved child, every framing: all saved", good_child_every_framing)
check("exec: --exec-framing lines (long-lived, settle 200 ms / 1 s): the same four cases",
      lines_framing)
check("exec: tagged framing: good child saved; banner, double, late lines never misfiled",
      tagged)
finish()
