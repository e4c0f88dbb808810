#!/usr/bin/env python3
"""The README's app9 migration with docker-compose, as the files in
deploy/app9/ (issue 15): `docker-compose config` renders the project's
docker-compose.yml with them for each step, and the result is what the
README promises:

- steps 1-2 (docker-compose.app9.yml + docker-compose.original-fetcher.yml):
  the original fetcher runs `npm start` from its own image with no build,
  volumes, secrets, healthcheck or CHUNKMILL_* variable inherited from
  chunkmill's fetcher; chunkmill's fetcher is left out (a profile); mappers
  and saver run CHUNKMILL_PROTOCOL=app9; NATS runs the migration's
  nats-server.conf (k8s/components/app9: the original connects without
  credentials), still healthchecked;
- step 3 (docker-compose.app9.yml + docker-compose.fetcher.yml): chunkmill's
  fetcher runs app9 with CHUNKMILL_ACK_WAIT once, and refuses to render
  without APP9_SOURCE (a fetcher swapped in must read the original's data,
  not gen:users);
- the README names these files and the gen:users caveat.
Needs docker-compose (no engine); without it prints SKIP and exits 77.
"""
import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BASE = ["-f", "docker-compose.yml", "-f", "deploy/app9/docker-compose.app9.yml"]
results = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
        results["passed"] += 1
        print(f"ok - {name}")
    except Exception as e:  # noqa: BLE001
        results["failed"] += 1
        print(f"not ok - {name}: {type(e).__name__}: {e}")


def compose(files, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CHUNKMILL_", "APP9_"))}
    e.update(env or {})
    return subprocess.run(["docker-compose"] + files + ["config"], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=60)


def render(files, env=None):
    r = compose(files, env)
    assert r.returncode == 0, f"docker-compose config: {r.stderr}"
    return yaml.safe_load(r.stdout)["services"]


def steps_1_2():
    s = render(BASE + ["-f", "deploy/app9/docker-compose.original-fetcher.yml"])
    orig = s["app9-fetcher"]
    assert orig["command"] == ["npm", "start"], orig.get("command")
    assert orig["image"] == "example/app9-fetcher:original", orig["image"]
    for key in ("build", "volumes", "secrets", "healthcheck", "entrypoint", "read_only"):
        assert key not in orig, f"app9-fetcher inherits {key}: {orig[key]}"
    env = orig.get("environment", {})
    assert not [k for k in env if k.startswith("CHUNKMILL_")], env
    assert "chunkmill-fetcher" in s["fetcher"].get("profiles", []), \
        "chunkmill's fetcher would start next to the original"
    for svc in ("mapper", "saver"):
        assert s[svc]["environment"]["CHUNKMILL_PROTOCOL"] == "app9", s[svc]["environment"]
    conf = os.path.join(ROOT, "k8s", "components", "app9", "nats-server.conf")
    for node in ("nats", "nats-2", "nats-3"):
        # docker-compose 1.x renders "src:dst:ro", 2.x a mapping.
        vols = [v if isinstance(v, str) else
                f"{v['source']}:{v['target']}{':ro' if v.get('read_only') else ''}"
                for v in s[node]["volumes"]]
        mounts = [v for v in vols if v.split(":")[1:2] == ["/etc/nats/nats-server.conf"]]
        assert mounts == [f"{conf}:/etc/nats/nats-server.conf:ro"], (node, vols)
        assert "healthcheck" in s[node], f"{node}: health is not checked"


def step_3():
    r = compose(BASE + ["-f", "deploy/app9/docker-compose.fetcher.yml"])
    assert r.returncode != 0 and "APP9_SOURCE" in r.stderr, \
        f"renders without APP9_SOURCE: {r.returncode} {r.stderr}"
    s = render(BASE + ["-f", "deploy/app9/docker-compose.fetcher.yml"],
               {"APP9_SOURCE": "http://users-api:3000/users"})
    f = s["fetcher"]
    env = f["environment"]
    assert env["CHUNKMILL_PROTOCOL"] == "app9" and env["CHUNKMILL_ACK_WAIT"] == "5s", env
    assert env["CHUNKMILL_SOURCE"] == "http://users-api:3000/users", env
    assert "app9-fetcher" not in s, "the original fetcher runs next to chunkmill's"
    assert "profiles" not in f, f.get("profiles")


def readme():
    with open(os.path.join(ROOT, "README.md")) as fh:
        text = fh.read()
    sec = text[text.index("### Mixed deployment with docker-compose"):]
    sec = sec[:sec.index("### Mixed deployment on Kubernetes")]
    for name in ("deploy/app9/docker-compose.app9.yml",
                 "deploy/app9/docker-compose.original-fetcher.yml",
                 "deploy/app9/docker-compose.fetcher.yml"):
        assert name in sec, f"README does not name {name}"
    assert "healthcheck:\n      disable: true" not in sec and '"node", "fetcher.js"' not in sec, \
        "README still has the old snippet"
    assert "faker" in sec and "gen:users" in sec, "README lacks the gen:users caveat"


if __name__ == "__main__":
    if shutil.which("docker-compose") is None:
        print("SKIP: deploy_compose_app9: docker-compose not found "
              "(Debian: apt-get install docker-compose)")
        sys.exit(77)
    check("steps 1-2: original fetcher on its own, chunkmill mappers and saver in app9 mode",
          steps_1_2)
    check("step 3: chunkmill fetcher in app9 mode, source required", step_3)
    check("README names the files and the gen:users caveat", readme)
    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(0 if results["failed"] == 0 else 1)
