#!/usr/bin/env python3
"""HTTP source: redirects and credentials (issue 11).

Two API servers on two loopback ports (two origins). The fetcher reads
pages with a custom header (--http-header "X-Api-Key: ...") and, in one
case, credentials in the source URL (http://user:PASSWORD@host/...):
- a redirect to the same origin is followed, with the header;
- a redirect to the other origin is refused (the fetcher exits 1 naming
  it; the other server sees no request) unless --http-follow-redirects,
  and then the other origin gets neither the header nor the URL's
  credentials;
- the URL's password is in no log line, not in /status and not in the
  ledger file;
- a credential in the URL's query (?api_key=...) reaches the server but is
  in no log line, /status, /metrics or ledger row (shown as api_key=***),
  and a ledger row from an older build that kept it is rewritten.
(https -> http counts as another origin: tests/unit/test_redirect.c.)
"""
import base64
import collections
import glob
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from harness import (Pipeline, check, dump_logs_on_failure, finish, http_get, send_json, status,
                     wait_until)

KEY = "X-Api-Key"
KEY_VALUE = "api-key-R7t3q9"
URL_PASSWORD = "url-pw-M2k8z5"
QUERY_SECRET = "SECRET123q7"
PAGE = 30
PAGES = 3
seen = collections.defaultdict(list)  # (server, path) -> [headers]
queries = collections.defaultdict(list)  # (server, path) -> [query strings]
lock = threading.Lock()


def make_handler(name, other_port):
    class Api(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, code, obj=None, location=None):
            send_json(self, code, obj, location)

        def do_GET(self):  # noqa: N802
            u = urlparse(self.path)
            q = u.query
            with lock:
                seen[(name, u.path)].append(dict(self.headers))
                queries[(name, u.path)].append(q)
            if u.path == "/same":
                return self.send(302, location=f"/data?{q}")
            if u.path == "/away":
                return self.send(302, location=f"http://127.0.0.1:{other_port()}/data?{q}")
            if u.path == "/data":
                p = int(parse_qs(q).get("page", ["1"])[0])
                recs = [{"uuid": f"{name}-{p}-{k}", "fn": "F", "ln": "L"} for k in range(PAGE)]
                return self.send(200, recs if p <= PAGES else [])
            return self.send(404, {"error": "no such path"})
    return Api


ports = {}
servers = {}
for nm, other in (("A", "B"), ("B", "A")):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(nm, lambda o=other: ports[o]))
    ports[nm] = srv.server_address[1]
    servers[nm] = srv
    threading.Thread(target=srv.serve_forever, daemon=True).start()
failed = []


def run(name, source, extra=(), expect_rc=0):
    P = Pipeline(name, records=0, mappers=1)
    try:
        P.wait_ready([P.saver] + P.mappers)
        f = P.start_fetcher(["--source", source, "--http-header", f"{KEY}: {KEY_VALUE}",
                             "--http-retries", "0", "--job", name] + list(extra))
        return P, f
    except Exception:
        failed.append(P)
        P.stop_all()
        raise


def rows(P):
    return P.db_query("SELECT count(*) FROM records")[0][0]


def close(P, ok):
    P.stop_all()
    if ok:
        shutil.rmtree(P.workdir, ignore_errors=True)
    else:
        failed.append(P)


def same_origin():
    seen.clear()
    P, f = run("same", f"http://127.0.0.1:{ports['A']}/same", ["--once"])
    ok = False
    try:
        assert f.wait(60) == 0, f.log()[-1500:]
        assert rows(P) == PAGE * PAGES, rows(P)
        got = seen[("A", "/data")]
        assert len(got) == PAGES + 1 and all(h.get(KEY) == KEY_VALUE for h in got), got
        ok = True
    finally:
        close(P, ok)


def other_origin_refused():
    seen.clear()
    P, f = run("refused", f"http://127.0.0.1:{ports['A']}/away", ["--once"])
    ok = False
    try:
        rc = f.wait(60)
        assert rc == 1, (rc, f.log()[-1500:])
        text = f.log() + f.out()
        assert "another origin" in text and str(ports["B"]) in text, text[-1500:]
        assert not seen[("B", "/data")], "the other origin was contacted"
        ok = True
    finally:
        close(P, ok)


def other_origin_followed():
    seen.clear()
    src = f"http://reader:{URL_PASSWORD}@127.0.0.1:{ports['A']}/away"
    P, f = run("followed", src, ["--http-follow-redirects"])
    ok = False
    try:
        wait_until(lambda: (status(f) or {}).get("job", {}).get("complete"), 60, interval=0.2,
                   what="job complete")
        assert rows(P) == PAGE * PAGES, rows(P)
        away = seen[("A", "/away")]
        assert away and all(h.get(KEY) == KEY_VALUE for h in away), away
        assert all(h.get("Authorization", "").startswith("Basic ") for h in away), away
        assert base64.b64decode(away[0]["Authorization"][6:]).decode() == f"reader:{URL_PASSWORD}"
        got = seen[("B", "/data")]
        assert len(got) == PAGES + 1, got
        for h in got:
            assert KEY not in h and KEY.lower() not in {k.lower() for k in h}, h
            assert "Authorization" not in h, h
        # The URL's password: not in /status, not in any log, not in the
        # ledger (its description of the source).
        st, body = http_get(f.port, "/status")
        assert st == 200 and URL_PASSWORD not in body, body
        assert "reader:***@" in body, body
        f.stop()
        for path in glob.glob(os.path.join(P.workdir, "*")):
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    data = fh.read()
                assert URL_PASSWORD.encode() not in data, f"password in {path}"
                assert KEY_VALUE.encode() not in data, f"header value in {path}"
        ok = True
    finally:
        close(P, ok)


def old_ledger_row():
    """A ledger written by a build that kept the URL's password in the job's
    source description: resuming the same job is accepted, and the row is
    rewritten without the password."""
    import sqlite3
    seen.clear()
    src = f"http://reader:{URL_PASSWORD}@127.0.0.1:{ports['A']}/same"
    P, f = run("oldrow", src, ["--once"])
    ok = False
    try:
        assert f.wait(60) == 0, f.log()[-1500:]
        con = sqlite3.connect(P.ledger)
        con.execute("UPDATE jobs SET source = replace(source, 'reader:***@', ?)",
                    (f"reader:{URL_PASSWORD}@",))
        con.commit()
        con.close()
        f2 = P.start_fetcher(["--source", src, "--http-header", f"{KEY}: {KEY_VALUE}",
                              "--job", "oldrow", "--once"], name="fetcher-again")
        rc = f2.wait(60)
        assert rc == 0, (rc, f2.log()[-1500:])
        assert 'job "oldrow" complete' in f2.out(), f2.out()[-500:]
        f2.stop()
        con = sqlite3.connect(P.ledger)
        rows = con.execute("SELECT source FROM jobs").fetchall()
        con.close()
        assert rows and all(URL_PASSWORD not in r[0] and "reader:***@" in r[0] for r in rows), rows
        text = f2.log() + f2.out()
        assert URL_PASSWORD not in text, text[-800:]
        ok = True
    finally:
        close(P, ok)


def query_credentials():
    """--source http://HOST/data?api_key=SECRET: the server gets the key,
    nothing the fetcher shows or stores holds it."""
    import sqlite3
    seen.clear()
    queries.clear()
    src = f"http://127.0.0.1:{ports['A']}/data?api_key={QUERY_SECRET}&size={PAGE}"
    P, f = run("querykey", src)
    ok = False
    try:
        wait_until(lambda: (status(f) or {}).get("job", {}).get("complete"), 60, interval=0.2,
                   what="job complete")
        assert rows(P) == PAGE * PAGES, rows(P)
        got = queries[("A", "/data")]
        assert len(got) == PAGES + 1, got
        assert all(parse_qs(q).get("api_key") == [QUERY_SECRET] for q in got), got
        st, body = http_get(f.port, "/status")
        assert st == 200 and QUERY_SECRET not in body, body
        assert "api_key=***" in body, body
        st, body = http_get(f.port, "/metrics")
        assert st == 200 and QUERY_SECRET not in body, body[-1500:]
        f.stop()

        def no_secret_in_files():
            for path in glob.glob(os.path.join(P.workdir, "*")):
                if os.path.isfile(path):
                    with open(path, "rb") as fh:
                        assert QUERY_SECRET.encode() not in fh.read(), f"the key in {path}"

        no_secret_in_files()
        con = sqlite3.connect(P.ledger)
        rows_ = con.execute("SELECT source FROM jobs").fetchall()
        assert rows_ and all("api_key=***&size=" in r[0] for r in rows_), rows_
        # A ledger row from a build that showed the query as it was: the
        # same source, resumed, and the row rewritten without the key.
        con.execute("UPDATE jobs SET source = replace(source, 'api_key=***', ?)",
                    (f"api_key={QUERY_SECRET}",))
        con.commit()
        con.close()
        f2 = P.start_fetcher(["--source", src, "--http-retries", "0", "--job", "querykey",
                              "--once"], name="fetcher-again")
        rc = f2.wait(60)
        assert rc == 0, (rc, f2.log()[-1500:])
        assert 'job "querykey" complete' in f2.out(), f2.out()[-500:]
        f2.stop()
        no_secret_in_files()
        ok = True
    finally:
        close(P, ok)


check("a redirect to the same origin is followed with the custom header", same_origin)
check("a credential in the source URL's query reaches the server and is in no log line, "
      "/status, /metrics or ledger row", query_credentials)
check("a ledger row holding a URL password from an older build: resumed, and rewritten "
      "without it", old_ledger_row)
check("a redirect to another origin is refused, naming it; the other server sees nothing",
      other_origin_refused)
check("--http-follow-redirects: the other origin gets neither the header nor the URL's "
      "credentials; the password is in no log, /status or ledger", other_origin_followed)
for P in failed:
    dump_logs_on_failure(P)
    print(f"logs kept in {P.workdir}")
for s in servers.values():
    s.shutdown()
finish()
