#!/usr/bin/env python3
"""k8s/components/app9/nats-server.conf with real processes (issue 15): the
NATS authorization of the mixed Kubernetes deployment lets the original
example's services (played by app9_peer, connecting without credentials as
the original does) and chunkmill's daemons in --protocol app9 (each with its
role's user and password) run a job together, with no permission violation.

  1. peer fetcher + chunkmill mapper + chunkmill saver (steps 1 and 2)
  2. chunkmill fetcher + peer mapper + chunkmill saver (step 3)

2,000 records (20 chunks) each: every chunk confirmed, every record saved
once in SQLite. The peer may use only the original's subjects: its attempt
to publish on a chunkmill subject is refused.
"""
import json
import os
import sqlite3

from harness import (Nats, Proc, bin_path, check, environ_set, finish, free_port, http_get, tmpdir,
                     wait_until)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONF = os.path.join(ROOT, "k8s", "components", "app9", "nats-server.conf")
PEER = os.path.join(os.environ.get("CM_BIN_DIR", os.path.join(os.path.dirname(__file__),
                                                              "../../build")),
                    "tests", "app9", "app9_peer")
PASSWORDS = {"fetcher": "fetcher-pw-a9", "mapper": "mapper-pw-a9", "saver": "saver-pw-a9",
             "ops": "ops-pw-a9"}
RECORDS, CHUNKS = 2000, 20


class Env:
    def __init__(self, name):
        self.dir = tmpdir(f"cm-app9auth-{name}-")
        env = {f"CM_{r.upper()}_PASSWORD": pw for r, pw in PASSWORDS.items()}
        with environ_set(env):  # nats-server reads $CM_*_PASSWORD from its environment
            self.nats = Nats(self.dir, extra=["-c", CONF])
        self.procs = []
        self.db = os.path.join(self.dir, "results.db")

    def daemon(self, role, *extra):
        port = free_port()
        p = Proc(f"{role}-{port}", [bin_path(role), "--protocol", "app9", "--nats-url",
                                    self.nats.url, "--http", f"127.0.0.1:{port}",
                                    "--nats-user", role, "--heartbeat", "200ms"] + list(extra),
                 env={"CHUNKMILL_NATS_PASSWORD": PASSWORDS[role]}, log_dir=self.dir)
        p.port = port
        self.procs.append(p)
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 20, what=f"{role} ready")
        return p

    def peer(self, role, *extra):
        p = Proc(f"peer-{role}", [PEER, "--role", role, "--nats-url", self.nats.url] + list(extra),
                 log_dir=self.dir)
        self.procs.append(p)
        return p

    def rows(self):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute("SELECT count(*), count(DISTINCT chunk || ':' || idx) FROM records "
                               "WHERE job = 'app9'").fetchone()
        finally:
            con.close()

    def violations(self):
        with open(self.nats.proc.log_path, errors="replace") as f:
            return [l for l in f if "Violation" in l]

    def close(self, ok):
        for p in reversed(self.procs):
            p.stop()
        self.nats.stop()
        if not ok:
            for p in self.procs + [self.nats.proc]:
                print(f"---- {p.name} ----")
                print("\n".join(p.log().splitlines()[-8:]))


def original_fetcher():
    e, ok = Env("steps12"), False
    try:
        e.daemon("saver", "--db", e.db)
        e.daemon("mapper", "--id", "m0")
        f = e.peer("fetcher", "--records", str(RECORDS), "--timeout", "60")
        assert f.wait(70) == 0, f"peer fetcher exit {f.p.returncode}: {f.out()[-300:]}"
        fs = json.loads([l for l in f.out().splitlines() if l.startswith("{")][-1])
        assert fs["confirmed"] == CHUNKS, fs
        assert e.rows() == (RECORDS, RECORDS), e.rows()
        assert not e.violations(), e.violations()
        ok = True
    finally:
        e.close(ok)


def chunkmill_fetcher():
    e, ok = Env("step3"), False
    try:
        e.daemon("saver", "--db", e.db)
        e.peer("mapper")
        f = e.daemon("fetcher", "--records", str(RECORDS), "--ledger",
                     os.path.join(e.dir, "ledger.db"), "--ack-wait", "5s")
        wait_until(lambda: e.rows()[0] == RECORDS if os.path.exists(e.db) else False, 60,
                   what=f"{RECORDS} records saved")
        st = json.loads(http_get(f.port, "/status")[1])
        wait_until(lambda: json.loads(http_get(f.port, "/status")[1])["job"]["done_chunks"]
                   == CHUNKS, 30, what="every chunk done in the fetcher's ledger")
        assert e.rows() == (RECORDS, RECORDS), (e.rows(), st)
        assert not e.violations(), e.violations()
        ok = True
    finally:
        e.close(ok)


def peer_confined():
    # The no_auth_user gets the original's subjects only: a chunkmill subject
    # is refused (the server logs the violation).
    import socket
    e, ok = Env("confined"), False
    try:
        s = socket.create_connection(("127.0.0.1", e.nats.port), timeout=5)
        s.recv(4096)  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPUB chunkmill.ack 2\r\nhi\r\n'
                  b"PING\r\n")
        got = b""
        while b"PONG" not in got and b"-ERR" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()
        assert b"Permissions Violation" in got, got
        ok = True
    finally:
        e.close(ok)


def readme_names_the_overlays():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    sec = text[text.index("### Mixed deployment on Kubernetes"):]
    sec = sec[:sec.index("### Checking a migration")]
    for name in ("k8s/overlays/app9", "k8s/overlays/app9-fetcher", "k8s/components/app9",
                 "test_app9_auth.py"):
        assert name in sec, f"README's Kubernetes migration does not name {name}"
    assert "/env/-" not in sec, "README still appends env entries (a second CHUNKMILL_ACK_WAIT)"
    assert "faker" in sec, "README lacks the gen:users caveat"
    for d in ("app9", "app9-fetcher"):
        assert os.path.exists(os.path.join(ROOT, "k8s", "overlays", d, "kustomization.yaml")), d


if __name__ == "__main__":
    if not os.path.exists(PEER):
        print(f"SKIP: {PEER} not built")
        raise SystemExit(77)
    check("steps 1-2: original fetcher (no credentials) + chunkmill mapper and saver",
          original_fetcher)
    check("step 3: chunkmill fetcher + original mapper + chunkmill saver", chunkmill_fetcher)
    check("the original's services get the original's subjects only", peer_confined)
    check("README's Kubernetes migration names the tested overlays", readme_names_the_overlays)
    finish()
