#!/usr/bin/env python3
"""The bench's exact checks fail on what they must catch: a results
database missing a row, holding a record twice, a dead letter or a chunk
marker that does not add up; an original saver log missing a package. Each
case is a small SQLite file with the columns the check reads, made here;
the PostgreSQL check (scenario pg) is run the same way on a throwaway
server when Debian's postgresql is installed."""
import os
import shutil
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

N, CS = 1000, 100


def make_db(path, rows, chunks, dead=0):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE records(job TEXT, chunk INTEGER, idx INTEGER, body TEXT,"
                " PRIMARY KEY(job, chunk, idx))")
    con.execute("CREATE TABLE chunks(job TEXT, chunk INTEGER, records INTEGER, dead INTEGER,"
                " PRIMARY KEY(job, chunk))")
    con.execute("CREATE TABLE dead_letters(job TEXT, chunk INTEGER, idx INTEGER, reason TEXT,"
                " record TEXT)")
    con.executemany("INSERT INTO records VALUES('j', ?, ?, ?)",
                    [(c, i, '{"id":"k%d","name":"x"}' % key) for c, i, key in rows])
    con.executemany("INSERT INTO chunks VALUES('j', ?, ?, 0)", chunks)
    for k in range(dead):
        con.execute("INSERT INTO dead_letters VALUES('j', 0, ?, 'bad', '{}')", (k,))
    con.commit()
    con.close()


def exact_rows():
    return [(r // CS, r % CS, r) for r in range(N)]


def exact_chunks():
    return [(c, CS) for c in range(N // CS)]


def expect_fail(db, what):
    try:
        bench.check_saved(db, N, CS, "fullname", "case")
    except bench.BenchError as e:
        assert what in str(e), (what, str(e))
        print("caught:", e)
        return
    raise AssertionError(f"check_saved accepted a database with {what} wrong")


def pg_cases():
    """check_saved_pg on a throwaway PostgreSQL (tests/integration/pg.py):
    exact, a row missing, a record twice. Returns the number of cases run
    (0 when PostgreSQL is not installed)."""
    pg = bench.pg_import()
    why = pg.skip_reason()
    if why:
        print(f"PostgreSQL cases skipped: {why}")
        return 0
    srv = pg.PgServer()
    try:
        n = 0
        for case, rows, what in (("ok", exact_rows(), None),
                                 ("missing", exact_rows()[:-1], "rows 999 (expected 1000)"),
                                 ("dup", exact_rows()[:5] + [(0, 5, 4)] + exact_rows()[6:],
                                  "distinct_keys 999 (expected 1000)")):
            srv.psql(f"CREATE DATABASE {case}")
            srv.psql("CREATE TABLE records(job text, chunk bigint, idx bigint, body text);"
                     "CREATE TABLE chunks(job text, chunk bigint, records integer, dead integer);"
                     "CREATE TABLE dead_letters(job text, chunk bigint, idx bigint, reason text,"
                     " record text)", case)
            srv.psql("INSERT INTO records VALUES " + ",".join(
                "('j', %d, %d, '{\"id\":\"k%d\",\"name\":\"x\"}')" % r for r in rows), case)
            srv.psql("INSERT INTO chunks VALUES " + ",".join(
                "('j', %d, %d, 0)" % c for c in exact_chunks()), case)
            try:
                got = bench.check_saved_pg(srv, case, N, CS, "fullname", "case")
                assert what is None, f"check_saved_pg accepted a database with {what} wrong"
                assert got["rows"] == N and got["distinct_keys"] == N, got
            except bench.BenchError as e:
                assert what is not None and what in str(e), (what, str(e))
                print("caught:", e)
            n += 1
        return n
    finally:
        srv.stop()


def main():
    d = tempfile.mkdtemp(prefix="cm-benchcheck-")
    try:
        db = f"{d}/ok.db"
        make_db(db, exact_rows(), exact_chunks())
        got = bench.check_saved(db, N, CS, "fullname", "case")
        assert got["rows"] == N and got["distinct_keys"] == N, got

        db = f"{d}/missing.db"
        make_db(db, exact_rows()[:-1], exact_chunks())
        expect_fail(db, "rows 999 (expected 1000)")

        db = f"{d}/dup.db"
        rows = exact_rows()
        rows[5] = (rows[5][0], rows[5][1], rows[4][2])  # the same record saved in two slots
        make_db(db, rows, exact_chunks())
        expect_fail(db, "distinct_keys 999 (expected 1000)")

        db = f"{d}/chunks.db"
        make_db(db, exact_rows(), exact_chunks()[:-1])
        expect_fail(db, "chunks 9 (expected 10)")

        db = f"{d}/dead.db"
        make_db(db, exact_rows(), exact_chunks(), dead=1)
        expect_fail(db, "dead_letters 1 (expected 0)")

        expect_fail(f"{d}/absent.db", "does not exist")

        log = "".join(f"Received package {i}. And data of length: 100\n" for i in range(1000))
        assert bench.check_original_log(log + log) == 1000
        for bad, what in ((log.replace("package 7.", "package 1007."), "1 of 1000 packages missing [7], 1 unexpected [1007]"),
                          (log.replace("package 7. And data of length: 100",
                                       "package 7. And data of length: 99"), "1 not of 100 records")):
            try:
                bench.check_original_log(bad)
            except bench.BenchError as e:
                assert what in str(e), (what, str(e))
                print("caught:", e)
                continue
            raise AssertionError(f"check_original_log accepted a log with {what}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    n = pg_cases()
    print(f"bench checks: {8 + n} passed, 0 failed")


if __name__ == "__main__":
    main()
