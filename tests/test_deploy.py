"""Deploy files (parsed, not run: no container engine here) and graceful operations.

The graceful-shutdown tests run real workers on real Redis with the echo
engine: what is under test is the queue's behaviour on SIGTERM, not the model,
and echo workers start in seconds.
"""

from __future__ import annotations

import importlib.util
import re
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from core.queue import make_celery
from core.settings import Settings
from producer import Client
from tests.conftest import ROOT, WorkerProc, start_worker, worker_env

DEPLOY = ROOT / "deploy"
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s by (kind, name)."""
    return {(d["kind"], d["metadata"]["name"]): d
            for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _docs(path)}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _unit(path: Path) -> dict[str, list[str]]:
    """A systemd unit as {key: [values]} (keys repeat; backslash continues a line)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


# --- deploy files ----------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert _docs(path), f"{path} holds no YAML document"


def test_compose_redis_workers_per_gpu_trainer_and_flower() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and '--requirepass "$$REDIS_PASSWORD"' in redis_cmd
    assert services["redis"]["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD")
    gpu_workers = {n: s for n, s in services.items() if re.fullmatch(r"worker-gpu\d+", n)}
    assert len(gpu_workers) >= 2
    reserved: list[str] = []
    for name, svc in gpu_workers.items():
        gpu = name.removeprefix("worker-gpu")
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
        reserved += device["device_ids"]
        assert device["device_ids"] == [gpu], name
        # The container sees its one reserved GPU as device 0.
        assert svc["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
        assert svc["command"][:2] == ["tiqu", "worker"] and f"gpu{gpu}" in svc["command"]
        assert svc["environment"]["TIQU_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
        check = " ".join(svc["healthcheck"]["test"])
        assert f"tiqu status --ready --worker gpu{gpu}@" in check
        assert svc["stop_signal"] == "SIGTERM" and int(svc["stop_grace_period"][:-1]) >= 60
    assert len(set(reserved)) == len(reserved)
    train = services["train"]
    assert train["command"][:2] == ["sh", "-c"]
    assert train["command"][2].startswith("exec celery -A trainer worker ")
    assert " -Q train " in train["command"][2]
    assert train["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    flower = services["flower"]
    assert flower["command"][:2] == ["tiqu", "flower"]
    assert flower["environment"]["TIQU_FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"] + services["redis"]["ports"])


def test_k8s_gpu_workers_probes_trainer_flower_auth_and_keda() -> None:
    objs = _k8s()
    worker = _container(objs[("Deployment", "tiqu-worker")])
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["livenessProbe"]["httpGet"]["port"] == "metrics"
    assert {"name": "metrics", "containerPort": 9100} in worker["ports"]
    assert "--metrics-port" in worker["command"]
    assert objs[("ConfigMap", "tiqu-config")]["data"]["TIQU_METRICS_ADDR"] == "0.0.0.0"
    grace = objs[("Deployment", "tiqu-worker")]["spec"]["template"]["spec"]
    assert grace["terminationGracePeriodSeconds"] >= 60
    train = _container(objs[("Deployment", "tiqu-train")])
    assert "-Q train" in " ".join(train["command"]) and "-A trainer" in " ".join(train["command"])
    assert train["resources"]["limits"]["nvidia.com/gpu"] == 1
    flower_dep = objs[("Deployment", "flower")]
    flower = _container(flower_dep)
    env = {e["name"]: e for e in flower["env"]}
    assert env["TIQU_FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "flower-basic-auth"
    assert flower["readinessProbe"]["httpGet"]["path"] == "/healthcheck"
    service = objs[("Service", "flower")]
    assert service["spec"]["selector"] == flower_dep["spec"]["template"]["metadata"]["labels"]
    scaled = objs[("ScaledObject", "tiqu-worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "tiqu-worker"
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "extract"
    assert ("TriggerAuthentication", trigger["authenticationRef"]["name"]) in objs
    redis_args = " ".join(_container(objs[("StatefulSet", "redis")])["args"])
    assert "--appendonly yes" in redis_args and '--requirepass "$REDIS_PASSWORD"' in redis_args


def test_k8s_secret_and_config_references_resolve() -> None:
    objs = _k8s()
    secret_keys = set(objs[("Secret", "tiqu-secrets")]["stringData"])
    text = "\n".join(p.read_text() for p in (DEPLOY / "k8s").glob("*.yaml"))
    for name, key in re.findall(r"secretKeyRef: \{name: ([\w-]+), key: ([\w-]+)\}", text):
        assert ("Secret", name) in objs and key in secret_keys, (name, key)
    for obj in objs.values():
        if obj["kind"] in ("Deployment", "StatefulSet"):
            for source in _container(obj).get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in objs


def test_systemd_units_pin_gpus_and_stop_warmly() -> None:
    worker = _unit(DEPLOY / "systemd" / "tiqu-worker@.service")
    assert "CUDA_VISIBLE_DEVICES=%i" in worker["Environment"]
    (start,) = worker["ExecStart"]
    assert "-n gpu%i@%H" in start and "--pool solo" in start and "-Q extract" in start
    assert worker["Restart"] == ["on-failure"] and worker["KillSignal"] == ["SIGTERM"]
    assert int(worker["TimeoutStopSec"][0]) >= 60
    assert "tiqu status --ready --worker gpu%i@%H" in worker["ExecStartPost"][0]
    train = _unit(DEPLOY / "systemd" / "tiqu-train.service")
    assert "-Q train" in train["ExecStart"][0] and train["KillSignal"] == ["SIGTERM"]
    assert int(train["TimeoutStopSec"][0]) >= int(worker["TimeoutStopSec"][0])
    flower = _unit(DEPLOY / "systemd" / "tiqu-flower.service")
    assert "tiqu flower --address 127.0.0.1" in flower["ExecStart"][0]


def _celery_worker_commands() -> dict[str, str]:
    """Every ``celery ... worker`` command line in the deploy files, by where it is."""
    (compose,) = _docs(DEPLOY / "compose.yaml")
    found = {f"compose {name}": " ".join(svc["command"])
             for name, svc in compose["services"].items()
             if "celery" in " ".join(svc.get("command") or [])}
    for key, obj in _k8s().items():
        if obj["kind"] in ("Deployment", "StatefulSet"):
            line = " ".join(_container(obj).get("command") or [])
            if "celery" in line:
                found[f"k8s {key[1]}"] = line
    for unit in (DEPLOY / "systemd").glob("*.service"):
        for line in _unit(unit).get("ExecStart", []):
            if "celery" in line:
                found[unit.name] = line
    return found


def test_every_worker_command_takes_its_log_level_from_tiqu_log_level() -> None:
    commands = _celery_worker_commands()
    assert {"compose train", "k8s tiqu-train", "tiqu-worker@.service",
            "tiqu-train.service"} <= set(commands)
    for where, line in commands.items():
        # sh expands the variable: the command runs under sh -c, and the level is
        # ${TIQU_LOG_LEVEL:-INFO} ($$ escapes the $ for compose and systemd).
        assert re.search(r'--loglevel "\$\$?\{TIQU_LOG_LEVEL:-INFO\}"', line), where
        assert "sh -c" in line or line.startswith("/bin/sh -c"), where
    # `tiqu worker` derives --loglevel from the setting (the next test).
    (compose,) = _docs(DEPLOY / "compose.yaml")
    assert "--loglevel" not in " ".join(compose["services"]["worker-gpu0"]["command"])


def test_tiqu_worker_passes_tiqu_log_level_to_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import subprocess

    from workers import launch

    started: list[list[str]] = []

    class FakeProc:
        def __init__(self, argv: list[str], env: dict[str, str]) -> None:
            started.append(argv)

        def wait(self) -> int:
            return 0

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeProc)
    monkeypatch.setattr(launch.signal, "signal", lambda *a: None)
    args = argparse.Namespace(gpus="cpu", name=None, queues="extract,train", engine="echo",
                              metrics_port=None, loglevel=None)
    assert launch.run(args, Settings(log_level="WARNING")) == 0
    assert len(started) == 2
    for argv in started:
        assert argv[argv.index("--loglevel") + 1] == "WARNING"
    args.loglevel = "DEBUG"  # the flag still wins
    started.clear()
    launch.run(args, Settings(log_level="WARNING"))
    assert all(a[a.index("--loglevel") + 1] == "DEBUG" for a in started)


def test_dockerfiles_install_the_package_and_run_a_worker() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    for kind, base, torch_line in (
        ("gpu", "FROM python:3.11-slim", 'pip install "torch==${TORCH_VERSION}"'),
        ("cpu", "FROM python:3.11-slim", 'pip install "torch==2.13.0" --index-url '
                                         "https://download.pytorch.org/whl/cpu"),
    ):
        text = (DEPLOY / f"Dockerfile.{kind}").read_text()
        assert base in text and torch_line in text
        # The base install is the producer's: images need the worker's extras.
        extras = re.search(r'pip install "\.\[([\w,]+)\]"', text)
        assert extras and {"worker", "train", "flower"} <= set(extras.group(1).split(",")), kind
        assert text.index(torch_line) < text.index("COPY pyproject.toml")
        assert 'CMD ["tiqu", "worker"' in text and "STOPSIGNAL SIGTERM" in text
        for pkg in packages:  # every package the wheel includes is in the image
            name = pkg.rstrip("*")
            assert f"COPY {name} {name}" in text, (kind, name)
            assert f"!{name}/**" in (DEPLOY / f"Dockerfile.{kind}.dockerignore").read_text()


def _env_example_module() -> Any:
    spec = importlib.util.spec_from_file_location("gen_env", DEPLOY / "gen-env-example.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_env_example_lists_every_setting() -> None:
    text = (DEPLOY / "env.example").read_text()
    listed = re.findall(r"^#?TIQU_([A-Z0-9_]+)=", text, flags=re.M)
    assert sorted(listed) == sorted(f.upper() for f in Settings.model_fields)
    assert text == _env_example_module().render(), (
        "deploy/env.example is stale: python deploy/gen-env-example.py > deploy/env.example")


def test_every_tiqu_variable_in_deploy_files_is_a_setting() -> None:
    fields = {f"TIQU_{f.upper()}" for f in Settings.model_fields}
    paths = [p for p in DEPLOY.rglob("*") if p.is_file()] + [ROOT / "docs" / "operations.md"]
    used: dict[str, set[str]] = {}
    for path in paths:
        for var in re.findall(r"\bTIQU_[A-Z0-9_]+", path.read_text()):
            used.setdefault(var, set()).add(str(path.relative_to(ROOT)))
    unknown = {v: sorted(p) for v, p in used.items() if v not in fields}
    assert not unknown, f"not Settings fields: {unknown}"
    assert {"TIQU_REDIS_URL", "TIQU_FLOWER_BASIC_AUTH", "TIQU_METRICS_ADDR"} <= set(used)

# --- graceful operations ---------------------------------------------------

SLOW_APP = '''\
"""The tiqu worker app with a slow batch, so a test can stop it mid-batch."""
import os
import time
from pathlib import Path

from workers.celery_app import app, runtime  # noqa: F401  (celery -A slowapp)


def _slow(_runtime, envelopes, _seconds):
    # After the engine ran, before results are stored and messages acked:
    # the window a warm shutdown must not cut short.
    Path(os.environ["SLOW_MARK"]).write_text(str(len(envelopes)))
    time.sleep(float(os.environ["SLOW_BATCH_S"]))


runtime.after_batch.append(_slow)
'''


def _start_pair(specs: list[tuple[str, dict[str, str], Path, str, str]]) -> list[WorkerProc]:
    """Start workers concurrently (imports dominate start-up), in spec order."""
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = [pool.submit(start_worker, name, env, log, queues, 120, app)
                   for name, env, log, queues, app in specs]
        return [f.result() for f in futures]


def _echo_env(redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = worker_env(redis_url, tmp_path, TIQU_ENGINE="echo", **extra)
    env["PYTHONPATH"] = f"{ROOT}:{tmp_path}"
    return env


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def _stop_and_wait(w: WorkerProc, timeout_s: float = 30) -> int:
    w.proc.send_signal(15)  # SIGTERM: warm shutdown
    return w.proc.wait(timeout_s)


def _answered_by(client: Client, task_ids: list[str]) -> list[str | None]:
    return [e["worker"] if e else None for e in client.poll(task_ids)]


def test_sigterm_mid_batch_stores_the_batch_and_requeues_the_rest(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list
) -> None:
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    mark = tmp_path / "batch-started"
    slow = _echo_env(redis_url, tmp_path, TIQU_BATCH_SIZE="4", TIQU_FLUSH_INTERVAL_S="30",
                     SLOW_MARK=str(mark), SLOW_BATCH_S="3")
    spare = _echo_env(redis_url, tmp_path)
    w1, w2 = _start_pair([("slow", slow, tmp_path / "w1.log", "extract", "slowapp"),
                          ("spare", spare, tmp_path / "w2.log", "standby", "workers")])
    workers.extend([w1, w2])
    app = make_celery(Settings(redis_url=redis_url))
    client = Client(redis_db)

    first = client.submit_many([(f"a{i}", f"text {i}") for i in range(2)])
    # Two messages wait in w1's batch buffer for the 30 s flush; tiqu_info sees them.
    _wait(lambda: (app.control.broadcast("tiqu_info", destination=[w1.name], reply=True,
                                         timeout=1, limit=1) or [{}])[0]
          .get(w1.name, {}).get("in_flight") == 2, 20, "2 buffered tasks on w1")
    more = client.submit_many([(f"a{i}", f"text {i}") for i in range(2, 6)])
    sent = first + more
    ids = [s.task_id for s in sent]
    _wait(mark.exists, 20, "the slow batch to start")
    in_batch = int(mark.read_text())
    assert in_batch == 4  # the 2 buffered + the 2 that filled the batch
    assert _stop_and_wait(w1) == 0
    assert "Warm shutdown" in w1.log()

    done = _answered_by(client, ids)
    assert done[:4] == [w1.name] * 4, done  # the running batch finished and was stored
    assert done[4:] == [None, None]
    assert redis_db.llen("extract") == 2 and redis_db.hlen("unacked") == 0

    app.control.add_consumer("extract", destination=[w2.name], reply=True, timeout=5)
    got = dict(client.collect(ids, timeout_s=30))
    assert [got[i]["id"] for i in range(6)] == [s.id for s in sent]
    assert [got[i]["worker"] for i in range(6)] == [w1.name] * 4 + [w2.name] * 2
    app.close()


def test_sigterm_returns_buffered_messages_to_the_queue(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list
) -> None:
    held = _echo_env(redis_url, tmp_path, TIQU_BATCH_SIZE="8", TIQU_FLUSH_INTERVAL_S="30")
    spare = _echo_env(redis_url, tmp_path)
    w1, w2 = _start_pair([("held", held, tmp_path / "w1.log", "extract", "workers"),
                          ("spare2", spare, tmp_path / "w2.log", "standby", "workers")])
    workers.extend([w1, w2])
    client = Client(redis_db)
    sent = client.submit_many([(f"b{i}", f"text {i}") for i in range(3)])
    _wait(lambda: redis_db.hlen("unacked") == 3, 20, "w1 to take 3 messages")
    assert _stop_and_wait(w1) == 0
    assert redis_db.llen("extract") == 3 and redis_db.hlen("unacked") == 0
    app = make_celery(Settings(redis_url=redis_url))
    app.control.add_consumer("extract", destination=[w2.name], reply=True, timeout=5)
    got = dict(client.collect([s.task_id for s in sent], timeout_s=30))
    assert {e["worker"] for e in got.values()} == {w2.name}
    assert sorted(e["id"] for e in got.values()) == ["b0", "b1", "b2"]
    app.close()
