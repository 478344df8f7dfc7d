"""Shared fixtures: a Redis database of the tests' own, tiny models, real workers.

Queue tests use ``TIQU_TEST_REDIS_URL`` (default db 14), FLUSHDB before and
after each test (never FLUSHALL), and start real ``celery worker`` processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from workers.launch import celery_argv

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("TIQU_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as err:  # pragma: no cover - environment problem
        raise RuntimeError(f"no Redis at {TEST_REDIS_URL}; run deploy/ensure-redis.sh") from err
    return TEST_REDIS_URL


@pytest.fixture()
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    """The tests' own database, flushed before and after the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama chat model with a byte-level BPE tokenizer."""
    from tests.tiny import build_model

    return build_model(tmp_path_factory.mktemp("tiny") / "bpe", "bpe", seed=0)


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30) -> None:
        """Warm shutdown (SIGTERM): finish the current batch, then exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def worker_env(redis_url: str, model_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIQU_")}
    env.update({
        "TIQU_REDIS_URL": redis_url,
        "TIQU_BASE_MODEL": str(model_dir),
        "TIQU_BATCH_SIZE": "8",
        "TIQU_FLUSH_INTERVAL_S": "0.05",
        "PYTHONPATH": str(ROOT),
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONUNBUFFERED": "1",
        # Several workers share two cores in the suite; one thread each avoids
        # oversubscription that made generation 4-10x slower.
        "OMP_NUM_THREADS": "1",
    })
    env.update(extra)
    return env


def start_worker(name: str, env: dict[str, str], log_path: Path,
                 queues: str = "extract", ready_timeout_s: float = 120,
                 app: str = "workers", wait: bool = True) -> WorkerProc:
    """Start ``celery -A <app> worker`` and wait until it is consuming (unless ``wait``
    is false: a worker meant to die early is only launched)."""
    cmd = celery_argv(f"{name}@tests", queues, app)
    fh = open(log_path, "wb")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    worker = WorkerProc(f"{name}@tests", proc, log_path, env)
    if not wait:
        return worker
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited:\n{worker.log()[-3000:]}")
        if " ready." in worker.log():
            return worker
        time.sleep(0.2)
    worker.kill()
    raise RuntimeError(f"worker {name} not ready in {ready_timeout_s} s:\n{worker.log()[-3000:]}")


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[list[WorkerProc]]:
    """A list to which tests append started workers; all are stopped afterwards."""
    started: list[WorkerProc] = []
    yield started
    for w in started:
        w.kill()
