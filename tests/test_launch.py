"""``tiqu worker`` plans one pinned, named process per GPU, and trains on its own app."""

from __future__ import annotations

import argparse

from workers.launch import worker_commands


def _args(**kw: object) -> argparse.Namespace:
    base = {"gpus": "0,1", "name": None, "queues": "extract", "engine": "model",
            "metrics_port": None, "loglevel": "INFO"}
    return argparse.Namespace(**{**base, **kw})


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_one_solo_worker_per_gpu_pinned_and_named() -> None:
    cmds = worker_commands(_args(metrics_port=9100))
    assert [e["CUDA_VISIBLE_DEVICES"] for _, e in cmds] == ["0", "1"]
    assert [_opt(a, "-n").split("@")[0] for a, _ in cmds] == ["gpu0", "gpu1"]
    assert all(_opt(a, "--pool") == "solo" and _opt(a, "-A") == "workers" for a, _ in cmds)
    assert [e["TIQU_METRICS_PORT"] for _, e in cmds] == ["9100", "9101"]


def test_cpu_only_gives_one_cpu_worker() -> None:
    (argv, env), = worker_commands(_args(gpus="cpu"))
    assert env["CUDA_VISIBLE_DEVICES"] == "" and _opt(argv, "-n").startswith("cpu@")


def test_train_queue_runs_the_trainer_app() -> None:
    cmds = worker_commands(_args(queues="extract,train", name="nodeA"))
    apps = [(_opt(a, "-A"), _opt(a, "-Q")) for a, _ in cmds]
    assert apps == [("workers", "extract"), ("workers", "extract"), ("trainer", "train")]
    assert _opt(cmds[0][0], "-n").startswith("nodeA-gpu0@")
