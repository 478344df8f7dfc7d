"""Drain on SIGTERM (Kubernetes, KEDA, ``systemctl stop``): finish, put back, exit in time.

A slow echo worker (tests.test_reliability.SLOW_WORKER) gets SIGTERM in the
middle of a batch while it holds more messages prefetched. It stores the
batch's results, puts every prefetched message back on the queue (none stays
in ``unacked``, in-flight lists or held sets) and exits well within the grace
period of the deploy files; a second worker then answers the rest, each task
exactly once.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import redis

from core.names import EXTRACT_QUEUE
from producer import Client
from tests.conftest import ROOT, WorkerProc, start_worker
from tests.test_dead_worker import leftovers, start_slow
from tests.test_reliability import echo_env, wait_for

HOLD_S = 8.0


def grace_periods_s() -> tuple[int, int]:
    """terminationGracePeriodSeconds (k8s) and TimeoutStopSec (systemd) of the worker."""
    k8s = (ROOT / "deploy/k8s/worker.yaml").read_text()
    unit = (ROOT / "deploy/systemd/tiqu-worker@.service").read_text()
    grace = re.search(r"terminationGracePeriodSeconds:\s*(\d+)", k8s)
    stop = re.search(r"^TimeoutStopSec=(\d+)", unit, re.M)
    assert grace and stop
    return int(grace.group(1)), int(stop.group(1))


def test_sigterm_mid_batch_stores_the_batch_puts_back_the_rest_and_exits_in_time(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list[WorkerProc]
) -> None:
    grace_s = min(grace_periods_s())
    assert HOLD_S + 30 < grace_s  # the bound below is within the grace period
    env = echo_env(redis_url, TIQU_BATCH_SIZE="4")
    slow = start_slow(env, tmp_path / "slow.log", "slow", hold_s=HOLD_S)
    workers.append(slow)
    wait_for(lambda: " ready." in slow.log(), 120, "the slow worker")
    client = Client(redis_db)
    sent = client.submit_many([(f"t{i}", f"投诉 {i}") for i in range(24)])
    wait_for(lambda: "batch started" in slow.log(), 60, "the slow batch")
    time.sleep(1.0)
    held = redis_db.hlen("unacked")
    assert held > 0

    slow.proc.send_signal(signal.SIGTERM)
    term_at = time.monotonic()
    slow.proc.wait(timeout=grace_s)
    exit_s = time.monotonic() - term_at

    assert exit_s < HOLD_S + 30, exit_s
    ids = [s.task_id for s in sent]
    stored = [e for e in client.poll(ids) if e is not None]
    ran = slow.log().count(" status=ok ")
    assert 0 < ran <= 4  # one batch, finished
    assert len(stored) == ran and {e["worker"] for e in stored} == {slow.name}
    assert leftovers(redis_db) == dict.fromkeys(leftovers(redis_db), 0)
    assert redis_db.llen(EXTRACT_QUEUE) == 24 - ran  # the prefetched ones are back

    rescuer = start_worker("rescuer", env, tmp_path / "rescuer.log")
    workers.append(rescuer)
    got = dict(client.collect(ids, timeout_s=90))
    assert sorted(e["id"] for e in got.values()) == sorted(f"t{i}" for i in range(24))
    assert rescuer.log().count(" status=ok ") == 24 - ran  # each task ran once
    wait_for(lambda: leftovers(redis_db) == dict.fromkeys(leftovers(redis_db), 0), 20,
             f"no leftovers, got {leftovers(redis_db)}")
