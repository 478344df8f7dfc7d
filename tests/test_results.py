"""core.transport.results.store_once on real Redis: written once, announced once, retried."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from core.names import result_key
from core.transport.results import StoreFailed, store_once
from tests.test_reliability import PrivateRedis


def _announced(client: redis.Redis, keys: list[str]) -> tuple[redis.client.PubSub, list[str]]:
    pubsub = client.pubsub()
    pubsub.subscribe(*keys)
    for _ in keys:
        pubsub.get_message(timeout=1)  # the subscribe confirmations
    return pubsub, []


def _drain(pubsub: redis.client.PubSub) -> list[str]:
    seen = []
    while (msg := pubsub.get_message(timeout=0.3)) is not None:
        if msg["type"] == "message":
            seen.append(msg["channel"].decode())
    return seen


def test_a_result_is_written_once_and_announced_only_by_the_write_that_won(
    redis_db: redis.Redis
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    pubsub, _ = _announced(redis_db, [result_key(i) for i in ids])
    first = store_once(redis_db, [(ids[0], {"n": 1}), (ids[1], {"n": 1})], ttl_s=60)
    again = store_once(redis_db, [(ids[0], {"n": 2}), (ids[2], {"n": 2})], ttl_s=60)

    assert first == [True, True] and again == [False, True]
    assert b'"n": 1' in redis_db.get(result_key(ids[0]))  # never overwritten
    assert sorted(_drain(pubsub)) == sorted(result_key(i) for i in ids)  # once each
    assert all(0 < redis_db.ttl(result_key(i)) <= 60 for i in ids)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_refused_writes_are_retried_until_redis_takes_them_or_the_budget_ends(
    tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.config_set("min-replicas-to-write", 1)  # every write: NOREPLICAS
        with pytest.raises(StoreFailed, match="NOREPLICAS"):
            store_once(client, [("a", {"n": 1})], ttl_s=60, retry_s=0.5)
        assert client.get(result_key("a")) is None

        threading.Timer(1.0, client.config_set, ("min-replicas-to-write", 0)).start()
        start = time.monotonic()
        assert store_once(client, [("a", {"n": 1}), ("b", {"n": 2})], ttl_s=60,
                          retry_s=30) == [True, True]
        assert 0.9 < time.monotonic() - start < 10
        assert client.ttl(result_key("b")) > 0
    finally:
        server.stop()
