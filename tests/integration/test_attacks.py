#!/usr/bin/env python3
"""Attacks on a running job by a client that should not be trusted (issue 11).

An attacker (rawnats.RawNats: the NATS text protocol over a socket) acts
during a job of 20,000 records (1,000 chunks), against fetcher and savers
that share a --lease-key-file:
  - with the mapper role's credentials under deploy/nats/nats-server.conf:
    forged mapped chunks on P.save for chunks never leased to it;
  - with the mapper role's credentials, and with no credentials against an
    open server: a credit under a live mapper's id naming the attacker's
    own subject (acking what it would get), and free=2^31 credit from an id
    that never heartbeats;
  - with no credentials against an open server (the mapper role may not
    publish acks): forged Acks for every chunk while a mapper is killed.
Each case asserts what a user would check: 0 forged rows, exactly 20,000
distinct rows, the fetcher's "complete" only with every row saved, 0
chunks reaching the attacker, the job not stalled (well under --ack-wait),
and every forged message counted in chunkmill_rejected_messages_total.
"""
import json
import os
import shutil
import signal
import sqlite3
import tempfile
import time

import rawnats
from harness import (Nats, remove_workdir, Proc, bin_path, check, finish, free_port, http_get,
                     parse_prometheus, wait_until)

RECORDS = 20000
CHUNK = 20
CHUNKS = RECORDS // CHUNK
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE_CONF = os.path.join(ROOT, "deploy", "nats", "nats-server.conf")
WORK = tempfile.mkdtemp(prefix="cm-attacks-")
KEY = os.path.join(WORK, "lease.key")
with open(KEY, "w") as f:
    f.write(os.urandom(32).hex() + "\n")
PASSWORDS = {"fetcher": "fetcher-pw-A1", "mapper": "mapper-pw-B2", "saver": "saver-pw-C3",
             "ops": "ops-pw-D4"}
ACK_WAIT = "60s"  # a job that has to wait out one lease takes > 60 s
# Only for running this file against a build without lease keys (to see it
# fail there): CM_TEST_NO_LEASE_KEY=1 leaves --lease-key-file out.
KEYARGS = [] if os.environ.get("CM_TEST_NO_LEASE_KEY") else ["--lease-key-file", KEY]


def metric(port, name):
    st, body = http_get(port, "/metrics")
    assert st == 200, (st, body)
    samples, _ = parse_prometheus(body)
    return samples.get(name, 0.0)


def member_heard(f, mid):
    """The fetcher's /status lists mapper `mid` as heard (bound, alive)."""
    st, body = http_get(f.port, "/status")
    assert st == 200, (st, body)
    return any(m["id"] == mid and m["heard"] for m in json.loads(body)["members"])


class Job:
    """nats-server (open, or the shipped config with users) + saver + 2
    mappers (m0, m1) + fetcher --once; everything under one directory."""

    def __init__(self, name, users=False, transform="sleep:15", hb="200ms"):
        self.d = os.path.join(WORK, name)
        self.hb = hb
        os.makedirs(self.d)
        self.users = users
        self.job = name
        extra = []
        if users:
            conf = os.path.join(self.d, "nats-server.conf")
            shutil.copy(EXAMPLE_CONF, conf)
            for role, pw in PASSWORDS.items():
                os.environ[f"CM_{role.upper()}_PASSWORD"] = pw
            extra = ["-c", conf]
        self.nats = Nats(self.d, extra=extra)
        self.prefix = "chunkmill" if users else f"a{os.getpid()}"
        self.db = os.path.join(self.d, "results.db")
        self.procs = []
        self.saver = self.daemon("saver", ["--db", self.db] + KEYARGS)
        self.mappers = [self.daemon("mapper", ["--transform", transform, "--id", f"m{i}",
                                               "--concurrency", "2"], name=f"m{i}")
                        for i in range(2)]
        for p in [self.saver] + self.mappers:
            wait_until(lambda p=p: http_get(p.port, "/readyz")[0] == 200, 20,
                       what=f"{p.name} ready")
        self.fetcher = None

    def auth(self, role):
        if not self.users:
            return []
        return ["--nats-user", role, "--nats-password", PASSWORDS[role]]

    def daemon(self, role, extra, name=None, hb=None):
        port = free_port()
        argv = [bin_path(role), "--nats-url", self.nats.url, "--prefix", self.prefix, "--http",
                f"127.0.0.1:{port}", "--heartbeat", hb or self.hb] + self.auth(role) + list(extra)
        p = Proc(name or f"{role}-{port}", argv, log_dir=self.d)
        p.port = port
        self.procs.append(p)
        return p

    def start_fetcher(self):
        self.fetcher = self.daemon("fetcher", [
            "--once", "--records", str(RECORDS), "--chunk-size", str(CHUNK), "--job", self.job,
            "--ledger", os.path.join(self.d, "ledger.db"), "--ack-wait", ACK_WAIT,
            "--progress", "0"] + KEYARGS, name="fetcher")
        return self.fetcher

    def attacker(self):
        if self.users:
            return rawnats.RawNats(self.nats.port, user="mapper", password=PASSWORDS["mapper"])
        return rawnats.RawNats(self.nats.port)

    def subject(self, s):
        return f"{self.prefix}.{s}"

    def rows(self):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute(
                "SELECT count(*), count(DISTINCT chunk || '/' || idx),"
                " sum(body LIKE '%forged%') FROM records WHERE job = ?", (self.job,)).fetchone()
        finally:
            con.close()

    def finish(self, t0, limit=40):
        """The fetcher exits 0 with the job complete, in less than `limit` s
        (far below --ack-wait), with every row saved exactly once and none
        forged."""
        rc = self.fetcher.wait(limit)
        took = time.monotonic() - t0
        assert rc is not None, f"job stalled: not complete after {limit}s"
        assert rc == 0, f"fetcher exit {rc}: {self.fetcher.log()[-1500:]}"
        assert f'job "{self.job}" complete: {RECORDS} records' in self.fetcher.out(), \
            self.fetcher.out()[-400:]
        n, distinct, forged = self.rows()
        assert (n, distinct) == (RECORDS, RECORDS), (n, distinct)
        assert not forged, f"{forged} forged rows saved"
        print(f"    job complete in {took:.1f}s, {n} rows, 0 forged")
        return took

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        self.nats.stop()


def forged_saves():
    """Mapper credentials: mapped chunks for chunks 900-999 (never leased to
    the attacker) sent to the savers, with no lease token and with a made-up
    one; the savers store none of them."""
    j = Job("forged-saves", users=True)
    try:
        a = j.attacker()
        inbox = "_INBOX.evil"
        sid = a.sub(inbox + ".>")
        f = j.start_fetcher()
        t0 = time.monotonic()
        sent = 0
        for rnd in range(3):
            for i in range(900, 1000):
                lease = "" if rnd == 0 else f',"mapper":"m0","lease":"{rawnats.random_hex()}"'
                data = ",".join('{"forged":true}' for _ in range(CHUNK))
                body = (f'{{"job":"{j.job}","index":{i},"attempt":{rnd + 1}{lease},'
                        f'"data":[{data}]}}')
                a.pub(j.subject("save"), body, reply=f"{inbox}.{i}.{rnd}")
                sent += 1
            time.sleep(0.2)
        a.flush()
        j.finish(t0)
        assert not a.errors, a.errors  # the mapper role may publish saves
        got = metric(j.saver.port, 'chunkmill_rejected_messages_total{reason="lease_missing"}') + \
            metric(j.saver.port, 'chunkmill_rejected_messages_total{reason="lease_forged"}')
        assert got == sent, f"saver counted {got} rejections of {sent} forged chunks"
        replies = a.last(sid)
        assert replies and all(b'"ok":false' in r for r in replies), replies[:2]
        a.close()
        print(f"    {sent} forged chunks, {int(got)} rejected and counted; {a.count(sid)} refusals")
        assert f is j.fetcher
    finally:
        j.stop()


def credit_hijack(users):
    """Credit under the live mapper m0's id naming the attacker's own
    subject, once every 50 ms; every chunk it got would be acked at once
    (an ack it cannot sign; with the mapper role's credentials the server
    refuses the ack anyway). It gets none; nothing is lost."""
    j = Job("credit-hijack" + ("-users" if users else ""), users=users)
    try:
        a = j.attacker()
        mine = j.subject("chunk.evil")
        sid = a.sub(mine)
        f = j.start_fetcher()
        t0 = time.monotonic()
        sent = 0
        acked = 0
        inst = rawnats.random_hex()
        while f.alive() and time.monotonic() - t0 < 40:
            a.pub(j.subject("credit"), rawnats.credit("m0", mine, 64, instance=inst, slots=64))
            # also under m0's own subject with another instance (a takeover)
            a.pub(j.subject("credit"), rawnats.credit("m0", j.subject("chunk.m0"), 1 << 31,
                                                      instance=inst, slots=1 << 20))
            sent += 2
            for body in a.last(sid)[acked:]:
                acked += 1
                a.pub(j.subject("ack"), rawnats.ack(j.job, 0, 1, CHUNK))
            time.sleep(0.05)
        j.finish(t0)
        assert a.count(sid) == 0, f"the attacker received {a.count(sid)} chunks of m0"
        print(f"    {sent} hijacking credits, 0 chunks received by the attacker")
        a.close()
    finally:
        j.stop()


def credit_hijack_counted():
    """The same hijack while the fetcher stays up (no --once): every forged
    credit is counted in chunkmill_rejected_messages_total."""
    j = Job("hijack-count")
    try:
        a = j.attacker()
        mine = j.subject("chunk.evil")
        sid = a.sub(mine)
        f = j.daemon("fetcher", ["--records", "200", "--chunk-size", str(CHUNK), "--job", j.job,
                                 "--ledger", os.path.join(j.d, "ledger.db"), "--progress", "0"] +
                KEYARGS, name="fetcher-stay", hb="1s")
        # (The fetcher's period sets when a silent mapper is gone: 3 s here,
        # so a loaded host delaying m0's 200 ms heartbeats cannot make it
        # leave, and the attacker's credits come back as a new member.)
        j.fetcher = f
        wait_until(lambda: http_get(f.port, "/readyz")[0] == 200, 20, what="fetcher ready")
        wait_until(lambda: metric(f.port, "chunkmill_fetcher_done_chunks") == 10, 30,
                   what="the small job done")
        # m0 is a live (heard) member: the small job may be done before it
        # joined, and a credit for an id not bound yet is no forgery.
        wait_until(lambda: member_heard(f, "m0"), 10, what="m0 heard")
        inst = rawnats.random_hex()
        for _ in range(20):
            a.pub(j.subject("credit"), rawnats.credit("m0", mine, 64, instance=inst))
            a.pub(j.subject("credit"), rawnats.credit("m0", j.subject("chunk.m0"), 64,
                                                      instance=inst))
            a.pub(j.subject("credit"), rawnats.credit("ghost", j.subject("chunk.ghost"), 1 << 31))
            a.pub(j.subject("ack"), rawnats.ack(j.job, 3, 1, CHUNK))
            a.pub(j.subject("nak"), rawnats.nak(j.job, 3, 1, "m0"))
        a.flush()

        def counted():
            return (metric(f.port, 'chunkmill_rejected_messages_total{reason="credit_subject"}') == 20
                    and metric(f.port,
                               'chunkmill_rejected_messages_total{reason="member_instance"}') == 20
                    and metric(f.port,
                               'chunkmill_rejected_messages_total{reason="credit_over_slots"}') == 20
                    and metric(f.port, 'chunkmill_rejected_messages_total{reason="ack_forged"}') == 20
                    and metric(f.port, 'chunkmill_rejected_messages_total{reason="nak_forged"}') == 20)
        try:
            wait_until(counted, 10, what="every forged credit, ack and nak counted by reason")
        except AssertionError:
            reasons = ("credit_subject", "member_instance", "credit_over_slots", "ack_forged",
                       "nak_forged")
            print("    counted:", {r: metric(f.port, 'chunkmill_rejected_messages_total'
                                              f'{{reason="{r}"}}') for r in reasons})
            raise
        assert a.count(sid) == 0
        a.close()
    finally:
        j.stop()


def stalled_mapper_keeps_its_id():
    """The live m0 stalls (SIGSTOP, as a loaded host or a GC pause does) for
    three of its heartbeat periods while the attacker sends credits under
    m0's id and subject with another instance token. A credit alone never
    takes over an id that was heard (only an instance that heartbeats may,
    once the bound one has missed a full period): every credit is refused
    and counted, m0 keeps its id and its leases, and the job completes
    exactly once. (Before, a credit took m0 over once its heartbeat was a
    quarter period late, released what m0 held, and went uncounted.)"""
    j = Job("stall", hb="500ms")
    stopped = False
    try:
        a = j.attacker()
        f = j.daemon("fetcher", ["--records", str(RECORDS), "--chunk-size", str(CHUNK), "--job",
                                 j.job, "--ledger", os.path.join(j.d, "ledger.db"),
                                 "--ack-wait", ACK_WAIT, "--progress", "0"] + KEYARGS,
                     name="fetcher-stall", hb="2s")  # a silent mapper is gone after 6 s
        j.fetcher = f
        wait_until(lambda: http_get(f.port, "/readyz")[0] == 200, 20, what="fetcher ready")
        wait_until(lambda: metric(f.port, "chunkmill_fetcher_done_chunks") >= 20, 30,
                   what="the job running")
        wait_until(lambda: member_heard(f, "m0"), 10, what="m0 heard")
        inst = rawnats.random_hex()
        j.mappers[0].signal(signal.SIGSTOP)
        stopped = True
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < 1.5:  # m0 silent for 3 periods (1.5 s)
            a.pub(j.subject("credit"), rawnats.credit("m0", j.subject("chunk.m0"), 64,
                                                      instance=inst))
            sent += 1
            time.sleep(0.05)
        a.flush()
        j.mappers[0].signal(signal.SIGCONT)
        stopped = False

        def counted():
            return metric(f.port,
                          'chunkmill_rejected_messages_total{reason="member_instance"}') == sent
        try:
            wait_until(counted, 10, what=f"all {sent} credits of the other instance refused")
        finally:
            print(f"    {sent} credits sent while m0 was stopped;",
                  int(metric(f.port,
                             'chunkmill_rejected_messages_total{reason="member_instance"}')),
                  "refused;",
                  int(metric(f.port, "chunkmill_fetcher_mapper_restarts_total")), "takeovers")
        assert metric(f.port, "chunkmill_fetcher_mapper_restarts_total") == 0
        assert metric(f.port, "chunkmill_fetcher_mapper_departures_total") == 0
        wait_until(lambda: metric(f.port, "chunkmill_fetcher_job_complete") == 1, 60,
                   what="job complete")
        n, distinct, forged = j.rows()
        assert (n, distinct, forged) == (RECORDS, RECORDS, 0), (n, distinct, forged)
        a.close()
    finally:
        if stopped:
            j.mappers[0].signal(signal.SIGCONT)
        j.stop()


def forged_acks():
    """Open server: an Ack for every chunk (attempt 1, with no MAC and with
    a made-up one), over and over while the job runs, and mapper m1 is
    killed (-9) in the middle with the chunks it held unsaved. Without
    authentication the forged acks mark those chunks done, they are never
    sent again, and the fetcher reports the job complete with rows missing;
    here they go to m0 and every row is saved."""
    j = Job("forged-acks")
    try:
        a = j.attacker()
        f = j.start_fetcher()
        t0 = time.monotonic()
        sent = 0
        rnd = 0
        killed = False
        while f.alive() and time.monotonic() - t0 < 40:
            if not killed and time.monotonic() - t0 > 1.5:
                j.mappers[1].kill9()
                killed = True
            for i in range(CHUNKS):
                a.pub(j.subject("ack"), rawnats.ack(j.job, i, 1, CHUNK,
                                                    mac=rawnats.random_hex() if rnd % 2 else ""))
                sent += 1
            rnd += 1
            time.sleep(0.1)
        n, _, _ = j.rows()
        assert n == RECORDS, f"the fetcher exited with {n} of {RECORDS} rows saved"
        j.finish(t0)
        print(f"    {sent} forged acks")
        a.close()
    finally:
        j.stop()


def ghost_credit(users):
    """Credit with free = 2^31 from an id that never heartbeats, once every
    100 ms. It gets no chunk and the job is not stalled (before: all 256
    in-flight slots went to the ghost and waited out --ack-wait)."""
    j = Job("ghost-credit" + ("-users" if users else ""), users=users)
    try:
        a = j.attacker()
        ghost = j.subject("chunk.ghost")
        sid = a.sub(ghost)
        f = j.start_fetcher()
        t0 = time.monotonic()
        while f.alive() and time.monotonic() - t0 < 40:
            a.pub(j.subject("credit"), rawnats.credit("ghost", ghost, (1 << 31)))
            time.sleep(0.1)
        took = j.finish(t0)
        assert a.count(sid) == 0, f"the ghost received {a.count(sid)} chunks"
        assert took < 30, took
        a.close()
    finally:
        j.stop()


check("mapper credentials: forged P.save for chunks 900-999: 0 forged rows, all counted",
      forged_saves)
check("open server: credit under a live mapper's id to the attacker's subject: 0 chunks "
      "stolen, 0 lost", lambda: credit_hijack(False))
check("mapper credentials: credit under a live mapper's id to the attacker's subject: 0 chunks "
      "stolen, 0 lost", lambda: credit_hijack(True))
check("forged Acks for every chunk: the job completes only with every row saved", forged_acks)
check("open server: free=2^31 credit from a never-heartbeating id: 0 chunks to it, job not "
      "stalled", lambda: ghost_credit(False))
check("mapper credentials: free=2^31 credit from a never-heartbeating id: 0 chunks to it, job "
      "not stalled", lambda: ghost_credit(True))
check("every forged credit, ack and nak is counted by reason", credit_hijack_counted)
check("a live mapper stalled for 3 heartbeats keeps its id: another instance's credits are "
      "refused and counted, no takeover, exact", stalled_mapper_keeps_its_id)
remove_workdir(WORK)
finish()
