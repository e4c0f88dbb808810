#!/usr/bin/env python3
"""Valid input only (issue 11): JSON is UTF-8, and so is everything saved.

- a file source with records whose strings are not valid UTF-8: exactly
  those records are dead letters ("not valid UTF-8 (byte N)"), every other
  record is saved;
- an exec: transform that answers some records with bytes that are not
  UTF-8: those records are dead letters, the rest saved;
- a client publishing mapped chunks with a job name or records that are
  not UTF-8 straight to the savers (open server): nothing of it is stored,
  each one counted in chunkmill_rejected_messages_total.
Every body and dead letter in the results table decodes as strict UTF-8.
"""
import json
import os
import shutil
import sqlite3

import rawnats
from harness import (Pipeline, check, dump_logs_on_failure, finish, http_get, kept_on_failure,
                     parse_prometheus, wait_until)

N = 2000
BAD = {7, 300, 1234, 1999}
failed = []


def all_utf8(P):
    con = sqlite3.connect(P.db)
    con.text_factory = bytes
    try:
        for (b,) in con.execute("SELECT body FROM records"):
            b.decode("utf-8")
        for (r, rec) in con.execute("SELECT reason, record FROM dead_letters"):
            r.decode("utf-8")
            if rec is not None:
                rec.decode("utf-8")
    finally:
        con.close()


def run_file(name, transform, records_file):
    P = Pipeline(name, records=0, mappers=1, transform=transform)
    try:
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--source", f"file:{records_file}", "--once", "--allow-dead",
                             "--chunk-size", "100", "--job", name])
        rc = f.wait(60)
        assert rc == 0, (rc, f.log()[-1500:])
        return P
    except Exception:
        failed.append(P)
        P.stop_all()
        raise


def write_records(path):
    with open(path, "wb") as fh:
        for i in range(N):
            if i in BAD:
                fh.write(b'{"uuid":"u%d","fn":"bad \xff\xfe name","ln":"x"}\n' % i)
            else:
                fh.write(json.dumps({"uuid": f"u{i}", "fn": "Zo\u00eb", "ln": "\u00c5s"}).encode()
                         + b"\n")


def source_records():
    d = os.path.join("/tmp", f"cm-utf8-src-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "records.ndjson")
    write_records(path)
    try:
        P = run_file("utf8src", "identity", path)
        with kept_on_failure(P, failed):
            assert P.db_query("SELECT count(*) FROM records") == [(N - len(BAD),)]
            dead = P.db_query("SELECT reason FROM dead_letters")
            assert len(dead) == len(BAD), dead
            assert all("not valid UTF-8" in r for (r,) in dead), dead
            all_utf8(P)
    finally:
        shutil.rmtree(d, ignore_errors=True)


CHILD = r"""
import sys
for line in sys.stdin.buffer:
    if b'"n7"' in line or b'"n77"' in line:
        sys.stdout.buffer.write(b'{"name":"\xc3\x28"}\n')
    else:
        sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
"""


def exec_output():
    d = os.path.join("/tmp", f"cm-utf8-exec-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "records.ndjson")
    with open(path, "w") as fh:
        for i in range(N):
            fh.write(json.dumps({"uuid": f"n{i}"}) + "\n")
    try:
        P = run_file("utf8exec", "exec:" + json.dumps(["python3", "-u", "-c", CHILD]), path)
        with kept_on_failure(P, failed):
            assert P.db_query("SELECT count(*) FROM records") == [(N - 2,)]
            dead = P.db_query("SELECT reason FROM dead_letters")
            assert len(dead) == 2 and all("not valid UTF-8" in r for (r,) in dead), dead
            all_utf8(P)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def forged_chunks():
    P = Pipeline("utf8forged", records=0, mappers=0)
    with kept_on_failure(P, failed):
        P.wait_ready([P.saver])
        a = rawnats.RawNats(P.nats.port)
        sid = a.sub("_INBOX.u8.>")
        chunks = [b'{"job":"j\xe9","index":1,"attempt":1,"data":[{"a":1}]}',
                  b'{"job":"ok","index":2,"attempt":1,"data":[{"a":"\xed\xa0\x80"}]}',
                  b'{"job":"ok","index":3,"attempt":1,"data":[null],'
                  b'"dead":[{"idx":0,"reason":"\xff","record":{}}]}']
        for i, c in enumerate(chunks):
            a.pub(f"{P.prefix}.save", c, reply=f"_INBOX.u8.{i}")
        wait_until(lambda: a.count(sid) == len(chunks), 10, what="the saver's answers")
        assert all(b'"ok":false' in r for r in a.last(sid)), a.last(sid)
        assert P.db_query("SELECT count(*) FROM records") == [(0,)]
        assert P.db_query("SELECT count(*) FROM dead_letters") == [(0,)]
        m, _ = parse_prometheus(http_get(P.saver.port, "/metrics")[1])
        assert m.get('chunkmill_rejected_messages_total{reason="not_utf8"}') == 2, m
        a.close()


check("file source: records that are not UTF-8 are dead letters with the reason", source_records)
check("exec: answers that are not UTF-8 are dead letters with the reason", exec_output)
check("mapped chunks that are not UTF-8 are not stored, and counted", forged_chunks)
for P in failed:
    dump_logs_on_failure(P)
    print(f"logs kept in {P.workdir}")
finish()
