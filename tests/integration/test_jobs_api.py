#!/usr/bin/env python3
"""The job API (docs/jobs.md) against a real `fetcher --serve`, two mappers,
a saver and nats-server: submissions over HTTP (201, 409, 400 naming the
field, 401/403), list/get, pause (no new leases), resume, cancel, two jobs
running at once with exact rows in the saver's database, the same
operations over NATS request/reply, a submitted job that survives a
fetcher killed with -9, and the permissions of deploy/nats/nats-server.conf
(the ops user may use the API subjects, the fetcher may answer them)."""
import json
import os
import time

from harness import (Nats, Pipeline, Proc, api_request, bin_path, check, dump_logs_on_failure,
                     environ_set, finish, free_port, http_get, remove_workdir, tmpdir, wait_until)
from rawnats import RawNats, random_hex

TOKEN = "tok-" + random_hex(32)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE_CONF = os.path.join(ROOT, "deploy", "nats", "nats-server.conf")

# 20 ms per chunk: a job of a few hundred chunks runs for seconds, long
# enough to pause it half-way, short enough for the suite.
P = Pipeline("jobsapi", mappers=2, transform="sleep:20")
TOKEN_FILE = os.path.join(P.workdir, "api-token")
with open(TOKEN_FILE, "w") as fh:
    fh.write(TOKEN + "\n")
FILE_ROOT = os.path.join(P.workdir, "data")
os.makedirs(FILE_ROOT)
with open(os.path.join(FILE_ROOT, "users.ndjson"), "w") as fh:
    for i in range(500):
        fh.write(json.dumps({"uuid": f"u{i}", "fn": "A", "ln": f"B{i}", "friends": []}) + "\n")
with open(os.path.join(P.workdir, "outside.ndjson"), "w") as fh:
    fh.write('{"secret":1}\n')
state = {}


def start_fetcher(ledger=None, token=True, prefix=None, name="fetcher"):
    port = free_port()
    argv = [bin_path("fetcher"), "--nats-url", P.nats.url, "--prefix", prefix or P.prefix,
            "--http", f"127.0.0.1:{port}", "--heartbeat", "200ms", "--serve",
            "--ledger", ledger or P.ledger, "--progress", "0",
            "--api-sources", "gen,file", "--api-file-root", FILE_ROOT]
    if token:
        argv += ["--api-token-file", TOKEN_FILE]
    p = Proc(f"{name}-{port}-{int(time.time() * 1000)}", argv, log_dir=P.workdir)
    p.port = port
    wait_until(lambda: http_get(port, "/readyz")[0] == 200 or not p.alive(), 20,
               what=f"{p.name} /readyz 200")
    assert p.alive(), f"{p.name} exited {p.p.returncode}: {p.log()[-1500:]}"
    return p


def api(method, path, body=None, token=TOKEN, raw=None, port=None):
    """(status, JSON answer) of one HTTP request to the fetcher."""
    return api_request(port or P.fetcher.port, method, path, body, token=token, raw=raw)


def job(name):
    st, j = api("GET", f"/jobs/{name}")
    assert st == 200, (st, j)
    return j


def wait_state(name, want, timeout=120):
    return wait_until(lambda: (lambda j: j if j["state"] == want else None)(job(name)), timeout,
                      interval=0.1, what=f"job {name} {want}")


def rows(name):
    return P.db_query("SELECT count(*), count(DISTINCT chunk || '/' || idx) FROM records "
                      "WHERE job = ?", (name,))[0]


class Requester:
    """NATS request/reply over rawnats: one inbox per request."""

    def __init__(self, port, **auth):
        self.nc = RawNats(port, name="jobs-api-test", **auth)

    def request(self, suffix, obj, prefix=None, timeout=10):
        inbox = f"_INBOX.{random_hex(16)}"
        sid = self.nc.sub(inbox)
        assert self.nc.flush(), "no PONG"
        data = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
        self.nc.pub(f"{prefix or P.prefix}.{suffix}", data, reply=inbox)
        wait_until(lambda: self.nc.count(sid) > 0, timeout, what=f"a reply on {suffix}")
        reply = json.loads(self.nc.last(sid)[0])
        assert set(reply) == {"status", "body"}, reply
        return reply["status"], reply["body"]


def setup():
    P.wait_ready([P.saver] + P.mappers)
    P.fetcher = start_fetcher()


def auth_rules():
    # With --api-token-file every /jobs and /members request needs the token.
    for method, path in (("GET", "/jobs"), ("GET", "/members"), ("GET", "/jobs/x"),
                         ("POST", "/jobs")):
        for tok in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
            st, body = api(method, path, {"job": "a", "source": "gen:users"}
                           if method == "POST" else None, token=tok)
            assert st == 401, (method, path, tok, st, body)
            assert TOKEN not in json.dumps(body)
    # The probes and /status stay open.
    for path in ("/healthz", "/readyz", "/metrics", "/status"):
        assert http_get(P.fetcher.port, path)[0] == 200, path
    # Without --api-token-file: reads open, writes 403 (another prefix: this
    # fetcher is only asked, it gets no mappers).
    other = start_fetcher(ledger=os.path.join(P.workdir, "ledger-open.db"), token=False,
                          prefix=P.prefix + "o", name="fetcher-open")
    try:
        st, body = api("GET", "/jobs", token=None, port=other.port)
        assert st == 200 and body == {"jobs": []}, (st, body)
        st, body = api("POST", "/jobs", {"job": "a", "source": "gen:users"}, token=None,
                       port=other.port)
        assert st == 403, (st, body)
        assert body == {"error": "job API writes are disabled: start the fetcher with "
                                 "--api-token-file"}, body
        st, body = api("GET", "/jobs", token=None, port=other.port)
        assert body == {"jobs": []}, body
    finally:
        other.stop()


def submissions():
    st, a = api("POST", "/jobs", {"job": "a", "source": "gen:users", "records": 20000,
                                  "chunk_size": 100})
    assert st == 201, (st, a)
    assert a["job"] == "a" and a["state"] in ("queued", "running"), a
    st, b = api("POST", "/jobs", {"job": "b", "source": "gen:users", "records": 10000, "seed": 2,
                                  "priority": 2})
    assert st == 201, (st, b)
    st, body = api("POST", "/jobs", {"job": "a", "source": "gen:users"})
    assert st == 409, (st, body)
    assert "exists" in body["error"], body
    # 400 naming the field.
    for sub, want in (({"job": "c", "source": "gen:users", "recrods": 5}, '"recrods"'),
                      ({"job": "c", "source": "gen:users", "chunk_size": 0}, '"chunk_size"'),
                      ({"job": "c/d", "source": "gen:users"}, '"job"'),
                      ({"source": "gen:users"}, '"job"'),
                      ({"job": "c", "source": "ftp://x/y"}, "source:"),
                      ({"job": "c", "source": "gen:users", "http": {"header": "X: y"}},
                       "http.header:")):
        st, body = api("POST", "/jobs", sub)
        assert st == 400 and want in body["error"], (sub, st, body)
    st, body = api("POST", "/jobs", raw=b"{not json")
    assert st == 400 and body["error"].startswith("body:"), (st, body)
    st, body = api("POST", "/jobs", raw=b"{" + b" " * (70 * 1024) + b"}")
    assert st == 413, (st, body)
    # Sources outside --api-sources or --api-file-root: 403.
    for src in ("https://example.invalid/x", f"file:{P.workdir}/outside.ndjson",
                f"file:{FILE_ROOT}/../outside.ndjson", "file:/etc/passwd"):
        st, body = api("POST", "/jobs", {"job": "c", "source": src})
        assert st == 403, (src, st, body)
    st, jobs = api("GET", "/jobs")
    assert st == 200 and [j["job"] for j in jobs["jobs"]] == ["a", "b"], jobs
    st, body = api("GET", "/jobs/nosuch")
    assert st == 404 and "error" in body, (st, body)


def two_jobs_at_once():
    # While both run, both make progress.
    def both_progress():
        ja, jb = job("a"), job("b")
        return (ja["state"] == jb["state"] == "running" and ja["chunks"]["done"] > 0 and
                jb["chunks"]["done"] > 0)
    wait_until(both_progress, 60, interval=0.05, what="jobs a and b both making progress")
    ja = wait_state("a", "complete")
    jb = wait_state("b", "complete")
    assert ja["chunks"]["done"] == 200 and ja["chunks"]["total"] == 200, ja
    assert jb["chunks"]["done"] == 100, jb
    assert ja["records_saved"] == 20000 and jb["records_saved"] == 10000, (ja, jb)
    assert rows("a") == (20000, 20000), rows("a")
    assert rows("b") == (10000, 10000), rows("b")
    # A file: source under the root.
    st, f = api("POST", "/jobs", {"job": "f", "source": f"file:{FILE_ROOT}/users.ndjson",
                                  "chunk_size": 50})
    assert st == 201, (st, f)
    wait_state("f", "complete")
    assert rows("f") == (500, 500), rows("f")


def mapper_inflight():
    """{mapper id: inflight} of GET /members."""
    st, body = api("GET", "/members")
    assert st == 200, (st, body)
    return {m["id"]: m["inflight"] for m in body["members"] if m["role"] == "mapper"}


def pause_resume_cancel():
    st, c = api("POST", "/jobs", {"job": "c", "source": "gen:users", "records": 60000})
    assert st == 201, (st, c)
    wait_until(lambda: job("c")["chunks"]["done"] >= 20, 60, interval=0.05, what="job c started")
    # While c runs (the only job running): what /members says the mappers
    # hold is what the ledger has leased (read before and after it).
    seen = 0
    for _ in range(10):
        before = job("c")["chunks"]["leased"]
        held = sum(mapper_inflight().values())
        after = job("c")["chunks"]["leased"]
        assert held <= max(before, after) + 4, (held, before, after)
        seen = max(seen, held)
        time.sleep(0.05)
    assert seen > 0, "no mapper ever held a chunk of a running job"
    st, c = api("POST", "/jobs/c/pause")
    assert st == 200 and c["state"] == "paused", (st, c)
    st, body = api("POST", "/jobs/c/pause")  # again: the registry may take it as done
    assert st in (200, 409) and job("c")["state"] == "paused", (st, body)
    # Leases in flight finish; then nothing new is leased.
    j = wait_until(lambda: (lambda j: j if j["chunks"]["leased"] == 0 else None)(job("c")), 30,
                   interval=0.05, what="job c's leases in flight to finish")
    done = j["chunks"]["done"]
    assert done < 600, j
    # Paused with no lease: no mapper holds anything (not its --save-window).
    wait_until(lambda: set(mapper_inflight().values()) == {0}, 5, interval=0.1,
               what=f"/members inflight 0 for every mapper (got {mapper_inflight()})")
    time.sleep(1.5)
    j = job("c")
    assert j["state"] == "paused" and j["chunks"]["done"] == done and j["chunks"]["leased"] == 0, \
        (done, j)
    # A paused job never finishes by itself: no ETA (its rate of the last
    # ~10 s is still above 0).
    assert j["eta_s"] is None, j
    assert P.db_query("SELECT count(*) FROM chunks WHERE job='c'")[0][0] == done
    st, c = api("POST", "/jobs/c/resume")
    assert st == 200 and c["state"] == "running", (st, c)
    wait_until(lambda: job("c")["chunks"]["done"] >= done + 20, 60, interval=0.05,
               what="job c progressing again")
    st, c = api("POST", "/jobs/c/cancel")
    assert st == 200 and c["state"] == "cancelled", (st, c)
    j = wait_until(lambda: (lambda j: j if j["chunks"]["leased"] == 0 else None)(job("c")), 30,
                   interval=0.05, what="job c's leases to finish after cancel")
    done = j["chunks"]["done"]
    assert done < 600, j
    time.sleep(1.0)
    j = job("c")
    assert j["state"] == "cancelled" and j["chunks"]["done"] == done, (done, j)
    assert j["eta_s"] is None, j
    st, body = api("POST", "/jobs/c/resume")
    assert st == 409, (st, body)
    # Exactly the chunks the ledger counts as done are saved, each once.
    assert rows("c") == (done * 100, done * 100), (rows("c"), done)
    state["c_done"] = done


def over_nats():
    r = Requester(P.nats.port)
    try:
        st, body = r.request("jobs.list", {})
        assert st == 401, (st, body)
        st, body = r.request("jobs.submit", {"job": "n", "source": "gen:users", "records": 3000,
                                             "token": "wrong"})
        assert st == 401, (st, body)
        st, body = r.request("jobs.submit", {"job": "n", "source": "gen:users", "records": 3000,
                                             "token": TOKEN})
        assert st == 201 and body["job"] == "n", (st, body)
        st, body = r.request("jobs.submit", {"job": "n", "source": "gen:users", "token": TOKEN})
        assert st == 409, (st, body)
        st, body = r.request("jobs.submit", {"job": "n2", "source": "gen:users", "prio": 1,
                                             "token": TOKEN})
        assert st == 400 and '"prio"' in body["error"], (st, body)
        st, body = r.request("jobs.list", {"token": TOKEN})
        assert st == 200 and "n" in [j["job"] for j in body["jobs"]], (st, body)
        st, body = r.request("jobs.get", {"job": "n", "token": TOKEN})
        assert st == 200 and body["job"] == "n", (st, body)
        st, body = r.request("jobs.get", {"job": "nosuch", "token": TOKEN})
        assert st == 404, (st, body)
        wait_until(lambda: r.request("jobs.get", {"job": "n", "token": TOKEN})[1]["state"] ==
                   "complete", 60, interval=0.1, what="job n complete")
        assert rows("n") == (3000, 3000), rows("n")
        st, body = r.request("jobs.resume", {"job": "n", "token": TOKEN})
        assert st == 409, (st, body)
        st, body = r.request("jobs.resume", {"job": "c", "token": TOKEN})
        assert st == 409 and "cancelled" in body["error"], (st, body)
        st, body = r.request("jobs.dead", {"job": "n", "token": TOKEN})
        assert st == 200 and body == {"dead": []}, (st, body)
        st, body = r.request("members", {"token": TOKEN})
        assert st == 200, (st, body)
        roles = sorted(m["role"] for m in body["members"])
        assert roles.count("mapper") == 2 and "saver" in roles, body
        st, body = r.request("status", {})
        assert st == 200 and body["role"] == "fetcher" and body["ready"] is True, (st, body)
        st, body = r.request("jobs.bogus", {"token": TOKEN})
        assert st == 404, (st, body)
        assert not r.nc.errors, r.nc.errors
    finally:
        r.nc.close()


def survives_restart():
    st, body = api("POST", "/jobs", {"job": "r", "source": "gen:users", "records": 40000})
    assert st == 201, (st, body)
    wait_until(lambda: job("r")["chunks"]["done"] >= 20, 60, interval=0.05, what="job r started")
    P.fetcher.kill9()
    P.fetcher = start_fetcher()
    st, jobs = api("GET", "/jobs")
    assert st == 200, (st, jobs)
    states = {j["job"]: j["state"] for j in jobs["jobs"]}
    assert [j["job"] for j in jobs["jobs"]] == ["a", "b", "f", "c", "n", "r"], jobs
    assert states["a"] == "complete" and states["c"] == "cancelled", states
    assert states["r"] in ("running", "queued", "complete"), states
    wait_state("r", "complete")
    assert rows("r") == (40000, 40000), rows("r")
    # The cancelled job was not resumed by the restart.
    time.sleep(0.5)
    assert job("c")["chunks"]["done"] == state["c_done"], job("c")
    assert rows("c") == (state["c_done"] * 100,) * 2


def example_conf_permissions():
    """deploy/nats/nats-server.conf: the fetcher subscribes the API subjects
    and answers (allow_responses); ops may ask; a mapper may not."""
    d = tmpdir("cm-jobsapi-conf-")
    pw = {"fetcher": "f-" + random_hex(8), "mapper": "m-" + random_hex(8),
          "ops": "o-" + random_hex(8), "saver": "s-" + random_hex(8)}
    env = {f"CM_{k.upper()}_PASSWORD": v for k, v in pw.items()}
    with environ_set(env):
        nats = Nats(d, extra=["-c", EXAMPLE_CONF])
    port = free_port()
    f = Proc(f"fetcher-conf-{port}",
             [bin_path("fetcher"), "--nats-url", nats.url, "--prefix", "chunkmill", "--http",
              f"127.0.0.1:{port}", "--heartbeat", "200ms", "--serve", "--ledger",
              os.path.join(d, "ledger.db"), "--progress", "0", "--api-token-file", TOKEN_FILE,
              "--nats-user", "fetcher", "--nats-password", pw["fetcher"]], log_dir=d)
    f.port = port
    try:
        wait_until(lambda: http_get(port, "/readyz")[0] == 200 or not f.alive(), 20,
                   what="the fetcher ready under the example permissions")
        assert f.alive(), f.log()[-1500:]
        ops = Requester(nats.port, user="ops", password=pw["ops"])
        try:
            st, body = ops.request("jobs.submit", {"job": "p", "source": "gen:users",
                                                   "records": 100, "token": TOKEN},
                                   prefix="chunkmill")
            assert st == 201, (st, body)
            st, body = ops.request("jobs.list", {"token": TOKEN}, prefix="chunkmill")
            assert st == 200 and [j["job"] for j in body["jobs"]] == ["p"], (st, body)
            st, body = ops.request("members", {"token": TOKEN}, prefix="chunkmill")
            assert st == 200, (st, body)
            st, body = ops.request("status", {}, prefix="chunkmill")
            assert st == 200 and body["role"] == "fetcher", (st, body)
            assert not ops.nc.errors, ops.nc.errors
        finally:
            ops.nc.close()
        m = RawNats(nats.port, user="mapper", password=pw["mapper"])
        try:
            m.pub("chunkmill.jobs.list", "{}", reply="_INBOX.x")
            m.flush()
            wait_until(lambda: m.errors, 5, what="the server refusing a mapper's API request")
            assert "Permissions Violation" in m.errors[0], m.errors
        finally:
            m.close()
        assert "Permissions Violation" not in f.log(), f.log()[-1500:]
        assert TOKEN not in f.log() + f.out()
    finally:
        f.stop()
        nats.stop()


def token_never_logged():
    for p in [P.fetcher] + P.mappers + [P.saver]:
        assert TOKEN not in p.log() + p.out(), p.name
    for name in os.listdir(P.workdir):
        if name.endswith(".log") or name.endswith(".out"):
            with open(os.path.join(P.workdir, name), errors="replace") as fh:
                assert TOKEN not in fh.read(), name


def bad_api_options_exit_2():
    """A bad --api-token-file, --api-sources or --api-file-root: exit 2 at
    start, naming it (never the token's bytes)."""
    short = os.path.join(P.workdir, "short-token")
    with open(short, "w") as fh:
        fh.write("sekrit-short\n")
    missing = os.path.join(P.workdir, "no-such-token")
    for extra, want in ((["--api-token-file", missing], missing),
                        (["--api-token-file", short], short),
                        (["--api-sources", "gen,ftp"], '"ftp"'),
                        (["--api-file-root", os.path.join(P.workdir, "no-such-dir")],
                         "--api-file-root")):
        port = free_port()
        p = Proc(f"fetcher-bad-{port}",
                 [bin_path("fetcher"), "--nats-url", P.nats.url, "--prefix", P.prefix + "x",
                  "--http", f"127.0.0.1:{port}", "--serve", "--ledger",
                  os.path.join(P.workdir, "ledger-bad.db")] + extra, log_dir=P.workdir)
        rc = p.wait(20)
        assert rc == 2, (extra, rc, p.log()[-500:])
        assert want in p.log(), (extra, p.log()[-500:])
        assert "sekrit-short" not in p.log() + p.out(), p.log()
    assert not os.path.exists(os.path.join(P.workdir, "ledger-bad.db"))


def clean_exit():
    """SIGTERM: the fetcher drains and exits 0 (under ASan also: no leak, no
    sanitizer report)."""
    f = P.fetcher
    rc = f.stop()
    assert rc == 0, (rc, f.log()[-3000:])
    for text in (f.log(), f.out()):
        assert "runtime error:" not in text and "Sanitizer" not in text, text[-3000:]


try:
    check("fetcher --serve with --api-token-file starts", setup)
    check("401 without the token, 403 for writes without --api-token-file", auth_rules)
    check("submit: 201, 409 on the same name, 400 naming the field, 403 for sources", submissions)
    check("two jobs run at once, each saved exactly", two_jobs_at_once)
    check("pause stops new leases, resume continues, cancel is final", pause_resume_cancel)
    check("the same operations over NATS request/reply", over_nats)
    check("a submitted job survives kill -9 of the fetcher", survives_restart)
    check("deploy/nats/nats-server.conf lets ops use the API", example_conf_permissions)
    check("a bad --api-token-file, --api-sources or --api-file-root: exit 2",
          bad_api_options_exit_2)
    check("the token is never logged", token_never_logged)
    check("the fetcher exits 0 on SIGTERM", clean_exit)
finally:
    if __import__("harness")._results["failed"]:
        dump_logs_on_failure(P)
    P.stop_all()
    remove_workdir(P.workdir)
finish()
