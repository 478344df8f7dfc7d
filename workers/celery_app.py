"""The Celery app for ``celery -A workers worker -Q extract --pool solo``.

Settings come from ``TIQU_*`` environment variables, built once here (the
entry point). The broker is reached through tiqu's kombu transport
(core.transport.kombu_redis, selected by module path; the URL stays
``TIQU_REDIS_URL``), and the message guard (core.transport.guard) is installed
before the batch task, which settles the guard's fetch before each flush. The
model loads once per worker process, after the worker is set up and before it
consumes; never in a parent that later forks.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from core.names import EXTRACT_QUEUE, EXTRACT_TASK
from core.queue import make_celery
from core.settings import Settings
from core.transport import faults, guard, kombu_redis
from workers import control, hotswap, metrics
from workers.batching import ExtractBatches
from workers.runtime import Runtime

settings = Settings()
faults.arm(settings.fault_point)
app = make_celery(settings)
app.conf.update(kombu_redis.broker_settings(settings.redis_url))
runtime = Runtime(settings, engine_kind=settings.engine)
message_guard = guard.install(app, runtime, settings)

log = logging.getLogger("tiqu.worker")


@app.task(
    base=ExtractBatches,
    name=EXTRACT_TASK,
    bind=True,
    flush_every=settings.batch_size,
    flush_interval=settings.flush_interval_s,
    runtime=runtime,
    guard=message_guard,
    result_ttl_s=settings.result_ttl_s,
    store_retry_s=settings.store_retry_s,
)
def extract(self: Any, requests: Any) -> None:  # pragma: no cover - flush runs the batch
    """Batches of ``{"text", "id"}`` payloads; see ExtractBatches.flush."""


for _plugin in (hotswap, metrics, control):
    _plugin.install(app, runtime, settings)


def _consumes_extract(worker: Any) -> bool:
    queues = worker.app.amqp.queues
    consume_from = getattr(queues, "consume_from", None) or {}
    return not consume_from or EXTRACT_QUEUE in consume_from


@signals.celeryd_after_setup.connect
def _load_model(sender: str, instance: Any, **_: Any) -> None:
    runtime.worker_name = sender
    if _consumes_extract(instance):
        runtime.load()
