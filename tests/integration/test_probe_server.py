#!/usr/bin/env python3
"""The probe server under hostile clients (issue 10, part 7).

A real saver process; this test holds 2,000 connections to its --http port,
half idle, half slowloris (a header byte every 0.5 s), reconnecting each one
the server closes, like a misbehaving client pool. Meanwhile:
- GET /healthz and `saver --probe /healthz` answer 200 within 1 s, every
  time (before: 64 connections filled the server and probes were reset);
- /metrics is still scraped;
- `Content-Length: 999999999` is answered 413 at once;
- three pipelined GETs in one write get three responses, in order.
"""
import os
import resource
import select
import shutil
import socket
import subprocess
import threading
import time

from harness import Pipeline, Proc, bin_path, check, finish, free_port, http_get

HOLD = 2000

# The test's own descriptors: 2,000 sockets plus the harness's files. The
# saver inherits the same hard limit and keeps 256 descriptors for itself, so
# below 2,320 the test holds fewer connections (still under the saver's cap).
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = HOLD + 256
if hard != resource.RLIM_INFINITY and hard < HOLD + 320:
    HOLD = max(128, hard - 320)
    print(f"note: RLIMIT_NOFILE hard limit {hard}: holding {HOLD} connections", flush=True)
    want = hard
if soft == resource.RLIM_INFINITY or soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

P = Pipeline("probe-server", mappers=0)
PORT = None


class Attack:
    """Holds HOLD connections open: even ones idle, odd ones slowloris."""

    SLOW = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: "

    def __init__(self, port, n, rate=None):
        self.port = port
        self.n = n
        self.rate = rate  # reconnects per second at most (None: at once)
        self.socks = [None] * n
        self.sent = [0] * n
        self.reconnects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self, i):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.socks[i] = None
            return
        s.setblocking(False)
        self.socks[i] = s
        self.sent[i] = 0

    def start(self):
        for i in range(self.n):
            self.open(i)
        self.thread.start()

    def held(self):
        return sum(1 for s in self.socks if s is not None)

    def run(self):
        fd_of = {}
        next_drip = time.monotonic()
        budget, t_budget = 0.0, time.monotonic()
        while not self.stop.is_set():
            poller = select.poll()
            fd_of.clear()
            if self.rate:
                now = time.monotonic()
                budget = min(self.rate, budget + (now - t_budget) * self.rate)
                t_budget = now
            for i, s in enumerate(self.socks):
                if s is None:
                    if self.rate:
                        if budget < 1:
                            continue
                        budget -= 1
                    self.open(i)
                    self.reconnects += 1
                    s = self.socks[i]
                    if s is None:
                        continue
                fd_of[s.fileno()] = i
                poller.register(s, select.POLLIN)
            for fd, ev in poller.poll(100):
                i = fd_of[fd]
                s = self.socks[i]
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # the server closed it (deadline or eviction)
                    s.close()
                    self.socks[i] = None
            if time.monotonic() >= next_drip:
                next_drip = time.monotonic() + 0.5
                for i in range(1, self.n, 2):
                    s = self.socks[i]
                    if s is None:
                        continue
                    k = self.sent[i]
                    b = self.SLOW[k:k + 1] if k < len(self.SLOW) else b"a"
                    try:
                        s.send(b)
                        self.sent[i] += 1
                    except OSError:
                        s.close()
                        self.socks[i] = None

    def close(self):
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            if s is not None:
                s.close()


def timed_get(port, path):
    t0 = time.monotonic()
    st, body = http_get(port, path, timeout=5)
    return st, time.monotonic() - t0, body


def timed_probe(port, path):
    t0 = time.monotonic()
    r = subprocess.run([bin_path("saver"), "--http", f"127.0.0.1:{port}", "--probe", path],
                       capture_output=True, text=True, timeout=10)
    return r.returncode, time.monotonic() - t0, r.stderr


def probes_under_attack(saver, seconds, holds_all, rate=None):
    port = saver.port
    attack = Attack(port, HOLD, rate)
    try:
        attack.start()
        held = attack.held()
        assert held >= HOLD * 0.95 or not holds_all, f"only {held} of {HOLD} connections held"
        results = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            st, dt, body = timed_get(port, "/healthz")
            results.append(("GET /healthz", st, dt, body.strip()[:80], attack.held()))
            rc, dt, err = timed_probe(port, "/healthz")
            results.append(("--probe /healthz", 200 if rc == 0 else rc, dt, err.strip()[:80],
                            attack.held()))
            time.sleep(0.5)
        st, dt, body = timed_get(port, "/metrics")
        results.append(("GET /metrics", st, dt, "", attack.held()))
        bad = [r for r in results if r[1] != 200 or r[2] >= 1.0]
        worst = max(r[2] for r in results)
        print(f"  {len(results)} probes, slowest {worst:.3f} s, "
              f"{attack.reconnects} reconnects, held {attack.held()}", flush=True)
        assert not bad, bad
        if holds_all:
            # (All were opened together, so they expire together: a short dip
            # while the attacker reopens them is expected.)
            held = sorted(r[4] for r in results)
            assert held[len(held) // 2] >= HOLD * 0.9, ("the attack did not hold", held)
        else:
            # Each accept at the cap closed an older connection, which came back.
            assert attack.reconnects > HOLD, attack.reconnects
    finally:
        attack.close()
    assert saver.alive(), saver.log()[-2000:]


def probes_under_2000_connections():
    # 12 s: more than two header deadlines (5 s), so the server has closed
    # and the attacker reopened every connection meanwhile.
    probes_under_attack(P.saver, 12, True)


def probes_at_the_connection_cap():
    # A saver whose descriptor limit cannot be raised (soft = hard = 512):
    # it holds at most 256 connections, so the 2,000 clients keep evicting
    # each other, and probes must still be answered.
    port = free_port()
    db = os.path.join(P.workdir, "capped.db")
    s = Proc(f"saver-capped-{port}",
             ["sh", "-c", 'ulimit -n 512 && exec "$0" "$@"', bin_path("saver")] +
             P.common("saver", port) + ["--db", db, "--id", "capped"], log_dir=P.workdir)
    s.port = port
    try:
        P.wait_ready([s])
        # Reconnects paced at 2,000/s: every second each held connection is
        # replaced once (a storm bounded so the shared CI machine stays
        # responsive; the server evicts one connection per accept).
        probes_under_attack(s, 6, False, rate=2000)
        assert "at the limit of 256 connections" in s.log(), s.log()[-2000:]
    finally:
        rc = s.stop()
    # Exit 0 on SIGTERM: under ASan this also says nothing leaked or broke.
    assert rc == 0, (rc, s.log()[-3000:])


def recv_until_closed(s, limit=5.0):
    s.settimeout(limit)
    out = b""
    t_end = time.monotonic() + limit
    while time.monotonic() < t_end:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        out += d
    return out


def huge_content_length_413():
    for method in ("POST", "GET"):
        s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        t0 = time.monotonic()
        s.sendall(f"{method} /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n"
                  .encode())
        s.settimeout(2)
        first = s.recv(4096)
        dt = time.monotonic() - t0
        s.close()
        assert first.startswith(b"HTTP/1.1 413 "), (method, first[:200])
        assert dt < 1.0, (method, dt)


def parse_responses(data):
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:200]
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(l.split(":", 1)[1]) for l in lines if l.lower().startswith("content-length:"))
        out.append((status, rest[:length].decode()))
        data = rest[length:]
    return out


def pipelined_in_order():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = recv_until_closed(s)
    s.close()
    got = parse_responses(data)
    assert [st for st, _ in got] == [200, 200, 404], got
    assert got[0][1] == "ok\n", got
    assert got[1][1].startswith('{"role":"saver"'), got


def post_keeps_the_connection():
    """POST is parsed with its body: a daemon's own paths answer 405 to it,
    other paths 404 (a saver routes nothing), and the connection stays open
    for the next request; a body over 64 KiB is 413."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
              b"POST /jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\n{}\r\n0\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = parse_responses(recv_until_closed(s))
    s.close()
    assert [st for st, _ in got] == [405, 404, 200], got
    s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n")
    s.settimeout(2)
    first = s.recv(4096)
    s.close()
    assert first.startswith(b"HTTP/1.1 413 "), first[:200]


try:
    P.wait_ready([P.saver])
    PORT = P.saver.port
    check(f"probes answer within 1 s while {HOLD} idle/slowloris clients hold connections",
          probes_under_2000_connections)
    check(f"at a 256-connection cap, {HOLD} clients are evicted, probes still answered",
          probes_at_the_connection_cap)
    check("Content-Length: 999999999 gets 413 at once", huge_content_length_413)
    check("3 pipelined GETs in one write get 3 responses in order", pipelined_in_order)
    check("POST: 405 on the daemon's paths, 404 elsewhere, keep-alive, 413 over 64 KiB",
          post_keeps_the_connection)

    def clean_exit():
        rc = P.saver.stop()
        assert rc == 0, (rc, P.saver.log()[-3000:])

    check("the saver exits 0 after all that", clean_exit)
finally:
    P.stop_all()
    shutil.rmtree(P.workdir, ignore_errors=True)
finish()
