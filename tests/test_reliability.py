"""No lost complaint, no crash on bad input: real workers, real Redis, real failures.

- Bad input of every kind gets an error envelope with a stable code, the good
  items of the same batch are answered, and the worker keeps serving.
- A worker killed with SIGKILL in the middle of a batch: another worker
  answers every task it held, after the visibility timeout, and a message a
  dead worker had just fetched comes back from its in-flight list.
- A broker restart (private redis-server with AOF): queued tasks survive, and
  a running worker reconnects and keeps answering without a restart.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.names import DEAD_LETTER_KEY, EXTRACT_QUEUE, EXTRACT_TASK, result_key
from core.queue import make_celery
from core.schema import Envelope
from core.settings import Settings
from core.transport.fetch import INFLIGHT_PREFIX, REGISTRY_KEY
from producer import Client
from producer.protocol import task_message
from tests.conftest import ROOT, WorkerProc, start_worker, worker_env

MAX_CHARS = 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, never the shared one."""

    def __init__(self, workdir: Path, *extra: str, tls: bool = False) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra = list(extra)
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        port = ["--port", "0", "--tls-port", str(self.port)] if self.tls else [
            "--port", str(self.port)]
        return ["redis-server", *port, "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", *self.extra]

    def start(self, ready: redis.Redis | None = None) -> None:
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        probe = ready or redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                probe.ping()
                return
            except redis.AuthenticationError:
                return  # up; the probe just has no password
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.dir / "redis.log").read_text()[-2000:]) from None
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """SIGTERM: Redis shuts down cleanly; with --save '' it writes no RDB file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[list[PrivateRedis]]:
    """Tests append the servers they start; all are stopped afterwards."""
    servers: list[PrivateRedis] = []
    yield servers
    for server in servers:
        server.stop()


def raw_message(body: bytes, content_type: str = "application/json",
                task: str = EXTRACT_TASK, task_id: str | None = None) -> tuple[str, str]:
    """A Celery message with an arbitrary body, as a foreign client could send it."""
    task_id, message = task_message(task, {"text": "x"}, EXTRACT_QUEUE,
                                    task_id=task_id or str(uuid.uuid4()))
    data = json.loads(message)
    data["body"] = base64.b64encode(body).decode("ascii")
    data["content-type"] = content_type
    return task_id, json.dumps(data)


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def echo_env(redis_url: str, **extra: str) -> dict[str, str]:
    return worker_env(redis_url, Path("unused"), TIQU_ENGINE="echo", **extra)


# --- bad input --------------------------------------------------------------------------


def _client_items() -> list[tuple[str, Any, str]]:
    """(id, text, expected code or "ok") sent through the producer client."""
    return [
        ("good-1", "张三 北京市朝阳区建国路88号 宽带断网三天了。", "ok"),
        ("empty", "", "empty_text"),
        ("blank", " \n\t\u3000 ", "empty_text"),
        ("long", "长" * (MAX_CHARS + 1), "text_too_long"),
        ("large", "x" * 150_000, "text_too_long"),  # larger messages: test_hostile.py
        ("number", 12345, "invalid_text_type"),
        ("list", ["a", "b"], "invalid_text_type"),
        ("null", None, "invalid_text_type"),
        ("good-2", "Bob, 12 Main St, refund please", "ok"),
    ]


def _raw_items() -> list[tuple[bytes, str, str]]:
    """(body, content type, expected code) for hand-built messages."""
    return [
        (b'[[], {"id": "m"}, {}]', "application/json", "missing_text"),
        (b'[[], {"text": "ok \\ud800", "id": "s"}, {}]', "application/json", "invalid_encoding"),
        (json.dumps([[], {"text": "多的字段", "id": "f", "priority": "high", "lang": "zh",
                          "meta": {"a": [1]}}, {}]).encode(), "application/json", "ok"),
        (b'[[], {"text": "no closing', "application/json", "invalid_payload"),
        (b'[[], {"text": "\xff\xfe"}, {}]', "application/json", "invalid_encoding"),
        (b'"just a string"', "application/json", "invalid_payload"),
        (b'[1, 2, 3]', "application/json", "invalid_payload"),
        (b"text: yaml", "application/x-yaml", "unsupported_content_type"),
    ]


def test_bad_inputs_get_stable_codes_and_the_worker_keeps_serving(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc]
) -> None:
    w = start_worker("bad", echo_env(redis_url, TIQU_MAX_TEXT_CHARS=str(MAX_CHARS)),
                     tmp_path / "w.log")
    workers.append(w)
    client = Client(redis_db)
    items = _client_items()
    sent = client.submit_many([(i, t) for i, t, _ in items])
    expected = {s.task_id: code for s, (_, _, code) in zip(sent, items, strict=True)}
    for body, ctype, code in _raw_items():
        task_id, message = raw_message(body, ctype)
        redis_db.lpush(EXTRACT_QUEUE, message)
        expected[task_id] = code
    # A Python Celery client: kombu's JSON carries bytes as {"__type__": "bytes"|"base64"}.
    app = make_celery(Settings(redis_url=redis_url))
    try:
        for kwargs, code in [({"text": "字节也行".encode(), "id": "b1"}, "ok"),
                             ({"text": b"\xff\xfe\x00", "id": "b2"}, "invalid_encoding")]:
            expected[app.send_task(EXTRACT_TASK, kwargs=kwargs).id] = code
        expected[app.send_task(EXTRACT_TASK, args=[{"text": "位置参数", "id": "a1"}]).id] = "ok"
    finally:
        app.close()
    for garbage in (b"not json at all", b"\xff\xfe\x00", b'{"no": "properties"}', b"[]"):
        redis_db.lpush(EXTRACT_QUEUE, garbage)  # no task id: dead-lettered, survived

    got = dict(client.collect(list(expected), timeout_s=60))
    envs = {task_id: got[i] for i, task_id in enumerate(expected)}
    for task_id, code in expected.items():
        env = Envelope.model_validate(envs[task_id])
        assert (env.status if code == "ok" else env.error and env.error.code) == code, env
    for (id_, text, _), s in zip(items, sent, strict=True):
        if id_.startswith("good"):  # the echo engine answers with the text itself
            assert envs[s.task_id]["id"] == id_ and envs[s.task_id]["result"]["question"] == text

    after = client.submit("still serving", id="after")
    assert dict(client.collect([after.task_id], timeout_s=30))[0]["status"] == "ok"
    assert w.proc.poll() is None
    log = w.log()
    assert redis_db.llen(DEAD_LETTER_KEY) == 4
    assert "Traceback" not in log and "Unrecoverable" not in log


# --- worker loss --------------------------------------------------------------------------

#: A real worker whose batches take ``argv[1]`` seconds: it announces the batch,
#: then sleeps inside the flush, so a SIGKILL lands in the middle of a batch.
SLOW_WORKER = """
import sys, time
import workers.celery_app as m
def hold(runtime):
    print("batch started", flush=True)
    time.sleep(float(sys.argv[1]))
m.runtime.before_batch.append(hold)
m.app.worker_main(sys.argv[2:])
"""


def start_slow_worker(env: dict[str, str], log_path: Path, hold_s: float) -> WorkerProc:
    argv = [sys.executable, "-c", SLOW_WORKER, str(hold_s), "worker", "--pool", "solo",
            "-Q", EXTRACT_QUEUE, "-n", "slow@tests", "--loglevel", "INFO",
            "--without-mingle", "--without-gossip"]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=open(log_path, "wb"),
                            stderr=subprocess.STDOUT)
    return WorkerProc("slow@tests", proc, log_path, env)


def test_sigkill_mid_batch_every_held_task_is_answered_by_another_worker(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc]
) -> None:
    visibility_s = 4
    env = echo_env(redis_url, TIQU_VISIBILITY_TIMEOUT_S=str(visibility_s))
    slow = start_slow_worker(env, tmp_path / "slow.log", hold_s=120)
    workers.append(slow)
    wait_for(lambda: " ready." in slow.log(), 120, "the slow worker")
    client = Client(redis_db)
    # Five tasks: a partial batch (TIQU_BATCH_SIZE=8) that the flush timer runs.
    sent = client.submit_many([(f"k{i}", f"投诉 {i}") for i in range(5)])
    wait_for(lambda: "batch started" in slow.log(), 60, "the slow worker's batch")
    # Seven more arrive during the batch: none may be popped into the busy
    # worker's socket, where a SIGKILL would lose it.
    sent += client.submit_many([(f"k{i}", f"投诉 {i}") for i in range(5, 12)])
    time.sleep(1.0)
    assert redis_db.hlen("unacked") == 5 and client.queue_length() == 7

    rescuer = start_worker("rescuer", env, tmp_path / "rescuer.log")
    workers.append(rescuer)
    slow.proc.send_signal(signal.SIGKILL)
    slow.proc.wait()
    killed_at = time.monotonic()
    got = dict(client.collect([s.task_id for s in sent], timeout_s=60))
    redelivery_s = time.monotonic() - killed_at

    assert sorted(got) == list(range(12))
    assert {env["worker"] for env in got.values()} == {rescuer.name}
    assert [got[i]["id"] for i in range(12)] == [f"k{i}" for i in range(12)]
    # Redelivery waits for the visibility timeout, then a restore sweep (1 s here).
    assert redelivery_s < visibility_s + 15, redelivery_s
    executions = [line for line in rescuer.log().splitlines() if " status=ok " in line]
    assert len(executions) == 12  # each task ran once on the rescuer

    # A message a dead worker had just fetched sits on its in-flight list
    # (BRPOPLPUSH); once its liveness key is gone, a live worker requeues it.
    assert f"{INFLIGHT_PREFIX}{EXTRACT_QUEUE}:{rescuer.name}".encode() in redis_db.smembers(
        REGISTRY_KEY)
    ghost_key = f"{INFLIGHT_PREFIX}{EXTRACT_QUEUE}:ghost@tests"
    ghost_id, ghost = task_message(EXTRACT_TASK, {"text": "半路上的投诉", "id": "ghost"},
                                   EXTRACT_QUEUE)
    redis_db.lpush(ghost_key, ghost)
    redis_db.sadd(REGISTRY_KEY, ghost_key)
    assert dict(client.collect([ghost_id], timeout_s=30))[0]["id"] == "ghost"
    assert not redis_db.exists(ghost_key)

    # A redelivered task whose result exists is acknowledged without running.
    first = redis_db.get(result_key(sent[0].task_id))
    _, again = task_message(EXTRACT_TASK, {"text": "changed", "id": "k0"}, EXTRACT_QUEUE,
                            task_id=sent[0].task_id)
    redis_db.lpush(EXTRACT_QUEUE, again)
    wait_for(lambda: "already answered" in rescuer.log(), 30, "the duplicate to be seen")
    assert redis_db.get(result_key(sent[0].task_id)) == first
    wait_for(lambda: redis_db.hlen("unacked") == 0, 30, "the duplicate's ack")


# --- broker restart -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_broker_restart_keeps_queued_tasks_and_running_worker_reconnects(
    tmp_path: Path, private_redis: list[PrivateRedis], workers: list[WorkerProc]
) -> None:
    server = PrivateRedis(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    private_redis.append(server)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    conn = redis.Redis.from_url(url)
    client = Client(conn)

    queued = client.submit_many([(f"q{i}", f"排队的投诉 {i}") for i in range(20)])
    server.stop()
    server.start()
    assert client.queue_length() == 20  # the AOF kept them

    # A long flush interval keeps the batch timer armed when Redis goes away below.
    w = start_worker("restart", echo_env(url, TIQU_FLUSH_INTERVAL_S="2"), tmp_path / "w.log")
    workers.append(w)
    got = dict(client.collect([s.task_id for s in queued], timeout_s=60))
    assert sorted(got) == list(range(20)) and all(e["status"] == "ok" for e in got.values())

    pid = w.proc.pid
    server.stop()
    time.sleep(1.0)  # the worker notices and retries while Redis is down
    server.start()
    # Fewer tasks than a batch: they must flush on the interval, not wait for more.
    later = client.submit_many([(f"l{i}", f"重启后的投诉 {i}") for i in range(3)])
    got = dict(client.collect([s.task_id for s in later], timeout_s=30))
    assert sorted(got) == [0, 1, 2] and all(e["worker"] == w.name for e in got.values())
    assert w.proc.poll() is None and w.proc.pid == pid
    assert "Connection to broker lost" in w.log()

