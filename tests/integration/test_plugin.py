#!/usr/bin/env python3
"""plugin:PATH.so end to end with the example plugin built by CMake
(examples/plugin/upper.c): gen:users through the upper plugin with
--transform-arg fn,ln gives every record with its names upper-cased and
nothing else changed; a record the plugin rejects is a dead letter; a
plugin built for another ABI version is refused at start with a clear
message and exit status 2."""
import json
import os
import subprocess

from harness import (BIN_DIR, Pipeline, bin_path, check, dump_logs_on_failure, finish)

UPPER = os.path.join(BIN_DIR, "examples", "plugin", "upper.so")
BADABI = os.path.join(BIN_DIR, "examples", "plugin", "badabi.so")
failed = []


def upper_end_to_end():
    P = Pipeline("plugin", records=2000, mappers=2, transform=f"plugin:{UPPER}",
                 extra_mapper=["--transform-arg", "fn,ln"])
    try:
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once", "--job", "up"])
        rc = f.wait(120)
        assert rc == 0, (rc, f.log()[-800:])
        assert P.db_query("SELECT count(*) FROM records") == [(2000,)]
        for chunk in (0, 7, 19):
            src = subprocess.run([bin_path("fetcher"), "--records", "2000", "--print-chunk",
                                  str(chunk), "--job", "up"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout
            data = json.loads(src)["data"]
            rows = P.db_query("SELECT idx, body FROM records WHERE chunk=? ORDER BY idx", (chunk,))
            assert len(rows) == len(data) == 100
            for (idx, body), rec in zip(rows, data):
                want = dict(rec, fn=rec["fn"].upper(), ln=rec["ln"].upper())
                assert json.loads(body) == want, (chunk, idx, body, want)
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def rejected_records_are_dead_letters():
    P = Pipeline("plugin-dead", records=0, mappers=1, transform=f"plugin:{UPPER}")
    path = os.path.join(P.workdir, "in.ndjson")
    with open(path, "w") as fh:
        for i in range(100):
            fh.write((json.dumps([i]) if i % 10 == 3 else json.dumps({"fn": f"x{i}"})) + "\n")
    try:
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once", "--job", "pd", "--source", f"file:{path}"])
        assert f.wait(120) == 0, f.log()[-800:]
        assert P.db_query("SELECT count(*) FROM records") == [(90,)]
        dl = P.db_query("SELECT idx, reason FROM dead_letters ORDER BY idx")
        assert [i for i, _ in dl] == list(range(3, 100, 10)), dl
        assert all(r == "plugin: upper: record is not an object" for _, r in dl), dl
        assert P.db_query("SELECT body FROM records WHERE idx=0") == [('{"fn":"X0"}',)]
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def wrong_abi_refused():
    r = subprocess.run([bin_path("mapper"), "--transform", f"plugin:{BADABI}", "--http",
                        "127.0.0.1:0"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, r
    assert f"plugin {BADABI} has ABI version 2; this mapper supports 1" in r.stderr, r.stderr
    r = subprocess.run([bin_path("mapper"), "--transform", "plugin:/nonexistent/x.so"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "/nonexistent/x.so" in r.stderr, r
    r = subprocess.run([bin_path("mapper"), "--transform", f"plugin:{UPPER}", "--transform-arg",
                        "a,,b"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "bad field list" in r.stderr, r


check("plugin: example upper plugin end to end", upper_end_to_end)
check("plugin: rejected records are dead letters", rejected_records_are_dead_letters)
check("plugin: wrong ABI version refused at start", wrong_abi_refused)
for p in failed:
    dump_logs_on_failure(p)
finish()
