"""Tests leave nothing in their TMPDIR, whether they pass or fail.

Runs representative tests with TMPDIR set to a fresh empty folder:
- the unit tests that create directories (test_store: one per test case,
  test_ledger and test_source: one per group; tests/unit/tmpdir.h);
- an integration test on the harness (test_plugin: real nats-server,
  saver, mappers, fetcher, SQLite files, logs);
first as they are (they must pass), then with CM_TEST_FORCE_FAIL=1, which
makes them fail after creating their files (they must fail). After each run
the folder must be empty. Each folder is this test's own and is removed by
it.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from harness import BIN_DIR, check, finish

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = ["store", "ledger", "source"]
INTEG = ["plugin"]


def leftovers(d):
    out = []
    for root, dirs, files in os.walk(d):
        out += [os.path.relpath(os.path.join(root, x), d) for x in dirs + files]
    return sorted(out)


def run_in_empty_tmpdir(argv, force_fail, timeout=300):
    d = tempfile.mkdtemp(prefix="cm-cleanup-")  # ours, under the suite's TMPDIR
    try:
        env = dict(os.environ, TMPDIR=d, PYTHONDONTWRITEBYTECODE="1")
        env.pop("CM_KEEP_TMP", None)
        env.pop("CM_TEST_FORCE_FAIL", None)
        if force_fail:
            env["CM_TEST_FORCE_FAIL"] = "1"
        r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, cwd=d)
        return r.returncode, r.stdout.decode("utf-8", "replace"), leftovers(d), d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def case(argv, force_fail):
    def fn():
        rc, out, left, tmp = run_in_empty_tmpdir(argv, force_fail)
        if force_fail:
            assert rc != 0, f"forced failure did not fail (exit 0):\n{out[-1500:]}"
            assert "forced failure" in out, f"failed, but not by the forced failure:\n{out[-1500:]}"
            # ...with its files in the TMPDIR it was given (not in /tmp).
            assert tmp + os.sep in out, f"the test's files were not under TMPDIR {tmp}:\n{out[-1500:]}"
        else:
            assert rc == 0, f"exit {rc}:\n{out[-1500:]}"
        assert not left, f"left behind in TMPDIR: {left[:20]} ({len(left)} entries)"
    return fn


def main():
    for name in UNIT:
        exe = os.path.join(BIN_DIR, "tests", "unit", f"test_{name}")
        for force in (False, True):
            check(f"unit test_{name} {'failing' if force else 'passing'}: TMPDIR empty afterwards",
                  case([exe], force))
    for name in INTEG:
        script = os.path.join(HERE, f"test_{name}.py")
        for force in (False, True):
            check(f"integration test_{name} {'failing' if force else 'passing'}: TMPDIR empty "
                  "afterwards", case([sys.executable, script], force))


main()
finish()
