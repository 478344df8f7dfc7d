"""workers.fetch on a real kombu Redis channel: one fetch takes many messages,
records them as unacknowledged in one transaction and leaves none on the list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from core.names import EXTRACT_QUEUE, EXTRACT_TASK
from producer.protocol import task_message
from workers import fetch


@pytest.fixture()
def channel(redis_db: redis.Redis, redis_url: str) -> Iterator[Any]:
    fetch.patch_redis_transport()
    with Connection(redis_url, transport_options={"priority_steps": [0]}) as conn:
        ch = conn.default_channel
        ch._tiqu_inflight = fetch.InFlight(EXTRACT_QUEUE, "fetch@tests", ttl_s=30)
        ch._tiqu_test_conn = conn
        yield ch


def _consume(ch: Any, prefetch: int) -> list[str]:
    got: list[str] = []
    ch.basic_qos(prefetch_count=prefetch)
    ch.basic_consume(EXTRACT_QUEUE, no_ack=False, consumer_tag="tests",
                     callback=lambda m: got.append(m.headers["id"]))
    return got


def _push(client: redis.Redis, items: list[bytes | str]) -> None:
    for item in items:
        client.lpush(EXTRACT_QUEUE, item)  # LPUSH + (BR)RPOPLPUSH: first in, first out


def _fetch_once(ch: Any) -> None:
    """One turn of kombu's poller: a BRPOPLPUSH and its reply (the patched path)."""
    ch._tiqu_test_conn.drain_events(timeout=5)


def test_one_fetch_takes_a_prefetch_worth_and_records_them_atomically(
    channel: Any, redis_db: redis.Redis
) -> None:
    sent = [task_message(EXTRACT_TASK, {"text": f"t{i}"}, EXTRACT_QUEUE) for i in range(100)]
    _push(redis_db, [m for _, m in sent])
    got = _consume(channel, prefetch=40)

    _fetch_once(channel)

    assert got == [task_id for task_id, _ in sent[:40]]  # in order, up to the prefetch
    assert redis_db.llen(EXTRACT_QUEUE) == 60
    assert redis_db.llen(channel._tiqu_inflight.key) == 0
    unacked = redis_db.hkeys(channel.qos.unacked_key)
    assert len(unacked) == 40 == redis_db.zcard(channel.qos.unacked_index_key)
    assert len(channel.qos._delivered) == 40
    assert not channel._tiqu_recorded  # each recorded tag went through append once


def test_unreadable_items_between_good_ones_are_dropped_and_the_rest_delivered(
    channel: Any, redis_db: redis.Redis
) -> None:
    good = [task_message(EXTRACT_TASK, {"text": f"t{i}"}, EXTRACT_QUEUE) for i in range(4)]
    _push(redis_db, [good[0][1], b"not json", good[1][1], b'{"no": "properties"}',
                     good[2][1], b"[]", good[3][1]])
    got = _consume(channel, prefetch=16)

    _fetch_once(channel)

    assert got == [task_id for task_id, _ in good]
    assert redis_db.llen(EXTRACT_QUEUE) == 0
    assert redis_db.llen(channel._tiqu_inflight.key) == 0
    assert len(redis_db.hkeys(channel.qos.unacked_key)) == 4


def test_prefetch_of_one_fetches_one(channel: Any, redis_db: redis.Redis) -> None:
    sent = [task_message(EXTRACT_TASK, {"text": f"t{i}"}, EXTRACT_QUEUE) for i in range(3)]
    _push(redis_db, [m for _, m in sent])
    got = _consume(channel, prefetch=1)

    _fetch_once(channel)

    assert got == [sent[0][0]]
    assert redis_db.llen(EXTRACT_QUEUE) == 2
    assert redis_db.llen(channel._tiqu_inflight.key) == 0


def test_an_unreadable_first_item_does_not_hold_back_the_good_ones(
    channel: Any, redis_db: redis.Redis
) -> None:
    good = [task_message(EXTRACT_TASK, {"text": f"t{i}"}, EXTRACT_QUEUE) for i in range(3)]
    _push(redis_db, [b"not json", *[m for _, m in good]])
    got = _consume(channel, prefetch=16)

    _fetch_once(channel)

    assert got == [task_id for task_id, _ in good]  # same fetch, not an hour later
    assert redis_db.llen(channel._tiqu_inflight.key) == 0
    assert len(redis_db.hkeys(channel.qos.unacked_key)) == 3


def test_messages_left_undelivered_by_a_failing_delivery_go_back_on_the_queue(
    channel: Any, redis_db: redis.Redis
) -> None:
    sent = [task_message(EXTRACT_TASK, {"text": f"t{i}"}, EXTRACT_QUEUE) for i in range(5)]
    _push(redis_db, [m for _, m in sent])
    got: list[str] = []

    def take(message: Any) -> None:
        got.append(message.headers["id"])
        if len(got) == 2:
            raise RuntimeError("consumer broke")

    channel.basic_qos(prefetch_count=16)
    channel.basic_consume(EXTRACT_QUEUE, no_ack=False, consumer_tag="tests", callback=take)
    with pytest.raises(RuntimeError, match="consumer broke"):
        _fetch_once(channel)

    assert got == [sent[0][0], sent[1][0]]
    # the two delivered stay unacknowledged (kombu restores them when the channel
    # closes); the three never delivered are back on the queue, in order, at once
    assert len(redis_db.hkeys(channel.qos.unacked_key)) == 2
    assert redis_db.llen(channel._tiqu_inflight.key) == 0
    requeued = [json.loads(m)["headers"]["id"] for m in redis_db.lrange(EXTRACT_QUEUE, 0, -1)]
    assert sorted(requeued) == sorted(task_id for task_id, _ in sent[2:])
