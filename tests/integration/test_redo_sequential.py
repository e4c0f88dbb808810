#!/usr/bin/env python3
"""Redo by version for sequential sources (docs/jobs.md "Redo by version"):
real nats-server, fetcher --serve with its job API, real mappers labelled
v1 (--transform identity), v2 and v3 (--transform fullname), a real saver
(SQLite). A sequential chunk's payload leaves the ledger once it is saved;
a redo reads it again from the position stored with the chunk and checks
its SHA-256.

- file: NDJSON job complete with v1; redo v1 with v2 mappers: the job is
  complete again, every chunk v2 (redo 1) in the saver, rows exact (each
  record once, fullname's output of the file's record); then one record of
  the file changes (same length) and a redo of v2 with v3 mappers: that
  record's chunk is dead with "source changed since the chunk was first
  read (digest mismatch)", its rows are still v2's, every other chunk is
  v3's; the job is complete_with_dead.
- http: two jobs against a paged API served by this script (page numbers,
  and next links: the stored page cursor), complete with v1, redone with
  v2: all v2, exact; then one page answers differently and the next-link
  job's redo kills exactly that page's chunks.
- file:- (stdin): `--redo` is refused (exit 1) naming the reason.
"""
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from harness import (Pipeline, Proc, api_request, bin_path, check, dump_logs_on_failure, finish,
                     free_port, kept_on_failure, send_json, wait_until)

API_TOKEN = "seq-redo-test-api-token-0123456789"
CHANGED = "source changed since the chunk was first read (digest mismatch)"
failed = []


def api(port, method, path, body=None):
    return api_request(port, method, path, body, token=API_TOKEN)


def start_serve(P):
    tok = os.path.join(P.workdir, "api-token")
    with open(tok, "w") as fh:
        fh.write(API_TOKEN + "\n")
    port = free_port()
    f = Proc(f"fetcher-{port}", [bin_path("fetcher")] + P.common("fetcher", port) +
             ["--serve", "--ledger", P.ledger, "--progress", "0", "--api-token-file", tok,
              "--api-sources", "gen,file,http", "--api-file-root", P.workdir],
             log_dir=P.workdir)
    f.port = port
    P.fetcher = f
    P.wait_ready([f])
    return f


def mappers(P, transform, label, n=2):
    P.transform = transform
    ms = [P.start_mapper(["--version-label", label]) for _ in range(n)]
    P.wait_ready(ms)
    return ms


def wait_job(f, name, pred, what, timeout=120):
    def get():
        st, j = api(f.port, "GET", f"/jobs/{name}")
        return j if st == 200 and pred(j) else None
    return wait_until(get, timeout, interval=0.1, what=what)


def redo(f, name, version, nchunks):
    st, j = api(f.port, "POST", f"/jobs/{name}/redo", {"version": version})
    assert st == 202, (st, j)
    assert (j["redo"]["version"], j["redo"]["chunks"]) == (version, nchunks), j
    return j["redo"]["generation"]


def rec(i, ln=None):
    return {"uuid": f"u{i}", "fn": f"F{i}", "ln": ln or f"L{i}"}


def saved(P, job):
    """{uuid: (chunk, body)} of the job's rows, asserting each row once."""
    rows = P.db_query("SELECT chunk, idx, body FROM records WHERE job = ?", (job,))
    out = {}
    for chunk, _, body in rows:
        b = json.loads(body)
        key = b.get("uuid") or b.get("id")
        assert key not in out, f"record {key} saved twice"
        out[key] = (chunk, b)
    return out


def chunk_versions(P, job):
    return dict(((c, (v, r)) for c, v, r in
                 P.db_query("SELECT chunk, version, redo FROM chunks WHERE job = ?", (job,))))


N_FILE = 300
CHUNK = 25


def file_redo():
    P = Pipeline("redo-seq-file", records=0, mappers=0)
    with kept_on_failure(P, failed):
        path = os.path.join(P.workdir, "in.ndjson")
        recs = [rec(i) for i in range(N_FILE)]
        with open(path, "w") as fh:
            fh.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs))
        nchunks = N_FILE // CHUNK
        v1 = mappers(P, "identity", "v1")
        P.wait_ready([P.saver])
        f = start_serve(P)
        st, j = api(f.port, "POST", "/jobs", {"job": "fjob", "source": "file:" + path,
                                              "chunk_size": CHUNK})
        assert st == 201, (st, j)
        wait_job(f, "fjob", lambda j: j["state"] == "complete", "the file job complete (v1)")
        got = saved(P, "fjob")
        assert {k: b for k, (_, b) in got.items()} == {r["uuid"]: r for r in recs}
        assert set(chunk_versions(P, "fjob").values()) == {("v1", 0)}
        for m in v1:
            m.stop()

        # redo v1 through v2 (fullname): all v2, rows exact
        v2 = mappers(P, "fullname", "v2")
        gen = redo(f, "fjob", "v1", nchunks)
        j = wait_job(f, "fjob", lambda j: j["state"] == "complete" and
                     j["redo"]["done"] == nchunks, "the file job complete again (v2)")
        assert j["records_saved"] == N_FILE and j["chunks"]["dead"] == 0, j
        assert chunk_versions(P, "fjob") == {c: ("v2", gen) for c in range(nchunks)}
        got = saved(P, "fjob")
        assert {k: b for k, (_, b) in got.items()} == \
            {f"u{i}": {"id": f"u{i}", "name": f"F{i} L{i}"} for i in range(N_FILE)}
        assert {k: c for k, (c, _) in got.items()} == \
            {f"u{i}": i // CHUNK for i in range(N_FILE)}
        for m in v2:
            m.stop()

        # record 80 (chunk 3) changes, same length: a redo of v2 with v3
        changed = 80 // CHUNK
        recs[80] = rec(80, ln="X80")
        with open(path, "w") as fh:
            fh.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs))
        mappers(P, "fullname", "v3")
        gen3 = redo(f, "fjob", "v2", nchunks)
        j = wait_job(f, "fjob", lambda j: j["state"] == "complete_with_dead",
                     "the file job complete_with_dead after the file changed")
        assert j["chunks"]["dead"] == 1 and j["chunks"]["done"] == nchunks - 1, j
        st, d = api(f.port, "GET", "/jobs/fjob/dead")
        assert st == 200 and [(x["index"], x["reason"]) for x in d["dead"]] == \
            [(changed, CHANGED)], d
        want = {c: ("v3", gen3) for c in range(nchunks)}
        want[changed] = ("v2", gen)
        assert chunk_versions(P, "fjob") == want
        got = saved(P, "fjob")
        assert len(got) == N_FILE
        # nothing of the changed file was saved: record 80 is still "L80"
        assert got["u80"][1] == {"id": "u80", "name": "F80 L80"}, got["u80"]
        assert "digest mismatch" in f.log()
        print(f"  file: {nchunks} chunks v1 -> redo -> v2, rows exact; file changed: chunk "
              f"{changed} dead ({CHANGED}), {nchunks - 1} chunks v3")


# ---- http ------------------------------------------------------------------

PAGE = 30
PAGES = 4
HCHUNK = 20  # 2 chunks a page: 20 + 10
state = {"page3_ln": "L"}
lock = threading.Lock()


def hrec(p, k):
    i = (p - 1) * PAGE + k
    with lock:
        ln = state["page3_ln"] if p == 3 else "L"
    return {"uuid": f"h{i}", "fn": f"F{i}", "ln": f"{ln}{i}"}


class Api(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        u = urlparse(self.path)
        if u.path == "/users":
            p = int(parse_qs(u.query).get("page", ["1"])[0])
            recs = [hrec(p, k) for k in range(PAGE)] if 1 <= p <= PAGES else []
            return send_json(self, 200, {"data": recs})
        if u.path.startswith("/chain/"):
            # pages linked by opaque tokens: only the links lead on
            p = int(u.path.rsplit("/", 1)[1], 16) - 0x100
            nxt = f"/chain/{p + 1 + 0x100:x}" if p < PAGES else None
            return send_json(self, 200, {"items": [hrec(p, k) for k in range(PAGE)],
                                         "links": {"next": nxt}})
        return send_json(self, 404, {"error": "no such path"})

    def log_message(self, *a):
        pass


def http_redo():
    port = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", port), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    P = Pipeline("redo-seq-http", records=0, mappers=0)
    try:
        with kept_on_failure(P, failed):
            nchunks = PAGES * 2
            v1 = mappers(P, "identity", "v1")
            P.wait_ready([P.saver])
            f = start_serve(P)
            jobs = {"hpaged": {"source": f"{base}/users", "http": {"records_path": "data"}},
                    "hlinked": {"source": f"{base}/chain/101",
                                "http": {"records_path": "items", "next_field": "links.next"}}}
            for name, body in jobs.items():
                st, j = api(f.port, "POST", "/jobs", dict(body, job=name, chunk_size=HCHUNK))
                assert st == 201, (st, j)
            for name in jobs:
                wait_job(f, name, lambda j: j["state"] == "complete", f"{name} complete (v1)")
                assert len(saved(P, name)) == PAGE * PAGES
            for m in v1:
                m.stop()
            v2 = mappers(P, "fullname", "v2")
            gens = {name: redo(f, name, "v1", nchunks) for name in jobs}
            want = {f"h{i}": {"id": f"h{i}", "name": f"F{i} L{i}"} for i in range(PAGE * PAGES)}
            for name in jobs:
                wait_job(f, name, lambda j: j["state"] == "complete" and
                         j["redo"]["done"] == nchunks, f"{name} complete again (v2)")
                assert chunk_versions(P, name) == {c: ("v2", gens[name]) for c in range(nchunks)}
                assert {k: b for k, (_, b) in saved(P, name).items()} == want, name
            for m in v2:
                m.stop()

            # page 3 answers differently now: its two chunks (4, 5) die
            with lock:
                state["page3_ln"] = "Z"
            mappers(P, "fullname", "v3")
            gen3 = redo(f, "hlinked", "v2", nchunks)
            j = wait_job(f, "hlinked", lambda j: j["state"] == "complete_with_dead",
                         "hlinked complete_with_dead after page 3 changed")
            st, d = api(f.port, "GET", "/jobs/hlinked/dead")
            assert st == 200 and [(x["index"], x["reason"]) for x in d["dead"]] == \
                [(4, CHANGED), (5, CHANGED)], d
            w = {c: ("v3", gen3) for c in range(nchunks)}
            w[4] = w[5] = ("v2", gens["hlinked"])
            assert chunk_versions(P, "hlinked") == w
            assert {k: b for k, (_, b) in saved(P, "hlinked").items()} == want
            print(f"  http: page-number and next-link jobs of {nchunks} chunks redone v1 -> v2, "
                  "rows exact; page 3 changed: its 2 chunks dead, 6 chunks v3")
    finally:
        srv.shutdown()
        srv.server_close()


def stdin_refused():
    """file:- cannot be read twice: --redo of a stdin job is refused, clearly."""
    P = Pipeline("redo-seq-stdin", records=0, mappers=0)
    with kept_on_failure(P, failed):
        path = os.path.join(P.workdir, "in.ndjson")
        with open(path, "w") as fh:
            fh.write("".join(json.dumps(rec(i)) + "\n" for i in range(10)))
        with open(path) as stdin:
            r = subprocess.run([bin_path("fetcher")] + P.common("fetcher", free_port()) +
                               ["--once", "--job", "sj", "--source", "file:-", "--ledger",
                                os.path.join(P.workdir, "stdin-ledger.db"), "--redo", "v1"],
                               stdin=stdin, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (r.returncode, r.stderr[-800:])
        assert "--redo failed: job sj reads stdin (file:-): its chunks cannot be read again" \
            in r.stderr, r.stderr[-800:]
        print("  file:-: --redo refused (exit 1, the reason named)")


check("file: job redone by version from the file; a changed chunk dies, not saved", file_redo)
check("stdin (file:-) job: redo refused with the reason", stdin_refused)
check("http: jobs redone by version from the API; a changed page's chunks die", http_redo)
for P in failed:
    dump_logs_on_failure(P)
finish()
