#!/usr/bin/env python3
"""The web dashboard (issue 15) in a real browser against a running pipeline.

Real nats-server, saver, two mappers (versions v1 and v2-canary, sleep:100 so
the job lasts several seconds) and fetcher; headless Chromium (Debian's
chromium) driven by playwright-core (tests/web/dashboard_driver.js) opens
the fetcher's http://HOST:PORT/.

- The fetcher serves the page, its script and style with their content
  types, byte for byte the files of fetcher/web/; another path is 404.
- The page shows the job numbers the fetcher reports (/status; GET
  /jobs/dash when the fetcher has the job API, and /status's job as well
  when it still has one): chunks done and dead and records saved lie
  between the fetcher's answers fetched around the page's poll; the members
  (ids, roles, versions) are those of /status (of /members with the job
  API) and the versions those of /status.
- They change while the job runs, without a reload; the chart has samples.
- A third mapper version (v3-broken) fails every chunk it takes (past
  --chunk-timeout, --max-deliver 1): its error rate and the job's dead
  chunks show (with their reasons from GET /jobs/dash/dead with the API).
- Wide (1280x800) and narrow (390x844) screenshots go to
  <build>/artifacts/dashboard-*.png; the narrow page does not scroll
  sideways.
- With the job API (GET /jobs answers something else than 404): once the
  token is entered (kept in sessionStorage only) the actions show, a click
  on Pause pauses the job (the API reports "paused" and chunks done stop
  growing) and the page then shows exactly the job's numbers. Without it (GET /jobs is 404, as
  asked of the fetcher, not assumed), that part is reported as skipped; the
  page then says there is no job API once a token is entered, shows no
  actions, and shows exactly the numbers of /status once the job is
  complete.

Exits 77 (ctest SKIP) with the reason when Chromium cannot run, node/npm are
missing or playwright-core cannot be installed (no npm registry).
"""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import harness
from harness import BIN_DIR, Pipeline, bin_path, check, finish, http_get, tmpdir, wait_until

SKIP = 77
PLAYWRIGHT = "playwright-core@1.65.1"
CHROMIUM = os.environ.get("CM_CHROMIUM", "/usr/bin/chromium")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DRIVER = os.path.join(ROOT, "tests", "web", "dashboard_driver.js")
WEB_DIR = os.path.join(ROOT, "fetcher", "web")
BUILD = os.path.abspath(BIN_DIR)
ARTIFACTS = os.path.join(BUILD, "artifacts")
# 1200 chunks of 100 ms on 2 x 2 workers: the job runs ~30 s, long enough to
# be paused mid-way on a loaded machine (with the job API it is paused, not
# waited for).
RECORDS, CHUNK = 120000, 100
TOTAL = RECORDS // CHUNK
TOKEN = "dashboard-test-token-0123456789"


def skip(why):
    print(f"SKIP: dashboard: {why}", flush=True)
    sys.exit(SKIP)


def prerequisites():
    """node_modules path, or exits 77 naming what is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        skip(f"{CHROMIUM} not found (Debian: apt-get install chromium; scripts/lib.sh "
             "CM_TEST_PKGS has it)")
    try:
        v = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        skip(f"{CHROMIUM} --version failed: {e}")
    if v.returncode != 0:
        skip(f"{CHROMIUM} --version exited {v.returncode}: {v.stderr.strip()[-200:]}")
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        skip("node and npm not found (Debian: apt-get install nodejs npm; scripts/lib.sh "
             "CM_TEST_PKGS has them)")
    major = subprocess.run([node, "-p", "process.versions.node.split('.')[0]"],
                           capture_output=True, text=True, timeout=30).stdout.strip()
    if not major.isdigit() or int(major) < 18:
        skip(f"node {major or '?'} is too old (playwright-core needs node >= 18)")
    prefix = os.path.join(BUILD, "web-test")
    pkg = os.path.join(prefix, "node_modules", "playwright-core", "package.json")
    want = PLAYWRIGHT.split("@")[1]
    try:
        with open(pkg) as f:
            have = json.load(f).get("version")
    except (OSError, ValueError):
        have = None
    if have != want:
        print(f"# npm install {PLAYWRIGHT} into {prefix}", flush=True)
        os.makedirs(prefix, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", prefix, "--no-audit", "--no-fund",
                            "--no-save", "--loglevel=error", PLAYWRIGHT],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            skip(f"npm install {PLAYWRIGHT} failed (needs the npm registry on the first run): "
                 f"{(r.stderr or r.stdout).strip()[-300:]}")
    return os.path.join(prefix, "node_modules")


class Browser:
    """The node driver as a child process: one JSON command per line."""

    def __init__(self, node_modules, workdir):
        env = dict(os.environ, NODE_PATH=node_modules, CM_CHROMIUM=CHROMIUM, TMPDIR=workdir,
                   HOME=workdir)
        self.errlog = open(os.path.join(workdir, "driver.log"), "wb")
        # Its own process group: chromium's processes go with it.
        self.p = subprocess.Popen(["node", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.errlog, env=env, start_new_session=True)
        self.pid = self.p.pid
        self.buf = b""
        harness._procs.append(self)  # killed at exit, whatever happens

    # harness._cleanup's interface
    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def cmd(self, timeout=60, **c):
        self.p.stdin.write((json.dumps(c) + "\n").encode())
        self.p.stdin.flush()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.alive():
                raise AssertionError(f"browser driver: no answer to {c['cmd']} within {timeout} s"
                                     f" (alive: {self.alive()})")
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"browser driver exited during {c['cmd']}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        out = json.loads(line)
        if not out["ok"]:
            raise AssertionError(f"browser: {c['cmd']}: {out['error']}")
        return out["value"]

    def close(self):
        if self.alive():
            try:
                self.cmd(timeout=20, cmd="close")
            except AssertionError:
                pass
            if self.wait(5) is None:
                self.signal(signal.SIGKILL)
                self.wait(5)
        self.errlog.close()


def api(port, path, method="GET", body=None, token=None):
    """(status, parsed JSON or None) of a job API request."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            raw = r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, None


def job_view(port, has_api):
    """The fetcher's own numbers for job "dash" in the page's terms, and its
    /status: from GET /jobs/dash with the job API, else from /status."""
    st, body = http_get(port, "/status", timeout=2)
    if st != 200:
        return None, None
    status = json.loads(body)
    if has_api:
        code, j = api(port, "/jobs/dash", token=TOKEN)
        if code != 200:
            return None, status
        ch = j["chunks"]
        return {"done": ch["done"], "dead": ch["dead"], "leased": ch["leased"],
                "pending": ch["pending"], "total": ch["total"], "records": j["records_saved"],
                "state": j["state"]}, status
    j = status["job"]
    total = j["total_chunks"]
    unread = max(0, total - j["chunks_created"]) if total is not None else 0
    state = "running"
    if j["complete"]:
        state = "complete_with_dead" if j["dead_chunks"] else "complete"
    return {"done": j["done_chunks"], "dead": j["dead_chunks"], "leased": j["inflight"],
            "pending": j["pending"] + unread, "total": total, "records": j["records_done"],
            "state": state}, status


class Sampler(threading.Thread):
    """job_view every 100 ms: (t_sent, t_answered, view, status)."""

    def __init__(self, port, has_api):
        super().__init__(daemon=True)
        self.port = port
        self.has_api = has_api
        self.samples = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            t0 = time.time()
            view, status = job_view(self.port, self.has_api)
            t1 = time.time()
            if view is not None:
                with self.lock:
                    self.samples.append((t0, t1, view, status))
            self.stop_ev.wait(0.1)

    def around(self, t, before=0.6, after=2.0):
        """(view, status) answered from `before` s before t to sent `after` s
        after t."""
        with self.lock:
            return [(v, s) for (t0, t1, v, s) in self.samples
                    if t1 >= t - before and t0 <= t + after]


def get_file(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def main():
    node_modules = prerequisites()
    os.makedirs(ARTIFACTS, exist_ok=True)
    P = Pipeline("dashboard", records=RECORDS, mappers=0, transform="sleep:100",
                 chunk_size=CHUNK, extra_mapper=["--concurrency", "2"])
    P.start_mapper(["--version-label", "v1"])
    P.start_mapper(["--version-label", "v2-canary"])
    # A broken version: every chunk it takes runs past --chunk-timeout and is
    # NAKed; with --max-deliver 1 each is dead (a few per second, with a
    # reason). The page must show its error rate and the dead chunks.
    P.start_mapper(["--version-label", "v3-broken", "--transform", "sleep:400",
                    "--chunk-timeout", "100ms", "--concurrency", "1", "--prefetch", "0"])
    helptext = subprocess.run([bin_path("fetcher"), "--help"], capture_output=True, text=True,
                              timeout=10).stdout
    extra = ["--job", "dash", "--max-deliver", "1"]
    if "--api-token-file" in helptext:
        tokfile = os.path.join(P.workdir, "api-token")
        with open(tokfile, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(tokfile, 0o600)
        extra += ["--api-token-file", tokfile]
    browser = None
    sampler = None
    failed_before = harness._results["failed"]
    try:
        P.wait_ready([P.saver] + P.mappers, timeout=30)
        P.start_fetcher(extra)
        P.wait_ready([P.fetcher], timeout=30)
        port = P.fetcher.port
        jobs_status, _ = api(port, "/jobs", token=TOKEN)
        has_api = jobs_status != 404
        print(f"# GET /jobs: {jobs_status} ({'job API' if has_api else 'no job API'})",
              flush=True)
        sampler = Sampler(port, has_api)
        sampler.start()

        def served_files():
            for path, name, ctype in (("/", "index.html", "text/html"),
                                      ("/dashboard.js", "dashboard.js", "text/javascript"),
                                      ("/dashboard.css", "dashboard.css", "text/css")):
                st, got_type, body = get_file(port, path)
                assert st == 200, (path, st)
                assert got_type.startswith(ctype), (path, got_type)
                with open(os.path.join(WEB_DIR, name), "rb") as f:
                    assert body == f.read(), f"{path} is not fetcher/web/{name}"
            st, _ = http_get(port, "/no-such-page")
            assert st == 404, st
            # The files are read-only: a POST to one is not served.
            assert api(port, "/", method="POST", body={})[0] == 404

        check("the fetcher serves the dashboard's files", served_files)

        # Chromium's singleton socket lives in its TMPDIR, and a Unix socket
        # path has at most 107 bytes: a deep build tree's TMPDIR is too long
        # ("Socket path too long"), so the browser gets a short one under
        # /tmp (removed at exit like every tmpdir).
        browser = Browser(node_modules, tmpdir("cmdb-", parent="/tmp"))
        url = f"http://127.0.0.1:{port}/"
        snaps = []

        def page_loads():
            r = browser.cmd(cmd="open", url=url, width=1280, height=800)
            assert r["status"] == 200, r
            browser.cmd(cmd="wait", selector='#jobs [data-job="dash"]', timeout_ms=20000)
            browser.cmd(cmd="wait", selector="#members tbody tr", timeout_ms=20000)

        check("the page loads and shows the job", page_loads)

        def enter_token():
            browser.cmd(cmd="fill", selector="#token", value=TOKEN)
            browser.cmd(cmd="click", selector="#token-save")

        def token_kept():
            snap = browser.cmd(cmd="snapshot")
            assert TOKEN not in snap["storage"]["url"], snap["storage"]
            assert snap["storage"]["local"] == [], snap["storage"]
            assert snap["storage"]["session"], snap["storage"]
            return snap

        if has_api:
            def token_actions():
                # Before the token: reads need it (--api-token-file), so the
                # page says so and shows the job of /status, without actions.
                snap = browser.cmd(cmd="snapshot")
                assert "API token" in snap["notice"], snap["notice"]
                job = next(j for j in snap["jobs"] if j["name"] == "dash")
                assert not job["actionsVisible"], job
                enter_token()
                browser.cmd(cmd="wait", selector='[data-job="dash"] [data-action="pause"]:not([disabled])',
                            timeout_ms=10000)
                token_kept()

            check("without the token the page shows /status and says why; with it the actions "
                  "(token in sessionStorage only)",
                  token_actions)

        def same_numbers():
            """Three looks at the running job, ~1.3 s apart."""
            for _ in range(3):
                time.sleep(1.3)
                snap = browser.cmd(cmd="snapshot")
                # Let the sampler ask the fetcher after the page's poll too.
                time.sleep(0.6)
                snaps.append(snap)
                assert snap["polledAt"] > 0, "the page never polled"
                win = sampler.around(snap["polledAt"] / 1000)
                assert len(win) >= 2, f"only {len(win)} fetcher samples around the page's poll"
                job = next(j for j in snap["jobs"] if j["name"] == "dash")
                # Monotonic counts: between the fetcher's answers before and
                # after the page's poll.
                for field in ("done", "dead", "records"):
                    vals = [v[field] for v, _ in win]
                    assert min(vals) <= job[field] <= max(vals), \
                        f"page {field}={job[field]}, fetcher {min(vals)}..{max(vals)}"
                if "job" in win[-1][1]:  # /status's own job, with or without the API
                    vals = [s["job"]["done_chunks"] for _, s in win]
                    assert min(vals) <= job["done"] <= max(vals), (job["done"], vals)
                assert job["total"] == TOTAL, job
                assert job["state"] in ("running", "complete"), job
                assert "records/s" in job["text"].lower(), job["text"]
                status = win[-1][1]
                if has_api:
                    code, mem = api(port, "/members", token=TOKEN)
                    assert code == 200, code
                    want = {(m["id"], m["role"], m.get("version", "")) for m in mem["members"]}
                else:
                    want = {(m["id"], "mapper", m["version"]) for m in status["members"]}
                got = {(m["id"], m["role"], m["version"]) for m in snap["members"]}
                assert got == want, f"page members {sorted(got)} != {sorted(want)}"
                mapper_ids = {f"m{i}-{m.port}" for i, m in enumerate(P.mappers)}
                assert mapper_ids <= {m[0] for m in got}, (mapper_ids, got)
                assert {v["name"] for v in snap["versions"]} == set(status["versions"]), \
                    (snap["versions"], status["versions"])
                assert set(status["versions"]) >= {"v1", "v2-canary", "v3-broken"}, \
                    status["versions"]
                for v in snap["versions"]:
                    for field, key in (("acked", "acked"), ("errorRatio", "error_ratio")):
                        vals = [s["versions"][v["name"]][key] for _, s in win
                                if v["name"] in s["versions"]]
                        assert min(vals) - 1e-9 <= v[field] <= max(vals) + 1e-9, (v, field, vals)
                if job["dead"] > 0:
                    heads = [d["heading"] for d in snap["dead"] if d["job"] == "dash"]
                    assert heads and f"{job['dead']} dead chunk" in heads[0], (job, snap["dead"])
                assert not snap["pageErrors"], snap["pageErrors"]

        check("the page shows the job numbers, members and versions the fetcher reports",
              same_numbers)

        def changes_live():
            assert len(snaps) >= 2, "no snapshots"
            first, last = snaps[0], snaps[-1]
            j0 = next(j for j in first["jobs"] if j["name"] == "dash")
            j1 = next(j for j in last["jobs"] if j["name"] == "dash")
            assert last["polledAt"] > first["polledAt"], "the page did not poll again"
            assert j1["done"] > j0["done"] and j1["records"] > j0["records"], (j0, j1)
            assert first["loadMark"] and last["loadMark"] == first["loadMark"], \
                "the page was reloaded"
            assert last["chartSamples"] >= 2, last["chartSamples"]
            assert j1["rate"] is not None and j1["rate"] > 0, j1

        check("the numbers change while the job runs, without a reload", changes_live)

        def canary_judged():
            snap = snaps[-1]
            ratio = {v["name"]: v["errorRatio"] for v in snap["versions"]}
            assert ratio.get("v3-broken", 0) > 0.5, ratio
            assert ratio.get("v1") == 0 and ratio.get("v2-canary") == 0, ratio
            assert any(j["dead"] > 0 for j in snap["jobs"] if j["name"] == "dash"), snap["jobs"]

        check("the broken version's error rate and its dead chunks show", canary_judged)

        def screenshots():
            for name, w, h in (("wide", 1280, 800), ("narrow", 390, 844)):
                browser.cmd(cmd="viewport", width=w, height=h)
                time.sleep(1.2)  # a poll at this size (the chart follows the width)
                path = os.path.join(ARTIFACTS, f"dashboard-{name}.png")
                if os.path.exists(path):
                    os.remove(path)
                browser.cmd(cmd="screenshot", path=path)
                assert os.path.getsize(path) > 10000, path
                snap = browser.cmd(cmd="snapshot")
                assert snap["scrollWidth"] <= snap["innerWidth"] + 1, \
                    f"{name}: the page is {snap['scrollWidth']} px wide in {snap['innerWidth']}"
                print(f"# screenshot {path}", flush=True)
            browser.cmd(cmd="viewport", width=1280, height=800)

        def exact_when_still(expect_state):
            """Once the fetcher's numbers stop moving, the page shows exactly
            them."""
            last = [None]

            def ok():
                snap = browser.cmd(cmd="snapshot")
                view, _ = job_view(port, has_api)
                job = next(j for j in snap["jobs"] if j["name"] == "dash")
                got = {k: job[k] for k in view}
                last[0] = (got, view)
                return got == view and view["state"] == expect_state
            try:
                wait_until(ok, 30, interval=0.5, what=f"page numbers == fetcher ({expect_state})")
            except AssertionError:
                raise AssertionError(f"page {last[0][0]}, fetcher {last[0][1]}")

        if has_api:
            def pause_click():
                browser.cmd(cmd="click", selector='[data-job="dash"] [data-action="pause"]')
                wait_until(lambda: api(port, "/jobs/dash", token=TOKEN)[1].get("state") == "paused",
                           10, interval=0.2, what="the job API to report state paused")

                def done():
                    return job_view(port, has_api)[0]["done"]
                # Leases in flight still finish: wait for the count to settle.
                prev = [done(), time.monotonic()]

                def still():
                    d = done()
                    if d != prev[0]:
                        prev[:] = [d, time.monotonic()]
                    return time.monotonic() - prev[1] >= 2.0
                wait_until(still, 20, interval=0.2, what="chunks done to stop growing")
                at_pause = done()
                time.sleep(2.0)
                assert done() == at_pause, "chunks done still grow after the pause"
                assert at_pause < TOTAL, "the job completed before the pause took effect"
                exact_when_still("paused")
                snap = browser.cmd(cmd="snapshot")
                job = next(j for j in snap["jobs"] if j["name"] == "dash")
                assert "paused" in job["message"] or "paused" in job["stateText"], job
                # The dead chunks with their reasons, as GET /jobs/dash/dead
                # lists them (the page asks again within a few seconds).
                code, dead = api(port, "/jobs/dash/dead", token=TOKEN)
                assert code == 200 and dead["dead"], (code, dead)
                want = sorted((d["index"], d["attempts"], d["reason"]) for d in dead["dead"])

                def dead_rows():
                    s2 = browser.cmd(cmd="snapshot")
                    rows = [r for d in s2["dead"] if d["job"] == "dash" for r in d["rows"]]
                    return sorted((r["index"], r["attempts"], r["reason"]) for r in rows) == want
                wait_until(dead_rows, 15, interval=0.5, what="the page's dead chunks == the API's")

            check("Pause in the page pauses the job; the page then shows its numbers exactly",
                  pause_click)
            check("wide and narrow screenshots, no sideways scrolling", screenshots)
        else:
            print("SKIP pause: the fetcher answers 404 on GET /jobs (no job API on this "
                  "branch yet): the pause click cannot be tested", flush=True)

            def no_api_token():
                enter_token()
                browser.cmd(cmd="wait", selector="#notice", timeout_ms=5000)
                snap = token_kept()
                assert "no job API" in snap["notice"], snap["notice"]
                job = next(j for j in snap["jobs"] if j["name"] == "dash")
                assert not job["actionsVisible"], job

            check("without the job API: a token gives a notice, no actions", no_api_token)
            check("wide and narrow screenshots, no sideways scrolling", screenshots)

            def complete_exact():
                wait_until(lambda: job_view(port, has_api)[0]["state"] != "running",
                           60, interval=0.3, what="the job to complete")
                exact_when_still("complete_with_dead")

            check("once complete, the page shows /status exactly", complete_exact)
    finally:
        if sampler is not None:
            sampler.stop_ev.set()
            sampler.join(5)
        if browser is not None:
            browser.close()
        if harness._results["failed"] != failed_before:
            harness.dump_logs_on_failure(P)
            if browser is not None:
                with open(browser.errlog.name, errors="replace") as f:
                    print("---- driver.log", *f.read().splitlines()[-20:], sep="\n  ")
        P.stop_all()
        harness.remove_workdir(P.workdir)
    finish()


if __name__ == "__main__":
    main()
