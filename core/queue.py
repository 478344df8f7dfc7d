"""Celery app factory shared by producers, workers and the trainer."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from kombu import Queue

from core.errors import ConfigError
from core.names import CORRECT_TASK, EXTRACT_QUEUE, EXTRACT_TASK, TRAIN_QUEUE, TRAIN_TASK
from core.redis import tls_options
from core.settings import Settings

#: Request keys of ``tiqu.train`` shown as they are in argsrepr/kwargsrepr; ``records``
#: shows as a row count and anything else as ``<redacted>``.
_TRAIN_SHOWN = ("data", "out", "config")


def _redact_request(value: Any) -> Any:
    if not isinstance(value, dict):
        return "<redacted>"
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "records":
            rows = len(item) if isinstance(item, list) else "?"
            out[key] = f"<{rows} rows redacted>"
        else:
            out[str(key)] = item if key in _TRAIN_SHOWN else "<redacted>"
    return out


def train_reprs(args: Any, kwargs: Any) -> tuple[str, str]:
    """``(argsrepr, kwargsrepr)`` of a ``tiqu.train`` call without record contents.

    Celery puts these in the message headers, its events and Flower; inline
    records are personal data, so they show as ``'<N rows redacted>'``.
    """
    shown_args = [_redact_request(a) for a in args or ()]
    shown_kwargs = {str(k): _redact_request(v) for k, v in (kwargs or {}).items()}
    return repr(shown_args), repr(shown_kwargs)


@before_task_publish.connect(dispatch_uid="tiqu.redact_train_headers")
def _redact_train_headers(sender: Any = None, body: Any = None, headers: Any = None,
                          **_: Any) -> None:
    """Every ``tiqu.train`` message this process sends (a retry included) gets
    redacted argsrepr/kwargsrepr, whoever built it."""
    if sender != TRAIN_TASK or not isinstance(headers, dict) or not isinstance(body, tuple):
        return
    headers["argsrepr"], headers["kwargsrepr"] = train_reprs(body[0], body[1])


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names Redis Sentinels (``sentinel://h1:26379;sentinel://h2:26379``)."""
    return url.startswith("sentinel://")


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration tiqu relies on (see docs/reliability.md)."""
    transport = {
        # Redelivery of unacknowledged tasks after a worker dies; must exceed
        # the slowest batch or a slow batch would be run twice.
        "visibility_timeout": settings.visibility_timeout_s,
        # kombu looks for expired unacked messages only every interval x
        # throttle seconds (10 x 10 by default); sweep often enough that a
        # dead worker's tasks return soon after the visibility timeout.
        "unacked_restore_interval": max(1, min(60, settings.visibility_timeout_s // 4)),
        "unacked_restore_throttle": 1,
        # A worker killed during a sweep leaves the sweep's lock behind (300 s
        # by default), and nobody restores until it expires. A sweep takes
        # milliseconds, and restores are transactions, so a short lock is safe.
        "unacked_mutex_expire": max(5, min(60, settings.visibility_timeout_s // 2)),
        # One Redis list per queue (tiqu sends no priorities), so a worker can
        # fetch with BRPOPLPUSH, which takes a single list (core.transport.fetch).
        "priority_steps": [0],
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
            CORRECT_TASK: {"queue": TRAIN_QUEUE},
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
    # Each connection's TLS follows its own URL: a plain broker with a TLS result
    # backend (or the reverse) must not get the other's options.
    ca, verify = settings.redis_tls_ca, settings.redis_tls_verify
    broker_tls = tls_options(settings.redis_url, ca, verify)
    backend_tls = tls_options(settings.backend_url, ca, verify)
    if broker_tls:
        conf["broker_use_ssl"] = broker_tls
    if backend_tls:
        conf["redis_backend_use_ssl"] = backend_tls
    # Sentinel (sentinel://h1:26379;sentinel://h2:26379): kombu and Celery's
    # SentinelBackend ask the sentinels for this master and follow failovers.
    if settings.sentinel_master:
        if is_sentinel(settings.redis_url):
            transport["master_name"] = settings.sentinel_master
        if is_sentinel(settings.backend_url):
            conf["result_backend_transport_options"]["master_name"] = settings.sentinel_master
    return conf


def celery_override(module: str) -> dict[str, Any]:
    """The Celery settings that ``module`` (``TIQU_CELERY_CONFIG``) defines.

    Its public lower-case names that are not modules, functions or classes
    (``worker_max_memory_per_child = 2_000_000``). Raises ConfigError when the
    module cannot be imported or uses old upper-case names, which Celery
    refuses to mix with the new ones tiqu sets: a worker must not start on
    settings other than the ones its operator asked for.
    """
    import importlib
    import inspect

    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"celery_config module {module!r} cannot be imported: {err}") from err
    values: dict[str, Any] = {}
    for name, value in vars(mod).items():
        if name.startswith("_") or inspect.ismodule(value) or callable(value):
            continue
        if name != name.lower():
            raise ConfigError(f"celery_config module {module!r}: {name} is not a "
                              "lower-case Celery setting name (worker_max_memory_per_child)")
        values[name] = value
    return values


def make_celery(settings: Settings, main: str = "tiqu") -> Celery:
    """A Celery app on ``settings.redis_url``: JSON only, late acks, routed queues."""
    app = Celery(main, broker=settings.redis_url, backend=settings.backend_url)
    app.conf.update(celery_config(settings))
    if settings.celery_config:
        # Last, so the operator's module wins over tiqu's own values.
        app.conf.update(celery_override(settings.celery_config))
    return app
