#!/usr/bin/env python3
"""The http(s): source against a paged JSON API served by this script
(http.server on 127.0.0.1, a free port), and file:- (stdin), end to end.

- page numbers + {"data":[...]} + an Authorization header taken from an
  environment variable (401 without it) + one page failing twice with 503:
  exactly the served records are saved, each page fetched once except the
  retried one, and the secret is in no log;
- next links (--http-next-field links.next, relative URLs); a fetcher
  killed half-way resumes at the stored page's URL (the resume cursor), not
  by walking every link from page 1 again;
- --http-pages N against an API that returns the same 100 users on every
  GET / (the original example's mock API);
- a permanently failing endpoint: the fetcher exits 1 with a clear error;
  a 401 is not retried;
- file:- reads the records from the fetcher's stdin.
"""
import collections
import json
import os
import sqlite3
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import time

from harness import (Pipeline, bin_path, check, dump_logs_on_failure, finish, free_port, http_get,
                     send_json, status, wait_until)

SECRET = "Bearer s3cret-token-42"
PAGE = 37
PAGES = 5
hits = collections.Counter()
fail_left = {"3": 2}
lock = threading.Lock()


def user(i):
    return {"uuid": f"u-{i}", "fn": f"F{i}", "ln": f"L{i}", "n": i}


class Api(BaseHTTPRequestHandler):
    def send(self, code, obj):
        send_json(self, code, obj)

    def do_GET(self):  # noqa: N802
        u = urlparse(self.path)
        q = parse_qs(u.query)
        with lock:
            hits[self.path] += 1
        if u.path == "/users":
            if self.headers.get("Authorization") != SECRET:
                return self.send(401, {"error": "unauthorized"})
            page = q.get("page", ["1"])[0]
            with lock:
                if fail_left.get(page, 0) > 0:
                    fail_left[page] -= 1
                    return self.send(503, {"error": "try later"})
            p = int(page)
            recs = [user((p - 1) * PAGE + k) for k in range(PAGE)] if 1 <= p <= PAGES else []
            return self.send(200, {"data": recs, "page": p})
        if u.path.startswith("/linked/"):
            p = int(u.path.rsplit("/", 1)[1])
            nxt = f"/linked/{p + 1}" if p < 3 else None
            return self.send(200, {"items": [{"p": p, "k": k} for k in range(10)],
                                   "links": {"next": nxt}})
        if u.path.startswith("/chain/"):
            # 40 pages of 10 linked by opaque tokens: only the links lead on.
            p = int(u.path.rsplit("/", 1)[1], 16) - 0x100
            nxt = f"/chain/{p + 1 + 0x100:x}" if p < 40 else None
            return self.send(200, {"items": [{"p": p, "k": k} for k in range(10)],
                                   "links": {"next": nxt}})
        if u.path == "/":
            return self.send(200, [user(i) for i in range(100)])
        if u.path == "/slow":
            # A slow API: every page takes 1.5 s.
            import time as _t
            _t.sleep(1.5)
            p = int(q.get("page", ["1"])[0])
            return self.send(200, [user(i) for i in range(20)] if p <= 2 else [])
        if u.path == "/broken":
            return self.send(500, {"error": "always broken"})
        return self.send(404, {"error": "no such path"})

    def log_message(self, *a):
        pass


PORT = free_port()
SRV = ThreadingHTTPServer(("127.0.0.1", PORT), Api)
threading.Thread(target=SRV.serve_forever, daemon=True).start()
BASE = f"http://127.0.0.1:{PORT}"
failed = []


def run_job(name, source_args, chunk_size=10, timeout=120):
    P = Pipeline(name, records=0, mappers=2, transform="identity", chunk_size=chunk_size)
    try:
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once", "--job", name] + source_args)
        rc = f.wait(timeout)
        return P, f, rc
    except Exception:
        failed.append(P)
        raise


def paged_auth_retry():
    os.environ["API_AUTH"] = SECRET
    try:
        P, f, rc = run_job("paged", ["--source", f"{BASE}/users", "--http-records-path", "data",
                                     "--http-header", "Authorization: $API_AUTH"])
    finally:
        del os.environ["API_AUTH"]
    try:
        assert rc == 0, (rc, f.log()[-1500:])
        rows = P.db_query("SELECT chunk, idx, body FROM records ORDER BY chunk, idx")
        got = sorted((json.loads(b)["n"] for _, _, b in rows))
        assert got == list(range(PAGE * PAGES)), got[:10]
        # chunks never span pages: 37 = 10+10+10+7 per page
        assert len(set(c for c, _, _ in rows)) == 4 * PAGES
        for _, _, b in rows[:3]:
            assert json.loads(b) == user(json.loads(b)["n"])
        # each page once, page 3 three times (two 503s), page 6 (empty) once
        for p in range(1, PAGES + 2):
            assert hits[f"/users?page={p}"] == (3 if p == 3 else 1), (p, dict(hits))
        log = f.log() + f.out() + "".join(m.log() for m in P.mappers)
        assert "s3cret" not in log
        assert "HTTP 503: retrying" in f.log(), f.log()[-800:]
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def next_links():
    P, f, rc = run_job("linked", ["--source", f"{BASE}/linked/1", "--http-next-field",
                                  "links.next", "--http-records-path", "items"], chunk_size=4)
    try:
        assert rc == 0, (rc, f.log()[-1500:])
        rows = [json.loads(b) for (b,) in P.db_query("SELECT body FROM records")]
        assert sorted((r["p"], r["k"]) for r in rows) == [(p, k) for p in (1, 2, 3) for k in range(10)]
        assert hits["/linked/4"] == 0
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def next_links_resume_at_cursor():
    P = Pipeline("chain", records=0, mappers=1, transform="sleep:20", chunk_size=10,
                 extra_fetcher=["--max-inflight", "1"])
    try:
        P.wait_ready([P.saver] + P.mappers)
        args = ["--once", "--job", "chain", "--source", f"{BASE}/chain/{1 + 0x100:x}",
                "--http-next-field", "links.next", "--http-records-path", "items"]
        f = P.start_fetcher(args)
        wait_until(lambda: (status(f) or {}).get("job", {}).get("done_chunks", 0) >= 15, 60,
                   interval=0.02, what="half of the chain")
        f.kill9()
        con = sqlite3.connect(P.ledger)
        (pos, cursor), = con.execute("SELECT source_pos, source_cursor FROM jobs").fetchall()
        con.close()
        assert pos >= 15 and cursor == f"{BASE}/chain/{pos + 0x100:x}", (pos, cursor)
        with lock:
            before = {k: v for k, v in hits.items() if k.startswith("/chain/")}
        f = P.start_fetcher(args)
        rc = f.wait(120)
        assert rc == 0, (rc, f.log()[-1500:])
        rows = [json.loads(b) for (b,) in P.db_query("SELECT body FROM records")]
        assert sorted((r["p"], r["k"]) for r in rows) == [(p, k) for p in range(1, 41)
                                                           for k in range(10)]
        with lock:
            again = {k: v - before.get(k, 0) for k, v in hits.items()
                     if k.startswith("/chain/") and v > before.get(k, 0)}
        # the restart asked for the stored page and what follows, nothing before it
        assert min(int(k.rsplit("/", 1)[1], 16) - 0x100 for k in again) == pos, again
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def fixed_page_count():
    before = hits["/?page=1"] + hits["/?page=2"] + hits["/?page=3"] + hits["/"]
    P, f, rc = run_job("mock", ["--source", f"{BASE}/", "--http-pages", "3"], chunk_size=100)
    try:
        assert rc == 0, (rc, f.log()[-1500:])
        assert P.db_query("SELECT count(*) FROM records") == [(300,)]
        assert P.db_query("SELECT count(DISTINCT chunk) FROM records") == [(3,)]
        after = hits["/?page=1"] + hits["/?page=2"] + hits["/?page=3"] + hits["/"]
        assert after - before == 3, (before, after)
        assert 'job "mock" complete: 300 records in 3 chunks' in f.out(), f.out()
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def permanent_failure():
    P, f, rc = run_job("broken", ["--source", f"{BASE}/broken", "--http-retries", "2"])
    try:
        assert rc == 1, (rc, f.log()[-800:])
        assert "giving up after 3 attempts" in f.log() and "HTTP 500" in f.log(), f.log()[-800:]
        assert hits["/broken?page=1"] == 3
        # 401: not retried, named clearly
        f2 = P.start_fetcher(["--once", "--job", "noauth", "--source", f"{BASE}/users",
                              "--http-records-path", "data"], name="fetcher-noauth")
        assert f2.wait(60) == 1
        assert "HTTP 401 (not retried)" in f2.log(), f2.log()[-800:]
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def stdin_source():
    P = Pipeline("stdin", records=0, mappers=1, transform="identity", chunk_size=25)
    path = os.path.join(P.workdir, "in.ndjson")
    with open(path, "w") as fh:
        for i in range(230):
            fh.write(json.dumps({"i": i}) + "\n")
    try:
        P.wait_ready([P.saver] + P.mappers)
        port = free_port()
        with open(path, "rb") as stdin, open(os.path.join(P.workdir, "f.log"), "wb") as log:
            p = subprocess.Popen([bin_path("fetcher")] + P.common("fetcher", port) +
                                 ["--once", "--job", "stdin", "--source", "file:-", "--chunk-size",
                                  "25", "--ledger", P.ledger], stdin=stdin, stdout=log, stderr=log)
            try:
                rc = p.wait(120)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
        assert rc == 0, open(os.path.join(P.workdir, "f.log")).read()[-800:]
        got = sorted(json.loads(b)["i"] for (b,) in P.db_query("SELECT body FROM records"))
        assert got == list(range(230))
        assert P.db_query("SELECT count(DISTINCT chunk) FROM records") == [(10,)]
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


def slow_source_keeps_loop_free():
    P = Pipeline("slow", records=0, mappers=1, transform="identity", chunk_size=10)
    try:
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--once", "--job", "slow", "--source", f"{BASE}/slow"])
        worst, probes = 0.0, 0
        while f.alive() and probes < 200:
            t0 = time.time()
            st, _ = http_get(f.port, "/healthz", timeout=1.0)
            dt = time.time() - t0
            if st == 200:
                probes += 1
                worst = max(worst, dt)
            time.sleep(0.05)
        assert f.wait(60) == 0, f.log()[-800:]
        # Pages take 1.5 s each, but the source is read on the thread pool:
        # the loop answers probes at once all along.
        assert probes >= 20 and worst < 0.5, (probes, worst)
        assert P.db_query("SELECT count(*) FROM records") == [(40,)]
    except Exception:
        failed.append(P)
        raise
    finally:
        P.stop_all()


check("a slow API does not stall the fetcher's loop (probes answer)", slow_source_keeps_loop_free)
check("paged source with auth and a page failing twice with 503", paged_auth_retry)
check("next links", next_links)
check("next links: a restart resumes at the stored page's URL", next_links_resume_at_cursor)
check("--http-pages N against the mock API", fixed_page_count)
check("permanently failing endpoint ends the job with a clear error", permanent_failure)
check("file:- reads stdin", stdin_source)
for p in failed:
    dump_logs_on_failure(p)
SRV.shutdown()
finish()
