"""core.transport.fetch on a real kombu Redis channel: one fetch takes many messages,
records them as unacknowledged in one transaction and leaves none on the list;
items it cannot deliver are answered or dead-lettered, never left behind."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from core.names import DEAD_LETTER_KEY, EXTRACT_QUEUE, EXTRACT_TASK
from core.transport import fetch
from producer.protocol import task_message


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


def _dead_letters(client: redis.Redis) -> list[tuple[str, int]]:
    entries = [json.loads(x) for x in reversed(client.lrange(DEAD_LETTER_KEY, 0, -1))]
    assert all(set(e) == {"reason", "size_bytes", "queue", "at"} for e in entries), entries
    return [(e["reason"], e["size_bytes"]) for e in entries]


def test_unreadable_items_between_good_ones_are_dead_lettered_and_the_rest_delivered(
    channel: Any, redis_db: redis.Redis
) -> None:
    good = [task_message(EXTRACT_TASK, {"text": f"t{i}"}, EXTRACT_QUEUE) for i in range(4)]
    bad = [b"not json", b'{"no": "properties"}', b"[]"]
    _push(redis_db, [good[0][1], bad[0], good[1][1], bad[1], good[2][1], bad[2], good[3][1]])
    got = _consume(channel, prefetch=16)

    _fetch_once(channel)

    assert got == [task_id for task_id, _ in good]
    assert redis_db.llen(EXTRACT_QUEUE) == 0
    assert redis_db.llen(channel._tiqu_inflight.key) == 0
    assert len(redis_db.hkeys(channel.qos.unacked_key)) == 4
    assert _dead_letters(redis_db) == [("unreadable_message", len(bad[0])),
                                       ("invalid_message", len(bad[1])),
                                       ("invalid_message", len(bad[2]))]


def _nested(depth: int, kind: str) -> bytes:
    if kind == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_nested_items_are_dead_lettered_and_the_good_ones_delivered(
    channel: Any, redis_db: redis.Redis, kind: str
) -> None:
    good = [task_message(EXTRACT_TASK, {"text": f"t{i}"}, EXTRACT_QUEUE) for i in range(3)]
    deep = [_nested(d, kind) for d in (500, 2000, 10000)]
    _push(redis_db, [good[0][1], deep[0], deep[1], good[1][1], deep[2], good[2][1]])
    got = _consume(channel, prefetch=16)

    _fetch_once(channel)  # before: RecursionError out of the event loop

    assert got == [task_id for task_id, _ in good]
    assert _dead_letters(redis_db) == [("nested_too_deep", len(x)) for x in deep]
    assert redis_db.llen(EXTRACT_QUEUE) == redis_db.llen(channel._tiqu_inflight.key) == 0
    assert len(redis_db.hkeys(channel.qos.unacked_key)) == 3


def test_an_item_over_max_message_bytes_is_refused_before_it_is_decoded(
    channel: Any, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.utils import json as kjson

    channel._tiqu_inflight = dataclasses.replace(channel._tiqu_inflight, max_message_bytes=2048)
    decoded: list[int] = []
    real_loads = kjson.loads
    monkeypatch.setattr(kjson, "loads", lambda s, **kw: decoded.append(len(s)) or real_loads(
        s, **kw))
    small = task_message(EXTRACT_TASK, {"text": "t"}, EXTRACT_QUEUE)
    big_id, big = task_message(EXTRACT_TASK, {"text": "x" * 2048}, EXTRACT_QUEUE)
    _push(redis_db, [big, small[1]])
    got = _consume(channel, prefetch=16)

    _fetch_once(channel)

    assert got == [small[0]]
    assert len(big) not in decoded and decoded  # the small one was decoded, the big one not
    assert _dead_letters(redis_db) == [("message_too_large", len(big))]
    assert redis_db.llen(channel._tiqu_inflight.key) == 0


def test_messages_sharing_a_delivery_tag_are_recorded_and_delivered_separately(
    channel: Any, redis_db: redis.Redis
) -> None:
    first_id, first = task_message(EXTRACT_TASK, {"text": "a"}, EXTRACT_QUEUE)
    data = json.loads(task_message(EXTRACT_TASK, {"text": "b"}, EXTRACT_QUEUE)[1])
    data["properties"]["delivery_tag"] = json.loads(first)["properties"]["delivery_tag"]
    _push(redis_db, [first, json.dumps(data), first])  # the same item twice, too
    got = _consume(channel, prefetch=16)

    _fetch_once(channel)

    assert got == [first_id, data["headers"]["id"], first_id]
    # each is in unacked on its own: a kill now loses none of them (before: one entry)
    assert redis_db.hlen(channel.qos.unacked_key) == 3 == redis_db.zcard(
        channel.qos.unacked_index_key)
    assert len(channel.qos._delivered) == 3
    assert redis_db.llen(channel._tiqu_inflight.key) == 0


def test_refused_items_with_a_task_id_are_answered_not_dead_lettered(
    channel: Any, redis_db: redis.Redis
) -> None:
    answered: list[tuple[str, str, str]] = []
    channel._tiqu_inflight = dataclasses.replace(channel._tiqu_inflight, answer=answered.extend)
    no_tag = json.loads(task_message(EXTRACT_TASK, {"text": "a"}, EXTRACT_QUEUE)[1])
    del no_tag["properties"]["delivery_tag"]
    deep = json.loads(task_message(EXTRACT_TASK, {"text": "b"}, EXTRACT_QUEUE)[1])
    deep["headers"]["shadow"] = json.loads(_nested(100, "list"))
    _push(redis_db, [json.dumps(no_tag), json.dumps(deep), b"no id at all"])
    _consume(channel, prefetch=16)

    _fetch_once(channel)

    assert [(task_id, code) for task_id, code, _ in answered] == [
        (no_tag["headers"]["id"], "invalid_message"), (deep["headers"]["id"], "nested_too_deep")]
    assert _dead_letters(redis_db) == [("unreadable_message", 12)]
    assert redis_db.llen(channel._tiqu_inflight.key) == 0


def test_refused_items_stay_on_the_in_flight_list_when_they_cannot_be_answered(
    channel: Any, redis_db: redis.Redis
) -> None:
    def refuse_to_store(_: Any) -> None:
        raise RuntimeError("Redis refused the write")

    channel._tiqu_inflight = dataclasses.replace(channel._tiqu_inflight, answer=refuse_to_store)
    no_tag = json.loads(task_message(EXTRACT_TASK, {"text": "a"}, EXTRACT_QUEUE)[1])
    del no_tag["properties"]["delivery_tag"]
    good_id, good = task_message(EXTRACT_TASK, {"text": "b"}, EXTRACT_QUEUE)
    _push(redis_db, [json.dumps(no_tag), good])
    got = _consume(channel, prefetch=16)

    _fetch_once(channel)

    assert got == [good_id]
    # left for tend() to put back on the queue: not lost, not dead-lettered
    assert redis_db.lrange(channel._tiqu_inflight.key, 0, -1) == [json.dumps(no_tag).encode()]
    assert redis_db.llen(DEAD_LETTER_KEY) == 0


def test_the_dead_letter_list_keeps_the_newest_entries_and_never_expires(
    channel: Any, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "DEAD_LETTER_MAX", 3)
    _push(redis_db, [b"x" * n for n in range(1, 6)])
    _consume(channel, prefetch=16)

    _fetch_once(channel)

    assert _dead_letters(redis_db) == [("unreadable_message", n) for n in (3, 4, 5)]
    assert redis_db.ttl(DEAD_LETTER_KEY) == -1
    assert redis_db.llen(channel._tiqu_inflight.key) == redis_db.llen(EXTRACT_QUEUE) == 0


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
