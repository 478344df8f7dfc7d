"""Celery app factory shared by producers, workers and the trainer."""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery
from kombu import Queue

from core.names import EXTRACT_QUEUE, EXTRACT_TASK, TRAIN_QUEUE, TRAIN_TASK
from core.settings import Settings


def _ssl_options(settings: Settings) -> dict[str, Any] | None:
    if not settings.redis_url.startswith("rediss://"):
        return None
    opts: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED if settings.redis_tls_verify else ssl.CERT_NONE
    }
    if settings.redis_tls_ca:
        opts["ssl_ca_certs"] = settings.redis_tls_ca
    return opts


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration tiqu relies on (see docs/reliability.md)."""
    transport = {
        # Redelivery of unacknowledged tasks after a worker dies; must exceed
        # the slowest batch or a slow batch would be run twice.
        "visibility_timeout": settings.visibility_timeout_s,
        "health_check_interval": 10,
    }
    conf: dict[str, Any] = {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": max(1, settings.batch_size),
        "result_expires": settings.result_ttl_s,
        "result_extended": False,
        "task_default_queue": EXTRACT_QUEUE,
        "task_queues": [Queue(EXTRACT_QUEUE), Queue(TRAIN_QUEUE)],
        "task_routes": {
            EXTRACT_TASK: {"queue": EXTRACT_QUEUE},
            TRAIN_TASK: {"queue": TRAIN_QUEUE},
        },
        "broker_transport_options": transport,
        "result_backend_transport_options": dict(transport),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
    tls = _ssl_options(settings)
    if tls:
        conf["broker_use_ssl"] = tls
        conf["redis_backend_use_ssl"] = tls
    return conf


def make_celery(settings: Settings, main: str = "tiqu") -> Celery:
    """A Celery app on ``settings.redis_url``: JSON only, late acks, routed queues."""
    app = Celery(main, broker=settings.redis_url, backend=settings.backend_url)
    app.conf.update(celery_config(settings))
    return app
