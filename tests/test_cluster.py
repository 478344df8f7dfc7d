"""Many nodes on one machine: hosts killed or partitioned, and self-fencing.

A 2-host :class:`tiqu.cluster.Cluster` (Redis and each host in a network
namespace of its own) with ``TIQU_DEAD_WORKER_S=10``:
- a killed host's tasks are answered by the other host within
  ``dead_worker_s`` plus one batch, each once, nothing left behind;
- a host partitioned longer than ``dead_worker_s`` while a batch runs: its
  tasks are answered by the other host within the same bound; after healing
  it stores none of them (its late results are dropped, counted as fenced),
  and it goes on answering new tasks under its own name;
- afterwards no namespace is left and the root namespace's links and routes
  are as before.
These need root (network namespaces): without it they fail, they do not skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from core.transport.liveness import Fence, Heartbeat, Timing, held_key
from producer import Client
from tests.test_dead_worker import leftovers
from tests.test_reliability import wait_for
from tiqu.cluster import Cluster, Fault, fault_waits, leftover_namespaces

DEAD_S = 10
METRICS_PORT = 9464  # inside the host's namespace
#: Detection (dead_worker_s), one echo batch, polling, and a loaded machine.
BOUND_S = DEAD_S + 8

#: A worker whose first batch sleeps argv[1] seconds inside the flush.
SLOW_FIRST = """
import sys, time
import workers.celery_app as m
_done = []
def hold(runtime):
    if not _done:
        _done.append(1)
        print("batch started", flush=True)
        time.sleep(float(sys.argv[1]))
        print("batch slept", flush=True)
m.runtime.before_batch.append(hold)
m.app.worker_main(sys.argv[2:])
"""


def root_namespace() -> tuple[str, str]:
    link = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    route = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True)
    return link.stdout, route.stdout


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    before = root_namespace()
    c = Cluster(2, tmp_path / "cluster", env={
        "TIQU_ENGINE": "echo", "TIQU_DEAD_WORKER_S": str(DEAD_S), "TIQU_BATCH_SIZE": "8",
        "TIQU_FLUSH_INTERVAL_S": "0.05"})
    try:
        yield c.start()
    finally:
        c.close()
        assert leftover_namespaces() == []
        assert root_namespace() == before


def _slow(c: Cluster, host_index: int, hold_s: float) -> Any:
    w = c.start_worker(c.hosts[host_index], "slow",
                       argv=[sys.executable, "-c", SLOW_FIRST, str(hold_s), "worker"],
                       env={"TIQU_METRICS_PORT": str(METRICS_PORT)})
    c.wait_ready(w)
    return w


def fenced_count(c: Cluster, host_index: int) -> float:
    """``tiqu_fenced_results_total`` of the worker serving metrics in that host."""
    get = (f"import urllib.request; print(urllib.request.urlopen("
           f"'http://127.0.0.1:{METRICS_PORT}/metrics', timeout=5).read().decode())")
    out = subprocess.run(["ip", "netns", "exec", c.hosts[host_index].netns, sys.executable,
                          "-c", get], capture_output=True, text=True, timeout=30, check=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("tiqu_fenced_results_total")]
    return float(lines[0].split()[1])


def _no_leftovers(db: redis.Redis) -> None:
    wait_for(lambda: leftovers(db) == dict.fromkeys(leftovers(db), 0), 30,
             f"no leftovers, got {leftovers(db)}")


def test_a_killed_hosts_tasks_are_answered_by_the_other_host_within_dead_worker_s(
    cluster: Cluster,
) -> None:
    db = cluster.client()
    client = Client(db)
    slow = _slow(cluster, 0, hold_s=600)
    sent = client.submit_many([(f"k{i}", f"投诉 {i}") for i in range(5)])
    wait_for(lambda: "batch started" in slow.log(), 60, "the slow batch")
    wait_for(lambda: db.scard(held_key(slow.name)) == 5, 10, "the held set")
    other = cluster.start_worker(cluster.hosts[1], "w")
    cluster.wait_ready(other)
    assert cluster.held_task_ids(cluster.hosts[0]) == {s.task_id for s in sent}
    assert cluster.held_task_ids(cluster.hosts[1]) == set()

    assert cluster.kill_host(cluster.hosts[0]) >= 1
    killed_at = time.monotonic()
    got = dict(client.collect([s.task_id for s in sent], timeout_s=BOUND_S + 30))
    waited_s = time.monotonic() - killed_at

    assert sorted(e["id"] for e in got.values()) == [f"k{i}" for i in range(5)]
    assert {e["worker"] for e in got.values()} == {other.name}
    assert waited_s < BOUND_S, waited_s
    assert other.log().count(" status=ok ") == 5  # each ran once
    _no_leftovers(db)


def test_a_partitioned_host_is_fenced_and_answers_none_of_its_tasks_after_healing(
    cluster: Cluster,
) -> None:
    db = cluster.client()
    client = Client(db)
    partition_s = DEAD_S + 4
    slow = _slow(cluster, 0, hold_s=partition_s + 8)  # its batch ends after the heal
    sent = client.submit_many([(f"p{i}", f"投诉 {i}") for i in range(5)])
    wait_for(lambda: "batch started" in slow.log(), 60, "the slow batch")
    wait_for(lambda: db.scard(held_key(slow.name)) == 5, 10, "the held set")
    other = cluster.start_worker(cluster.hosts[1], "w")
    cluster.wait_ready(other)

    cluster.partition(cluster.hosts[0])
    cut_at = time.monotonic()
    got = dict(client.collect([s.task_id for s in sent], timeout_s=BOUND_S + 30))
    assert time.monotonic() - cut_at < BOUND_S
    assert {e["worker"] for e in got.values()} == {other.name}
    time.sleep(max(0.0, partition_s - (time.monotonic() - cut_at)))
    cluster.heal(cluster.hosts[0])
    wait_for(lambda: "batch slept" in slow.log(), 30, "the slow batch to end")
    wait_for(lambda: fenced_count(cluster, 0) > 0, 15, "the fenced worker to drop results")

    assert fenced_count(cluster, 0) == 5
    assert "dropped 5 result(s)" in slow.log()
    after = client.poll([s.task_id for s in sent])
    assert after == [got[i] for i in range(5)]  # no late result stored, none overwritten
    assert other.log().count(" status=ok ") == 5
    _no_leftovers(db)

    # It rejoined under its own name: with the other host gone it answers new tasks.
    cluster.kill_host(cluster.hosts[1])
    more = client.submit_many([(f"n{i}", f"投诉 {i}") for i in range(3)])
    got_more = dict(client.collect([s.task_id for s in more], timeout_s=60))
    assert {e["worker"] for e in got_more.values()} == {slow.name}
    _no_leftovers(db)


def test_fault_waits_times_the_struck_hosts_tasks_from_the_fault() -> None:
    """The report's recovery time: from the fault to the last answer of the tasks the
    host held, apart from the backlog that every waiting task sat in."""
    tracker = SimpleNamespace(start=100.0, waiting={"late": (3, 101.0)},
                              answered={"a": (101.0, 200.0), "b": (102.0, 140.0)})
    killed = Fault(10.0, "killed host h1", lambda: None, fired_s=10.0, held={"b"})
    cut = Fault(20.0, "partitioned host h2", lambda: None, fired_s=20.0, held={"a", "late"})
    healed = Fault(30.0, "healed host h2", lambda: None, fired_s=30.0)
    rows = fault_waits([killed, cut, healed], tracker)
    assert rows[0] == {"label": "killed host h1", "at_s": 10.0, "waiting": 3,
                       "longest_wait_s": 99.0, "held": 1, "held_answered_after_s": 30.0}
    assert rows[1]["held"] == 2 and rows[1]["held_answered_after_s"] is None  # one unanswered
    assert "held" not in rows[2]


# --- the fence itself, without a cluster ----------------------------------------------------


def test_the_fence_drops_everything_while_cut_off_and_revoked_tags_after() -> None:
    fence = Fence()
    counted: list[int] = []
    fence.on_drop.append(counted.append)
    assert fence.stale(["a"]) == set()  # no heartbeat: never fenced
    fence.ttl_s = 5
    fence.confirmed(time.monotonic())
    assert fence.stale(["a", "b"]) == set()
    fence.last_ok = time.monotonic() - 6
    assert fence.cut_off()
    assert fence.stale(["a", "b"]) == {"a", "b"}
    fence.confirmed(time.monotonic())
    fence.revoke(["c"])
    assert fence.stale(["c", "d"]) == {"c"}
    assert fence.stale(["c"]) == set()  # each revoked tag is dropped once
    assert counted == [2, 1] and fence.dropped == 3


def test_rejoining_after_a_cut_off_puts_back_and_revokes_what_was_held(
    redis_db: redis.Redis,
) -> None:
    fence = Fence()
    restored: list[str] = []
    beat = Heartbeat(redis_db, "n@h", "tiqu:alive:n@h", "unacked", Timing(10, 3600),
                     fence=fence, restore=restored.append, holding=lambda: ["m1", "m2"])
    redis_db.sadd(held_key("n@h"), "t1", "m1")
    redis_db.hset("unacked", mapping={"t1": "x", "m1": "x"})  # still unacknowledged
    beat.beat()  # not cut off: nothing put back
    assert restored == [] and fence.revoked == set()
    fence.last_ok -= 60
    beat.beat()
    assert restored == ["m1", "m2", "t1"]
    assert fence.revoked == {"m1", "m2", "t1"}
    assert not redis_db.exists(held_key("n@h"))
    assert redis_db.ttl("tiqu:alive:n@h") > 0 and not fence.cut_off()


def test_acks_and_put_backs_owed_on_a_channel_closed_by_reconnection_are_settled(
    redis_db: redis.Redis, redis_url: str,
) -> None:
    """A Redis restart during an ack left the acks owed on the old channel, which can no
    longer connect: retried (and logged) at every flush, forever. They go through the
    live channel, whose ``unacked`` keys are the same."""
    from kombu import Connection

    from workers.batching import Owed

    conn = Connection(redis_url)
    old, new = conn.channel(), conn.channel()
    for tag, queue in (("a1", "q"), ("m1", "q")):
        redis_db.hset("unacked", tag, json.dumps([{"body": tag, "properties": {}}, "", queue]))
        redis_db.zadd("unacked_index", {tag: time.time()})
    message = old.Message({"body": "m1", "properties": {"delivery_tag": "m1"}}, channel=old)
    old.close()
    owed = Owed(current_qos=lambda: new.qos)
    owed.acks.append((old.qos, "a1"))
    owed.messages.append(message)
    try:
        owed.settle()
        assert owed.acks == [] and owed.messages == []
        assert redis_db.hlen("unacked") == 0 and redis_db.zcard("unacked_index") == 0
        assert redis_db.llen("q") == 1  # the owed put-back is on its queue
    finally:
        new.close()
        conn.release()


def test_without_root_the_soak_says_so_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from tiqu import cli

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert cli.main(["soak", "--hosts", "2", "--tasks", "10"]) == 1
    assert "network namespaces need root (running as uid 1000)" in capsys.readouterr().err
    assert leftover_namespaces() == []
