"""Hostile queue items: no single message stops a worker, and none is lost silently.

Every producer holds the Redis password, so any item on the ``extract`` list
may be hostile. Each test pushes such items to one live echo worker, then a
normal complaint, and checks the invariants: the worker answers the complaint,
each hostile item is answered under its task id or dead-lettered, and nothing
is left on the queue, on the worker's in-flight list or in ``unacked``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.names import DEAD_LETTER_KEY, EXTRACT_QUEUE, EXTRACT_TASK, result_key
from core.queue import make_celery
from core.settings import Settings
from core.transport.fetch import INFLIGHT_PREFIX
from producer import Client
from producer.protocol import task_message
from tests.conftest import WorkerProc, start_worker
from tests.test_reliability import echo_env, wait_for

#: The worker's max_message_bytes: small, so oversize items stay cheap to build.
MAX_BYTES = 65536
DEAD_LETTER_FIELDS = {"reason", "size_bytes", "queue", "at"}


@dataclass
class Served:
    db: redis.Redis
    worker: WorkerProc
    client: Client

    @property
    def inflight_key(self) -> str:
        return f"{INFLIGHT_PREFIX}{EXTRACT_QUEUE}:{self.worker.name}"

    def push(self, *items: bytes | str) -> None:
        for item in items:
            self.db.lpush(EXTRACT_QUEUE, item)

    def serves_next(self) -> None:
        """A normal complaint sent now is answered, and the worker is still the same process."""
        sent = self.client.submit("王五 上海市 still serving", id="next")
        env = dict(self.client.collect([sent.task_id], timeout_s=60))[0]
        assert env["status"] == "ok" and env["worker"] == self.worker.name
        assert self.worker.proc.poll() is None

    def left_behind(self) -> dict[str, int]:
        return {"queue": self.db.llen(EXTRACT_QUEUE), "inflight": self.db.llen(self.inflight_key),
                "unacked": self.db.hlen("unacked"), "unacked_index": self.db.zcard("unacked_index")}

    def nothing_left(self, settle_s: float = 3.0) -> None:
        """Queue, in-flight list and unacked empty now, and still empty ``settle_s`` later."""
        wait_for(lambda: not any(self.left_behind().values()), 30, "queue and unacked to empty")
        time.sleep(settle_s)  # nothing comes back (tend, restore)
        assert not any(self.left_behind().values()), self.left_behind()

    def dead_letters(self) -> list[dict[str, Any]]:
        entries = [json.loads(x) for x in self.db.lrange(DEAD_LETTER_KEY, 0, -1)]
        for entry in entries:
            assert set(entry) == DEAD_LETTER_FIELDS, entry  # never the item itself
        return entries[::-1]  # oldest first

    def answer(self, task_id: str, timeout_s: float = 60) -> dict[str, Any]:
        return dict(self.client.collect([task_id], timeout_s=timeout_s))[0]


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One echo worker for the whole module: each hostile item must leave it serving."""
    db = redis.Redis.from_url(redis_url)
    db.flushdb()
    log = tmp_path_factory.mktemp("hostile") / "worker.log"
    w = start_worker("hostile", echo_env(redis_url, TIQU_MAX_MESSAGE_BYTES=str(MAX_BYTES)), log)
    yield Served(db, w, Client(db))
    w.kill()
    db.flushdb()


@pytest.fixture()
def fresh(served: Served) -> Served:
    """The module's worker, alive, with an empty dead-letter list."""
    assert served.worker.proc.poll() is None, served.worker.log()[-3000:]
    served.db.delete(DEAD_LETTER_KEY)
    return served


def nested(depth: int, kind: str = "list") -> str:
    if kind == "dict":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


def message(text: str = "x", task_id: str | None = None, **headers: Any) -> tuple[str, dict]:
    """A well-formed protocol 2 message as a dict, to be altered by the test."""
    task_id, raw = task_message(EXTRACT_TASK, {"text": text, "id": "h"}, EXTRACT_QUEUE,
                                task_id=task_id)
    data = json.loads(raw)
    data["headers"].update(headers)
    return task_id, data


def with_body(data: dict, body: str | bytes) -> str:
    raw = body.encode() if isinstance(body, str) else body
    return json.dumps({**data, "body": base64.b64encode(raw).decode("ascii")})


# --- nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [500, 2000, 10000])
def test_deeply_nested_queue_items_are_dead_lettered_and_the_worker_serves_on(
    fresh: Served, depth: int
) -> None:
    items = [nested(depth), nested(depth, "dict")]
    fresh.push(*items)
    fresh.serves_next()

    dead = fresh.dead_letters()
    assert [d["reason"] for d in dead] == ["nested_too_deep"] * 2
    assert [d["size_bytes"] for d in dead] == [len(x) for x in items]
    assert {d["queue"] for d in dead} == {EXTRACT_QUEUE}
    fresh.nothing_left()


@pytest.mark.parametrize("depth", [500, 2000, 10000])
def test_nesting_inside_a_message_is_answered_by_id_or_dead_lettered(
    fresh: Served, depth: int
) -> None:
    # In the body (base64 JSON): the envelope is sound, so the id answers.
    body_id, data = message()
    in_body = with_body(data, f'[[], {{"text": "x", "id": "n", "deep": {nested(depth)}}}, {{}}]')
    # In a header: readable only while the JSON decoder can take the whole item.
    header_id, data = message(deep=json.loads(nested(min(depth, 500))))
    in_header = json.dumps(data) if depth == 500 else json.dumps(data).replace(
        nested(500), nested(depth))
    fresh.push(in_body, in_header)
    fresh.serves_next()

    assert fresh.answer(body_id)["error"]["code"] == "nested_too_deep"
    if depth == 500:  # decodable, then refused by the depth check: answered
        assert fresh.answer(header_id)["error"]["code"] == "nested_too_deep"
        assert fresh.dead_letters() == []
    else:  # the id cannot be read: dead-lettered, nothing stored under it
        assert [d["reason"] for d in fresh.dead_letters()] == ["nested_too_deep"]
        assert fresh.db.get(result_key(header_id)) is None
    fresh.nothing_left()


# --- size -------------------------------------------------------------------------------


def test_items_over_max_message_bytes_are_dead_lettered_without_being_decoded(
    fresh: Served
) -> None:
    big_id, data = message(text="大" * MAX_BYTES)  # a sound message, just too big
    big = json.dumps(data, ensure_ascii=False).encode()
    deep = nested(MAX_BYTES)  # 2 x MAX_BYTES: refused for its size, not for its nesting
    fresh.push(big, deep)
    fresh.serves_next()

    dead = fresh.dead_letters()
    assert [(d["reason"], d["size_bytes"]) for d in dead] == [
        ("message_too_large", len(big)), ("message_too_large", len(deep))]
    assert fresh.db.get(result_key(big_id)) is None  # unread, so unanswered
    fresh.nothing_left()


# --- scheduling headers -------------------------------------------------------------------


def test_eta_and_countdown_are_answered_at_once_and_hold_no_prefetch_slot(
    fresh: Served, redis_url: str
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ids = []
    for _ in range(20):
        task_id, data = message(eta=later)
        fresh.push(json.dumps(data))
        ids.append(task_id)
    app = make_celery(Settings(redis_url=redis_url))
    try:  # Celery sends a countdown as an eta header
        ids += [str(app.send_task(EXTRACT_TASK, kwargs={"text": "稍后", "id": f"c{i}"},
                                  countdown=3600).id) for i in range(20)]
    finally:
        app.close()
    start = time.monotonic()
    got = dict(fresh.client.collect(ids, timeout_s=60))
    assert time.monotonic() - start < 30
    assert {env["error"]["code"] for env in got.values()} == {"eta_not_supported"}
    assert len(got) == 40
    fresh.serves_next()  # 40 > prefetch (8): none of them holds a slot
    fresh.nothing_left()


def test_expires_in_the_past_is_answered_expired_and_in_the_future_runs(
    fresh: Served
) -> None:
    now = datetime.now(UTC)
    past_id, past = message(expires=(now - timedelta(minutes=5)).isoformat())
    naive_id, naive = message(expires=(now - timedelta(minutes=5)).replace(tzinfo=None)
                              .isoformat())
    future_id, future = message(text="还来得及", expires=(now + timedelta(hours=1)).isoformat())
    fresh.push(*(json.dumps(d) for d in (past, naive, future)))

    assert fresh.answer(past_id)["error"]["code"] == "expired"
    assert fresh.answer(naive_id)["error"]["code"] == "expired"
    assert fresh.answer(future_id)["result"]["question"] == "还来得及"
    fresh.serves_next()
    fresh.nothing_left()


# --- protocol, ids, delivery tags -------------------------------------------------------------


def protocol1(task_id: Any) -> str:
    _, data = message()
    data["headers"] = {}
    body = {"task": EXTRACT_TASK, "id": task_id, "args": [], "kwargs": {"text": "旧协议"}}
    return with_body(data, json.dumps(body))


def test_protocol1_and_unusable_task_ids_are_answered_or_dead_lettered(fresh: Served) -> None:
    p1_id = str(uuid.uuid4())
    long_id = "L" * 300
    items = [protocol1(p1_id), protocol1(12345)]
    expected_dead = ["unsupported_protocol"]
    for bad in (12345, ["a", "b"], None, "", long_id):
        _, data = message()
        data["headers"]["id"] = bad
        items.append(json.dumps(data))
        expected_dead.append("invalid_task_id")
    fresh.push(*items)
    fresh.serves_next()

    assert fresh.answer(p1_id)["error"]["code"] == "unsupported_protocol"
    assert [d["reason"] for d in fresh.dead_letters()] == expected_dead
    assert fresh.db.get(result_key(long_id)) is None
    fresh.nothing_left()


def test_messages_sharing_a_delivery_tag_are_each_answered_once(fresh: Served) -> None:
    first_id, first = message(text="第一")
    second_id, second = message(text="第二")
    second["properties"]["delivery_tag"] = first["properties"]["delivery_tag"]
    # the same item twice: one task id, delivered twice, answered once
    fresh.push(json.dumps(first), json.dumps(second), json.dumps(first))

    assert fresh.answer(first_id)["result"]["question"] == "第一"
    assert fresh.answer(second_id)["result"]["question"] == "第二"
    fresh.serves_next()
    assert fresh.dead_letters() == []
    fresh.nothing_left()


# --- generated: nesting, sizes and encodings against one live worker -----------------------

ENCODINGS = ["utf-8", "utf-16", "latin-1", "gb18030", "utf-32"]


@st.composite
def hostile_items(draw: Any) -> tuple[bytes, str | None]:
    """``(item, task id or None)``: garbage, nesting anywhere, odd sizes and encodings."""
    kind = draw(st.sampled_from(["bytes", "nested", "header", "body", "encoding", "size"]))
    depth = draw(st.integers(1, 12000))
    deep = nested(depth, draw(st.sampled_from(["list", "dict"])))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), None
    if kind == "nested":
        return deep.encode(), None
    task_id, data = message()
    if kind == "header":
        return json.dumps(data).replace('"shadow": null', f'"shadow": {deep}').encode(), task_id
    if kind == "body":
        return with_body(data, f'[[], {{"text": "t", "x": {deep}}}, {{}}]').encode(), task_id
    text = draw(st.text(min_size=1, max_size=40))
    body = json.dumps([[], {"text": text}, {}], ensure_ascii=False)
    if kind == "encoding":
        encoded = body.encode(draw(st.sampled_from(ENCODINGS)), "replace")
        return with_body(data, encoded).encode(), task_id
    size = draw(st.integers(MAX_BYTES - 600, MAX_BYTES + 600))  # either side of the limit
    data["headers"]["pad"] = "p" * max(0, size - len(with_body(data, body)) - 11)
    return with_body(data, body).encode(), task_id


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_items(), min_size=1, max_size=6))
def test_generated_hostile_items_leave_one_worker_serving_and_nothing_lost(
    fresh: Served, items: list[tuple[bytes, str | None]]
) -> None:
    fresh.db.delete(DEAD_LETTER_KEY)
    fresh.push(*(raw for raw, _ in items))
    fresh.serves_next()  # pushed after them, so every item before it is settled

    ids = [task_id for _, task_id in items if task_id is not None]
    answered = sum(fresh.db.exists(result_key(task_id)) for task_id in ids)
    assert answered + len(fresh.dead_letters()) == len(items)  # each one or the other
    fresh.nothing_left(settle_s=0.5)


def test_the_worker_log_holds_no_hostile_content(fresh: Served) -> None:
    marker = "HOSTILE-" + uuid.uuid4().hex
    task_id, data = message(eta="2999-01-01T00:00:00+00:00", marker=marker)
    fresh.push(json.dumps(data), json.dumps({"headers": {"note": marker}}),
               nested(3000) + marker)
    assert fresh.answer(task_id)["error"]["code"] == "eta_not_supported"
    fresh.serves_next()
    assert len(fresh.dead_letters()) == 2
    assert fresh.db.ttl(DEAD_LETTER_KEY) == -1  # permanent; bounded by LTRIM (test_fetch)
    log = fresh.worker.log()
    assert marker not in log
    assert "Traceback" not in log and "Unrecoverable" not in log

