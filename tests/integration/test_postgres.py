#!/usr/bin/env python3
"""The PostgreSQL sink with real processes: a throwaway PostgreSQL server
(pg.py), real nats-server, real savers, mappers and fetcher.

- two savers receive the same chunks at the same time: each chunk is written
  once, both acknowledge every request;
- /readyz follows the database: 503 with the reason while PostgreSQL is down
  (at start and later), 200 again after, without restarting the saver;
- a database with a newer schema is refused with a clear error (exit 1);
- 3 savers on one database, 4 mappers, one saver SIGKILLed and PostgreSQL
  crash-restarted (pg_ctl -m immediate) mid-job: exact rows, each
  (job, chunk, idx) once, job complete, no chunk dead.
The password never appears in a saver's log or /status.
Exits 77 (ctest SKIP) when PostgreSQL is not installed."""
import json
import os
import socket
import sys
import tempfile
import threading
import time

import pg
from harness import (Pipeline, Proc, bin_path, check, dump_logs_on_failure, finish, free_port,
                     http_get, status, wait_until)

why = pg.skip_reason()
if why:
    print(f"SKIP: {why}")
    sys.exit(pg.SKIP)

SRV = pg.PgServer()
WORK = tempfile.mkdtemp(prefix="cm-pgtest-")
failed = []


class NatsClient:
    """Just enough of the NATS text protocol to publish requests and read
    the replies (no NATS library in Debian's python3 for this)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.s.makefile("rb")
        self.f.readline()  # INFO
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n')
        self.lock = threading.Lock()

    def sub(self, subject, sid):
        self.s.sendall(f"SUB {subject} {sid}\r\n".encode())

    def pub(self, subject, reply, data):
        with self.lock:
            head = f"PUB {subject} {reply} {len(data)}" if reply else f"PUB {subject} {len(data)}"
            self.s.sendall(head.encode() + b"\r\n" + data + b"\r\n")

    def ping(self):
        self.s.sendall(b"PING\r\n")

    def read_msgs(self, n, timeout):
        """n MSG payloads as (subject, bytes); answers PINGs."""
        out = []
        self.s.settimeout(timeout)
        while len(out) < n:
            line = self.f.readline()
            if not line:
                raise AssertionError("NATS connection closed")
            if line.startswith(b"PING"):
                self.s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                parts = line.split()
                size = int(parts[-1])
                data = self.f.read(size + 2)[:size]
                out.append((parts[1].decode(), data))
        return out

    def poll_msg(self, timeout):
        """The next MSG as (subject, bytes) if one arrives within timeout,
        else None; answers PINGs meanwhile."""
        import select
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([self.s], [], [], left)
            if not readable:
                return None
            line = self.f.readline()
            if line.startswith(b"PING"):
                self.s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                return line.split()[1].decode(), self.f.read(size + 2)[:size]

    def close(self):
        self.s.close()


def chunk_json(job, index, n):
    recs = ",".join(json.dumps({"id": index * 1000 + k, "name": f"n{k} \u00e9\\"},
                               separators=(",", ":")) for k in range(n))
    return f'{{"job":"{job}","index":{index},"attempt":0,"data":[{recs}]}}'.encode()


def start_saver(nats, prefix, db, name, extra=(), env=None):
    port = free_port()
    p = Proc(f"{name}-{port}", [bin_path("saver"), "--nats-url", nats.url, "--prefix", prefix,
                                "--http", f"127.0.0.1:{port}", "--heartbeat", "200ms", "--db", db,
                                "--id", name] + list(extra), log_dir=WORK, env=env)
    p.port = port
    return p


def no_password_in(procs):
    for p in procs:
        assert pg.PASSWORD not in p.log(), f"{p.name} logged the password"
        assert pg.PASSWORD not in p.out(), f"{p.name} printed the password"


def fresh_db(name):
    SRV.psql(f"DROP DATABASE IF EXISTS {name}")
    return SRV.create_db(name)


def two_savers_same_chunks():
    from harness import Nats
    fresh_db("twosavers")
    nats = Nats(WORK)
    # The password from PGPASSWORD (libpq), not in the URL.
    dsn = SRV.dsn("twosavers", password=False)
    env = {"PGPASSWORD": pg.PASSWORD}
    a = start_saver(nats, "pa", dsn, "saver-a", env=env)
    b = start_saver(nats, "pb", dsn, "saver-b", env=env)
    try:
        for p in (a, b):
            wait_until(lambda p=p: http_get(p.port, "/readyz")[0] == 200, 20, what=f"{p.name} ready")
        c = NatsClient(nats.port)
        c.sub("reply.>", 1)
        n = 300
        chunks = [chunk_json("dup", k, 40) for k in range(n)]
        # Every chunk to both savers at once, a in ascending and b in
        # descending order: their batches overlap from the middle on, where
        # one saver's marker INSERT waits for the other's COMMIT.
        for k in range(n):
            c.pub("pa.save", f"reply.a.{k}", chunks[k])
            c.pub("pb.save", f"reply.b.{n - 1 - k}", chunks[n - 1 - k])
        c.ping()
        replies = c.read_msgs(2 * n, timeout=60)
        c.close()
        got = {}
        for subj, data in replies:
            _, who, k = subj.split(".")
            r = json.loads(data)
            assert r["ok"] is True, (subj, r)
            assert r["records"] == 40, (subj, r)
            got[(who, int(k))] = r["duplicate"]
        assert len(got) == 2 * n
        fresh = [k for k in range(n) if not got[("a", k)]] + [k for k in range(n) if not got[("b", k)]]
        assert sorted(fresh) == list(range(n)), "each chunk must be written by exactly one saver"
        by_a = sum(1 for k in range(n) if not got[("a", k)])
        assert SRV.rows("SELECT count(*), count(DISTINCT (job, chunk, idx)) FROM records",
                        "twosavers") == [(str(n * 40), str(n * 40))]
        assert SRV.rows("SELECT count(*) FROM chunks", "twosavers") == [(str(n),)]
        print(f"  {n} chunks sent to both savers: saver a wrote {by_a}, saver b {n - by_a}; "
              f"every request acknowledged")
        no_password_in([a, b])
    finally:
        a.stop()
        b.stop()
        nats.stop()


def stop_psql(proc):
    """Ends a psql session started by a test: EOF, then kill if it lingers."""
    import subprocess
    try:
        if not proc.stdin.closed:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def waits_for_a_marker_in_flight():
    """Another saver's transaction holds a chunk's marker (a psql session
    plays it): the saver that receives the same chunk answers nothing until
    that transaction ends, then acknowledges it as a duplicate (it
    committed) or writes it itself (it rolled back)."""
    import subprocess
    from harness import Nats
    fresh_db("inflight")
    nats = Nats(WORK)
    s = start_saver(nats, "pw", SRV.dsn("inflight"), "saver-w")
    others = []
    try:
        wait_until(lambda: http_get(s.port, "/readyz")[0] == 200, 20, what="saver ready")
        c = NatsClient(nats.port)
        c.sub("reply.>", 1)
        env = dict(os.environ, PGPASSWORD=pg.PASSWORD)
        for index, end, want_dup in ((1, "COMMIT", True), (2, "ROLLBACK", False)):
            other = subprocess.Popen(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(SRV.port),
                                      "-U", "postgres", "-d", "inflight"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            others.append(other)
            rows = ",".join(f"('w', {index}, {k}, '{{}}')" for k in range(10))
            other.stdin.write((f"BEGIN; INSERT INTO chunks(job, chunk, records, saved_at)"
                               f" VALUES ('w', {index}, 10, 0);"
                               f" INSERT INTO records VALUES {rows};\n").encode())
            other.stdin.flush()
            wait_until(lambda: SRV.rows("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                                        " 'inflight' AND state = 'idle in transaction'",
                                        "inflight") == [("1",)], 10, what="the other transaction")
            c.pub("pw.save", f"reply.w.{index}", chunk_json("w", index, 10))
            early = c.poll_msg(1.5)
            assert early is None, f"the saver answered while the marker's transaction was open: {early}"
            assert SRV.rows("SELECT count(*) FROM pg_locks WHERE NOT granted", "inflight") == [("1",)]
            other.stdin.write((end + ";\n").encode())
            other.stdin.close()
            (_, data), = c.read_msgs(1, timeout=20)
            r = json.loads(data)
            assert r["ok"] is True and r["duplicate"] is want_dup and r["records"] == 10, (end, r)
            bodies = SRV.rows(f"SELECT DISTINCT body = '{{}}' FROM records WHERE chunk = {index}",
                              "inflight")
            # committed: the other transaction's rows; rolled back: the saver's own
            assert bodies == [("t" if want_dup else "f",)], (end, bodies)
            assert SRV.rows(f"SELECT count(*) FROM records WHERE chunk = {index}", "inflight") == \
                [("10",)]
        c.close()
    finally:
        for o in others:
            stop_psql(o)
        s.stop()
        nats.stop()


def failed_commit_acknowledges_nothing():
    """A deferred constraint trigger that fails at COMMIT: the saver's reply
    is retry:true and no row is there; the trigger dropped, the same chunk is
    saved and acknowledged."""
    from harness import Nats
    fresh_db("commitfail")
    nats = Nats(WORK)
    s = start_saver(nats, "pc", SRV.dsn("commitfail"), "saver-c")
    try:
        wait_until(lambda: http_get(s.port, "/readyz")[0] == 200, 20, what="saver ready")
        SRV.psql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                 " $$BEGIN RAISE EXCEPTION 'refused at commit'; END$$;"
                 " CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON chunks"
                 " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()",
                 "commitfail")
        c = NatsClient(nats.port)
        c.sub("reply.>", 1)
        c.pub("pc.save", "reply.c.1", chunk_json("cf", 1, 10))
        (_, data), = c.read_msgs(1, timeout=30)
        r = json.loads(data)
        assert r["ok"] is False and r["retry"] is True, r
        assert SRV.rows("SELECT count(*) FROM records", "commitfail") == [("0",)]
        assert SRV.rows("SELECT count(*) FROM chunks", "commitfail") == [("0",)]
        SRV.psql("DROP TRIGGER at_commit ON chunks", "commitfail")
        c.pub("pc.save", "reply.c.2", chunk_json("cf", 1, 10))
        (_, data), = c.read_msgs(1, timeout=30)
        r = json.loads(data)
        assert r["ok"] is True and r["duplicate"] is False and r["records"] == 10, r
        assert SRV.rows("SELECT count(*) FROM records", "commitfail") == [("10",)]
        c.close()
    finally:
        s.stop()
        nats.stop()


def deadlock_is_retried():
    """Another session makes the saver's transaction a deadlock victim (it
    holds a SHARE lock on records the saver's COPY waits for, then inserts
    the marker the saver holds): the saver gets 40P01, retries the batch at
    once and answers ok on its first reply, the chunk written once."""
    import subprocess
    from harness import Nats
    fresh_db("deadlock")
    # The saver's session detects the cycle (3 s) long before the other one
    # (60 s), so the saver is the victim.
    SRV.psql("ALTER DATABASE deadlock SET deadlock_timeout = '3s'")
    nats = Nats(WORK)
    s = start_saver(nats, "pd", SRV.dsn("deadlock"), "saver-d")
    other = None
    try:
        wait_until(lambda: http_get(s.port, "/readyz")[0] == 200, 20, what="saver ready")
        env = dict(os.environ, PGPASSWORD=pg.PASSWORD)
        other = subprocess.Popen(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(SRV.port), "-U",
                                  "postgres", "-d", "deadlock"], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

        def send(sql):
            other.stdin.write((sql + "\n").encode())
            other.stdin.flush()

        send("SET deadlock_timeout = '60s'; BEGIN; LOCK TABLE records IN SHARE MODE;")
        locks = ("SELECT count(*) FROM pg_locks WHERE relation = 'records'::regclass"
                 " AND mode = '{}' AND granted = {}")
        wait_until(lambda: SRV.rows(locks.format("ShareLock", "true"), "deadlock") == [("1",)], 10,
                   what="the other session's SHARE lock")
        c = NatsClient(nats.port)
        c.sub("reply.>", 1)
        c.pub("pd.save", "reply.d.1", chunk_json("dl", 5, 10))
        wait_until(lambda: SRV.rows(locks.format("RowExclusiveLock", "false"), "deadlock") == [("1",)],
                   10, interval=0.02, what="the saver's COPY to wait for the lock")
        send("INSERT INTO chunks(job, chunk, saved_at) VALUES ('dl', 5, 0);")
        # The saver is the victim: its marker rolls back, the other session's
        # INSERT goes through (idle in transaction, not aborted); the saver's
        # retry then waits for that marker until the other session rolls back.
        state = wait_until(lambda: (lambda r: r[0][0] if r and r[0][0] != "active" else None)(
            SRV.rows("SELECT state FROM pg_stat_activity WHERE datname = 'deadlock'"
                     " AND application_name = 'psql' AND pid <> pg_backend_pid()", "deadlock")),
            20, interval=0.05,
            what="the deadlock to be resolved")
        assert state == "idle in transaction", state
        send("ROLLBACK;")
        (_, data), = c.read_msgs(1, timeout=30)
        r = json.loads(data)
        assert r["ok"] is True and r["records"] == 10 and r["duplicate"] is False, r
        assert "deadlock detected" in s.log() and "retrying the batch" in s.log(), s.log()[-1500:]
        assert SRV.rows("SELECT count(*), count(DISTINCT idx) FROM records", "deadlock") == \
            [("10", "10")]
        c.close()
    finally:
        if other is not None:
            stop_psql(other)
        s.stop()
        nats.stop()


def app9_saver_on_postgres():
    """The saver in the original example's protocol on PostgreSQL: a chunk on
    saver_data is stored as job "app9" and confirmed on processed_data; sent
    again it is confirmed again, not rewritten."""
    from harness import Nats
    fresh_db("app9")
    nats = Nats(WORK)
    s = start_saver(nats, "unused", SRV.dsn("app9"), "saver-app9", ["--protocol", "app9"])
    try:
        wait_until(lambda: http_get(s.port, "/readyz")[0] == 200, 20, what="app9 saver ready")
        c = NatsClient(nats.port)
        c.sub("processed_data", 1)
        c.ping()
        time.sleep(0.2)
        body = json.dumps({"index": 3, "data": [{"id": f"u{k}", "name": f"N {k}"} for k in range(25)]})
        for _ in range(2):
            c.pub("saver_data", "", body.encode())
            (subj, data), = c.read_msgs(1, timeout=20)
            assert subj == "processed_data" and data == b"3", (subj, data)
        c.close()
        assert SRV.rows("SELECT job, count(*) FROM records GROUP BY job", "app9") == [("app9", "25")]
        assert SRV.rows("SELECT count(*) FROM chunks", "app9") == [("1",)]
        st = status(s)
        assert st["duplicates"] == 1 and pg.PASSWORD not in json.dumps(st), st
    finally:
        s.stop()
        nats.stop()


def readiness_follows_database():
    from harness import Nats
    fresh_db("ready")
    nats = Nats(WORK)
    pwfile = os.path.join(WORK, "pw")
    with open(pwfile, "w") as f:
        f.write(pg.PASSWORD + "\n")
    SRV.crash()  # PostgreSQL down before the saver starts
    s = start_saver(nats, "pr", SRV.dsn("ready", password=False), "saver-r",
                    ["--db-password-file", pwfile])
    try:
        def ready_state():
            st, body = http_get(s.port, "/readyz")
            return (st, body) if st is not None else None

        st, body = wait_until(ready_state, 20, what="saver /readyz to answer")
        assert st == 503 and "PostgreSQL unreachable" in body, (st, body)
        assert s.alive()
        SRV.start()
        wait_until(lambda: http_get(s.port, "/readyz")[0] == 200, 20,
                   what="/readyz 200 after PostgreSQL came up")
        SRV.crash()
        st, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(http_get(s.port, "/readyz")),
                              20, what="/readyz 503 after PostgreSQL went down")
        assert "PostgreSQL" in body, body
        print(f"  while down: {body.strip()[:160]}")
        SRV.start()
        wait_until(lambda: http_get(s.port, "/readyz")[0] == 200, 20,
                   what="/readyz 200 after PostgreSQL restarted")
        assert pg.PASSWORD not in json.dumps(status(s))
        no_password_in([s])
    finally:
        if not os.path.exists(os.path.join(SRV.data, "postmaster.pid")):
            SRV.start()
        s.stop()
        nats.stop()


def newer_schema_refused():
    from harness import Nats
    dsn = fresh_db("newer")
    SRV.psql("CREATE TABLE chunkmill_schema(version integer NOT NULL);"
             " INSERT INTO chunkmill_schema VALUES (7)", "newer")
    nats = Nats(WORK)
    s = start_saver(nats, "pn", dsn, "saver-n")
    try:
        rc = s.wait(30)
        assert rc == 1, rc
        err = s.log() + s.out()
        assert "schema version 7; this saver supports up to 3" in err, err[-800:]
        assert SRV.rows("SELECT version FROM chunkmill_schema", "newer") == [("7",)]
        assert SRV.rows("SELECT to_regclass('records') IS NULL", "newer") == [("t",)]
        no_password_in([s])
    finally:
        s.stop()
        nats.stop()


def lock_timeout_uses_no_delivery():
    """A table locked by someone else for 4 s: every batch hits the statement
    timeout (temporary), /readyz says so, the mappers keep their results and
    retry; with --max-deliver 1 not one chunk may die."""
    import subprocess
    records = 20000
    fresh_db("locked")
    PgPipeline.dbname = "locked"
    os.makedirs(WORK + "/locked")
    P = PgPipeline("pglock", records=records, mappers=2, transform="fullname",
                   workdir=WORK + "/locked", extra_mapper=["--save-timeout", "3s"])
    P.saver.stop()
    P.saver = P.start_saver_opts(["--db-statement-timeout", "300ms"])
    locker = None
    try:
        P.wait_ready([P.saver] + P.mappers)
        env = dict(os.environ, PGPASSWORD=pg.PASSWORD)
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(SRV.port), "-U", "postgres", "-d",
             "locked", "-c", "BEGIN; LOCK TABLE records IN ACCESS EXCLUSIVE MODE;"
             " SELECT pg_sleep(4); COMMIT;"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_until(lambda: SRV.rows("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock'"
                                    " AND relation = 'records'::regclass", "locked") == [("1",)],
                   10, what="the lock to be held")
        f = P.start_fetcher(["--once", "--ack-wait", "30s", "--max-deliver", "1"])
        st, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(
            http_get(P.saver.port, "/readyz")), 10, what="/readyz 503 while the table is locked")
        assert "statement timeout" in body, body
        print(f"  while locked: {body.strip()[:140]}")
        rc = f.wait(90)
        assert rc == 0, (rc, f.log()[-2000:])
        assert P.db_query("SELECT count(*), count(DISTINCT (job, chunk, idx)) FROM records") == \
            [(str(records), str(records))]
        assert P.db_query("SELECT count(*) FROM chunks") == [(str(records // P.chunk_size),)]
        assert http_get(P.saver.port, "/readyz")[0] == 200
    except Exception:
        dump_logs_on_failure(P)
        raise
    finally:
        if locker is not None and locker.poll() is None:
            locker.kill()
            locker.wait(5)
        P.stop_all()


def disk_full_is_temporary():
    """The tablespace of the results on a 1 MB tmpfs: PostgreSQL fails every
    batch with disk full (53100), /readyz is 503 with the reason, mappers
    keep their results; the tmpfs grown, the job finishes exact, and with
    --max-deliver 1 no chunk may have died. Root only (mount)."""
    import subprocess
    if os.geteuid() != 0:
        print("  skipped: needs root to mount a tmpfs")
        return
    ts = os.path.join(SRV.tmp, "ts")
    os.makedirs(ts)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", ts]).returncode != 0:
        os.rmdir(ts)
        print("  skipped: cannot mount a tmpfs here")
        return
    records = 20000
    P = None
    try:
        shutil_chown(ts)
        SRV.psql(f"CREATE TABLESPACE small LOCATION '{ts}'")
        fresh_db("diskfull")
        SRV.psql("ALTER DATABASE diskfull SET default_tablespace = small")
        PgPipeline.dbname = "diskfull"
        os.makedirs(WORK + "/diskfull")
        P = PgPipeline("pgfull", records=records, mappers=2, transform="fullname",
                       workdir=WORK + "/diskfull", extra_mapper=["--save-timeout", "3s"])
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once", "--ack-wait", "30s", "--max-deliver", "1"])
        st, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(
            http_get(P.saver.port, "/readyz")), 30, what="/readyz 503 on a full disk")
        assert "No space left on device" in body or "could not extend" in body, body
        print(f"  while full: {body.strip()[:150]}")
        time.sleep(2)  # mappers retry against the full disk for a while
        assert f.alive(), "the job must not end while the disk is full"
        subprocess.run(["mount", "-o", "remount,size=64m", ts], check=True)
        rc = f.wait(90)
        assert rc == 0, (rc, f.log()[-2000:])
        assert P.db_query("SELECT count(*), count(DISTINCT (job, chunk, idx)) FROM records") == \
            [(str(records), str(records))]
        assert P.db_query("SELECT count(*) FROM chunks") == [(str(records // P.chunk_size),)]
        wait_until(lambda: http_get(P.saver.port, "/readyz")[0] == 200, 10, what="/readyz 200 again")
    except Exception:
        if P is not None:
            dump_logs_on_failure(P)
        raise
    finally:
        if P is not None:
            P.stop_all()
        try:
            SRV.psql("DROP DATABASE IF EXISTS diskfull")
            SRV.psql("DROP TABLESPACE IF EXISTS small")
        finally:
            subprocess.run(["umount", "-l", ts])
            os.rmdir(ts)


def shutil_chown(path):
    import shutil
    if SRV.user:
        shutil.chown(path, user=SRV.user)


class PgPipeline(Pipeline):
    """Pipeline whose savers write to the PostgreSQL database `dbname`."""
    dbname = None

    def start_saver(self, name="saver"):
        return self.start_saver_opts([], name)

    def start_saver_opts(self, extra, name="saver"):
        port = free_port()
        p = Proc(f"{name}-{port}-{int(time.time() * 1000)}",
                 [bin_path("saver")] + self.common("saver", port) +
                 ["--db", SRV.dsn(self.dbname), "--id", f"{name}-{port}"] + list(extra),
                 log_dir=self.workdir)
        p.port = port
        return p

    def db_query(self, sql, args=()):
        return SRV.rows(sql, self.dbname)


def three_savers_kill_and_crash():
    records = int(os.environ.get("CM_PG_RECORDS", "300000"))
    fresh_db("scale")
    PgPipeline.dbname = "scale"
    os.makedirs(WORK + "/scale")
    P = PgPipeline("pg3", records=records, mappers=4, transform="fullname",
                   workdir=WORK + "/scale", extra_mapper=["--save-timeout", "2s"])
    try:
        savers = [P.saver, P.start_saver("saver2"), P.start_saver("saver3")]
        P.wait_ready(savers + P.mappers)
        f = P.start_fetcher(["--once", "--ack-wait", "30s", "--max-deliver", "5"])

        def done():
            s = status(f)
            return s["job"]["done_chunks"] if s else 0

        total = records // P.chunk_size
        t0 = time.monotonic()
        wait_until(lambda: done() >= total // 5, 90, interval=0.05, what="20% of the job")
        savers[1].kill9()
        print(f"  saver2 SIGKILLed at {done()}/{total} chunks")
        wait_until(lambda: done() >= total // 2, 90, interval=0.05, what="50% of the job")
        SRV.crash()
        print(f"  PostgreSQL crash-stopped (immediate) at {done()}/{total} chunks")
        time.sleep(1.0)
        SRV.start()
        print("  PostgreSQL restarted")
        rc = f.wait(120)
        assert rc == 0, (rc, f.log()[-2000:])
        print(f"  job finished in {time.monotonic() - t0:.1f}s")
        assert P.db_query("SELECT count(*), count(DISTINCT (job, chunk, idx)) FROM records") == \
            [(str(records), str(records))]
        assert P.db_query("SELECT count(*) FROM chunks") == [(str(total),)]
        assert P.db_query("SELECT count(*) FROM dead_letters") == [("0",)]
        dups = sum((status(s) or {}).get("duplicates", 0) for s in savers if s.alive())
        print(f"  {records} records exactly once; {dups} duplicate deliveries acknowledged")
        no_password_in(savers)
    except Exception:
        dump_logs_on_failure(P)
        raise
    finally:
        P.stop_all()


try:
    check("two savers receive the same chunks at once: one write, both acknowledge",
          two_savers_same_chunks)
    check("a marker in another saver's open transaction: wait, then duplicate or write",
          waits_for_a_marker_in_flight)
    check("a COMMIT that fails acknowledges nothing", failed_commit_acknowledges_nothing)
    check("a deadlock victim batch is retried at once", deadlock_is_retried)
    check("the app9 saver on PostgreSQL", app9_saver_on_postgres)
    check("readiness follows PostgreSQL (down at start, down later)", readiness_follows_database)
    check("a newer schema is refused", newer_schema_refused)
    check("a locked table: statement timeouts are temporary, no delivery used up",
          lock_timeout_uses_no_delivery)
    check("disk full on the server is temporary: 503, then exact with --max-deliver 1",
          disk_full_is_temporary)
    check("3 savers, 4 mappers, a saver SIGKILLed and PostgreSQL crash-restarted: exact",
          three_savers_kill_and_crash)
finally:
    SRV.stop()
    import shutil
    shutil.rmtree(WORK, ignore_errors=True)
finish()
