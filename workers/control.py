"""The ``tiqu_info`` remote-control command: what a worker serves and holds.

``app.control.broadcast("tiqu_info", reply=True)`` (or ``tiqu status``) gets one
reply per worker::

    {"worker", "model", "model_loaded", "adapter_version", "gpu", "device",
     "queues", "batches", "generated_tokens", "in_flight", "pid"}

A worker answers control commands between batches only: the batch runs inline
in the solo pool's event loop, so a worker in the middle of a long batch
replies once the batch is done. ``in_flight`` therefore counts the messages the
worker has taken from the queue and holds unacknowledged in its batch buffer
(including ones waiting for an ETA); they go back to the queue if the worker
stops before running them.
"""

from __future__ import annotations

import os
from typing import Any

from celery.worker.control import inspect_command

from core.names import EXTRACT_TASK

COMMAND = "tiqu_info"


def gpu_label() -> str:
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES``), or ``cpu``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return visible if visible not in ("", "-1") else "cpu"


def buffered(app: Any) -> int:
    """Messages held in the extract task's batch buffers, not yet run."""
    task = app.tasks.get(EXTRACT_TASK)
    total = 0
    for name in ("_buffer", "_pending"):
        queue = getattr(task, name, None)
        if queue is not None:
            total += queue.qsize()
    return total


def _queues(state: Any) -> list[str]:
    consumer = getattr(state.consumer, "task_consumer", None)
    return sorted(q.name for q in getattr(consumer, "queues", None) or [])


def info(app: Any, runtime: Any, state: Any = None) -> dict[str, Any]:
    """The ``tiqu_info`` reply for this worker; safe before the model loads."""
    engine = runtime._engine
    stats = getattr(engine, "stats", None)
    device = getattr(engine, "device", None) if engine is not None else None
    return {
        "worker": runtime.worker_name or None,
        "model": getattr(engine, "model_id", None) or runtime.settings.base_model,
        "model_loaded": engine is not None,
        "adapter_version": getattr(engine, "adapter_version", None),
        "gpu": gpu_label(),
        "device": str(device) if device is not None else ("cpu" if engine else None),
        "queues": _queues(state) if state is not None else [],
        "batches": int(getattr(stats, "batches", 0)),
        "generated_tokens": int(getattr(stats, "generated_tokens", 0)),
        "in_flight": buffered(app),
        "pid": os.getpid(),
    }


def install(app: Any, runtime: Any, settings: Any) -> None:
    """Register ``tiqu_info`` in this process's remote-control registry."""

    @inspect_command(name=COMMAND)
    def tiqu_info(state: Any, **_: Any) -> dict[str, Any]:
        """tiqu worker info: model, adapter, GPU, counters, in-flight tasks."""
        return info(app, runtime, state)
