"""Submit complaints and collect their envelopes, with pipelined Redis calls."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import redis

from core.names import EXTRACT_QUEUE, EXTRACT_TASK, result_key
from core.redis import client_from_url
from producer.protocol import task_message

PENDING = "PENDING"


@dataclass(frozen=True)
class Submitted:
    """A sent complaint: the caller's id and the Celery task id."""

    id: str | None
    task_id: str


def redis_client(url: str, tls_ca: str | None = None, verify: bool = True) -> redis.Redis:
    """A Redis client for a ``redis://``, ``rediss://`` or ``unix://`` URL (core.redis)."""
    return client_from_url(url, SimpleNamespace(redis_tls_ca=tls_ca, redis_tls_verify=verify))


class Client:
    """Producer API: ``submit``, ``submit_many`` (pipelined) and ``collect``.

    ``broker`` and ``backend`` are Redis clients (usually the same server).
    """

    def __init__(
        self, broker: redis.Redis, backend: redis.Redis | None = None,
        queue: str = EXTRACT_QUEUE, task_name: str = EXTRACT_TASK,
    ) -> None:
        self.broker = broker
        self.backend = backend or broker
        self.queue = queue
        self.task_name = task_name

    @classmethod
    def from_settings(cls, settings: Any) -> Client:
        return cls(client_from_url(settings.redis_url, settings),
                   client_from_url(settings.backend_url, settings))

    def submit(self, text: Any, id: str | None = None) -> Submitted:
        """Send one complaint; returns at once with its task id."""
        return self.submit_many([(id, text)])[0]

    def submit_many(
        self, items: Iterable[tuple[str | None, Any]], chunk: int = 1000
    ) -> list[Submitted]:
        """Send ``(id, text)`` pairs in pipelined chunks; order is preserved."""
        sent: list[Submitted] = []
        batch: list[tuple[str | None, Any]] = []
        for item in items:
            batch.append(item)
            if len(batch) >= chunk:
                sent.extend(self._send(batch))
                batch = []
        if batch:
            sent.extend(self._send(batch))
        return sent

    def _send(self, batch: list[tuple[str | None, Any]]) -> list[Submitted]:
        pipe = self.broker.pipeline(transaction=False)
        out = []
        for id_, text in batch:
            task_id, message = task_message(self.task_name, {"text": text, "id": id_}, self.queue)
            pipe.lpush(self.queue, message)
            out.append(Submitted(id_, task_id))
        pipe.execute()
        return out

    def send_tasks(self, tasks: Iterable[tuple[str, str | None, Any]]) -> None:
        """Send ``(task_id, id, text)`` triples under task ids chosen by the caller.

        A caller can record the ids before sending, so a crash mid-send loses
        none; sending a task id twice yields one result (results are SET NX).
        """
        pipe = self.broker.pipeline(transaction=False)
        for task_id, id_, text in tasks:
            _, message = task_message(self.task_name, {"text": text, "id": id_}, self.queue,
                                      task_id=task_id)
            pipe.lpush(self.queue, message)
        pipe.execute()

    def poll(self, task_ids: list[str]) -> list[dict[str, Any] | None]:
        """Envelopes for finished tasks, ``None`` for those still pending."""
        if not task_ids:
            return []
        raw = self.backend.mget([result_key(t) for t in task_ids])
        return [_envelope(r) for r in raw]

    def collect(
        self, task_ids: list[str], timeout_s: float | None = None, interval_s: float = 0.05
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(index, envelope)`` as results arrive, until all are in.

        Raises ``TimeoutError`` naming how many are missing when ``timeout_s`` passes.
        """
        waiting = dict(enumerate(task_ids))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while waiting:
            idx = list(waiting)[:5000]
            for i, env in zip(idx, self.poll([waiting[i] for i in idx]), strict=True):
                if env is not None:
                    del waiting[i]
                    yield i, env
            if waiting:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{len(waiting)} of {len(task_ids)} results missing")
                time.sleep(interval_s)

    def queue_length(self, queue: str | None = None) -> int:
        return int(self.broker.llen(queue or self.queue))


def _envelope(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    meta = json.loads(raw)
    status = meta.get("status")
    if status == "SUCCESS":
        result = meta.get("result")
        return result if isinstance(result, dict) else {"status": "error", "result": None,
                                                         "error": {"code": "bad_result",
                                                                   "message": "not an object"}}
    if status in ("FAILURE", "REVOKED"):
        exc = meta.get("result") or {}
        return {"id": None, "status": "error", "result": None,
                "error": {"code": "task_failed", "message": str(exc.get("exc_type", status))}}
    return None
