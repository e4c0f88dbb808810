#!/usr/bin/env python3
"""Secrets never leak (issue 11): all three daemons started with
  - a password in the NATS URL (nats://user:PASSWORD@host, alone and in a
    URL list), under deploy/nats/nats-server.conf,
  - a token in the NATS URL (nats://TOKEN@host) against a token server,
  - a creds file (a JWT and an nkey seed) that the server refuses,
run a job where they can; no log line, /status or /metrics body holds a
password, token, JWT or seed, and the URLs are shown with "***".
"""
import os
import shutil
import sqlite3
import tempfile

from harness import (Nats, Proc, bin_path, check, finish, free_port, http_get, log_lines,
                     remove_workdir, wait_until)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE_CONF = os.path.join(ROOT, "deploy", "nats", "nats-server.conf")
WORK = tempfile.mkdtemp(prefix="cm-secrets-")
PASSWORDS = {"fetcher": "fetcher-url-pw-P4s8", "mapper": "mapper-url-pw-W2e6",
             "saver": "saver-url-pw-Q9r1", "ops": "ops-url-pw-T3y7"}
TOKEN = "url-token-Z5x0c2"
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzZWNyZXQtand0LXBheWxvYWQifQ.c2ln"
SEED = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
SECRETS = list(PASSWORDS.values()) + [TOKEN, JWT, SEED]
RECORDS = 3000
procs = []


def daemon(role, url, d, extra=()):
    port = free_port()
    p = Proc(f"{role}-{port}", [bin_path(role), "--nats-url", url, "--http", f"127.0.0.1:{port}",
                                "--heartbeat", "200ms"] + list(extra), log_dir=d)
    p.port = port
    procs.append(p)
    return p


def bodies(p):
    out = []
    for path in ("/status", "/metrics", "/readyz"):
        st, body = http_get(p.port, path, timeout=1)
        out.append(body or "")
    return "".join(out)


def job(d, url_for, name):
    db = os.path.join(d, "results.db")
    saver = daemon("saver", url_for("saver"), d, ["--db", db])
    mappers = [daemon("mapper", url_for("mapper"), d, ["--id", f"{name}-m{i}"]) for i in range(2)]
    seen = ""
    try:
        for p in [saver] + mappers:
            wait_until(lambda p=p: http_get(p.port, "/readyz")[0] == 200 or not p.alive(), 20,
                       what=f"{p.name} ready")
            assert p.alive(), p.log()[-800:]
            seen += bodies(p)
        f = daemon("fetcher", url_for("fetcher"), d,
                   ["--records", str(RECORDS), "--job", name, "--ledger",
                    os.path.join(d, "ledger.db")])
        wait_until(lambda: '"complete":true' in (http_get(f.port, "/status")[1] or ""), 60,
                   what="job complete")
        seen += bodies(f)
        con = sqlite3.connect(db)
        assert con.execute("SELECT count(*) FROM records").fetchone()[0] == RECORDS
        con.close()
        starting = [e["msg"] for e in log_lines(f) if "starting:" in e.get("msg", "")]
        assert starting and "***@" in starting[0], starting
        print(f"    {starting[0]}")
    finally:
        for p in procs:
            p.stop()
    return seen


def assert_clean(d, seen):
    hits = [s for s in SECRETS if s in seen]
    assert not hits, f"secrets in /status or /metrics: {hits}"
    for fn in os.listdir(d):
        path = os.path.join(d, fn)
        if fn.endswith(".log") or fn.endswith(".out") or fn.startswith("ledger.db"):
            with open(path, "rb") as fh:
                text = fh.read().decode("utf-8", "replace")
            hits = [s for s in SECRETS if s in text]
            assert not hits, f"secrets in {fn}: {hits}"


def password_in_url():
    d = os.path.join(WORK, "users")
    os.makedirs(d)
    conf = os.path.join(d, "nats-server.conf")
    shutil.copy(EXAMPLE_CONF, conf)
    for role, pw in PASSWORDS.items():
        os.environ[f"CM_{role.upper()}_PASSWORD"] = pw
    n = Nats(d, extra=["-c", conf])
    dead = free_port()  # nothing listens there: a list with a bad first entry
    try:
        seen = job(d, lambda r: f"nats://{r}:{PASSWORDS[r]}@127.0.0.1:{n.port}", "users")
        # A URL list (servers not up yet): every element shown with ***.
        pw = PASSWORDS["saver"]
        p = daemon("saver", f"nats://saver:{pw}@127.0.0.1:{dead},nats://saver:{pw}@127.0.0.1:"
                            f"{free_port()}", d, ["--db", os.path.join(d, "list.db")])
        wait_until(lambda: any("not reachable" in e.get("msg", "") for e in log_lines(p)), 20,
                   what="the saver waiting for its servers")
        seen += bodies(p)
        p.stop()
        line = next(e["msg"] for e in log_lines(p) if "starting:" in e.get("msg", ""))
        assert line.count("saver:***@") == 2, line
        assert_clean(d, seen)
    finally:
        n.stop()


def token_in_url():
    d = os.path.join(WORK, "token")
    os.makedirs(d)
    conf = os.path.join(d, "nats-server.conf")
    with open(conf, "w") as fh:
        fh.write(f'authorization {{\n  token: "{TOKEN}"\n}}\n')
    n = Nats(d, extra=["-c", conf])
    try:
        seen = job(d, lambda r: f"nats://{TOKEN}@127.0.0.1:{n.port}", "token")
        assert_clean(d, seen)
    finally:
        n.stop()


def creds_file():
    d = os.path.join(WORK, "creds")
    os.makedirs(d)
    creds = os.path.join(d, "user.creds")
    with open(creds, "w") as fh:
        fh.write("-----BEGIN NATS USER JWT-----\n" + JWT + "\n------END NATS USER JWT------\n\n"
                 "-----BEGIN USER NKEY SEED-----\n" + SEED + "\n------END USER NKEY SEED------\n")
    conf = os.path.join(d, "nats-server.conf")
    with open(conf, "w") as fh:
        fh.write(f'authorization {{\n  token: "{TOKEN}"\n}}\n')
    n = Nats(d, extra=["-c", conf])
    try:
        seen = ""
        for role in ("saver", "mapper", "fetcher"):
            extra = {"saver": ["--db", os.path.join(d, "r.db")], "mapper": [],
                     "fetcher": ["--ledger", os.path.join(d, "ledger.db")]}[role]
            p = daemon(role, n.url, d, ["--nats-creds", creds] + extra)
            wait_until(lambda p=p: not p.alive() or any(
                e.get("level") == "error" for e in log_lines(p)), 20, what=f"{role} refused")
            seen += bodies(p) if p.alive() else ""
            p.stop()
        assert_clean(d, seen)
    finally:
        n.stop()


check("password in the NATS URL (and a URL list): job completes, shown as ***, in no log, "
      "/status, /metrics or ledger", password_in_url)
check("token in the NATS URL: job completes, in no log, /status or /metrics", token_in_url)
check("a creds file's JWT and seed: in no log", creds_file)
for p in procs:
    if p.alive():
        p.stop()
remove_workdir(WORK)
finish()
