"""Consumer-side dynamic batching on top of celery-batches.

celery-batches buffers ``tiqu.extract`` messages and flushes them after
``flush_every`` messages or ``flush_interval`` seconds, whichever comes first.
``ExtractBatches.flush`` runs the batch inline (the worker uses the solo pool:
one process owns the GPU), stores every result in one Redis pipeline, and only
then acknowledges the messages. A message whose result already exists (a
redelivery after a worker died) is acknowledged without being run again, and
results are written with ``SET NX`` so a duplicate never overwrites the first
answer.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery_batches import Batches

from core.names import result_key

log = logging.getLogger("tiqu.worker")


def payload_of(request: Any) -> Any:
    """The task payload: kwargs ``{"text", "id", ...}``, or a dict as first arg."""
    args, kwargs, _embed = request._payload
    if kwargs:
        return dict(kwargs)
    if args and len(args) == 1:
        return args[0]
    return {"args": list(args)} if args else {}


class ExtractBatches(Batches):
    """Batches task whose flush stores per-task results before acking."""

    abstract = True
    runtime: Any = None  # workers.runtime.Runtime, set by the app
    result_ttl_s: int = 86400

    def flush(self, requests: Any) -> None:
        requests = list(requests)
        client = self.app.backend.client
        done = client.mget([result_key(r.id) for r in requests])
        todo = [r for r, d in zip(requests, done, strict=True) if d is None]
        for r, d in zip(requests, done, strict=True):
            if d is not None:
                log.info("task %s already answered; acknowledging the duplicate", r.id)
        if todo:
            if self.runtime.worker_name == "":
                self.runtime.worker_name = todo[0].hostname or ""
            envelopes = self.runtime.handle([(r.id, payload_of(r)) for r in todo])
            self._store(todo, envelopes)
            for r, env in zip(todo, envelopes, strict=True):
                r.send_event("task-succeeded", result=f"status={env['status']}", runtime=(
                    (env.get("latency_ms") or 0) / 1000))
        acknowledge_all(requests)

    def _store(self, requests: list[Any], envelopes: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC).isoformat()
        pipe = self.app.backend.client.pipeline(transaction=False)
        for r, env in zip(requests, envelopes, strict=True):
            meta = {"status": "SUCCESS", "result": env, "traceback": None, "children": [],
                    "date_done": now, "task_id": r.id}
            value = json.dumps(meta, ensure_ascii=False)
            key = result_key(r.id)
            pipe.set(key, value, ex=self.result_ttl_s, nx=True)
            pipe.publish(key, value)
        pipe.execute()


def acknowledge_all(requests: list[Any]) -> None:
    """Acknowledge a stored batch; on Redis, in one round trip for all of it.

    kombu's Redis transport removes each acknowledged message from its unacked
    index with a MULTI/EXEC of its own, and Celery defers each ack to the next
    loop turn: one round trip per task, a third of a worker's Redis traffic on
    a fast engine. Here every message is acknowledged through kombu as usual,
    but the removals share one pipeline. Should it fail, the messages stay in
    the unacked index and come back after the visibility timeout, when their
    stored results make the worker acknowledge them without running them again.
    Other transports get the usual per-message acks.
    """
    todo = [r for r in requests if not r.acknowledged]
    channel = getattr(getattr(todo[0], "message", None), "channel", None) if todo else None
    qos = getattr(channel, "qos", None)
    if qos is None or not hasattr(qos, "_remove_from_indices"):
        for r in todo:
            r.acknowledge()
        return
    from kombu.transport import virtual

    with qos.pipe_or_acquire() as pipe:
        def ack(delivery_tag: Any) -> None:
            qos._remove_from_indices(delivery_tag, pipe)
            virtual.QoS.ack(qos, delivery_tag)  # frees the prefetch slot

        qos.ack = ack
        try:
            for r in todo:
                r.message.ack()
                r.acknowledged = True
        finally:
            del qos.ack  # back to the class's method
        try:
            pipe.execute()
        except Exception as err:  # as kombu's ack_log_error: log, the message returns later
            log.warning("acknowledging %d tasks failed: %s; they will be redelivered",
                        len(todo), type(err).__name__)
