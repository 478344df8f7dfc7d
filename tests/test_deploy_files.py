"""Deploy files that would work if applied: each is parsed here, never run.

No container engine, cluster or network is needed. Where a file encodes a
behaviour of tiqu (the probe paths, the training folders, the command lines
the docs give), the check runs tiqu's own code for it: the metrics app that
answers the probes, the CLI parser that reads the commands.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OPS = ROOT / "docs" / "operations.md"
RUNBOOK = DEPLOY / "runbook.md"
TIMEOUTS = ("TIQU_VISIBILITY_TIMEOUT_S", "TIQU_DEAD_WORKER_S")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
#: The images' tiqu user (Dockerfile.gpu, Dockerfile.cpu).
TIQU_UID = 10001

# Redis: k/m/g are powers of 1000, kb/mb/gb of 1024. Kubernetes: Ki/Mi/Gi and k/M/G.
# Docker (mem_limit): b/k/m/g, all powers of 1024.
REDIS_UNITS = {"": 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
K8S_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
DOCKER_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def _size(text: str, units: dict[str, int]) -> int:
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(text).strip())
    assert match and match.group(2) in units, f"unreadable size {text!r}"
    return int(match.group(1)) * units[match.group(2)]


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _compose() -> dict[str, Any]:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    return compose


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d
            for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _docs(path)}


def _pod(objs: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return dict(objs[(kind, name)]["spec"]["template"]["spec"])


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["containers"]
    return dict(container)


def _unit(path: Path) -> dict[str, list[str]]:
    """A systemd unit as {key: [values]} (keys repeat; backslash continues a line)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _unit_env(path: Path) -> dict[str, str]:
    return dict(v.split("=", 1) for v in _unit(path).get("Environment", []))


def _below(path: str, root: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(root)) and path != root


def _redis_flags(command: str) -> dict[str, str]:
    """``--name value`` pairs of a redis-server command line."""
    tokens = shlex.split(command)
    tokens = tokens[tokens.index("redis-server") + 1:]
    return {t[2:]: tokens[i + 1] for i, t in enumerate(tokens) if t.startswith("--")}


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


# --- 1. Redis ------------------------------------------------------------------


def test_redis_caps_its_memory_and_refuses_writes_when_full() -> None:
    """maxmemory with noeviction and AOF in both Redis definitions, under a memory limit
    with room for the AOF rewrite's fork and the client buffers."""
    services = _compose()["services"]
    compose_flags = _redis_flags(services["redis"]["command"][2])
    objs = _k8s()
    redis_c = _container(_pod(objs, "StatefulSet", "redis"))
    k8s_flags = _redis_flags(" ".join(redis_c["args"]))
    for where, flags in (("compose", compose_flags), ("k8s", k8s_flags)):
        assert flags.get("appendonly") == "yes", where
        assert flags.get("appendfsync") == "everysec", where
        assert flags.get("maxmemory-policy") == "noeviction", where
        assert _size(flags.get("maxmemory", "0"), REDIS_UNITS) > 0, where
    assert compose_flags["maxmemory"] == k8s_flags["maxmemory"]
    maxmemory = _size(k8s_flags["maxmemory"], REDIS_UNITS)
    limit = _size(redis_c["resources"]["limits"]["memory"], K8S_UNITS)
    request = _size(redis_c["resources"]["requests"]["memory"], K8S_UNITS)
    assert limit >= 1.5 * maxmemory and request >= maxmemory
    assert _size(services["redis"]["mem_limit"], DOCKER_UNITS) >= 1.5 * maxmemory


# --- 2. One visibility timeout, one TIQU_DEAD_WORKER_S ------------------------------


def test_one_visibility_timeout_and_one_dead_worker_bound_everywhere() -> None:
    """Every tiqu process (workers, trainer, Flower) in every deploy file gets the same
    two values, which are also the settings' defaults that env.example lists."""
    found: dict[str, dict[str, str]] = {name: {} for name in TIMEOUTS}
    for name, svc in _compose()["services"].items():
        if name == "redis":
            continue
        for var in TIMEOUTS:
            found[var][f"compose {name}"] = str(svc["environment"][var])
    objs = _k8s()
    config = objs[("ConfigMap", "tiqu-config")]["data"]
    for var in TIMEOUTS:
        found[var]["k8s configmap"] = config[var]
    for (kind, name), _obj in objs.items():
        if kind != "Deployment":
            continue
        container = _container(_pod(objs, kind, name))
        sources = [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
        assert "tiqu-config" in sources, name
        assert not {e["name"] for e in container.get("env", [])} & set(TIMEOUTS), name
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        env = _unit_env(unit)
        for var in TIMEOUTS:
            found[var][unit.name] = env[var]
    example = (DEPLOY / "env.example").read_text()
    for var in TIMEOUTS:
        (value,) = re.findall(rf"^#{var}=(\S+)$", example, flags=re.M)
        found[var]["env.example"] = value
        found[var]["Settings default"] = str(Settings.model_fields[var[5:].lower()].default)
    for var, values in found.items():
        assert len(set(values.values())) == 1, f"{var} differs: {values}"
    assert len(found["TIQU_DEAD_WORKER_S"]) >= 9  # 4 compose services, k8s, 3 units, ...
    visibility = int(found["TIQU_VISIBILITY_TIMEOUT_S"]["env.example"])
    dead = int(found["TIQU_DEAD_WORKER_S"]["env.example"])
    assert visibility > dead >= 5
    # docs/operations.md explains both, with the values the files use.
    section = _section(OPS.read_text(), "Two timeouts")
    assert f"| `TIQU_DEAD_WORKER_S` | {dead} | how long" in section
    assert f"| `TIQU_VISIBILITY_TIMEOUT_S` | {visibility} | how long" in section
    for words in ("fences itself", "kombu", "training run", "smallest visibility timeout"):
        assert words in section, words


# --- 3. Training in Kubernetes -------------------------------------------------------


def _parse_tiqu(argv: list[str]) -> Any:
    """``argv`` (after ``tiqu``) parsed by tiqu's own CLI, as ``tiqu.cli.main`` does."""
    from tiqu.cli import COMMANDS, _top_parser

    parser = _top_parser()
    module = importlib.import_module(COMMANDS[argv[0]][0])
    module.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _documented_commands(text: str) -> list[list[str]]:
    """Every ``kubectl ...`` command line in ``text`` (comments of a YAML file, or a
    Markdown code block), continuation lines joined, comments stripped."""
    text = re.sub(r"\\\n\s*#?\s*", " ", text)
    commands = []
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line.startswith("kubectl "):
            commands.append(shlex.split(line, comments=True))
    return commands


def test_k8s_training_keeps_data_runs_and_checkpoints_on_a_volume() -> None:
    objs = _k8s()
    deployment = objs[("Deployment", "tiqu-train")]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = _pod(objs, "Deployment", "tiqu-train")
    container = _container(pod)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    ((volume, claim),) = claims.items()
    pvc = objs[("PersistentVolumeClaim", claim)]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert _size(pvc["spec"]["resources"]["requests"]["storage"], K8S_UNITS) >= 10 * 2**30
    (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    env = {e["name"]: e.get("value") for e in container["env"]}
    data_dir, runs_dir = env["TIQU_TRAIN_DATA_DIR"], env["TIQU_TRAIN_RUNS_DIR"]
    assert _below(data_dir, mount) and _below(runs_dir, mount)
    # The folders exist before anyone copies into them (kubectl cp needs the parent).
    command = " ".join(container["command"])
    assert 'mkdir -p "$TIQU_TRAIN_DATA_DIR" "$TIQU_TRAIN_RUNS_DIR" && exec celery' in command
    assert pod["securityContext"]["fsGroup"] == TIQU_UID

    # The documented steps (train.yaml's header and docs/operations.md) are real
    # commands whose paths lie where the worker reads and writes.
    section = _section(OPS.read_text(), "Training in Kubernetes")
    commands = (_documented_commands((DEPLOY / "k8s" / "train.yaml").read_text())
                + _documented_commands(section))
    seen: set[str] = set()
    for argv in commands:
        if argv[:4] == ["kubectl", "-n", "tiqu", "cp"]:
            assert argv[argv.index("-c") + 1] == container["name"], argv
            source, dest = [a for i, a in enumerate(argv[4:], 4)
                            if a != "-c" and argv[i - 1] != "-c"]
            (path,) = [a.split(":", 1)[1] for a in (source, dest) if a.startswith("$POD:")]
            assert _below(path, data_dir) or _below(path, runs_dir), argv
            seen.add("cp in" if dest.startswith("$POD:") else "cp out")
        elif "exec" in argv:
            assert argv[argv.index("exec") + 1] == "deploy/tiqu-train", argv
            inside = argv[argv.index("--") + 1:]
            if inside[0] != "tiqu":
                continue
            args = _parse_tiqu(inside[1:])
            if args.command == "train":
                data = args.data if isinstance(args.data, list) else [args.data]
                assert args.submit and data and all(_below(d, data_dir) for d in data)
                assert _below(str(args.out), runs_dir)
                seen.add("train")
            elif args.command == "adapters" and args.action == "publish":
                assert _below(str(args.dir), runs_dir)
                seen.add("publish")
            else:
                seen.add(f"{args.command}")
    assert {"cp in", "cp out", "train", "publish", "adapters", "data"} <= seen, seen


def test_training_redelivery_claims_hold() -> None:
    """What the deploy files say about a killed run: its message is acknowledged only at
    the end, tracked by the dead-worker sweep (one queue, the guard installed), leased
    for TIQU_DEAD_WORKER_S, and the run resumes from the volume's checkpoints."""
    tasks = ast.parse((ROOT / "trainer" / "tasks.py").read_text())
    decorators = [d for node in ast.walk(tasks) if isinstance(node, ast.FunctionDef)
                  for d in node.decorator_list if isinstance(d, ast.Call)]
    flags = {kw.arg: getattr(kw.value, "value", None) for d in decorators
             if any(getattr(k.value, "id", None) == "TRAIN_TASK" for k in d.keywords)
             for kw in d.keywords}
    assert flags.get("acks_late") is True and flags.get("reject_on_worker_lost") is True
    leases = [n for n in ast.walk(tasks) if isinstance(n, ast.Call)
              and getattr(n.func, "id", None) == "RunLease"]
    assert leases and all(ast.unparse(n.args[-1]).endswith("dead_worker_s") for n in leases)
    assert "guard.install(" in (ROOT / "trainer" / "celery_app.py").read_text()
    # One queue per trainer process: the reliable fetch and the sweep track it.
    compose_train = _compose()["services"]["train"]["command"][2]
    k8s_train = " ".join(_container(_pod(_k8s(), "Deployment", "tiqu-train"))["command"])
    unit_train = _unit(DEPLOY / "systemd" / "tiqu-train.service")["ExecStart"][0]
    for line in (compose_train, k8s_train, unit_train):
        assert re.search(r"-Q train(\s|$)", line), line
    for path in (DEPLOY / "k8s" / "train.yaml", DEPLOY / "systemd" / "tiqu-train.service"):
        text = path.read_text()
        assert "TIQU_DEAD_WORKER_S" in text and "checkpoint" in text, path.name
        assert "redelivered (acks_late)" not in text, path.name
    ops = _section(OPS.read_text(), "Training in Kubernetes")
    assert "within `TIQU_DEAD_WORKER_S`" in ops and "newest checkpoint" in ops


# --- 4. Scheduling, cache, revision ------------------------------------------------------


def test_gpu_pods_go_to_gpu_nodes_and_other_pods_stay_off_them() -> None:
    objs = _k8s()
    for name in ("tiqu-worker", "tiqu-train"):
        pod = _pod(objs, "Deployment", name)
        assert pod["nodeSelector"], name
        assert GPU_TOLERATION in pod["tolerations"], name
        assert _container(pod)["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["securityContext"]["runAsUser"] == TIQU_UID, name
    for kind, name in (("StatefulSet", "redis"), ("Deployment", "flower")):
        pod = _pod(objs, kind, name)
        assert not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        assert "nvidia.com/gpu" not in _container(pod)["resources"].get("limits", {})


def test_hf_home_lies_on_a_cache_volume_everywhere() -> None:
    objs = _k8s()
    hf_home = objs[("ConfigMap", "tiqu-config")]["data"]["HF_HOME"]
    for name in ("tiqu-worker", "tiqu-train"):
        pod = _pod(objs, "Deployment", name)
        volumes = {v["name"] for v in pod["volumes"]}
        mounts = [m for m in _container(pod)["volumeMounts"]
                  if PurePosixPath(hf_home).is_relative_to(m["mountPath"])]
        assert mounts and all(m["name"] in volumes for m in mounts), name
    compose = _compose()
    for name, svc in compose["services"].items():
        if name in ("redis", "flower"):
            continue
        assert svc["environment"]["HF_HOME"] == hf_home, name
        targets = [v.split(":")[1] for v in svc["volumes"] if v.split(":")[0] in
                   compose["volumes"]]
        assert any(PurePosixPath(hf_home).is_relative_to(t) for t in targets), name
    for unit in ("tiqu-worker@.service", "tiqu-train.service"):
        path = DEPLOY / "systemd" / unit
        writable = " ".join(_unit(path)["ReadWritePaths"]).split()
        assert _unit_env(path)["HF_HOME"] == hf_home
        assert any(PurePosixPath(hf_home).is_relative_to(w) for w in writable), unit
    for kind in ("gpu", "cpu"):
        assert f"HF_HOME={hf_home}" in (DEPLOY / f"Dockerfile.{kind}").read_text()


def _hub_model_step(kind: str, hub_dir: Path) -> str:
    """The Dockerfile's RUN step that downloads a hub model, as the shell runs it."""
    lines = (DEPLOY / f"Dockerfile.{kind}").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('RUN if [ -n "$HUB_MODEL" ]'))
    step = []
    for line in lines[start:]:
        step.append(line)
        if not line.endswith("\\"):
            break
    script = "\n".join(step).removeprefix("RUN ").replace("\\\n", " ")
    return script.replace("/opt/tiqu/models/hub", str(hub_dir))


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_a_hub_model_is_baked_in_only_at_a_pinned_commit(kind: str, tmp_path: Path) -> None:
    """The images pin a hub model's commit at build time (TIQU_BASE_MODEL_REVISION pins
    it at load time: tests/test_hub_revision.py). The build step is run here with a
    stand-in for the download."""
    text = (DEPLOY / f"Dockerfile.{kind}").read_text()
    assert "ARG HUB_MODEL=" in text and "ARG HUB_REVISION=" in text
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/called\n')
    (fake / "python").chmod(0o755)
    script = _hub_model_step(kind, tmp_path / "hub")
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    commit = "0123456789abcdef0123456789abcdef01234567"
    for model, revision, ok in (("", "", True), ("org/m", "", False), ("org/m", "main", False),
                                ("org/m", commit[:12], False), ("org/m", commit, True)):
        run = subprocess.run(["sh", "-c", script], env={**env, "HUB_MODEL": model,
                             "HUB_REVISION": revision}, capture_output=True, text=True)
        assert (run.returncode == 0) == ok, (model, revision, run.stderr)
        called = tmp_path / "called"
        if model and ok:
            assert called.read_text().splitlines()[-3:] == [model, commit, str(tmp_path / "hub")]
        else:
            assert not called.exists(), (model, revision)
        called.unlink(missing_ok=True)
    for name in ("Dockerfile.gpu", "Dockerfile.cpu"):
        assert f"--uid {TIQU_UID} --gid {TIQU_UID}" in (DEPLOY / name).read_text()


# --- 5. Probes ------------------------------------------------------------------------------


def _probe(app: Any, path: str) -> str:
    statuses: list[str] = []
    b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                 lambda status, headers: statuses.append(status)))
    return statuses[0].split()[0]


def test_k8s_worker_probes_ask_its_own_worker_over_http() -> None:
    objs = _k8s()
    worker = _container(_pod(objs, "Deployment", "tiqu-worker"))
    command = worker["command"]
    port = int(command[command.index("--metrics-port") + 1])
    assert {"name": "metrics", "containerPort": port} in worker["ports"]
    paths = {}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = worker[kind]
        assert set(probe) & {"exec", "tcpSocket", "grpc"} == set(), kind
        assert probe["httpGet"]["port"] == "metrics", kind
        paths[kind] = probe["httpGet"]["path"]
    assert paths == {"startupProbe": "/livez", "livenessProbe": "/livez",
                     "readinessProbe": "/readyz"}

    # What those paths answer, from the worker's own metrics app.
    from prometheus_client import CollectorRegistry

    from workers.metrics import health_app

    class Breaker:
        opened = False

    class Runtime:
        breaker = Breaker()
        _engine: object | None = None

    runtime = Runtime()
    app = health_app(runtime, CollectorRegistry())
    assert (_probe(app, "/livez"), _probe(app, "/readyz")) == ("200", "503")  # loading
    runtime._engine = object()
    assert (_probe(app, "/livez"), _probe(app, "/readyz")) == ("200", "200")  # serving
    runtime.breaker.opened = True
    assert (_probe(app, "/livez"), _probe(app, "/readyz")) == ("503", "503")  # breaker open

    # The trainer asks its own worker over HTTP as well (trainer/metrics.py): its port
    # comes from TIQU_METRICS_PORT, and a run in progress keeps both probes green.
    train = _container(_pod(objs, "Deployment", "tiqu-train"))
    env = {e["name"]: e.get("value") for e in train["env"]}
    assert {"name": "metrics", "containerPort": int(env["TIQU_METRICS_PORT"])} in train["ports"]
    for kind, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert train[kind]["httpGet"] == {"path": path, "port": "metrics"}, kind
    assert train["livenessProbe"]["failureThreshold"] * train["livenessProbe"]["periodSeconds"] \
        >= 300, "a liveness probe must not kill a run over a slow moment"
    from trainer.metrics import TrainMetrics

    metrics = TrainMetrics(CollectorRegistry())
    from core.health import health_app as probe_app

    trainer_app = probe_app(metrics.registry, metrics.status)
    assert (_probe(trainer_app, "/livez"), _probe(trainer_app, "/readyz")) == ("200", "503")
    metrics.ready = True
    metrics.started()  # a run in progress
    assert (_probe(trainer_app, "/livez"), _probe(trainer_app, "/readyz")) == ("200", "200")


# --- 6. Compose --------------------------------------------------------------------------------


def test_compose_publishes_metrics_and_keeps_adapters_on_the_host() -> None:
    compose = _compose()
    services = compose["services"]
    host_ports = []
    for name, svc in services.items():
        if not re.fullmatch(r"worker-gpu\d+", name):
            continue
        gpu = int(name.removeprefix("worker-gpu"))
        port = svc["command"][svc["command"].index("--metrics-port") + 1]
        (published,) = svc["ports"]
        bind, host, inside = published.rsplit(":", 2)
        assert bind == "${METRICS_BIND:-127.0.0.1}" and inside == port, name
        assert int(host) == 9100 + gpu, name
        host_ports.append(host)
    assert len(host_ports) >= 2 and len(set(host_ports)) == len(host_ports)
    adapter_dir = services["worker-gpu0"]["environment"]["TIQU_ADAPTER_DIR"]
    for name in ("worker-gpu0", "worker-gpu1", "train"):
        binds = [v for v in services[name]["volumes"] if v.endswith(":" + adapter_dir)]
        (bind,) = binds
        assert bind.startswith("${ADAPTER_DIR:?"), name  # a host folder, not a named volume
    # Every variable compose.yaml reads is listed in compose.env.example.
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)[:}]", (DEPLOY / "compose.yaml").read_text()))
    example = (DEPLOY / "compose.env.example").read_text()
    listed = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    assert used - {"TIQU_LOG_LEVEL"} <= listed, used - listed
    assert "install -d -o 10001 -g 10001" in example


# --- 7. Smaller fixes --------------------------------------------------------------------------


def test_keda_comments_say_what_keda_does() -> None:
    """cooldownPeriod only governs scaling to zero; the HPA behaviour paces scale-down."""
    text = (DEPLOY / "k8s" / "keda.yaml").read_text()
    scaled = _k8s()[("ScaledObject", "tiqu-worker")]["spec"]
    assert scaled["minReplicaCount"] >= 1
    before = text[:text.index("  cooldownPeriod:")].splitlines()
    comment = []
    for line in reversed(before):
        if not line.strip().startswith("#"):
            break
        comment.insert(0, line)
    assert "scaling to zero" in " ".join(comment) and "minReplicaCount" in " ".join(comment)
    down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 300
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    assert "one pod a minute" in text and "5 minutes" in text


def test_gpu_image_has_no_cuda_base_image() -> None:
    """torch's PyPI wheels carry CUDA; the GPU image starts from plain Python."""
    text = (DEPLOY / "Dockerfile.gpu").read_text()
    assert re.findall(r"^FROM (\S+)", text, flags=re.M) == ["python:3.11-slim"]
    assert "nvidia/cuda" not in text and "add-apt-repository" not in text
    (torch,) = [line for line in text.splitlines() if line.startswith("RUN pip install \"torch")]
    assert "--index-url" not in torch  # PyPI: the CUDA build


def _links(path: Path) -> list[str]:
    return [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", path.read_text())
            if not t.startswith(("http://", "https://", "#"))]


def test_runbook_and_operations_references_exist() -> None:
    for doc in (RUNBOOK, OPS):
        for target in _links(doc):
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
    text = RUNBOOK.read_text()
    for name in set(re.findall(r"[\w./-]+\.md\b", text)) - {"runbook.md"}:
        assert any((base / name).exists() for base in (ROOT, ROOT / "docs", DEPLOY)), name
    for name in set(re.findall(r"\b(?:k8s|systemd|monitoring)/[\w.@-]+\.(?:yaml|service|json)",
                               text)):
        assert (DEPLOY / name).exists(), name
    for name in set(re.findall(r"`((?:core|workers|trainer|tiqu)/[\w/]+\.py)`", text)):
        assert (ROOT / name).exists(), name
    ops = OPS.read_text()
    # Files under deploy/ that the page names (deploy/.env is the operator's own).
    for name in set(re.findall(r"\bdeploy/[\w/@-]*\.[\w.]+\b", ops)) - {"deploy/.env"}:
        assert (ROOT / name).exists(), name
