#!/usr/bin/env python3
"""Redo by version on the data path (docs/jobs.md "Redo by version"): real
nats-server, a real saver (SQLite, then PostgreSQL), real mappers labelled
v1 (--transform identity) and v2 (--transform fullname), and the test in the
fetcher's place: it publishes leased chunks (lease tokens made with the
shared --lease-key-file) on P.chunk.<mapper id> and reads the Acks on P.ack.

- every chunk saved by v1, then sent again with "redo":1 through the v2
  mapper: each chunk's rows, dead letters and marker are v2's (rows exactly
  once per key, none of v1's left), and the Acks say version v2, redo 1,
  with a MAC over both;
- a late copy of v1's answer (redo 0) after the redo is a duplicate: the
  Ack reports what is stored (v2, redo 1) and no row changes;
- a redo chunk whose lease token was made for generation 0 is refused by
  the saver (the token covers "redo"): no Ack, nothing changes;
- end to end (fetcher --serve, its job API, lease key on): a job completed
  by v1 mappers, then v2 mappers and `POST /jobs/NAME/redo {"version":"v1"}`:
  the job completes again with its redo progress done, every chunk is v2,
  rows exact; a v1 answer delayed past the redo is a duplicate and changes
  neither the rows nor the job.
PostgreSQL is skipped (said so) when it is not installed."""
import json
import os
import time

import pg
import rawnats
from harness import (Pipeline, Proc, api_request, bin_path, check, dump_logs_on_failure, finish,
                     free_port, http_get, kept_on_failure, parse_prometheus, wait_until)

JOB = "redo"
CHUNKS = 12
RECS = 20
NO_LN = 7  # this record has no "ln": fullname (v2) makes it a dead letter
KEY = b"redo-test-lease-key-0123456789"
failed = []


def record(i, k):
    r = {"uuid": f"u{i}-{k}", "fn": "Ann", "ln": f"L{k}"}
    if k == NO_LN:
        del r["ln"]
    return json.dumps(r, separators=(",", ":"))


def chunk(i, attempt, mapper, redo=0, token_redo=None):
    """Chunk i as the fetcher sends it: header, lease for (attempt, mapper,
    redo generation token_redo, by default redo), the records."""
    hdr = {"job": JOB, "index": i, "attempt": attempt}
    if redo:
        hdr["redo"] = redo
    hdr["mapper"] = mapper
    hdr["lease"] = rawnats.lease_token(KEY, JOB, i, attempt, mapper,
                                       redo if token_redo is None else token_redo)
    head = json.dumps(hdr, separators=(",", ":"))[:-1]
    return head + ',"data":[' + ",".join(record(i, k) for k in range(RECS)) + "]}"


class RedoPipeline(Pipeline):
    """Saver with the lease key, on SQLite or on the PostgreSQL database
    `dsn`; mappers added by the test."""
    dsn = None
    srv = None
    dbname = None

    def start_saver(self, name="saver"):
        key = os.path.join(self.workdir, "lease.key")
        with open(key, "wb") as f:
            f.write(KEY + b"\n")
        port = free_port()
        db = self.dsn or self.db
        p = Proc(f"{name}-{port}", [bin_path("saver")] + self.common("saver", port) +
                 ["--db", db, "--lease-key-file", key], log_dir=self.workdir)
        p.port = port
        return p

    def db_query(self, sql, args=()):
        if self.srv is None:
            return super().db_query(sql, args)
        # psql gives text: numbers as ints, as SQLite's rows have them.
        return [tuple(int(v) if v.isdigit() else v for v in r)
                for r in self.srv.rows(sql, self.dbname)]


class Acks:
    """The Acks on P.ack, decoded (proto/chunkmill.proto Ack)."""

    def __init__(self, P):
        self.nc = rawnats.RawNats(P.nats.port, name="redo-test")
        self.sid = self.nc.sub(P.prefix + ".ack")
        self.nak_sid = self.nc.sub(P.prefix + ".nak")
        assert self.nc.flush()
        self.seen = 0

    def wait_new(self, n, timeout=30):
        """The next n Acks (after those returned before), decoded."""
        want = self.seen + n
        wait_until(lambda: self.nc.count(self.sid) >= want, timeout,
                   what=f"{n} acks (have {self.nc.count(self.sid) - self.seen})")
        got = self.nc.last(self.sid)[-(self.nc.count(self.sid) - self.seen):][:n]
        self.seen = want
        out = []
        for raw in got:
            f = rawnats.decode(raw)
            a = {"job": f.get(1, b"").decode(), "index": f.get(2, 0), "attempt": f.get(3, 0),
                 "records": f.get(4, 0), "dead": f.get(5, 0), "duplicate": bool(f.get(6, 0)),
                 "mac": f.get(8, b"").decode(), "version": f.get(9, b"").decode(),
                 "redo": f.get(10, 0)}
            want_mac = rawnats.ack_mac(KEY, a["job"], a["index"], a["attempt"], a["records"],
                                       a["dead"], a["duplicate"], a["version"], a["redo"])
            assert a["mac"] == want_mac, f"ack MAC does not cover what it says: {a}"
            out.append(a)
        return out


def saver_metric(P, name):
    st, body = http_get(P.saver.port, "/metrics")
    assert st == 200, body
    return parse_prometheus(body)[0].get(name)


def mapper_id(p):
    return p.argv[p.argv.index("--id") + 1]


_pg = []  # the one PostgreSQL server of this script, started on first use


def use_backend(backend):
    """Points RedoPipeline at SQLite, or at a fresh database on this
    script's PostgreSQL server; False (said so) when PostgreSQL is not
    installed."""
    RedoPipeline.srv = RedoPipeline.dsn = RedoPipeline.dbname = None
    if backend == "sqlite":
        return True
    why = pg.skip_reason()
    if why:
        print(f"  SKIP postgres: {why}")
        return False
    if not _pg:
        _pg.append(pg.PgServer())
    name = f"redo{len(_pg)}"
    _pg.append(name)
    RedoPipeline.srv, RedoPipeline.dbname = _pg[0], name
    RedoPipeline.dsn = _pg[0].create_db(name)
    return True


def redo_on(backend):
    if not use_backend(backend):
        return
    P = RedoPipeline(f"redo-{backend}", mappers=0)
    with kept_on_failure(P, failed):
        P.transform = "identity"
        v1 = P.start_mapper(["--version-label", "v1"])
        P.transform = "fullname"
        v2 = P.start_mapper(["--version-label", "v2"])
        P.wait_ready([P.saver, v1, v2])
        acks = Acks(P)
        q = P.db_query

        # 1. v1 saves every chunk.
        for i in range(CHUNKS):
            acks.nc.pub(f"{P.prefix}.chunk.{mapper_id(v1)}", chunk(i, 1, mapper_id(v1)))
        got = acks.wait_new(CHUNKS)
        assert sorted(a["index"] for a in got) == list(range(CHUNKS)), got
        assert all(a["version"] == "v1" and a["redo"] == 0 and not a["duplicate"] and
                   a["records"] == RECS for a in got), got
        assert q("SELECT count(*), count(DISTINCT version) FROM chunks") == [(CHUNKS, 1)]
        assert q("SELECT count(*) FROM records WHERE body LIKE '%\"fn\"%'") == \
            [(CHUNKS * RECS,)]

        # 2. redo: every chunk again with redo 1, through v2.
        for i in range(CHUNKS):
            acks.nc.pub(f"{P.prefix}.chunk.{mapper_id(v2)}",
                        chunk(i, 2, mapper_id(v2), redo=1))
        got = acks.wait_new(CHUNKS)
        assert sorted(a["index"] for a in got) == list(range(CHUNKS)), got
        assert all(a["version"] == "v2" and a["redo"] == 1 and not a["duplicate"] and
                   a["records"] == RECS - 1 and a["dead"] == 1 for a in got), got

        def stored_is_v2():
            assert q("SELECT version, redo, count(*), sum(records), sum(dead) FROM chunks"
                     " GROUP BY version, redo") == \
                [("v2", 1, CHUNKS, CHUNKS * (RECS - 1), CHUNKS)], q("SELECT * FROM chunks")
            # Exactly once per key, all of them v2's (fullname: "name"),
            # none of v1's (identity kept "fn").
            n = CHUNKS * (RECS - 1)
            assert q("SELECT count(*), count(DISTINCT job || '/' || chunk || '/' || idx)"
                     " FROM records") == [(n, n)]
            assert q("SELECT count(*) FROM records WHERE body LIKE '%\"name\":\"Ann L%'") == \
                [(n,)]
            assert q("SELECT count(*) FROM records WHERE body LIKE '%\"fn\"%'") == [(0,)]
            assert q(f"SELECT count(*), min(idx), max(idx) FROM dead_letters") == \
                [(CHUNKS, NO_LN, NO_LN)]
            assert q(f"SELECT count(*) FROM records WHERE idx = {NO_LN}") == [(0,)]
        stored_is_v2()
        assert saver_metric(P, "chunkmill_saver_chunks_replaced_total") == CHUNKS

        # 3. a late v1 answer (generation 0) after the redo: duplicate,
        # reporting what is stored; nothing changes.
        acks.nc.pub(f"{P.prefix}.chunk.{mapper_id(v1)}", chunk(3, 1, mapper_id(v1)))
        (a,) = acks.wait_new(1)
        assert (a["index"], a["duplicate"], a["version"], a["redo"], a["records"],
                a["dead"]) == (3, True, "v2", 1, RECS - 1, 1), a
        stored_is_v2()

        # 4. a redo chunk under a token of generation 0: refused (the
        # mapper NAKs it with the saver's reason), no Ack.
        naks = acks.nc.count(acks.nak_sid)
        acks.nc.pub(f"{P.prefix}.chunk.{mapper_id(v1)}",
                    chunk(5, 3, mapper_id(v1), redo=2, token_redo=0))
        wait_until(lambda: acks.nc.count(acks.nak_sid) > naks, 30, what="the mapper's NAK")
        assert acks.nc.flush()
        time.sleep(0.3)
        assert acks.nc.count(acks.sid) == acks.seen, "an ack for a forged redo"
        nak = rawnats.decode(acks.nc.last(acks.nak_sid)[-1])
        assert (nak.get(2), nak.get(3), nak.get(9)) == (5, 3, 2), nak
        assert b"lease not authentic" in nak.get(5, b""), nak
        assert "rejected (lease_forged): mapped chunk 5 attempt 3" in P.saver.log()
        stored_is_v2()
        print(f"  {backend}: {CHUNKS} chunks v1 -> redo 1 -> v2, {CHUNKS * (RECS - 1)} rows "
              "once each; late v1 copy a duplicate; generation-0 token refused")
        acks.nc.close()


E2E_RECORDS = 6000
E2E_CHUNK = 100


API_TOKEN = "redo-test-api-token-0123456789"


def api(port, method, path, body=None):
    return api_request(port, method, path, body, token=API_TOKEN)


def start_serve(P):
    """fetcher --serve with the job API and the lease key."""
    tok = os.path.join(P.workdir, "api-token")
    with open(tok, "w") as fh:
        fh.write(API_TOKEN + "\n")
    port = free_port()
    f = Proc(f"fetcher-{port}", [bin_path("fetcher")] + P.common("fetcher", port) +
             ["--serve", "--ledger", P.ledger, "--progress", "0", "--api-token-file", tok,
              "--lease-key-file", os.path.join(P.workdir, "lease.key")], log_dir=P.workdir)
    f.port = port
    P.fetcher = f
    P.wait_ready([f])
    return f


def late_v1_save(P, index):
    """A mapped chunk of v1 for generation 0 (a v1 mapper's answer delayed
    past the redo), sent to the savers as a mapper does; the saver's reply."""
    nc = rawnats.RawNats(P.nats.port, name="late-mapper")
    try:
        inbox = f"_INBOX.{rawnats.random_hex(16)}"
        sid = nc.sub(inbox)
        assert nc.flush()
        hdr = {"job": "redojob", "index": index, "attempt": 1, "mapper": "m-late",
               "lease": rawnats.lease_token(KEY, "redojob", index, 1, "m-late"),
               "version": "v1"}
        body = json.dumps(hdr, separators=(",", ":"))[:-1] + ',"data":[{"late":"v1"}]}'
        nc.pub(P.prefix + ".save", body, reply=inbox)
        wait_until(lambda: nc.count(sid) > 0, 30, what="the saver's reply")
        return json.loads(nc.last(sid)[0])
    finally:
        nc.close()


def e2e_on(backend):
    """The whole pipeline through the job API: a job saved by v1 mappers,
    `POST /jobs/NAME/redo {"version":"v1"}` with v2 mappers: the job is
    complete again, every chunk v2 (saver and job), rows exact; a delayed
    v1 answer sent after the redo changes nothing. Lease key on."""
    if not use_backend(backend):
        return
    P = RedoPipeline(f"redo-e2e-{backend}", records=E2E_RECORDS, mappers=0,
                     chunk_size=E2E_CHUNK)
    with kept_on_failure(P, failed):
        q = P.db_query
        nchunks = E2E_RECORDS // E2E_CHUNK
        P.transform = "identity"
        v1 = [P.start_mapper(["--version-label", "v1"]) for _ in range(2)]
        P.wait_ready([P.saver] + v1)
        f = start_serve(P)
        st, j = api(f.port, "POST", "/jobs", {"job": "redojob", "source": "gen:users",
                                              "records": E2E_RECORDS, "chunk_size": E2E_CHUNK})
        assert st == 201, (st, j)

        def job_is(pred):
            return lambda: (lambda j: j if pred(j) else None)(api(f.port, "GET",
                                                                  "/jobs/redojob")[1])
        wait_until(job_is(lambda j: j["state"] == "complete"), 120, interval=0.1,
                   what="the job complete with v1")
        assert q("SELECT version, count(*), sum(records) FROM chunks GROUP BY version") == \
            [("v1", nchunks, E2E_RECORDS)]
        for m in v1:
            m.stop()

        P.transform = "fullname"
        v2 = [P.start_mapper(["--version-label", "v2"]) for _ in range(2)]
        P.wait_ready(v2)
        st, j = api(f.port, "POST", "/jobs/redojob/redo", {"version": "v1"})
        assert st == 202, (st, j)
        assert (j["redo"]["version"], j["redo"]["generation"], j["redo"]["chunks"]) == \
            ("v1", 1, nchunks), j
        j = wait_until(job_is(lambda j: j["state"] == "complete" and j["redo"]["done"] == nchunks),
                       120, interval=0.1, what="the job complete again after the redo")
        assert j["chunks"]["done"] == nchunks and j["records_saved"] == E2E_RECORDS, j

        def all_v2():
            assert q("SELECT version, redo, count(*), sum(records), sum(dead) FROM chunks"
                     " GROUP BY version, redo") == [("v2", 1, nchunks, E2E_RECORDS, 0)], \
                q("SELECT version, redo, count(*) FROM chunks GROUP BY version, redo")
            assert q("SELECT count(*), count(DISTINCT job || '/' || chunk || '/' || idx)"
                     " FROM records") == [(E2E_RECORDS, E2E_RECORDS)]
            assert q("SELECT count(*) FROM records WHERE body LIKE '%\"name\":%'") == \
                [(E2E_RECORDS,)]
            assert q("SELECT count(*) FROM records WHERE body NOT LIKE '%\"name\":%'") == \
                [(0,)]
        all_v2()
        assert saver_metric(P, "chunkmill_saver_chunks_replaced_total") == nchunks

        # A v1 answer delayed past the redo: authentic (generation 0), a
        # duplicate of the redo, nothing rewritten, the job unchanged.
        reply = late_v1_save(P, 0)
        assert reply.get("ok") is True and reply.get("duplicate") is True, reply
        time.sleep(0.5)  # its Ack reaches the fetcher
        all_v2()
        j = api(f.port, "GET", "/jobs/redojob")[1]
        assert (j["state"], j["chunks"]["done"], j["records_saved"]) == \
            ("complete", nchunks, E2E_RECORDS), j
        print(f"  {backend}: job of {E2E_RECORDS} records complete by v1, redo v1 over the "
              f"API, complete again by v2: {nchunks} chunks v2, rows exact; a late v1 answer "
              "a duplicate")


check("redo through a v2 mapper replaces v1's rows (SQLite)", lambda: redo_on("sqlite"))
check("redo through a v2 mapper replaces v1's rows (PostgreSQL)", lambda: redo_on("postgres"))
check("a job done by v1, redone with v2 mappers: complete again, all v2, exact (SQLite)",
      lambda: e2e_on("sqlite"))
check("a job done by v1, redone with v2 mappers: complete again, all v2, exact (PostgreSQL)",
      lambda: e2e_on("postgres"))
for P in failed:
    dump_logs_on_failure(P)
if _pg:
    _pg[0].stop()
finish()
