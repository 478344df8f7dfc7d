"""Bad-message handling for workers: no message can crash a worker, get lost or be logged.

Celery and kombu answer malformed messages in ways that do not suit tiqu: they
log the whole body and headers (complaint text, and a foreign client's
``kwargsrepr``), and several shapes raise out of the event loop and stop the
worker, which gets the same message again after a restart. The guard works
from the wire inwards:

1. Transport (core.transport.kombu_redis, policy in core.transport.fetch): a
   worker consuming one queue fetches with BRPOPLPUSH onto an in-flight list,
   so a SIGKILL never loses a popped message; an item over
   ``max_message_bytes``, not JSON, nested too deep or not a kombu message is
   refused there, before kombu reads it. The guard gives the channel its
   in-flight list (:meth:`Guard.start_fetch`).
2. Consumer (:func:`consumer_class`, Celery's ``worker_consumer``): Celery's
   handlers for undecodable, disallowed (pickle, YAML), invalid and
   unknown-task messages are overridden, and headers are checked before Celery
   looks up the task: protocol 2, a usable task id, no ETA (celery-batches
   would hold the message, and its prefetch slot, in its pending list),
   ``expires`` not passed.
3. Strategy: the body is decoded (``accept_content``: JSON only), its nesting
   bounded (``MAX_BODY_DEPTH``) and its shape checked (``[args, kwargs,
   embed]``) before it reaches the batch buffer.
4. Batches: a flush run by the timer first settles the fetch in flight
   (:meth:`Guard.settle_pending_pop`, called by
   ``workers.batching.ExtractBatches``, which also re-arms its flush timer
   after a reconnection).

A refused message is rejected without running and logged with its task id,
content type, body length and code, never its body or headers. When its task
id is usable, an error envelope is stored under it like a result
(:func:`core.transport.results.store_once`: ``SET NX`` with ``result_ttl_s``, then
``PUBLISH``), so the caller gets an answer and an existing result is never
overwritten. Without one, it goes on the dead-letter list
(``core.names.DEAD_LETTER_KEY``: reason, size, queue, time; never the body).
Either way it leaves ``unacked`` and is not delivered again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from queue import Empty
from typing import Any, NamedTuple

import redis
from celery import bootsteps
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.transport import redis as kredis

from core.redis import client_from_url
from core.schema import Envelope
from core.settings import Settings
from core.transport import fetch, kombu_redis, liveness
from core.transport.results import StoreFailed, store_once
from core.validation import MAX_TASK_ID_CHARS, nesting_exceeds, usable_task_id

log = logging.getLogger("tiqu.guard")

#: Deepest JSON nesting of a task body; ``[args, {"text", "id"}, embed]`` is 2 or 3 deep.
MAX_BODY_DEPTH = 32


class Problem(NamedTuple):
    """Why a message is refused: a stable envelope code and a message without payload data.

    ``task_id`` answers a message whose id is not in its headers (protocol 1).
    """

    code: str
    reason: str
    task_id: str | None = None


def task_id_of(message: Any) -> str | None:
    """The message's task id header when it can address a result, else ``None``."""
    headers = getattr(message, "headers", None)
    return usable_task_id(headers.get("id") if isinstance(headers, dict) else None)


def header_problem(message: Any, now: datetime | None = None,
                   allow_eta: bool = False) -> Problem | None:
    """Check the headers: protocol 2, a task name, a usable task id, no ETA, not expired.

    Batched tasks are not scheduled: a message with an ``eta`` (Celery's
    ``countdown`` sends one) would wait in the batch buffer holding a prefetch
    slot, so it is refused unless ``allow_eta`` (the train queue, whose task
    is not batched and retries with a countdown). One whose ``expires`` has
    passed is answered ``expired``.
    """
    headers = message.headers
    if not isinstance(headers, dict):
        return Problem("invalid_payload", f"headers must be a dict, got {type(headers).__name__}")
    task = headers.get("task")
    if "task" not in headers and "id" not in headers:
        return protocol1_problem(message)
    if not isinstance(task, str) or not task:
        return Problem("invalid_payload", "message has no 'task' header (Celery message "
                                          f"protocol 2 is required), got {type(task).__name__}")
    if task_id_of(message) is None:
        task_id = headers.get("id")
        got = f"str of {len(task_id)}" if isinstance(task_id, str) else type(task_id).__name__
        return Problem("invalid_task_id", f"task id header must be a UTF-8 string of 1 to "
                                          f"{MAX_TASK_ID_CHARS} chars, got {got}")
    return schedule_problem(headers, now or datetime.now(UTC), allow_eta)


def protocol1_problem(message: Any) -> Problem:
    """A message without ``task`` and ``id`` headers: protocol 1 (answered under the body's
    id) or not a task message at all."""
    try:
        body = message.payload
    except Exception:  # undecodable: only the reason is needed here
        body = None
    if isinstance(body, dict) and "task" in body:
        return Problem("unsupported_protocol", "Celery message protocol 1 is not supported; "
                                               "send protocol 2 (task and id in the headers)",
                       task_id=usable_task_id(body.get("id")))
    return Problem("invalid_payload", "message has no 'task' header (Celery message "
                                      "protocol 2 is required)")


def schedule_problem(headers: dict[str, Any], now: datetime,
                     allow_eta: bool = False) -> Problem | None:
    """``eta_not_supported`` for any ETA (unless allowed), ``expired`` once ``expires``
    has passed."""
    if headers.get("eta") is not None and not allow_eta:
        return Problem("eta_not_supported", "tiqu runs tasks when they arrive; ETA and "
                                            "countdown are not supported")
    expires = headers.get("expires")
    if expires is None:
        return None
    try:
        at = datetime.fromisoformat(expires)
    except (TypeError, ValueError):
        return Problem("invalid_payload", "the expires header is not an ISO 8601 time "
                                          f"({type(expires).__name__})")
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    if at <= now:
        return Problem("expired", f"the task expired {int((now - at).total_seconds())} s "
                                  "before a worker took it")
    return None


def _decode_problem(err: BaseException) -> Problem:
    cause = err.args[0] if err.args else None
    if isinstance(cause, UnicodeDecodeError):
        return Problem("invalid_encoding", f"message body is not UTF-8 (byte {cause.start})")
    if isinstance(cause, RecursionError) or isinstance(err.__cause__, RecursionError):
        return Problem("nested_too_deep", "message body is nested too deep to decode")
    name = type(cause or err).__name__
    return Problem("invalid_payload", f"message body cannot be decoded ({name})")


def payload_problem(message: Any, body: Any) -> Problem | None:
    """Decode the body (JSON only) and check it is ``[args, kwargs, embed]``."""
    try:
        payload = message.payload if body is None else body
    except ContentDisallowed:
        return Problem("unsupported_content_type",
                       f"content type {str(message.content_type)[:80]!r} is not accepted; "
                       "send application/json")
    except DecodeError as err:
        return _decode_problem(err)
    if nesting_exceeds(payload, MAX_BODY_DEPTH):
        return Problem("nested_too_deep", f"message body is nested deeper than {MAX_BODY_DEPTH}")
    if isinstance(payload, dict) and "args" in payload:  # hybrid protocol 1/2
        args, kwargs, embed = payload.get("args"), payload.get("kwargs", {}), None
    elif isinstance(payload, (list, tuple)) and len(payload) == 3:
        args, kwargs, embed = payload
    else:
        return Problem("invalid_payload", "message body must be [args, kwargs, embed], got "
                                          f"{type(payload).__name__}")
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        return Problem("invalid_payload", "task args must be a list and kwargs an object, got "
                                          f"{type(args).__name__} and {type(kwargs).__name__}")
    if embed is not None and not isinstance(embed, dict):
        return Problem("invalid_payload", f"embed must be a dict, got {type(embed).__name__}")
    return None


class Guard:
    """Refuses bad messages for one worker: logs, stores an error envelope, rejects."""

    def __init__(self, app: Any, settings: Settings, allow_eta: bool = False) -> None:
        self.app = app
        self.settings = settings
        self.allow_eta = allow_eta
        self.hostname = ""
        #: The Redis channel tasks are consumed from (None on other transports).
        self.channel: kombu_redis.Channel | None = None
        self.delivering = False  # inside Celery's handler for one message
        self.inflight: fetch.InFlight | None = None
        self._tend: Any = None  # the timer entry that runs tend()
        self.heartbeat: liveness.Heartbeat | None = None

    # --- refusing ------------------------------------------------------------
    def refuse(self, message: Any, problem: Problem) -> None:
        """Reject ``message`` without running it; answer its task id, else dead-letter it.

        Should Redis refuse to store the answer, the message goes back on the
        queue unanswered (as a batch does), to be refused again later.
        """
        task_id = problem.task_id or task_id_of(message)
        body = getattr(message, "body", None)
        size = len(body) if isinstance(body, (bytes, str)) else 0
        log.warning("refused message task_id=%s code=%s content_type=%.80s body_bytes=%d: %s",
                    task_id, problem.code, getattr(message, "content_type", None), size,
                    problem.reason)
        requeue = False
        try:
            if task_id is not None:
                self.answer([(task_id, problem.code, problem.reason)])
            else:
                self.dead_letter(message, problem.code, size)
        except Exception as err:  # never let answering a bad message stop the worker
            requeue = isinstance(err, (StoreFailed, redis.RedisError))  # answer it later
            log.error("could not answer the %s refusal of task %s: %s", problem.code, task_id,
                      type(err).__name__)
        try:
            if not message.acknowledged:
                message.reject(requeue=requeue)
        except Exception as err:  # the connection may be gone; redelivery answers it later
            log.error("could not reject task %s: %s", task_id, type(err).__name__)

    def answer(self, refusals: list[tuple[str, str, str]]) -> None:
        """Store an error envelope for each ``(task_id, code, reason)`` not answered yet.

        Raises :class:`core.transport.results.StoreFailed` when Redis keeps refusing.
        """
        worker = self.hostname or None
        envelopes = [(task_id, Envelope.failure(None, code, reason, worker=worker)
                      .model_dump(mode="json")) for task_id, code, reason in refusals]
        store_once(self.app.backend.client, envelopes, ttl_s=self.settings.result_ttl_s,
                   retry_s=self.settings.store_retry_s)

    def dead_letter(self, message: Any, reason: str, size_bytes: int) -> None:
        """Record a refused message without a usable task id on the dead-letter list."""
        info = getattr(message, "delivery_info", None) or {}
        queue = info.get("routing_key") if isinstance(info, dict) else None
        with message.channel.conn_or_acquire() as client:
            pipe = client.pipeline()
            fetch.dead_letter(pipe, [fetch.dead_letter_entry(reason, size_bytes, queue)])
            pipe.execute()

    # --- Celery consumer callbacks (replace the ones that log bodies) -----------
    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        self.refuse(message, _decode_problem(exc))

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        problem = payload_problem(message, None) if isinstance(exc, ContentDisallowed) else None
        self.refuse(message, problem or Problem("invalid_payload",
                                                f"invalid task message ({type(exc).__name__})"))

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self.refuse(message, header_problem(message) or Problem(
            "invalid_payload", "not a Celery task message"))

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        name = str(message.headers.get("task"))[:100] if isinstance(message.headers, dict) else ""
        self.refuse(message, Problem("unknown_task", f"task {name!r} is not registered here"))

    # --- wrappers ------------------------------------------------------------------
    def wrap_strategy(self, strategy: Callable[..., Any]) -> Callable[..., Any]:
        """A task strategy that first checks the body, so only sound messages are buffered."""

        def guarded(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
            problem = payload_problem(message, body)
            if problem is not None:
                return self.refuse(message, problem)
            return strategy(message, body, *args, **kwargs)

        return guarded

    def wrap_handler(self, handler: Callable[[Any], Any],
                     connection_errors: tuple[type[BaseException], ...]) -> Callable[[Any], Any]:
        """Celery's per-message handler with header checks and a last-resort catch."""

        def on_task_received(message: Any) -> Any:
            problem = header_problem(message, allow_eta=self.allow_eta)
            if problem is not None:
                return self.refuse(message, problem)
            self.delivering = True
            try:
                return handler(message)
            except connection_errors:
                raise  # the consumer reconnects and unacked messages are restored
            except Exception as err:
                # Only a defect gets here; answer this message rather than stop the worker.
                log.error("unexpected %s while taking task %s", type(err).__name__,
                          task_id_of(message))
                self.refuse(message, Problem("internal_error", "the worker could not take "
                                             f"the message ({type(err).__name__})"))
                return None
            finally:
                self.delivering = False

        return on_task_received

    # --- no message only in a socket buffer while a batch runs -------------------------
    def settle_pending_pop(self) -> None:
        """Make sure no popped message exists only in this worker's socket buffer.

        kombu's BRPOP removes a message from the queue before the worker
        records it as unacknowledged. A batch flushed by the timer runs while
        the next BRPOP is in flight, so a message arriving meanwhile would wait
        in the socket until the batch ends, and a SIGKILL would lose it. So the
        BRPOP is unblocked first (CLIENT UNBLOCK: it returns nil, pops
        nothing), or the message it already popped takes the normal path
        (recorded as unacknowledged, buffered). Inside a delivery the reply
        has been read already.
        """
        channel = self.channel
        if self.delivering or channel is None or not channel.fetch_outstanding():
            return
        try:
            if not channel.settle_fetch():
                log.warning("no reply to the pending BRPOP; the batch runs with it in flight")
        except Empty:
            pass  # unblocked, or timed out: nothing was popped
        except Exception as err:  # the consumer notices a broken connection by itself
            log.warning("could not settle the pending BRPOP: %s", type(err).__name__)

    def fetch_now(self) -> int:
        """Take what the queue holds now, up to the prefetch room, without blocking
        (kombu_redis.Channel.fetch_now): for a batch that takes arrivals into its
        free rows while it runs. The messages take the normal path (recorded as
        unacknowledged, checked, buffered). Returns how many; 0 without the
        reliable fetch, or when Redis is away (the consumer notices by itself)."""
        channel = self.channel
        if channel is None or self.inflight is None:
            return 0
        self.settle_pending_pop()
        try:
            return channel.fetch_now()
        except Exception as err:  # what was recorded and not delivered is back on the queue
            log.warning("could not take arrivals into the running batch: %s",
                        type(err).__name__)
            return 0

    def start_fetch(self, c: Any) -> None:
        """Fetch with BRPOPLPUSH when consuming one queue; tend in-flight lists on a timer."""
        self.stop_fetch(shutdown=False)
        queues = [q.name for q in getattr(c.task_consumer, "queues", None) or []]
        if self.channel is None or len(queues) != 1:
            return
        timing = liveness.Timing(self.settings.dead_worker_s, self.settings.visibility_timeout_s)
        self.inflight = fetch.InFlight(queues[0], c.hostname, ttl_s=timing.alive_ttl_s,
                                       held_ttl_s=timing.held_ttl_s,
                                       max_message_bytes=self.settings.max_message_bytes,
                                       answer=self.answer)
        self.channel.use_inflight(self.inflight)
        with self.channel.conn_or_acquire() as client:
            # A node starting under the name of one that died holds nothing yet:
            # what the dead one held goes back now, not when its key expires.
            liveness.release(client, c.hostname, self.restore)
            fetch.register(client, self.inflight)
        qos = self.channel.qos
        self.heartbeat = liveness.Heartbeat(
            client_from_url(self.settings.redis_url, self.settings, socket_timeout=5,
                            socket_connect_timeout=5), c.hostname, self.inflight.alive_key,
            qos.unacked_key, timing, fence=liveness.FENCE, restore=self.restore,
            holding=qos.held_tags)
        self.heartbeat.start()
        self._tend = c.timer.call_repeatedly(timing.sweep_s, self.tend)

    def stop_fetch(self, shutdown: bool) -> None:
        """Stop tending; on shutdown also settle the last fetch and unregister."""
        if self._tend is not None:
            self._tend.cancel()
            self._tend = None
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        if not shutdown or self.inflight is None or self.channel is None:
            return
        try:
            self.settle_pending_pop()
            with self.channel.conn_or_acquire() as client:
                fetch.unregister(client, self.inflight)
        except Exception as err:  # Redis away: the other workers requeue after the TTL
            log.warning("could not unregister the in-flight list: %s", type(err).__name__)

    def restore(self, tag: str) -> None:
        """Put one unacknowledged message back on its queue (atomic; no-op when gone)."""
        channel = self.channel
        if channel is None:
            return
        with channel.conn_or_acquire() as client:
            channel.qos.restore_by_tag(tag, client=client)

    def tend(self) -> None:
        """Settle the pending fetch, then requeue orphaned in-flight messages."""
        channel = self.channel
        if self.delivering or self.inflight is None or channel is None:
            return
        try:
            self.settle_pending_pop()
            with channel.conn_or_acquire() as client:
                fetch.tend(client, self.inflight, idle=channel.fetch_idle(),
                           restore=self.restore)
        except Exception as err:  # Redis away: the next tick tries again
            log.warning("could not tend in-flight messages: %s", type(err).__name__)


class NotTiquTransport(RuntimeError):
    """The worker consumes through kombu's own Redis transport, not core.transport.kombu_redis."""


def consumed_channel(c: Any) -> kombu_redis.Channel | None:
    """The Redis channel the consumer ``c`` takes tasks from; ``None`` on other transports.

    Raises :class:`NotTiquTransport` for kombu's stock Redis channel: a worker
    on it would run without reliable fetch and without the garbage filter.
    """
    channel = getattr(c.task_consumer, "channel", None)
    if isinstance(channel, kombu_redis.Channel):
        return channel
    if isinstance(channel, kredis.Channel):
        raise NotTiquTransport(
            f"the worker consumes through {type(channel).__module__}."
            f"{type(channel).__qualname__}; select tiqu's transport with "
            "app.conf.update(core.transport.kombu_redis.broker_settings(url))")
    return None


def consumer_class(guard: Guard) -> type[Consumer]:
    """Celery's consumer with ``guard`` in front of every task message.

    Installed as Celery's ``worker_consumer``. The task consumer
    (``Tasks.start``) reads ``on_decode_error``, and ``create_task_handler``
    reads the other three handlers, when the consumer (re)starts.
    """

    class GuardedConsumer(Consumer):
        """Celery's Consumer; bad messages are refused by the guard, never logged whole."""

        def on_decode_error(self, message: Any, exc: BaseException) -> None:
            guard.on_decode_error(message, exc)

        def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
            guard.on_invalid_task(body, message, exc)

        def on_unknown_message(self, body: Any, message: Any) -> None:
            guard.on_unknown_message(body, message)

        def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
            guard.on_unknown_task(body, message, exc)

        def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
            handler = super().create_task_handler(*args, **kwargs)
            return guard.wrap_handler(handler, self.connection_errors)

        def update_strategies(self) -> None:
            """Celery's strategies, each checking the body first (``Tasks.start`` runs this on
            every (re)connection)."""
            super().update_strategies()
            for name, strategy in list(self.strategies.items()):
                self.strategies[name] = guard.wrap_strategy(strategy)

    return GuardedConsumer


def consumer_step(guard: Guard) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep that starts and stops the guard's fetch and liveness."""

    class GuardStep(bootsteps.StartStopStep):
        """Gives the channel its in-flight list; runs after the task consumer is set up."""

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, c: Any) -> None:
            guard.hostname = c.hostname
            guard.channel = consumed_channel(c)
            guard.start_fetch(c)

        def stop(self, c: Any) -> None:
            guard.stop_fetch(shutdown=False)

        def shutdown(self, c: Any) -> None:
            guard.stop_fetch(shutdown=True)

    return GuardStep


def install(app: Any, runtime: Any, settings: Settings, allow_eta: bool = False) -> Guard:
    """Turn undecodable or disallowed messages into error envelopes where possible.

    Makes ``app``'s workers use the guarded consumer (``worker_consumer``) and
    registers the bootstep that starts reliable fetch. The app selects the
    transport itself (:func:`core.transport.kombu_redis.broker_settings`).
    """
    guard = Guard(app, settings, allow_eta=allow_eta)
    app.conf.update(worker_consumer=consumer_class(guard))
    app.steps["consumer"].add(consumer_step(guard))
    return guard
