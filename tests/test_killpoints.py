"""The kill-point matrix: SIGKILL a worker at each named step, then check the invariants.

A victim worker runs with ``TIQU_FAULT_POINT=<step>`` (core.transport.faults) and
kills itself the first time it reaches that step; a rescuer worker then
serves the queue. After every kill:
- every complaint has exactly one result, announced exactly once (one
  PUBLISH per result key, counted by a subscriber);
- nothing is left in the in-flight lists, the unacked hash and index, or the
  held sets;
- every key in the database has a TTL, or is one of the documented permanent
  keys (docs/reliability.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.names import EXTRACT_QUEUE, EXTRACT_TASK, RESULT_KEY_PREFIX
from core.transport.fetch import INFLIGHT_PREFIX, REGISTRY_KEY
from core.transport.liveness import held_key
from producer import Client
from producer.protocol import task_message
from tests.conftest import WorkerProc, start_worker
from tests.test_dead_worker import leftovers
from tests.test_hotswap import adapters  # noqa: F401, F811 (a fixture)
from tests.test_reliability import echo_env, wait_for

#: Keys that live without a TTL on purpose (docs/reliability.md, "Keys").
PERMANENT = (b"_kombu.", b"tiqu:inflight", b"tiqu:deadletter", b"tiqu:adapters:",
             EXTRACT_QUEUE.encode())


class Announcements(threading.Thread):
    """Counts PUBLISH messages per result key, as a waiting client would see them."""

    def __init__(self, db: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.pubsub = db.pubsub()
        self.pubsub.psubscribe(RESULT_KEY_PREFIX + "*")
        self.counts: Counter[str] = Counter()
        self.running = True

    def run(self) -> None:
        while self.running:
            msg = self.pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "pmessage":
                self.counts[msg["channel"].decode()] += 1

    def stop(self) -> None:
        self.running = False
        self.join(5)
        self.pubsub.close()


@pytest.fixture()
def announcements(redis_db: redis.Redis) -> Iterator[Announcements]:
    watcher = Announcements(redis_db)
    watcher.start()
    yield watcher
    watcher.stop()


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    # A short dead_worker_s keeps the matrix fast: the sweep runs every second.
    return echo_env(redis_url, TIQU_DEAD_WORKER_S="6", **extra)


def _no_leftovers(db: redis.Redis) -> bool:
    return not any(leftovers(db).values())


def _check_invariants(db: redis.Redis, sent: list[str], announced: Announcements) -> None:
    client = Client(db)
    got = dict(client.collect(sent, timeout_s=60))
    assert sorted(got) == list(range(len(sent)))
    wait_for(lambda: all(announced.counts[RESULT_KEY_PREFIX + t] >= 1 for t in sent), 10,
             "every result announced")
    time.sleep(0.5)
    # Pub/sub spans databases: count only this test's keys.
    twice = {t: n for t in sent if (n := announced.counts[RESULT_KEY_PREFIX + t]) != 1}
    assert not twice, f"announced more than once: {twice}"
    wait_for(lambda: _no_leftovers(db), 30, f"no leftovers, got {leftovers(db)}")
    for key in db.scan_iter("*"):
        if db.ttl(key) == -1:
            assert key.startswith(PERMANENT), f"{key!r} has no TTL and is not documented"


@pytest.mark.parametrize("step", ["after_fetch", "after_record", "mid_batch", "after_store",
                                  "in_ack"])
def test_kill_at_step_loses_nothing_and_answers_once(
    step: str, redis_db: redis.Redis, redis_url: str, tmp_path: Path,
    workers: list[WorkerProc], announcements: Announcements
) -> None:
    client = Client(redis_db)
    sent = [s.task_id for s in client.submit_many([(f"{step}-{i}", f"投诉 {i}")
                                                   for i in range(12)])]
    victim = start_worker("victim", _env(redis_url, TIQU_FAULT_POINT=step),
                          tmp_path / "victim.log", wait=False)
    workers.append(victim)
    wait_for(lambda: victim.proc.poll() is not None, 60, f"the victim to die at {step}")
    assert victim.proc.returncode == -9, victim.log()[-2000:]
    assert f"fault point {step} reached" in victim.log()

    rescuer = start_worker("rescuer", _env(redis_url), tmp_path / "rescuer.log")
    workers.append(rescuer)
    _check_invariants(redis_db, sent, announcements)


def test_kill_while_arrivals_join_a_running_batch_loses_nothing(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, tiny_model: Path,
    workers: list[WorkerProc], announcements: Announcements
) -> None:
    """A model worker (continuous scheduler, batches of 2) dies just after it fetched
    tasks into a running batch's free row: the batch's own tasks and the joiners
    are all answered once, by the rescuer."""
    from tests.conftest import worker_env

    client = Client(redis_db)
    sent = [s.task_id for s in client.submit_many([(f"join-{i}", f"投诉 {i}，宽带断网")
                                                   for i in range(12)])]
    env = worker_env(redis_url, tiny_model, TIQU_BATCH_SIZE="2", TIQU_DTYPE="float32",
                     TIQU_DEAD_WORKER_S="6", TIQU_FAULT_POINT="in_join")
    victim = start_worker("victim", env, tmp_path / "victim.log", wait=False)
    workers.append(victim)
    wait_for(lambda: victim.proc.poll() is not None, 120, "the victim to die at in_join")
    assert victim.proc.returncode == -9, victim.log()[-2000:]
    assert "fault point in_join reached" in victim.log()
    # it died holding a batch and its joiner(s): recorded as unacknowledged, not lost
    assert redis_db.hlen("unacked") >= 1

    rescuer = start_worker("rescuer", _env(redis_url), tmp_path / "rescuer.log")
    workers.append(rescuer)
    _check_invariants(redis_db, sent, announcements)


def test_kill_during_the_restore_sweep_loses_nothing(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc],
    announcements: Announcements
) -> None:
    """A dead node held five messages; the sweeper dies after putting back the first."""
    ghost = "ghost@tests"
    sent = []
    for i in range(5):
        task_id, raw = task_message(EXTRACT_TASK, {"text": f"投诉 {i}", "id": f"g{i}"},
                                    EXTRACT_QUEUE)
        message = json.loads(raw)
        tag = message["properties"]["delivery_tag"]
        redis_db.hset("unacked", tag, json.dumps([message, "", EXTRACT_QUEUE]))
        redis_db.zadd("unacked_index", {tag: time.time()})
        redis_db.sadd(held_key(ghost), tag)
        sent.append(task_id)
    redis_db.sadd(REGISTRY_KEY, f"{INFLIGHT_PREFIX}{EXTRACT_QUEUE}:{ghost}")

    victim = start_worker("victim", _env(redis_url, TIQU_FAULT_POINT="in_restore"),
                          tmp_path / "victim.log", wait=False)
    workers.append(victim)
    wait_for(lambda: victim.proc.poll() is not None, 60, "the victim to die in the sweep")
    assert "fault point in_restore reached" in victim.log()
    assert redis_db.scard(held_key(ghost)) >= 4  # it died after the first restore

    rescuer = start_worker("rescuer", _env(redis_url), tmp_path / "rescuer.log")
    workers.append(rescuer)
    _check_invariants(redis_db, sent, announcements)


def test_kill_during_a_hot_swap_loses_nothing_and_the_rescuer_serves_the_new_adapter(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc],
    announcements: Announcements, tiny_model: Path,
    adapters: dict[str, Path],  # noqa: F811 (the fixture)
) -> None:
    from core.adapters import Registry
    from tests.test_hotswap import env_for, shared_settings

    reg = Registry(redis_db, shared_settings(tmp_path))
    reg.publish(adapters["v1"])
    reg.promote("v1")
    client = Client(redis_db)
    sent = [s.task_id for s in client.submit_many([(f"s{i}", f"王五，投诉 {i}")
                                                   for i in range(6)])]
    victim = start_worker("victim", env_for(redis_url, tiny_model, tmp_path, "victim",
                                            TIQU_FAULT_POINT="in_swap", TIQU_DEAD_WORKER_S="6"),
                          tmp_path / "victim.log", wait=False)
    workers.append(victim)
    wait_for(lambda: victim.proc.poll() is not None, 120, "the victim to die in the swap")
    assert "fault point in_swap reached" in victim.log()

    rescuer = start_worker("rescuer", env_for(redis_url, tiny_model, tmp_path, "rescuer",
                                              TIQU_DEAD_WORKER_S="6"), tmp_path / "rescuer.log")
    workers.append(rescuer)
    _check_invariants(redis_db, sent, announcements)
    got = dict(client.collect(sent, timeout_s=10))
    assert {e["adapter_version"] for e in got.values()} == {"v1"}
