"""A killed worker's tasks come back within TIQU_DEAD_WORKER_S, not the visibility timeout.

Real workers, real Redis, SIGKILL in the middle of a batch:
- with the default settings (visibility timeout one hour, dead_worker_s 60),
  a second worker answers every task the dead one held within 60 s plus one
  batch of the kill, each exactly once, and nothing stays behind in unacked,
  in-flight lists or held sets;
- a worker restarted under the dead one's name puts back what its
  predecessor held at once;
- the held set follows acknowledgements, and :func:`core.transport.liveness.release`
  restores each still-unacknowledged message exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from core.names import EXTRACT_QUEUE, result_key
from core.transport.fetch import INFLIGHT_PREFIX
from core.transport.liveness import HELD_PREFIX, Timing, held_key
from producer import Client
from tests.conftest import ROOT, WorkerProc, start_worker
from tests.test_reliability import SLOW_WORKER, echo_env, wait_for


def start_slow(env: dict[str, str], log_path: Path, name: str, hold_s: float) -> WorkerProc:
    """A worker whose batches sleep ``hold_s`` inside the flush (tests.test_reliability)."""
    argv = [sys.executable, "-c", SLOW_WORKER, str(hold_s), "worker", "--pool", "solo",
            "-Q", EXTRACT_QUEUE, "-n", f"{name}@tests", "--loglevel", "INFO",
            "--without-mingle", "--without-gossip"]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=open(log_path, "wb"),
                            stderr=subprocess.STDOUT)
    return WorkerProc(f"{name}@tests", proc, log_path, env)


def leftovers(db: redis.Redis) -> dict[str, int]:
    """Everything a dead worker could leave behind, by structure."""
    inflight = sum(db.llen(k) for k in db.scan_iter(INFLIGHT_PREFIX + "*")
                   if db.type(k) == b"list")
    held = sum(db.scard(k) for k in db.scan_iter(HELD_PREFIX + "*"))
    return {"unacked": db.hlen("unacked"), "unacked_index": db.zcard("unacked_index"),
            "inflight": inflight, "held": held}


def _held_by_a_killed_worker(db: redis.Redis, env: dict[str, str], tmp_path: Path,
                             workers: list[WorkerProc], name: str,
                             items: list[tuple[str, str]]) -> tuple[list[str], float]:
    """A slow worker takes ``items`` into one batch and is SIGKILLed holding them;
    returns their task ids and the kill's monotonic time."""
    slow = start_slow(env, tmp_path / f"{name}.log", name, hold_s=600)
    workers.append(slow)
    wait_for(lambda: " ready." in slow.log(), 120, "the slow worker")
    sent = [s.task_id for s in Client(db).submit_many(items)]
    return sent, _kill_mid_batch(db, slow, n_held=len(items))


def _kill_mid_batch(db: redis.Redis, slow: WorkerProc, n_held: int) -> float:
    wait_for(lambda: "batch started" in slow.log(), 120, "the slow worker's batch")
    wait_for(lambda: db.scard(held_key(slow.name)) == n_held, 10, "the held set")
    slow.proc.send_signal(signal.SIGKILL)
    slow.proc.wait()
    return time.monotonic()


def test_default_settings_a_killed_workers_tasks_are_answered_within_dead_worker_s(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc]
) -> None:
    env = echo_env(redis_url)  # the visibility timeout and dead_worker_s at their defaults
    sent, killed_at = _held_by_a_killed_worker(redis_db, env, tmp_path, workers, "slow",
                                               [(f"d{i}", f"投诉 {i}") for i in range(5)])
    rescuer = start_worker("rescuer", env, tmp_path / "rescuer.log")
    workers.append(rescuer)
    client = Client(redis_db)
    sent += [s.task_id for s in client.submit_many([(f"d{i}", f"投诉 {i}")
                                                    for i in range(5, 19)])]

    got = dict(client.collect(sent, timeout_s=90))
    waited_s = time.monotonic() - killed_at

    assert [got[i]["id"] for i in range(19)] == [f"d{i}" for i in range(19)]
    assert {e["worker"] for e in got.values()} == {rescuer.name}
    assert waited_s < 60 + 5, waited_s  # dead_worker_s plus one (echo) batch and polling
    assert waited_s > 30, waited_s  # found dead by its key's expiry, not by chance
    executions = [ln for ln in rescuer.log().splitlines() if " status=ok " in ln]
    assert len(executions) == 19  # each task ran once
    wait_for(lambda: leftovers(redis_db) == dict.fromkeys(leftovers(redis_db), 0), 20,
             f"no leftovers, got {leftovers(redis_db)}")
    assert all(0 < redis_db.ttl(result_key(task_id)) <= 86400 for task_id in sent)


def test_a_worker_restarted_under_the_dead_ones_name_puts_back_what_it_held_at_once(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc]
) -> None:
    env = echo_env(redis_url)
    sent, killed_at = _held_by_a_killed_worker(redis_db, env, tmp_path, workers, "node-a",
                                               [(f"r{i}", f"投诉 {i}") for i in range(4)])

    again = start_worker("node-a", env, tmp_path / "again.log")
    workers.append(again)
    got = dict(Client(redis_db).collect(sent, timeout_s=30))
    assert sorted(e["id"] for e in got.values()) == [f"r{i}" for i in range(4)]
    assert time.monotonic() - killed_at < 30  # not the 60 s of dead_worker_s
    wait_for(lambda: leftovers(redis_db) == dict.fromkeys(leftovers(redis_db), 0), 20,
             f"no leftovers, got {leftovers(redis_db)}")


def test_timing_keeps_detection_within_dead_worker_s() -> None:
    for dead_s in (5, 10, 60, 300):
        t = Timing(dead_s, 3600)
        assert t.alive_ttl_s + t.sweep_s <= dead_s
        assert t.beat_s * 3 <= t.alive_ttl_s  # a few refreshes may fail before it expires
        assert t.held_ttl_s > 3600
