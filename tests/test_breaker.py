"""The circuit breaker: a sick engine stops taking work; it never answers the backlog with errors.

Unit tests of the policy (workers.breaker, Runtime.handle) without a broker,
then live echo workers on the tests' Redis database: one whose engine always
fails (``TIQU_FAULT_POINT=engine``) must put every message back unanswered and
exit with the breaker's status; a healthy one then answers each exactly once.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from core.names import EXTRACT_QUEUE, result_key
from core.settings import Settings
from core.transport import faults
from producer import Client
from tests.conftest import WorkerProc, start_worker, worker_env
from workers.breaker import EXIT_CODE, Breaker, EngineFailed
from workers.runtime import CANARY, EchoEngine, Runtime

# --- policy ---------------------------------------------------------------------------


def test_breaker_opens_after_the_limit_of_failures_in_a_row() -> None:
    breaker = Breaker(limit=3)
    assert [breaker.failure(), breaker.failure()] == [False, False]
    breaker.success()  # a good batch starts the count again
    assert [breaker.failure(), breaker.failure(), breaker.failure()] == [False, False, True]
    assert breaker.opened
    assert breaker.failure() is False and breaker.opened  # opens once, stays open


class Broken(EchoEngine):
    def extract_batch(self, texts: list[str], mode: str | None = None) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_an_engine_error_raises_and_counts_instead_of_answering() -> None:
    runtime = Runtime(Settings(breaker_failures=2), engine_kind="echo")
    runtime._engine = Broken()
    items = [("t1", {"text": "宽带断网", "id": "c1"}), ("t2", {"text": "", "id": "c2"})]
    with pytest.raises(EngineFailed):
        runtime.handle(items)
    assert runtime.breaker.failures == 1 and not runtime.breaker.opened
    with pytest.raises(EngineFailed):
        runtime.handle(items)
    assert runtime.breaker.opened
    runtime._engine = EchoEngine()
    runtime.breaker.opened = False
    assert [e["status"] for e in runtime.handle(items)] == ["ok", "error"]
    assert runtime.breaker.failures == 0  # a batch the engine ran resets the count


def test_a_failing_before_batch_hook_never_counts_as_an_engine_failure() -> None:
    runtime = Runtime(Settings(breaker_failures=1), engine_kind="echo")

    def bad_swap(_runtime: Runtime) -> None:
        raise OSError("adapter download failed")

    runtime.before_batch.append(bad_swap)
    envs = runtime.handle([("t1", {"text": "停电", "id": "c1"})])
    assert envs[0]["status"] == "ok" and not runtime.breaker.opened


def test_the_engine_fault_point_makes_every_generation_fail() -> None:
    runtime = Runtime(Settings(), engine_kind="echo")
    faults.arm("engine")
    try:
        with pytest.raises(EngineFailed):
            runtime.handle([("t1", {"text": "停电", "id": "c1"})])
    finally:
        faults.arm(None)
    assert runtime.handle([("t1", {"text": "停电", "id": "c1"})])[0]["status"] == "ok"


class BreaksOn(EchoEngine):
    """Fails any batch holding ``bad``; the canary and other texts run."""

    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad = bad
        self.calls: list[int] = []

    def extract_batch(self, texts: list[str], mode: str | None = None) -> Any:
        self.calls.append(len(texts))
        if self.bad in texts:
            raise RuntimeError("index out of range in the tokenizer")
        return super().extract_batch(texts, mode)


def test_a_text_that_breaks_a_sound_engine_is_answered_alone_and_counts_nothing() -> None:
    runtime = Runtime(Settings(breaker_failures=1), engine_kind="echo")
    runtime._engine = engine = BreaksOn("坏")
    items = [("t1", {"text": "停电", "id": "c1"}), ("t2", {"text": "坏", "id": "c2"}),
             ("t3", {"text": "漏水", "id": "c3"})]
    envs = runtime.handle(items)
    assert [(e["id"], e["status"]) for e in envs] == [("c1", "ok"), ("c2", "error"),
                                                      ("c3", "ok")]
    assert envs[1]["error"]["code"] == "internal_error"
    assert engine.calls == [3, 1, 1, 1, 1]  # the batch, the canary, each text alone
    assert not runtime.breaker.opened and runtime.breaker.failures == 0


def test_a_sick_engine_fails_the_canary_too_and_answers_nothing() -> None:
    runtime = Runtime(Settings(breaker_failures=5), engine_kind="echo")
    runtime._engine = engine = BreaksOn(CANARY)
    items = [("t1", {"text": CANARY, "id": "c1"}), ("t2", {"text": "停电", "id": "c2"})]
    with pytest.raises(EngineFailed):
        runtime.handle(items)
    assert engine.calls == [2, 1] and runtime.breaker.failures == 1


# --- live workers ---------------------------------------------------------------------


def echo_env(redis_url: str, **extra: str) -> dict[str, str]:
    return worker_env(redis_url, Path("unused"), TIQU_ENGINE="echo", **extra)


def wait_exit(w: WorkerProc, timeout_s: float) -> int:
    try:
        return w.proc.wait(timeout_s)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"worker running after {timeout_s} s:\n{w.log()[-3000:]}") from err


class Announcements(threading.Thread):
    """Counts PUBLISHes per result key: each answer must be announced exactly once."""

    def __init__(self, client: redis.Redis) -> None:
        # Channels are server-wide, not per database: count() filters the ids.
        super().__init__(daemon=True)
        self.pubsub = client.pubsub()
        self.pubsub.psubscribe(result_key("*"))
        self.pubsub.get_message(timeout=5)  # the subscription's confirmation
        self.seen: Counter[str] = Counter()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "pmessage":
                self.seen[msg["channel"].decode()] += 1

    def count(self, task_ids: list[str]) -> list[int]:
        """Announcements heard for each of ``task_ids``."""
        return [self.seen[result_key(t)] for t in task_ids]

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.pubsub.close()


def test_a_sick_engine_puts_everything_back_and_exits_then_a_healthy_worker_answers_once(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc],
) -> None:
    client = Client(redis_db)
    sent = client.submit_many([(f"b{i}", f"第{i}号投诉：宽带断网") for i in range(30)])
    ids = [s.task_id for s in sent]

    # Launched only: with 30 messages waiting it may exit before it is seen ready.
    sick = start_worker("sick", echo_env(redis_url, TIQU_FAULT_POINT="engine"),
                        tmp_path / "sick.log", wait=False)
    workers.append(sick)
    start = time.monotonic()
    assert wait_exit(sick, 90) == EXIT_CODE
    took = time.monotonic() - start
    assert "circuit breaker open" in sick.log()

    assert all(v is None for v in redis_db.mget([result_key(t) for t in ids])), "answered"
    assert redis_db.hlen("unacked") == 0 and redis_db.zcard("unacked_index") == 0
    queued = [json.loads(m)["headers"]["id"] for m in redis_db.lrange(EXTRACT_QUEUE, 0, -1)]
    assert sorted(queued) == sorted(ids), "every message back on the queue, once"
    assert not [k for k in redis_db.keys("tiqu:inflight:*") if redis_db.llen(k)]
    for run in range(3):  # restarted by its supervisor, it never answers either
        again = start_worker(f"sick{run}", echo_env(redis_url, TIQU_FAULT_POINT="engine"),
                             tmp_path / f"sick{run}.log", wait=False)
        workers.append(again)
        assert wait_exit(again, 90) == EXIT_CODE
    assert all(v is None for v in redis_db.mget([result_key(t) for t in ids])), "answered"
    assert redis_db.llen(EXTRACT_QUEUE) == 30 and redis_db.hlen("unacked") == 0

    heard = Announcements(redis.Redis.from_url(redis_url))
    heard.start()
    try:
        healthy = start_worker("healthy", echo_env(redis_url), tmp_path / "healthy.log")
        workers.append(healthy)
        got = dict(client.collect(ids, timeout_s=90))
        time.sleep(1.0)  # a second announcement would arrive by now
    finally:
        heard.stop()
    assert sorted(got) == list(range(30)) and all(e["status"] == "ok" for e in got.values())
    assert all(e["worker"] == healthy.name for e in got.values())
    assert heard.count(ids) == [1] * len(ids)
    assert redis_db.llen(EXTRACT_QUEUE) == 0
    deadline = time.monotonic() + 20
    while redis_db.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert redis_db.hlen("unacked") == 0
    print(f"sick worker exited {took:.1f} s after it was ready")


def test_a_poison_task_is_answered_with_internal_error_and_the_others_are_answered(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc],
) -> None:
    w = start_worker("poison", echo_env(redis_url, TIQU_FAULT_POINT="poison",
                                        TIQU_BREAKER_FAILURES="1"), tmp_path / "w.log")
    workers.append(w)
    client = Client(redis_db)
    sent = client.submit_many([("p0", "停电了"), ("p1", "每次都让引擎崩溃的投诉 POISON"),
                               ("p2", "漏水了")])
    got = dict(client.collect([s.task_id for s in sent], timeout_s=60))
    assert [(got[i]["id"], got[i]["status"]) for i in range(3)] == [
        ("p0", "ok"), ("p1", "error"), ("p2", "ok")]
    assert got[1]["error"]["code"] == "internal_error"
    time.sleep(1.0)
    assert redis_db.llen(EXTRACT_QUEUE) == 0 and redis_db.hlen("unacked") == 0
    assert w.proc.poll() is None  # a poison text does not open the breaker
