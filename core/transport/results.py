"""Storing results: one envelope per task id, written once, announced once.

Every answer a worker gives, a model's or a refusal's, goes through
:func:`store_once`: ``SET NX`` with the result TTL, then ``PUBLISH`` for the
keys this call actually wrote (a redelivered task whose answer exists is not
announced a second time). The value is Celery's result meta, so
``AsyncResult(task_id).get()`` and any Redis client read it.

Redis can refuse a write and still be there: ``OOM`` under ``noeviction``,
``MISCONF`` after a failed snapshot, ``READONLY`` on a demoted replica, or a
dropped connection. Those are retried with backoff for ``retry_s`` seconds;
after that :class:`StoreFailed` tells the caller to put its messages back
unanswered rather than acknowledge or reject them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from core.errors import TiquError
from core.names import result_key

log = logging.getLogger("tiqu.results")

#: Errors after which the same write may succeed later.
RETRYABLE: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError,
                                              redis.ResponseError)
_REFUSALS = ("OOM", "MISCONF", "READONLY", "NOREPLICAS", "LOADING", "BUSY", "TRYAGAIN",
             "CLUSTERDOWN")


class StoreFailed(TiquError):
    """Redis kept refusing to store results for longer than the retry budget."""

    code = "store_failed"


def meta_json(task_id: str, envelope: dict[str, Any], date_done: str | None = None) -> str:
    """Celery's result meta for ``envelope`` as stored under ``result_key(task_id)``."""
    meta: dict[str, Any] = {
        "status": "SUCCESS", "result": envelope, "traceback": None, "children": [],
        "date_done": date_done or datetime.now(UTC).isoformat(), "task_id": task_id}
    return json.dumps(meta, ensure_ascii=False)


def retryable(err: BaseException) -> bool:
    """Whether ``err`` is Redis refusing for now, not a mistake in the command."""
    if isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
        return True
    return isinstance(err, redis.ResponseError) and _code(err).startswith(_REFUSALS)


def _code(err: BaseException) -> str:
    """The server's error code (``OOM``, ``READONLY``...). redis-py strips it from the
    message of the errors it has a class for and keeps it in ``status_code``."""
    return str(getattr(err, "status_code", None) or str(err).split(" ", 1)[0]).upper()


def store_once(client: Any, items: Sequence[tuple[str, dict[str, Any]]], ttl_s: int,
               retry_s: float = 60.0,
               sleep: Callable[[float], None] = time.sleep) -> list[bool]:
    """Store each ``(task_id, envelope)`` unless a result is there; publish the new ones.

    Returns, per item, whether this call wrote it. Retries refused writes with
    exponential backoff (0.1 s doubling to 2 s) for ``retry_s`` seconds, then
    raises :class:`StoreFailed`. A write whose reply was lost is recognised
    on the retry by its value, so it is still announced once.
    """
    now = datetime.now(UTC).isoformat()
    keys = [result_key(task_id) for task_id, _ in items]
    values = [meta_json(task_id, env, now) for task_id, env in items]
    won: list[bool | None] = [None] * len(items)  # None: not settled yet
    deadline, delay, retried = time.monotonic() + retry_s, 0.1, False
    while True:
        error: BaseException | None = None
        try:
            error = _attempt(client, keys, values, ttl_s, won, retried)
        except RETRYABLE as err:
            if not retryable(err):
                raise
            error = err
        left = sum(w is None for w in won)
        if not left:
            break
        _wait(error, deadline, delay, left, sleep)
        delay, retried = min(2.0, delay * 2), True
    _publish(client, [(keys[i], values[i]) for i, w in enumerate(won) if w])
    return [bool(w) for w in won]


def _attempt(client: Any, keys: list[str], values: list[str], ttl_s: int,
             won: list[bool | None], retried: bool) -> BaseException | None:
    """One pipeline of ``SET NX`` for the unsettled items; settles what it can.

    Returns the first refusal, if any item was refused.
    """
    refused: BaseException | None = None
    todo = [i for i, w in enumerate(won) if w is None]
    pipe = client.pipeline(transaction=False)
    for i in todo:
        pipe.set(keys[i], values[i], ex=ttl_s, nx=True)
    replies = pipe.execute(raise_on_error=False)
    maybe_ours = []
    for i, reply in zip(todo, replies, strict=True):
        if isinstance(reply, BaseException):
            if not retryable(reply):
                raise reply
            refused = refused or reply
        elif reply is None and retried:
            maybe_ours.append(i)  # written by an attempt whose reply was lost?
        else:
            won[i] = bool(reply)
    if maybe_ours:
        current = client.mget([keys[i] for i in maybe_ours])
        for i, value in zip(maybe_ours, current, strict=True):
            won[i] = value is not None and _text(value) == values[i]
    return refused


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _wait(err: BaseException | None, deadline: float, delay: float, n: int,
          sleep: Callable[[float], None]) -> None:
    if time.monotonic() + delay > deadline:
        raise StoreFailed(f"Redis refused to store {n} result(s) for longer than the retry "
                          f"budget: {_why(err)}")
    log.warning("storing %d result(s) refused (%s); retrying in %.1f s", n, _why(err), delay)
    sleep(delay)


def _why(err: BaseException | None) -> str:
    """The error's class and, for a server refusal, its code (no data in it)."""
    if err is None:
        return "write refused"
    word = _code(err)[:20] if isinstance(err, redis.ResponseError) else ""
    return f"{type(err).__name__} {word}".strip()


def _publish(client: Any, rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for key, value in rows:
            pipe.publish(key, value)
        pipe.execute()
    except RETRYABLE as err:  # stored already; waiters poll the key as well
        log.warning("announcing %d stored result(s) failed: %s", len(rows), type(err).__name__)
