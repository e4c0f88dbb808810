#!/usr/bin/env python3
"""The `chunkmill` CLI (issue 14) against a real nats-server and, when it
answers the jobs API, a real `fetcher --serve` with a saver and mappers.

Always run (no fetcher needed):
- the command line: every mistake exits 2 with one line naming it (before
  any connection); a fetcher's CHUNKMILL_SOURCE in the environment is not
  taken for --source; --help per command lists exactly its options; --version;
- NATS unreachable: exit 5, the URL named with its password redacted;
- NATS up, no fetcher: every command exits 5 at once ("no fetcher answers
  P.jobs.list"); a subscriber that never answers: exit 5 after --timeout;
  `watch` keeps trying, says why once, and ends 0 on SIGINT;
- the daemons' NATS options: user/password against
  deploy/nats/nats-server.conf (wrong password refused; a subject the ops
  user may not publish is reported as a permissions violation at once, not
  as a timeout), TLS with client certificates (no certificate: refused).

Then the whole story against a real `fetcher --serve` (it must answer
P.jobs.* within 30 s of being ready, or every part fails): submit --wait (exact rows in the saver's
database), jobs/status/members/dead in text and json, the token (401
without it), 404/409/400 exit codes, pause/resume, watch (plain lines and
a TTY), submit --wait across a fetcher kill -9 and restart, cancel,
--wait-timeout, Ctrl-C during --wait, complete_with_dead
(exit 3, `dead` lists the chunk), P.status, redo --version --wait, and the
ops user of deploy/nats/nats-server.conf as the CLI's identity.
"""
import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import time

from harness import (BIN_DIR, Nats, Pipeline, Proc, bin_path, check, environ_set, finish,
                     free_port, http_get, remove_workdir, tmpdir, wait_until)
from rawnats import RawNats

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.path.join(BIN_DIR, "cli", "chunkmill")
EXAMPLE_CONF = os.path.join(ROOT, "deploy", "nats", "nats-server.conf")
WORK = tmpdir("cm-cli-jobs-")
COMMANDS = ["jobs", "submit", "status", "pause", "resume", "cancel", "replay-dead", "redo",
            "members", "dead", "watch"]
GLOBAL_OPTS = ["nats-url", "prefix", "nats-user", "nats-password", "nats-token", "nats-creds",
               "nats-ca", "nats-cert", "nats-key", "timeout", "api-token-file", "output"]
COMMAND_OPTS = {
    "submit": ["source", "records", "seed", "chunk-size", "priority", "max-deliver",
               "http-options", "wait", "interval", "wait-timeout"],
    "redo": ["version", "wait", "interval", "wait-timeout"],
    "watch": ["interval"],
}
TOKEN = "cli-test-token-R4nd0m"
DEAD_INDEX = 400
PASSWORDS = {"fetcher": "fetcher-pw-Cl1", "mapper": "mapper-pw-Cl2", "saver": "saver-pw-Cl3",
             "ops": "ops-pw-Cl4"}


def clean_env(extra=None):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("CHUNKMILL_") and k != "NATS_URL"}
    e.update(extra or {})
    return e


def cli(*args, env=None, timeout=60):
    """Runs chunkmill; returns (exit code, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    r = subprocess.run([CLI, *args], env=clean_env(env), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout)
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"), time.monotonic() - t0)


def one_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got {err!r}"
    return lines[0]


# ---- the command line --------------------------------------------------------

def usage_errors():
    unreachable = f"nats://127.0.0.1:{free_port()}"
    empty = os.path.join(WORK, "empty-token")
    open(empty, "w").close()
    cases = [
        ([], "no command given"),
        (["frobnicate"], 'unknown command "frobnicate"'),
        (["submit"], "missing the job name"),
        (["submit", "j"], "--source is required"),
        (["submit", "j", "--source", "gen:users", "--records", "many"],
         'invalid value "many" for --records: not an integer'),
        (["submit", "j", "--source", "gen:users", "--priority", "0"],
         "--priority: out of range (1..1000)"),
        (["submit", "j", "--source", "gen:users", "--http-options", "[1]"],
         "--http-options: not a JSON object"),
        (["submit", "j", "k", "--source", "gen:users"], 'unexpected argument "k"'),
        (["--records", "5", "submit", "j"], "--records is an option of a command"),
        (["jobs", "--bogus"], "unknown option --bogus"),
        (["jobs", "-x"], "unknown option -x"),
        (["jobs", "--output", "yaml"], 'invalid value "yaml" for --output: not one of text|json'),
        (["jobs", "--timeout", "soon"], 'invalid value "soon" for --timeout'),
        (["jobs", "--nats-url", "nats://a:1,,nats://b:2"], "empty server URL in the list"),
        (["jobs", "--nats-ca", os.path.join(WORK, "no-such-ca.pem")], "--nats-ca"),
        (["redo", "j"], "--version is required"),
        (["redo", "j", "--version"], "missing value for --version"),
        (["pause"], "missing the job name"),
        (["members", "x"], 'unexpected argument "x"'),
        (["jobs", "--api-token-file", os.path.join(WORK, "no-such-token")],
         "cannot read --api-token-file"),
        (["jobs", "--api-token-file", empty], "is empty"),
        (["jobs", "--prefix"], "missing value for --prefix"),
    ]
    for args, want in cases:
        # Global options go anywhere: first, so a missing value stays missing.
        rc, out, err, _ = cli("--nats-url", unreachable, *args)
        assert rc == 2, f"chunkmill {args}: exit {rc}, want 2: {err!r}"
        line = one_line(err)
        assert want in line, f"chunkmill {args}: {line!r} does not say {want!r}"
        assert line.startswith("chunkmill"), line
        assert out == "", f"chunkmill {args} printed on stdout: {out!r}"
    # A fetcher's job settings in the environment are not a submission.
    rc, _, err, _ = cli("submit", "j", env={"CHUNKMILL_SOURCE": "gen:users",
                                            "CHUNKMILL_NATS_URL": unreachable})
    assert rc == 2 and "--source is required" in err, (rc, err)


def help_and_version():
    rc, out, err, _ = cli("--version")
    assert rc == 0 and re.fullmatch(r"chunkmill \d+\.\d+\.\d+\n", out), (rc, out, err)
    rc, out, err, _ = cli("--help")
    assert rc == 0 and out.startswith("chunkmill - "), (rc, out[:200])
    for c in COMMANDS:
        assert re.search(rf"^  {re.escape(c)}\b", out, re.M), f"--help does not list {c}"
    for o in GLOBAL_OPTS:
        assert f"  --{o} " in out, f"--help does not list --{o}"
    assert "Exit codes:" in out and re.search(r"^  5 ", out, re.M)
    # Every placeholder a summary line names is in its usage (redo's V).
    assert re.search(r"^  redo NAME .*--version V", out, re.M), out
    for c in COMMANDS:
        for form in ([c, "--help"], ["--help", c], [c, "-h"]):
            rc, out, err, _ = cli(*form)
            assert rc == 0 and err == "", (form, rc, err)
            assert out.startswith(f"chunkmill {c} - "), (form, out[:100])
            assert f"Usage: chunkmill [GLOBAL OPTIONS] {c}" in out, (form, out[:300])
            listed = re.findall(r"^  --([a-z-]+)", out, re.M)
            want = COMMAND_OPTS.get(c, []) + GLOBAL_OPTS
            assert sorted(listed) == sorted(want), f"{c} --help lists {listed}, want {want}"
    # Command options are flag only; global ones have their variable.
    rc, out, _, _ = cli("submit", "--help")
    assert re.search(r"--records N .*\(flag only\)", out), out
    assert "CHUNKMILL_RECORDS" not in out
    assert "(env CHUNKMILL_NATS_URL or NATS_URL, default: nats://127.0.0.1:4222)" in out


def nats_unreachable():
    port = free_port()
    url = f"nats://ops:s3cret-pw@127.0.0.1:{port}"
    for args in (["jobs"], ["status", "x"], ["submit", "x", "--source", "gen:users", "--wait"],
                 ["watch"]):
        rc, out, err, secs = cli(*args, "--nats-url", url, timeout=30)
        assert rc == 5, f"{args}: exit {rc}, want 5: {err!r}"
        line = one_line(err)
        assert f"cannot connect to NATS at nats://ops:***@127.0.0.1:{port}" in line, line
        assert "s3cret-pw" not in err + out
        assert secs < 10, f"{args} took {secs:.1f}s"


def no_fetcher():
    d = os.path.join(WORK, "nofetcher")
    os.makedirs(d)
    nats = Nats(d)
    try:
        for args, subject in ((["jobs"], "chunkmill.jobs.list"),
                              (["status"], "chunkmill.status"),
                              (["status", "x"], "chunkmill.jobs.get"),
                              (["submit", "x", "--source", "gen:users"], "chunkmill.jobs.submit"),
                              (["pause", "x"], "chunkmill.jobs.pause"),
                              (["replay-dead", "x"], "chunkmill.jobs.replay-dead"),
                              (["redo", "x", "--version", "v1"], "chunkmill.jobs.redo"),
                              (["members"], "chunkmill.members"),
                              (["dead", "x", "--output", "json"], "chunkmill.jobs.dead")):
            rc, out, err, secs = cli(*args, "--nats-url", nats.url, "--timeout", "20s")
            assert rc == 5, f"{args}: exit {rc}, want 5: {err!r}"
            line = one_line(err)
            assert f"no fetcher answers {subject}" in line, line
            assert secs < 5, f"{args}: {secs:.1f}s: no responders must not wait for --timeout"
            assert out == ""
        rc, _, err, _ = cli("jobs", "--nats-url", nats.url, "--prefix", "other")
        assert rc == 5 and "no fetcher answers other.jobs.list" in err, (rc, err)

        # watch keeps trying, says why once, ends 0 on Ctrl-C.
        p = Proc(f"watch-{free_port()}", [CLI, "watch", "--nats-url", nats.url,
                                         "--interval", "200ms"], env=clean_env(), log_dir=d)
        time.sleep(1.5)
        assert p.alive(), f"watch exited {p.p.returncode}: {p.log()}"
        p.signal(signal.SIGINT)
        rc = p.wait(10)
        assert rc == 0, f"watch after SIGINT: exit {rc}: {p.log()}"
        text = p.out()
        assert text.count("no fetcher answers chunkmill.jobs.list") == 1, text
        # Something subscribes but never answers: --timeout bounds the wait.
        silent = RawNats(nats.port, name="silent")
        try:
            silent.sub("chunkmill.jobs.list")
            silent.flush()
            rc, out, err, secs = cli("jobs", "--nats-url", nats.url, "--timeout", "700ms")
            assert rc == 5, (rc, err)
            assert "no answer on chunkmill.jobs.list within 0.7 s" in one_line(err), err
            assert 0.6 <= secs < 10, secs
        finally:
            silent.close()

    finally:
        nats.stop()


def conf_with(port, text=None):
    text = text if text is not None else open(EXAMPLE_CONF).read()
    text = re.sub(r"(?m)^listen: .*$", f"listen: 127.0.0.1:{port}", text)
    return re.sub(r"(?m)^http: .*$", "", text)


def start_auth_nats(name):
    d = os.path.join(WORK, name)
    os.makedirs(d)
    port = free_port()
    conf = os.path.join(d, "nats-server.conf")
    with open(conf, "w") as f:
        f.write(conf_with(port))
    env = {f"CM_{k.upper()}_PASSWORD": v for k, v in PASSWORDS.items()}
    with environ_set(env):
        return Nats(d, port=port, extra=["-c", conf]), d


def nats_auth():
    nats, _ = start_auth_nats("auth")
    try:
        rc, out, err, _ = cli("jobs", "--nats-url", nats.url, "--nats-user", "ops",
                              "--nats-password", "wrong-pw-Cl9")
        assert rc == 5 and "Authorization Violation" in one_line(err), (rc, err)
        assert "wrong-pw-Cl9" not in err
        # The password from the environment, as in the manifests.
        env = {"CHUNKMILL_NATS_USER": "ops", "CHUNKMILL_NATS_PASSWORD": PASSWORDS["ops"],
               "NATS_URL": nats.url}
        # ops may publish only chunkmill.*: a refusal is reported at once,
        # with the server's words, not as a missing fetcher.
        rc, out, err, secs = cli("jobs", "--prefix", "other", "--timeout", "20s", env=env)
        assert rc == 5, (rc, err)
        line = one_line(err)
        assert 'Permissions Violation for Publish to "other.jobs.list"' in line, line
        assert secs < 5, secs
        # Connected as ops (P.status is allowed to ops): no fetcher yet.
        rc, out, err, _ = cli("status", env=env)
        assert rc == 5 and "no fetcher answers chunkmill.status" in err, (rc, err)
    finally:
        nats.stop()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def nats_tls():
    d = os.path.join(WORK, "tls")
    os.makedirs(d)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cli test ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, cn, usage, san in (("server", "127.0.0.1", "serverAuth", "IP:127.0.0.1"),
                                 ("client", "cli", "clientAuth", None)):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
               f"extendedKeyUsage={usage}"] + ([f"subjectAltName={san}"] if san else [])
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write("\n".join(ext) + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                f"{name}.ext", cwd=d)
    port = free_port()
    conf = os.path.join(d, "nats.conf")
    with open(conf, "w") as f:
        f.write(f'listen: 127.0.0.1:{port}\ntls {{\n  cert_file: "{d}/server.pem"\n'
                f'  key_file: "{d}/server.key"\n  ca_file: "{d}/ca.pem"\n  verify: true\n'
                f'  timeout: 2\n}}\n')
    nats = Nats(d, port=port, extra=["-c", conf])
    try:
        url = f"tls://127.0.0.1:{port}"
        rc, _, err, _ = cli("jobs", "--nats-url", url, "--nats-ca", f"{d}/ca.pem",
                            "--nats-cert", f"{d}/client.pem", "--nats-key", f"{d}/client.key")
        # Connected (TLS and the client certificate accepted): nobody answers.
        assert rc == 5 and "no fetcher answers chunkmill.jobs.list" in err, (rc, err)
        rc, _, err, _ = cli("jobs", "--nats-url", url, "--nats-ca", f"{d}/ca.pem")
        assert rc == 5 and "cannot connect to NATS" in one_line(err), (rc, err)
        rc, _, err, _ = cli("jobs", "--nats-url", url, "--nats-cert", f"{d}/client.pem")
        assert rc == 2 and "--nats-cert/--nats-key" in one_line(err), (rc, err)
    finally:
        nats.stop()


# ---- the story, against a real fetcher --serve --------------------------------

def db_rows(pl, sql, args=()):
    con = sqlite3.connect(pl.db, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def exact_rows(pl, job, chunks, per_chunk):
    got = dict(db_rows(pl, "SELECT chunk, count(*) FROM records WHERE job = ? GROUP BY chunk",
                       (job,)))
    want = {i: per_chunk for i in range(chunks)}
    assert got == want, f"job {job}: rows per chunk {got}, want {want}"
    n = db_rows(pl, "SELECT count(*), count(DISTINCT chunk || '/' || idx) FROM records "
                    "WHERE job = ?", (job,))[0]
    assert n == (chunks * per_chunk,) * 2, n


class Story:
    def __init__(self):
        self.pl = None
        self.base = []
        self.skip = None  # why the story cannot run (each part then fails)

    def start(self):
        d = os.path.join(WORK, "story")
        os.makedirs(d)
        # Chunk DEAD_INDEX of every job fails: only "deadly" is that long.
        self.pl = Pipeline("cli-jobs", mappers=2, transform=f"fail:{DEAD_INDEX}",
                           extra_mapper=["--version-label", "v1"], workdir=d)
        token = os.path.join(d, "api.token")
        with open(token, "w") as f:
            f.write(TOKEN + "\n")
        self.token = token
        f = self.start_fetcher()
        self.pl.wait_ready([self.pl.saver] + self.pl.mappers + [f])
        self.base = ["--nats-url", self.pl.nats.url, "--prefix", self.pl.prefix,
                     "--api-token-file", token]
        last = []

        def answers():
            rc, out, err, _ = cli("jobs", *self.base)
            last[:] = [rc, err.strip()]
            return rc == 0
        try:
            wait_until(answers, 30, what="the fetcher answering P.jobs.list")
        except AssertionError:
            # Every part of the story then fails with this reason: the job
            # service is part of the fetcher, never skipped.
            self.skip = f"the fetcher does not answer {self.pl.prefix}.jobs.list: exit {last}"

    def start_fetcher(self):
        port = free_port()
        f = Proc(f"fetcher-{port}", [
            bin_path("fetcher"), "--serve", "--nats-url", self.pl.nats.url, "--prefix",
            self.pl.prefix, "--http", f"127.0.0.1:{port}", "--heartbeat", "200ms", "--ledger",
            self.pl.ledger, "--api-token-file", self.token, "--max-deliver", "5"],
            env=clean_env(), log_dir=self.pl.workdir)
        f.port = port
        self.pl.fetcher = f
        return f

    def run(self, *args, **kw):
        return cli(*args, *self.base, **kw)

    def json(self, *args):
        rc, out, err, _ = self.run(*args, "--output", "json")
        assert rc == 0, f"{args}: exit {rc}: {err}"
        return json.loads(out)

    def stop(self):
        if self.pl:
            self.pl.stop_all()


S = Story()


def story(name, fn):
    def unanswered():
        raise AssertionError(S.skip)
    check(name, unanswered if S.skip else fn)


def submit_wait():
    rc, out, err, _ = S.run("submit", "small", "--source", "gen:users", "--records", "1000",
                            "--chunk-size", "100", "--priority", "3", "--wait",
                            "--interval", "200ms", timeout=120)
    assert rc == 0, f"submit --wait: exit {rc}: {err}"
    assert "job small submitted" in out and re.search(r"^state: +complete$", out, re.M), out
    assert re.search(r"small complete .*10/10 chunks, 1000 records", err), err
    exact_rows(S.pl, "small", 10, 100)
    # Submitting it again: 409, exit 1.
    rc, out, err, _ = S.run("submit", "small", "--source", "gen:users")
    assert rc == 1 and "small" in err and "409" in err, (rc, err)
    # A source kind the API refuses: 400, exit 2, the field named.
    rc, out, err, _ = S.run("submit", "bad", "--source", "ftp://example.com/x")
    assert rc == 2 and "source" in err and "400" in err, (rc, err)


def reads():
    body = S.json("jobs")
    small = [j for j in body["jobs"] if j["job"] == "small"]
    assert len(small) == 1, body
    j = small[0]
    assert j["state"] == "complete" and j["priority"] == 3, j
    assert j["chunks"]["total"] == 10 and j["chunks"]["done"] == 10, j
    assert j["chunks"]["dead"] == 0 and j["records_saved"] == 1000, j
    rc, out, err, _ = S.run("jobs")
    assert rc == 0, err
    assert re.search(r"^JOB +STATE +PRIORITY +CHUNKS", out, re.M), out
    assert re.search(r"^small +complete +3 +10/10 +100\.0% +0 +1000 ", out, re.M), out

    got = S.json("status", "small")
    assert got["job"] == "small" and got["state"] == "complete", got
    assert got["chunks"] == j["chunks"] and got["records_saved"] == 1000, got
    rc, out, err, _ = S.run("status", "small")
    assert rc == 0 and re.search(r"^chunks: +10 total, 10 done, 0 leased, 0 pending, 0 dead$",
                                 out, re.M), out
    assert re.search(r"^records: +1000 saved", out, re.M), out

    members = S.json("members")["members"]
    roles = sorted(m["role"] for m in members)
    assert roles.count("mapper") == 2 and "saver" in roles and "fetcher" in roles, members
    mappers = [m for m in members if m["role"] == "mapper"]
    assert all(m["version"] == "v1" for m in mappers), mappers
    rc, out, err, _ = S.run("members")
    assert rc == 0 and re.search(r"^ID +ROLE +VERSION +INFLIGHT +HEARTBEAT +INSTANCE", out, re.M)
    for m in mappers:
        assert re.search(rf"^{re.escape(m['id'])} +mapper +v1 ", out, re.M), out

    assert S.json("dead", "small") == {"dead": []}
    rc, out, _, _ = S.run("dead", "small")
    assert rc == 0 and out.strip() == "no dead chunks in job small", out

    # P.status: the fetcher's /status document.
    st = S.json("status")
    code, text = http_get(S.pl.fetcher.port, "/status")
    assert code == 200 and sorted(st) == sorted(json.loads(text)), (sorted(st), text[:300])

    # Not found: exit 4.
    for args in (["status", "nosuch"], ["pause", "nosuch"], ["dead", "nosuch"]):
        rc, _, err, _ = S.run(*args)
        assert rc == 4 and "nosuch" in err, (args, rc, err)


def token():
    no = [a for a in S.base if a not in ("--api-token-file", S.token)]
    rc, out, err, _ = cli("jobs", *no)
    assert rc == 1 and "401" in err and "--api-token-file" in err, (rc, err)
    wrong = os.path.join(S.pl.workdir, "wrong.token")
    with open(wrong, "w") as f:
        f.write("not-the-token\n")
    rc, out, err, _ = cli("pause", "small", *no, "--api-token-file", wrong, "--output", "json")
    assert rc == 1 and "401" in err, (rc, err)
    assert "error" in json.loads(out), out
    assert TOKEN not in out + err
    # A 403 with the right token is about the request (here: file: sources
    # are off through the API), not the token: no hint to check the token.
    rc, out, err, _ = S.run("submit", "nofile", "--source", "file:/etc/hostname")
    assert rc == 1 and "403" in err and "file" in err, (rc, err)
    assert "token" not in err, err


def pause_resume_watch():
    rc, out, err, _ = S.run("submit", "big", "--source", "gen:users", "--records", "200000",
                            "--chunk-size", "1000")
    assert rc == 0, err
    rc, out, err, _ = S.run("pause", "big")
    assert rc == 0 and out.strip() == "job big: paused", (rc, out, err)
    assert S.json("status", "big")["state"] == "paused"
    # Leases in flight finish (slowly under ASan), then nothing moves.
    before = wait_until(lambda: (lambda c: c if c["leased"] == 0 else None)(
        S.json("status", "big")["chunks"]), 60, interval=0.2, what="big: no lease in flight")
    time.sleep(1.5)
    after = S.json("status", "big")["chunks"]
    assert after == before, f"paused job moved: {before} -> {after}"
    assert after["done"] < 200, after
    rc, out, err, _ = S.run("resume", "big")
    assert rc == 0 and out.strip() == "job big: running", (rc, out, err)
    # watch NAME, plain lines (no TTY): ends when the job is complete.
    rc, out, err, _ = S.run("watch", "big", "--interval", "300ms", timeout=180)
    assert rc == 0, f"watch big: exit {rc}: {err}"
    lines = out.splitlines()
    assert any(re.search(r"Z big complete .*200/200 chunks, 200000 records", x) for x in lines), \
        out[-600:]
    assert any(re.search(r"Z members: fetcher 1, mapper 2, saver 1$", x) for x in lines), \
        out[-600:]
    exact_rows(S.pl, "big", 200, 1000)


def wait_through_restart():
    """submit --wait goes on waiting while the fetcher is killed and
    restarted (a Recreate rollout): exit 0, the job exact."""
    p = Proc(f"wait-restart-{free_port()}", [
        CLI, "submit", "restart", "--source", "gen:users", "--records", "100000",
        "--chunk-size", "1000", "--wait", "--interval", "200ms", *S.base],
        env=clean_env(), log_dir=S.pl.workdir)
    def under_way():
        # The CLI may not have submitted yet: "no job" (exit 4) is "not yet".
        rc, out, _, _ = S.run("status", "restart", "--output", "json")
        return not p.alive() or (rc == 0 and json.loads(out)["chunks"]["done"] >= 10)
    wait_until(under_way, 60, what="job restart under way")
    assert p.alive(), (p.p.returncode, p.log())
    # Paused, so that a fast run cannot finish the job before the kill (a
    # paused job stays paused across the restart).
    rc, out, err, _ = S.run("pause", "restart")
    assert rc == 0, (rc, out, err)
    S.pl.fetcher.kill9()
    time.sleep(1.0)  # the CLI meets no fetcher meanwhile
    f = S.start_fetcher()
    S.pl.wait_ready([f])
    rc, out, err, _ = S.run("resume", "restart")
    assert rc == 0, (rc, out, err)
    rc = p.wait(180)
    assert rc == 0, f"submit --wait across a fetcher restart: exit {rc}: {p.log()[-800:]}"
    assert "still waiting" in p.log(), p.log()[-800:]
    assert re.search(r"^state: +complete$", p.out(), re.M), p.out()
    exact_rows(S.pl, "restart", 100, 1000)


def watch_tty():
    """On a terminal the view is redrawn in place, with bars."""
    master, slave = pty.openpty()
    p = subprocess.Popen([CLI, "watch", "small", *S.base], stdin=slave, stdout=slave,
                         stderr=slave, env=clean_env(), close_fds=True)
    os.close(slave)
    buf = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
            elif p.poll() is not None:
                break
        rc = p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        os.close(master)
    text = buf.decode("utf-8", "replace")
    assert rc == 0, (rc, text[-500:])
    assert "\x1b[H" in text and "\x1b[K" in text, repr(text[:300])
    assert "small complete [" + "#" * 30 + "] 100.0% 10/10 chunks" in text, repr(text[-800:])
    assert re.search(r"ID +ROLE +VERSION", text), repr(text[-800:])


def cancel_and_wait_timeout():
    rc, out, err, secs = S.run("submit", "huge", "--source", "gen:users", "--records",
                               "50000000", "--wait", "--wait-timeout", "1500ms", "--interval",
                               "200ms", timeout=60)
    assert rc == 6, f"--wait-timeout: exit {rc}: {err}"
    assert "still running after --wait-timeout" in err and secs < 20, (err, secs)
    rc, out, err, _ = S.run("cancel", "huge")
    assert rc == 0 and out.strip() == "job huge: cancelled", (rc, out, err)
    rc, out, err, _ = S.run("resume", "huge")
    assert rc == 1 and "409" in err, (rc, err)
    # watch of a finished (cancelled) job ends at once with its exit code.
    rc, out, err, _ = S.run("watch", "huge")
    assert rc == 1 and "huge cancelled" in out, (rc, out, err)
    # Ctrl-C during --wait: 130, the job goes on.
    p = Proc(f"wait-{free_port()}", [CLI, "submit", "huge2", "--source", "gen:users",
                                    "--records", "50000000", "--wait", *S.base],
             env=clean_env(), log_dir=S.pl.workdir)
    wait_until(lambda: "submitted" in p.out(), 20, what="huge2 submitted")
    p.signal(signal.SIGINT)
    rc = p.wait(10)
    assert rc == 130 and "goes on" in p.log(), (rc, p.log())
    assert S.json("status", "huge2")["state"] == "running"
    rc, _, err, _ = S.run("cancel", "huge2")
    assert rc == 0, err


def with_dead():
    chunks = DEAD_INDEX + 1
    rc, out, err, _ = S.run("submit", "deadly", "--source", "gen:users", "--records",
                            str(chunks * 10), "--chunk-size", "10", "--max-deliver", "2",
                            "--wait", "--output", "json", timeout=180)
    assert rc == 3, f"complete_with_dead: exit {rc}: {err}"
    job = json.loads(out)
    assert job["state"] == "complete_with_dead" and job["chunks"]["dead"] == 1, job
    dead = S.json("dead", "deadly")["dead"]
    assert [d["index"] for d in dead] == [DEAD_INDEX] and dead[0]["attempts"] == 2, dead
    assert "fails on purpose" in dead[0]["reason"], dead
    rc, out, _, _ = S.run("dead", "deadly")
    assert rc == 0 and re.search(rf"^ +{DEAD_INDEX} +2 +.*fails on purpose", out, re.M), out
    got = dict(db_rows(S.pl, "SELECT chunk, count(*) FROM records WHERE job = 'deadly' "
                             "GROUP BY chunk"))
    assert got == {i: 10 for i in range(DEAD_INDEX)}, got


def redo():
    """Mappers v1 made "small"; with mappers v2, redo v1: every chunk is v2."""
    for m in S.pl.mappers:
        m.stop()
    S.pl.mappers = []
    S.pl.extra_mapper = ["--version-label", "v2"]
    S.pl.transform = "identity"
    for _ in range(2):
        S.pl.start_mapper()
    S.pl.wait_ready(S.pl.mappers)
    rc, out, err, _ = S.run("redo", "small", "--version", "v1", "--wait", timeout=120)
    assert rc == 0, f"redo --wait: exit {rc}: {err}"
    assert "job small: 10 chunks saved by version v1 are redone" in out, out
    job = S.json("status", "small")
    assert job["state"] == "complete", job
    assert job["redo"]["version"] == "v1" and job["redo"]["done"] == 10, job
    exact_rows(S.pl, "small", 10, 100)
    versions = db_rows(S.pl, "SELECT DISTINCT version FROM chunks WHERE job = 'small'")
    assert versions == [("v2",)], versions
    # Again: no chunk is v1's any more, and a version no mapper had (a typo)
    # neither: refused (409, exit 1) naming the version, never "redone".
    for v in ("v1", "v9"):
        rc, out, err, _ = S.run("redo", "small", "--version", v)
        assert rc == 1 and "409" in err and f"version {v}" in err, (v, rc, out, err)
        assert "redone" not in out, (v, out)
    job2 = S.json("status", "small")
    assert job2["redo"] == job["redo"] and job2["state"] == "complete", job2


def ops_identity():
    """deploy/nats/nats-server.conf: the fetcher as user fetcher, the CLI as
    user ops. The ops user must be allowed the job API."""
    nats, d = start_auth_nats("ops")
    f = None
    try:
        port = free_port()
        f = Proc(f"fetcher-ops-{port}", [
            bin_path("fetcher"), "--serve", "--nats-url", nats.url, "--http",
            f"127.0.0.1:{port}", "--nats-user", "fetcher", "--ledger",
            os.path.join(d, "ledger.db"), "--api-token-file", S.token],
            env=clean_env({"CHUNKMILL_NATS_PASSWORD": PASSWORDS["fetcher"]}), log_dir=d)
        wait_until(lambda: http_get(port, "/readyz")[0] == 200 or not f.alive(), 20,
                   what="fetcher /readyz")
        assert f.alive(), f.log()[-800:]
        env = {"CHUNKMILL_NATS_USER": "ops", "CHUNKMILL_NATS_PASSWORD": PASSWORDS["ops"]}
        for args in (["jobs"], ["members"], ["status"],
                     ["submit", "opsjob", "--source", "gen:users", "--records", "100"],
                     ["pause", "opsjob"]):
            rc, out, err, _ = cli(*args, "--nats-url", nats.url, "--api-token-file", S.token,
                                  "--output", "json", env=env)
            assert rc == 0, f"as ops: {args}: exit {rc}: {err}"
        assert "Permissions Violation" not in f.log(), f.log()[-800:]
    finally:
        if f:
            f.stop()
        nats.stop()


check("command-line errors exit 2 with one clear line", usage_errors)
check("--help per command, --version", help_and_version)
check("NATS unreachable: exit 5, password redacted", nats_unreachable)
check("no fetcher: exit 5 at once; silent subscriber: --timeout; watch keeps trying",
      no_fetcher)
check("NATS user/password of deploy/nats/nats-server.conf; permission refusals", nats_auth)
check("NATS TLS with a client certificate", nats_tls)

try:
    S.start()
    story("submit --wait: exact rows; 409, 400", submit_wait)
    story("jobs, status, members, dead, P.status in text and json; 404", reads)
    story("the API token: 401 without or with a wrong one", token)
    story("pause stops progress, resume, watch NAME until complete", pause_resume_watch)
    story("submit --wait through a fetcher kill -9 and restart", wait_through_restart)
    story("watch on a TTY: redrawn in place with bars", watch_tty)
    story("cancel, --wait-timeout (exit 6), Ctrl-C during --wait (exit 130)",
          cancel_and_wait_timeout)
    story("complete_with_dead: exit 3, dead lists the chunk", with_dead)
    story("redo --version v1 --wait with v2 mappers", redo)
    story("the ops NATS user is the CLI's identity", ops_identity)
finally:
    S.stop()
    remove_workdir(WORK)
finish()
