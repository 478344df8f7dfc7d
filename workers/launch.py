"""``tiqu worker``: one solo-pool Celery worker per GPU, each pinned with
``CUDA_VISIBLE_DEVICES`` and named after the GPU it serves (``gpu0@host``).

With no GPU (or ``--gpus cpu``) it starts a single CPU worker. Children are
started with ``exec``-style subprocesses, so CUDA is never initialised in a
parent that forks.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from core.settings import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="start workers (one per GPU)")
    p.add_argument("--gpus", default="auto", help="'auto', 'cpu' or a list like 0,1")
    p.add_argument("--name", help="node name prefix (default: gpuN or cpu)")
    p.add_argument("--queues", default="extract", help="comma-separated: extract,train")
    p.add_argument("--engine", choices=["model", "echo"], default="model",
                   help="echo replaces the model, to measure queue overhead")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (first worker)")
    p.add_argument("--loglevel", default=None,
                   help="celery log level (default: TIQU_LOG_LEVEL, INFO)")
    p.set_defaults(func=run)


def detect_gpus() -> list[str]:
    """GPU indices from CUDA_VISIBLE_DEVICES or nvidia-smi; empty when none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() not in ("", "-1")]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def celery_argv(node: str, queues: str = "extract", app: str = "workers",
                loglevel: str | None = None) -> list[str]:
    """The command line of every tiqu worker process (``tiqu worker``, bench, demo, soak,
    the cluster harness, the tests): ``celery -A APP worker`` on the solo pool (one
    process holds the model), consuming ``queues`` as ``node``, without mingle and
    gossip (no start-up chatter between workers)."""
    return [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "solo",
            "-Q", queues, "-n", node, "--loglevel", loglevel or "INFO",
            "--without-mingle", "--without-gossip"]


def wait_ready(celery_app: Any, procs: Mapping[str, subprocess.Popen[bytes]],
               timeout_s: float, tail: Callable[[], str] = lambda: "") -> float:
    """Seconds until every worker in ``procs`` (node name -> process) answers ``inspect
    ping``, which it does once its model is loaded and its consumer runs. Raises
    :class:`core.errors.TiquError` when one exits first (with ``tail()``, e.g. its log)
    or the time runs out."""
    from core.errors import TiquError

    start = time.monotonic()
    waiting = set(procs)
    while waiting:
        gone = sorted(n for n in waiting if procs[n].poll() is not None)
        if gone:
            raise TiquError(f"worker {', '.join(gone)} exited before it was ready "
                            f"(code {procs[gone[0]].returncode}):\n{tail()}")
        if time.monotonic() - start > timeout_s:
            raise TiquError(f"workers {sorted(waiting)} not ready in {timeout_s:.0f} s:\n"
                            f"{tail()}")
        for reply in celery_app.control.ping(destination=sorted(waiting), timeout=1.0) or []:
            waiting -= set(reply)
    return time.monotonic() - start


def worker_commands(args: argparse.Namespace) -> list[tuple[list[str], dict[str, str]]]:
    """``(argv, extra env)`` for each worker process to start.

    The ``extract`` queue gets one worker per GPU (``workers`` app). The
    ``train`` queue is served by the ``trainer`` app, one process pinned to
    the first GPU.
    """
    gpus = detect_gpus() if args.gpus == "auto" else (
        [] if args.gpus == "cpu" else args.gpus.split(","))
    host = socket.gethostname()
    slots: list[str | None] = list(gpus) or [None]
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    cmds = []
    for n, gpu in enumerate(slots if "extract" in queues else []):
        label = args.name or (f"gpu{gpu}" if gpu is not None else "cpu")
        if args.name and len(slots) > 1:
            label = f"{args.name}-gpu{gpu}"
        env = {"CUDA_VISIBLE_DEVICES": gpu if gpu is not None else "", "TIQU_ENGINE": args.engine}
        if args.metrics_port:
            env["TIQU_METRICS_PORT"] = str(args.metrics_port + n)
        extract_queues = ",".join(q for q in queues if q != "train")
        cmds.append((celery_argv(f"{label}@{host}", extract_queues, "workers", args.loglevel),
                     env))
    if "train" in queues:
        gpu = slots[0]
        label = f"{args.name or 'train'}-{'gpu' + gpu if gpu is not None else 'cpu'}"
        env = {"CUDA_VISIBLE_DEVICES": gpu if gpu is not None else ""}
        cmds.append((celery_argv(f"{label}@{host}", "train", "trainer", args.loglevel), env))
    return cmds


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.loglevel:
        args.loglevel = settings.log_level
    procs = []
    for argv, env in worker_commands(args):
        child_env = {**os.environ, **env, "TIQU_REDIS_URL": settings.redis_url}
        procs.append(subprocess.Popen(argv, env=child_env))

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [p.wait() for p in procs]
    return max(codes) if codes else 0
