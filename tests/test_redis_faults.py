"""Redis faults lose nothing: refused writes and a crash under load, on a Redis of the test's own.

- Writes refused for a few seconds while a live worker holds a batch:
  ``OOM`` (``CONFIG SET maxmemory 1`` under ``noeviction``: every write that
  allocates is refused, deletes still pass) and ``NOREPLICAS`` (``CONFIG SET
  min-replicas-to-write 1`` with no replica: every write is refused, as
  ``MISCONF`` or ``READONLY`` would, but the connections stay up). Every
  complaint is answered exactly once, nothing is left in ``unacked`` or on an
  in-flight list, and the worker's prefetch slots are all free again (a full
  batch sent after the fault is answered at once).
- Redis killed with SIGKILL under load (AOF, ``appendfsync everysec``) and
  started again on the same port and folder: everything sent more than 2 s
  before the kill is answered exactly once, and the workers reconnect by
  themselves.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import redis

from core.names import EXTRACT_QUEUE, result_key
from producer import Client
from tests.conftest import WorkerProc, start_worker
from tests.test_breaker import Announcements
from tests.test_reliability import (  # noqa: F401 - private_redis is a fixture
    PrivateRedis,
    echo_env,
    private_redis,
    wait_for,
)

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed")

BATCH = 30


def refuse(conn: redis.Redis, fault: str) -> None:
    if fault == "oom":
        conn.config_set("maxmemory", "1")
    else:
        conn.config_set("min-replicas-to-write", "1")  # and there is no replica


def allow(conn: redis.Redis, fault: str) -> None:
    if fault == "oom":
        conn.config_set("maxmemory", "64mb")
    else:
        conn.config_set("min-replicas-to-write", "0")


def leftovers(conn: redis.Redis) -> dict[str, int]:
    lists = sum(int(conn.llen(k)) for k in conn.keys("tiqu:inflight:*"))
    return {"queue": int(conn.llen(EXTRACT_QUEUE)), "unacked": int(conn.hlen("unacked")),
            "unacked_index": int(conn.zcard("unacked_index")), "inflight": lists}


@pytest.mark.parametrize(("fault", "retry_s"), [("oom", "1"), ("noreplicas", "1"),
                                                 ("oom", "30")])
def test_refused_writes_lose_nothing_and_leak_no_prefetch_slot(
    tmp_path: Path, private_redis: list[PrivateRedis],  # noqa: F811
    workers: list[WorkerProc], fault: str, retry_s: str,
) -> None:
    server = PrivateRedis(tmp_path / "redis", "--maxmemory", "64mb",
                          "--maxmemory-policy", "noeviction")
    private_redis.append(server)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    conn = redis.Redis.from_url(url)
    client = Client(conn)
    # A batch of 30 with a 2 s timer: the worker holds what it fetched until the
    # timer fires, and its prefetch limit is one batch.
    w = start_worker("refused", echo_env(url, TIQU_BATCH_SIZE=str(BATCH),
                                         TIQU_FLUSH_INTERVAL_S="2",
                                         TIQU_STORE_RETRY_S=retry_s), tmp_path / "w.log")
    workers.append(w)
    heard = Announcements(redis.Redis.from_url(url))
    heard.start()
    try:
        first = client.submit_many([(f"f{i}", f"写入被拒时的投诉 {i}") for i in range(BATCH - 1)])
        wait_for(lambda: conn.hlen("unacked") == BATCH - 1, 10, "the worker to hold the batch")
        refuse(conn, fault)
        time.sleep(5)  # the flush runs into the refusal and retries
        assert all(v is None for v in conn.mget([result_key(s.task_id) for s in first]))
        allow(conn, fault)
        got = dict(client.collect([s.task_id for s in first], timeout_s=60))
        assert sorted(got) == list(range(BATCH - 1))
        # Every slot free again: a full batch flushes on its count, not one by one.
        start = time.monotonic()
        later = client.submit_many([(f"l{i}", f"恢复后的投诉 {i}") for i in range(BATCH)])
        got = dict(client.collect([s.task_id for s in later], timeout_s=60))
        took = time.monotonic() - start
        wait_for(lambda: leftovers(conn) == dict.fromkeys(leftovers(conn), 0), 20,
                 f"nothing left behind: {leftovers(conn)}")
        time.sleep(1.0)  # a second announcement would arrive by now
    finally:
        heard.stop()
    assert sorted(got) == list(range(BATCH)) and all(e["status"] == "ok" for e in got.values())
    assert took < 15, f"the batch after the fault took {took:.1f} s"
    assert heard.count([s.task_id for s in first + later]) == [1] * (2 * BATCH - 1)
    assert "refused" in w.log() and w.proc.poll() is None


class Sender(threading.Thread):
    """Sends one complaint every ``every_s``, recording when; rides out a Redis outage."""

    def __init__(self, url: str, every_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.client = Client(redis.Redis.from_url(url, socket_timeout=2))
        self.every_s = every_s
        self.sent: list[tuple[float, str]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopped.wait(self.every_s):
            try:
                (s,) = self.client.submit_many([(f"s{n}", f"压力下的投诉 {n}")])
            except redis.RedisError:
                continue  # Redis is down: this one was never sent
            self.sent.append((time.monotonic(), s.task_id))
            n += 1


def test_redis_killed_under_load_loses_nothing_and_workers_reconnect(
    tmp_path: Path, private_redis: list[PrivateRedis],  # noqa: F811
    workers: list[WorkerProc],
) -> None:
    server = PrivateRedis(tmp_path / "redis", "--appendonly", "yes",
                          "--appendfsync", "everysec")
    private_redis.append(server)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    env = echo_env(url, TIQU_BATCH_SIZE="16", TIQU_FLUSH_INTERVAL_S="0.5",
                   TIQU_STORE_RETRY_S="60")
    ws = [start_worker(f"crash{i}", env, tmp_path / f"w{i}.log") for i in range(2)]
    workers.extend(ws)
    pids = [w.proc.pid for w in ws]
    sender = Sender(url)
    sender.start()
    conn = redis.Redis.from_url(url)
    try:
        time.sleep(4)
        # Answers stored 2 s before the kill are on disk (fsync every second); none
        # may be replaced, which would mean the task was answered a second time.
        early = [t for _, t in sender.sent]
        before = dict(zip(early, conn.mget([result_key(t) for t in early]), strict=True))
        time.sleep(2)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        killed_at = time.monotonic()
        time.sleep(1.0)
        server.start()
        time.sleep(3)
    finally:
        sender.stopped.set()
        sender.join(10)
    wanted = [t for at, t in sender.sent if at < killed_at - 2]
    after = [t for at, t in sender.sent if at > killed_at]
    assert len(wanted) > 50 and after, "the load ran before and after the kill"
    assert sum(v is not None for v in before.values()) > 50
    client = Client(conn)
    got = dict(client.collect(wanted + after, timeout_s=120))
    assert len(got) == len(wanted) + len(after)
    final = dict(zip(early, conn.mget([result_key(t) for t in early]), strict=True))
    changed = [t for t, v in before.items() if v is not None and final[t] != v]
    assert not changed, f"{len(changed)} task(s) answered twice"
    wait_for(lambda: leftovers(conn) == dict.fromkeys(leftovers(conn), 0), 30,
             f"nothing left behind: {leftovers(conn)}")
    assert [w.proc.poll() for w in ws] == [None, None] and [w.proc.pid for w in ws] == pids
    assert all("Connection to broker lost" in w.log() for w in ws)
