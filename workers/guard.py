"""Bad-message handling for workers: no message can crash a worker, get lost or be logged.

Celery and kombu answer malformed messages in ways that do not suit tiqu: they
log the whole body and headers (complaint text, and a foreign client's
``kwargsrepr``), and several shapes raise out of the event loop and stop the
worker, which gets the same message again after a restart. The guard works
from the wire inwards:

1. Transport (workers.fetch): a worker consuming one queue fetches with
   BRPOPLPUSH onto an in-flight list, so a SIGKILL never loses a popped
   message, and a list item that is not a kombu message is dropped.
2. Consumer: Celery's handlers for undecodable, disallowed (pickle, YAML),
   invalid and unknown-task messages are replaced, and headers are checked
   before Celery looks up the task.
3. Strategy: the body is decoded (``accept_content``: JSON only) and its shape
   checked (``[args, kwargs, embed]``) before it reaches the batch buffer.
4. Batches: a flush run by the timer first settles kombu's in-flight BRPOP
   (see :meth:`Guard.settle_pending_pop`), and the flush timer is re-armed
   after a reconnection (see :func:`rearm_flush_timer`).

A refused message is rejected without running and logged with its task id,
content type, body length and code, never its body or headers. When its task
id is readable, an error envelope is stored under it like a result (``SET NX``
with ``result_ttl_s``, then ``PUBLISH``, as workers.batching does), so the
caller gets an answer and an existing result is never overwritten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from queue import Empty
from typing import Any, NamedTuple

from celery import bootsteps
from kombu.exceptions import ContentDisallowed, DecodeError

from core.names import result_key
from core.schema import Envelope
from core.settings import Settings
from workers import fetch

log = logging.getLogger("tiqu.guard")

#: Longest task id accepted; Celery ids are 36-char UUIDs, callers may use their own.
MAX_TASK_ID_CHARS = 255
_GUARDED = "_tiqu_guarded"


class Problem(NamedTuple):
    """Why a message is refused: a stable envelope code and a message without payload data."""

    code: str
    reason: str


def task_id_of(message: Any) -> str | None:
    """The message's task id header when it can address a result, else ``None``."""
    headers = getattr(message, "headers", None)
    task_id = headers.get("id") if isinstance(headers, dict) else None
    if not isinstance(task_id, str) or not 0 < len(task_id) <= MAX_TASK_ID_CHARS:
        return None
    try:
        task_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape cannot be a Redis key
        return None
    return task_id


def header_problem(message: Any) -> Problem | None:
    """Check the headers Celery relies on: a task name and a usable task id (protocol 2)."""
    headers = message.headers
    if not isinstance(headers, dict):
        return Problem("invalid_payload", f"headers must be a dict, got {type(headers).__name__}")
    task = headers.get("task")
    if not isinstance(task, str) or not task:
        return Problem("invalid_payload", "message has no 'task' header (Celery message "
                                          f"protocol 2 is required), got {type(task).__name__}")
    if task_id_of(message) is None:
        task_id = headers.get("id")
        return Problem("invalid_payload", f"task id header must be a UTF-8 string of 1 to "
                                          f"{MAX_TASK_ID_CHARS} chars, got "
                                          f"{type(task_id).__name__}")
    return None


def _decode_problem(err: BaseException) -> Problem:
    cause = err.args[0] if err.args else None
    if isinstance(cause, UnicodeDecodeError):
        return Problem("invalid_encoding", f"message body is not UTF-8 (byte {cause.start})")
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

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.hostname = ""
        self.channel: Any = None  # the Redis channel tasks are consumed from
        self.delivering = False  # inside Celery's handler for one message
        self.inflight: fetch.InFlight | None = None
        self._tend: Any = None  # the timer entry that runs tend()

    # --- refusing ------------------------------------------------------------
    def refuse(self, message: Any, problem: Problem) -> None:
        """Reject ``message`` without running it and answer its task id, if any."""
        task_id, body = task_id_of(message), getattr(message, "body", None)
        log.warning("refused message task_id=%s code=%s content_type=%.80s body_bytes=%d: %s",
                    task_id, problem.code, getattr(message, "content_type", None),
                    len(body) if isinstance(body, (bytes, str)) else 0, problem.reason)
        if task_id is not None:
            self.store(task_id, problem)
        try:
            if not message.acknowledged:
                message.reject(requeue=False)
        except Exception as err:  # the connection may be gone; redelivery answers it later
            log.error("could not reject task %s: %s", task_id, type(err).__name__)

    def store(self, task_id: str, problem: Problem) -> None:
        """Store an error envelope under ``task_id`` unless a result is already there."""
        env = Envelope.failure(None, problem.code, problem.reason, worker=self.hostname or None)
        meta: dict[str, Any] = {
            "status": "SUCCESS", "result": env.model_dump(mode="json"), "traceback": None,
            "children": [], "date_done": datetime.now(UTC).isoformat(), "task_id": task_id,
        }
        key, value = result_key(task_id), json.dumps(meta, ensure_ascii=False)
        try:
            pipe = self.app.backend.client.pipeline(transaction=False)
            pipe.set(key, value, ex=self.settings.result_ttl_s, nx=True)
            pipe.publish(key, value)
            pipe.execute()
        except Exception as err:  # never let answering a bad message stop the worker
            log.error("could not store the %s envelope for task %s: %s", problem.code, task_id,
                      type(err).__name__)

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
        if getattr(strategy, _GUARDED, False):
            return strategy

        def guarded(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
            problem = payload_problem(message, body)
            if problem is not None:
                return self.refuse(message, problem)
            return strategy(message, body, *args, **kwargs)

        setattr(guarded, _GUARDED, True)
        return guarded

    def wrap_handler(self, handler: Callable[[Any], Any],
                     connection_errors: tuple[type[BaseException], ...]) -> Callable[[Any], Any]:
        """Celery's per-message handler with header checks and a last-resort catch."""

        def on_task_received(message: Any) -> Any:
            problem = header_problem(message)
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
    def wrap_flush(self, do_flush: Callable[[], Any]) -> Callable[[], Any]:
        """A batch flush that first settles a BRPOP still in flight."""
        if getattr(do_flush, _GUARDED, False):
            return do_flush

        def flush() -> Any:
            self.settle_pending_pop()
            return do_flush()

        setattr(flush, _GUARDED, True)
        return flush

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
        conn = getattr(channel, "_in_poll", None)
        if self.delivering or not conn:
            return
        try:
            client_id = getattr(conn, fetch.CLIENT_ID, None)
            if client_id is not None:
                with channel.conn_or_acquire() as client:
                    client.execute_command("CLIENT", "UNBLOCK", client_id)
            # Without CLIENT UNBLOCK the reply still comes within brpop_timeout.
            if conn.can_read(timeout=channel.brpop_timeout + 2):
                channel._brpop_read()
            else:
                log.warning("no reply to the pending BRPOP; the batch runs with it in flight")
        except Empty:
            pass  # unblocked, or timed out: nothing was popped
        except Exception as err:  # the consumer notices a broken connection by itself
            log.warning("could not settle the pending BRPOP: %s", type(err).__name__)

    def start_fetch(self, c: Any) -> None:
        """Fetch with BRPOPLPUSH when consuming one queue; tend in-flight lists on a timer."""
        self.stop_fetch(shutdown=False)
        queues = [q.name for q in getattr(c.task_consumer, "queues", None) or []]
        if self.channel is None or len(queues) != 1:
            return
        interval_s = max(1, min(5, self.settings.visibility_timeout_s // 4))
        self.inflight = fetch.InFlight(queues[0], c.hostname, ttl_s=5 * interval_s)
        self.channel._tiqu_inflight = self.inflight
        with self.channel.conn_or_acquire() as client:
            fetch.register(client, self.inflight)
        self._tend = c.timer.call_repeatedly(interval_s, self.tend)

    def stop_fetch(self, shutdown: bool) -> None:
        """Stop tending; on shutdown also settle the last fetch and unregister."""
        if self._tend is not None:
            self._tend.cancel()
            self._tend = None
        if not shutdown or self.inflight is None or self.channel is None:
            return
        try:
            self.settle_pending_pop()
            with self.channel.conn_or_acquire() as client:
                fetch.unregister(client, self.inflight)
        except Exception as err:  # Redis away: the other workers requeue after the TTL
            log.warning("could not unregister the in-flight list: %s", type(err).__name__)

    def tend(self) -> None:
        """Settle the pending fetch, then requeue orphaned in-flight messages."""
        if self.delivering or self.inflight is None:
            return
        try:
            self.settle_pending_pop()
            with self.channel.conn_or_acquire() as client:
                fetch.tend(client, self.inflight, idle=self.channel._in_poll is None)
        except Exception as err:  # Redis away: the next tick tries again
            log.warning("could not tend in-flight messages: %s", type(err).__name__)


def consumer_step(guard: Guard) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep that puts ``guard`` in front of every task message."""

    class GuardStep(bootsteps.StartStopStep):
        """Installs the guard's callbacks; runs after the task consumer is set up."""

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, c: Any, **kwargs: Any) -> None:
            super().__init__(c, **kwargs)
            # Instance attributes win over Consumer's methods; the task consumer
            # (Tasks.start) and the event loop read them after this runs.
            c.on_decode_error = guard.on_decode_error
            c.on_invalid_task = guard.on_invalid_task
            c.on_unknown_message = guard.on_unknown_message
            c.on_unknown_task = guard.on_unknown_task
            create = c.create_task_handler
            c.create_task_handler = lambda: guard.wrap_handler(create(), c.connection_errors)
            # Before Tasks.start builds the strategies, which capture _do_flush.
            for task in c.app.tasks.values():
                if hasattr(task, "_do_flush"):
                    task._do_flush = guard.wrap_flush(task._do_flush)

        def start(self, c: Any) -> None:
            guard.hostname = c.hostname
            channel = getattr(c.task_consumer, "channel", None)
            guard.channel = channel if hasattr(channel, "_brpop_read") else None
            guard.start_fetch(c)
            # Tasks.start rebuilds the strategies on every (re)connection.
            for name, strategy in list(c.strategies.items()):
                c.strategies[name] = guard.wrap_strategy(strategy)
            for task in c.app.tasks.values():
                rearm_flush_timer(task, c.timer)

        def stop(self, c: Any) -> None:
            guard.stop_fetch(shutdown=False)

        def shutdown(self, c: Any) -> None:
            guard.stop_fetch(shutdown=True)

    return GuardStep


def rearm_flush_timer(task: Any, timer: Any) -> None:
    """Restart a celery-batches task's flush timer after the consumer (re)starts.

    On connection loss Celery clears the loop's timers, but the task keeps its
    stale timer handle and starts a new timer only when it is ``None``: a
    partial batch would wait for ``flush_every`` more messages.
    """
    if not hasattr(task, "_do_flush") or not hasattr(task, "_tref"):
        return
    if task._tref is not None:
        task._tref.cancel()
        task._tref = None
    if task._buffer.qsize() or task._pending.qsize():
        task._tref = timer.call_repeatedly(task.flush_interval, task._do_flush)


def install(app: Any, runtime: Any, settings: Settings) -> Guard:
    """Turn undecodable or disallowed messages into error envelopes where possible.

    Registers the consumer bootstep on ``app`` and patches the Redis transport
    (workers.fetch: reliable fetch, garbage filter).
    """
    guard = Guard(app, settings)
    app.steps["consumer"].add(consumer_step(guard))
    fetch.patch_redis_transport()
    return guard
