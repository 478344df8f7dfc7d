"""The Celery app for ``celery -A workers worker -Q extract --pool solo``.

Settings come from ``TIQU_*`` environment variables, built once here (the
entry point). The model loads once per worker process, after the worker is
set up and before it consumes; never in a parent that later forks.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from core.names import EXTRACT_QUEUE, EXTRACT_TASK
from core.queue import make_celery
from core.settings import Settings
from core.transport import faults, guard
from workers import control, hotswap, metrics
from workers.batching import ExtractBatches
from workers.runtime import Runtime

settings = Settings()
faults.arm(settings.fault_point)
app = make_celery(settings)
runtime = Runtime(settings, engine_kind=settings.engine)

log = logging.getLogger("tiqu.worker")


@app.task(
    base=ExtractBatches,
    name=EXTRACT_TASK,
    bind=True,
    flush_every=settings.batch_size,
    flush_interval=settings.flush_interval_s,
    runtime=runtime,
    result_ttl_s=settings.result_ttl_s,
    store_retry_s=settings.store_retry_s,
)
def extract(self: Any, requests: Any) -> None:  # pragma: no cover - flush runs the batch
    """Batches of ``{"text", "id"}`` payloads; see ExtractBatches.flush."""


for _plugin in (guard, hotswap, metrics, control):
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
